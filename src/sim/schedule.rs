//! When each device of a site speaks next: a timer wheel reduced to a binary heap of
//! `(due, order, task)`, with jittered periods so a site's devices spread over their interval
//! instead of speaking together.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::Rng;

/// Shortest period any task gets, however high the rate, ms.
pub const MIN_PERIOD_MS: i64 = 100;
/// A period drifts by up to this share either way at each repetition.
pub const JITTER: f64 = 0.05;

/// A report interval in ms once `rate` (2.0 = twice as often) is applied.
pub fn period_ms(interval_s: f64, rate: f64) -> i64 {
    let rate = if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        1.0
    };
    ((interval_s * 1000.0 / rate).round() as i64).max(MIN_PERIOD_MS)
}

/// A period with its jitter applied.
pub fn jittered(period_ms: i64, rng: &mut impl Rng) -> i64 {
    let f = 1.0 + rng.gen_range(-JITTER..=JITTER);
    ((period_ms as f64 * f).round() as i64).max(1)
}

/// The first time a periodic task is due: anywhere within one period from `now`, so that
/// devices with the same period are spread evenly over it.
pub fn first_due(now_ms: i64, period_ms: i64, rng: &mut impl Rng) -> i64 {
    now_ms + rng.gen_range(0..period_ms.max(1))
}

/// A waiting time drawn from an exponential distribution of `mean_ms` (events of a Poisson
/// process), at least 1 ms.
pub fn exponential_ms(mean_ms: f64, rng: &mut impl Rng) -> i64 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    ((-u.ln() * mean_ms).round() as i64).max(1)
}

/// Tasks ordered by due time; equal times come out in the order they were pushed.
#[derive(Debug)]
pub struct Schedule<T> {
    heap: BinaryHeap<Reverse<(i64, u64, usize)>>,
    tasks: Vec<Option<T>>,
    free: Vec<usize>,
    order: u64,
}

impl<T> Default for Schedule<T> {
    fn default() -> Self {
        Schedule {
            heap: BinaryHeap::new(),
            tasks: Vec::new(),
            free: Vec::new(),
            order: 0,
        }
    }
}

impl<T> Schedule<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, due_ms: i64, task: T) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.tasks[i] = Some(task);
                i
            }
            None => {
                self.tasks.push(Some(task));
                self.tasks.len() - 1
            }
        };
        self.order += 1;
        self.heap.push(Reverse((due_ms, self.order, slot)));
    }

    /// When the earliest task is due.
    pub fn next_due(&self) -> Option<i64> {
        self.heap.peek().map(|Reverse((due, _, _))| *due)
    }

    /// The earliest task if it is due at `now_ms`, with its due time.
    pub fn pop_due(&mut self, now_ms: i64) -> Option<(i64, T)> {
        match self.heap.peek() {
            Some(Reverse((due, _, _))) if *due <= now_ms => {}
            _ => return None,
        }
        let Reverse((due, _, slot)) = self.heap.pop()?;
        let task = self.tasks[slot].take()?;
        self.free.push(slot);
        Some((due, task))
    }
}

/// When a periodic task that was due at `due_ms` runs next: one jittered period later, or soon
/// after `now_ms` if the site has fallen more than a period behind (no burst to catch up).
pub fn next_after(due_ms: i64, now_ms: i64, period_ms: i64, rng: &mut impl Rng) -> i64 {
    let next = due_ms + jittered(period_ms, rng);
    if next <= now_ms {
        now_ms + rng.gen_range(0..(period_ms / 4).max(1))
    } else {
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn rate_divides_every_interval() {
        assert_eq!(period_ms(10.0, 1.0), 10_000);
        assert_eq!(period_ms(60.0, 2.0), 30_000);
        assert_eq!(period_ms(300.0, 50.0), 6_000);
        assert_eq!(period_ms(10.0, 1_000.0), MIN_PERIOD_MS);
        assert_eq!(period_ms(10.0, 0.5), 20_000);
        assert_eq!(period_ms(10.0, f64::NAN), 10_000);
        assert_eq!(period_ms(10.0, -3.0), 10_000);
    }

    #[test]
    fn tasks_come_out_in_due_order_and_only_when_due() {
        let mut s = Schedule::new();
        s.push(30, "c");
        s.push(10, "a");
        s.push(20, "b");
        s.push(10, "a2");
        assert_eq!(s.next_due(), Some(10));
        assert_eq!(s.pop_due(5), None);
        assert_eq!(s.pop_due(10), Some((10, "a")));
        assert_eq!(s.pop_due(10), Some((10, "a2")));
        assert_eq!(s.pop_due(15), None);
        assert_eq!(s.pop_due(100), Some((20, "b")));
        s.push(25, "d");
        assert_eq!(s.pop_due(100), Some((25, "d")));
        assert_eq!(s.pop_due(100), Some((30, "c")));
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn devices_with_one_period_spread_evenly_over_it() {
        let mut rng = StdRng::seed_from_u64(9);
        let period = 10_000;
        let mut s = Schedule::new();
        for d in 0..2_000 {
            s.push(first_due(0, period, &mut rng), d);
        }
        // Run for ten periods and count what falls into each second.
        let mut per_second = vec![0u32; 100];
        while let Some(due) = s.next_due() {
            if due >= 100_000 {
                break;
            }
            let (due, d) = s.pop_due(due).unwrap();
            per_second[(due / 1_000) as usize] += 1;
            s.push(next_after(due, due, period, &mut rng), d);
        }
        let mean = per_second.iter().sum::<u32>() as f64 / 100.0;
        assert!((mean - 200.0).abs() < 5.0, "{mean}");
        for (i, n) in per_second.iter().enumerate() {
            assert!((140..=260).contains(n), "second {i}: {n}");
        }
    }

    #[test]
    fn a_late_site_does_not_burst_to_catch_up() {
        let mut rng = StdRng::seed_from_u64(1);
        let next = next_after(0, 60_000, 10_000, &mut rng);
        assert!((60_000..62_500).contains(&next), "{next}");
        let on_time = next_after(0, 0, 10_000, &mut rng);
        assert!((9_500..=10_500).contains(&on_time));
    }

    #[test]
    fn exponential_waits_have_their_mean() {
        let mut rng = StdRng::seed_from_u64(2);
        let n = 20_000;
        let sum: i64 = (0..n).map(|_| exponential_ms(60_000.0, &mut rng)).sum();
        let mean = sum as f64 / n as f64;
        assert!((mean - 60_000.0).abs() < 2_000.0, "{mean}");
    }
}
