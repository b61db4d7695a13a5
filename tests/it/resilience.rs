//! Nothing fails silently: jobs that die are restarted and counted, a job that keeps failing and
//! a mail backlog show in `/readyz` and `/metrics`, a refused access-log row does not stop the
//! doors, a revoked grant reaches every instance, and sent mail loses its personal data.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use diesel::RunQueryDsl;
use rumqttc::{AsyncClient, QoS};
use serde_json::{json, Value};
use spazi::domain::{DeviceClass, Role};
use spazi::jobs::supervisor::Supervisor;
use tokio::sync::mpsc;

use crate::access::{subscriber, Task};
use crate::helpers::{spawn, spawn_with, Backend, TestApp, TestUser};
use crate::on_both;
use crate::telemetry::{now_ms, rig, wait, Broker};

fn sql_execute(app: &TestApp, sql: String) -> usize {
    app.state
        .db
        .run_blocking(move |c| {
            diesel::sql_query(sql)
                .execute(c)
                .map_err(spazi::db::DbError::from)
        })
        .expect("sql statement")
}

async fn metrics_text(app: &TestApp) -> String {
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// The value of one sample line of `/metrics`, e.g. `spazi_job_restarts_total{job="x"}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `/readyz` until `check` holds for (status, body), or panics with the last answer.
async fn readyz_until(app: &TestApp, within: Duration, check: impl Fn(u16, &Value) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let (s, body) = app.get_json("/readyz", None).await;
        if check(s, &body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never got there: {s} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn names_job(body: &Value, job: &str) -> bool {
    body["checks"]["jobs"]["failing"]
        .as_array()
        .is_some_and(|a| a.iter().any(|j| j == job))
        && body["checks"]["jobs"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains(job))
}

// ---------------------------------------------------------------------------------------------
// The supervisor
// ---------------------------------------------------------------------------------------------

/// A job under the service's supervisor that panics on its first three starts: it is started
/// again each time and counted, `/readyz` names it while it keeps dying, and once it runs a good
/// pass the service is ready again.
async fn a_panicking_job_is_restarted(backend: Backend) {
    let app = spawn(backend).await;
    let (s, body) = app.get_json("/readyz", None).await;
    assert_eq!(s, 200, "{body}");
    let supervisor = Supervisor::new(app.state.metrics.clone());
    let starts = Arc::new(AtomicU32::new(0));
    let resume = Arc::new(tokio::sync::Notify::new());
    let (counter, gate, metrics) = (starts.clone(), resume.clone(), app.state.metrics.clone());
    supervisor.spawn("probe", move || {
        let (counter, gate, metrics) = (counter.clone(), gate.clone(), metrics.clone());
        async move {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= 3 {
                panic!("probe start {n} fails");
            }
            gate.notified().await;
            metrics.jobs.ok("probe");
            std::future::pending::<()>().await
        }
    });
    let s = starts.clone();
    assert!(
        wait(Duration::from_secs(10), || s.load(Ordering::SeqCst) == 4).await,
        "started {} times",
        starts.load(Ordering::SeqCst)
    );
    let text = metrics_text(&app).await;
    assert_eq!(
        sample(&text, "spazi_job_restarts_total{job=\"probe\"}"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(sample(&text, "spazi_job_failing{job=\"probe\"}"), Some(1.0));
    let (s, body) = app.get_json("/readyz", None).await;
    assert_eq!(s, 503, "{body}");
    assert!(names_job(&body, "probe"), "{body}");
    assert_eq!(body["checks"]["database"]["status"], "ok", "{body}");

    resume.notify_one();
    readyz_until(&app, Duration::from_secs(5), |s, _| s == 200).await;
    let text = metrics_text(&app).await;
    assert_eq!(sample(&text, "spazi_job_failing{job=\"probe\"}"), Some(0.0));
    assert_eq!(
        starts.load(Ordering::SeqCst),
        4,
        "a healthy job is not restarted"
    );
}

on_both!(panicking_job_restarted, |b| a_panicking_job_is_restarted(b));

/// The no-show release job, run every second in the tests, fails for real while its table is
/// away: each failed pass is counted, `/readyz` names the job, and it recovers by itself.
async fn a_failing_job_is_named_by_readyz(backend: Backend) {
    let app = spawn(backend).await;
    let text = metrics_text(&app).await;
    assert_eq!(
        sample(&text, "spazi_job_failures_total{job=\"release\"}"),
        Some(0.0),
        "{text}"
    );
    sql_execute(&app, "ALTER TABLE bookings RENAME TO bookings_away".into());
    readyz_until(&app, Duration::from_secs(10), |s, b| {
        s == 503 && names_job(b, "release")
    })
    .await;
    let text = metrics_text(&app).await;
    let failures = sample(&text, "spazi_job_failures_total{job=\"release\"}").unwrap_or(0.0);
    assert!(failures >= 3.0, "{text}");
    sql_execute(&app, "ALTER TABLE bookings_away RENAME TO bookings".into());
    readyz_until(&app, Duration::from_secs(10), |s, _| s == 200).await;
}

on_both!(failing_job_named, |b| a_failing_job_is_named_by_readyz(b));

// ---------------------------------------------------------------------------------------------
// The mail backlog
// ---------------------------------------------------------------------------------------------

/// An SMTP server that accepts connections and never answers: every send hangs until the
/// client's timeout, so queued mail stays queued.
async fn silent_smtp() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (port, task)
}

async fn backlog_in_metrics_and_readyz(backend: Backend) {
    let (port, _smtp) = silent_smtp().await;
    let app = spawn_with(backend, |mut c| {
        c.mail_url = format!("smtp://127.0.0.1:{port}");
        c
    })
    .await;
    let text = metrics_text(&app).await;
    assert_eq!(sample(&text, "spazi_outbox_due"), Some(0.0), "{text}");
    let (s, body) = app.get_json("/readyz", None).await;
    assert_eq!(
        (s, body["checks"]["mail"]["status"].as_str()),
        (200, Some("ok")),
        "{body}"
    );

    // A confirmation mail, queued and stuck behind the silent server.
    let member = app.user(Role::Member, None, &[]).await;
    let (site, day) = app.open_day("large", 3);
    let desk = app.resource_id(&site, "desk").await;
    let (status, booking) = app
        .book(
            &member.token,
            &desk,
            &app.local(&site, day, 10, 0),
            &app.local(&site, day, 11, 0),
        )
        .await;
    assert_eq!(status, 201, "{booking}");
    let text = metrics_text(&app).await;
    assert_eq!(sample(&text, "spazi_outbox_due"), Some(1.0), "{text}");
    let (s, body) = app.get_json("/readyz", None).await;
    assert_eq!(
        s, 200,
        "a fresh backlog is not a reason to stop traffic: {body}"
    );
    assert_eq!(body["checks"]["mail"]["backlog"], 1, "{body}");

    // Mail queued 11 minutes ago and still not sent: degraded is past, the service is unready.
    let old = spazi::db::naive(Utc::now() - chrono::Duration::minutes(11));
    let row = spazi::db::models::OutboxRow::due(
        "booking_confirmed",
        json!({"message_id": "old@spazi", "to": "late@example.test", "subject": "s", "text": "t", "calendar": null}).to_string(),
        old,
    );
    app.state
        .db
        .run_blocking(move |c| spazi::db::outbox::enqueue(c, &row))
        .expect("queue a mail");
    let text = metrics_text(&app).await;
    assert_eq!(sample(&text, "spazi_outbox_due"), Some(2.0), "{text}");
    let oldest = sample(&text, "spazi_outbox_oldest_due_seconds").expect("oldest gauge");
    assert!((660.0..700.0).contains(&oldest), "{text}");
    let (s, body) = app.get_json("/readyz", None).await;
    assert_eq!(s, 503, "{body}");
    let mail = &body["checks"]["mail"];
    assert_eq!(mail["status"], "unavailable", "{body}");
    assert_eq!(mail["backlog"], 2, "{body}");
    assert!(
        mail["detail"]
            .as_str()
            .is_some_and(|d| d.contains("2 mails")),
        "{body}"
    );
    assert_eq!(body["checks"]["database"]["status"], "ok", "{body}");
}

on_both!(mail_backlog_reported, |b| backlog_in_metrics_and_readyz(b));

// ---------------------------------------------------------------------------------------------
// Personal data in the outbox
// ---------------------------------------------------------------------------------------------

fn payload_of(app: &TestApp, id: &str) -> (String, Option<String>) {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        payload: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        last_error: Option<String>,
    }
    let sql = format!("SELECT payload, last_error FROM outbox WHERE id = '{id}'");
    let row = app
        .state
        .db
        .run_blocking(move |c| {
            diesel::sql_query(sql)
                .get_result::<Row>(c)
                .map_err(spazi::db::DbError::from)
        })
        .expect("outbox row");
    (row.payload, row.last_error)
}

async fn outbox_forgets_personal_data(backend: Backend) {
    let app = spawn(backend).await;
    let days = app.state.config.telemetry.personal_retention_days;
    let member = app.user(Role::Member, None, &[]).await;
    let (site, day) = app.open_day("large", 3);
    let desks: Vec<String> = app
        .state
        .directory()
        .get(&site)
        .expect("site")
        .resources
        .iter()
        .filter(|r| r.kind == spazi::domain::ResourceKind::Desk)
        .take(3)
        .map(|r| r.resource.id.clone())
        .collect();
    let mut mails = Vec::new();
    for desk in &desks {
        let (status, b) = app
            .book(
                &member.token,
                desk,
                &app.local(&site, day, 10, 0),
                &app.local(&site, day, 11, 0),
            )
            .await;
        assert_eq!(status, 201, "{b}");
        let id = b["id"].as_str().unwrap().to_owned();
        let (status, access) = app
            .get_json(
                &format!("/api/v1/bookings/{id}/access"),
                Some(&member.token),
            )
            .await;
        assert_eq!(status, 200, "{access}");
        let pin = access["pin"].as_str().unwrap().to_owned();
        mails.push((id, pin));
    }
    let n = mails.len() as i64;
    let sent = |app: &TestApp| {
        app.count(&format!(
            "SELECT COUNT(*) AS n FROM outbox WHERE kind = 'booking_confirmed' AND sent_at IS NOT NULL AND payload LIKE '%{}%'",
            member.email
        ))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while sent(&app) < n {
        assert!(Instant::now() < deadline, "the confirmations were not sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row_of = |pin: &str| -> String {
        #[derive(diesel::QueryableByName)]
        struct Id {
            #[diesel(sql_type = diesel::sql_types::Text)]
            id: String,
        }
        let sql = format!("SELECT id FROM outbox WHERE payload LIKE '%{pin}%'");
        app.state
            .db
            .run_blocking(move |c| {
                diesel::sql_query(sql)
                    .get_result::<Id>(c)
                    .map_err(spazi::db::DbError::from)
            })
            .expect("the mail carrying the PIN")
            .id
    };
    let ids: Vec<String> = mails.iter().map(|(_, pin)| row_of(pin)).collect();
    // The first was sent past the retention; the second recently; the third never (it is
    // waiting out a retry, and was queued long ago).
    let past = Utc::now() - chrono::Duration::days(i64::from(days) + 1);
    let past = past.format("%Y-%m-%d %H:%M:%S").to_string();
    sql_execute(
        &app,
        format!(
            "UPDATE outbox SET created_at = '{past}', sent_at = '{past}', last_error = 'rcpt {} refused' WHERE id = '{}'",
            member.email, ids[0]
        ),
    );
    let later = (Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    sql_execute(
        &app,
        format!(
            "UPDATE outbox SET created_at = '{past}', sent_at = NULL, available_at = '{later}', last_error = 'rcpt {} refused' WHERE id = '{}'",
            member.email, ids[2]
        ),
    );
    spazi::jobs::retention::try_pass(&app.state.db, 3650, days)
        .await
        .expect("retention pass");

    let (payload, error) = payload_of(&app, &ids[0]);
    assert_eq!(payload, spazi::db::outbox::SCRUBBED_PAYLOAD);
    assert_eq!(error, None);
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) AS n FROM outbox WHERE id = '{}' AND sent_at IS NOT NULL AND kind = 'booking_confirmed'",
            ids[0]
        )),
        1,
        "the row itself stays: what was sent and when"
    );
    for (i, keep) in [(1, "sent recently"), (2, "not sent yet")] {
        let (payload, _) = payload_of(&app, &ids[i]);
        assert!(
            payload.contains(&member.email) && payload.contains(&mails[i].1),
            "{keep}: the mail keeps its content"
        );
    }
    assert!(
        payload_of(&app, &ids[2]).1.is_some(),
        "unsent keeps its error"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) AS n FROM outbox WHERE payload LIKE '%{0}%' OR last_error LIKE '%{0}%'",
            member.email
        )),
        2,
        "only the recent and the unsent mail still name the member"
    );
}

