//! People and the presence sensors: who sits where, following the real bookings when the
//! simulator reads a database (arriving a few minutes late, taking breaks, a rare ghost without a
//! booking) or else the opening hours; a sensor reports when what it sees changes.

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::json;

use super::model::presence_step;
use super::site::{Outgoing, SiteSim};
use crate::domain::ResourceKind;

/// The resources with an active booking, as last read from the database.
#[derive(Debug, Clone, Default)]
pub struct Bookings {
    pub resources: HashSet<String>,
}

#[derive(Debug)]
pub(super) struct Presence {
    pub(super) device: usize,
    pub(super) zone: Option<usize>,
    pub(super) kind: ResourceKind,
    pub(super) capacity: u32,
    pub(super) resource: String,
    pub(super) occupied: bool,
    pub(super) count: u32,
    pub(super) booked: Option<Booked>,
    pub(super) ghost_until: i64,
}

/// A booking followed by a presence sensor: the person arrives a few minutes after it starts
/// and takes a break now and then.
#[derive(Debug, Clone, Copy)]
pub(super) struct Booked {
    pub(super) arrive_ms: i64,
    pub(super) next_break_ms: i64,
    pub(super) break_until_ms: i64,
}

impl SiteSim {
    pub(super) fn presence_message(&mut self, p: usize, now: i64, out: &mut Vec<Outgoing>) {
        let pr = &self.presences[p];
        let m = if pr.kind == ResourceKind::Desk {
            json!({"occupied": pr.occupied})
        } else {
            json!({"occupied": pr.occupied, "count": if pr.occupied { pr.count } else { 0 }})
        };
        let device = pr.device;
        self.envelope(device, "tele/presence", now, m, out);
    }

    /// People sit down and leave, following the bookings when the simulator has them (or the
    /// opening hours); each presence sensor whose reading changed reports it.
    pub(super) fn people_move(
        &mut self,
        now: i64,
        activity: f64,
        first: bool,
        dt_s: f64,
        bookings: Option<&Bookings>,
        out: &mut Vec<Outgoing>,
    ) {
        let first_bookings = bookings.is_some() && !self.bookings_seen;
        if bookings.is_some() {
            self.bookings_seen = true;
        }
        for p in 0..self.presences.len() {
            let before = (self.presences[p].occupied, self.presences[p].count);
            let u: f64 = self.rng.gen();
            let pr = &mut self.presences[p];
            let target = activity * base_occupancy(pr.kind);
            match bookings {
                Some(b) => {
                    let active = b.resources.contains(&pr.resource);
                    follow_booking(
                        pr,
                        active,
                        now,
                        first_bookings,
                        activity,
                        dt_s,
                        u,
                        &mut self.rng,
                    );
                }
                None if first => pr.occupied = u < target,
                None => {
                    let stay = mean_stay_s(pr.kind);
                    // After closing, people leave within a quarter of an hour or so.
                    let stay = if activity == 0.0 {
                        stay.min(900.0)
                    } else {
                        stay
                    };
                    pr.occupied = presence_step(pr.occupied, target, stay, dt_s, u);
                }
            }
            if pr.occupied && !before.0 {
                pr.count = people_in(pr.kind, pr.capacity, &mut self.rng);
            }
            if !pr.occupied {
                pr.count = 0;
            }
            if !first && (pr.occupied, pr.count) != before {
                self.presence_message(p, now, out);
            }
        }
    }

    /// People in each zone by its presence sensors (one per occupied resource that counts none).
    pub(super) fn people_by_zone(&self) -> Vec<f64> {
        let mut people = vec![0.0; self.zones.len()];
        for pr in &self.presences {
            if let (Some(z), true) = (pr.zone, pr.occupied) {
                people[z] += f64::from(pr.count.max(1));
            }
        }
        people
    }
}

/// The share of the busiest hour a resource of this kind is occupied, without bookings.
fn base_occupancy(kind: ResourceKind) -> f64 {
    match kind {
        ResourceKind::Desk => 0.6,
        ResourceKind::MeetingRoom => 0.4,
        ResourceKind::Office => 0.7,
        ResourceKind::EventRoom => 0.15,
        ResourceKind::EvBay => 0.0,
    }
}

