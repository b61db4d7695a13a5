//! Who may see and change which booking: owners, company admins, site managers, network admins.

use std::collections::BTreeSet;

use chrono::{Duration, Utc};
use reqwest::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use serde_json::json;
use spazi::domain::Role;

use crate::bad_input::{assert_problem, send, Reply};
use crate::helpers::{spawn, Backend, TestApp, TestUser};
use crate::on_both;

/// Two companies, a freelancer, a manager of site A, a network admin, and four bookings:
/// `a1` (Alfa's member at A), `a2` (Alfa's admin at B), `b1` (Beta's member at B), `f1` (the freelancer at A).
struct Scene {
    app: TestApp,
    alfa: String,
    beta: String,
    site_a: String,
    site_b: String,
    alfa_admin: TestUser,
    alfa_member: TestUser,
    beta_admin: TestUser,
    beta_member: TestUser,
    freelancer: TestUser,
    manager_a: TestUser,
    network_admin: TestUser,
    a1: String,
    a2: String,
    b1: String,
    f1: String,
}

impl Scene {
    async fn new(backend: Backend) -> Scene {
        let app = spawn(backend).await;
        let (site_a, site_b, day) = {
            let dir = app.state.directory();
            let large: Vec<_> = dir
                .sites
                .iter()
                .filter(|s| s.site.size == "large")
                .collect();
            assert!(large.len() >= 2, "the network has two large sites");
            let (a, b) = (large[0].clone(), large[1].clone());
            let day = (2..60)
                .map(|d| Utc::now().date_naive() + Duration::days(d))
                .find(|d| a.closure(*d).is_none() && b.closure(*d).is_none())
                .expect("a day both sites are open");
            (a.site.id.clone(), b.site.id.clone(), day)
        };
        let alfa = app.create_org("Alfa", 100);
        let beta = app.create_org("Beta", 100);
        let alfa_admin = app.user(Role::CompanyAdmin, Some(&alfa), &[]).await;
        let alfa_member = app.user(Role::Member, Some(&alfa), &[]).await;
        let beta_admin = app.user(Role::CompanyAdmin, Some(&beta), &[]).await;
        let beta_member = app.user(Role::Member, Some(&beta), &[]).await;
        let freelancer = app.user(Role::Member, None, &[]).await;
        let manager_a = app.user(Role::SiteManager, None, &[&site_a]).await;
        let network_admin = app.user(Role::NetworkAdmin, None, &[]).await;

        let desk_a = app.resource_id(&site_a, "desk").await;
        let desk_b = app.resource_id(&site_b, "desk").await;
        let book = |who: &TestUser, site: &str, desk: &str, hour: u32| {
            let (start, end) = (
                app.local(site, day, hour, 0),
                app.local(site, day, hour + 1, 0),
            );
            let (token, desk) = (who.token.clone(), desk.to_string());
            let app = &app;
            async move {
                let (status, body) = app.book(&token, &desk, &start, &end).await;
                assert_eq!(status, 201, "booking {desk} at {start}: {body}");
                body["id"].as_str().expect("booking id").to_string()
            }
        };
        let a1 = book(&alfa_member, &site_a, &desk_a, 9).await;
        let f1 = book(&freelancer, &site_a, &desk_a, 11).await;
        let b1 = book(&beta_member, &site_b, &desk_b, 9).await;
        let a2 = book(&alfa_admin, &site_b, &desk_b, 11).await;
        Scene {
            app,
            alfa,
            beta,
            site_a,
            site_b,
            alfa_admin,
            alfa_member,
            beta_admin,
            beta_member,
            freelancer,
            manager_a,
            network_admin,
            a1,
            a2,
            b1,
            f1,
        }
    }

    async fn get(&self, who: &TestUser, path: &str) -> Reply {
        send(
            self.app
                .client
                .get(self.app.url(path))
                .bearer_auth(&who.token),
        )
        .await
    }

    async fn post(&self, who: &TestUser, path: &str) -> Reply {
        send(
            self.app
                .client
                .post(self.app.url(path))
                .bearer_auth(&who.token),
        )
        .await
    }

