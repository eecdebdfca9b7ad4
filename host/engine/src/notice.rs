//! safd's own numbered events ("notices"): every failover step, catch-up
//! decision and queue condition.
//!
//! A notice is logged through `tracing` at the moment it happens (with its
//! `event_id`), kept in a short history for the status API, and handed to
//! the engine, which injects it into the built-in `safd` stream so that
//! management servers see the agent's health alongside its events. The ids
//! are in `safd_connector::event_ids` and documented in `docs/events.md`.

use safd_connector::{Attribute, Event, Severity};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;

/// The stream safd's own events are injected into.
pub const SAFD_STREAM: &str = "safd";

/// How many recent notices the status API can show.
const HISTORY: usize = 200;

/// One of safd's own events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub id: u32,
    pub severity: Severity,
    pub message: String,
    /// Context such as the group, member, stream or epoch.
    pub fields: Vec<(&'static str, String)>,
    /// Microseconds since the Unix epoch.
    pub time: i64,
}

impl Notice {
    pub fn new(id: u32, severity: Severity, message: impl Into<String>) -> Self {
        Self {
            id,
            severity,
            message: message.into(),
            fields: Vec::new(),
            time: crate::clock::now_micros(),
        }
    }

    pub fn with(mut self, key: &'static str, value: impl ToString) -> Self {
        self.fields.push((key, value.to_string()));
        self
    }

    /// The value of field `key`, if set.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The notice as an event of the `safd` stream. `unique` makes the id
    /// unique per agent (a counter that survives restarts is not needed:
    /// the time in microseconds plus a per-process counter is).
    pub fn to_event(&self, agent_id: &str, unique: u64) -> Event {
        let mut attributes = Vec::with_capacity(self.fields.len() + 1);
        attributes.push(Attribute::new("event_id", self.id.to_string()));
        attributes.extend(
            self.fields
                .iter()
                .map(|(k, v)| Attribute::new(*k, v.clone())),
        );
        Event {
            id: format!("safd:{agent_id}:{}:{unique}", self.time),
            time: self.time,
            severity: self.severity,
            attributes,
            body: self.message.clone(),
        }
    }
}

/// Where notices go. Cheap to clone; every part of the engine holds one.
#[derive(Clone, Default)]
pub struct Notices {
    inject: Option<mpsc::UnboundedSender<Notice>>,
    history: Arc<Mutex<VecDeque<Notice>>>,
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
            history: Arc::default(),
        }
    }

    /// Keep and inject a notice that was already logged elsewhere (the
    /// runtime's plugin events).
    pub fn forward(&self, notice: Notice) {
        self.keep_and_inject(notice);
    }

    pub fn emit(&self, notice: Notice) {
        let fields = notice
            .fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        match notice.severity {
            Severity::Critical | Severity::Major => {
                tracing::error!(event_id = notice.id, %fields, "{}", notice.message);
            }
            Severity::Minor | Severity::Warning => {
                tracing::warn!(event_id = notice.id, %fields, "{}", notice.message);
            }
            Severity::Info | Severity::Debug => {
                tracing::info!(event_id = notice.id, %fields, "{}", notice.message);
            }
        }
        self.keep_and_inject(notice);
    }

    fn keep_and_inject(&self, notice: Notice) {
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
