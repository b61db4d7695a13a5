use std::collections::BTreeMap;

use super::TimeRange;
use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Timelike, Utc, Weekday,
};
use chrono_tz::Tz;

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Mon),
    ("tue", Weekday::Tue),
    ("wed", Weekday::Wed),
    ("thu", Weekday::Thu),
    ("fri", Weekday::Fri),
    ("sat", Weekday::Sat),
    ("sun", Weekday::Sun),
];

/// Opening intervals per weekday in local wall-clock minutes, `[open, close)`, `close` up to 1440.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeeklyHours {
    days: [Vec<(u16, u16)>; 7],
}

/// The wire form: `{"mon": [["08:00", "20:00"]], ..., "sun": []}`.
pub type WeeklyHoursJson = BTreeMap<String, Vec<[String; 2]>>;

impl WeeklyHours {
    pub fn new(days: [Vec<(u16, u16)>; 7]) -> Self {
        WeeklyHours { days }
    }

    pub fn every_day(open: u16, close: u16) -> Self {
        WeeklyHours::new(std::array::from_fn(|_| vec![(open, close)]))
    }

    pub fn weekdays_and_saturday(week: (u16, u16), saturday: Option<(u16, u16)>) -> Self {
        let mut days: [Vec<(u16, u16)>; 7] = Default::default();
        for d in days.iter_mut().take(5) {
            d.push(week);
        }
        if let Some(sat) = saturday {
            days[5].push(sat);
        }
        WeeklyHours::new(days)
    }

    pub fn on(&self, day: Weekday) -> &[(u16, u16)] {
        &self.days[day.num_days_from_monday() as usize]
    }

    pub fn to_json(&self) -> WeeklyHoursJson {
        DAYS.iter()
            .map(|(name, wd)| {
                let spans = self
                    .on(*wd)
                    .iter()
                    .map(|(o, c)| [hhmm(*o), hhmm(*c)])
                    .collect();
                (name.to_string(), spans)
            })
            .collect()
    }

    pub fn from_json(json: &WeeklyHoursJson) -> Result<Self, String> {
        let mut days: [Vec<(u16, u16)>; 7] = Default::default();
        for (name, spans) in json {
            let idx = DAYS
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| format!("unknown weekday {name}"))?;
            for [o, c] in spans {
                let (o, c) = (parse_hhmm(o)?, parse_hhmm(c)?);
                if c <= o {
                    return Err(format!("{name}: closing {} is not after opening", hhmm(c)));
                }
                days[idx].push((o, c));
            }
            days[idx].sort();
        }
        Ok(WeeklyHours { days })
    }

    /// Whether the site is open for the whole range, read on the local wall clock of `tz`.
    ///
    /// The range is cut at each local midnight; every piece must lie inside one opening interval
    /// of its weekday, on a day that is not closed. Instants map to one local time each, so the
    /// check is exact on the days clocks change.
    pub fn covers(&self, range: &TimeRange, tz: Tz, closed: impl Fn(NaiveDate) -> bool) -> bool {
        let mut cursor = range.start();
        while cursor < range.end() {
            let local = cursor.with_timezone(&tz);
            let date = local.date_naive();
            let next_midnight = local_midnight_after(date, tz);
            let piece_end = range.end().min(next_midnight);
            if closed(date) {
                return false;
            }
            let from = minute_of_day(local);
            let to = if piece_end == next_midnight {
                1440
            } else {
                minute_of_day(piece_end.with_timezone(&tz))
            };
            let open = self
                .on(date.weekday())
                .iter()
                .any(|(o, c)| *o <= from && to <= *c);
            if !open {
                return false;
            }
            cursor = piece_end;
        }
        true
    }
}

fn minute_of_day(t: DateTime<Tz>) -> u16 {
    (t.hour() * 60 + t.minute()) as u16 + u16::from(t.second() > 0 || t.nanosecond() > 0)
}

