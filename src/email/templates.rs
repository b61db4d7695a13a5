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
    /// The door PIN and where the QR code is, for a confirmation.
    pub access: Option<(&'a str, &'a str)>,
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
         {access}\
         \n\
         Gestisci la prenotazione: {url}\n",
        greeting = greeting("Ciao", &f.member),
        details = f.details_it(),
        url = f.url,
        access = d.access.map_or(String::new(), |(pin, link)| format!(
            "La porta si apre con il codice QR in allegato o con il PIN {pin}, da 15 minuti prima \
             dell'inizio a 15 minuti dopo la fine; entrando fai anche il check-in.\n\
             Codice QR e PIN: {link}\n"
        )),
    );
    let en = format!(
        "{greeting}\n\
         \n\
         your booking is confirmed.\n\
         \n\
         {details}\n\
         \n\
         When you arrive, check in from your booking (check-in opens 15 minutes before the start).\n\
         {access}\
         \n\
         Manage your booking: {url}\n",
        greeting = greeting("Hi", &f.member),
        details = f.details_en(),
        url = f.url,
        access = d.access.map_or(String::new(), |(pin, link)| format!(
            "The door opens with the attached QR code or with PIN {pin}, from 15 minutes before \
             the start until 15 minutes after the end; coming in also checks you in.\n\
             QR code and PIN: {link}\n"
        )),
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
mod tests;
