//! Mail leaves over real SMTP: booking invitations and cancellations, signup links, and outages.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use spazi::domain::Role;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::helpers::{assert_field_error, spawn_with, TestApp, PASSWORD};
use crate::on_both;

/// One message as the SMTP sink received it: the envelope and the raw DATA.
#[derive(Debug, Clone)]
pub(crate) struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

impl ReceivedMail {
    /// Whether `address` was among the envelope recipients and in the `To:` header.
    pub fn is_to(&self, address: &str) -> bool {
        let header = self.header("to").unwrap_or_default().to_ascii_lowercase();
        self.to.iter().any(|t| t.eq_ignore_ascii_case(address))
            && header.contains(&address.to_ascii_lowercase())
    }

    /// A top-level header value, unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        header(&split_entity(&self.data).0, name).map(str::to_string)
    }

    /// Every leaf MIME part, with its body decoded.
    pub fn parts(&self) -> Vec<MimePart> {
        leaf_parts(&self.data)
    }

    /// The decoded bodies of the `text/calendar` parts.
    pub fn calendars(&self) -> Vec<String> {
        self.parts()
            .into_iter()
            .filter(|p| p.mime_type() == "text/calendar")
            .map(|p| p.body)
            .collect()
    }

    /// The decoded `text/plain` bodies, joined.
    pub fn text(&self) -> String {
        self.parts()
            .into_iter()
            .filter(|p| p.mime_type() == "text/plain")
            .map(|p| p.body)
            .collect()
    }

    /// Whether some calendar part carries `METHOD:<method>`.
    pub fn has_method(&self, method: &str) -> bool {
        let wanted = format!("METHOD:{method}");
        self.calendars()
            .iter()
            .any(|c| unfold(c).split("\r\n").any(|l| l == wanted))
    }
}

/// A leaf of a MIME tree.
#[derive(Debug, Clone)]
pub(crate) struct MimePart {
    pub content_type: String,
    pub body: String,
}

impl MimePart {
    pub fn mime_type(&self) -> String {
        self.content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }
}

/// A plain SMTP server on loopback that accepts every message and keeps it.
pub(crate) struct SmtpSink {
    pub port: u16,
    inbox: Arc<Mutex<Vec<ReceivedMail>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        SmtpSink::start_on(0).await
    }

    pub async fn start_on(port: u16) -> SmtpSink {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the SMTP sink");
        let port = listener.local_addr().expect("sink address").port();
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let shared = inbox.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(smtp_session(stream, shared.clone()));
            }
        });
        SmtpSink {
            port,
            inbox,
            accept,
        }
    }

    pub fn received(&self) -> Vec<ReceivedMail> {
        self.inbox.lock().expect("inbox").clone()
    }

    /// Polls until a received message satisfies `predicate`, or `timeout` passes.
    pub async fn wait_for(
        &self,
        predicate: impl Fn(&ReceivedMail) -> bool,
        timeout: Duration,
    ) -> Option<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(m) = self.received().into_iter().find(|m| predicate(m)) {
                return Some(m);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Who got what so far, for failure messages.
    pub fn summary(&self) -> String {
        let list: Vec<String> = self
            .received()
            .iter()
            .map(|m| {
                format!(
                    "{:?} <- {:?}",
                    m.to,
                    m.header("subject").unwrap_or_default()
                )
            })
            .collect();
        format!("{} message(s): {list:?}", list.len())
    }
}

async fn smtp_session(stream: tokio::net::TcpStream, inbox: Arc<Mutex<Vec<ReceivedMail>>>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    if write
        .write_all(b"220 sink.test ESMTP ready\r\n")
        .await
        .is_err()
    {
        return;
    }
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = String::from_utf8_lossy(&line).trim_end().to_string();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink.test greets you\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            "HELO" => b"250 sink.test\r\n",
            "MAIL" => {
                from = angle_address(&command);
                to.clear();
                b"250 2.1.0 ok\r\n"
            }
            "RCPT" => {
                to.push(angle_address(&command));
                b"250 2.1.5 ok\r\n"
            }
            "DATA" => {
                if write
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let mut data = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if line == b".\r\n" {
                        break;
                    }
                    // Undo the client's dot-stuffing (RFC 5321 §4.5.2).
                    let unstuffed = if line.starts_with(b"..") {
                        &line[1..]
                    } else {
                        &line[..]
                    };
                    data.extend_from_slice(unstuffed);
                }
                let mail = ReceivedMail {
                    from: std::mem::take(&mut from),
                    to: std::mem::take(&mut to),
                    data: String::from_utf8_lossy(&data).into_owned(),
                };
                inbox.lock().expect("inbox").push(mail);
                b"250 2.0.0 queued\r\n"
            }
            "RSET" => {
                from.clear();
                to.clear();
                b"250 2.0.0 ok\r\n"
            }
            "NOOP" => b"250 2.0.0 ok\r\n",
            "QUIT" => {
                let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
                return;
            }
            _ => b"502 5.5.2 command not recognized\r\n",
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

