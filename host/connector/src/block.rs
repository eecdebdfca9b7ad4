//! Events kept in their encoded form between a plugin and the queue.

use crate::event::{Event, SequencedEvent, decode_events};
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
        // The declared count is checked by the reader; it sizes nothing.
        let mut ends =
            Vec::with_capacity((count as usize).min(safd_event_block::max_events(bytes.len())));
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

/// Events of one stream with their seqs, encoded as the WIT
/// `sequenced-block` a destination receives. The dispatcher builds it
/// straight from stored chunks (the events' bytes as a source sent them,
/// each behind its seq), so delivering an event neither decodes it into
/// owned strings nor encodes it again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SequencedBlock {
    bytes: Vec<u8>,
    seqs: Vec<u64>,
    /// Where each event (its seq included) ends in `bytes`.
    ends: Vec<u32>,
    /// Id, attribute and body bytes of all events (batch byte limits).
    text_bytes: usize,
}

impl SequencedBlock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append the event `encoded` (one event of a checked event block, see
    /// [`safd_event_block::spans`]) with its seq.
    pub fn push_encoded(&mut self, seq: u64, encoded: &[u8], text_bytes: usize) {
        safd_event_block::put_varint(&mut self.bytes, seq);
        self.bytes.extend_from_slice(encoded);
        self.finish_event(seq, text_bytes);
    }

    /// Append an owned event with its seq.
    pub fn push(&mut self, event: &SequencedEvent) {
        let mut writer = BlockWriter::with_capacity(event.event.byte_size() + 32);
        event.event.write_sequenced_to(event.seq, &mut writer);
        let (_, bytes) = writer.finish();
        self.bytes.extend_from_slice(&bytes);
        self.finish_event(event.seq, event.event.byte_size());
    }

    fn finish_event(&mut self, seq: u64, text_bytes: usize) {
        self.seqs.push(seq);
        // Deliveries are bounded far below 4 GiB (batch byte limits).
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
        self.text_bytes += text_bytes;
    }

    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// The encoded block.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The events' seqs, in order.
    pub fn seqs(&self) -> &[u64] {
        &self.seqs
    }

    pub fn first_seq(&self) -> Option<u64> {
        self.seqs.first().copied()
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.seqs.last().copied()
    }

    /// The id, attribute and body bytes of all events.
    pub fn text_bytes(&self) -> usize {
        self.text_bytes
    }

    /// The event at `index`, owned.
    pub fn get(&self, index: usize) -> Option<SequencedEvent> {
        let start = match index {
            0 => 0,
            _ => *self.ends.get(index - 1)? as usize,
        };
        let end = *self.ends.get(index)? as usize;
        let mut events = safd_event_block::sequenced(self.bytes.get(start..end)?, 1);
        let (seq, event) = events.next()?.ok()?;
        Some(SequencedEvent {
            seq,
            event: Event::from_ref(&event),
        })
    }

    /// The events of at least `min` severity, and the seqs of the others
    /// as inclusive ranges in order: what a group with `min_severity`
    /// delivers and leaves out. It decodes and copies the kept events;
    /// groups without `min_severity` never come here.
    pub fn split_by_severity(&self, min: safd_event_block::Severity) -> (Self, Vec<(u64, u64)>) {
        let mut kept = Vec::new();
        let mut left_out: Vec<(u64, u64)> = Vec::new();
        for event in self.to_events() {
            if event.event.severity >= min {
                kept.push(event);
                continue;
            }
            match left_out.last_mut() {
                Some(range) if range.1 + 1 == event.seq => range.1 = event.seq,
                _ => left_out.push((event.seq, event.seq)),
            }
        }
        (kept.into(), left_out)
    }

    /// The events, owned. An event whose text is not UTF-8 (possible only
    /// if a stored chunk was damaged under an intact checksum) ends the
    /// list: the error is the caller's to see in the count.
    pub fn to_events(&self) -> Vec<SequencedEvent> {
        safd_event_block::sequenced(&self.bytes, self.len() as u32)
            .map_while(Result::ok)
            .map(|(seq, event)| SequencedEvent {
                seq,
                event: Event::from_ref(&event),
            })
            .collect()
    }
}

impl From<Vec<SequencedEvent>> for SequencedBlock {
    fn from(events: Vec<SequencedEvent>) -> Self {
        events.into_iter().collect()
    }
}

impl FromIterator<SequencedEvent> for SequencedBlock {
    fn from_iter<I: IntoIterator<Item = SequencedEvent>>(events: I) -> Self {
        let mut block = Self::new();
        for event in events {
            block.push(&event);
        }
        block
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