    async fn booking(&self, who: &TestUser, id: &str) -> Reply {
        self.get(who, &format!("/api/v1/bookings/{id}")).await
    }

    /// The ids `who` gets from `GET /api/v1/bookings` with `query`, which must succeed.
    async fn listed(&self, who: &TestUser, query: &str) -> BTreeSet<String> {
        let r = self.get(who, &format!("/api/v1/bookings{query}")).await;
        assert_eq!(r.status, 200, "list {query}: {}", r.body);
        r.body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no items in {}", r.body))
            .iter()
            .map(|b| b["id"].as_str().expect("id").to_string())
            .collect()
    }

    /// The booking's status as its owner sees it.
    async fn status_of(&self, owner: &TestUser, id: &str) -> String {
        let r = self.booking(owner, id).await;
        assert_eq!(r.status, 200, "the owner reads {id}: {}", r.body);
        r.body["status"].as_str().expect("status").to_string()
    }
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

on_both!(
    another_companys_users_get_404_and_change_nothing,
    |backend| async move {
        use super::*;
        let s = Scene::new(backend).await;
        let a1 = &s.a1;
        let r = s.booking(&s.alfa_member, a1).await;
        assert_eq!(r.status, 200, "the owner reads the booking: {}", r.body);
        let r = s
            .get(&s.alfa_member, &format!("/api/v1/bookings/{a1}/ics"))
            .await;
        assert_eq!(r.status, 200, "the owner gets the calendar file");
        let ct = r
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            ct.starts_with("text/calendar"),
            "calendar content type {ct:?}"
        );

        let missing = s
            .booking(&s.beta_member, "00000000-0000-7000-8000-000000000000")
            .await;
        assert_problem(&missing, 404, "a booking that does not exist");
        for who in [&s.beta_member, &s.beta_admin] {
            let r = s.booking(who, a1).await;
            assert_problem(&r, 404, "GET another company's booking");
            assert_eq!(
                r.body["code"], missing.body["code"],
                "as if it did not exist"
            );
            let r = s.get(who, &format!("/api/v1/bookings/{a1}/ics")).await;
            assert_problem(&r, 404, "its calendar file");
            let r = s.post(who, &format!("/api/v1/bookings/{a1}/cancel")).await;
            assert_problem(&r, 404, "cancelling it");
            let r = s
                .post(who, &format!("/api/v1/bookings/{a1}/check-in"))
                .await;
            assert_problem(&r, 404, "checking in to it");
        }
        let r = s
            .post(&s.freelancer, &format!("/api/v1/bookings/{a1}/cancel"))
            .await;
        assert_problem(&r, 404, "a freelancer cancelling Alfa's booking");
        assert_eq!(s.status_of(&s.alfa_member, a1).await, "confirmed");
    }
);

on_both!(
    a_plain_list_shows_only_the_callers_own_bookings,
    |backend| async move {
        use super::*;
        let s = Scene::new(backend).await;
        assert_eq!(s.listed(&s.alfa_member, "").await, set(&[&s.a1]));
        assert_eq!(s.listed(&s.alfa_admin, "").await, set(&[&s.a2]));
        assert_eq!(s.listed(&s.beta_member, "").await, set(&[&s.b1]));
        assert_eq!(s.listed(&s.beta_admin, "").await, set(&[]));
        assert_eq!(s.listed(&s.freelancer, "").await, set(&[&s.f1]));
        assert_eq!(s.listed(&s.manager_a, "").await, set(&[]));
        assert_eq!(s.listed(&s.network_admin, "").await, set(&[]));
    }
);

