//! safd's own numbered events ("notices"): every failover step, catch-up
//! decision, queue condition and plugin failure, from whichever part of
//! safd sees it.
//!
//! One path for all of them: the part that sees the condition builds a
//! [`Notice`] of a catalog id (`event_ids`, documented in
//! `docs/events.md`) and hands it to the [`NoticeSink`] it was given. The
//! engine's sink logs it, keeps it for the status API and injects it into
//! the built-in `safd` stream, so management servers see the agent's health
//! alongside its events. The severity of an id is fixed by the catalog
//! ([`crate::event_ids::severity`]), not by whoever emits it.

use crate::event_ids;
use crate::{Attribute, Event, Severity};

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
    /// A notice of catalog id `id`, with the catalog's severity for it.
    pub fn new(id: u32, message: impl Into<String>) -> Self {
        Self {
            id,
            severity: event_ids::severity(id),
            message: message.into(),
            fields: Vec::new(),
            time: now_micros(),
        }
    }

    /// For the ids whose catalog entry names a severity per case (5001:
    /// info, warning when something failed).
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
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

    /// Log the notice through `tracing` at its severity's level, with its
    /// `event_id` and fields.
    pub fn log(&self) {
        let fields = self
            .fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        match self.severity {
            Severity::Critical | Severity::Major => {
                tracing::error!(event_id = self.id, %fields, "{}", self.message);
            }
            Severity::Minor | Severity::Warning => {
                tracing::warn!(event_id = self.id, %fields, "{}", self.message);
            }
            Severity::Info | Severity::Debug => {
                tracing::info!(event_id = self.id, %fields, "{}", self.message);
            }
        }
    }
}

/// Where a part of safd hands the notices it emits.
pub trait NoticeSink: Send + Sync {
    fn emit(&self, notice: Notice);
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
