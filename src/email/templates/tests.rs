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
        access: None,
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
