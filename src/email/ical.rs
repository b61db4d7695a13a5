//! iCalendar (RFC 5545) invitations and cancellations for bookings.

use chrono::{DateTime, Utc};

/// Maximum line length in octets, excluding the CRLF (RFC 5545 §3.1).
const MAX_LINE_OCTETS: usize = 75;

/// The iTIP method of the calendar object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Request,
    Cancel,
}

impl Method {
    /// The value used in `METHOD:` and in the MIME `method=` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Request => "REQUEST",
            Method::Cancel => "CANCEL",
        }
    }

    fn status(self) -> &'static str {
        match self {
            Method::Request => "CONFIRMED",
            Method::Cancel => "CANCELLED",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One booking as a calendar event.
#[derive(Debug, Clone)]
pub struct CalendarEvent<'a> {
    pub uid: &'a str,
    pub sequence: u32,
    pub method: Method,
    pub summary: &'a str,
    pub location: &'a str,
    pub description: &'a str,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub organizer_email: &'a str,
    pub attendee_email: &'a str,
    pub attendee_name: &'a str,
    pub url: Option<&'a str>,
}

/// Renders the event as a complete VCALENDAR object with CRLF line endings.
pub fn render(event: &CalendarEvent) -> String {
    let mut out = String::with_capacity(1024);
    let mut line = |content: String| push_folded(&mut out, &content);

    line("BEGIN:VCALENDAR".into());
    line("VERSION:2.0".into());
    line("PRODID:-//Poste Italiane//Spazi//IT".into());
    line("CALSCALE:GREGORIAN".into());
    line(format!("METHOD:{}", event.method.as_str()));
    line("BEGIN:VEVENT".into());
    line(format!("UID:{}", escape_text(event.uid)));
    line(format!("SEQUENCE:{}", event.sequence));
    line(format!("DTSTAMP:{}", format_utc(event.created_at)));
    line(format!("DTSTART:{}", format_utc(event.starts_at)));
    line(format!("DTEND:{}", format_utc(event.ends_at)));
    line(format!("SUMMARY:{}", escape_text(event.summary)));
    line(format!("LOCATION:{}", escape_text(event.location)));
    line(format!("DESCRIPTION:{}", escape_text(event.description)));
    line(format!(
        "ORGANIZER:mailto:{}",
        sanitize_uri(event.organizer_email)
    ));
    line(format!(
        "ATTENDEE;CN={};ROLE=REQ-PARTICIPANT;PARTSTAT=ACCEPTED:mailto:{}",
        param_value(event.attendee_name),
        sanitize_uri(event.attendee_email)
    ));
    line(format!("STATUS:{}", event.method.status()));
    if let Some(url) = event.url {
        line(format!("URL:{}", sanitize_uri(url)));
    }
    line("END:VEVENT".into());
    line("END:VCALENDAR".into());
    out
}

/// Formats an instant as a UTC DATE-TIME, e.g. `20261201T080000Z`.
pub fn format_utc(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Escapes a TEXT value (RFC 5545 §3.3.11).
pub fn escape_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\r' => {
                // A CRLF pair is one line break, not two.
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\\n");
            }
            '\n' => out.push_str("\\n"),
            '\t' => out.push('\t'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Produces a parameter value, quoted when it contains characters that are
/// only allowed inside a quoted-string (RFC 5545 §3.1).
fn param_value(value: &str) -> String {
    // DQUOTE cannot appear in a parameter value at all, so it is softened to an apostrophe.
    let cleaned: String = value
        .chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .map(|c| if c == '"' { '\'' } else { c })
        .collect();
    if cleaned.contains([':', ';', ',']) {
        format!("\"{cleaned}\"")
    } else {
        cleaned
    }
}

/// Removes characters that would break the content line of a URI value.
fn sanitize_uri(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control() && !c.is_whitespace())
        .collect()
}

