//! Bad input of every kind gets the right 4xx as problem details, never a 500, and stores nothing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{Duration, NaiveDate, Utc};
use reqwest::header::{HeaderMap, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::RequestBuilder;
use serde_json::{json, Value};
use spazi::domain::Role;

use crate::helpers::{spawn, test_config, Backend, TestApp};
use crate::on_both;

/// A response as a client sees it.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

pub async fn send(req: RequestBuilder) -> Reply {
    let res = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("no response at all (did the server crash?): {e}"));
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.expect("response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        headers,
        body,
    }
}

/// Asserts an RFC 9457 problem with `status`, served as `application/problem+json`.
pub fn assert_problem(r: &Reply, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: body {}", r.body);
    let ct = r
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        ct.starts_with("application/problem+json"),
        "{what}: Content-Type {ct:?}, body {}",
        r.body
    );
    for key in ["type", "title", "detail"] {
        assert!(
            r.body[key].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: no {key} in {}",
            r.body
        );
    }
    assert_eq!(r.body["status"], json!(status), "{what}: {}", r.body);
}

/// The `(field, message)` pairs of a validation problem.
fn field_errors(r: &Reply, what: &str) -> Vec<(String, String)> {
    r.body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no errors array in {}", r.body))
        .iter()
        .map(|e| {
            let field = e["field"].as_str();
            let message = e["message"].as_str();
            assert!(
                field.is_some() && message.is_some_and(|m| !m.is_empty()),
                "{what}: every error needs a field and a message: {e}"
            );
            (
                field.unwrap_or_default().into(),
                message.unwrap_or_default().into(),
            )
        })
        .collect()
}

/// Asserts a 422 problem naming `field`, and returns that field's messages.
fn assert_invalid(r: &Reply, field: &str, what: &str) -> Vec<String> {
    assert_problem(r, 422, what);
    let errors = field_errors(r, what);
    let messages: Vec<String> = errors
        .iter()
        .filter(|(f, _)| f == field)
        .map(|(_, m)| m.clone())
        .collect();
    assert!(
        !messages.is_empty(),
        "{what}: expected an error on {field}, got {errors:?}"
    );
    messages
}

/// Asserts a 422 naming `field` with a message that contains `needle`.
fn assert_invalid_because(r: &Reply, field: &str, needle: &str, what: &str) {
    let messages = assert_invalid(r, field, what);
    assert!(
        messages.iter().any(|m| m.contains(needle)),
        "{what}: expected {field} to mention {needle:?}, got {messages:?}"
    );
}

fn assert_unauthorized(r: &Reply, what: &str) {
    assert_problem(r, 401, what);
    let challenge = r
        .headers
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        challenge.starts_with("Bearer"),
        "{what}: WWW-Authenticate is {challenge:?}"
    );
}

/// An app with a logged-in member and a desk at a site open round the clock.
struct Fixture {
    app: TestApp,
    token: String,
    user_id: String,
    site: String,
    day: NaiveDate,
    desk: String,
}

impl Fixture {
    async fn new(backend: Backend) -> Fixture {
        let app = spawn(backend).await;
        let member = app.user(Role::Member, None, &[]).await;
        let (site, day) = app.open_day("large", 3);
        let desk = app.resource_id(&site, "desk").await;
        Fixture {
            app,
            token: member.token,
            user_id: member.id,
            site,
            day,
            desk,
        }
    }

    fn at(&self, hh: u32, mm: u32) -> String {
        self.app.local(&self.site, self.day, hh, mm)
    }

    /// A booking request that would succeed.
    fn valid(&self) -> Value {
        json!({"resource_id": self.desk, "starts_at": self.at(9, 0), "ends_at": self.at(10, 0)})
    }

