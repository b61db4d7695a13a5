//! Delivery of outgoing mail through SMTP or into a directory of `.eml` files.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Attachment, Body, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{FileTransport, Message, SmtpTransport, Transport};

const SMTP_TIMEOUT: Duration = Duration::from_secs(10);
const SMTP_PORT: u16 = 25;
const SUBMISSION_PORT: u16 = 587;
const SUBMISSIONS_PORT: u16 = 465;
const INVITE_FILENAME: &str = "invite.ics";

/// Where mail goes, as configured by a URL.
#[derive(Clone)]
pub enum MailConfig {
    Smtp { url: String },
    File { dir: PathBuf },
}

impl fmt::Debug for MailConfig {
    // Hand-written so that credentials in the URL never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailConfig::Smtp { url } => f
                .debug_struct("Smtp")
                .field("url", &redact_url(url))
                .finish(),
            MailConfig::File { dir } => f.debug_struct("File").field("dir", dir).finish(),
        }
    }
}

impl MailConfig {
    /// Accepts `smtp://[user:pass@]host[:port][?tls=required|opportunistic|none]`,
    /// `smtps://[user:pass@]host[:port]` and `file://DIR` (DIR may be relative).
    pub fn parse(url: &str) -> Result<Self, MailError> {
        let trimmed = url.trim();
        if let Some(dir) = strip_prefix_ignore_case(trimmed, "file://") {
            if dir.is_empty() {
                return Err(invalid_url(trimmed, "missing directory after file://"));
            }
            return Ok(MailConfig::File {
                dir: PathBuf::from(dir),
            });
        }
        SmtpSettings::parse(trimmed)?;
        Ok(MailConfig::Smtp {
            url: trimmed.to_owned(),
        })
    }

    /// A description safe for logs (no credentials).
    pub fn describe(&self) -> String {
        match self {
            MailConfig::Smtp { url } => redact_url(url),
            MailConfig::File { dir } => format!("file://{}", dir.display()),
        }
    }
}

/// One message to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    /// Stable id (e.g. derived from booking id and event) so a resend is recognisable;
    /// angle brackets are optional and a missing `@domain` is completed with the sender's domain.
    pub message_id: String,
    /// Mailbox, e.g. `Spazi per l'Italia <noreply@spazi.poste.it>`.
    pub from: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    /// iTIP method (`REQUEST` or `CANCEL`) and the iCalendar body.
    pub calendar: Option<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// `url` is already redacted.
    #[error("invalid mail URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot create mail directory {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up TLS for SMTP host {host}: {source}")]
    Tls {
        host: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("invalid {field} address: {source}")]
    Address {
        field: &'static str,
        #[source]
        source: lettre::address::AddressError,
    },
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    #[error("cannot build message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("SMTP delivery failed: {0}")]
    Smtp(#[source] lettre::transport::smtp::Error),
    #[error("writing mail file failed: {0}")]
    File(#[source] lettre::transport::file::Error),
}

/// A ready-to-use transport; cheap to clone and safe to share between threads.
#[derive(Clone)]
pub struct Mailer {
    inner: Inner,
    target: String,
}

#[derive(Clone)]
enum Inner {
    Smtp(SmtpTransport),
    File(FileTransport),
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("target", &self.target)
            .finish()
    }
}

impl Mailer {
    /// Builds the transport once; for `File` the directory is created if missing.
    pub fn new(config: &MailConfig) -> Result<Self, MailError> {
        let target = config.describe();
        let inner = match config {
            MailConfig::Smtp { url } => Inner::Smtp(SmtpSettings::parse(url)?.build()?),
            MailConfig::File { dir } => {
                std::fs::create_dir_all(dir).map_err(|source| MailError::CreateDir {
                    dir: dir.clone(),
                    source,
                })?;
                Inner::File(FileTransport::new(dir))
            }
        };
        Ok(Mailer { inner, target })
    }

