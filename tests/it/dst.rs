//! Bookings on and across the days Europe/Rome changes its clocks.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use spazi::domain::Role;

use crate::helpers::{spawn, TestApp};
use crate::on_both;

/// A large (round-the-clock) site open on `day`.
fn site_open_on(app: &TestApp, day: NaiveDate) -> String {
    let dir = app.state.directory();
    dir.sites
        .iter()
        .find(|s| s.site.size == "large" && s.closure(day).is_none())
        .expect("a large site open that day")
        .site
        .id
        .clone()
}

on_both!(spring_forward_night, |backend| async move {
    let app = spawn(backend).await;
    let org = app.create_org("Alfa", 100);
    let m = app.user(Role::Member, Some(&org), &[]).await;
    // 28 March 2027 is both the spring change and Easter Sunday: every site is closed.
    let day = NaiveDate::from_ymd_opt(2027, 3, 28).unwrap();
    let site = app
        .state
        .directory()
        .sites
        .iter()
        .find(|s| s.site.size == "large")
        .unwrap()
        .site
        .id
        .clone();
    let room = app.resource_id(&site, "meeting_room").await;
    let (s, closed) = app
        .book(
            &m.token,
            &room,
            "2027-03-28T01:00:00+01:00",
            "2027-03-28T04:00:00+02:00",
        )
        .await;
    assert_eq!(s, 422, "{closed}");
    assert!(
        closed["detail"]
            .as_str()
            .unwrap()
            .contains(&day.to_string()),
        "{closed}"
    );
    // A booking made over the change in 2026 is shown with the right offsets on both sides.
    let user = spazi::db::users::by_email;
    let owner = app
        .state
        .db
        .run_blocking(|c| user(c, &m.email))
        .unwrap()
        .unwrap();
    let id = insert_booking(
        &app,
        &owner.id,
        &room,
        "2026-03-29T00:00:00Z",
        "2026-03-29T02:00:00Z",
    );
    let (s, b) = app
        .get_json(&format!("/api/v1/bookings/{id}"), Some(&m.token))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["starts_at"], "2026-03-29T00:00:00Z");
    assert_eq!(b["ends_at"], "2026-03-29T02:00:00Z");
    assert_eq!(b["starts_at_local"], "2026-03-29T01:00:00+01:00");
    assert_eq!(b["ends_at_local"], "2026-03-29T04:00:00+02:00");
    assert_eq!(b["timezone"], "Europe/Rome");
    let ics = app
        .client
        .get(app.url(&format!("/api/v1/bookings/{id}/ics")))
        .bearer_auth(&m.token)
        .send()
        .await
        .unwrap();
    let ics = ics.text().await.unwrap();
    assert!(
        ics.contains("DTSTART:20260329T000000Z") && ics.contains("DTEND:20260329T020000Z"),
        "{ics}"
    );
});

/// Stores a booking as it was made in the past, bypassing the rule that new ones start in the future.
fn insert_booking(
    app: &TestApp,
    user_id: &str,
    resource_id: &str,
    start: &str,
    end: &str,
) -> String {
    use spazi::db::models::{Booking, OutboxRow};
    let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap().naive_utc();
    let site_id = resource_id.split("-room-").next().unwrap().to_string();
    let id = uuid::Uuid::now_v7().to_string();
    let booking = Booking {
        id: id.clone(),
        resource_id: resource_id.into(),
        site_id,
        user_id: user_id.into(),
        organization_id: None,
        starts_at: t(start),
        ends_at: t(end),
        status: spazi::domain::BookingStatus::Completed,
        attendees: 1,
        note: None,
        charged_minutes: 0,
        allowance_month: None,
        sequence: 0,
        created_at: t(start),
        updated_at: t(end),
        checked_in_at: None,
        cancelled_at: None,
    };
    let mail = OutboxRow {
        id: uuid::Uuid::now_v7().to_string(),
        kind: "none".into(),
        payload: "{}".into(),
        created_at: t(start),
        available_at: t(start),
        attempts: 0,
        last_error: None,
        sent_at: Some(t(start)),
    };
    app.state
        .db
        .run_blocking(|c| {
            let credential = spazi::db::access::NewCredential {
                row: spazi::db::access::CredentialRow {
                    booking_id: booking.id.clone(),
                    site_id: booking.site_id.clone(),
                    token: format!("spz1.{}", booking.id),
                    pin: "000000".into(),
                    token_sha256: format!("token-{}", booking.id),
                    pin_sha256: "pin".into(),
                    valid_from: booking.starts_at,
                    valid_until: booking.ends_at,
                    created_at: booking.created_at,
                },
                pins: Vec::new(),
            };
            spazi::db::bookings::create(c, &booking, None, &credential, None, |_| mail.clone())
        })
        .unwrap();
    id
}

