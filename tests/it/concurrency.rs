//! Double booking is impossible, and racing status changes have exactly one winner.

use futures::future::join_all;
use serde_json::json;
use spazi::domain::Role;

use crate::helpers::spawn;
use crate::on_both;

on_both!(
    two_hundred_racing_bookings_one_winner,
    |backend| async move {
        let app = spawn(backend).await;
        let (site, day) = app.open_day("large", 3);
        let desk = app.resource_id(&site, "desk").await;
        let mut members = Vec::new();
        for _ in 0..4 {
            members.push(app.user(Role::Member, None, &[]).await);
        }
        // Every interval covers [10:30, 11:00): each pair of attempts conflicts.
        let attempts = (0..200).map(|i| {
            let start = app.local(&site, day, 9 + (i % 2) as u32, (i % 30) as u32);
            let end = app.local(&site, day, 11, (i % 29) as u32);
            let token = members[i % members.len()].token.clone();
            let (app, desk) = (&app, desk.clone());
            async move { app.book(&token, &desk, &start, &end).await }
        });
        let results = join_all(attempts).await;
        let created = results.iter().filter(|(s, _)| *s == 201).count();
        let conflicts = results
            .iter()
            .filter(|(s, b)| *s == 409 && b["status"] == 409)
            .count();
        assert_eq!(
            created,
            1,
            "statuses: {:?}",
            results.iter().map(|r| r.0).collect::<Vec<_>>()
        );
        assert_eq!(conflicts, 199);
        let active = app.count(&format!(
        "SELECT COUNT(*) AS n FROM bookings WHERE resource_id = '{desk}' AND status IN ('confirmed', 'checked_in')"
    ));
        assert_eq!(active, 1);
        let overlapping = app.count(&format!(
        "SELECT COUNT(*) AS n FROM bookings a JOIN bookings b ON a.resource_id = b.resource_id AND a.id < b.id \
         WHERE a.resource_id = '{desk}' AND a.starts_at < b.ends_at AND b.starts_at < a.ends_at \
         AND a.status IN ('confirmed', 'checked_in') AND b.status IN ('confirmed', 'checked_in')"
    ));
        assert_eq!(overlapping, 0);
    }
);

on_both!(adjacent_intervals_both_succeed, |backend| async move {
    let app = spawn(backend).await;
    let (site, day) = app.open_day("large", 3);
    let desk = app.resource_id(&site, "desk").await;
    let m = app.user(Role::Member, None, &[]).await;
    let (nine, ten, eleven) = (
        app.local(&site, day, 9, 0),
        app.local(&site, day, 10, 0),
        app.local(&site, day, 11, 0),
    );
    let (a, b) = futures::join!(
        app.book(&m.token, &desk, &nine, &ten),
        app.book(&m.token, &desk, &ten, &eleven)
    );
    assert_eq!((a.0, b.0), (201, 201), "{} {}", a.1, b.1);
    let (c, body) = app
        .book(
            &m.token,
            &desk,
            &app.local(&site, day, 9, 45),
            &app.local(&site, day, 10, 15),
        )
        .await;
    assert_eq!(c, 409, "{body}");
    assert_eq!(body["code"], "booking_conflict");
});

on_both!(racing_cancels_have_one_winner, |backend| async move {
    let app = spawn(backend).await;
    let (site, day) = app.open_day("large", 3);
    let desk = app.resource_id(&site, "desk").await;
    let m = app.user(Role::Member, None, &[]).await;
    let (s, booking) = app
        .book(
            &m.token,
            &desk,
            &app.local(&site, day, 9, 0),
            &app.local(&site, day, 12, 0),
        )
        .await;
    assert_eq!(s, 201);
    let path = format!(
        "/api/v1/bookings/{}/cancel",
        booking["id"].as_str().unwrap()
    );
    let empty = json!({});
    let results = join_all((0..10).map(|_| app.post_json(&path, Some(&m.token), &empty))).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.0).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        9,
        "{statuses:?}"
    );
    // The cancelled interval is free again at once.
    let (again, _) = app
        .book(
            &m.token,
            &desk,
            &app.local(&site, day, 9, 0),
            &app.local(&site, day, 12, 0),
        )
        .await;
    assert_eq!(again, 201);
});

on_both!(
    cancel_against_check_in_has_one_winner,
    |backend| async move {
        let app = spawn(backend).await;
        let dir = app.state.directory();
        let site = dir
            .sites
            .iter()
            .find(|s| {
                s.site.size == "large"
                    && s.closure(chrono::Utc::now().with_timezone(&s.tz).date_naive())
                        .is_none()
            })
            .unwrap()
            .site
            .id
            .clone();
        let (_, desks) = app
            .get_json(&format!("/api/v1/sites/{site}/resources?kind=desk"), None)
            .await;
        for round in 0..5 {
            let desk = desks["items"][round]["id"].as_str().unwrap();
            let m = app.user(Role::Member, None, &[]).await;
            let now = chrono::Utc::now();
            let (s, b) = app
                .book(
                    &m.token,
                    desk,
                    &now.to_rfc3339(),
                    &(now + chrono::Duration::minutes(30)).to_rfc3339(),
                )
                .await;
            assert_eq!(s, 201, "{b}");
            let id = b["id"].as_str().unwrap().to_string();
            let (cancel_path, check_in_path, empty) = (
                format!("/api/v1/bookings/{id}/cancel"),
                format!("/api/v1/bookings/{id}/check-in"),
                json!({}),
            );
            let (cancel, check_in) = futures::join!(
                app.post_json(&cancel_path, Some(&m.token), &empty),
                app.post_json(&check_in_path, Some(&m.token), &empty),
            );
            let winners = [cancel.0, check_in.0].iter().filter(|s| **s == 200).count();
            assert_eq!(
                winners, 1,
                "cancel {} {}, check-in {} {}",
                cancel.0, cancel.1, check_in.0, check_in.1
            );
            let loser = if cancel.0 == 200 { &check_in } else { &cancel };
            assert_eq!(loser.0, 409, "{}", loser.1);
            let (_, state) = app
                .get_json(&format!("/api/v1/bookings/{id}"), Some(&m.token))
                .await;
            assert_eq!(
                state["status"],
                if cancel.0 == 200 {
                    "cancelled"
                } else {
                    "checked_in"
                }
            );
        }
    }
);

on_both!(idempotency_key_replays_and_guards, |backend| async move {
    let app = spawn(backend).await;
    let (site, day) = app.open_day("large", 3);
    let desk = app.resource_id(&site, "desk").await;
    let m = app.user(Role::Member, None, &[]).await;
    let body = json!({"resource_id": desk, "starts_at": app.local(&site, day, 14, 0), "ends_at": app.local(&site, day, 15, 0)});
    let send = |b: serde_json::Value| {
        app.client
            .post(app.url("/api/v1/bookings"))
            .bearer_auth(&m.token)
            .header("Idempotency-Key", "key-123")
            .json(&b)
            .send()
    };
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].to_str().unwrap().to_string();
    let first: serde_json::Value = first.json().await.unwrap();
    let second = send(body.clone()).await.unwrap();
    assert_eq!(second.status(), 201);
    assert_eq!(second.headers()["location"].to_str().unwrap(), location);
    let second: serde_json::Value = second.json().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(app.count("SELECT COUNT(*) AS n FROM bookings"), 1);
    let mut changed = body.clone();
    changed["note"] = json!("different");
    let third = send(changed).await.unwrap();
    assert_eq!(third.status(), 422);
    assert_eq!(app.count("SELECT COUNT(*) AS n FROM bookings"), 1);
});