    /// Sends one message, blocking until the server (or the file system) accepted it.
    pub fn send(&self, mail: &OutgoingMail) -> Result<(), MailError> {
        let message = build_message(mail)?;
        match &self.inner {
            Inner::Smtp(transport) => {
                let response = transport.send(&message).map_err(MailError::Smtp)?;
                tracing::debug!(
                    message_id = %mail.message_id,
                    target = %self.target,
                    code = %response.code(),
                    "mail accepted by SMTP server"
                );
            }
            Inner::File(transport) => {
                let file_id = transport.send(&message).map_err(MailError::File)?;
                tracing::debug!(
                    message_id = %mail.message_id,
                    target = %self.target,
                    file = %format!("{file_id}.eml"),
                    "mail written to file"
                );
            }
        }
        Ok(())
    }

    /// Where this mailer delivers, without credentials.
    pub fn target(&self) -> &str {
        &self.target
    }
}

/// Builds the MIME message: text only, or text plus an iTIP invitation
/// (inline `text/calendar` alternative and an `invite.ics` attachment).
pub fn build_message(mail: &OutgoingMail) -> Result<Message, MailError> {
    let from: Mailbox = mail
        .from
        .trim()
        .parse()
        .map_err(|source| MailError::Address {
            field: "from",
            source,
        })?;
    let to: Mailbox = mail
        .to
        .trim()
        .parse()
        .map_err(|source| MailError::Address {
            field: "to",
            source,
        })?;
    let message_id = normalize_message_id(&mail.message_id, from.email.domain())?;

    let builder = Message::builder()
        .message_id(Some(message_id))
        .from(from)
        .to(to)
        .subject(single_line(&mail.subject));

    let text_part = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(text_body(&mail.text));

    let message = match &mail.calendar {
        None => builder.singlepart(text_part)?,
        Some((method, ics)) => {
            let method = normalize_method(method)?;
            let inline_type =
                content_type(&format!("text/calendar; charset=UTF-8; method={method}"))?;
            let attachment_type =
                content_type(&format!("text/calendar; method={method}; charset=UTF-8"))?;
            let calendar_part = SinglePart::builder()
                .header(inline_type)
                .body(text_body(ics));
            let alternative = MultiPart::alternative()
                .singlepart(text_part)
                .singlepart(calendar_part);
            let attachment =
                Attachment::new(INVITE_FILENAME.to_owned()).body(text_body(ics), attachment_type);
            builder.multipart(
                MultiPart::mixed()
                    .multipart(alternative)
                    .singlepart(attachment),
            )?
        }
    };
    Ok(message)
}

/// Encodes text as 7bit when possible and quoted-printable otherwise, so the
/// content stays readable in raw form (base64 would hide it).
fn text_body(text: &str) -> Body {
    if text.is_ascii() {
        Body::new(text.to_owned())
    } else {
        Body::new_with_encoding(text.to_owned(), ContentTransferEncoding::QuotedPrintable)
            .unwrap_or_else(|_| Body::new(text.to_owned()))
    }
}

fn content_type(value: &str) -> Result<ContentType, MailError> {
    ContentType::parse(value)
        .map_err(|e| MailError::InvalidMessage(format!("bad content type `{value}`: {e}")))
}

fn normalize_method(method: &str) -> Result<String, MailError> {
    let method = method.trim().to_ascii_uppercase();
    if method.is_empty() || !method.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
        return Err(MailError::InvalidMessage(format!(
            "calendar method `{}` is not an iTIP method",
            single_line(&method)
        )));
    }
    Ok(method)
}

fn normalize_message_id(raw: &str, sender_domain: &str) -> Result<String, MailError> {
    let trimmed = raw.trim();
    let inner = trimmed
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(trimmed);
    let valid = !inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"' | '\\' | '(' | ')'))
        && inner.matches('@').count() <= 1
        && !inner.starts_with('@')
        && !inner.ends_with('@');
    if !valid {
        return Err(MailError::InvalidMessage(format!(
            "message id `{}` is not a valid msg-id",
            single_line(raw)
        )));
    }
    if inner.contains('@') {
        Ok(format!("<{inner}>"))
    } else {
        Ok(format!("<{inner}@{sender_domain}>"))
    }
}

