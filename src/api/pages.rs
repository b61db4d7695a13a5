//! The few HTML pages the service serves itself.

use actix_web::http::header;
use actix_web::HttpResponse;

/// The page behind the link in the verification email: it posts the token to the API.
pub async fn verify() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header(("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; connect-src 'self'; style-src 'unsafe-inline'"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(VERIFY_PAGE)
}

pub async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/api/docs/"))
        .finish()
}

const VERIFY_PAGE: &str = r#"<!doctype html>
<html lang="it"><head><meta charset="utf-8"><title>Spazi – verifica email</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}</style></head>
<body><h1>Spazi per l'Italia</h1><p id="msg">Verifica in corso… / Verifying…</p>
<script>
const token = new URLSearchParams(location.search).get("token") || "";
fetch("/api/v1/auth/verify", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({token})})
  .then(r => { document.getElementById("msg").textContent = r.ok
    ? "Indirizzo verificato: ora puoi accedere. / Address verified: you can log in now."
    : "Link non valido o scaduto. / The link is invalid or expired."; });
</script></body></html>"#;
