//! The JSON bodies of protocol version 1 (`docs/protocol.md`).

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
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

/// Text of a delivery, borrowed from the request body unless it had to be
/// unescaped: a batch of 1 024 events would otherwise allocate some 16 000
/// strings only to copy them into storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl std::fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverRequest<'a> {
    #[serde(borrow)]
    pub agent_id: Text<'a>,
    #[serde(borrow)]
    pub group: Text<'a>,
    pub epoch: u64,
    #[serde(borrow)]
    pub batches: Vec<StreamBatch<'a>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamBatch<'a> {
    #[serde(borrow)]
    pub stream: Text<'a>,
    #[serde(borrow)]
    pub events: Vec<WireEvent<'a>>,
}

/// An event as it travels. Fields are checked one by one (see
/// [`WireEvent::check`]) so that one bad event is rejected on its own
/// instead of failing the whole request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEvent<'a> {
    pub seq: u64,
    #[serde(borrow)]
    pub id: Text<'a>,
    /// RFC 3339 time.
    #[serde(borrow)]
    pub time: Text<'a>,
    #[serde(borrow)]
    pub severity: Text<'a>,
    #[serde(borrow, default)]
    pub attributes: Vec<(Text<'a>, Text<'a>)>,
    #[serde(borrow)]
    pub body: Text<'a>,
}

pub const SEVERITIES: [&str; 6] = ["debug", "info", "warning", "minor", "major", "critical"];

impl WireEvent<'_> {
    /// Why this event can never be accepted, if it cannot; otherwise its
    /// time in microseconds and its severity as an index of [`SEVERITIES`].
    pub fn check(&self) -> Result<(i64, u8), String> {
        if self.seq == 0 {
            return Err("seq must be 1 or more".to_owned());
        }
        if self.id.is_empty() {
            return Err("id is empty".to_owned());
        }
        let Some(severity) = SEVERITIES.iter().position(|s| *s == &*self.severity) else {
            return Err(format!(
                "severity `{}` is not one of {}",
                self.severity,
                SEVERITIES.join(", ")
            ));
        };
        let time: jiff::Timestamp = self
            .time
            .parse()
            .map_err(|e| format!("time `{}` is not an RFC 3339 time: {e}", self.time))?;
        // SEVERITIES has six entries.
        Ok((time.as_microsecond(), severity as u8))
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
