//! Killing the real binary between a booking's commit and its mail loses no mail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{Datelike, TimeZone, Utc};
use serde_json::{json, Value};

use crate::email::{booking_calendar, free_port, ical_utc, property, wait_until, SmtpSink};
use crate::helpers::{fresh_database, Backend, PASSWORD};
use crate::on_both;

const BIN: &str = env!("CARGO_BIN_EXE_spazi");

/// A running `spazi serve`; dropping it kills the process.
pub(crate) struct Service {
    child: Child,
    log: PathBuf,
    pub(crate) base: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    pub(crate) fn start(env: &[(&str, String)], dir: &Path, name: &str) -> Service {
        let port = free_port();
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(BIN)
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("SPAZI_LISTEN", format!("127.0.0.1:{port}"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start spazi serve");
        Service {
            child,
            log,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) async fn wait_healthy(&mut self, client: &reqwest::Client) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                panic!("spazi serve exited with {status}:\n{}", self.log());
            }
            if let Ok(res) = client.get(format!("{}/healthz", self.base)).send().await {
                if res.status().as_u16() == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "spazi serve never became healthy:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no shutdown hook runs.
    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("kill spazi serve");
        self.child.wait().expect("reap spazi serve");
    }
}

fn run_spazi(args: &[&str], env: &[(&str, String)], dir: &Path) -> String {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run spazi");
    assert!(
        out.status.success(),
        "spazi {args:?} failed with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The outbox rows as stored.
fn outbox_rows(db: &spazi::db::Db) -> Vec<spazi::db::models::OutboxRow> {
    use diesel::prelude::*;
    use spazi::db::models::OutboxRow;
    use spazi::db::schema::outbox;
    db.run_blocking(|c| {
        outbox::table
            .select(OutboxRow::as_select())
            .load(c)
            .map_err(spazi::db::DbError::from)
    })
    .expect("read the outbox")
}

fn open_db(database_url: &str) -> spazi::db::Db {
    spazi::db::Db::connect(&spazi::db::DbConfig::new(database_url)).expect("open the database")
}

/// The outbox in short, for failure messages.
fn outbox_report(database_url: &str) -> Vec<String> {
    outbox_rows(&open_db(database_url))
        .iter()
        .map(|r| {
            format!(
                "{} created {} available {} attempts {} sent {:?} error {:?}",
                r.kind, r.created_at, r.available_at, r.attempts, r.sent_at, r.last_error
            )
        })
        .collect()
}

async fn get(client: &reqwest::Client, url: String) -> Value {
    let res = client.get(&url).send().await.expect("request");
    assert_eq!(res.status().as_u16(), 200, "GET {url}");
    res.json().await.expect("JSON body")
}

/// A desk at a large site and a 10:00–11:00 local slot a few days ahead on an open day.
async fn bookable_slot(client: &reqwest::Client, base: &str) -> (String, String, String) {
    let sites = get(client, format!("{base}/api/v1/sites?limit=500")).await;
    let site = sites["items"]
        .as_array()
        .expect("site list")
        .iter()
        .find(|s| s["size"] == "large")
        .expect("a large site")
        .clone();
    let id = site["id"].as_str().expect("site id");
    let detail = get(client, format!("{base}/api/v1/sites/{id}")).await;
    let tz: chrono_tz::Tz = detail["timezone"]
        .as_str()
        .expect("timezone")
        .parse()
        .expect("a known zone");
    let closed: Vec<&str> = detail["closures"]
        .as_array()
        .expect("closures")
        .iter()
        .filter_map(|c| c["date"].as_str())
        .collect();
    let covers = |day: chrono::NaiveDate| {
        let weekday = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            [day.weekday().num_days_from_monday() as usize];
        detail["opening_hours"][weekday]
            .as_array()
            .is_some_and(|spans| {
                spans
                    .iter()
                    .any(|s| s[0].as_str() <= Some("10:00") && s[1].as_str() >= Some("11:00"))
            })
    };
    let mut day = Utc::now().with_timezone(&tz).date_naive() + chrono::Duration::days(3);
    while closed.contains(&day.to_string().as_str()) || !covers(day) {
        day += chrono::Duration::days(1);
    }
    let at = |h| {
        tz.from_local_datetime(&day.and_hms_opt(h, 0, 0).expect("time"))
            .earliest()
            .expect("local time exists")
            .to_rfc3339()
    };
    let desks = get(
        client,
        format!("{base}/api/v1/sites/{id}/resources?kind=desk"),
    )
    .await;
    let desk = desks["items"][0]["id"]
        .as_str()
        .expect("a desk")
        .to_string();
    (desk, at(10), at(11))
}

/// Where the first run's mailer stands when the process is killed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KillPoint {
    /// Right after the 201, with no SMTP server listening at all.
    AfterCommit,
    /// While the mailer is stuck in a send to a server that accepts and never greets.
    DuringSend,
}

async fn killed_service_loses_no_mail(backend: Backend, point: KillPoint) {
    let (database_url, _db_dir) = fresh_database(backend);
    let dir = tempfile::tempdir().expect("work dir");
    let smtp_port = free_port();
    let env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", database_url.clone()),
        ("SPAZI_MQTT_URL", "mqtt://127.0.0.1:1883".into()),
        ("SPAZI_INGEST", "false".into()),
        (
            "SPAZI_JWT_SECRET",
            "crash-test-secret-crash-test-secret-0123".into(),
        ),
        ("SPAZI_MAIL_URL", format!("smtp://127.0.0.1:{smtp_port}")),
        ("SPAZI_MAIL_POLL_SECS", "1".into()),
        ("SPAZI_PUBLIC_URL", "http://spazi.test".into()),
    ];
    let email = format!("socio.{}@example.it", uuid::Uuid::new_v4().simple());
    run_spazi(&["migrate"], &env, dir.path());
    let mut with_password = env.clone();
    with_password.push(("SPAZI_USER_PASSWORD", PASSWORD.into()));
    let user_id = run_spazi(
        &[
            "user",
            "create",
            "--email",
            &email,
            "--name",
            "Marco Neri",
            "--role",
            "member",
        ],
        &with_password,
        dir.path(),
    );
    // Accepted connections wait in the backlog and never hear a greeting.
    let black_hole = (point == KillPoint::DuringSend).then(|| {
        std::net::TcpListener::bind(("127.0.0.1", smtp_port)).expect("bind the silent SMTP port")
    });

    let client = reqwest::Client::new();
    let mut first = Service::start(&env, dir.path(), "first");
    first.wait_healthy(&client).await;
    let base = first.base.clone();
    let login = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status().as_u16(), 200);
    let token = login.json::<Value>().await.expect("tokens")["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let (desk, start, end) = bookable_slot(&client, &base).await;
    let res = client
        .post(format!("{base}/api/v1/bookings"))
        .bearer_auth(&token)
        .json(&json!({"resource_id": desk, "starts_at": start, "ends_at": end}))
        .send()
        .await
        .expect("book");
    let status = res.status().as_u16();
    let booking: Value = res.json().await.expect("booking body");
    if point == KillPoint::DuringSend {
        let db = open_db(&database_url);
        let claimed = wait_until(Duration::from_secs(10), || {
            outbox_rows(&db)
                .iter()
                .any(|r| r.attempts >= 1 && r.sent_at.is_none())
        })
        .await;
        assert!(
            claimed,
            "the mailer never picked the mail up:\n{}",
            first.log()
        );
    }
    first.kill();
    drop(black_hole);
    assert_eq!(status, 201, "{booking}");
    assert_eq!(
        booking["user_id"].as_str(),
        Some(user_id.trim()),
        "{booking}"
    );

    let sink = SmtpSink::start_on(smtp_port).await;
    let mut second = Service::start(&env, dir.path(), "second");
    second.wait_healthy(&client).await;
    let mail = sink
        .wait_for(
            |m| m.is_to(&email) && m.has_method("REQUEST"),
            Duration::from_secs(40),
        )
        .await
        .unwrap_or_else(|| {
            panic!(
                "no confirmation; {}\noutbox: {:#?}\nfirst run:\n{}\nsecond run:\n{}",
                sink.summary(),
                outbox_report(&database_url),
                first.log(),
                second.log()
            )
        });
    let lines = booking_calendar(&mail, "REQUEST");
    assert_eq!(
        property(&lines, "DTSTART"),
        Some(ical_utc(booking["starts_at"].as_str().expect("starts_at")))
    );
    assert!(
        property(&lines, "UID").is_some_and(|u| !u.is_empty()),
        "{lines:?}"
    );
}

on_both!(
    killed_after_commit_mail_still_goes_out,
    |backend| async move {
        killed_service_loses_no_mail(backend, KillPoint::AfterCommit).await;
    }
);

on_both!(
    killed_during_send_mail_still_goes_out,
    |backend| async move {
        killed_service_loses_no_mail(backend, KillPoint::DuringSend).await;
    }
);