on_both!(outbox_personal_data_expires, |b| {
    outbox_forgets_personal_data(b)
});

// ---------------------------------------------------------------------------------------------
// Doors
// ---------------------------------------------------------------------------------------------

/// A door reader on the broker: publishes `evt/badge`, hears its `cmd/+`.
struct Door {
    site: String,
    id: String,
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>, i64)>,
    seq: i64,
    _task: Task,
}

impl Door {
    async fn connect(port: u16, site: &str, door: &str) -> Door {
        let client_id = format!("{door}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let filter = format!("spazi/v1/{site}/{door}/cmd/+");
        let (client, rx, task) = subscriber(port, &client_id, &filter).await;
        Door {
            site: site.into(),
            id: door.into(),
            client,
            rx,
            seq: 5000,
            _task: task,
        }
    }

    /// Scans `credential` and returns the answer's command name and reason.
    async fn scan(&mut self, credential: &str) -> (String, Option<String>) {
        self.seq += 1;
        let seq = self.seq;
        let payload = json!({"v": 1, "ts": now_ms(), "seq": seq, "m": {"credential": credential}});
        self.client
            .publish(
                format!("spazi/v1/{}/{}/evt/badge", self.site, self.id),
                QoS::AtLeastOnce,
                false,
                payload.to_string(),
            )
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (topic, payload, _) = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("{}: no answer to badge {seq}", self.id))
                .expect("door client running");
            let name = topic.rsplit('/').next().unwrap_or_default().to_owned();
            let Ok(body) = serde_json::from_slice::<Value>(&payload) else {
                continue;
            };
            if body["m"]["badge_seq"] == seq {
                let reason = body["m"]["reason"].as_str().map(str::to_owned);
                return (name, reason);
            }
        }
    }
}

