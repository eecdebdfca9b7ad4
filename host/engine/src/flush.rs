//! Group commit: one fsync serves every write that was applied before it
//! started.
//!
//! A writer applies its batch, takes a ticket, then queues for the flush
//! lock (FIFO). Whoever holds it either finds its ticket already covered by
//! a finished flush, or runs the next `sled::Db::flush` on behalf of every
//! ticket issued so far. Writers that arrive while an fsync is in flight
//! thus share the next one. No background task outlives the queue (it would
//! hold sled's file lock).
//!
//! (A first version woke waiters with a broadcast and let them race for
//! leadership with `try_lock`; a waiter woken while the previous leader still
//! held the lock could sleep forever. Queueing on the lock itself cannot.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long a flush may take before another one is started to wake it
/// (see `flush_nudged`); far above a healthy fsync.
const NUDGE_AFTER: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(crate) struct GroupCommit {
    db: sled::Db,
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
    pub(crate) fn new(db: sled::Db) -> Self {
        Self {
            db,
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
                Ok(Ok(_)) => {
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

    /// `sled::Db::flush` on a blocking thread. sled 0.34 can miss the
    /// wakeup of a flush waiting for an I/O buffer whose write failed (a
    /// full disk): that flush would wait forever, holding the database
    /// open. Another flush finds the failure and wakes every waiter, so
    /// one is started whenever the first has taken a while.
    async fn flush_nudged(&self) -> Result<Result<usize, sled::Error>, tokio::task::JoinError> {
        let db = self.db.clone();
        let mut flushing = tokio::task::spawn_blocking(move || db.flush());
        let mut nudge: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            match tokio::time::timeout(NUDGE_AFTER, &mut flushing).await {
                Ok(outcome) => return outcome,
                Err(_) => {
                    if nudge.as_ref().is_none_or(|n| n.is_finished()) {
                        let db = self.db.clone();
                        nudge = Some(tokio::task::spawn_blocking(move || {
                            let _ = db.flush();
                        }));
                    }
                }
            }
        }
    }

    /// How many fsyncs have run (each may serve many writers).
    pub(crate) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}
