//! Prometheus text exposition of the service's own counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

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

/// Counters of the telemetry pipeline.
#[derive(Default)]
pub struct Telemetry {
    /// MQTT messages handed to the pipeline.
    pub received: AtomicU64,
    /// Readings rows written (duplicates excluded).
    pub readings_stored: AtomicU64,
    /// Device events written (duplicates excluded).
    pub events_stored: AtomicU64,
    /// Rows already stored (QoS 1 redeliveries, retransmissions), absorbed.
    pub duplicates: AtomicU64,
    /// Refused messages by reason, in `domain::telemetry::Reject::ALL` order.
    pub rejected: [AtomicU64; 9],
    pub batches: AtomicU64,
    pub batch_failures: AtomicU64,
    pub reconnects: AtomicU64,
    /// 1 while connected to the broker.
    pub connected: AtomicU64,
    /// Messages read from the broker and not yet taken by the writer.
    pub queued: AtomicU64,
    /// Messages dropped unacknowledged because the writer's queue was full (delivered again).
    pub queue_full: AtomicU64,
    /// Commit time minus the device timestamp of the last batch's newest message, in ms.
    pub lag_ms: AtomicU64,
    pub alarms_raised: AtomicU64,
    pub alarms_cleared: AtomicU64,
}

/// Counters of access control and the building's response to bookings.
#[derive(Default)]
pub struct Access {
    pub granted: AtomicU64,
    pub denied: AtomicU64,
    /// Bookings checked in by a door or a presence sensor.
    pub checked_in: AtomicU64,
    /// No-shows released.
    pub released: AtomicU64,
    pub climate_commands: AtomicU64,
    /// Charger current limits sent by smart charging.
    pub charge_limits: AtomicU64,
    /// Access-log rows the database refused for good (logged and skipped).
    pub log_refused: AtomicU64,
    /// Decisions, check-ins or reload notices not queued because the door writer's queue was full.
    pub after_queue_full: AtomicU64,
    /// Badge received to answer queued, microseconds, by `DECISION_BUCKETS_US`.
    decision_us: [AtomicU64; 8],
    decision_us_sum: AtomicU64,
}

const DECISION_BUCKETS_US: [u64; 8] = [50, 100, 250, 500, 1_000, 2_500, 10_000, 100_000];

impl Access {
    pub fn observe_latency_us(&self, us: i64) {
        let us = us.max(0) as u64;
        for (i, b) in DECISION_BUCKETS_US.iter().enumerate() {
            if us <= *b {
                self.decision_us[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.decision_us_sum.fetch_add(us, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        for (name, help, v) in [
            (
                "spazi_access_granted_total",
                "Badge scans that unlocked a door.",
                &self.granted,
            ),
            (
                "spazi_access_denied_total",
                "Badge scans denied.",
                &self.denied,
            ),
            (
                "spazi_access_checked_in_total",
                "Bookings checked in by a door or a presence sensor.",
                &self.checked_in,
            ),
            (
                "spazi_bookings_released_total",
                "No-show bookings released.",
                &self.released,
            ),
            (
                "spazi_climate_commands_total",
                "Zone climate commands sent.",
                &self.climate_commands,
            ),
            (
                "spazi_charge_limit_commands_total",
                "Charger current limits sent by smart charging.",
                &self.charge_limits,
            ),
            (
                "spazi_access_log_refused_total",
                "Access-log rows the database refused for good, logged and skipped.",
                &self.log_refused,
            ),
            (
                "spazi_access_queue_full_total",
                "Door decisions, check-ins or grant notices dropped because the writer's queue was full.",
                &self.after_queue_full,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let name = "spazi_access_decision_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Badge received to answer queued.\n# TYPE {name} histogram"
        );
        for (i, b) in DECISION_BUCKETS_US.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {}",
                *b as f64 / 1e6,
                self.decision_us[i].load(Ordering::Relaxed)
            );
        }
        let count = self.granted.load(Ordering::Relaxed) + self.denied.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {count}",
            self.decision_us_sum.load(Ordering::Relaxed) as f64 / 1e6
        );
    }
}

/// A job is reported failing by `/readyz` after this many failed passes (or deaths) in a row.
pub const FAILING_AFTER: u32 = 3;

#[derive(Default)]
struct JobState {
    failures: u64,
    restarts: u64,
    /// Failed passes and deaths since the last good pass.
    in_a_row: u32,
    last_ok: Option<Instant>,
    last_error: Option<String>,
}

/// The background jobs' health: counted for `/metrics`, judged for `/readyz`.
#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<BTreeMap<&'static str, JobState>>,
}

/// A job `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailingJob {
    pub job: &'static str,
    pub in_a_row: u32,
    pub last_error: String,
    /// Seconds since its last good pass, if it ever had one.
    pub since_ok_secs: Option<u64>,
}

impl Jobs {
    fn with(&self, job: &'static str, f: impl FnOnce(&mut JobState)) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        f(jobs.entry(job).or_default());
    }

    /// Makes a job known (so its counters show at zero).
    pub fn register(&self, job: &'static str) {
        self.with(job, |_| {});
    }

