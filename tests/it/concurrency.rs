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

on_both!(
    fifty_clients_racing_for_a_slot_get_one_201_and_fast_409s,
    |backend| async move {
        let app = spawn(backend).await;
        let (site, day) = app.open_day("large", 4);
        let (s, desks) = app
            .get_json(
                &format!("/api/v1/sites/{site}/resources?kind=desk&limit=50"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{desks}");
        let desks: Vec<String> = desks["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect();
        assert!(desks.len() >= 20, "{} desks", desks.len());
        let mut members = Vec::new();
        for _ in 0..5 {
            members.push(app.user(Role::Member, None, &[]).await);
        }
        let (start, end) = (app.local(&site, day, 10, 0), app.local(&site, day, 11, 0));
        for (round, desk) in desks.iter().take(20).enumerate() {
            let attempts = (0..50).map(|i| {
                let token = members[i % members.len()].token.clone();
                let (app, desk, start, end) = (&app, desk.clone(), start.clone(), end.clone());
                async move {
                    let sent = std::time::Instant::now();
                    let (status, body) = app.book(&token, &desk, &start, &end).await;
                    (status, body, sent.elapsed())
                }
            });
            let results = join_all(attempts).await;
            let statuses: Vec<u16> = results.iter().map(|r| r.0).collect();
            assert!(
                statuses.iter().all(|s| *s < 500),
                "round {round}: {statuses:?} {:?}",
                results.iter().find(|r| r.0 >= 500).map(|r| &r.1)
            );
            assert_eq!(
                statuses.iter().filter(|s| **s == 201).count(),
                1,
                "round {round}: {statuses:?}"
            );
            let losers: Vec<_> = results.iter().filter(|r| r.0 != 201).collect();
            assert_eq!(losers.len(), 49, "round {round}");
            for (status, body, _) in &losers {
                assert_eq!(*status, 409, "round {round}: {body}");
                assert_eq!(body["code"], "booking_conflict", "round {round}: {body}");
                assert_eq!(body["status"], 409, "round {round}: {body}");
            }
            let slowest = losers.iter().map(|r| r.2).max().unwrap();
            assert!(
                slowest <= std::time::Duration::from_millis(250),
                "round {round}: the slowest 409 took {slowest:?}"
            );
            let active = app.count(&format!(
                "SELECT COUNT(*) AS n FROM bookings WHERE resource_id = '{desk}' \
                 AND status IN ('confirmed', 'checked_in')"
            ));
            assert_eq!(active, 1, "round {round}");
        }
        let overlapping = app.count(
            "SELECT COUNT(*) AS n FROM bookings a JOIN bookings b \
             ON a.resource_id = b.resource_id AND a.id < b.id \
             WHERE a.starts_at < b.ends_at AND b.starts_at < a.ends_at \
             AND a.status IN ('confirmed', 'checked_in') AND b.status IN ('confirmed', 'checked_in')",
        );
        assert_eq!(overlapping, 0);
    }
);

/// Gives `booking_id`'s credential the PIN `(pin, hash)`, as the database answers it.
fn set_pin(
    app: &crate::helpers::TestApp,
    booking_id: &str,
    pin: &str,
    hash: &str,
) -> Result<usize, spazi::db::DbError> {
    use diesel::prelude::*;
    use spazi::db::schema::access_credentials as ac;
    let (id, pin, hash) = (booking_id.to_string(), pin.to_string(), hash.to_string());
    app.state.db.run_blocking(move |c| {
        diesel::update(ac::table.find(id))
            .set((ac::pin.eq(pin), ac::pin_sha256.eq(hash)))
            .execute(c)
            .map_err(spazi::db::DbError::from)
    })
}

on_both!(
    a_pin_is_held_by_one_credential_of_a_site_at_a_time,
    |backend| async move {
        use chrono::{DateTime, Duration, Utc};
        use spazi::db::access::{self, NewCredential};
        use spazi::db::DbError;
        let app = spawn(backend).await;
        let (site, day) = app.open_day("large", 5);
        let at = |d: chrono::NaiveDate, h: u32| -> DateTime<Utc> {
            DateTime::parse_from_rfc3339(&app.local(&site, d, h, 0))
                .unwrap()
                .with_timezone(&Utc)
        };
        let (_, desks) = app
            .get_json(&format!("/api/v1/sites/{site}/resources?kind=desk"), None)
            .await;
        let desk = |i: usize| desks["items"][i]["id"].as_str().unwrap().to_string();
        let dir = app.state.directory();
        let elsewhere = dir
            .sites
            .iter()
            .filter(|s| s.site.id != site)
            .flat_map(|s| s.resources.iter())
            .find(|r| r.kind == spazi::domain::ResourceKind::Desk)
            .map(|r| r.resource.id.clone())
            .expect("a desk at another site");
        let m = app.user(Role::Member, None, &[]).await;
        let a = app
            .store_booking(&m, None, &desk(0), at(day, 10), at(day, 11), 0)
            .await;
        let overlapping = app
            .store_booking(&m, None, &desk(1), at(day, 10), at(day, 12), 0)
            .await;
        let next_day = app
            .store_booking(
                &m,
                None,
                &desk(1),
                at(day, 10) + Duration::days(1),
                at(day, 11) + Duration::days(1),
                0,
            )
            .await;
        let other_site = app
            .store_booking(&m, None, &elsewhere, at(day, 10), at(day, 11), 0)
            .await;
        let a_row = app
            .state
            .db
            .run_blocking(|c| access::credential(c, &a.id))
            .unwrap()
            .unwrap();

        let refused = set_pin(&app, &overlapping.id, &a_row.pin, &a_row.pin_sha256);
        assert!(
            matches!(refused, Err(DbError::PinTaken)),
            "an overlapping credential at the same site took the PIN: {refused:?}"
        );
        let kept = app
            .state
            .db
            .run_blocking(|c| access::credential(c, &overlapping.id))
            .unwrap()
            .unwrap();
        assert_eq!(kept.pin, overlapping.pin);
        assert_eq!(
            set_pin(&app, &next_day.id, &a_row.pin, &a_row.pin_sha256).unwrap(),
            1,
            "a window that does not overlap may share the PIN"
        );
        assert_eq!(
            set_pin(&app, &other_site.id, &a_row.pin, &a_row.pin_sha256).unwrap(),
            1,
            "another site may share the PIN"
        );

        // A booking whose PIN candidates are all taken still gets a PIN of its own.
        let mut fresh = app
            .state
            .db
            .run_blocking(|c| spazi::db::bookings::find(c, &a.id))
            .unwrap()
            .unwrap();
        fresh.id = uuid::Uuid::now_v7().to_string();
        fresh.resource_id = desk(2);
        let mut credential = NewCredential::fresh(
            &fresh.id,
            &site,
            fresh.starts_at,
            fresh.ends_at,
            fresh.created_at,
        )
        .unwrap();
        credential.pins = vec![
            (a_row.pin.clone(), a_row.pin_sha256.clone()),
            (overlapping.pin.clone(), kept.pin_sha256.clone()),
        ];
        credential.row.pin = a_row.pin.clone();
        credential.row.pin_sha256 = a_row.pin_sha256.clone();
        let now = fresh.created_at;
        let stored = fresh.clone();
        let issued = app
            .state
            .db
            .run_blocking(move |c| {
                spazi::db::bookings::create(c, &stored, None, &credential, None, |_| {
                    let mut row = spazi::db::models::OutboxRow::due("none", "{}".into(), now);
                    row.sent_at = Some(now);
                    row
                })
            })
            .expect("the booking is stored with a free PIN");
        assert_ne!(issued.pin, a_row.pin);
        assert_ne!(issued.pin, overlapping.pin);
        assert_eq!(issued.pin.len(), 6);
        let stored_row = app
            .state
            .db
            .run_blocking(|c| access::credential(c, &fresh.id))
            .unwrap()
            .expect("credential stored");
        assert_eq!(stored_row.pin, issued.pin);
        assert_eq!(
            stored_row.pin_sha256,
            spazi::domain::access_control::credential_hash(&issued.pin)
        );
        let shared = app.count(
            "SELECT COUNT(*) AS n FROM access_credentials x JOIN access_credentials y \
             ON x.site_id = y.site_id AND x.pin_sha256 = y.pin_sha256 AND x.booking_id < y.booking_id \
             WHERE x.valid_from < y.valid_until AND y.valid_from < x.valid_until",
        );
        assert_eq!(shared, 0);
    }
);

on_both!(
    the_service_keeps_planner_statistics_itself,
    |backend| async move {
        use chrono::{Duration, Utc};
        use spazi::db::maintenance::Threshold;
        use spazi::jobs::analyze;
        let app = spawn(backend).await;
        let reltuples = |table: &str| {
            app.count(&format!(
                "SELECT CAST(reltuples AS BIGINT) AS n FROM pg_class WHERE relname = '{table}'"
            ))
        };
        if backend == crate::helpers::Backend::Postgres {
            // What the service seeded is analyzed; the empty bookings table is not.
            assert!(
                reltuples("resources") > 10_000,
                "{}",
                reltuples("resources")
            );
            let never = app.count(
                "SELECT COUNT(*) AS n FROM pg_stat_user_tables \
                 WHERE relname = 'bookings' AND last_analyze IS NULL",
            );
            assert_eq!(never, 1, "the empty bookings table was analyzed");
        }
        let (site, _) = app.open_day("large", 2);
        let (_, desks) = app
            .get_json(
                &format!("/api/v1/sites/{site}/resources?kind=desk&limit=50"),
                None,
            )
            .await;
        let m = app.user(Role::Member, None, &[]).await;
        let start = Utc::now() + Duration::days(2);
        for i in 0..60 {
            let desk = desks["items"][i % 50]["id"].as_str().unwrap();
            let from = start + Duration::hours((i / 50) as i64);
            app.store_booking(&m, None, desk, from, from + Duration::minutes(30), 0)
                .await;
        }
        // The job's pass analyzes the grown tables (this one, or the service's own running
        // job, whichever comes first once PostgreSQL has counted the changes).
        let mut analyzed = Vec::new();
        for _ in 0..100 {
            analyzed.extend(
                analyze::pass(&app.state.db, Threshold::default())
                    .await
                    .unwrap(),
            );
            if backend == crate::helpers::Backend::Sqlite
                || (reltuples("bookings") == 60 && reltuples("access_credentials") == 60)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        match backend {
            crate::helpers::Backend::Sqlite => assert!(analyzed.is_empty(), "{analyzed:?}"),
            crate::helpers::Backend::Postgres => {
                assert_eq!(reltuples("bookings"), 60, "{analyzed:?}");
                assert_eq!(reltuples("access_credentials"), 60, "{analyzed:?}");
                // Analyzed tables are left alone until they change again by 50 + 10 %.
                let again = analyze::pass(&app.state.db, Threshold::default())
                    .await
                    .unwrap();
                assert!(!again.contains(&"bookings".to_string()), "{again:?}");
            }
        }
    }
);