fn entrance(app: &TestApp, site: &str) -> String {
    app.state
        .fleet
        .site(site)
        .into_iter()
        .find(|d| d.class == DeviceClass::DoorReader && d.zone_id.is_none())
        .expect("an entrance door")
        .id
}

fn desks(app: &TestApp, site: &str, n: usize) -> Vec<String> {
    app.state
        .directory()
        .get(site)
        .expect("site")
        .resources
        .iter()
        .filter(|r| r.kind == spazi::domain::ResourceKind::Desk)
        .take(n)
        .map(|r| r.resource.id.clone())
        .collect()
}

async fn member(app: &TestApp) -> (String, TestUser) {
    let org = app.create_org(&format!("Acme {}", uuid::Uuid::new_v4().simple()), 500);
    let user = app.user(Role::Member, Some(&org), &[]).await;
    (org, user)
}

async fn status_of(app: &TestApp, user: &TestUser, id: &str) -> String {
    let (s, body) = app
        .get_json(&format!("/api/v1/bookings/{id}"), Some(&user.token))
        .await;
    assert_eq!(s, 200, "{body}");
    body["status"].as_str().expect("status").to_owned()
}

/// The database refuses, for good, the access-log rows of one booking (a rule added here): that
/// booking's scans are still answered, and the next booking's scan is answered, logged and
/// checks it in; the refused row is counted.
async fn a_refused_log_row_does_not_stop_check_ins(backend: Backend) {
    let rig = rig(backend, Broker::Embedded, |c| c).await;
    let app = &rig.app;
    let site = "bologna";
    let (org, user) = member(app).await;
    let desks = desks(app, site, 2);
    let now = Utc::now();
    let (start, end) = (
        now - chrono::Duration::minutes(5),
        now + chrono::Duration::minutes(55),
    );
    let refused = app
        .store_booking(&user, Some(&org), &desks[0], start, end, 60)
        .await;
    let next = app
        .store_booking(&user, Some(&org), &desks[1], start, end, 60)
        .await;
    let rule = match backend {
        Backend::Postgres => format!(
            "ALTER TABLE access_log ADD CONSTRAINT access_log_refuse_probe CHECK (booking_id IS DISTINCT FROM '{}') NOT VALID",
            refused.id
        ),
        Backend::Sqlite => format!(
            "CREATE TRIGGER access_log_refuse_probe BEFORE INSERT ON access_log WHEN NEW.booking_id = '{}' BEGIN SELECT RAISE(ABORT, 'refused by rule'); END",
            refused.id
        ),
    };
    sql_execute(app, rule);

    let mut door = Door::connect(rig.port, site, &entrance(app, site)).await;
    for _ in 0..3 {
        assert_eq!(door.scan(&refused.token).await.0, "unlock");
    }
    assert_eq!(door.scan(&next.token).await.0, "unlock");
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_of(app, &user, &next.id).await != "checked_in" {
        assert!(
            Instant::now() < deadline,
            "the next booking was never checked in"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logged = |id: &str| {
        app.count(&format!(
            "SELECT COUNT(*) AS n FROM access_log WHERE booking_id = '{id}'"
        ))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while logged(&next.id) < 1 {
        assert!(Instant::now() < deadline, "the next scan was never logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(logged(&refused.id), 0);
    assert_eq!(
        app.state.metrics.access.log_refused.load(Ordering::Relaxed),
        3
    );
    let text = metrics_text(app).await;
    assert_eq!(sample(&text, "spazi_access_log_refused_total"), Some(3.0));
    // Still answering and logging after that.
    assert_eq!(door.scan(&next.token).await.0, "unlock");
    let deadline = Instant::now() + Duration::from_secs(5);
    while logged(&next.id) < 2 {
        assert!(Instant::now() < deadline, "the later scan was never logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

on_both!(refused_log_row_skipped, |b| {
    a_refused_log_row_does_not_stop_check_ins(b)
});

/// Two instances on one broker and database. A booking the first instance never loaded is
/// cancelled through it; the second instance loads the booking's grant as it stood before the
/// cancellation (a read that raced with it), after the cancellation: within a second, its door
/// decisions refuse the booking as cancelled.
async fn a_revocation_reaches_an_instance_that_loaded_the_grant_later(backend: Backend) {
    use crate::mosquitto::{Mosquitto, MosquittoOptions};
    use crate::telemetry::ingest_config;
    use spazi::config::{Config, MqttConfig};

    let broker = Mosquitto::start(MosquittoOptions::default());
    let (url, db_dir) = crate::helpers::fresh_database(backend);
    let mqtt = MqttConfig::External {
        host: "127.0.0.1".into(),
        port: broker.port,
    };
    let with_ingest = |c: Config| ingest_config(c, mqtt.clone());
    let first = crate::helpers::spawn_on(url.clone(), db_dir, with_ingest).await;
    let second = crate::helpers::spawn_on(url, None, with_ingest).await;
    for app in [&first, &second] {
        let m = app.state.metrics.clone();
        assert!(
            wait(Duration::from_secs(10), || m
                .telemetry
                .connected
                .load(Ordering::Relaxed)
                == 1)
            .await
        );
    }
    let site = "bologna";
    let (org, user) = member(&second).await;
    let desk = desks(&second, site, 1).remove(0);
    let now = Utc::now();
    let b = second
        .store_booking(
            &user,
            Some(&org),
            &desk,
            now - chrono::Duration::minutes(5),
            now + chrono::Duration::minutes(55),
            60,
        )
        .await;
    // The first instance drops what it heard of the booking, as if the announcement had not
    // reached it yet.
    let stale = second
        .state
        .db
        .run({
            let id = b.id.clone();
            move |c| spazi::db::access::grant(c, &id)
        })
        .await
        .expect("grant row")
        .expect("the booking's grant");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let since = Utc::now().naive_utc() - chrono::Duration::days(1);
    let others = first
        .state
        .db
        .run(move |c| spazi::db::access::grants(c, None, since))
        .await
        .expect("grants")
        .into_iter()
        .filter(|r| r.booking_id != b.id)
        .collect::<Vec<_>>();
    first.state.grants.load_all(&others, Vec::<String>::new());
    assert!(first.state.grants.get(&b.id).is_none());

    let (s, body) = first
        .post_json(
            &format!("/api/v1/bookings/{}/cancel", b.id),
            Some(&user.token),
            &json!({}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    // The second instance now loads the grant as read before the cancellation.
    second.state.grants.upsert_from_peer(&stale);
    let cancelled_at = Instant::now();

    let mut door = Door::connect(broker.port, site, &entrance(&second, site)).await;
    let deadline = cancelled_at + Duration::from_secs(1);
    let revoked = |app: &TestApp| {
        app.state
            .grants
            .get(&b.id)
            .is_some_and(|g| g.state == spazi::domain::access_control::GrantState::Cancelled)
    };
    while !(revoked(&second) && revoked(&first)) {
        assert!(
            Instant::now() < deadline,
            "an instance still honours the cancelled booking a second later: second {:?}",
            second.state.grants.get(&b.id).map(|g| g.state)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Both instances answer every scan: every answer refuses it.
    for _ in 0..3 {
        let (name, reason) = door.scan(&b.token).await;
        assert_eq!(
            (name.as_str(), reason.as_deref()),
            ("deny", Some("cancelled"))
        );
    }
    let denied = second.state.metrics.access.denied.load(Ordering::Relaxed);
    assert!(denied >= 3, "the second instance decided the scans");
}

on_both!(revocation_reaches_late_loader, |b| {
    a_revocation_reaches_an_instance_that_loaded_the_grant_later(b)
});
