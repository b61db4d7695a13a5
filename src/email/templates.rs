//! Plain-text bilingual (Italian, then English) mail bodies.

use chrono::{DateTime, Datelike, Timelike, Weekday};
use chrono_tz::Tz;

const SIGNATURE: &str = "Spazi per l'Italia – Poste Italiane";
const SEPARATOR: &str = "------------------------------------------------------------";

/// A subject and a plain-text body ready to be handed to the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedMail {
    pub subject: String,
    pub text: String,
}

/// What the booking mails show about a booking; times are in the site's zone.
#[derive(Debug, Clone)]
pub struct BookingDetails<'a> {
    pub member_name: &'a str,
    pub resource_name: &'a str,
    pub site_name: &'a str,
    pub site_address: &'a str,
    pub starts_local: DateTime<Tz>,
    pub ends_local: DateTime<Tz>,
    pub booking_url: &'a str,
}

/// Address verification mail; `link` is the full URL carrying the token.
pub fn verification(name: &str, link: &str) -> RenderedMail {
    let name = one_line(name);
    let link = one_line(link);
    let it = format!(
        "{greeting}\n\
         \n\
         per completare la registrazione a Spazi per l'Italia conferma il tuo indirizzo email aprendo questo link:\n\
         \n\
         {link}\n\
         \n\
         Se non hai richiesto tu la registrazione, puoi ignorare questo messaggio.\n",
        greeting = greeting("Ciao", &name),
    );
    let en = format!(
        "{greeting}\n\
         \n\
         to complete your Spazi per l'Italia registration, please confirm your email address by opening this link:\n\
         \n\
         {link}\n\
         \n\
         If you did not sign up, you can ignore this message.\n",
        greeting = greeting("Hi", &name),
    );
    RenderedMail {
        subject:
            "Conferma il tuo indirizzo email / Confirm your email address – Spazi per l'Italia"
                .to_owned(),
        text: bilingual(&it, &en),
    }
}

/// Sent when a booking is confirmed.
pub fn booking_confirmed(d: &BookingDetails) -> RenderedMail {
    let f = Fields::new(d);
    let it = format!(
        "{greeting}\n\
         \n\
         la tua prenotazione è confermata.\n\
         \n\
         {details}\n\
         \n\
         Quando arrivi, fai il check-in dalla prenotazione (si apre 15 minuti prima dell'inizio).\n\
         \n\
         Gestisci la prenotazione: {url}\n",
        greeting = greeting("Ciao", &f.member),
        details = f.details_it(),
        url = f.url,
    );
    let en = format!(
        "{greeting}\n\
         \n\
         your booking is confirmed.\n\
         \n\
         {details}\n\
         \n\
         When you arrive, check in from your booking (check-in opens 15 minutes before the start).\n\
         \n\
         Manage your booking: {url}\n",
        greeting = greeting("Hi", &f.member),
        details = f.details_en(),
        url = f.url,
    );
    RenderedMail {
        subject: format!("Prenotazione confermata / Booking confirmed – {}", f.site),
        text: bilingual(&it, &en),
    }
}

/// Sent when a booking is cancelled by the member or by staff.
pub fn booking_cancelled(d: &BookingDetails) -> RenderedMail {
    let f = Fields::new(d);
    let it = format!(
        "{greeting}\n\
         \n\
         la tua prenotazione è stata annullata.\n\
         \n\
         {details}\n\
         \n\
         Dettagli: {url}\n",
        greeting = greeting("Ciao", &f.member),
        details = f.details_it(),
        url = f.url,
    );
    let en = format!(
        "{greeting}\n\
         \n\
         your booking has been cancelled.\n\
         \n\
         {details}\n\
         \n\
         Details: {url}\n",
        greeting = greeting("Hi", &f.member),
        details = f.details_en(),
        url = f.url,
    );
    RenderedMail {
        subject: format!("Prenotazione annullata / Booking cancelled – {}", f.site),
        text: bilingual(&it, &en),
    }
}