on_both!(fall_back_night, |backend| async move {
    let app = spawn(backend).await;
    // The last Sunday of October 2027: 02:00-03:00 local happens twice.
    let day = NaiveDate::from_ymd_opt(2027, 10, 31).unwrap();
    let site = site_open_on(&app, day);
    let org = app.create_org("Alfa", 100);
    let m = app.user(Role::Member, Some(&org), &[]).await;
    let office = app.resource_id(&site, "office").await;
    let (s, b) = app
        .book(
            &m.token,
            &office,
            "2027-10-31T01:00:00+02:00",
            "2027-10-31T04:00:00+01:00",
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["starts_at"], "2027-10-30T23:00:00Z");
    assert_eq!(b["ends_at"], "2027-10-31T03:00:00Z");
    assert_eq!(b["starts_at_local"], "2027-10-31T01:00:00+02:00");
    assert_eq!(b["ends_at_local"], "2027-10-31T04:00:00+01:00");
    assert_eq!(b["allowance_minutes"], 240);
    // The second 02:30 (+01:00) is a different instant from the first (+02:00): both fit after the first booking ends.
    let (s, second) = app
        .book(
            &m.token,
            &office,
            "2027-10-31T04:00:00+01:00",
            "2027-10-31T05:00:00+01:00",
        )
        .await;
    assert_eq!(s, 201, "{second}");
    let (s, overlap) = app
        .book(
            &m.token,
            &office,
            "2027-10-31T02:30:00+01:00",
            "2027-10-31T03:30:00+01:00",
        )
        .await;
    assert_eq!(
        s, 409,
        "the repeated hour is inside the first booking: {overlap}"
    );
    // Listing by a local-time window finds it, times stored in UTC.
    let (_, list) = app
        .get_json(
            "/api/v1/bookings?from=2027-10-31T00:00:00%2B02:00&to=2027-11-01T00:00:00%2B01:00",
            Some(&m.token),
        )
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    let start: DateTime<Utc> = list["items"][0]["starts_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let end: DateTime<Utc> = list["items"][0]["ends_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(end - start, Duration::hours(4));
});

on_both!(
    office_hours_follow_local_time_across_the_change,
    |backend| async move {
        let app = spawn(backend).await;
        // A medium site opens 08:00 local: 07:00Z in winter, 06:00Z in summer.
        let dir = app.state.directory();
        let before = NaiveDate::from_ymd_opt(2027, 3, 26).unwrap();
        let after = NaiveDate::from_ymd_opt(2027, 3, 30).unwrap();
        let site = dir
            .sites
            .iter()
            .find(|s| {
                s.site.size == "medium" && s.closure(before).is_none() && s.closure(after).is_none()
            })
            .unwrap()
            .site
            .id
            .clone();
        let m = app.user(Role::Member, None, &[]).await;
        let room = app.resource_id(&site, "meeting_room").await;
        let (s, _) = app
            .book(
                &m.token,
                &room,
                "2027-03-26T07:00:00Z",
                "2027-03-26T08:00:00Z",
            )
            .await;
        assert_eq!(s, 201);
        let (s, early) = app
            .book(
                &m.token,
                &room,
                "2027-03-30T06:30:00Z",
                "2027-03-30T07:30:00Z",
            )
            .await;
        assert_eq!(s, 201, "08:30 local after the change: {early}");
        let (s, closed) = app
            .book(
                &m.token,
                &room,
                "2027-03-26T06:30:00Z",
                "2027-03-26T07:30:00Z",
            )
            .await;
        assert_eq!(s, 422, "07:30 local before opening: {closed}");
    }
);
