//! Signup without enumeration, login, refresh rotation with reuse detection, logout.

use serde_json::json;
use spazi::domain::Role;

use crate::helpers::{spawn, PASSWORD};
use crate::on_both;

on_both!(
    signup_answers_the_same_for_taken_addresses,
    |backend| async move {
        let app = spawn(backend).await;
        let existing = app.user(Role::Member, None, &[]).await;
        let new = app
        .post_json("/api/v1/auth/signup", None, &json!({"email": "nuovo@test.spazi.example", "password": PASSWORD, "name": "Nuovo"}))
        .await;
        let taken = app
        .post_json("/api/v1/auth/signup", None, &json!({"email": existing.email.to_uppercase(), "password": PASSWORD, "name": "Altro"}))
        .await;
        assert_eq!(new, taken);
        assert_eq!(new.0, 201);
        // The taken address's owner can still log in with their own password.
        assert_eq!(app.login(&existing.email, PASSWORD).await.0, 200);
    }
);

on_both!(login_failures_look_alike, |backend| async move {
    let app = spawn(backend).await;
    let user = app.user(Role::Member, None, &[]).await;
    app.post_json(
        "/api/v1/auth/signup",
        None,
        &json!({"email": "pending@test.spazi.example", "password": PASSWORD, "name": "P"}),
    )
    .await;
    // Each answer names its own request; everything else must be the same.
    let without_request_id = |(status, mut body): (u16, serde_json::Value)| {
        assert!(body["request_id"].is_string(), "{body}");
        body.as_object_mut().unwrap().remove("request_id");
        (status, body)
    };
    let wrong_password = without_request_id(app.login(&user.email, "not-the-password").await);
    let unknown = without_request_id(app.login("nobody@test.spazi.example", PASSWORD).await);
    let unverified = without_request_id(app.login("pending@test.spazi.example", PASSWORD).await);
    assert_eq!(wrong_password.0, 401);
    assert_eq!(wrong_password, unknown);
    assert_eq!(wrong_password, unverified);
});

on_both!(
    refresh_rotates_and_reuse_revokes_the_family,
    |backend| async move {
        let app = spawn(backend).await;
        let user = app.user(Role::Member, None, &[]).await;
        let (s, first) = app
            .post_json(
                "/api/v1/auth/refresh",
                None,
                &json!({"refresh_token": user.refresh}),
            )
            .await;
        assert_eq!(s, 200, "{first}");
        assert_eq!(first["token_type"], "Bearer");
        assert!(first["expires_in"].as_i64().unwrap() > 0);
        let next_refresh = first["refresh_token"].as_str().unwrap().to_string();
        assert_ne!(next_refresh, user.refresh);
        let access = first["access_token"].as_str().unwrap().to_string();
        assert_eq!(app.get_json("/api/v1/me", Some(&access)).await.0, 200);
        // The spent token again: refused, and every token of the family stops working.
        let (s, reuse) = app
            .post_json(
                "/api/v1/auth/refresh",
                None,
                &json!({"refresh_token": user.refresh}),
            )
            .await;
        assert_eq!(s, 401, "{reuse}");
        assert_eq!(
            app.post_json(
                "/api/v1/auth/refresh",
                None,
                &json!({"refresh_token": next_refresh})
            )
            .await
            .0,
            401
        );
        assert_eq!(app.get_json("/api/v1/me", Some(&access)).await.0, 401);
        assert_eq!(app.get_json("/api/v1/me", Some(&user.token)).await.0, 401);
        // A new login opens a new, working session.
        assert_eq!(app.login(&user.email, PASSWORD).await.0, 200);
    }
);

on_both!(logout_ends_the_access_token, |backend| async move {
    let app = spawn(backend).await;
    let user = app.user(Role::Member, None, &[]).await;
    let (s, me) = app.get_json("/api/v1/me", Some(&user.token)).await;
    assert_eq!(s, 200);
    assert_eq!(me["email"], user.email.as_str());
    let res = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let (s, problem) = app.get_json("/api/v1/me", Some(&user.token)).await;
    assert_eq!(s, 401, "{problem}");
    assert_eq!(
        app.post_json(
            "/api/v1/auth/refresh",
            None,
            &json!({"refresh_token": user.refresh})
        )
        .await
        .0,
        401
    );
});

