//! Group commit: one fsync serves every write that was applied before it
//! started.
//!
//! A writer applies its batch, takes a ticket, then queues for the flush
//! lock (FIFO). Whoever holds it either finds its ticket already covered by
//! a finished flush, or runs the next flush (sled's, or an fsync of the
//! event segments) on behalf of every
//! ticket issued so far. Writers that arrive while an fsync is in flight
//! thus share the next one. No background task outlives the queue (it would
//! hold sled's file lock).
//!
//! (A first version woke waiters with a broadcast and let them race for
//! leadership with `try_lock`; a waiter woken while the previous leader still
//! held the lock could sleep forever. Queueing on the lock itself cannot.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long a flush may take before another one is started to wake it
/// (see `flush_nudged`); far above a healthy fsync.
const NUDGE_AFTER: Duration = Duration::from_millis(500);

type Flush = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

pub(crate) struct GroupCommit {
    flush: Flush,
    issued: AtomicU64,
    state: Mutex<FlushState>,
    flushes: AtomicU64,
}

#[derive(Debug, Default)]
struct FlushState {
    /// Highest ticket covered by a flush that was attempted.
    attempted_through: u64,
    /// Highest ticket covered by a flush that succeeded.
    durable_through: u64,
    /// Why the last attempted flush failed, if it did.
    last_error: Option<String>,
}

impl GroupCommit {
    /// Group commits of `flush`, which must make durable everything
    /// written before it was called.
    pub(crate) fn new(flush: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Self {
        Self {
            flush: Arc::new(flush),
            issued: AtomicU64::new(0),
            state: Mutex::new(FlushState::default()),
            flushes: AtomicU64::new(0),
        }
    }

    /// Wait until everything applied before this call is on disk; returns
    /// how long that took.
    pub(crate) async fn durable(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let ticket = self.issued.fetch_add(1, Ordering::AcqRel) + 1;
        let mut state = self.state.lock().await;
        if state.durable_through >= ticket {
            return Ok(started.elapsed());
        }
        if state.attempted_through < ticket {
            let covered = self.issued.load(Ordering::Acquire);
            let outcome = self.flush_nudged().await;
            self.flushes.fetch_add(1, Ordering::Relaxed);
            state.attempted_through = covered;
            state.last_error = match outcome {
                Ok(Ok(())) => {
                    state.durable_through = covered;
                    None
                }
                Ok(Err(err)) => Some(format!("fsync failed: {err}")),
                Err(err) => Some(format!("fsync task failed: {err}")),
            };
            if state.durable_through >= ticket {
                return Ok(started.elapsed());
            }
        }
        // The flush that covered this ticket failed.
        Err(state
            .last_error
            .clone()
            .unwrap_or_else(|| "fsync failed".to_owned()))
    }

    /// The flush on a blocking thread. sled 0.34 can miss the wakeup of a
    /// flush waiting for an I/O buffer whose write failed (a full disk):
    /// that flush would wait forever, holding the database open. Another
    /// flush finds the failure and wakes every waiter, so one is started
    /// whenever the first has taken a while (harmless for an fsync).
    ///
    /// The nudge's outcome counts: Linux reports a failed writeback to one
    /// fsync only, so if the nudge got the error the first flush may see
    /// none, and reporting success then would call lost writes durable.
    async fn flush_nudged(&self) -> Result<Result<(), String>, tokio::task::JoinError> {
        let flush = self.flush.clone();
        let mut flushing = tokio::task::spawn_blocking(move || flush());
        let mut nudges: Vec<tokio::task::JoinHandle<Result<(), String>>> = Vec::new();
        let outcome = loop {
            match tokio::time::timeout(NUDGE_AFTER, &mut flushing).await {
                Ok(outcome) => break outcome,
                Err(_) => {
                    if nudges.last().is_none_or(|n| n.is_finished()) {
                        let flush = self.flush.clone();
                        nudges.push(tokio::task::spawn_blocking(move || flush()));
                    }
                }
            }
        };
        for nudge in nudges {
            match tokio::time::timeout(NUDGE_AFTER, nudge).await {
                Ok(Ok(Err(err))) => {
                    tracing::warn!("a second flush, started to wake a slow one, failed: {err}");
                    return Ok(Err(err));
                }
                Ok(Err(err)) => return Ok(Err(format!("flush task failed: {err}"))),
                Ok(Ok(Ok(()))) => {}
                // Still stuck where the first one was: it reports nothing
                // that the first did not.
                Err(_) => {}
            }
        }
        outcome
    }

    /// How many flushes have run (each may serve many writers).
    pub(crate) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("flushes", &self.flushes())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The first flush is slow and then reports success; the nudge started
    /// meanwhile gets the error (as Linux reports a failed writeback to one
    /// fsync only). The writer is told its write failed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_nudge_fails_the_flush_it_nudged() {
        let calls = Arc::new(AtomicU64::new(0));
        let counted = calls.clone();
        let commit = GroupCommit::new(move || {
            if counted.fetch_add(1, Ordering::AcqRel) == 0 {
                std::thread::sleep(NUDGE_AFTER + Duration::from_millis(300));
                Ok(())
            } else {
                Err("EIO".to_owned())
            }
        });
        let outcome = commit.durable().await;
        assert!(calls.load(Ordering::Acquire) >= 2, "no nudge was started");
        assert_eq!(outcome.unwrap_err(), "fsync failed: EIO");
    }
}
