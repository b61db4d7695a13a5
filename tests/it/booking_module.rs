//! The booking life cycle as one unit: a booking and everything that comes with it commit
//! together, and a stored status is read back only as one of the known statuses.

use diesel::RunQueryDsl;
use serde_json::{json, Value};
use spazi::domain::{BookingStatus, Role};

use crate::helpers::{spawn_with, Backend, TestApp};
use crate::on_both;

/// Runs each statement on the application's database.
fn execute(app: &TestApp, statements: &[&str]) {
    let statements: Vec<String> = statements.iter().map(|s| s.to_string()).collect();
    app.state
        .db
        .run_blocking(move |c| {
            for s in &statements {
                diesel::sql_query(s.as_str())
                    .execute(c)
                    .map_err(spazi::db::DbError::from)?;
            }
            Ok::<_, spazi::db::DbError>(())
        })
        .expect("statements run");
}

/// Makes every insert into `ev_plans` fail, the way a full disk or a refused row would.
fn refuse_plans(app: &TestApp, backend: Backend) {
    match backend {
        Backend::Postgres => execute(
            app,
            &[
                "CREATE FUNCTION refuse_ev_plan() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'ev_plans refuses rows'; END $$",
                "CREATE TRIGGER refuse_ev_plan BEFORE INSERT ON ev_plans \
                 FOR EACH ROW EXECUTE FUNCTION refuse_ev_plan()",
            ],
        ),
        Backend::Sqlite => execute(
            app,
            &["CREATE TRIGGER refuse_ev_plan BEFORE INSERT ON ev_plans \
               BEGIN SELECT RAISE(ABORT, 'ev_plans refuses rows'); END"],
        ),
    }
}

fn accept_plans(app: &TestApp, backend: Backend) {
    match backend {
        Backend::Postgres => execute(
            app,
            &[
                "DROP TRIGGER refuse_ev_plan ON ev_plans",
                "DROP FUNCTION refuse_ev_plan()",
            ],
        ),
        Backend::Sqlite => execute(app, &["DROP TRIGGER refuse_ev_plan"]),
    }
}

/// What a booking leaves in storage, counted straight from the tables.
#[derive(Debug, PartialEq, Eq)]
struct Traces {
    bookings: i64,
    credentials: i64,
    outbox: i64,
    plans: i64,
    allowance_minutes: i64,
}

fn traces(app: &TestApp, org: &str) -> Traces {
    Traces {
        bookings: app.count("SELECT COUNT(*) AS n FROM bookings"),
        credentials: app.count("SELECT COUNT(*) AS n FROM access_credentials"),
        outbox: app.count("SELECT COUNT(*) AS n FROM outbox"),
        plans: app.count("SELECT COUNT(*) AS n FROM ev_plans"),
        allowance_minutes: app.count(&format!(
            "SELECT CAST(COALESCE(SUM(used_minutes), 0) AS BIGINT) AS n FROM allowance_usage \
             WHERE organization_id = '{org}'"
        )),
    }
}

async fn post_with_key(app: &TestApp, token: &str, key: &str, body: &Value) -> (u16, Value, bool) {
    let res = app
        .client
        .post(app.url("/api/v1/bookings"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    let replayed = res.headers().get("Idempotent-Replayed").is_some();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body, replayed)
}

async fn a_plan_that_cannot_be_stored_leaves_no_booking(backend: Backend) {
    let app = spawn_with(backend, |mut c| {
        c.telemetry.release_secs = 3_600;
        c
    })
    .await;
    let org = app.create_org("Carica Srl", 400);
    let member = app.user(Role::Member, Some(&org), &[]).await;
    let (site, day) = app.open_day("large", 2);
    let bay = app.resource_id(&site, "ev_bay").await;
    let body = json!({
        "resource_id": bay,
        "starts_at": app.local(&site, day, 10, 0),
        "ends_at": app.local(&site, day, 12, 0),
        "charging": {"target_wh": 8000, "mode": "solar_first"},
    });
    let before = traces(&app, &org);

    refuse_plans(&app, backend);
    let (status, problem, _) = post_with_key(&app, &member.token, "ev-plan-1", &body).await;
    assert_eq!(status, 500, "{problem}");
    assert_eq!(problem["code"], "internal_error", "{problem}");
    assert_eq!(
        traces(&app, &org),
        before,
        "a booking whose plan was refused left something behind"
    );
    let (s, page) = app.get_json("/api/v1/bookings", Some(&member.token)).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0), "{page}");

    // Once plans can be stored, the same key and body book it, exactly once.
    accept_plans(&app, backend);
    let (status, booked, replayed) = post_with_key(&app, &member.token, "ev-plan-1", &body).await;
    assert_eq!(status, 201, "{booked}");
    assert!(!replayed, "the failed attempt must not be replayed");
    assert_eq!(booked["status"], "confirmed");
    assert_eq!(booked["charging"]["feasible"], true, "{booked}");
    let id = booked["id"].as_str().expect("id").to_string();
    let after = traces(&app, &org);
    assert_eq!(
        after,
        Traces {
            bookings: before.bookings + 1,
            credentials: before.credentials + 1,
            outbox: before.outbox + 1,
            plans: before.plans + 1,
            allowance_minutes: before.allowance_minutes + 120,
        }
    );
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) AS n FROM ev_plans WHERE booking_id = '{id}'"
        )),
        1
    );
    let (status, again, replayed) = post_with_key(&app, &member.token, "ev-plan-1", &body).await;
    assert_eq!(status, 201, "{again}");
    assert!(replayed);
    assert_eq!(again["id"], booked["id"]);
    assert_eq!(traces(&app, &org), after);
}

on_both!(plan_refused, |b| {
    a_plan_that_cannot_be_stored_leaves_no_booking(b)
});

async fn an_unknown_status_is_an_error(backend: Backend) {
    let app = spawn_with(backend, |c| c).await;
    let read = |text: String| {
        app.state.db.run_blocking(move |c| {
            diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(&text))
                .get_result::<BookingStatus>(c)
                .map_err(spazi::db::DbError::from)
        })
    };
    for s in BookingStatus::ALL {
        let known = read(format!("'{}'", s.as_str())).expect("a known status reads back");
        assert_eq!(known, *s);
    }
    for unknown in ["'archived'", "'Confirmed'", "''"] {
        let err =
            read(unknown.to_string()).expect_err("an unknown status must not be read as a status");
        assert!(
            matches!(
                err,
                spazi::db::DbError::Query(diesel::result::Error::DeserializationError(_))
            ),
            "{err:?}"
        );
        assert!(format!("{err:?}").contains("booking status"), "{err:?}");
    }
}

on_both!(status_typed, |b| an_unknown_status_is_an_error(b));
