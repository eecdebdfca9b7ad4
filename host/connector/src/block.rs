//! Events kept in their encoded form between a plugin and the queue.

use crate::event::{Event, decode_events};
use safd_event_block::{BlockError, BlockWriter, EventRef};

/// A checked event block (the WIT `event-block`): what a source returned,
/// still encoded. The queue stores these bytes as they are, so an event read
/// by a plugin is neither copied into owned strings nor encoded again on its
/// way to disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventBlock {
    bytes: Vec<u8>,
    /// Where each event ends in `bytes`.
    ends: Vec<u32>,
}

impl EventBlock {
    /// Check a block a plugin sent: every event decodes and there are
    /// exactly `count` of them.
    pub fn decode(bytes: Vec<u8>, count: u32) -> Result<Self, BlockError> {
        let mut ends = Vec::with_capacity(count as usize);
        let mut events = safd_event_block::events(&bytes, count);
        while let Some(event) = events.next() {
            event?;
            // Blocks cross a 32-bit boundary (WIT list<u8>), so offsets fit.
            ends.push(events.offset() as u32);
        }
        Ok(Self { bytes, ends })
    }

    /// A block holding `events`.
    pub fn from_events(events: &[Event]) -> Self {
        let mut writer =
            BlockWriter::with_capacity(events.iter().map(|e| e.byte_size() + 32).sum());
        let mut ends = Vec::with_capacity(events.len());
        for event in events {
            event.write_to(&mut writer);
            ends.push(writer.byte_len() as u32);
        }
        let (_, bytes) = writer.finish();
        Self { bytes, ends }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The encoded events.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The events, borrowed.
    pub fn iter(&self) -> impl Iterator<Item = EventRef<'_>> {
        // Checked when the block was built, so no item is an error.
        safd_event_block::events(&self.bytes, self.ends.len() as u32).filter_map(Result::ok)
    }

    /// Owned copies of the events.
    pub fn to_events(&self) -> Vec<Event> {
        decode_events(&self.bytes, self.ends.len() as u32).unwrap_or_default()
    }

    /// Split into runs of consecutive events of about `target_bytes` each
    /// (an event larger than that is a run of its own): `(count, bytes)`.
    pub fn runs(&self, target_bytes: usize) -> impl Iterator<Item = (u32, &[u8])> {
        let mut start_event = 0usize;
        let mut start_byte = 0usize;
        std::iter::from_fn(move || {
            if start_event == self.ends.len() {
                return None;
            }
            let mut end_event = start_event;
            while end_event < self.ends.len() {
                end_event += 1;
                if self.ends[end_event - 1] as usize - start_byte >= target_bytes {
                    break;
                }
            }
            let end_byte = self.ends[end_event - 1] as usize;
            let run = (
                (end_event - start_event) as u32,
                &self.bytes[start_byte..end_byte],
            );
            start_event = end_event;
            start_byte = end_byte;
            Some(run)
        })
    }
}

impl From<Vec<Event>> for EventBlock {
    fn from(events: Vec<Event>) -> Self {
        Self::from_events(&events)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Attribute, Severity};

    fn event(n: usize) -> Event {
        Event {
            id: format!("e{n}"),
            time: n as i64,
            severity: Severity::Major,
            attributes: vec![Attribute::new("k", "v")],
            body: "x".repeat(n * 10),
        }
    }

    #[test]
    fn decode_checks_and_keeps_boundaries() {
        let events: Vec<Event> = (0..20).map(event).collect();
        let block = EventBlock::from_events(&events);
        let again = EventBlock::decode(block.bytes().to_vec(), 20).unwrap();
        assert_eq!(again, block);
        assert_eq!(again.to_events(), events);
        assert!(EventBlock::decode(block.bytes().to_vec(), 21).is_err());
        assert!(EventBlock::decode(block.bytes()[..10].to_vec(), 20).is_err());
    }

    #[test]
    fn runs_cover_every_event_once_in_order() {
        let events: Vec<Event> = (0..50).map(event).collect();
        let block = EventBlock::from_events(&events);
        for target in [1, 100, 1000, 1 << 20] {
            let mut rebuilt = Vec::new();
            for (count, bytes) in block.runs(target) {
                assert!(count > 0);
                rebuilt.extend(decode_events(bytes, count).unwrap());
            }
            assert_eq!(rebuilt, events, "target {target}");
        }
        assert_eq!(EventBlock::default().runs(100).count(), 0);
    }
}
