//! The JSON bodies of protocol version 1 (`docs/protocol.md`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Per stream, a seq.
pub type Positions = BTreeMap<String, u64>;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub agent_id: String,
    pub group: String,
    pub member: String,
    pub role: String,
    pub epoch: u64,
    pub active: bool,
    #[serde(default)]
    pub stored: Positions,
    #[serde(default)]
    pub acknowledged: Positions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub high_water: Positions,
    pub service_ready: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub catch_up: Option<CatchUp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatchUp {
    pub epoch: u64,
    pub from: CatchUpFrom,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUpFrom {
    Positions(Positions),
    /// RFC 3339 time.
    Time(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverRequest {
    pub agent_id: String,
    pub group: String,
    pub epoch: u64,
    pub batches: Vec<StreamBatch>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamBatch {
    pub stream: String,
    pub events: Vec<WireEvent>,
}

/// An event as it travels. Fields are checked one by one (see
/// [`WireEvent::check`]) so that one bad event is rejected on its own
/// instead of failing the whole request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEvent {
    pub seq: u64,
    pub id: String,
    /// RFC 3339 time.
    pub time: String,
    pub severity: String,
    #[serde(default)]
    pub attributes: Vec<(String, String)>,
    pub body: String,
}

pub const SEVERITIES: [&str; 6] = ["debug", "info", "warning", "minor", "major", "critical"];

impl WireEvent {
    /// Why this event can never be accepted, if it cannot; otherwise its
    /// time in microseconds.
    pub fn check(&self) -> Result<i64, String> {
        if self.seq == 0 {
            return Err("seq must be 1 or more".to_owned());
        }
        if self.id.is_empty() {
            return Err("id is empty".to_owned());
        }
        if !SEVERITIES.contains(&self.severity.as_str()) {
            return Err(format!(
                "severity `{}` is not one of {}",
                self.severity,
                SEVERITIES.join(", ")
            ));
        }
        let time: jiff::Timestamp = self
            .time
            .parse()
            .map_err(|e| format!("time `{}` is not an RFC 3339 time: {e}", self.time))?;
        Ok(time.as_microsecond())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliverResponse {
    pub acknowledged: Positions,
    pub rejected: Vec<Rejection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub stream: String,
    pub seq: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub service_ready: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSwitch {
    pub ready: bool,
}

/// An error answer: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