/// Sent when a booking is released automatically because nobody checked in.
pub fn booking_released(d: &BookingDetails) -> RenderedMail {
    let f = Fields::new(d);
    let it = format!(
        "{greeting}\n\
         \n\
         non abbiamo registrato il tuo check-in entro il periodo di tolleranza, quindi la \
         prenotazione è stata annullata automaticamente e lo spazio è tornato disponibile.\n\
         \n\
         {details}\n\
         \n\
         Se ti serve ancora uno spazio, puoi prenotarne un altro.\n\
         \n\
         Dettagli: {url}\n",
        greeting = greeting("Ciao", &f.member),
        details = f.details_it(),
        url = f.url,
    );
    let en = format!(
        "{greeting}\n\
         \n\
         we did not register your check-in within the grace period, so the booking was \
         released automatically and the space is available again.\n\
         \n\
         {details}\n\
         \n\
         If you still need a space, you can book another one.\n\
         \n\
         Details: {url}\n",
        greeting = greeting("Hi", &f.member),
        details = f.details_en(),
        url = f.url,
    );
    RenderedMail {
        subject: format!(
            "Prenotazione liberata per mancato check-in / Booking released (no check-in) – {}",
            f.site
        ),
        text: bilingual(&it, &en),
    }
}

/// Booking fields cleaned up once and shared by both language blocks.
struct Fields {
    member: String,
    resource: String,
    site: String,
    address: String,
    url: String,
    when_it: String,
    when_en: String,
}

impl Fields {
    fn new(d: &BookingDetails) -> Self {
        Fields {
            member: one_line(d.member_name),
            resource: one_line(d.resource_name),
            site: one_line(d.site_name),
            address: one_line(d.site_address),
            url: one_line(d.booking_url),
            when_it: format_range(d.starts_local, d.ends_local, Lang::It),
            when_en: format_range(d.starts_local, d.ends_local, Lang::En),
        }
    }

    fn place(&self) -> String {
        if self.address.is_empty() {
            self.site.clone()
        } else {
            format!("{}, {}", self.site, self.address)
        }
    }

    fn details_it(&self) -> String {
        format!(
            "Spazio: {}\nSede: {}\nQuando: {}",
            self.resource,
            self.place(),
            self.when_it
        )
    }

    fn details_en(&self) -> String {
        format!(
            "Space: {}\nSite: {}\nWhen: {}",
            self.resource,
            self.place(),
            self.when_en
        )
    }
}

#[derive(Clone, Copy)]
enum Lang {
    It,
    En,
}

fn bilingual(it: &str, en: &str) -> String {
    format!("{it}\n{SIGNATURE}\n\n{SEPARATOR}\n\n{en}\n{SIGNATURE}\n")
}

fn greeting(word: &str, name: &str) -> String {
    if name.is_empty() {
        format!("{word},")
    } else {
        format!("{word} {name},")
    }
}

/// Collapses control characters so user-supplied values cannot reshape the message.
fn one_line(value: &str) -> String {
    let replaced: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    replaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Formats a booking interval in the start's zone, e.g.
/// "lunedì 30 novembre 2026, 09:00–10:00 (Europe/Rome)".
fn format_range(start: DateTime<Tz>, end: DateTime<Tz>, lang: Lang) -> String {
    let tz = start.timezone();
    let end = end.with_timezone(&tz);
    let range = if start.date_naive() == end.date_naive() {
        format!("{}, {}–{}", format_date(&start, lang), hm(&start), hm(&end))
    } else {
        format!(
            "{}, {} – {}, {}",
            format_date(&start, lang),
            hm(&start),
            format_date(&end, lang),
            hm(&end)
        )
    };
    format!("{range} ({})", tz.name())
}

fn hm(t: &DateTime<Tz>) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

fn format_date(t: &DateTime<Tz>, lang: Lang) -> String {
    let month0 = t.month0() as usize;
    match lang {
        Lang::It => format!(
            "{} {} {} {}",
            weekday_it(t.weekday()),
            t.day(),
            MONTHS_IT[month0],
            t.year()
        ),
        Lang::En => format!(
            "{} {} {} {}",
            weekday_en(t.weekday()),
            t.day(),
            MONTHS_EN[month0],
            t.year()
        ),
    }
}

const MONTHS_IT: [&str; 12] = [
    "gennaio",
    "febbraio",
    "marzo",
    "aprile",
    "maggio",
    "giugno",
    "luglio",
    "agosto",
    "settembre",
    "ottobre",
    "novembre",
    "dicembre",
];

const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

fn weekday_it(w: Weekday) -> &'static str {
    match w {
        Weekday::Mon => "lunedì",
        Weekday::Tue => "martedì",
        Weekday::Wed => "mercoledì",
        Weekday::Thu => "giovedì",
        Weekday::Fri => "venerdì",
        Weekday::Sat => "sabato",
        Weekday::Sun => "domenica",
    }
}

