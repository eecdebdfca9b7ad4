//! One stored segment: the events of one stream newly held by one delivery
//! (up to [`SEGMENT_BYTES`]), plus the seqs it settled without storing an
//! event (duplicates of a stored id, rejections).
//!
//! Many events per segment, and one index entry per segment rather than per
//! event: sled rewrites a whole leaf node on updates, so per-event entries
//! cost far more than the events themselves (the same reason as the
//! engine's queue, ARCHITECTURE §5).
//!
//! A segment is one record of the event log (`journal`); its header also
//! says what the record changes in the index (agent, stream, inbox,
//! counters), so that records the index missed can be indexed again on
//! open. Servers before the log kept segments in sled itself; those are
//! still read.
//!
//! Layout: version byte, varint header length, JSON header, then a
//! sequenced event block (`safd-event-block`) of the stored events.

use crate::id_index::IdHash;
use safd_event_block::{BlockWriter, EventRef, put_varint};
use serde::{Deserialize, Serialize};

const VERSION: u8 = 1;

/// Target size of one segment's event block: a delivery of 1 024
/// realistic events (about 330 KiB) is one segment, so one log record and
/// one index entry. (Servers before the event log kept segments in sled
/// and cut them at 128 KiB; those are still read.)
pub const SEGMENT_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SegmentHeader {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stream: String,
    /// The first seq settled into it (the index key); none for a record
    /// that only carries counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    /// Its events wait in the inbox for the event service.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub into_inbox: bool,
    /// The server's counters once this record is indexed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<crate::store::Counters>,
    /// When the server stored it (microseconds since the Unix epoch).
    pub received_at: i64,
    /// Events in the block.
    pub count: u32,
    /// (seq, stream, seq): the event id was already stored there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicates: Vec<(u64, String, u64)>,
    /// (seq, reason): refused for good.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<(u64, String)>,
    /// (first, last): seqs the agent's group left out for this server
    /// (its `min_severity`), held as settled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<(u64, u64)>,
}

/// A segment being filled by a delivery.
#[derive(Debug, Default)]
pub struct SegmentBuilder {
    /// The first seq settled into it: the segment's key (each seq is held
    /// once, so no two segments share it).
    pub first_seq: Option<u64>,
    pub header: SegmentHeader,
    pub events: BlockWriter,
    /// The id hash and seq of each event in `events`, for the index (so
    /// that indexing a delivery does not read its events again).
    pub ids: Vec<(IdHash, u64)>,
}

/// An encoded segment with what indexing it needs.
#[derive(Debug)]
pub struct SealedSegment {
    pub bytes: Vec<u8>,
    pub header: SegmentHeader,
    pub ids: Vec<(IdHash, u64)>,
}

impl SegmentBuilder {
    pub fn note_seq(&mut self, seq: u64) {
        self.first_seq.get_or_insert(seq);
    }

    pub fn is_full(&self) -> bool {
        self.events.byte_len() >= SEGMENT_BYTES
    }

    /// The record's bytes, with its header and ids kept for indexing.
    pub fn seal(self) -> Result<SealedSegment, serde_json::Error> {
        let mut header = self.header;
        header.first_seq = self.first_seq;
        let (count, block) = self.events.finish();
        header.count = count;
        let encoded_header = serde_json::to_vec(&header)?;
        let mut out = Vec::with_capacity(encoded_header.len() + block.len() + 8);
        out.push(VERSION);
        put_varint(&mut out, encoded_header.len() as u64);
        out.extend_from_slice(&encoded_header);
        out.extend_from_slice(&block);
        Ok(SealedSegment {
            bytes: out,
            header,
            ids: self.ids,
        })
    }
}

/// A stored segment, borrowed from its database value.
#[derive(Debug)]
pub struct Segment<'a> {
    pub header: SegmentHeader,
    block: &'a [u8],
}

impl<'a> Segment<'a> {
    pub fn decode(bytes: &'a [u8]) -> Result<Self, String> {
        let (&version, rest) = bytes.split_first().ok_or("empty record")?;
        if version != VERSION {
            return Err(format!(
                "record version {version}, this server reads {VERSION}"
            ));
        }
        let (len, rest) = read_varint(rest).ok_or("truncated header length")?;
        let len = usize::try_from(len).map_err(|_| "header length out of range")?;
        if rest.len() < len {
            return Err("truncated header".to_owned());
        }
        let (header, block) = rest.split_at(len);
        let header: SegmentHeader =
            serde_json::from_slice(header).map_err(|e| format!("bad header: {e}"))?;
        Ok(Self { header, block })
    }

    /// The stored events with their seqs.
    pub fn events(&self) -> impl Iterator<Item = Result<(u64, EventRef<'a>), String>> + 'a {
        safd_event_block::sequenced(self.block, self.header.count)
            .map(|item| item.map_err(|e| e.to_string()))
    }
}

fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (value, len) = safd_event_block::read_varint(bytes).ok()?;
    Some((value, bytes.get(len..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_reads_back_what_was_written() {
        let mut builder = SegmentBuilder::default();
        builder.note_seq(7);
        builder.header.received_at = 42;
        builder.header.rejected.push((8, "bad time".to_owned()));
        builder
            .events
            .push_sequenced(7, "id-7", 1_000, 5, [("k", "v")], "body");
        let bytes = builder.seal().unwrap().bytes;
        let segment = Segment::decode(&bytes).unwrap();
        assert_eq!(segment.header.received_at, 42);
        assert_eq!(segment.header.rejected, vec![(8, "bad time".to_owned())]);
        let events: Vec<_> = segment.events().collect::<Result<_, _>>().unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, 7);
        assert_eq!(events[0].1.id, "id-7");
        assert_eq!(events[0].1.attributes.get("k"), Some("v"));
    }

    #[test]
    fn damaged_records_are_named_not_panicked_on() {
        assert!(Segment::decode(&[]).is_err());
        assert!(Segment::decode(&[9]).unwrap_err().contains("version 9"));
        assert!(Segment::decode(&[VERSION, 50, b'{']).is_err());
    }
}
