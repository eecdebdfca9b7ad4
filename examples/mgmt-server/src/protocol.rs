//! The bodies of protocol version 1 (`docs/protocol.md`): JSON, and the
//! binary delivery body (`safd_event_block::delivery`), both read into one
//! [`Delivery`] that the store takes.

use safd_event_block::{delivery, names};
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
    /// Media types this server reads a delivery in, best first.
    #[serde(default)]
    pub body_formats: Vec<String>,
}

/// The media type of a JSON delivery.
pub const JSON: &str = "application/json";

/// Which delivery bodies a server reads (`--body-formats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyFormats {
    /// The binary body and JSON: what a server lists by default.
    #[default]
    Both,
    /// JSON only, as servers before the binary body (for tests and for
    /// comparing the two).
    JsonOnly,
}

impl BodyFormats {
    /// What register answers, best first.
    pub fn listed(self) -> Vec<String> {
        match self {
            Self::Both => vec![delivery::CONTENT_TYPE.to_owned(), JSON.to_owned()],
            Self::JsonOnly => vec![JSON.to_owned()],
        }
    }

    pub fn reads_binary(self) -> bool {
        self == Self::Both
    }
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

/// The field limits of one event, whichever body it came in.
fn check_limits<'t>(
    id: &str,
    attributes: impl ExactSizeIterator<Item = (&'t str, &'t str)>,
    body: &str,
) -> Result<(), String> {
    if id.is_empty() {
        return Err("id is empty".to_owned());
    }
    if id.len() > MAX_ID_BYTES {
        return Err(too_long("id", id.len(), MAX_ID_BYTES));
    }
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(format!(
            "the event has {} attributes; this server accepts at most {MAX_ATTRIBUTES}",
            attributes.len()
        ));
    }
    for (key, value) in attributes {
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
    if body.len() > MAX_EVENT_BODY_BYTES {
        return Err(too_long("body", body.len(), MAX_EVENT_BODY_BYTES));
    }
    Ok(())
}

impl WireEvent<'_> {
    /// Why this event can never be accepted, if it cannot; otherwise its
    /// time in microseconds and its severity as an index of [`SEVERITIES`].
    /// Messages quote at most a short prefix of what the client sent.
    pub fn check(&self) -> Result<(i64, u8), String> {
        if self.seq == 0 {
            return Err("seq must be 1 or more".to_owned());
        }
        check_limits(
            &self.id,
            self.attributes.iter().map(|(k, v)| (&**k, &**v)),
            &self.body,
        )?;
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

/// A delivery as the store takes it, read from either body and borrowing
/// from it.
#[derive(Debug)]
pub struct Delivery<'r> {
    pub agent_id: &'r str,
    pub group: &'r str,
    pub epoch: u64,
    pub batches: Vec<Batch<'r>>,
}

/// One stream's events of a [`Delivery`].
#[derive(Debug)]
pub struct Batch<'r> {
    pub stream: &'r str,
    pub events: Vec<Incoming<'r>>,
    /// Inclusive `[first, last]` ranges the agent's group leaves out.
    pub left_out: Vec<[u64; 2]>,
}

/// One event of a delivery, with the verdict of its field checks.
#[derive(Debug)]
pub struct Incoming<'r> {
    pub seq: u64,
    pub id: &'r str,
    /// Why it can never be accepted, or what storing it needs.
    pub checked: Result<Checked<'r>, String>,
}

/// An event whose fields passed the checks.
#[derive(Debug)]
pub struct Checked<'r> {
    /// Microseconds since the Unix epoch.
    pub time: i64,
    pub form: Form<'r>,
}

/// How a checked event is written into a segment.
#[derive(Debug)]
pub enum Form<'r> {
    /// Encoded from its JSON fields.
    Fields {
        severity: u8,
        event: &'r WireEvent<'r>,
    },
    /// Its bytes of a binary body (seq included): appended as they came.
    Encoded(&'r [u8]),
}

impl<'r> Delivery<'r> {
    /// A JSON delivery, every event checked.
    pub fn from_json(request: &'r DeliverRequest<'r>) -> Self {
        Self {
            agent_id: &request.agent_id,
            group: &request.group,
            epoch: request.epoch,
            batches: request
                .batches
                .iter()
                .map(|batch| Batch {
                    stream: &batch.stream,
                    events: batch
                        .events
                        .iter()
                        .map(|event| Incoming {
                            seq: event.seq,
                            id: &event.id,
                            checked: event.check().map(|(time, severity)| Checked {
                                time,
                                form: Form::Fields { severity, event },
                            }),
                        })
                        .collect(),
                    left_out: batch.left_out.clone(),
                })
                .collect(),
        }
    }

    /// A binary delivery (already read and framed by
    /// `safd_event_block::delivery::parse`), every event checked against
    /// the same limits as a JSON one.
    pub fn from_binary(body: &delivery::Body<'r>) -> Self {
        Self {
            agent_id: body.agent_id,
            group: body.group,
            epoch: body.epoch,
            batches: body
                .batches
                .iter()
                .map(|batch| Batch {
                    stream: batch.stream,
                    events: batch
                        .events
                        .iter()
                        .map(|item| {
                            let event = &item.event;
                            let checked =
                                check_limits(event.id, event.attributes.iter(), event.body)
                                    .and_then(|()| check_time(event.time))
                                    .map(|time| Checked {
                                        time,
                                        form: Form::Encoded(item.encoded),
                                    });
                            Incoming {
                                seq: item.seq,
                                id: event.id,
                                checked,
                            }
                        })
                        .collect(),
                    left_out: batch.left_out.iter().map(|&(a, b)| [a, b]).collect(),
                })
                .collect(),
        }
    }
}

/// A binary body's time is a number: it must still be one a JSON body
/// could carry (what the query API shows as RFC 3339).
fn check_time(micros: i64) -> Result<i64, String> {
    jiff::Timestamp::from_microsecond(micros)
        .map(|_| micros)
        .map_err(|_| format!("time {micros} µs since 1970 is outside the years -9999 to 9999"))
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

impl Names for Delivery<'_> {
    fn bad_name(&self) -> Option<String> {
        check_name("agent_id", self.agent_id)
            .or_else(|| check_name("group", self.group))
            .or_else(|| {
                self.batches.iter().enumerate().find_map(|(i, batch)| {
                    check_name(&format!("batches[{i}].stream"), batch.stream)
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
