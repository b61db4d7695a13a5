//! The seed network: 250 sites on real comuni, with sizes, hours, closures, zones and resources
//! drawn from a seeded generator, so the same seed always gives the same network.

use chrono::NaiveDate;

use super::opening_hours::WeeklyHours;
use super::ResourceKind;

/// The derived list of comuni (CC BY 4.0, Openpolis / ISTAT); see `data/sites.csv`.
pub const SITES_CSV: &str = include_str!("../../data/sites.csv");

pub const DEFAULT_SEED: u64 = 2026;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteSize {
    Small,
    Medium,
    Large,
}

impl SiteSize {
    pub fn as_str(self) -> &'static str {
        match self {
            SiteSize::Small => "small",
            SiteSize::Medium => "medium",
            SiteSize::Large => "large",
        }
    }

    /// The site's photovoltaic plant, kWp.
    pub fn pv_kwp(self) -> f64 {
        match self {
            SiteSize::Small => 10.0,
            SiteSize::Medium => 30.0,
            SiteSize::Large => 100.0,
        }
    }

    /// The power the site's grid connection is contracted for, W: what grid import must never
    /// exceed.
    pub fn contracted_power_w(self) -> i32 {
        match self {
            SiteSize::Small => 30_000,
            SiteSize::Medium => 60_000,
            SiteSize::Large => 150_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SiteSpec {
    pub id: String,
    pub name: String,
    pub comune: String,
    pub istat_code: String,
    pub province: String,
    pub province_code: String,
    pub region: String,
    pub population: i32,
    pub small_town: bool,
    pub address: String,
    pub latitude: f64,
    pub longitude: f64,
    pub timezone: String,
    pub size: SiteSize,
    pub area_m2: i32,
    pub hours: WeeklyHours,
    pub closures: Vec<(NaiveDate, String)>,
    pub zones: Vec<ZoneSpec>,
}

#[derive(Debug, Clone)]
pub struct ZoneSpec {
    pub id: String,
    pub name: String,
    pub floor: i32,
    pub resources: Vec<ResourceSpec>,
}

#[derive(Debug, Clone)]
pub struct ResourceSpec {
    pub id: String,
    pub kind: ResourceKind,
    pub name: String,
    pub capacity: i32,
    pub amenities: Vec<String>,
}

/// Comuni under this many residents are "small towns" in the Polis sense.
pub const SMALL_TOWN_LIMIT: i32 = 15_000;

/// splitmix64: tiny, fast, and stable across releases of any crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % (hi - lo + 1) as u64) as i32
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

const STREETS: &[&str] = &[
    "Piazza della Posta",
    "Via Roma",
    "Corso Italia",
    "Via Giuseppe Garibaldi",
    "Piazza Giacomo Matteotti",
    "Via Giuseppe Mazzini",
    "Viale della Repubblica",
    "Via Camillo Cavour",
    "Piazza Vittorio Veneto",
    "Via XX Settembre",
];

const ROOM_NAMES: &[&str] = &[
    "Giotto",
    "Volta",
    "Montessori",
    "Fermi",
    "Deledda",
    "Marconi",
    "Levi Montalcini",
    "Galilei",
    "Caravaggio",
    "Artemisia",
    "Olivetti",
    "Hack",
];

/// Patron saints' days of a few cities, when the local Poste building closes.
const PATRON_DAYS: &[(&str, u32, u32, &str)] = &[
    ("058091", 6, 29, "Santi Pietro e Paolo"),
    ("015146", 12, 7, "Sant'Ambrogio"),
    ("001272", 6, 24, "San Giovanni Battista"),
    ("010025", 6, 24, "San Giovanni Battista"),
    ("048017", 6, 24, "San Giovanni Battista"),
    ("063049", 9, 19, "San Gennaro"),
    ("037006", 10, 4, "San Petronio"),
    ("082053", 7, 15, "Santa Rosalia"),
    ("072006", 12, 6, "San Nicola"),
    ("027042", 4, 25, "San Marco"),
];

/// Builds the whole network from the shipped comuni list.
pub fn generate(seed: u64) -> Vec<SiteSpec> {
    SITES_CSV
        .lines()
        .filter(|l| !l.starts_with('#'))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let fields = split_csv(line);
            let mut rng = Rng(seed ^ (i as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
            site(&fields, &mut rng)
        })
        .collect()
}

fn site(f: &[String], rng: &mut Rng) -> SiteSpec {
    let id = f[0].clone();
    let population: i32 = f[6].parse().unwrap_or(0);
    let small_town = population < SMALL_TOWN_LIMIT;
    let size = if small_town {
        SiteSize::Small
    } else if population >= 250_000 {
        SiteSize::Large
    } else if population >= 100_000 {
        if rng.chance(0.4) {
            SiteSize::Large
        } else {
            SiteSize::Medium
        }
    } else if rng.chance(0.75) {
        SiteSize::Medium
    } else {
        SiteSize::Small
    };
    let area_m2 = match size {
        SiteSize::Small => rng.range(85, 120),
        SiteSize::Medium => rng.range(400, 500),
        SiteSize::Large => rng.range(1350, 1650),
    };
    let hours = match size {
        SiteSize::Small => WeeklyHours::weekdays_and_saturday((8 * 60 + 30, 18 * 60 + 30), None),
        SiteSize::Medium => {
            WeeklyHours::weekdays_and_saturday((8 * 60, 20 * 60), Some((9 * 60, 13 * 60)))
        }
        SiteSize::Large => WeeklyHours::every_day(0, 24 * 60),
    };
    let istat = f[2].clone();
    let mut closures = Vec::new();
    for year in [2026, 2027] {
        if let Some((_, m, d, saint)) = PATRON_DAYS.iter().find(|(code, ..)| *code == istat) {
            if let Some(day) = NaiveDate::from_ymd_opt(year, *m, *d) {
                closures.push((day, format!("Festa patronale: {saint}")));
            }
        }
        let month = rng.range(1, 12) as u32;
        let day = rng.range(1, 28) as u32;
        if let Some(day) = NaiveDate::from_ymd_opt(year, month, day) {
            closures.push((day, "Manutenzione impianti".to_string()));
        }
    }
    closures.sort();
    closures.dedup_by(|a, b| a.0 == b.0);
    let comune = f[1].clone();
    SiteSpec {
        name: format!("Spazi {comune}"),
        address: format!("{} {}, {}", rng.pick(STREETS), rng.range(1, 60), comune),
        zones: zones(&id, size, rng),
        id,
        comune,
        istat_code: istat,
        province: f[3].clone(),
        province_code: f[4].clone(),
        region: f[5].clone(),
        population,
        small_town,
        latitude: f[7].parse().unwrap_or(0.0),
        longitude: f[8].parse().unwrap_or(0.0),
        timezone: "Europe/Rome".to_string(),
        size,
        area_m2,
        hours,
        closures,
    }
}

fn zones(site: &str, size: SiteSize, rng: &mut Rng) -> Vec<ZoneSpec> {
    let (desks, rooms, offices, events, ev_bays) = match size {
        SiteSize::Small => (rng.range(10, 16), rng.range(1, 2), 1, 1, rng.range(1, 2)),
        SiteSize::Medium => (
            rng.range(30, 50),
            rng.range(3, 5),
            rng.range(2, 4),
            1,
            rng.range(2, 4),
        ),
        SiteSize::Large => (
            rng.range(80, 120),
            rng.range(6, 10),
            rng.range(4, 8),
            2,
            rng.range(4, 6),
        ),
    };
    let open_spaces = match size {
        SiteSize::Small => 1,
        SiteSize::Medium => 2,
        SiteSize::Large => 3,
    };
    let mut zones: Vec<ZoneSpec> = (0..open_spaces)
        .map(|i| ZoneSpec {
            id: format!("{site}-open-{}", i + 1),
            name: format!("Open space {}", (b'A' + i as u8) as char),
            floor: i,
            resources: Vec::new(),
        })
        .collect();
    for n in 0..desks {
        let zone = (n % open_spaces) as usize;
        let letter = (b'A' + zone as u8) as char;
        let mut amenities = vec!["power".to_string(), "wifi".to_string()];
        if rng.chance(0.6) {
            amenities.push("monitor".into());
        }
        if rng.chance(0.15) {
            amenities.push("standing_desk".into());
        }
        zones[zone].resources.push(ResourceSpec {
            id: format!("{site}-desk-{:03}", n + 1),
            kind: ResourceKind::Desk,
            name: format!("Postazione {letter}{:02}", n / open_spaces + 1),
            capacity: 1,
            amenities,
        });
    }
    let mut meeting = ZoneSpec {
        id: format!("{site}-meeting"),
        name: "Sale riunioni".into(),
        floor: 0,
        resources: Vec::new(),
    };
    for n in 0..rooms {
        let capacity = *rng.pick(&[4, 6, 8, 10, 12]);
        meeting.resources.push(ResourceSpec {
            id: format!("{site}-room-{:02}", n + 1),
            kind: ResourceKind::MeetingRoom,
            name: format!("Sala {}", ROOM_NAMES[n as usize % ROOM_NAMES.len()]),
            capacity,
            amenities: vec![
                "screen".into(),
                "videoconference".into(),
                "whiteboard".into(),
            ],
        });
    }
    zones.push(meeting);
    let mut private = ZoneSpec {
        id: format!("{site}-offices"),
        name: "Uffici privati".into(),
        floor: 1.min(open_spaces - 1),
        resources: Vec::new(),
    };
    for n in 0..offices {
        let capacity = rng.range(2, 6);
        private.resources.push(ResourceSpec {
            id: format!("{site}-office-{:02}", n + 1),
            kind: ResourceKind::Office,
            name: format!("Ufficio {}", n + 1),
            capacity,
            amenities: vec!["lockable".into(), "wifi".into(), "power".into()],
        });
    }
    zones.push(private);
    let mut event = ZoneSpec {
        id: format!("{site}-events"),
        name: "Eventi e formazione".into(),
        floor: 0,
        resources: Vec::new(),
    };
    for n in 0..events {
        let (name, capacity) = match (size, n) {
            (SiteSize::Small, _) => ("Aula formazione".to_string(), 12),
            (_, 0) => (
                "Sala eventi".to_string(),
                if size == SiteSize::Large { 120 } else { 50 },
            ),
            _ => ("Aula formazione".to_string(), 30),
        };
        event.resources.push(ResourceSpec {
            id: format!("{site}-event-{:02}", n + 1),
            kind: ResourceKind::EventRoom,
            name,
            capacity,
            amenities: vec!["projector".into(), "audio".into(), "wifi".into()],
        });
    }
    zones.push(event);
    let mut parking = ZoneSpec {
        id: format!("{site}-parking"),
        name: "Parcheggio".into(),
        floor: 0,
        resources: Vec::new(),
    };
    for n in 0..ev_bays {
        let power = if n == 0 && size == SiteSize::Large {
            "50kW_dc"
        } else {
            "22kW_ac"
        };
        parking.resources.push(ResourceSpec {
            id: format!("{site}-ev-{:02}", n + 1),
            kind: ResourceKind::EvBay,
            name: format!("Colonnina {}", n + 1),
            capacity: 1,
            amenities: vec!["type2".into(), power.into()],
        });
    }
    zones.push(parking);
    zones
}

/// Splits one line of the shipped CSV, honouring double quotes.
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_network_has_its_shape() {
        let sites = generate(DEFAULT_SEED);
        assert_eq!(sites.len(), 250);
        assert_eq!(sites.iter().filter(|s| s.small_town).count(), 80);
        let regions: HashSet<_> = sites.iter().map(|s| s.region.as_str()).collect();
        assert_eq!(regions.len(), 20);
        let ids: HashSet<_> = sites.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids.len(), 250);
        for size in [SiteSize::Small, SiteSize::Medium, SiteSize::Large] {
            assert!(sites.iter().any(|s| s.size == size));
        }
        let kinds: HashSet<_> = sites
            .iter()
            .flat_map(|s| {
                s.zones
                    .iter()
                    .flat_map(|z| z.resources.iter().map(|r| r.kind))
            })
            .collect();
        assert_eq!(kinds.len(), ResourceKind::ALL.len());
        let roma = sites.iter().find(|s| s.id == "roma").unwrap();
        assert_eq!(roma.istat_code, "058091");
        assert!((roma.latitude - 41.9).abs() < 0.2);
    }

    #[test]
    fn the_same_seed_gives_the_same_network() {
        let a = generate(7);
        let b = generate(7);
        let c = generate(8);
        let sig = |v: &[SiteSpec]| {
            v.iter()
                .map(|s| {
                    format!(
                        "{}{}{:?}{}",
                        s.id,
                        s.address,
                        s.size,
                        s.zones.iter().map(|z| z.resources.len()).sum::<usize>()
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(sig(&a), sig(&b));
        assert_ne!(sig(&a), sig(&c));
    }
}
