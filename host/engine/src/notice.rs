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
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;

/// The stream safd's own events are injected into.
pub const SAFD_STREAM: &str = "safd";

/// How many recent notices the status API can show.
const HISTORY: usize = 200;

/// Where notices go. Cheap to clone; every part of the engine holds one.
#[derive(Clone, Default)]
pub struct Notices {
    inject: Option<mpsc::UnboundedSender<Notice>>,
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
    /// Notices that are logged and kept, and also sent to `inject`.
    pub fn with_injection(inject: mpsc::UnboundedSender<Notice>) -> Self {
        Self {
            inject: Some(inject),
            ..Self::default()
        }
    }

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
            // The receiver is gone only while the engine shuts down; the
            // notice has been logged either way.
            let _ = inject.send(notice);
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