/// Appends one content line, folded at 75 octets on character boundaries, plus CRLF.
fn push_folded(out: &mut String, line: &str) {
    let mut budget = MAX_LINE_OCTETS;
    let mut used = 0;
    for c in line.chars() {
        let len = c.len_utf8();
        if used + len > budget {
            out.push_str("\r\n ");
            // The leading space of a continuation line counts towards its 75 octets.
            budget = MAX_LINE_OCTETS - 1;
            used = 0;
        }
        out.push(c);
        used += len;
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample<'a>(method: Method, summary: &'a str, description: &'a str) -> CalendarEvent<'a> {
        CalendarEvent {
            uid: "booking-42@spazi.poste.it",
            sequence: match method {
                Method::Request => 0,
                Method::Cancel => 1,
            },
            method,
            summary,
            location: "Spazi Bologna Centro, Via Ugo Bassi 1, 40121 Bologna",
            description,
            starts_at: Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap(),
            ends_at: Utc.with_ymd_and_hms(2026, 12, 1, 9, 30, 0).unwrap(),
            created_at: Utc.with_ymd_and_hms(2026, 11, 20, 14, 5, 9).unwrap(),
            organizer_email: "noreply@spazi.poste.it",
            attendee_email: "mario.rossi@example.it",
            attendee_name: "Mario Rossi",
            url: Some("https://spazi.poste.it/bookings/42"),
        }
    }

    fn unfold(ics: &str) -> String {
        ics.replace("\r\n ", "")
    }

    fn unfolded_lines(ics: &str) -> Vec<String> {
        unfold(ics)
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn request_has_expected_structure() {
        let ics = render(&sample(Method::Request, "Spazi – Scrivania D-12", "Ciao"));
        let lines = unfolded_lines(&ics);
        assert_eq!(lines.first().map(String::as_str), Some("BEGIN:VCALENDAR"));
        assert_eq!(lines.last().map(String::as_str), Some("END:VCALENDAR"));
        for expected in [
            "VERSION:2.0",
            "PRODID:-//Poste Italiane//Spazi//IT",
            "CALSCALE:GREGORIAN",
            "METHOD:REQUEST",
            "BEGIN:VEVENT",
            "UID:booking-42@spazi.poste.it",
            "SEQUENCE:0",
            "DTSTAMP:20261120T140509Z",
            "DTSTART:20261201T080000Z",
            "DTEND:20261201T093000Z",
            "SUMMARY:Spazi – Scrivania D-12",
            "LOCATION:Spazi Bologna Centro\\, Via Ugo Bassi 1\\, 40121 Bologna",
            "DESCRIPTION:Ciao",
            "ORGANIZER:mailto:noreply@spazi.poste.it",
            "ATTENDEE;CN=Mario Rossi;ROLE=REQ-PARTICIPANT;PARTSTAT=ACCEPTED:mailto:mario.rossi@example.it",
            "STATUS:CONFIRMED",
            "URL:https://spazi.poste.it/bookings/42",
            "END:VEVENT",
        ] {
            assert!(lines.iter().any(|l| l == expected), "missing {expected:?} in {ics}");
        }
        assert!(ics.ends_with("END:VCALENDAR\r\n"));
        assert!(!ics.replace("\r\n", "").contains('\n'), "bare LF in output");
        assert!(!ics.replace("\r\n", "").contains('\r'), "bare CR in output");
    }

    #[test]
    fn cancel_uses_cancel_method_and_status() {
        let ics = render(&sample(Method::Cancel, "Spazi", "Annullata"));
        let lines = unfolded_lines(&ics);
        assert!(lines.iter().any(|l| l == "METHOD:CANCEL"));
        assert!(lines.iter().any(|l| l == "STATUS:CANCELLED"));
        assert!(lines.iter().any(|l| l == "SEQUENCE:1"));
        assert!(!lines.iter().any(|l| l == "STATUS:CONFIRMED"));
        assert!(!lines.iter().any(|l| l == "METHOD:REQUEST"));
    }

    #[test]
    fn url_is_optional() {
        let mut event = sample(Method::Request, "Spazi", "x");
        event.url = None;
        let ics = render(&event);
        assert!(!unfolded_lines(&ics).iter().any(|l| l.starts_with("URL:")));
    }

    #[test]
    fn times_are_utc_whatever_the_input_offset() {
        let rome = chrono::FixedOffset::east_opt(3600).unwrap();
        let start = rome.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        let mut event = sample(Method::Request, "Spazi", "x");
        event.starts_at = start.with_timezone(&Utc);
        event.ends_at = (start + chrono::Duration::hours(1)).with_timezone(&Utc);
        let lines = unfolded_lines(&render(&event));
        assert!(lines.iter().any(|l| l == "DTSTART:20261201T080000Z"));
        assert!(lines.iter().any(|l| l == "DTEND:20261201T090000Z"));
        assert_eq!(
            format_utc(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()),
            "20260102T030405Z"
        );
    }

    #[test]
    fn escaping_of_text_values() {
        assert_eq!(escape_text(r"a\b"), r"a\\b");
        assert_eq!(escape_text("a;b,c"), r"a\;b\,c");
        assert_eq!(escape_text("riga 1\nriga 2"), r"riga 1\nriga 2");
        assert_eq!(
            escape_text("riga 1\r\nriga 2\rriga 3"),
            r"riga 1\nriga 2\nriga 3"
        );
        assert_eq!(escape_text("colon: ok"), "colon: ok");
        assert_eq!(escape_text("bell\u{7}"), "bell");

        let ics = render(&sample(
            Method::Request,
            "a;b,c\\d",
            "prima riga\nseconda riga",
        ));
        let lines = unfolded_lines(&ics);
        assert!(lines.iter().any(|l| l == r"SUMMARY:a\;b\,c\\d"));
        assert!(lines
            .iter()
            .any(|l| l == r"DESCRIPTION:prima riga\nseconda riga"));
    }

    #[test]
    fn attendee_name_is_quoted_when_needed() {
        let mut event = sample(Method::Request, "Spazi", "x");
        event.attendee_name = "Rossi, Mario \"Super\"";
        let lines = unfolded_lines(&render(&event));
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("ATTENDEE;CN=\"Rossi, Mario 'Super'\";ROLE=")),
            "{lines:?}"
        );
    }

    #[test]
    fn injected_line_breaks_cannot_add_properties() {
        let mut event = sample(Method::Request, "Spazi", "x");
        event.attendee_name = "Mario\r\nSTATUS:CANCELLED";
        event.attendee_email = "mario@example.it\r\nX-EVIL:1";
        event.url = Some("https://x.example/\nX-EVIL:2");
        let lines = unfolded_lines(&render(&event));
        assert!(!lines.iter().any(|l| l.starts_with("X-EVIL")));
        assert!(!lines.iter().any(|l| l == "STATUS:CANCELLED"));
    }

    #[test]
    fn folding_respects_limit_and_char_boundaries() {
        let description = "Scrivania è prenotata – ricordati il check-in, grazie! ".repeat(12);
        let summary = "è".repeat(100);
        let ics = render(&sample(Method::Request, &summary, &description));

        for physical in ics.split("\r\n") {
            assert!(
                physical.len() <= MAX_LINE_OCTETS,
                "line too long ({}): {physical:?}",
                physical.len()
            );
        }
        // Each physical line is a valid &str, so no multibyte character was split across lines.
        let folded = ics.split("\r\n").filter(|l| l.starts_with(' ')).count();
        assert!(folded > 5, "expected folding to happen");

        let lines = unfolded_lines(&ics);
        assert!(lines.iter().any(|l| *l == format!("SUMMARY:{summary}")));
        assert!(lines
            .iter()
            .any(|l| *l == format!("DESCRIPTION:{}", escape_text(&description))));
    }

    #[test]
    fn folding_exact_boundaries() {
        let mut out = String::new();
        let exact = "x".repeat(MAX_LINE_OCTETS);
        push_folded(&mut out, &exact);
        assert_eq!(out, format!("{exact}\r\n"));

        out.clear();
        let over = "x".repeat(MAX_LINE_OCTETS + 1);
        push_folded(&mut out, &over);
        assert_eq!(out, format!("{}\r\n x\r\n", "x".repeat(MAX_LINE_OCTETS)));

        // 74 ASCII octets then a 3-octet en dash: the dash must move to the next line whole.
        out.clear();
        let tricky = format!("{}–end", "y".repeat(74));
        push_folded(&mut out, &tricky);
        assert_eq!(out, format!("{}\r\n –end\r\n", "y".repeat(74)));
        assert_eq!(unfold(&out), format!("{tricky}\r\n"));

        // Continuation lines hold at most 74 octets after the leading space.
        out.clear();
        let long = "z".repeat(MAX_LINE_OCTETS + 74 + 1);
        push_folded(&mut out, &long);
        let physical: Vec<&str> = out.trim_end_matches("\r\n").split("\r\n").collect();
        assert_eq!(physical.len(), 3);
        assert_eq!(physical[1].len(), MAX_LINE_OCTETS);
        assert_eq!(physical[2], " z");
    }
}
