//! The JSON bodies of protocol version 1 (`docs/protocol.md`).

use safd_event_block::names;
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
    /// Seqs the agent's group leaves out for this server (its
    /// `min_severity`), inclusive `[first, last]` ranges: held as settled,
    /// so the high-water stays whole.
    #[serde(default)]
    pub left_out: Vec<[u64; 2]>,
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

/// Field limits of one event (docs/protocol.md): an event beyond them is
/// rejected on its own. The body's limit is that of an EMS record (the
/// reader cuts longer ones), with room to spare.
pub const MAX_ID_BYTES: usize = 1_024;
pub const MAX_ATTRIBUTES: usize = 256;
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 256;
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 64 << 10;
pub const MAX_EVENT_BODY_BYTES: usize = 2 << 20;

/// `text` shortened and escaped for a message (see
/// `safd_event_block::names::quote`).
fn quoted(text: &str) -> String {
    names::quote(text, names::QUOTE_CHARS)
}

fn too_long(field: &str, bytes: usize, max: usize) -> String {
    format!("{field} is {bytes} bytes long; this server accepts at most {max}")
}

impl WireEvent<'_> {
    /// Why this event can never be accepted, if it cannot; otherwise its
    /// time in microseconds and its severity as an index of [`SEVERITIES`].
    /// Messages quote at most a short prefix of what the client sent.
    pub fn check(&self) -> Result<(i64, u8), String> {
        if self.seq == 0 {
            return Err("seq must be 1 or more".to_owned());
        }
        if self.id.is_empty() {
            return Err("id is empty".to_owned());
        }
        if self.id.len() > MAX_ID_BYTES {
            return Err(too_long("id", self.id.len(), MAX_ID_BYTES));
        }
        if self.attributes.len() > MAX_ATTRIBUTES {
            return Err(format!(
                "the event has {} attributes; this server accepts at most {MAX_ATTRIBUTES}",
                self.attributes.len()
            ));
        }
        for (key, value) in &self.attributes {
            if key.len() > MAX_ATTRIBUTE_KEY_BYTES {
                return Err(too_long(
                    "an attribute key",
                    key.len(),
                    MAX_ATTRIBUTE_KEY_BYTES,
                ));
            }
            if value.len() > MAX_ATTRIBUTE_VALUE_BYTES {
                return Err(too_long(
                    &format!("attribute `{}`", quoted(key)),
                    value.len(),
                    MAX_ATTRIBUTE_VALUE_BYTES,
                ));
            }
        }
        if self.body.len() > MAX_EVENT_BODY_BYTES {
            return Err(too_long("body", self.body.len(), MAX_EVENT_BODY_BYTES));
        }
        let Some(severity) = SEVERITIES.iter().position(|s| *s == &*self.severity) else {
            return Err(format!(
                "severity `{}` is not one of {}",
                quoted(&self.severity),
                SEVERITIES.join(", ")
            ));
        };
        let time: jiff::Timestamp = self
            .time
            .parse()
            .map_err(|e| format!("time `{}` is not an RFC 3339 time: {e}", quoted(&self.time)))?;
        // SEVERITIES has six entries.
        Ok((time.as_microsecond(), severity as u8))
    }
}

/// The names of a request that break the rules of
/// `safd_event_block::names`, as `field: what is wrong`; each request type
/// lists its own.
pub trait Names {
    fn bad_name(&self) -> Option<String>;
}

fn check_name(field: &str, name: &str) -> Option<String> {
    names::check(name)
        .err()
        .map(|err| format!("{field} `{}` {err}", quoted(name)))
}

/// Streams one register request may report (`stored`, `acknowledged`):
/// more than an agent may have is not an agent speaking.
pub const MAX_POSITIONS: usize = 10_000;

fn check_positions(field: &str, positions: &Positions) -> Option<String> {
    if positions.len() > MAX_POSITIONS {
        return Some(format!(
            "{field} names {} streams; at most {MAX_POSITIONS}",
            positions.len()
        ));
    }
    positions
        .keys()
        .find_map(|stream| check_name(&format!("{field} stream"), stream))
}

impl Names for RegisterRequest {
    fn bad_name(&self) -> Option<String> {
        check_name("agent_id", &self.agent_id)
            .or_else(|| check_name("group", &self.group))
            .or_else(|| check_name("member", &self.member))
            .or_else(|| check_name("role", &self.role))
            .or_else(|| check_positions("stored", &self.stored))
            .or_else(|| check_positions("acknowledged", &self.acknowledged))
    }
}

impl Names for DeliverRequest<'_> {
    fn bad_name(&self) -> Option<String> {
        check_name("agent_id", &self.agent_id)
            .or_else(|| check_name("group", &self.group))
            .or_else(|| {
                self.batches.iter().enumerate().find_map(|(i, batch)| {
                    check_name(&format!("batches[{i}].stream"), &batch.stream)
                })
            })
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
