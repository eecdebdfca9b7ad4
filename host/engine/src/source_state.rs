//! What a source is doing, as the admin API shows it: running, held back
//! by the queue, or failing (and why). The pump writes it; status, metrics
//! and `/health` read it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A source's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceActivity {
    /// Its session is being opened (at start, or after a failure).
    Starting,
    /// Polling and storing.
    Running,
    /// Its batch waits for the queue (full, short of disk, or failing).
    HeldBack,
    /// Its last open, poll, seek or commit failed; it is retried.
    Failing,
}

impl SourceActivity {
    pub const ALL: [SourceActivity; 4] =
        [Self::Starting, Self::Running, Self::HeldBack, Self::Failing];

    pub fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::HeldBack => "held-back",
            Self::Failing => "failing",
        }
    }
}

/// One source's state as last reported.
#[derive(Clone, Debug)]
pub struct SourceStatus {
    pub stream: String,
    pub activity: SourceActivity,
    /// The last failure, kept after recovery.
    pub last_error: Option<String>,
    /// Failures in a row (0 once a round succeeds).
    pub failures: u32,
    /// How long it has been in its state.
    pub since: Duration,
}

/// The pump's handle on its state; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct SourceState(Arc<Mutex<Inner>>);

#[derive(Debug)]
struct Inner {
    stream: String,
    activity: SourceActivity,
    last_error: Option<String>,
    failures: u32,
    since: Instant,
}

impl SourceState {
    pub(crate) fn new(stream: &str) -> Self {
        Self(Arc::new(Mutex::new(Inner {
            stream: stream.to_owned(),
            activity: SourceActivity::Starting,
            last_error: None,
            failures: 0,
            since: Instant::now(),
        })))
    }

    fn update(&self, change: impl FnOnce(&mut Inner)) {
        let mut inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let before = inner.activity;
        change(&mut inner);
        if inner.activity != before {
            inner.since = Instant::now();
        }
    }

    pub(crate) fn set(&self, activity: SourceActivity) {
        self.update(|s| {
            s.activity = activity;
            if activity == SourceActivity::Running {
                s.failures = 0;
            }
        });
    }

    pub(crate) fn failed(&self, reason: &str, failures: u32) {
        self.update(|s| {
            s.activity = SourceActivity::Failing;
            s.last_error = Some(reason.to_owned());
            s.failures = failures;
        });
    }

    pub(crate) fn held_back(&self, reason: &str) {
        self.update(|s| {
            s.activity = SourceActivity::HeldBack;
            s.last_error = Some(reason.to_owned());
        });
    }

    pub(crate) fn status(&self) -> SourceStatus {
        let inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        SourceStatus {
            stream: inner.stream.clone(),
            activity: inner.activity,
            last_error: inner.last_error.clone(),
            failures: inner.failures,
            since: inner.since.elapsed(),
        }
    }
}
