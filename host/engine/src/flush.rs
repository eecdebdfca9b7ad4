//! Group commit: one fsync serves every write that was applied before it
//! started.
//!
//! A writer applies its batch, takes a ticket, and waits until a flush that
//! started after its ticket was issued has finished. Whichever waiter finds
//! no flush in flight becomes the leader and runs the next `sled::Db::flush`
//! for everybody who holds a ticket by then; the others wait for it. So
//! writers arriving while an fsync is in flight share the next one, and no
//! background task outlives the queue (it would hold sled's file lock).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, watch};

#[derive(Debug)]
pub(crate) struct GroupCommit {
    db: sled::Db,
    issued: AtomicU64,
    leader: Mutex<()>,
    done: watch::Sender<Flushed>,
}

/// What the last finished flush covered.
#[derive(Debug, Clone, Default)]
struct Flushed {
    through_ticket: u64,
    /// Set when that flush failed; the writers it covered get the error.
    error: Option<String>,
    flushes: u64,
}

impl GroupCommit {
    pub(crate) fn new(db: sled::Db) -> Self {
        Self {
            db,
            issued: AtomicU64::new(0),
            leader: Mutex::new(()),
            done: watch::channel(Flushed::default()).0,
        }
    }

    /// Wait until everything applied before this call is on disk; returns
    /// how long that took.
    pub(crate) async fn durable(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let ticket = self.issued.fetch_add(1, Ordering::AcqRel) + 1;
        let mut done = self.done.subscribe();
        loop {
            {
                let flushed = done.borrow_and_update();
                if flushed.through_ticket >= ticket {
                    return match &flushed.error {
                        None => Ok(started.elapsed()),
                        Some(err) => Err(err.clone()),
                    };
                }
            }
            if let Ok(_leader) = self.leader.try_lock() {
                self.flush_as_leader().await;
                continue;
            }
            if done.changed().await.is_err() {
                return Err("the queue was closed".to_owned());
            }
        }
    }

    async fn flush_as_leader(&self) {
        let covered = self.issued.load(Ordering::Acquire);
        if self.done.borrow().through_ticket >= covered {
            return;
        }
        let db = self.db.clone();
        let error = match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(Ok(_)) => None,
            Ok(Err(err)) => Some(format!("fsync failed: {err}")),
            Err(err) => Some(format!("fsync task failed: {err}")),
        };
        self.done.send_modify(|flushed| {
            flushed.through_ticket = covered;
            flushed.error = error;
            flushed.flushes += 1;
        });
    }

    /// How many fsyncs have run (each may serve many writers).
    pub(crate) fn flushes(&self) -> u64 {
        self.done.borrow().flushes
    }
}