on_both!(me_shows_roles_and_organizations, |backend| async move {
    let app = spawn(backend).await;
    let org = app.create_org("Alfa S.p.A.", 40);
    let admin = app.user(Role::CompanyAdmin, Some(&org), &[]).await;
    let (_, me) = app.get_json("/api/v1/me", Some(&admin.token)).await;
    assert_eq!(me["roles"], json!(["company_admin"]));
    assert_eq!(me["organizations"][0]["id"], org.as_str());
    assert_eq!(me["organizations"][0]["monthly_allowance_minutes"], 2400);
    let manager = app
        .user(Role::SiteManager, None, &["bologna", "modena"])
        .await;
    let (_, me) = app.get_json("/api/v1/me", Some(&manager.token)).await;
    assert_eq!(me["managed_sites"], json!(["bologna", "modena"]));
});

on_both!(allowance_is_consumed_and_refunded, |backend| async move {
    let app = spawn(backend).await;
    let org = app.create_org("Piccola", 3);
    let m = app.user(Role::Member, Some(&org), &[]).await;
    let (site, day) = app.open_day("large", 3);
    let desks: Vec<String> = {
        let (_, page) = app
            .get_json(&format!("/api/v1/sites/{site}/resources?kind=desk"), None)
            .await;
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (s, first) = app
        .book(
            &m.token,
            &desks[0],
            &app.local(&site, day, 9, 0),
            &app.local(&site, day, 11, 0),
        )
        .await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(first["allowance_minutes"], 120);
    let over = json!({"resource_id": desks[1], "starts_at": app.local(&site, day, 9, 0), "ends_at": app.local(&site, day, 11, 0)});
    let (s, quote) = app
        .post_json("/api/v1/bookings/quote", Some(&m.token), &over)
        .await;
    assert_eq!(s, 200);
    assert_eq!(quote["bookable"], false);
    assert_eq!(quote["outcome"], 422);
    let (s, refused) = app
        .post_json("/api/v1/bookings", Some(&m.token), &over)
        .await;
    assert_eq!(s, 422, "{refused}");
    let id = first["id"].as_str().unwrap();
    assert_eq!(
        app.post_json(
            &format!("/api/v1/bookings/{id}/cancel"),
            Some(&m.token),
            &json!({})
        )
        .await
        .0,
        200
    );
    let (s, quote) = app
        .post_json("/api/v1/bookings/quote", Some(&m.token), &over)
        .await;
    assert_eq!(s, 200);
    assert_eq!(quote["bookable"], true, "{quote}");
    assert_eq!(quote["allowance"]["used_minutes"], 0);
    assert_eq!(quote["allowance"]["remaining_after_minutes"], 60);
    assert_eq!(
        app.count("SELECT COUNT(*) AS n FROM bookings WHERE status = 'confirmed'"),
        0
    );
    assert_eq!(
        app.post_json("/api/v1/bookings", Some(&m.token), &over)
            .await
            .0,
        201
    );
});

on_both!(
    repeated_failed_logins_are_slowed_alike,
    |backend| async move {
        let app = spawn(backend).await;
        let user = app.user(Role::Member, None, &[]).await;
        for _ in 0..10 {
            assert_eq!(app.login(&user.email, "wrong-password!").await.0, 401);
            assert_eq!(
                app.login("ghost@test.spazi.example", "wrong-password!")
                    .await
                    .0,
                401
            );
        }
        let res = app
            .client
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": user.email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 429);
        assert!(res.headers().contains_key("retry-after"));
        let ghost = app.login("ghost@test.spazi.example", PASSWORD).await;
        assert_eq!(ghost.0, 429, "an unknown address is limited the same way");
        // Other addresses are unaffected.
        let other = app.user(Role::Member, None, &[]).await;
        assert_eq!(app.login(&other.email, PASSWORD).await.0, 200);
    }
);
