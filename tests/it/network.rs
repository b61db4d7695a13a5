//! The seeded network as clients see it, and availability.

use serde_json::Value;
use spazi::domain::Role;

use crate::helpers::spawn;
use crate::on_both;

async fn all_sites(app: &crate::helpers::TestApp, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/sites?limit=100{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (s, page) = app.get_json(&path, None).await;
        assert_eq!(s, 200, "{page}");
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return items,
        }
    }
}

on_both!(
    two_hundred_fifty_sites_eighty_small_towns,
    |backend| async move {
        let app = spawn(backend).await;
        let sites = all_sites(&app, "").await;
        assert_eq!(sites.len(), 250);
        let small = all_sites(&app, "&small_town=true").await;
        assert_eq!(small.len(), 80);
        assert!(small
            .iter()
            .all(|s| s["population"].as_i64().unwrap() < 15_000));
        let regions: std::collections::HashSet<_> = sites
            .iter()
            .map(|s| s["region"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(regions.len(), 20);
        let lazio = all_sites(&app, "&region=Lazio").await;
        assert!(lazio.iter().any(|s| s["id"] == "roma"));
        assert!(lazio.iter().all(|s| s["region"] == "Lazio"));
        let by_code = all_sites(&app, "&province=BO").await;
        assert!(by_code.iter().any(|s| s["id"] == "bologna"));
    }
);

on_both!(near_sorts_by_distance, |backend| async move {
    let app = spawn(backend).await;
    // Piazza Maggiore, Bologna.
    let (s, page) = app
        .get_json("/api/v1/sites?near=44.4938,11.3426&radius_km=60", None)
        .await;
    assert_eq!(s, 200);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items[0]["id"], "bologna");
    let distances: Vec<f64> = items
        .iter()
        .map(|s| s["distance_km"].as_f64().unwrap())
        .collect();
    assert!(distances.windows(2).all(|w| w[0] <= w[1]), "{distances:?}");
    assert!(distances.iter().all(|d| *d <= 60.0));
});

on_both!(
    site_detail_has_hours_closures_and_counts,
    |backend| async move {
        let app = spawn(backend).await;
        let (s, site) = app.get_json("/api/v1/sites/roma", None).await;
        assert_eq!(s, 200);
        assert_eq!(site["istat_code"], "058091");
        assert_eq!(site["timezone"], "Europe/Rome");
        assert_eq!(site["province"], "Roma");
        assert!(site["opening_hours"]["mon"].is_array());
        let closures = site["closures"].as_array().unwrap();
        let year = chrono::Datelike::year(&chrono::Utc::now());
        let easter_monday =
            spazi::domain::holidays::easter_sunday(year + 1) + chrono::Duration::days(1);
        assert!(
            closures
                .iter()
                .any(|c| c["date"] == easter_monday.to_string()),
            "Easter Monday among {closures:?}"
        );
        assert!(closures.iter().any(
            |c| c["kind"] == "site" && c["reason"].as_str().unwrap().contains("Pietro e Paolo")
        ));
        assert!(site["resource_counts"]["desk"].as_i64().unwrap() >= 80);
        let (s, _) = app.get_json("/api/v1/sites/atlantide", None).await;
        assert_eq!(s, 404);
    }
);

on_both!(
    availability_excludes_booked_and_closed,
    |backend| async move {
        let app = spawn(backend).await;
        let (site, day) = app.open_day("large", 3);
        let (from, to) = (app.local(&site, day, 9, 0), app.local(&site, day, 10, 0));
        let q = |from: &str, to: &str| {
            format!(
                "/api/v1/availability?site_id={site}&kind=meeting_room&from={}&to={}&limit=500",
                urlencode(from),
                urlencode(to)
            )
        };
        let (s, before) = app.get_json(&q(&from, &to), None).await;
        assert_eq!(s, 200, "{before}");
        let free_before = before["items"].as_array().unwrap().len();
        assert!(free_before > 0);
        let room = before["items"][0]["id"].as_str().unwrap().to_string();
        let m = app.user(Role::Member, None, &[]).await;
        assert_eq!(
            app.book(
                &m.token,
                &room,
                &app.local(&site, day, 9, 30),
                &app.local(&site, day, 11, 0)
            )
            .await
            .0,
            201
        );
        let (_, after) = app.get_json(&q(&from, &to), None).await;
        let ids: Vec<&str> = after["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), free_before - 1);
        assert!(!ids.contains(&room.as_str()));
        // [08:00, 09:30) ends as the booking starts: the room is free for it.
        let (_, adjacent) = app
            .get_json(
                &q(&app.local(&site, day, 8, 0), &app.local(&site, day, 9, 30)),
                None,
            )
            .await;
        assert!(adjacent["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == room.as_str()));
        // By region: the same search across every site of the region.
        let region = app
            .state
            .directory()
            .get(&site)
            .unwrap()
            .site
            .region
            .clone();
        let (s, regional) = app
            .get_json(
                &format!(
                    "/api/v1/availability?region={}&kind=desk&from={}&to={}&limit=500",
                    urlencode(&region),
                    urlencode(&from),
                    urlencode(&to)
                ),
                None,
            )
            .await;
        assert_eq!(s, 200, "{regional}");
        let site_ids: std::collections::HashSet<_> = regional["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["site_id"].as_str().unwrap())
            .collect();
        assert!(site_ids.contains(site.as_str()));
    }
);

on_both!(
    availability_is_empty_on_a_closure_day,
    |backend| async move {
        let app = spawn(backend).await;
        let (s, page) = app
        .get_json("/api/v1/availability?site_id=milano&kind=desk&from=2026-12-25T09:00:00%2B01:00&to=2026-12-25T10:00:00%2B01:00", None)
        .await;
        assert_eq!(s, 200);
        assert_eq!(page["items"].as_array().unwrap().len(), 0);
        assert_eq!(page["closed_sites"][0], "milano");
        // The same query with the offset's `+` left unencoded, as many clients send it.
        let (s, raw) = app
        .get_json("/api/v1/availability?site_id=milano&kind=desk&from=2026-12-25T09:00:00+01:00&to=2026-12-25T10:00:00+01:00", None)
        .await;
        assert_eq!(s, 200, "{raw}");
        assert_eq!(raw["from"], "2026-12-25T08:00:00Z");
    }
);

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B")
        .replace(' ', "%20")
        .replace('\'', "%27")
}