on_both!(
    a_company_admin_sees_their_companys_bookings_only,
    |backend| async move {
        use super::*;
        let s = Scene::new(backend).await;
        let admin = &s.alfa_admin;
        let r = s.booking(admin, &s.a1).await;
        assert_eq!(
            r.status, 200,
            "Alfa's admin reads Alfa's member's booking: {}",
            r.body
        );
        assert_eq!(r.body["user_id"], json!(s.alfa_member.id));
        let r = s
            .get(admin, &format!("/api/v1/bookings/{}/ics", s.a1))
            .await;
        assert_eq!(r.status, 200, "and its calendar file");
        let alfa_list = s
            .listed(admin, &format!("?organization_id={}", s.alfa))
            .await;
        assert_eq!(alfa_list, set(&[&s.a1, &s.a2]));
        let at_b = s
            .listed(
                admin,
                &format!("?organization_id={}&site_id={}", s.alfa, s.site_b),
            )
            .await;
        assert_eq!(at_b, set(&[&s.a2]));

        let r = s
            .get(
                admin,
                &format!("/api/v1/bookings?organization_id={}", s.beta),
            )
            .await;
        assert_problem(&r, 403, "Alfa's admin listing Beta");
        let r = s
            .get(admin, &format!("/api/v1/bookings?site_id={}", s.site_a))
            .await;
        assert_problem(&r, 403, "Alfa's admin listing a site");
        for id in [&s.b1, &s.f1] {
            let r = s.booking(admin, id).await;
            assert_problem(&r, 404, "Alfa's admin reading someone else's booking");
        }

        let r = s
            .get(
                &s.alfa_member,
                &format!("/api/v1/bookings?organization_id={}", s.alfa),
            )
            .await;
        assert_problem(&r, 403, "Alfa's member listing Alfa");
        let r = s
            .get(
                &s.freelancer,
                &format!("/api/v1/bookings?organization_id={}", s.alfa),
            )
            .await;
        assert_problem(&r, 403, "a freelancer listing Alfa");
        let r = s
            .get(
                &s.beta_admin,
                &format!("/api/v1/bookings?organization_id={}", s.alfa),
            )
            .await;
        assert_problem(&r, 403, "Beta's admin listing Alfa");
        let r = s
            .get(
                &s.alfa_member,
                &format!("/api/v1/bookings?site_id={}", s.site_a),
            )
            .await;
        assert_problem(&r, 403, "Alfa's member listing a site");
    }
);

on_both!(
    a_company_admin_can_cancel_their_members_booking,
    |backend| async move {
        use super::*;
        let s = Scene::new(backend).await;
        let r = s
            .post(&s.alfa_admin, &format!("/api/v1/bookings/{}/cancel", s.b1))
            .await;
        assert_problem(&r, 404, "Alfa's admin cancelling Beta's booking");
        assert_eq!(s.status_of(&s.beta_member, &s.b1).await, "confirmed");

        let r = s
            .post(&s.alfa_admin, &format!("/api/v1/bookings/{}/cancel", s.a1))
            .await;
        assert_eq!(
            r.status, 200,
            "Alfa's admin cancels Alfa's member's booking: {}",
            r.body
        );
        assert_eq!(r.body["status"], "cancelled");
        assert_eq!(s.status_of(&s.alfa_member, &s.a1).await, "cancelled");
    }
);

on_both!(a_site_manager_sees_their_site_only, |backend| async move {
    use super::*;
    let s = Scene::new(backend).await;
    let m = &s.manager_a;
    for id in [&s.a1, &s.f1] {
        let r = s.booking(m, id).await;
        assert_eq!(
            r.status, 200,
            "the manager reads a booking at their site: {}",
            r.body
        );
        assert_eq!(r.body["site"]["id"], json!(s.site_a));
    }
    assert_eq!(
        s.listed(m, &format!("?site_id={}", s.site_a)).await,
        set(&[&s.a1, &s.f1])
    );
    for id in [&s.b1, &s.a2] {
        let r = s.booking(m, id).await;
        assert_problem(&r, 404, "the manager reading a booking at another site");
        let r = s.post(m, &format!("/api/v1/bookings/{id}/cancel")).await;
        assert_problem(&r, 404, "the manager cancelling a booking at another site");
    }
    let r = s
        .get(m, &format!("/api/v1/bookings?site_id={}", s.site_b))
        .await;
    assert_problem(&r, 403, "the manager listing another site");
    let r = s
        .get(m, &format!("/api/v1/bookings?organization_id={}", s.alfa))
        .await;
    assert_problem(&r, 403, "the manager listing a company");
    assert_eq!(s.status_of(&s.beta_member, &s.b1).await, "confirmed");
    assert_eq!(s.status_of(&s.alfa_admin, &s.a2).await, "confirmed");
});

