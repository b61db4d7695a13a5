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
    /// An SVG image attached inline (the door QR code): file name and document.
    pub image: Option<(String, String)>,
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
        None => match image_part(mail)? {
            None => builder.singlepart(text_part)?,
            Some(image) => {
                builder.multipart(MultiPart::mixed().singlepart(text_part).singlepart(image))?
            }
        },
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
            let mut mixed = MultiPart::mixed()
                .multipart(alternative)
                .singlepart(attachment);
            if let Some(image) = image_part(mail)? {
                mixed = mixed.singlepart(image);
            }
            builder.multipart(mixed)?
        }
    };
    Ok(message)
}

/// The inline SVG attachment, if the mail has one.
fn image_part(mail: &OutgoingMail) -> Result<Option<SinglePart>, MailError> {
    let Some((name, svg)) = &mail.image else {
        return Ok(None);
    };
    let kind = content_type("image/svg+xml")?;
    Ok(Some(
        Attachment::new_inline_with_name(single_line(name), single_line(name))
            .body(Body::new(svg.clone()), kind),
    ))
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
mod tests;