    pub fn ok(&self, job: &'static str) {
        self.with(job, |s| {
            s.in_a_row = 0;
            s.last_ok = Some(Instant::now());
        });
    }

    /// Counts a failed pass and logs it.
    pub fn failed(&self, job: &'static str, error: &dyn std::fmt::Display) {
        let text = error.to_string();
        tracing::warn!(job, error = %text, "background job pass failed");
        self.with(job, |s| {
            s.failures += 1;
            s.in_a_row = s.in_a_row.saturating_add(1);
            s.last_error = Some(text);
        });
    }

    pub fn report<E: std::fmt::Display>(&self, job: &'static str, outcome: Result<(), E>) {
        match outcome {
            Ok(()) => self.ok(job),
            Err(e) => self.failed(job, &e),
        }
    }

    /// Counts a task that died and is started again.
    pub fn restarted(&self, job: &'static str, why: &str) {
        self.with(job, |s| {
            s.restarts += 1;
            s.in_a_row = s.in_a_row.saturating_add(1);
            s.last_error = Some(format!("died: {why}"));
        });
    }

    /// Jobs with at least [`FAILING_AFTER`] failed passes or deaths since their last good pass.
    pub fn failing(&self) -> Vec<FailingJob> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.iter()
            .filter(|(_, s)| s.in_a_row >= FAILING_AFTER)
            .map(|(job, s)| FailingJob {
                job,
                in_a_row: s.in_a_row,
                last_error: s.last_error.clone().unwrap_or_default(),
                since_ok_secs: s.last_ok.map(|t| t.elapsed().as_secs()),
            })
            .collect()
    }

    fn render(&self, out: &mut String) {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        for (name, help, value) in [
            (
                "spazi_job_failures_total",
                "Failed passes of a background job.",
                (|s: &JobState| s.failures) as fn(&JobState) -> u64,
            ),
            (
                "spazi_job_restarts_total",
                "Background job tasks that died (panicked) and were started again.",
                |s: &JobState| s.restarts,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (job, s) in jobs.iter() {
                let _ = writeln!(out, "{name}{{job=\"{job}\"}} {}", value(s));
            }
        }
        let name = "spazi_job_failing";
        let _ = writeln!(
            out,
            "# HELP {name} 1 while a job has failed {FAILING_AFTER} or more passes in a row.\n# TYPE {name} gauge"
        );
        for (job, s) in jobs.iter() {
            let _ = writeln!(
                out,
                "{name}{{job=\"{job}\"}} {}",
                u8::from(s.in_a_row >= FAILING_AFTER)
            );
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    pub events: Events,
    pub telemetry: Telemetry,
    pub access: Access,
    pub jobs: Jobs,
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
        let t = &self.telemetry;
        out.push_str("# HELP spazi_telemetry_rejected_total MQTT messages refused, by reason.\n");
        out.push_str("# TYPE spazi_telemetry_rejected_total counter\n");
        for (reason, n) in crate::domain::telemetry::Reject::ALL
            .iter()
            .zip(&t.rejected)
        {
            let _ = writeln!(
                out,
                "spazi_telemetry_rejected_total{{reason=\"{}\"}} {}",
                reason.label(),
                n.load(Ordering::Relaxed)
            );
        }
        for (name, help, kind, v) in [
            (
                "spazi_telemetry_received_total",
                "MQTT messages received by the ingest pipeline.",
                "counter",
                &t.received,
            ),
            (
                "spazi_telemetry_readings_stored_total",
                "Readings written to storage.",
                "counter",
                &t.readings_stored,
            ),
            (
                "spazi_telemetry_events_stored_total",
                "Device events written to storage.",
                "counter",
                &t.events_stored,
            ),
            (
                "spazi_telemetry_duplicate_rows_total",
                "Rows already stored (redelivered messages), absorbed.",
                "counter",
                &t.duplicates,
            ),
            (
                "spazi_telemetry_batches_total",
                "Batches committed.",
                "counter",
                &t.batches,
            ),
            (
                "spazi_telemetry_batch_failures_total",
                "Batch commits that failed and were retried.",
                "counter",
                &t.batch_failures,
            ),
            (
                "spazi_telemetry_reconnects_total",
                "Connections to the broker after the first.",
                "counter",
                &t.reconnects,
            ),
            (
                "spazi_telemetry_connected",
                "1 while the ingest consumer is connected to the broker.",
                "gauge",
                &t.connected,
            ),
            (
                "spazi_telemetry_queued",
                "Messages read from the broker and waiting for the writer.",
                "gauge",
                &t.queued,
            ),
            (
                "spazi_telemetry_queue_full_total",
                "Messages dropped unacknowledged because the writer's queue was full; the broker delivers them again after a reconnect.",
                "counter",
                &t.queue_full,
            ),
            (
                "spazi_telemetry_lag_milliseconds",
                "Commit time minus device time of the last batch's newest message.",
                "gauge",
                &t.lag_ms,
            ),
            (
                "spazi_alarms_raised_total",
                "Alarms raised.",
                "counter",
                &t.alarms_raised,
            ),
            (
                "spazi_alarms_cleared_total",
                "Alarms cleared.",
                "counter",
                &t.alarms_cleared,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        self.access.render(&mut out);
        self.jobs.render(&mut out);
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