on_both!(a_network_admin_sees_everything, |backend| async move {
    use super::*;
    let s = Scene::new(backend).await;
    let n = &s.network_admin;
    for id in [&s.a1, &s.a2, &s.b1, &s.f1] {
        let r = s.booking(n, id).await;
        assert_eq!(r.status, 200, "the network admin reads {id}: {}", r.body);
        let r = s.get(n, &format!("/api/v1/bookings/{id}/ics")).await;
        assert_eq!(r.status, 200, "and its calendar file");
    }
    assert_eq!(
        s.listed(n, &format!("?site_id={}", s.site_a)).await,
        set(&[&s.a1, &s.f1])
    );
    assert_eq!(
        s.listed(n, &format!("?site_id={}", s.site_b)).await,
        set(&[&s.b1, &s.a2])
    );
    assert_eq!(
        s.listed(n, &format!("?organization_id={}", s.alfa)).await,
        set(&[&s.a1, &s.a2])
    );
    assert_eq!(
        s.listed(n, &format!("?organization_id={}", s.beta)).await,
        set(&[&s.b1])
    );
});

on_both!(check_in_by_another_company_is_404, |backend| async move {
    use super::*;
    let s = Scene::new(backend).await;
    let path = format!("/api/v1/bookings/{}/check-in", s.a1);
    for who in [&s.beta_member, &s.beta_admin, &s.freelancer] {
        let r = s.post(who, &path).await;
        assert_problem(&r, 404, "a stranger checking in");
    }
    // Alfa's admin may see the booking, but checking in is the member's act or the site staff's.
    let r = s.post(&s.alfa_admin, &path).await;
    assert_problem(&r, 403, "the company admin checking in");
    // The owner reaches the window check, so the route itself works for them.
    let r = s.post(&s.alfa_member, &path).await;
    assert_problem(&r, 409, "the owner checking in days early");
    assert_eq!(s.status_of(&s.alfa_member, &s.a1).await, "confirmed");
});

on_both!(logout_ends_the_access_token, |backend| async move {
    use super::*;
    let app = spawn(backend).await;
    let user = app.user(Role::Member, None, &[]).await;
    let (status, other) = app.login(&user.email, crate::helpers::PASSWORD).await;
    assert_eq!(status, 200, "a second session: {other}");
    let other_token = other["access_token"].as_str().expect("token").to_string();
    let me = |token: String| send(app.client.get(app.url("/api/v1/me")).bearer_auth(token));

    let r = me(user.token.clone()).await;
    assert_eq!(r.status, 200, "before logout: {}", r.body);
    assert_eq!(r.body["id"], json!(user.id));

    let r = send(
        app.client
            .post(app.url("/api/v1/auth/logout"))
            .bearer_auth(&user.token),
    )
    .await;
    assert_eq!(r.status, 204, "logout: {}", r.body);

    let r = me(user.token.clone()).await;
    assert_problem(&r, 401, "GET /me after logout");
    let challenge = r
        .headers
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        challenge.starts_with("Bearer"),
        "WWW-Authenticate {challenge:?}"
    );
    let r = send(
        app.client
            .post(app.url("/api/v1/auth/logout"))
            .bearer_auth(&user.token),
    )
    .await;
    assert_problem(&r, 401, "logging out twice");
    let (status, body) = app
        .post_json(
            "/api/v1/auth/refresh",
            None,
            &json!({"refresh_token": user.refresh}),
        )
        .await;
    assert_eq!(
        status, 401,
        "the logged-out session's refresh token: {body}"
    );

    let r = me(other_token).await;
    assert_eq!(
        r.status, 200,
        "another session of the same account goes on: {}",
        r.body
    );
});
