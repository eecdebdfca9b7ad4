use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch, UTC.
pub type Timestamp = i64;

/// An opaque source position, stored verbatim by the host.
pub type Cursor = Vec<u8>;

/// How urgent an event is, from least to most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Debug,
    Info,
    Warning,
    Minor,
    Major,
    Critical,
}

impl Severity {
    /// The lowercase name used in configs, logs and the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Minor => "minor",
            Self::Major => "major",
            Self::Critical => "critical",
        }
    }
}

/// One key/value attribute of an event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attribute {
    pub key: String,
    pub value: String,
}

impl Attribute {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// An event as a source produces it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Stable identity assigned by the source (same event, same id).
    pub id: String,
    pub time: Timestamp,
    pub severity: Severity,
    pub attributes: Vec<Attribute>,
    pub body: String,
}

impl Event {
    /// The bytes counted against batch byte limits.
    pub fn byte_size(&self) -> usize {
        self.id.len()
            + self.body.len()
            + self
                .attributes
                .iter()
                .map(|a| a.key.len() + a.value.len())
                .sum::<usize>()
    }
}

/// An event with the sequence number the host assigned at ingest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequencedEvent {
    pub seq: u64,
    pub event: Event,
}

/// Events of one stream, in seq order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamBatch {
    pub stream: String,
    pub events: Vec<SequencedEvent>,
}

/// A position in one stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamPosition {
    pub stream: String,
    pub seq: u64,
}
