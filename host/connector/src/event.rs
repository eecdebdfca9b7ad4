use safd_event_block::{BlockError, BlockWriter, EventRef};
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
    const ALL: [Severity; 6] = [
        Self::Debug,
        Self::Info,
        Self::Warning,
        Self::Minor,
        Self::Major,
        Self::Critical,
    ];

    /// The severity with this code of the event-block encoding (its index in
    /// the WIT `severity` enum), if there is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// This severity's code in the event-block encoding.
    pub fn code(self) -> u8 {
        self as u8
    }

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
        safd_event_block::byte_size(
            &self.id,
            &self.body,
            self.attributes
                .iter()
                .map(|a| (a.key.as_str(), a.value.as_str())),
        )
    }
}

impl Event {
    /// Copy an event read from an event block.
    pub fn from_block(event: &EventRef<'_>) -> Self {
        Self {
            id: event.id.to_owned(),
            time: event.time,
            // The block reader refuses codes without a severity.
            severity: Severity::from_code(event.severity).unwrap_or(Severity::Critical),
            attributes: event
                .attributes
                .iter()
                .map(|(key, value)| Attribute::new(key, value))
                .collect(),
            body: event.body.to_owned(),
        }
    }

    /// Append this event to an event block.
    pub fn write_to(&self, block: &mut BlockWriter) {
        block.push(
            &self.id,
            self.time,
            self.severity.code(),
            self.attributes.iter().map(|a| (&a.key, &a.value)),
            &self.body,
        );
    }

    /// Append this event with its seq to a sequenced block.
    pub fn write_sequenced_to(&self, seq: u64, block: &mut BlockWriter) {
        block.push_sequenced(
            seq,
            &self.id,
            self.time,
            self.severity.code(),
            self.attributes.iter().map(|a| (&a.key, &a.value)),
            &self.body,
        );
    }
}

/// Copy every event of an event block holding `count` events.
pub fn decode_events(bytes: &[u8], count: u32) -> Result<Vec<Event>, BlockError> {
    let mut events =
        Vec::with_capacity((count as usize).min(safd_event_block::max_events(bytes.len())));
    for event in safd_event_block::events(bytes, count) {
        events.push(Event::from_block(&event?));
    }
    Ok(events)
}

/// An event with the sequence number the host assigned at ingest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequencedEvent {
    pub seq: u64,
    pub event: Event,
}

/// A position in one stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamPosition {
    pub stream: String,
    pub seq: u64,
}
