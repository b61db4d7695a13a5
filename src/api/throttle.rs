//! Slows password guessing: after too many failed logins for one address, refuse for a while.
//! Unknown addresses are counted the same way, so the limit reveals nothing about accounts.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: usize = 10;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginThrottle {
    /// `Err(seconds)` to wait when `email` has failed too often within the window.
    pub fn check(&self, email: &str, now: Instant) -> Result<(), u64> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let Some(times) = map.get_mut(email) else {
            return Ok(());
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) > WINDOW)
        {
            times.pop_front();
        }
        if times.len() < MAX_FAILURES {
            return Ok(());
        }
        let oldest = times.front().copied().unwrap_or(now);
        Err(WINDOW
            .saturating_sub(now.duration_since(oldest))
            .as_secs()
            .max(1))
    }

    pub fn record_failure(&self, email: &str, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) <= WINDOW)
            });
        }
        let times = map.entry(email.to_string()).or_default();
        times.push_back(now);
        if times.len() > MAX_FAILURES {
            times.pop_front();
        }
    }

    pub fn record_success(&self, email: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(email);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_limit_and_forgives_after_the_window() {
        let t = LoginThrottle::default();
        let start = Instant::now();
        for i in 0..MAX_FAILURES {
            assert!(t.check("a@x.it", start).is_ok(), "attempt {i}");
            t.record_failure("a@x.it", start);
        }
        let wait = t.check("a@x.it", start).unwrap_err();
        assert!(wait > 800 && wait <= 900, "{wait}");
        assert!(t.check("b@x.it", start).is_ok());
        assert!(t
            .check("a@x.it", start + WINDOW + Duration::from_secs(1))
            .is_ok());
        t.record_success("a@x.it");
        assert!(t.check("a@x.it", start).is_ok());
    }
}