/// How long people stay once they sit down, on average, s.
fn mean_stay_s(kind: ResourceKind) -> f64 {
    match kind {
        ResourceKind::Desk => 100.0 * 60.0,
        ResourceKind::MeetingRoom => 50.0 * 60.0,
        ResourceKind::Office => 150.0 * 60.0,
        ResourceKind::EventRoom => 120.0 * 60.0,
        ResourceKind::EvBay => 60.0,
    }
}

/// How many people are in a resource that just became occupied.
fn people_in(kind: ResourceKind, capacity: u32, rng: &mut StdRng) -> u32 {
    let cap = capacity.max(1);
    match kind {
        ResourceKind::Desk | ResourceKind::EvBay => 1,
        ResourceKind::EventRoom => rng.gen_range((cap * 3 / 10).max(1)..=cap),
        ResourceKind::MeetingRoom => rng.gen_range(1..=(cap * 8 / 10).max(1)),
        ResourceKind::Office => rng.gen_range(1..=cap),
    }
}

/// Presence for a resource with a booking (`active`): occupied from a few minutes after the
/// booking is first seen, except during breaks; without one, only a rare ghost (someone
/// sitting down for a few minutes without booking).
#[allow(clippy::too_many_arguments)]
fn follow_booking(
    pr: &mut Presence,
    active: bool,
    now: i64,
    first_bookings: bool,
    activity: f64,
    dt_s: f64,
    u: f64,
    rng: &mut StdRng,
) {
    if active {
        let b = pr.booked.get_or_insert_with(|| {
            let delay = if first_bookings {
                0
            } else {
                rng.gen_range(2 * 60_000..10 * 60_000)
            };
            Booked {
                arrive_ms: now + delay,
                next_break_ms: now + delay + rng.gen_range(60 * 60_000..120 * 60_000),
                break_until_ms: 0,
            }
        });
        if now >= b.next_break_ms {
            b.break_until_ms = b.next_break_ms + rng.gen_range(8 * 60_000..15 * 60_000);
            b.next_break_ms = b.break_until_ms + rng.gen_range(90 * 60_000..150 * 60_000);
        }
        pr.occupied = now >= b.arrive_ms && now >= b.break_until_ms;
        return;
    }
    pr.booked = None;
    if now < pr.ghost_until {
        pr.occupied = true;
        return;
    }
    let mean_gap_s = if activity > 0.0 {
        8.0 * 3_600.0
    } else {
        72.0 * 3_600.0
    };
    if u < 1.0 - (-dt_s / mean_gap_s).exp() {
        pr.ghost_until = now + rng.gen_range(3 * 60_000..10 * 60_000);
        pr.occupied = true;
    } else {
        pr.occupied = false;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::site::testing::{cfg, drive, site, value};
    use super::super::site::{Place, SiteSim};
    use super::*;
    use crate::domain::devices::site_devices;
    use crate::domain::telemetry::Metric;

    #[test]
    fn presence_follows_the_bookings() {
        let spec = site("roma");
        let start = 1_781_676_000_000; // 17 June 2026 08:00 in Rome
        let devices = site_devices(&spec);
        let mut sim = SiteSim::new(Place::from_site(&spec), devices, cfg(false, 1.0), start);
        let booked: HashSet<String> = ["roma-desk-001", "roma-room-01"].map(String::from).into();
        let bookings = Bookings { resources: booked };
        let all = drive(&mut sim, start, 3, Some(&bookings));
        let occupied_share = |device: &str| {
            let vals: Vec<f64> = all
                .iter()
                .filter(|(o, _)| o.topic.contains(&format!("/{device}/tele/presence")))
                .filter_map(|(_, d)| value(d.as_ref()?, Metric::Occupied))
                .collect();
            (
                vals.iter().sum::<f64>() / vals.len().max(1) as f64,
                vals.len(),
            )
        };
        let (desk, n) = occupied_share("roma-desk-001-pres");
        assert!(n >= 30 && desk > 0.75, "{desk} over {n}");
        let (room, _) = occupied_share("roma-room-01-pres");
        assert!(room > 0.75, "{room}");
        // Unbooked desks are nearly always free.
        let free: f64 = (2..40)
            .map(|n| occupied_share(&format!("roma-desk-{n:03}-pres")).0)
            .sum::<f64>()
            / 38.0;
        assert!(free < 0.1, "{free}");
    }
}