fn angle_address(command: &str) -> String {
    match (command.find('<'), command.find('>')) {
        (Some(a), Some(b)) if a < b => command[a + 1..b].to_string(),
        _ => String::new(),
    }
}

/// A port on loopback where nothing listens (at the moment of asking).
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

type Headers = Vec<(String, String)>;

fn split_entity(entity: &str) -> (Headers, &str) {
    let (head, body) = match entity.find("\r\n\r\n") {
        Some(i) => (&entity[..i], &entity[i + 4..]),
        None => (entity, ""),
    };
    let mut headers: Headers = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    (headers, body)
}

fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A parameter of a structured header value, e.g. `boundary` of a Content-Type.
pub(crate) fn header_param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

fn leaf_parts(entity: &str) -> Vec<MimePart> {
    let (headers, body) = split_entity(entity);
    let content_type = header(&headers, "content-type")
        .unwrap_or("text/plain")
        .to_string();
    if content_type.to_ascii_lowercase().starts_with("multipart/") {
        let boundary =
            header_param(&content_type, "boundary").expect("a multipart entity names its boundary");
        let delimiter = format!("\r\n--{boundary}");
        let body = format!("\r\n{body}");
        let mut parts = Vec::new();
        for segment in body.split(delimiter.as_str()).skip(1) {
            if segment.starts_with("--") {
                break;
            }
            // The rest of the delimiter line (transport padding) is not part of the body part.
            let inner = segment.split_once("\r\n").map_or("", |(_, rest)| rest);
            parts.extend(leaf_parts(inner));
        }
        return parts;
    }
    let encoding = header(&headers, "content-transfer-encoding")
        .unwrap_or("7bit")
        .to_ascii_lowercase();
    let body = match encoding.as_str() {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => {
            use base64::Engine;
            let compact: String = body.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .expect("valid base64 body");
            String::from_utf8(bytes).expect("UTF-8 body")
        }
        _ => body.to_string(),
    };
    vec![MimePart { content_type, body }]
}

fn decode_quoted_printable(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let rest = &bytes[i + 1..];
            if rest.starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if rest.starts_with(b"\n") {
                i += 2;
                continue;
            }
            let hex = rest.get(..2).and_then(|h| std::str::from_utf8(h).ok());
            if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("quoted-printable decodes to UTF-8")
}

fn unfold(ics: &str) -> String {
    ics.replace("\r\n ", "").replace("\r\n\t", "")
}

/// Checks the iCalendar framing rules and returns the content lines, unfolded.
pub(crate) fn calendar_lines(ics: &str) -> Vec<String> {
    assert!(
        ics.ends_with("\r\n"),
        "the calendar does not end with CRLF: {ics:?}"
    );
    let without_crlf = ics.replace("\r\n", "");
    assert!(
        !without_crlf.contains(['\r', '\n']),
        "a line break is not CRLF: {ics:?}"
    );
    for physical in ics.split("\r\n") {
        assert!(
            physical.len() <= 75,
            "a line of {} octets is not folded: {physical:?}",
            physical.len()
        );
    }
    let lines: Vec<String> = unfold(ics)
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines.first().map(String::as_str),
        Some("BEGIN:VCALENDAR"),
        "{ics}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("END:VCALENDAR"),
        "{ics}"
    );
    let mut open: Vec<&str> = Vec::new();
    for line in &lines {
        if let Some(component) = line.strip_prefix("BEGIN:") {
            open.push(component);
        } else if let Some(component) = line.strip_prefix("END:") {
            assert_eq!(
                open.pop(),
                Some(component),
                "unbalanced END:{component} in {ics}"
            );
        }
    }
    assert!(open.is_empty(), "components left open: {open:?}");
    lines
}

/// The value of the first property `name` (parameters ignored) in unfolded lines.
pub(crate) fn property(lines: &[String], name: &str) -> Option<String> {
    lines.iter().find_map(|l| {
        let (head, value) = l.split_once(':')?;
        (head.split(';').next() == Some(name)).then(|| value.to_string())
    })
}

/// An RFC 3339 instant as an iCalendar UTC DATE-TIME.
pub(crate) fn ical_utc(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339:?} is not RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