/// Replaces control characters so a header value stays on one line.
fn single_line(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// Plain SMTP, no TLS at all; meant for local relays and test sinks.
    None,
    Opportunistic,
    StartTls,
    Implicit,
}

struct SmtpSettings {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<(String, String)>,
}

impl SmtpSettings {
    fn parse(raw: &str) -> Result<Self, MailError> {
        let parsed = url::Url::parse(raw).map_err(|e| invalid_url(raw, &e.to_string()))?;
        let implicit_tls = match parsed.scheme() {
            "smtp" => false,
            "smtps" => true,
            other => {
                return Err(invalid_url(
                    raw,
                    &format!("unsupported scheme `{other}` (expected smtp, smtps or file)"),
                ))
            }
        };

        let host = match parsed.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(invalid_url(raw, "missing host")),
        };

        if !matches!(parsed.path(), "" | "/") {
            return Err(invalid_url(raw, "unexpected path"));
        }
        if parsed.fragment().is_some() {
            return Err(invalid_url(raw, "unexpected fragment"));
        }

        let mut tls_param: Option<String> = None;
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "tls" if tls_param.is_none() => tls_param = Some(value.into_owned()),
                "tls" => return Err(invalid_url(raw, "tls given more than once")),
                other => {
                    return Err(invalid_url(
                        raw,
                        &format!("unknown parameter `{}`", single_line(other)),
                    ))
                }
            }
        }

        let security = match (implicit_tls, tls_param.as_deref()) {
            (true, None) => Security::Implicit,
            (true, Some(_)) => {
                return Err(invalid_url(
                    raw,
                    "the tls parameter only applies to smtp:// (smtps:// always uses TLS)",
                ))
            }
            (false, None | Some("none")) => Security::None,
            (false, Some("opportunistic")) => Security::Opportunistic,
            (false, Some("required")) => Security::StartTls,
            (false, Some(other)) => {
                return Err(invalid_url(
                    raw,
                    &format!(
                        "tls must be required, opportunistic or none, not `{}`",
                        single_line(other)
                    ),
                ))
            }
        };

        let port = parsed.port().unwrap_or(match security {
            Security::Implicit => SUBMISSIONS_PORT,
            Security::StartTls => SUBMISSION_PORT,
            Security::None | Security::Opportunistic => SMTP_PORT,
        });

        let username = percent_decode(parsed.username())
            .ok_or_else(|| invalid_url(raw, "username is not valid percent-encoded UTF-8"))?;
        let password =
            match parsed.password() {
                Some(p) => Some(percent_decode(p).ok_or_else(|| {
                    invalid_url(raw, "password is not valid percent-encoded UTF-8")
                })?),
                None => None,
            };
        let credentials = match (username.is_empty(), password) {
            (true, None) => None,
            (false, Some(password)) => Some((username, password)),
            (false, None) => return Err(invalid_url(raw, "username given without a password")),
            (true, Some(_)) => return Err(invalid_url(raw, "password given without a username")),
        };

        Ok(SmtpSettings {
            host,
            port,
            security,
            credentials,
        })
    }

    fn build(self) -> Result<SmtpTransport, MailError> {
        let tls_params = || {
            TlsParameters::new(self.host.clone()).map_err(|source| MailError::Tls {
                host: self.host.clone(),
                source,
            })
        };
        let tls = match self.security {
            Security::None => Tls::None,
            Security::Opportunistic => Tls::Opportunistic(tls_params()?),
            Security::StartTls => Tls::Required(tls_params()?),
            Security::Implicit => Tls::Wrapper(tls_params()?),
        };
        let mut builder = SmtpTransport::builder_dangerous(self.host.as_str())
            .port(self.port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT));
        if let Some((user, password)) = self.credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(builder.build())
    }
}

fn invalid_url(raw: &str, reason: &str) -> MailError {
    MailError::InvalidUrl {
        url: redact_url(raw),
        reason: reason.to_owned(),
    }
}

