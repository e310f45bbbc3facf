//! The scheduler: a server task that runs rotations when they are due and purges secrets
//! whose recovery window has ended.
//!
//! It sleeps until the earliest persisted next-rotation time (the store's index, so no scan),
//! at most `max_sleep` (five minutes by default, so a changed wall clock or a purge date is
//! noticed), or until [`Rotations::wake_scheduler`](super::Rotations::wake_scheduler) rings
//! (`RotateSecret` changed a schedule). Each wake-up it:
//!
//! 1. deletes for good the secrets past their recovery window;
//! 2. runs every rotation due at or before now, oldest first, one at a time (a rotation
//!    talks to databases and commands; running them in sequence keeps a burst of due secrets
//!    from opening a burst of connections). Failures are recorded and rescheduled by
//!    [`rotate_secret`] with backoff.
//!
//! While the store is sealed the scheduler does nothing and looks again every
//! `sealed_poll` (one second): it starts working after an unseal and stops on a seal without
//! being told. Its first pass after an unseal (and so after a start) finds every rotation
//! whose time passed while arca was down or sealed and runs it: missed rotations are caught
//! up, not skipped. [`Scheduler::shutdown`] lets the rotation under way finish (30 s at most)
//! and stops the task.
//!
//! Times come from a [`Clock`]: the system clock in the server, or one that follows tokio's
//! (pausable) clock in tests, so a day of schedule runs in milliseconds under
//! `tokio::time::pause`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{RotationOutcome, rotate_secret, unix_now};
use crate::handle::Arca;
use crate::lifecycle::SecretsError;

/// Unix seconds for the scheduler.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

impl Clock {
    /// The system's wall clock.
    #[must_use]
    pub fn system() -> Self {
        Self(Arc::new(unix_now))
    }

    /// `start` plus the time tokio's clock has advanced since this call: with
    /// `tokio::time::pause`, time moves only as the runtime advances it.
    #[must_use]
    pub fn tokio_from(start: u64) -> Self {
        let origin = tokio::time::Instant::now();
        Self(Arc::new(move || start + origin.elapsed().as_secs()))
    }

    /// Now, in unix seconds.
    #[must_use]
    pub fn now(&self) -> u64 {
        (self.0)()
    }
}

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Where times come from.
    pub clock: Clock,
    /// The longest sleep between passes.
    pub max_sleep: Duration,
    /// How often a sealed store is looked at again.
    pub sealed_poll: Duration,
    /// Due rotations read per batch.
    pub batch: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            clock: Clock::system(),
            max_sleep: Duration::from_secs(300),
            sealed_poll: Duration::from_secs(1),
            batch: 32,
        }
    }
}

/// The running scheduler task.
#[derive(Debug)]
pub struct Scheduler {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Scheduler {
    /// Starts the scheduler of `arca` with the system clock.
    #[must_use]
    pub fn start(arca: Arc<Arca>) -> Self {
        Self::start_with(arca, SchedulerOptions::default())
    }

    /// Starts the scheduler with `options`.
    #[must_use]
    pub fn start_with(arca: Arc<Arca>, options: SchedulerOptions) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(arca, options, stopped));
        Self { stop, task }
    }

    /// Stops the task after the rotation under way (30 s at most, then it is aborted).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(30), &mut task)
            .await
            .is_err()
        {
            tracing::warn!(
                "a rotation was still running at shutdown; it resumes at the next start"
            );
            task.abort();
        }
    }
}

async fn run(arca: Arc<Arca>, options: SchedulerOptions, mut stop: watch::Receiver<bool>) {
    let mut sealed = true;
    let mut idle = Duration::from_secs(1);
    loop {
        if *stop.borrow() {
            return;
        }
        if arca.barrier().is_sealed() {
            sealed = true;
            tokio::select! {
                () = tokio::time::sleep(options.sealed_poll) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        if sealed {
            tracing::info!("rotation scheduler active: running rotations that came due");
            sealed = false;
        }
        let now = options.clock.now();
        purge(&arca, now).await;
        let rotated = run_due(&arca, &options, now, &stop).await;
        let next = match arca.secrets().next_rotation_due().await {
            Ok(next) => next,
            Err(SecretsError::Sealed) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the next rotation time");
                None
            }
        };
        let now = options.clock.now();
        let wait = match next {
            Some(due) if due > now => {
                idle = Duration::from_secs(1);
                Duration::from_secs(due - now).min(options.max_sleep)
            }
            // Still due after a pass: a rotation running on request, or one that cannot be
            // started. Look again, less and less often while nothing moves.
            Some(_) => {
                if rotated > 0 {
                    idle = Duration::from_secs(1);
                } else {
                    idle = (idle * 2).min(options.max_sleep);
                }
                idle
            }
            None => options.max_sleep,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = arca.rotations().woken() => {}
            _ = stop.changed() => {}
        }
    }
}

async fn purge(arca: &Arca, now: u64) {
    match arca.secrets().purge_deleted(now).await {
        Ok(0) | Err(SecretsError::Sealed) => {}
        Ok(n) => tracing::info!(purged = n, "secrets past their recovery window deleted"),
        Err(err) => tracing::warn!(error = %err, "purging deleted secrets failed"),
    }
}

/// Runs the rotations due at `now`; returns how many finished.
async fn run_due(
    arca: &Arca,
    options: &SchedulerOptions,
    now: u64,
    stop: &watch::Receiver<bool>,
) -> usize {
    let due = match arca.secrets().due_rotations(now, options.batch).await {
        Ok(due) => due,
        Err(SecretsError::Sealed) => return 0,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the due rotations");
            return 0;
        }
    };
    let mut rotated = 0;
    for entry in due {
        if *stop.borrow() {
            break;
        }
        match rotate_secret(arca, &entry.region, &entry.arn, None, options.clock.now()).await {
            Ok(_) => rotated += 1,
            Err(RotationOutcome::Failed { .. }) => {}
            Err(RotationOutcome::Refused(err)) => {
                tracing::debug!(secret = %entry.arn, error = %err, "scheduled rotation not started");
            }
        }
    }
    rotated
}