    /// `valid()` with `changes` applied; a null removes the field.
    fn with(&self, changes: Value) -> Value {
        let mut body = self.valid();
        for (k, v) in changes.as_object().expect("changes object") {
            if v.is_null() {
                body.as_object_mut().expect("object").remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body
    }

    fn post(&self, path: &str) -> RequestBuilder {
        self.app
            .client
            .post(self.app.url(path))
            .bearer_auth(&self.token)
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.app
            .client
            .get(self.app.url(path))
            .bearer_auth(&self.token)
    }

    async fn create(&self, body: &Value) -> Reply {
        send(self.post("/api/v1/bookings").json(body)).await
    }

    async fn create_raw(&self, content_type: &str, body: impl Into<reqwest::Body>) -> Reply {
        send(
            self.post("/api/v1/bookings")
                .header(CONTENT_TYPE, content_type)
                .body(body),
        )
        .await
    }

    fn bookings(&self) -> i64 {
        self.app.count("SELECT COUNT(*) AS n FROM bookings")
    }
}

on_both!(malformed_json_is_400, |backend| async move {
    use super::*;
    let fx = Fixture::new(backend).await;
    let before = fx.bookings();
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("truncated object", br#"{"resource_id": "#.to_vec()),
        ("not JSON at all", b"resource_id=1".to_vec()),
        ("trailing comma", br#"{"resource_id": "x",}"#.to_vec()),
        ("empty body", Vec::new()),
        ("single quotes", b"{'resource_id': 'x'}".to_vec()),
        (
            "invalid UTF-8 in a string",
            b"{\"resource_id\": \"\xff\xfe\"}".to_vec(),
        ),
    ];
    for (what, body) in bodies {
        let r = fx.create_raw("application/json", body).await;
        assert_problem(&r, 400, what);
    }
    // A valid booking carrying an extra field nested far deeper than any real client would send.
    let mut deep = fx.valid().to_string();
    deep.pop();
    deep.push_str(&format!(
        r#","x": {}{}}}"#,
        "[".repeat(20_000),
        "]".repeat(20_000)
    ));
    let r = fx.create_raw("application/json", deep).await;
    assert!(
        r.status == 400 || r.status == 422,
        "deep nesting: {} {}",
        r.status,
        r.body
    );
    assert_problem(&r, r.status, "deep nesting");
    assert_eq!(fx.bookings(), before);
});

on_both!(json_that_is_not_an_object_is_422, |backend| async move {
    use super::*;
    let fx = Fixture::new(backend).await;
    let before = fx.bookings();
    for body in [
        json!([]),
        json!("a booking"),
        json!(42),
        json!(null),
        json!(true),
    ] {
        let r = fx.create(&body).await;
        let what = format!("body {body}");
        assert_problem(&r, 422, &what);
        assert!(!field_errors(&r, &what).is_empty(), "{what}: {}", r.body);
    }
    assert_eq!(fx.bookings(), before);
});

on_both!(a_positional_array_is_not_a_booking, |backend| async move {
    use super::*;
    let fx = Fixture::new(backend).await;
    let before = fx.bookings();
    // Every value a booking needs, but as an array: the contract takes an object.
    let body = json!([fx.desk, fx.at(9, 0), fx.at(10, 0), 1, null]);
    let r = fx.create(&body).await;
    assert_problem(&r, 422, "an array of the right values");
    assert_eq!(fx.bookings(), before);
});

on_both!(wrong_types_name_the_field, |backend| async move {
    use super::*;
    let fx = Fixture::new(backend).await;
    let before = fx.bookings();
    let cases = [
        (json!({"attendees": "two"}), "attendees"),
        (json!({"attendees": 1.5}), "attendees"),
        (json!({"attendees": 99_999_999_999_i64}), "attendees"),
        (json!({"resource_id": 5}), "resource_id"),
        (json!({"resource_id": {"id": fx.desk}}), "resource_id"),
        (json!({"starts_at": 1_796_000_000}), "starts_at"),
        (json!({"ends_at": false}), "ends_at"),
        (json!({"note": ["a", "list"]}), "note"),
    ];
    for (change, field) in cases {
        let r = fx.create(&fx.with(change.clone())).await;
        assert_invalid(&r, field, &format!("change {change}"));
    }
    assert_eq!(fx.bookings(), before);
});

on_both!(each_missing_field_is_named, |backend| async move {
    use super::*;
    let fx = Fixture::new(backend).await;
    let before = fx.bookings();
    for field in ["resource_id", "starts_at", "ends_at"] {
        let r = fx.create(&fx.with(json!({ field: null }))).await;
        assert_invalid(&r, field, &format!("without {field}"));
    }
    let r = fx.create(&json!({})).await;
    assert_invalid(&r, "resource_id", "an empty object");
    assert_eq!(fx.bookings(), before);
    // The same body with every field is accepted, so each refusal was about the missing one.
    let r = fx.create(&fx.valid()).await;
    assert_eq!(r.status, 201, "the complete body: {}", r.body);
    assert_eq!(fx.bookings(), before + 1);
});

on_both!(instants_need_an_offset_and_an_order, |backend| async move {
    use super::*;
    let fx = Fixture::new(backend).await;
    let before = fx.bookings();
    let day = fx.day.format("%Y-%m-%d");
    let cases = [
        (
            json!({"starts_at": format!("{day}T09:00:00")}),
            "starts_at",
            "offset",
        ),
        (
            json!({"ends_at": format!("{day}T10:00:00")}),
            "ends_at",
            "offset",
        ),
        (
            json!({"starts_at": "tomorrow at nine"}),
            "starts_at",
            "RFC 3339",
        ),
        (
            json!({"starts_at": format!("{day}T25:00:00Z")}),
            "starts_at",
            "RFC 3339",
        ),
        (json!({"starts_at": ""}), "starts_at", "RFC 3339"),
        (json!({"ends_at": fx.at(8, 0)}), "ends_at", "after"),
        (json!({"ends_at": fx.at(9, 0)}), "ends_at", "after"),
    ];
    for (change, field, needle) in cases {
        let r = fx.create(&fx.with(change.clone())).await;
        assert_invalid_because(&r, field, needle, &format!("change {change}"));
    }
    assert_eq!(fx.bookings(), before);
});

on_both!(an_unknown_resource_is_named, |backend| async move {
    use super::*;
    let fx = Fixture::new(backend).await;
    let before = fx.bookings();
    for id in [
        "no-such-resource",
        "",
        "   ",
        "00000000-0000-0000-0000-000000000000",
    ] {
        let r = fx.create(&fx.with(json!({ "resource_id": id }))).await;
        assert_invalid(&r, "resource_id", &format!("resource_id {id:?}"));
    }
    assert_eq!(fx.bookings(), before);
});

on_both!(policy_violations_are_422, |backend| async move {
    use super::*;
    let fx = Fixture::new(backend).await;
    let app = &fx.app;
    let before = fx.bookings();

    let past_start = (Utc::now() - Duration::hours(3)).to_rfc3339();
    let past_end = (Utc::now() - Duration::hours(2)).to_rfc3339();
    let r = fx
        .create(&fx.with(json!({"starts_at": past_start, "ends_at": past_end})))
        .await;
    assert_invalid_because(&r, "starts_at", "past", "in the past");

    let (far_site, far_day) = app.open_day("large", 100);
    let far_desk = app.resource(&far_site, "desk").await["id"].clone();
    let r = fx
        .create(&json!({
            "resource_id": far_desk,
            "starts_at": app.local(&far_site, far_day, 9, 0),
            "ends_at": app.local(&far_site, far_day, 10, 0),
        }))
        .await;
    assert_invalid_because(&r, "starts_at", "too far ahead", "a desk 100 days ahead");

    let r = fx
        .create(&fx.with(json!({"starts_at": fx.at(8, 0), "ends_at": fx.at(20, 1)})))
        .await;
    assert_invalid_because(&r, "ends_at", "too long", "a desk for 12 h 1 min");

    let (small, small_day) = app.open_day("small", 3);
    let small_desk = app.resource(&small, "desk").await["id"].clone();
    let r = fx
        .create(&json!({
            "resource_id": small_desk,
            "starts_at": app.local(&small, small_day, 6, 0),
            "ends_at": app.local(&small, small_day, 7, 0),
        }))
        .await;
    assert_invalid_because(
        &r,
        "starts_at",
        "opening hours",
        "06:00-07:00 at a small site",
    );

    let today = Utc::now().date_naive();
    let holiday = (2..400)
        .map(|d| today + Duration::days(d))
        .find(|d| spazi::domain::holidays::national_holiday(*d).is_some())
        .expect("a national holiday within a year");
    let r = fx
        .create(&json!({
            "resource_id": small_desk,
            "starts_at": app.local(&small, holiday, 10, 0),
            "ends_at": app.local(&small, holiday, 11, 0),
        }))
        .await;
    assert_invalid_because(
        &r,
        "starts_at",
        "closed",
        &format!("national holiday {holiday}"),
    );

    // A closure of the site's own (not a holiday, on a day it is otherwise open).
    let own_closure = {
        let dir = app.state.directory();
        dir.sites.iter().find_map(|s| {
            s.closures
                .keys()
                .find(|d| {
                    **d > today + Duration::days(2)
                        && **d < today + Duration::days(80)
                        && spazi::domain::holidays::national_holiday(**d).is_none()
                        && !s.hours.on(chrono::Datelike::weekday(*d)).is_empty()
                })
                .map(|d| (s.site.id.clone(), *d))
        })
    };
    let (closed_site, closed_day) = own_closure.expect("some site closes for maintenance soon");
    let closed_desk = app.resource(&closed_site, "desk").await["id"].clone();
    let r = fx
        .create(&json!({
            "resource_id": closed_desk,
            "starts_at": app.local(&closed_site, closed_day, 10, 0),
            "ends_at": app.local(&closed_site, closed_day, 11, 0),
        }))
        .await;
    assert_invalid_because(
        &r,
        "starts_at",
        "closed",
        &format!("site closure {closed_day}"),
    );

    for attendees in [3, 0, -1] {
        let r = fx.create(&fx.with(json!({ "attendees": attendees }))).await;
        assert_invalid(&r, "attendees", &format!("{attendees} attendees on a desk"));
    }
    let r = fx.create(&fx.with(json!({"note": "x".repeat(1001)}))).await;
    assert_invalid(&r, "note", "a note of 1001 characters");

    assert_eq!(fx.bookings(), before);
    let r = fx
        .create(
            &fx.with(json!({"starts_at": fx.at(8, 0), "ends_at": fx.at(20, 0), "attendees": 1})),
        )
        .await;
    assert_eq!(r.status, 201, "a desk for exactly 12 h: {}", r.body);
    assert_eq!(fx.bookings(), before + 1);
});

on_both!(a_body_that_is_not_json_is_415, |backend| async move {
    use super::*;
    let fx = Fixture::new(backend).await;
    let before = fx.bookings();
    let text = fx.valid().to_string();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let r = fx.create_raw(ct, text.clone()).await;
        assert_problem(&r, 415, ct);
    }
    let r = send(fx.post("/api/v1/bookings").body(text.clone())).await;
    assert_problem(&r, 415, "no Content-Type");
    assert_eq!(fx.bookings(), before);
    let r = fx.create_raw("application/json; charset=utf-8", text).await;
    assert_eq!(r.status, 201, "the same text as JSON: {}", r.body);
});

on_both!(a_body_over_64_kib_is_413, |backend| async move {
    use super::*;
    let fx = Fixture::new(backend).await;
    let before = fx.bookings();
    let body = fx.with(json!({"note": "x".repeat(70 * 1024)}));
    let r = fx.create(&body).await;
    assert_problem(&r, 413, "a 70 KiB body");
    let r = fx
        .create_raw("application/json", vec![b' '; 65 * 1024])
        .await;
    assert_problem(&r, 413, "65 KiB of spaces");
    assert_eq!(fx.bookings(), before);
});

/// The claims of an access token, read without checking it.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url payload"))
        .expect("JSON claims")
}

fn sign(claims: &Value, alg: jsonwebtoken::Algorithm, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

on_both!(bad_tokens_are_401, |backend| async move {
    use super::*;
    use jsonwebtoken::Algorithm::{HS256, HS512};
    let fx = Fixture::new(backend).await;
    let before = fx.bookings();
    let secret = test_config(String::new(), String::new()).jwt_secret;
    let claims = claims_of(&fx.token);
    assert_eq!(claims["sub"], json!(fx.user_id));
    let now = Utc::now().timestamp();
    let with = |changes: Value| {
        let mut c = claims.clone();
        for (k, v) in changes.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };

    // Tokens built here do work when nothing is wrong with them, so each refusal below is meaningful.
    let resigned = sign(&with(json!({"exp": now + 600})), HS256, &secret);
    let r = send(
        fx.app
            .client
            .get(fx.app.url("/api/v1/me"))
            .bearer_auth(&resigned),
    )
    .await;
    assert_eq!(r.status, 200, "a correctly re-signed token: {}", r.body);

    let parts: Vec<&str> = fx.token.split('.').collect();
    let flipped = {
        let mut p: Vec<char> = parts[1].chars().collect();
        let i = p.len() / 2;
        p[i] = if p[i] == 'A' { 'B' } else { 'A' };
        format!(
            "{}.{}.{}",
            parts[0],
            p.into_iter().collect::<String>(),
            parts[2]
        )
    };
    let other_sub = {
        let forged = URL_SAFE_NO_PAD.encode(with(json!({"sub": "someone-else"})).to_string());
        format!("{}.{forged}.{}", parts[0], parts[2])
    };
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let tokens: Vec<(&str, String)> = vec![
        ("garbage", "not-a-jwt".into()),
        ("three garbage parts", "a.b.c".into()),
        (
            "another secret",
            sign(&claims, HS256, b"some-other-secret-some-other-secret!"),
        ),
        (
            "expired",
            sign(
                &with(json!({"iat": now - 7200, "nbf": now - 7200, "exp": now - 3600})),
                HS256,
                &secret,
            ),
        ),
        (
            "not yet valid",
            sign(
                &with(json!({"nbf": now + 3600, "exp": now + 7200})),
                HS256,
                &secret,
            ),
        ),
        (
            "wrong issuer",
            sign(&with(json!({"iss": "evil"})), HS256, &secret),
        ),
        (
            "wrong audience",
            sign(&with(json!({"aud": "other-api"})), HS256, &secret),
        ),
        ("HS512 instead of HS256", sign(&claims, HS512, &secret)),
        (
            "a session that does not exist",
            sign(&with(json!({"sid": "no-such-session"})), HS256, &secret),
        ),
        ("a flipped payload character", flipped),
        ("a payload naming someone else", other_sub),
        ("alg none", alg_none),
        ("no signature", format!("{}.{}.", parts[0], parts[1])),
    ];
    for (what, token) in &tokens {
        let r = send(
            fx.app
                .client
                .post(fx.app.url("/api/v1/bookings"))
                .bearer_auth(token)
                .json(&fx.valid()),
        )
        .await;
        assert_unauthorized(&r, what);
        let r = send(
            fx.app
                .client
                .get(fx.app.url("/api/v1/me"))
                .bearer_auth(token),
        )
        .await;
        assert_unauthorized(&r, what);
    }

    let bare = fx.app.client.post(fx.app.url("/api/v1/bookings"));
    let r = send(bare.json(&fx.valid())).await;
    assert_unauthorized(&r, "no Authorization header");
    for header in [
        format!("Basic {}", URL_SAFE_NO_PAD.encode("user:pass")),
        fx.token.clone(),
        format!("Token {}", fx.token),
        "Bearer".to_string(),
    ] {
        let r = send(
            fx.app
                .client
                .post(fx.app.url("/api/v1/bookings"))
                .header("Authorization", &header)
                .json(&fx.valid()),
        )
        .await;
        assert_unauthorized(&r, &format!("Authorization: {header:.20}…"));
    }
    assert_eq!(fx.bookings(), before);
});

on_both!(availability_parameters_are_checked, |backend| async move {
    use super::*;
    let fx = Fixture::new(backend).await;
    let from = fx.at(9, 0);
    let to = fx.at(10, 0);
    let good = |extra: &[(&str, &str)], without: &str| -> Vec<(String, String)> {
        let mut q: Vec<(String, String)> = [
            ("site_id", fx.site.as_str()),
            ("kind", "desk"),
            ("from", from.as_str()),
            ("to", to.as_str()),
        ]
        .iter()
        .filter(|(k, _)| *k != without && !extra.iter().any(|(e, _)| e == k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        q.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        q
    };
    let ask = |q: Vec<(String, String)>| {
        send(
            fx.app
                .client
                .get(fx.app.url("/api/v1/availability"))
                .query(&q),
        )
    };

    let r = ask(good(&[], "")).await;
    assert_eq!(r.status, 200, "the valid query: {}", r.body);

    let r = ask(good(&[], "kind")).await;
    assert_invalid(&r, "kind", "without kind");
    let r = ask(good(&[("kind", "sofa")], "")).await;
    assert_invalid(&r, "kind", "kind=sofa");
    let r = ask(good(&[("from", "yesterday")], "")).await;
    assert_invalid(&r, "from", "from=yesterday");
    let no_offset = fx.day.format("%Y-%m-%dT09:00:00").to_string();
    let r = ask(good(&[("from", no_offset.as_str())], "")).await;
    assert_invalid(&r, "from", "from without an offset");
    let r = ask(good(&[], "from")).await;
    assert_invalid(&r, "from", "without from");
    let r = ask(good(&[("to", "soon")], "")).await;
    assert_invalid(&r, "to", "to=soon");
    let early = fx.at(8, 0);
    let r = ask(good(&[("to", early.as_str())], "")).await;
    assert_invalid(&r, "to", "to before from");
    let r = ask(good(&[("to", from.as_str())], "")).await;
    assert_invalid(&r, "to", "to equal to from");

    let r = ask(good(&[("region", "Lazio")], "")).await;
    assert_problem(&r, 422, "both site_id and region");
    let fields = field_errors(&r, "both site_id and region");
    assert!(
        fields.iter().any(|(f, _)| f == "region" || f == "site_id"),
        "both site_id and region: {fields:?}"
    );
    let r = ask(good(&[], "site_id")).await;
    assert_invalid(&r, "site_id", "neither site_id nor region");
    let r = ask(good(&[("region", "Atlantide")], "site_id")).await;
    assert_invalid(&r, "region", "an unknown region");
    for limit in ["0", "501", "ten"] {
        let r = ask(good(&[("limit", limit)], "")).await;
        assert_invalid(&r, "limit", &format!("limit={limit}"));
    }
    let r = ask(good(&[("cursor", "!!!")], "")).await;
    assert_invalid(&r, "cursor", "cursor=!!!");

    let r = ask(good(&[("site_id", "no-such-site")], "")).await;
    assert_problem(&r, 404, "an unknown site_id");
});

on_both!(site_list_parameters_are_checked, |backend| async move {
    use super::*;
    let fx = Fixture::new(backend).await;
    let ask = |q: &[(&str, &str)]| send(fx.app.client.get(fx.app.url("/api/v1/sites")).query(q));
    let r = ask(&[("limit", "500")]).await;
    assert_eq!(r.status, 200, "limit=500: {}", r.body);
    let cases: [(&[(&str, &str)], &str); 10] = [
        (&[("limit", "0")], "limit"),
        (&[("limit", "501")], "limit"),
        (&[("limit", "-1")], "limit"),
        (&[("limit", "99999999999999999999999")], "limit"),
        (&[("near", "abc")], "near"),
        (&[("near", "91,12")], "near"),
        (&[("near", "45.4,12.3"), ("radius_km", "-5")], "radius_km"),
        (&[("radius_km", "10")], "near"),
        (&[("cursor", "!!!")], "cursor"),
        (&[("small_town", "maybe")], "small_town"),
    ];
    for (q, field) in cases {
        let r = ask(q).await;
        assert_invalid(&r, field, &format!("{q:?}"));
    }
    let r = send(fx.app.client.get(fx.app.url("/api/v1/sites/no-such-site"))).await;
    assert_problem(&r, 404, "an unknown site");
    let r = send(
        fx.app
            .client
            .get(fx.app.url("/api/v1/sites/no-such-site/resources")),
    )
    .await;
    assert_problem(&r, 404, "resources of an unknown site");
    let r = send(
        fx.app
            .client
            .get(fx.app.url(&format!("/api/v1/sites/{}/resources", fx.site)))
            .query(&[("kind", "sofa")]),
    )
    .await;
    assert_invalid(&r, "kind", "resources of kind sofa");
});

on_both!(booking_list_parameters_are_checked, |backend| async move {
    use super::*;
    let fx = Fixture::new(backend).await;
    let ask = |q: &[(&str, &str)]| send(fx.get("/api/v1/bookings").query(q));
    let r = ask(&[("status", "confirmed")]).await;
    assert_eq!(r.status, 200, "status=confirmed: {}", r.body);
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[("status", "bogus")], "status"),
        (&[("from", "yesterday")], "from"),
        (&[("to", "2026-12-01")], "to"),
        (&[("limit", "0")], "limit"),
        (&[("limit", "501")], "limit"),
        (&[("cursor", "!!!")], "cursor"),
    ];
    for (q, field) in cases {
        let r = ask(q).await;
        assert_invalid(&r, field, &format!("{q:?}"));
    }
});

on_both!(
    a_forged_availability_cursor_is_not_a_server_error,
    |backend| async move {
        use super::*;
        let fx = Fixture::new(backend).await;
        // A well-formed offset cursor no list ever hands out.
        let far = URL_SAFE_NO_PAD.encode(format!("o:{}", i64::MAX));
        let r = send(
            fx.app
                .client
                .get(fx.app.url("/api/v1/sites"))
                .query(&[("cursor", far.as_str())]),
        )
        .await;
        assert!(
            r.status == 200 || r.status == 422,
            "sites past the end: {} {}",
            r.status,
            r.body
        );
        let r = send(
            fx.app
                .client
                .get(fx.app.url("/api/v1/availability"))
                .query(&[
                    ("site_id", fx.site.as_str()),
                    ("kind", "desk"),
                    ("from", fx.at(9, 0).as_str()),
                    ("to", fx.at(10, 0).as_str()),
                    ("cursor", far.as_str()),
                ]),
        )
        .await;
        assert!(
            r.status == 200 || r.status == 422,
            "availability with offset i64::MAX: {} {}",
            r.status,
            r.body
        );
        if r.status == 200 {
            assert_eq!(r.body["items"], json!([]), "past the end: {}", r.body);
        } else {
            assert_invalid(&r, "cursor", "availability with offset i64::MAX");
        }
    }
);

on_both!(
    a_forged_booking_cursor_is_not_a_server_error,
    |backend| async move {
        use super::*;
        let fx = Fixture::new(backend).await;
        // Well-formed, but its instant lies before the year -29000, outside what a PostgreSQL timestamp holds.
        let ancient = URL_SAFE_NO_PAD.encode(format!("{}|x", -1_000_000_000_000_000_000_i64));
        let r = send(
            fx.get("/api/v1/bookings")
                .query(&[("cursor", ancient.as_str())]),
        )
        .await;
        assert!(
            r.status == 200 || r.status == 422,
            "a cursor from before the year -29000: {} {}",
            r.status,
            r.body
        );
    }
);

on_both!(nul_characters_are_not_server_errors, |backend| async move {
    use super::*;
    let fx = Fixture::new(backend).await;
    let before = fx.bookings();
    let mut failures = Vec::new();
    let mut expect = |what: &str, r: &Reply, allowed: &[u16]| {
        if !allowed.contains(&r.status) {
            failures.push(format!("{what}: {} {}", r.status, r.body));
        }
    };
    let r = fx
        .create(&fx.with(json!({"resource_id": "desk\u{0}"})))
        .await;
    expect("POST /bookings with a NUL in resource_id", &r, &[422]);
    let r = send(
        fx.post("/api/v1/bookings/quote")
            .json(&fx.with(json!({"resource_id": "\u{0}"}))),
    )
    .await;
    expect("POST /bookings/quote with a NUL in resource_id", &r, &[422]);
    let r = fx.create(&fx.with(json!({"note": "a\u{0}b"}))).await;
    expect("POST /bookings with a NUL in the note", &r, &[201, 422]);
    let r = send(fx.get("/api/v1/bookings/%00")).await;
    expect("GET /bookings/%00", &r, &[404]);
    let r = send(fx.post("/api/v1/bookings/%00/cancel")).await;
    expect("POST /bookings/%00/cancel", &r, &[404]);
    let r = send(fx.app.client.post(fx.app.url("/api/v1/auth/login")).json(
        &json!({"email": "nobody\u{0}@test.spazi.example", "password": "whatever-password"}),
    ))
    .await;
    expect("login with a NUL in the email", &r, &[401, 422]);
    let r = send(fx.app.client.post(fx.app.url("/api/v1/auth/signup")).json(
        &json!({"email": "ada@example.it", "password": "long-enough-password", "name": "Ada\u{0}"}),
    ))
    .await;
    expect("signup with a NUL in the name", &r, &[201, 422]);
    let r = send(
        fx.app
            .client
            .post(fx.app.url("/api/v1/auth/refresh"))
            .json(&json!({"refresh_token": "\u{0}"})),
    )
    .await;
    expect("refresh with a NUL token", &r, &[401, 422]);
    let r = send(
        fx.app
            .client
            .post(fx.app.url("/api/v1/auth/verify"))
            .json(&json!({"token": "\u{0}"})),
    )
    .await;
    expect("verify with a NUL token", &r, &[400, 401, 404, 422]);
    let r = send(fx.app.client.get(fx.app.url("/api/v1/sites/%00"))).await;
    expect("GET /sites/%00", &r, &[404]);
    assert!(
        failures.is_empty(),
        "server errors for NUL characters:\n{}",
        failures.join("\n")
    );
    let stored = fx.bookings() - before;
    assert!(
        stored <= 1,
        "only the booking with a note may be stored, got {stored}"
    );
});

on_both!(unknown_routes_are_404_problems, |backend| async move {
    use super::*;
    let fx = Fixture::new(backend).await;
    for path in [
        "/api/v1/nothing-here",
        "/nope",
        "/api/v2/bookings",
        "/api/v1/bookings/x/y/z",
    ] {
        let r = send(fx.get(path)).await;
        assert_problem(&r, 404, path);
    }
    let r = send(fx.get("/api/v1/bookings/00000000-0000-0000-0000-000000000000")).await;
    assert_problem(&r, 404, "a booking that does not exist");
    let r = send(
        fx.app
            .client
            .delete(fx.app.url("/api/v1/bookings"))
            .bearer_auth(&fx.token),
    )
    .await;
    assert!(
        r.status == 404 || r.status == 405,
        "DELETE /bookings: {}",
        r.status
    );
    assert_problem(&r, r.status, "DELETE /bookings");
});

on_both!(a_bad_idempotency_key_is_422, |backend| async move {
    use super::*;
    let fx = Fixture::new(backend).await;
    let before = fx.bookings();
    for (what, key) in [
        ("300 characters", "k".repeat(300)),
        ("with a space", "two words".to_string()),
        ("empty", String::new()),
    ] {
        let r = send(
            fx.post("/api/v1/bookings")
                .header("Idempotency-Key", key)
                .json(&fx.valid()),
        )
        .await;
        assert_invalid(&r, "Idempotency-Key", what);
    }
    assert_eq!(fx.bookings(), before);
    let r = send(
        fx.post("/api/v1/bookings")
            .header("Idempotency-Key", "k".repeat(255))
            .json(&fx.valid()),
    )
    .await;
    assert_eq!(r.status, 201, "a key of 255 characters: {}", r.body);
});

on_both!(signup_names_bad_fields, |backend| async move {
    use super::*;
    let app = spawn(backend).await;
    let users = || app.count("SELECT COUNT(*) AS n FROM users");
    let before = users();
    let r = send(
        app.client
            .post(app.url("/api/v1/auth/signup"))
            .json(&json!({"email": "not-an-email", "password": "short", "name": "Ada"})),
    )
    .await;
    assert_invalid(&r, "email", "a bad email");
    assert_invalid(&r, "password", "a short password");
    for email in [
        "a@b",
        "@example.it",
        "a b@example.it",
        "a@@example.it",
        "a@.it",
    ] {
        let r = send(
            app.client
                .post(app.url("/api/v1/auth/signup"))
                .json(&json!({"email": email, "password": "long-enough-password", "name": "Ada"})),
        )
        .await;
        assert_invalid(&r, "email", email);
    }
    let r = send(app.client.post(app.url("/api/v1/auth/signup")).json(
        &json!({"email": "ada@example.it", "password": "long-enough-password", "name": "  "}),
    ))
    .await;
    assert_invalid(&r, "name", "a blank name");
    let r = send(
        app.client
            .post(app.url("/api/v1/auth/signup"))
            .json(&json!({"email": "ada@example.it", "password": "long-enough-password"})),
    )
    .await;
    assert_invalid(&r, "name", "no name");
    assert_eq!(users(), before);
});
