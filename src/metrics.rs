//! Prometheus text exposition of the service's own counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Counters of business events that operators watch.
#[derive(Default)]
pub struct Events {
    pub bookings_created: AtomicU64,
    pub booking_conflicts: AtomicU64,
    pub bookings_cancelled: AtomicU64,
    pub logins_failed: AtomicU64,
    pub mails_sent: AtomicU64,
    pub mail_failures: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    pub events: Events,
}

impl Metrics {
    /// Records one request under its route pattern, never its concrete path.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((method.to_string(), route.to_string(), status))
                .or_default() += 1;
        }
        if let Ok(mut h) = self.latency.lock() {
            let h = h.entry(route.to_string()).or_default();
            for (i, b) in BUCKETS.iter().enumerate() {
                if seconds <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        }
    }

    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP spazi_http_requests_total HTTP requests by method, route and status.\n",
        );
        out.push_str("# TYPE spazi_http_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((method, route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "spazi_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        out.push_str("# HELP spazi_http_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE spazi_http_request_duration_seconds histogram\n");
        if let Ok(h) = self.latency.lock() {
            for (route, hist) in h.iter() {
                let route = escape(route);
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "spazi_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {}",
                        hist.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "spazi_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    hist.count
                );
                let _ = writeln!(
                    out,
                    "spazi_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                    hist.sum
                );
                let _ = writeln!(
                    out,
                    "spazi_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    hist.count
                );
            }
        }
        let e = &self.events;
        for (name, help, v) in [
            (
                "spazi_bookings_created_total",
                "Bookings created.",
                &e.bookings_created,
            ),
            (
                "spazi_booking_conflicts_total",
                "Booking attempts refused for overlap.",
                &e.booking_conflicts,
            ),
            (
                "spazi_bookings_cancelled_total",
                "Bookings cancelled.",
                &e.bookings_cancelled,
            ),
            (
                "spazi_logins_failed_total",
                "Failed login attempts.",
                &e.logins_failed,
            ),
            (
                "spazi_mails_sent_total",
                "Emails handed to the mail transport.",
                &e.mails_sent,
            ),
            (
                "spazi_mail_failures_total",
                "Failed attempts to send an email (retried later).",
                &e.mail_failures,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
