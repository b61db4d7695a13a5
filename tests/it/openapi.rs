//! The OpenAPI document against what the service answers: 405 with `Allow`, `X-Request-Id`,
//! and every operation's error statuses, parameter constraints and examples.

use serde_json::Value;
use spazi::domain::Role;

use crate::helpers::spawn;
use crate::on_both;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every operation in the document as (method, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                out.push((m.to_string(), path.clone(), op.clone()));
            }
        }
    }
    out
}

fn contains_key(v: &Value, key: &str) -> bool {
    match v {
        Value::Object(map) => map.iter().any(|(k, v)| k == key || contains_key(v, key)),
        Value::Array(items) => items.iter().any(|v| contains_key(v, key)),
        _ => false,
    }
}

on_both!(unsupported_method_is_405_with_allow, |backend| async move {
    let app = spawn(backend).await;
    let site = app.get_json("/api/v1/sites?limit=1", None).await.1["items"][0]["id"]
        .as_str()
        .expect("a site")
        .to_string();
    let cases = [
        (
            reqwest::Method::DELETE,
            "/api/v1/bookings".to_string(),
            "GET, POST",
        ),
        (reqwest::Method::PUT, format!("/api/v1/sites/{site}"), "GET"),
        (
            reqwest::Method::GET,
            "/api/v1/auth/login".to_string(),
            "POST",
        ),
        (
            reqwest::Method::PATCH,
            "/api/v1/bookings/some-id/cancel".to_string(),
            "POST",
        ),
        (reqwest::Method::POST, "/healthz".to_string(), "GET"),
    ];
    for (method, path, allow) in cases {
        let res = app
            .client
            .request(method.clone(), app.url(&path))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status().as_u16(), 405, "{method} {path}");
        assert_eq!(
            res.headers()["allow"].to_str().unwrap(),
            allow,
            "{method} {path}"
        );
        assert_eq!(
            res.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
        let body: Value = res.json().await.expect("problem details");
        assert_eq!(body["status"], 405);
        assert_eq!(body["code"], "method_not_allowed");
    }
    // A path no route has is still a 404, and a known path with its own method still works.
    let (status, body) = app.get_json("/api/v1/no-such-thing", None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "not_found");
    let (status, _) = app.get_json(&format!("/api/v1/sites/{site}"), None).await;
    assert_eq!(status, 200);
});

on_both!(request_id_is_echoed_and_in_problems, |backend| async move {
    let app = spawn(backend).await;
    // The client's own id comes back.
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("X-Request-Id", "client-7f3a.2:b_9")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["x-request-id"], "client-7f3a.2:b_9");

    // Without one (or with one that is not sane), the service makes a UUID.
    let made = |res: &reqwest::Response| {
        let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "made id {id:?}");
        id
    };
    let first = made(&app.client.get(app.url("/healthz")).send().await.unwrap());
    let second = made(&app.client.get(app.url("/healthz")).send().await.unwrap());
    assert_ne!(first, second, "each request gets its own id");
    for insane in ["has space", &"x".repeat(129), "semi;colon", "\u{7f}"] {
        let Ok(value) = reqwest::header::HeaderValue::from_str(insane) else {
            continue;
        };
        let res = app
            .client
            .get(app.url("/healthz"))
            .header("X-Request-Id", value)
            .send()
            .await
            .unwrap();
        let id = made(&res);
        assert_ne!(id, insane);
    }

    // Problem details carry the id: from a handler, from the extractor, from the router.
    let member = app.user(Role::Member, None, &[]).await;
    for (path, token, status) in [
        ("/api/v1/me", None, 401),
        (
            "/api/v1/bookings/no-such-booking",
            Some(member.token.as_str()),
            404,
        ),
        ("/api/v1/bookings?limit=0", Some(member.token.as_str()), 422),
        ("/api/v1/nothing-here", None, 404),
    ] {
        let mut req = app
            .client
            .get(app.url(path))
            .header("X-Request-Id", "trace-me-42");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{path}");
        assert_eq!(res.headers()["x-request-id"], "trace-me-42");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["request_id"], "trace-me-42", "{path}: {body}");
        assert_eq!(body["status"], status);
    }
    let res = app
        .client
        .delete(app.url("/api/v1/me"))
        .send()
        .await
        .unwrap();
    let id = made(&res);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["request_id"], id.as_str());
});

on_both!(
    document_tells_statuses_constraints_and_examples,
    |backend| async move {
        let app = spawn(backend).await;
        let (status, doc) = app.get_json("/api/v1/openapi.json", None).await;
        assert_eq!(status, 200);
        assert!(doc["components"]["schemas"]["Problem"]["properties"]["request_id"].is_object());
        let ops = operations(&doc);
        assert!(ops.len() >= 38, "{} operations", ops.len());
        for (method, path, op) in &ops {
            let responses = op["responses"].as_object().expect("responses");
            let has = |s: &str| responses.contains_key(s);
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            if op.get("security").is_some() {
                assert!(has("401"), "{method} {path} documents no 401");
            }
            if path.contains('{') {
                assert!(has("404"), "{method} {path} documents no 404");
            }
            if op.get("requestBody").is_some() {
                for s in ["400", "413", "415", "422"] {
                    assert!(has(s), "{method} {path} documents no {s}");
                }
            }
            if params.iter().any(|p| p["in"] == "query") {
                assert!(has("422"), "{method} {path} documents no 422");
            }
            for (status, response) in responses {
                if status.as_str() < "400" || path == "/readyz" {
                    continue;
                }
                let problem = &response["content"]["application/problem+json"];
                assert_eq!(
                    problem["schema"]["$ref"], "#/components/schemas/Problem",
                    "{method} {path} {status} is not problem details"
                );
                assert_eq!(
                    response["content"].as_object().unwrap().len(),
                    1,
                    "{method} {path} {status}: problem details only"
                );
            }
            for p in &params {
                if p["name"] == "limit" {
                    // An empty value is read as none, so the schema is "empty or 1 to 500".
                    let limit = p["schema"]["anyOf"]
                        .as_array()
                        .and_then(|a| a.iter().find(|s| s["type"] == "integer"))
                        .unwrap_or(&p["schema"]);
                    assert_eq!(limit["minimum"], 1, "{method} {path} limit");
                    assert_eq!(limit["maximum"], 500, "{method} {path} limit");
                }
            }
            assert!(
                contains_key(op, "example"),
                "{method} {path} has no example"
            );
        }
        // The statuses a user meets are the documented ones.
        let login = &doc["paths"]["/api/v1/auth/login"]["post"]["responses"];
        assert!(login["429"].is_object());
        let create = &doc["paths"]["/api/v1/bookings"]["post"]["responses"];
        assert!(create["409"].is_object());
        let from = doc["paths"]["/api/v1/bookings"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "from")
            .cloned()
            .expect("from");
        assert_eq!(from["schema"]["anyOf"][1]["format"], "date-time", "{from}");
    }
);