/// The first instant of the local day after `date`, even when midnight itself is skipped.
pub fn local_midnight_after(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    local_day_start(date + Duration::days(1), tz)
}

/// The first instant of the local day `date` in `tz`.
pub fn local_day_start(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let mut t = date.and_time(NaiveTime::MIN);
    loop {
        if let Some(dt) = tz.from_local_datetime(&t).earliest() {
            return dt.with_timezone(&Utc);
        }
        t += Duration::minutes(15);
    }
}

fn hhmm(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

fn parse_hhmm(s: &str) -> Result<u16, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not HH:MM"))?;
    let (h, m): (u16, u16) = (
        h.parse().map_err(|_| format!("{s:?} is not HH:MM"))?,
        m.parse().map_err(|_| format!("{s:?} is not HH:MM"))?,
    );
    if m >= 60 || h * 60 + m > 1440 {
        return Err(format!("{s:?} is not a time of day"));
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Rome;

    fn range(a: &str, b: &str) -> TimeRange {
        TimeRange::parse(a, b, "s", "e").unwrap()
    }

    #[test]
    fn office_hours_in_local_time() {
        let hours = WeeklyHours::weekdays_and_saturday((8 * 60, 20 * 60), None);
        let never = |_| false;
        // Tuesday 1 December 2026, 09:00-10:00 in Rome is 08:00-09:00Z.
        assert!(hours.covers(
            &range("2026-12-01T08:00:00Z", "2026-12-01T09:00:00Z"),
            Rome,
            never
        ));
        // 07:30 local is before opening.
        assert!(!hours.covers(
            &range("2026-12-01T06:30:00Z", "2026-12-01T09:00:00Z"),
            Rome,
            never
        ));
        // Ends exactly at closing time: allowed, the range is half-open.
        assert!(hours.covers(
            &range("2026-12-01T18:00:00Z", "2026-12-01T19:00:00Z"),
            Rome,
            never
        ));
        assert!(!hours.covers(
            &range("2026-12-01T18:00:00Z", "2026-12-01T19:01:00Z"),
            Rome,
            never
        ));
        // Saturday closed.
        assert!(!hours.covers(
            &range("2026-12-05T09:00:00Z", "2026-12-05T10:00:00Z"),
            Rome,
            never
        ));
    }

    #[test]
    fn round_the_clock_across_dst_and_midnight() {
        let hours = WeeklyHours::every_day(0, 1440);
        // 29 March 2026: 01:00 local to 04:00 local is two real hours.
        let r = range("2026-03-29T01:00:00+01:00", "2026-03-29T04:00:00+02:00");
        assert_eq!(r.duration(), Duration::hours(2));
        assert!(hours.covers(&r, Rome, |_| false));
        // Across midnight into a closed day.
        let r = range("2026-12-24T22:00:00+01:00", "2026-12-25T02:00:00+01:00");
        assert!(hours.covers(&r, Rome, |_| false));
        let christmas = NaiveDate::from_ymd_opt(2026, 12, 25).unwrap();
        assert!(!hours.covers(&r, Rome, |d| d == christmas));
    }

    #[test]
    fn json_round_trip_and_errors() {
        let hours = WeeklyHours::weekdays_and_saturday((510, 1110), Some((540, 780)));
        assert_eq!(WeeklyHours::from_json(&hours.to_json()).unwrap(), hours);
        let mut bad = WeeklyHoursJson::new();
        bad.insert("mon".into(), vec![["10:00".into(), "09:00".into()]]);
        assert!(WeeklyHours::from_json(&bad).is_err());
    }

    #[test]
    fn day_lengths_on_dst_days() {
        let start = |y, m, d| local_day_start(NaiveDate::from_ymd_opt(y, m, d).unwrap(), Rome);
        assert_eq!(start(2026, 3, 30) - start(2026, 3, 29), Duration::hours(23));
        assert_eq!(
            start(2026, 10, 26) - start(2026, 10, 25),
            Duration::hours(25)
        );
    }
}
