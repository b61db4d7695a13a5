use chrono::{Datelike, Duration, NaiveDate};

/// Easter Sunday in the Gregorian calendar (the anonymous Gregorian algorithm).
pub fn easter_sunday(year: i32) -> NaiveDate {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32).expect("Easter is a valid date")
}

/// The Italian national public holidays of `year`, Easter Monday included.
pub fn national_holidays(year: i32) -> Vec<(NaiveDate, &'static str)> {
    let d = |m: u32, day: u32| NaiveDate::from_ymd_opt(year, m, day).expect("fixed holiday");
    let mut days = vec![
        (d(1, 1), "Capodanno"),
        (d(1, 6), "Epifania"),
        (d(4, 25), "Festa della Liberazione"),
        (d(5, 1), "Festa del Lavoro"),
        (d(6, 2), "Festa della Repubblica"),
        (d(8, 15), "Ferragosto"),
        (d(11, 1), "Ognissanti"),
        (d(12, 8), "Immacolata Concezione"),
        (d(12, 25), "Natale"),
        (d(12, 26), "Santo Stefano"),
        (easter_sunday(year), "Pasqua"),
        (
            easter_sunday(year) + Duration::days(1),
            "Lunedì dell'Angelo",
        ),
    ];
    if year >= 2026 {
        // San Francesco d'Assisi is a national holiday again from 2026.
        days.push((d(10, 4), "San Francesco d'Assisi"));
    }
    days.sort();
    days
}

pub fn national_holiday(date: NaiveDate) -> Option<&'static str> {
    national_holidays(date.year())
        .into_iter()
        .find(|(d, _)| *d == date)
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn easter_dates() {
        for (y, m, d) in [
            (2024, 3, 31),
            (2025, 4, 20),
            (2026, 4, 5),
            (2027, 3, 28),
            (2038, 4, 25),
        ] {
            assert_eq!(easter_sunday(y), NaiveDate::from_ymd_opt(y, m, d).unwrap());
        }
    }

    #[test]
    fn easter_monday_is_a_holiday() {
        assert_eq!(
            national_holiday(NaiveDate::from_ymd_opt(2026, 4, 6).unwrap()),
            Some("Lunedì dell'Angelo")
        );
        assert_eq!(
            national_holiday(NaiveDate::from_ymd_opt(2026, 4, 7).unwrap()),
            None
        );
    }
}
