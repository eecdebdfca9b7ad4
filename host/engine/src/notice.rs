//! The engine's sink for safd's numbered events (`safd_connector::Notice`):
//! every failover step, catch-up decision and queue condition, and (under
//! `safd run`) the plugin runtime's events, which the daemon points at it.
//!
//! A notice is logged through `tracing` at the moment it arrives (with its
//! `event_id`), kept in a short history for the status API, and injected
//! into the built-in `safd` stream so that management servers see the
//! agent's health alongside its events. The ids and their severities are in
//! `safd_connector::event_ids` and documented in `docs/events.md`.

pub use safd_connector::{Notice, NoticeSink};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;

/// The stream safd's own events are injected into.
pub const SAFD_STREAM: &str = "safd";

/// How many recent notices the status API can show.
const HISTORY: usize = 200;

/// safd's own events waiting to be stored, at most. They wait in memory
/// while the store is down (a failed disk); past this many the rest are
/// only logged and kept in the history, and counted, so that an outage of
/// the store cannot grow safd's memory without bound.
pub(crate) const MAX_WAITING: usize = 10_000;

/// The two ends of the way notices reach the `safd` stream.
pub(crate) fn own_events(max_waiting: usize) -> (Notices, OwnEvents) {
    let (tx, rx) = mpsc::unbounded_channel();
    let counts = Arc::new(Waiting {
        max: max_waiting,
        waiting: AtomicUsize::new(0),
        left_out: AtomicU64::new(0),
    });
    let notices = Notices {
        inject: Some(Injection {
            tx,
            counts: counts.clone(),
        }),
        ..Notices::default()
    };
    (notices, OwnEvents { rx, counts })
}

#[derive(Debug)]
struct Waiting {
    max: usize,
    /// Sent and not yet stored.
    waiting: AtomicUsize,
    /// Not sent because `max` were waiting, since last taken.
    left_out: AtomicU64,
}

#[derive(Clone)]
struct Injection {
    tx: mpsc::UnboundedSender<Notice>,
    counts: Arc<Waiting>,
}

/// The receiving end: the notices to store in the `safd` stream.
pub(crate) struct OwnEvents {
    rx: mpsc::UnboundedReceiver<Notice>,
    counts: Arc<Waiting>,
}

impl OwnEvents {
    /// What is waiting (at least one; `None` once every sender is gone).
    pub(crate) async fn next(&mut self) -> Option<Vec<Notice>> {
        let first = self.rx.recv().await?;
        let mut batch = vec![first];
        while let Ok(more) = self.rx.try_recv() {
            batch.push(more);
        }
        Some(batch)
    }

    /// `count` of them are stored (or given up): room for as many more.
    pub(crate) fn stored(&self, count: usize) {
        self.counts.waiting.fetch_sub(count, Ordering::AcqRel);
    }

    /// How many were only logged since the last call.
    pub(crate) fn take_left_out(&self) -> u64 {
        self.counts.left_out.swap(0, Ordering::AcqRel)
    }
}

/// Where notices go. Cheap to clone; every part of the engine holds one.
#[derive(Clone, Default)]
pub struct Notices {
    inject: Option<Injection>,
    history: Arc<Mutex<VecDeque<Notice>>>,
    /// How many of each id, per connector for the plugins' own (the
    /// metrics count restarts and disabled plugins from these).
    counts: Arc<Mutex<BTreeMap<(u32, String), u64>>>,
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notices").finish_non_exhaustive()
    }
}

impl Notices {
    /// Log a notice, keep it and inject it.
    pub fn emit(&self, notice: Notice) {
        notice.log();
        self.keep_and_inject(notice);
    }

    fn keep_and_inject(&self, notice: Notice) {
        {
            let connector = notice
                .fields
                .iter()
                .find(|(key, _)| *key == "connector")
                .map(|(_, value)| value.clone())
                .unwrap_or_default();
            *self
                .counts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry((notice.id, connector))
                .or_default() += 1;
        }
        {
            let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(notice.clone());
        }
        if let Some(inject) = &self.inject {
            let counts = &inject.counts;
            let room = counts
                .waiting
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                    (waiting < counts.max).then_some(waiting + 1)
                })
                .is_ok();
            if !room {
                counts.left_out.fetch_add(1, Ordering::AcqRel);
            } else if inject.tx.send(notice).is_err() {
                // The receiver is gone only while the engine shuts down;
                // the notice has been logged either way.
                counts.waiting.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// How many notices of each id were emitted since the start, per
    /// connector (empty for notices about no connector).
    pub fn counts(&self) -> Vec<(u32, String, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((id, connector), n)| (*id, connector.clone(), *n))
            .collect()
    }

    /// The most recent notices, oldest first.
    pub fn recent(&self) -> Vec<Notice> {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

impl NoticeSink for Notices {
    fn emit(&self, notice: Notice) {
        Notices::emit(self, notice);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(n: u32) -> Notice {
        Notice::new(2006, format!("notice {n}"))
    }

    #[tokio::test]
    async fn beyond_the_most_waiting_notices_are_counted_not_kept() {
        let (notices, mut own_events) = own_events(3);
        for n in 0..5 {
            notices.emit(notice(n));
        }
        let batch = own_events.next().await.unwrap();
        let messages: Vec<&str> = batch.iter().map(|n| n.message.as_str()).collect();
        assert_eq!(messages, ["notice 0", "notice 1", "notice 2"]);
        assert_eq!(own_events.take_left_out(), 2);
        assert_eq!(own_events.take_left_out(), 0, "taken once");
        // Every notice is still in the history, stored or not.
        assert_eq!(notices.recent().len(), 5);
        // Still waiting (the store is down): nothing more is kept.
        notices.emit(notice(5));
        assert_eq!(own_events.take_left_out(), 1);
        // Stored: room again.
        own_events.stored(batch.len());
        notices.emit(notice(6));
        let batch = own_events.next().await.unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].message, "notice 6");
        assert_eq!(own_events.take_left_out(), 0);
    }
}