/// Hides everything between `scheme://` and the last `@`, which covers user
/// and password even when the URL is malformed.
fn redact_url(raw: &str) -> String {
    let Some(scheme_end) = raw.find("://") else {
        // Without an authority there is nothing we can reliably keep.
        return if raw.contains('@') || raw.contains(':') {
            "<redacted>".to_owned()
        } else {
            raw.to_owned()
        };
    };
    let authority_start = scheme_end + 3;
    match raw[authority_start..].rfind('@') {
        Some(at) => format!(
            "{}***@{}",
            &raw[..authority_start],
            &raw[authority_start + at + 1..]
        ),
        None => raw.to_owned(),
    }
}

fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(calendar: Option<(String, String)>) -> OutgoingMail {
        OutgoingMail {
            message_id: "booking-42-confirmed@spazi.poste.it".to_owned(),
            from: "Spazi per l'Italia <noreply@spazi.poste.it>".to_owned(),
            to: "Mario Rossi <mario.rossi@example.it>".to_owned(),
            subject: "Booking confirmed - Spazi Bologna Centro".to_owned(),
            text: "Ciao Mario,\nthe booking is confirmed.\n".to_owned(),
            calendar,
        }
    }

    fn ics() -> String {
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:booking-42@spazi.poste.it\r\nSUMMARY:Spazi – Scrivania D-12\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n".to_owned()
    }

    fn eml_files(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    #[test]
    fn file_transport_writes_eml_with_invitation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested").join("mail");
        let config = MailConfig::parse(&format!("file://{}", dir.display())).unwrap();
        let mailer = Mailer::new(&config).unwrap();
        assert!(dir.is_dir(), "directory is created");

        mailer
            .send(&sample(Some(("REQUEST".to_owned(), ics()))))
            .unwrap();

        let files = eml_files(&dir);
        assert_eq!(files.len(), 1);
        let eml = &files[0];
        assert!(
            eml.contains("Subject: Booking confirmed - Spazi Bologna Centro"),
            "{eml}"
        );
        assert!(eml.contains("the booking is confirmed."));
        assert!(eml.contains("BEGIN:VCALENDAR"));
        assert!(eml.contains("Message-ID: <booking-42-confirmed@spazi.poste.it>"));
        assert!(eml.contains("multipart/mixed"));
        assert!(eml.contains("multipart/alternative"));
        assert!(eml.contains("Content-Type: text/plain; charset=utf-8"));
        // The mime crate lowercases the charset value, which is case-insensitive anyway.
        let lower = eml.to_ascii_lowercase();
        assert!(lower.contains("content-type: text/calendar; charset=utf-8; method=request"));
        assert!(lower.contains("content-type: text/calendar; method=request; charset=utf-8"));
        assert!(eml.contains("filename=\"invite.ics\""));
        // Inline part and attachment both carry the calendar.
        assert_eq!(eml.matches("BEGIN:VCALENDAR").count(), 2);
    }

    #[test]
    fn file_transport_text_only_and_utf8() {
        let tmp = tempfile::tempdir().unwrap();
        let mailer = Mailer::new(&MailConfig::File {
            dir: tmp.path().to_path_buf(),
        })
        .unwrap();
        let mut mail = sample(None);
        mail.subject = "Prenotazione confermata / Booking confirmed – Spazi".to_owned();
        mail.text = "la tua prenotazione è confermata\n".to_owned();
        mailer.send(&mail).unwrap();

        let files = eml_files(tmp.path());
        assert_eq!(files.len(), 1);
        let eml = &files[0];
        assert!(!eml.contains("text/calendar"));
        assert!(!eml.contains("multipart"));
        let subject = eml.lines().find(|l| l.starts_with("Subject:")).unwrap();
        assert!(subject.contains("=?utf-8?"), "{subject}");
        assert!(eml.contains("Content-Transfer-Encoding: quoted-printable"));
        assert!(eml.contains("=C3=A8 confermata"), "{eml}");
    }

    #[test]
    fn message_id_is_stable_and_normalized() {
        let mut mail = sample(None);
        let a = String::from_utf8(build_message(&mail).unwrap().formatted()).unwrap();
        let b = String::from_utf8(build_message(&mail).unwrap().formatted()).unwrap();
        let id_line = |s: &str| {
            s.lines()
                .find(|l| l.starts_with("Message-ID:"))
                .unwrap()
                .to_owned()
        };
        assert_eq!(id_line(&a), id_line(&b));
        assert_eq!(
            id_line(&a),
            "Message-ID: <booking-42-confirmed@spazi.poste.it>"
        );

        mail.message_id = "<already@bracketed.example>".to_owned();
        let c = String::from_utf8(build_message(&mail).unwrap().formatted()).unwrap();
        assert_eq!(id_line(&c), "Message-ID: <already@bracketed.example>");

        mail.message_id = "booking-42-cancelled".to_owned();
        let d = String::from_utf8(build_message(&mail).unwrap().formatted()).unwrap();
        assert_eq!(
            id_line(&d),
            "Message-ID: <booking-42-cancelled@spazi.poste.it>"
        );

        for bad in ["", "a b@c", "x\r\nBcc: y@z", "a@b@c", "@x", "<a<b>"] {
            mail.message_id = bad.to_owned();
            assert!(
                matches!(build_message(&mail), Err(MailError::InvalidMessage(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn cancel_method_and_bad_method() {
        let mail = sample(Some(("cancel".to_owned(), ics())));
        let eml = String::from_utf8(build_message(&mail).unwrap().formatted()).unwrap();
        assert!(eml.contains("text/calendar; charset=utf-8; method=CANCEL"));

        let mail = sample(Some(("REQUEST; x=1".to_owned(), ics())));
        assert!(matches!(
            build_message(&mail),
            Err(MailError::InvalidMessage(_))
        ));
    }

    #[test]
    fn bad_addresses_are_rejected() {
        let mut mail = sample(None);
        mail.to = "not an address".to_owned();
        let err = build_message(&mail).unwrap_err();
        assert!(
            matches!(err, MailError::Address { field: "to", .. }),
            "{err}"
        );
    }

    #[test]
    fn subject_cannot_inject_headers() {
        let mut mail = sample(None);
        mail.subject = "Hello\r\nBcc: evil@example.com".to_owned();
        let eml = String::from_utf8(build_message(&mail).unwrap().formatted()).unwrap();
        assert!(!eml.lines().any(|l| l.starts_with("Bcc:")), "{eml}");
    }

    fn smtp(url: &str) -> SmtpSettings {
        match MailConfig::parse(url) {
            Ok(MailConfig::Smtp { url }) => SmtpSettings::parse(&url).unwrap(),
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn parse_accepts_valid_urls() {
        let s = smtp("smtp://127.0.0.1:2525");
        assert_eq!(
            (s.host.as_str(), s.port, s.security),
            ("127.0.0.1", 2525, Security::None)
        );
        assert!(s.credentials.is_none());

        let s = smtp("smtp://mail.example.it");
        assert_eq!((s.port, s.security), (25, Security::None));

        let s = smtp("smtps://smtp.example.it:465");
        assert_eq!((s.port, s.security), (465, Security::Implicit));
        assert_eq!(smtp("smtps://smtp.example.it").port, 465);

        let s = smtp("smtp://user%40poste.it:p%40ss%3Aw0rd@smtp.example.it:587?tls=required");
        assert_eq!((s.port, s.security), (587, Security::StartTls));
        assert_eq!(
            s.credentials,
            Some(("user@poste.it".to_owned(), "p@ss:w0rd".to_owned()))
        );
        assert_eq!(smtp("smtp://h?tls=required").port, 587);
        assert_eq!(
            smtp("smtp://h:26?tls=opportunistic").security,
            Security::Opportunistic
        );
        assert_eq!(smtp("smtp://h:26?tls=none").security, Security::None);
        assert_eq!(smtp("smtp://[::1]:2525").host, "::1");
        assert_eq!(smtp("  smtp://h:1/  ").port, 1);

        match MailConfig::parse("file://./mail").unwrap() {
            MailConfig::File { dir } => assert_eq!(dir, PathBuf::from("./mail")),
            other => panic!("{other:?}"),
        }
        match MailConfig::parse("file:///var/spool/spazi").unwrap() {
            MailConfig::File { dir } => assert_eq!(dir, PathBuf::from("/var/spool/spazi")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parse_rejects_invalid_urls() {
        for bad in [
            "",
            "file://",
            "http://example.com",
            "smtp://",
            "smtp:///nohost",
            "smtp://h:99999",
            "smtp://h?tls=maybe",
            "smtp://h?tls=none&tls=required",
            "smtp://h?foo=bar",
            "smtp://h/ehlo-name",
            "smtps://h?tls=required",
            "smtp://user@h",
            "smtp://:secret@h",
            "not a url",
        ] {
            assert!(
                matches!(MailConfig::parse(bad), Err(MailError::InvalidUrl { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn errors_and_debug_never_show_passwords() {
        let secret = "S3cr3tPa55";
        for url in [
            format!("smtp://user:{secret}@h?tls=maybe"),
            format!("smtp://user:{secret}@h/path"),
            format!("smtp://user:{secret}@h:99999"),
            format!("smtp://user:{secret}@h:port"),
            format!("ftp://user:{secret}@h"),
            format!("user:{secret}@h"),
            format!("smtp://user:{secret}@h?x=a@b"),
        ] {
            let err = MailConfig::parse(&url).unwrap_err();
            assert!(!err.to_string().contains(secret), "{err}");
            assert!(!format!("{err:?}").contains(secret), "{err:?}");
        }

        let config = MailConfig::parse(&format!("smtp://user:{secret}@127.0.0.1:2525")).unwrap();
        assert!(!format!("{config:?}").contains(secret));
        assert!(!config.describe().contains(secret));
        let mailer = Mailer::new(&config).unwrap();
        assert!(!format!("{mailer:?}").contains(secret));
        assert!(!mailer.target().contains(secret));
    }

    #[test]
    fn smtp_mailer_builds_for_every_security_mode() {
        for url in [
            "smtp://127.0.0.1:2525",
            "smtp://localhost:2525?tls=opportunistic",
            "smtp://u:p@localhost:2587?tls=required",
            "smtps://localhost:2465",
        ] {
            Mailer::new(&MailConfig::parse(url).unwrap()).unwrap();
        }
    }

    /// Minimal plain-SMTP sink that accepts one message and returns its DATA.
    fn smtp_sink() -> (u16, std::thread::JoinHandle<String>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            writer.write_all(b"220 sink ESMTP\r\n").unwrap();
            let mut data = String::new();
            let mut in_data = false;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        writer.write_all(b"250 queued\r\n").unwrap();
                    } else {
                        data.push_str(&line);
                    }
                    continue;
                }
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" | "HELO" => b"250 sink\r\n",
                    "DATA" => {
                        in_data = true;
                        b"354 go ahead\r\n"
                    }
                    "QUIT" => {
                        writer.write_all(b"221 bye\r\n").unwrap();
                        break;
                    }
                    _ => b"250 ok\r\n",
                };
                writer.write_all(reply).unwrap();
            }
            data
        });
        (port, handle)
    }

    #[test]
    fn plain_smtp_delivers_message() {
        let (port, sink) = smtp_sink();
        let mailer =
            Mailer::new(&MailConfig::parse(&format!("smtp://127.0.0.1:{port}")).unwrap()).unwrap();
        mailer
            .send(&sample(Some(("CANCEL".to_owned(), ics()))))
            .unwrap();
        let data = sink.join().unwrap();
        assert!(
            data.contains("Message-ID: <booking-42-confirmed@spazi.poste.it>"),
            "{data}"
        );
        assert!(data.contains("Subject: Booking confirmed - Spazi Bologna Centro"));
        assert!(data.contains("method=CANCEL"));
        assert!(data.contains("BEGIN:VCALENDAR"));
    }

    #[test]
    fn smtp_send_to_closed_port_fails_cleanly() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mailer =
            Mailer::new(&MailConfig::parse(&format!("smtp://127.0.0.1:{port}")).unwrap()).unwrap();
        let err = mailer.send(&sample(None)).unwrap_err();
        assert!(matches!(err, MailError::Smtp(_)), "{err}");
    }
}