fn weekday_en(w: Weekday) -> &'static str {
    match w {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::Europe::Rome;

    fn details() -> BookingDetails<'static> {
        BookingDetails {
            member_name: "Mario Rossi",
            resource_name: "Scrivania D-12",
            site_name: "Spazi Bologna Centro",
            site_address: "Via Ugo Bassi 1, 40121 Bologna",
            starts_local: Rome.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap(),
            ends_local: Rome.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap(),
            booking_url: "https://spazi.poste.it/bookings/42",
        }
    }

    fn blocks(text: &str) -> (&str, &str) {
        let idx = text.find(SEPARATOR).expect("separator present");
        (&text[..idx], &text[idx + SEPARATOR.len()..])
    }

    #[test]
    fn italian_dates_and_zone() {
        let d = details();
        assert_eq!(
            format_range(d.starts_local, d.ends_local, Lang::It),
            "lunedì 30 novembre 2026, 09:00–10:00 (Europe/Rome)"
        );
        assert_eq!(
            format_range(d.starts_local, d.ends_local, Lang::En),
            "Monday 30 November 2026, 09:00–10:00 (Europe/Rome)"
        );
        let start = Rome.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        let end = Rome.with_ymd_and_hms(2026, 12, 1, 13, 30, 0).unwrap();
        assert_eq!(
            format_range(start, end, Lang::It),
            "martedì 1 dicembre 2026, 09:00–13:30 (Europe/Rome)"
        );
    }

    #[test]
    fn summer_time_is_shown_in_local_time() {
        // 07:00 UTC in July is 09:00 in Rome (CEST).
        let start = chrono::Utc
            .with_ymd_and_hms(2026, 7, 15, 7, 0, 0)
            .unwrap()
            .with_timezone(&Rome);
        let end = start + chrono::Duration::hours(2);
        assert_eq!(
            format_range(start, end, Lang::It),
            "mercoledì 15 luglio 2026, 09:00–11:00 (Europe/Rome)"
        );
    }

    #[test]
    fn interval_across_midnight_shows_both_dates() {
        let start = Rome.with_ymd_and_hms(2026, 3, 1, 22, 0, 0).unwrap();
        let end = Rome.with_ymd_and_hms(2026, 3, 2, 2, 0, 0).unwrap();
        assert_eq!(
            format_range(start, end, Lang::It),
            "domenica 1 marzo 2026, 22:00 – lunedì 2 marzo 2026, 02:00 (Europe/Rome)"
        );
        assert_eq!(
            format_range(start, end, Lang::En),
            "Sunday 1 March 2026, 22:00 – Monday 2 March 2026, 02:00 (Europe/Rome)"
        );
    }

    #[test]
    fn every_month_and_weekday_has_a_name() {
        for m in 1..=12 {
            let t = Rome.with_ymd_and_hms(2027, m, 10, 12, 0, 0).unwrap();
            assert!(!format_date(&t, Lang::It).is_empty());
        }
        let t = Rome.with_ymd_and_hms(2027, 1, 7, 12, 0, 0).unwrap();
        assert_eq!(format_date(&t, Lang::It), "giovedì 7 gennaio 2027");
        let t = Rome.with_ymd_and_hms(2027, 8, 14, 12, 0, 0).unwrap();
        assert_eq!(format_date(&t, Lang::It), "sabato 14 agosto 2027");
        assert_eq!(format_date(&t, Lang::En), "Saturday 14 August 2027");
    }

    #[test]
    fn verification_mail() {
        let link = "https://spazi.poste.it/verify?token=abc123";
        let mail = verification("Giulia", link);
        assert!(mail
            .subject
            .starts_with("Conferma il tuo indirizzo email / Confirm"));
        let (it, en) = blocks(&mail.text);
        assert!(it.contains("Ciao Giulia,"));
        assert!(it.contains(link));
        assert!(it.contains(SIGNATURE));
        assert!(en.contains("Hi Giulia,"));
        assert!(en.contains(link));
        assert!(en.trim_end().ends_with(SIGNATURE));
    }

    #[test]
    fn empty_name_greets_without_dangling_space() {
        let mail = verification("  ", "https://x/verify?token=t");
        assert!(mail.text.starts_with("Ciao,\n"));
        assert!(mail.text.contains("\nHi,\n"));
    }

    #[test]
    fn confirmed_mail() {
        let mail = booking_confirmed(&details());
        assert_eq!(
            mail.subject,
            "Prenotazione confermata / Booking confirmed – Spazi Bologna Centro"
        );
        let (it, en) = blocks(&mail.text);
        assert!(it.contains("Ciao Mario Rossi,"));
        assert!(it.contains("è confermata"));
        assert!(it.contains("Spazio: Scrivania D-12"));
        assert!(it.contains("Sede: Spazi Bologna Centro, Via Ugo Bassi 1, 40121 Bologna"));
        assert!(it.contains("Quando: lunedì 30 novembre 2026, 09:00–10:00 (Europe/Rome)"));
        assert!(it.contains("https://spazi.poste.it/bookings/42"));
        assert!(it.contains(SIGNATURE));
        assert!(en.contains("your booking is confirmed"));
        assert!(en.contains("When: Monday 30 November 2026, 09:00–10:00 (Europe/Rome)"));
        assert!(en.contains("https://spazi.poste.it/bookings/42"));
        assert!(en.contains(SIGNATURE));
    }

    #[test]
    fn cancelled_mail() {
        let mail = booking_cancelled(&details());
        assert_eq!(
            mail.subject,
            "Prenotazione annullata / Booking cancelled – Spazi Bologna Centro"
        );
        let (it, en) = blocks(&mail.text);
        assert!(it.contains("è stata annullata"));
        assert!(it.contains("Scrivania D-12"));
        assert!(en.contains("has been cancelled"));
        assert!(en.contains("Scrivania D-12"));
    }

    #[test]
    fn released_mail() {
        let mail = booking_released(&details());
        assert!(mail.subject.starts_with("Prenotazione liberata"));
        assert!(mail.subject.contains("Booking released"));
        assert!(mail.subject.ends_with("– Spazi Bologna Centro"));
        let (it, en) = blocks(&mail.text);
        assert!(it.contains("check-in"));
        assert!(it.contains("periodo di tolleranza"));
        assert!(it.contains("annullata automaticamente"));
        assert!(en.contains("grace period"));
        assert!(en.contains("released automatically"));
    }

    #[test]
    fn user_values_cannot_inject_lines() {
        let mut d = details();
        d.site_name = "Bologna\r\nBcc: evil@example.com";
        d.member_name = "Mario\nRossi";
        let mail = booking_confirmed(&d);
        assert!(!mail.subject.contains('\n') && !mail.subject.contains('\r'));
        assert!(mail.subject.ends_with("– Bologna Bcc: evil@example.com"));
        assert!(mail.text.contains("Ciao Mario Rossi,"));
    }

    #[test]
    fn italian_comes_first() {
        let mail = booking_cancelled(&details());
        let it = mail.text.find("Ciao").unwrap();
        let sep = mail.text.find(SEPARATOR).unwrap();
        let en = mail.text.find("Hi ").unwrap();
        assert!(it < sep && sep < en);
    }
}
