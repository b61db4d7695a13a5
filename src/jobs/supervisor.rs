//! Every background task runs under the supervisor: a failed pass is logged and counted, a task
//! that panics (or returns) is started again after a backoff and counted, and `/readyz` hears of
//! a job that keeps failing (see [`crate::metrics::Jobs`]).

use std::any::Any;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// The first wait before a task that died is started again; it doubles after every death that
/// follows a short run, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A task that ran this long before dying starts again after [`FIRST_BACKOFF`].
const STEADY_RUN: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Supervisor {
    metrics: Arc<Metrics>,
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

impl Supervisor {
    pub fn new(metrics: Arc<Metrics>) -> Supervisor {
        Supervisor { metrics }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs the task `make` builds, and builds and runs it again whenever it panics or returns.
    /// The task reports its passes itself (`metrics.jobs.ok` / `failed`), or runs them through
    /// [`Supervisor::every`].
    pub fn spawn<F, Fut>(&self, job: &'static str, mut make: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let metrics = self.metrics.clone();
        metrics.jobs.register(job);
        tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            loop {
                let started = Instant::now();
                let why = match tokio::spawn(make()).await {
                    Ok(()) => "the task returned".to_owned(),
                    Err(e) if e.is_panic() => panic_message(e.into_panic().as_ref()),
                    // Cancelled: the runtime is shutting down.
                    Err(_) => return,
                };
                if started.elapsed() >= STEADY_RUN {
                    backoff = FIRST_BACKOFF;
                }
                metrics.jobs.restarted(job, &why);
                tracing::error!(job, reason = %why, restart_in_ms = backoff.as_millis() as u64, "background job died; restarting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }

    /// Runs `pass` every `period` (the first one at once), reporting each outcome; restarted as
    /// [`Supervisor::spawn`] does.
    pub fn every<F, Fut, E>(&self, job: &'static str, period: Duration, pass: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        self.periodic(job, period, false, pass)
    }

    /// As [`Supervisor::every`], the first pass one `period` after the start.
    pub fn every_later<F, Fut, E>(&self, job: &'static str, period: Duration, pass: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        self.periodic(job, period, true, pass)
    }

    fn periodic<F, Fut, E>(&self, job: &'static str, period: Duration, wait_first: bool, pass: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let pass = Arc::new(pass);
        let metrics = self.metrics.clone();
        self.spawn(job, move || {
            let (pass, metrics) = (pass.clone(), metrics.clone());
            async move {
                if wait_first {
                    tokio::time::sleep(period).await;
                }
                loop {
                    let outcome = pass().await;
                    metrics.jobs.report(job, outcome);
                    tokio::time::sleep(period).await;
                }
            }
        });
    }
}
