//! Events in and out of event blocks (the WIT `event-block`).
//!
//! A source writes its batch with an [`EventWriter`]; a destination reads
//! each [`StreamBatch`] with [`StreamBatch::events`]. Reading borrows from
//! the block ([`EventRef`]), so a destination that only forwards events
//! allocates nothing per event; writing from borrowed fields
//! ([`EventWriter::push_fields`]) does the same for a source.

use crate::types::{ConnectorError, Event, EventBlock, Severity, StreamBatch};
use safd_event_block::BlockWriter;

pub use safd_event_block::{AttributeIter, Attributes, BlockError, EventRef};

/// The severity of an event read from a block.
pub fn severity(event: &EventRef<'_>) -> Severity {
    // The block reader refuses codes without a severity.
    Severity::from_code(event.severity).unwrap_or(Severity::Critical)
}

/// Builds the event block of one `poll` result.
#[derive(Debug, Default)]
pub struct EventWriter {
    block: BlockWriter,
    text_bytes: usize,
}

impl EventWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer whose buffer holds `bytes` of encoded events without
    /// growing (an event takes its text bytes plus a few bytes).
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            block: BlockWriter::with_capacity(bytes),
            text_bytes: 0,
        }
    }

    /// Append an owned event.
    pub fn push(&mut self, event: &Event) {
        self.push_fields(
            &event.id,
            event.time,
            event.severity,
            event.attributes.iter().map(|a| (&a.key, &a.value)),
            &event.body,
        );
    }

    /// Append an event from borrowed parts, without building an [`Event`].
    pub fn push_fields<A, K, V>(
        &mut self,
        id: &str,
        time: i64,
        severity: Severity,
        attributes: A,
        body: &str,
    ) where
        A: IntoIterator<Item = (K, V)>,
        A::IntoIter: ExactSizeIterator + Clone,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let attributes = attributes.into_iter();
        let attribute_bytes: usize = attributes
            .clone()
            .map(|(k, v)| k.as_ref().len() + v.as_ref().len())
            .sum();
        self.block.push(id, time, severity.code(), attributes, body);
        self.text_bytes += id.len() + body.len() + attribute_bytes;
    }

    /// Events written so far.
    pub fn len(&self) -> usize {
        self.block.count() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.block.is_empty()
    }

    /// The bytes counted against `poll-limits.max-bytes` so far: ids,
    /// bodies, attribute keys and values.
    pub fn text_bytes(&self) -> usize {
        self.text_bytes
    }

    /// The block to return in `batch.events`.
    pub fn finish(self) -> EventBlock {
        let (count, bytes) = self.block.finish();
        EventBlock { count, bytes }
    }
}

impl EventBlock {
    /// A block holding `events`.
    pub fn from_events(events: &[Event]) -> Self {
        let mut writer = EventWriter::new();
        for event in events {
            writer.push(event);
        }
        writer.finish()
    }

    /// An empty block.
    pub fn empty() -> Self {
        Self {
            count: 0,
            bytes: Vec::new(),
        }
    }

    /// The events of a source block, borrowed.
    pub fn iter(&self) -> impl Iterator<Item = Result<EventRef<'_>, BlockError>> {
        safd_event_block::events(&self.bytes, self.count)
    }
}

impl StreamBatch {
    /// A batch of `events` of `stream` numbered from `first_seq`, as safd
    /// hands them to `deliver`: for a destination's native unit tests.
    pub fn sequenced(stream: &str, first_seq: u64, events: &[Event]) -> Self {
        let mut block = BlockWriter::default();
        for (seq, event) in (first_seq..).zip(events) {
            event.write_sequenced_to(seq, &mut block);
        }
        let (count, bytes) = block.finish();
        Self {
            stream: stream.to_owned(),
            events: EventBlock { count, bytes },
            left_out: Vec::new(),
        }
    }

    /// `(seq, event)` pairs of this batch, borrowed from its block. The
    /// host always sends well-formed blocks; an error here means a host
    /// bug, best answered with `connector-error.fatal`.
    pub fn events(&self) -> impl Iterator<Item = Result<(u64, EventRef<'_>), BlockError>> {
        safd_event_block::sequenced(&self.events.bytes, self.events.count)
    }

    /// The seq of the last event, if the batch is not empty (checking the
    /// whole block on the way).
    pub fn last_seq(&self) -> Result<Option<u64>, BlockError> {
        self.events()
            .last()
            .transpose()
            .map(|last| last.map(|(seq, _)| seq))
    }
}

/// A block that does not decode can only come from a broken host; `fatal`
/// makes the host rebuild the plugin and say so in its log.
impl From<BlockError> for ConnectorError {
    fn from(err: BlockError) -> Self {
        ConnectorError::Fatal(format!("malformed event block from the host: {err}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::types::Attribute;

    #[test]
    fn a_sequenced_test_batch_reads_back_as_the_host_would_send_it() {
        let event = |id: &str| Event {
            id: id.to_owned(),
            time: 1_700_000_000_000_000,
            severity: Severity::Major,
            attributes: vec![Attribute::new("system", "\\PROD1")],
            body: format!("body of {id}"),
        };
        let batch = StreamBatch::sequenced("ems", 41, &[event("a"), event("b")]);
        let read: Vec<(u64, String)> = batch
            .events()
            .map(|e| e.map(|(seq, e)| (seq, e.body.to_owned())))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read, [(41, "body of a".into()), (42, "body of b".into())]);
        assert_eq!(batch.last_seq().unwrap(), Some(42));
    }
}
