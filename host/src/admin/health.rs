//! `GET /health`: liveness and readiness for load balancers, systemd
//! watchdogs and orchestrators. Live whenever it answers; ready when every
//! source runs and the queue takes writes — otherwise 503 with what is not
//! ready. A group without an active member does not make safd unready
//! (its events wait in the queue, which is what safd is for) but is listed
//! as degraded.

use safd_engine::{Engine, SourceActivity};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// Always true in an answer: the process runs and serves its API.
    pub live: bool,
    pub ready: bool,
    /// Why it is not ready, one line per reason.
    pub not_ready: Vec<String>,
    /// What works but not as it should.
    pub degraded: Vec<String>,
}

impl Health {
    pub async fn gather(engine: &Engine) -> Self {
        let mut not_ready = Vec::new();
        if let Some(failure) = engine.queue().failure().borrow().clone() {
            not_ready.push(format!("the queue cannot store events: {failure}"));
        }
        let mut sources = engine.sources();
        sources.sort_by(|a, b| a.stream.cmp(&b.stream));
        for source in sources {
            if source.activity != SourceActivity::Running {
                let why = source
                    .last_error
                    .filter(|_| source.activity != SourceActivity::Starting)
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                not_ready.push(format!(
                    "source `{}` is {}{why}",
                    source.stream,
                    source.activity.name()
                ));
            }
        }
        let mut degraded = Vec::new();
        for group in engine.groups() {
            for lane in group.lanes {
                if lane.active.is_none() {
                    degraded.push(format!(
                        "group `{}`: no active member; its events wait in the queue",
                        lane.cursor
                    ));
                }
            }
        }
        Self {
            live: true,
            ready: not_ready.is_empty(),
            not_ready,
            degraded,
        }
    }
}