/// The one calendar a booking mail carries (inline and attached copies must agree), checked.
pub(crate) fn booking_calendar(mail: &ReceivedMail, method: &str) -> Vec<String> {
    let calendars = mail.calendars();
    assert!(
        !calendars.is_empty(),
        "no text/calendar part in:\n{}",
        mail.data
    );
    assert!(
        calendars.iter().all(|c| *c == calendars[0]),
        "the calendar parts differ: {calendars:?}"
    );
    for part in mail
        .parts()
        .iter()
        .filter(|p| p.mime_type() == "text/calendar")
    {
        assert_eq!(
            header_param(&part.content_type, "method")
                .map(|m| m.to_ascii_uppercase())
                .as_deref(),
            Some(method),
            "Content-Type {:?}",
            part.content_type
        );
    }
    let lines = calendar_lines(&calendars[0]);
    assert_eq!(
        property(&lines, "METHOD").as_deref(),
        Some(method),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "BEGIN:VEVENT"), "{lines:?}");
    lines
}

pub(crate) async fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn app_mailing_to(backend: crate::helpers::Backend, port: u16) -> TestApp {
    spawn_with(backend, |mut c| {
        c.mail_url = format!("smtp://127.0.0.1:{port}");
        c
    })
    .await
}

on_both!(
    booking_and_cancellation_mails_carry_one_event,
    |backend| async move {
        let sink = SmtpSink::start().await;
        let app = app_mailing_to(backend, sink.port).await;
        let member = app.user(Role::Member, None, &[]).await;
        let (site, day) = app.open_day("large", 3);
        let desk = app.resource_id(&site, "desk").await;
        let (status, booking) = app
            .book(
                &member.token,
                &desk,
                &app.local(&site, day, 10, 0),
                &app.local(&site, day, 11, 30),
            )
            .await;
        assert_eq!(status, 201, "{booking}");
        let id = booking["id"].as_str().expect("booking id").to_string();

        let confirmation = sink
            .wait_for(|m| m.is_to(&member.email), Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no confirmation mail; {}", sink.summary()));
        assert_eq!(confirmation.from, "prenotazioni@spazi.example");
        let request = booking_calendar(&confirmation, "REQUEST");
        let uid = property(&request, "UID").expect("a UID line");
        assert!(!uid.trim().is_empty(), "empty UID");
        assert_eq!(property(&request, "SEQUENCE").as_deref(), Some("0"));
        assert_eq!(
            property(&request, "DTSTART"),
            Some(ical_utc(booking["starts_at"].as_str().unwrap()))
        );
        assert_eq!(
            property(&request, "DTEND"),
            Some(ical_utc(booking["ends_at"].as_str().unwrap()))
        );
        assert!(
            booking["starts_at"].as_str().unwrap().ends_with('Z'),
            "{booking}"
        );
        let attendee = property(&request, "ATTENDEE")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert_eq!(
            attendee,
            format!("mailto:{}", member.email.to_ascii_lowercase())
        );

        // The calendar file served over HTTP names the same event.
        let ics = app
            .client
            .get(app.url(&format!("/api/v1/bookings/{id}/ics")))
            .bearer_auth(&member.token)
            .send()
            .await
            .unwrap();
        assert_eq!(ics.status().as_u16(), 200);
        let served = calendar_lines(&ics.text().await.unwrap());
        assert_eq!(property(&served, "UID"), Some(uid.clone()));

        let (status, cancelled) = app
            .post_json(
                &format!("/api/v1/bookings/{id}/cancel"),
                Some(&member.token),
                &json!({}),
            )
            .await;
        assert_eq!(status, 200, "{cancelled}");
        assert_eq!(cancelled["status"], "cancelled");
        let first_id = confirmation.header("message-id");
        let cancellation = sink
            .wait_for(
                |m| m.is_to(&member.email) && m.header("message-id") != first_id,
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|| panic!("no cancellation mail; {}", sink.summary()));
        let cancel = booking_calendar(&cancellation, "CANCEL");
        assert_eq!(property(&cancel, "UID"), Some(uid));
        assert_eq!(property(&cancel, "SEQUENCE").as_deref(), Some("1"));
        assert_eq!(property(&cancel, "DTSTART"), property(&request, "DTSTART"));
        assert_eq!(property(&cancel, "STATUS").as_deref(), Some("CANCELLED"));
    }
);

on_both!(
    signup_link_verifies_the_account_once,
    |backend| async move {
        let sink = SmtpSink::start().await;
        let app = app_mailing_to(backend, sink.port).await;
        let email = format!("giulia.{}@example.it", uuid::Uuid::new_v4().simple());
        let (status, body) = app
            .post_json(
                "/api/v1/auth/signup",
                None,
                &json!({"email": email, "password": PASSWORD, "name": "Giulia Bianchi"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");

        let mail = sink
            .wait_for(|m| m.is_to(&email), Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no verification mail; {}", sink.summary()));
        let token = link_token(&mail);
        assert!(
            token.len() >= 16,
            "token {token:?} is too short to be unguessable"
        );

        let (status, body) = app.login(&email, PASSWORD).await;
        assert_eq!(status, 401, "an unverified account logged in: {body}");

        let (status, body) = app
            .post_json("/api/v1/auth/verify", None, &json!({"token": token}))
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = app.login(&email, PASSWORD).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["access_token"].is_string(), "{body}");

        let (status, body) = app
            .post_json("/api/v1/auth/verify", None, &json!({"token": token}))
            .await;
        assert_field_error(status, &body, 422, "token");
    }
);

/// The token of the verification link in a mail.
fn link_token(mail: &ReceivedMail) -> String {
    let text = mail.text();
    let at = text
        .find("token=")
        .unwrap_or_else(|| panic!("no token= link in {text:?}"));
    text[at + "token=".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '%'))
        .collect()
}

on_both!(
    an_earlier_signup_with_your_address_cannot_keep_its_password,
    |backend| async move {
        let sink = SmtpSink::start().await;
        let app = app_mailing_to(backend, sink.port).await;
        let email = format!("vittima.{}@example.it", uuid::Uuid::new_v4().simple());
        let signup = |password: &'static str| json!({"email": email, "password": password, "name": "Someone"});
        // Someone signs up first with this address; its owner signs up after that mail went out.
        let first = app
            .post_json("/api/v1/auth/signup", None, &signup("intruder-password-1"))
            .await;
        let count = || sink.received().iter().filter(|m| m.is_to(&email)).count();
        assert!(
            wait_until(Duration::from_secs(10), || count() == 1).await,
            "{}",
            sink.summary()
        );
        let second = app
            .post_json("/api/v1/auth/signup", None, &signup("owner-password-22"))
            .await;
        assert_eq!(first, second, "both signups answer alike");
        assert!(
            wait_until(Duration::from_secs(10), || count() == 2).await,
            "{}",
            sink.summary()
        );
        let mails: Vec<ReceivedMail> = sink
            .received()
            .into_iter()
            .filter(|m| m.is_to(&email))
            .collect();
        // The owner opens the link of their own signup: their password is the account's.
        let owner_token = link_token(&mails[1]);
        let (status, body) = app
            .post_json("/api/v1/auth/verify", None, &json!({"token": owner_token}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(app.login(&email, "owner-password-22").await.0, 200);
        assert_eq!(app.login(&email, "intruder-password-1").await.0, 401);
    }
);

on_both!(
    smtp_outage_delays_mail_and_loses_none,
    |backend| async move {
        let port = free_port();
        let app = app_mailing_to(backend, port).await;
        let member = app.user(Role::Member, None, &[]).await;
        let (site, day) = app.open_day("large", 3);
        let desk = app.resource_id(&site, "desk").await;
        let mut starts = Vec::new();
        for hour in [9, 14] {
            let (status, booking) = app
                .book(
                    &member.token,
                    &desk,
                    &app.local(&site, day, hour, 0),
                    &app.local(&site, day, hour + 1, 0),
                )
                .await;
            assert_eq!(status, 201, "{booking}");
            starts.push(ical_utc(booking["starts_at"].as_str().unwrap()));
        }

        let tried = wait_until(Duration::from_secs(10), || {
            app.count(
                "SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL AND last_error IS NOT NULL",
            ) >= 1
        })
        .await;
        assert!(tried, "the mailer never recorded a failed attempt");
        assert_eq!(
            app.count("SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL"),
            2
        );

        let sink = SmtpSink::start_on(port).await;
        for start in &starts {
            let mail = sink
                .wait_for(
                    |m| {
                        m.is_to(&member.email)
                            && m.calendars().iter().any(|c| {
                                unfold(c)
                                    .split("\r\n")
                                    .any(|l| l == format!("DTSTART:{start}"))
                            })
                    },
                    Duration::from_secs(40),
                )
                .await
                .unwrap_or_else(|| {
                    panic!(
                        "the confirmation starting {start} never arrived; {}",
                        sink.summary()
                    )
                });
            booking_calendar(&mail, "REQUEST");
        }
        let drained = wait_until(Duration::from_secs(10), || {
            app.count("SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL") == 0
        })
        .await;
        assert!(drained, "the outbox still holds unsent mail after delivery");
    }
);
