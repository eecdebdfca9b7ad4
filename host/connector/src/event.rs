// The owned event types are defined once, in the event-block crate, for the
// host and the plugin SDK alike.
pub use safd_event_block::{Attribute, Event, Severity, Timestamp};

use safd_event_block::BlockError;
use serde::{Deserialize, Serialize};

/// An opaque source position, stored verbatim by the host.
pub type Cursor = Vec<u8>;

/// Copy every event of an event block holding `count` events.
pub fn decode_events(bytes: &[u8], count: u32) -> Result<Vec<Event>, BlockError> {
    let mut events =
        Vec::with_capacity((count as usize).min(safd_event_block::max_events(bytes.len())));
    for event in safd_event_block::events(bytes, count) {
        events.push(Event::from_ref(&event?));
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
