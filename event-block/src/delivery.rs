//! The binary body of a protocol v1 delivery (`docs/protocol.md`, "Binary
//! body"): a short prefix naming the agent, then per stream its left-out
//! ranges and the sequenced event block exactly as safd's queue holds it.
//!
//! The `mgmt-http` plugin writes it with [`put_header`] and [`put_batch`]
//! (the block is copied, never re-encoded); a server reads it with
//! [`parse`], which checks the framing, the UTF-8 of every string and that
//! each batch's seqs increase, and hands back every event borrowed from the
//! body together with its encoded bytes, so that a server can append the
//! events to its own log as they came.
//!
//! ```text
//! body    = "SAFD" %x01 string(agent_id) string(group) varint(epoch)
//!           varint(batches) batch{batches}
//! batch   = string(stream) varint(ranges) (varint(first) varint(last)){ranges}
//!           varint(count) varint(len(block)) block
//! string  = varint(len) UTF-8 bytes
//! block   = a sequenced block (crate docs) of exactly `count` events in
//!           `len(block)` bytes, seqs 1 or more and increasing
//! ```

use crate::{BlockErrorKind, EventRef, names, put_varint};
use std::fmt;

/// The media type of the binary body.
pub const CONTENT_TYPE: &str = "application/vnd.safd.event-block";

/// The bytes a binary body starts with: the magic and the version.
pub const PREFIX: [u8; 5] = *b"SAFD\x01";

/// The fewest bytes a batch takes: an empty stream name, no ranges, no
/// events, an empty block.
const MIN_BATCH_BYTES: usize = 4;

/// Start a body: the prefix, who sends it, and how many batches follow
/// (the caller then writes exactly that many with [`put_batch`]).
pub fn put_header(out: &mut Vec<u8>, agent_id: &str, group: &str, epoch: u64, batches: usize) {
    out.extend_from_slice(&PREFIX);
    put_string(out, agent_id);
    put_string(out, group);
    put_varint(out, epoch);
    put_varint(out, batches as u64);
}

/// Append one stream's batch: its left-out ranges (inclusive, in order)
/// and its sequenced block of `count` events, copied as it is.
pub fn put_batch<R>(out: &mut Vec<u8>, stream: &str, left_out: R, count: u32, block: &[u8])
where
    R: IntoIterator<Item = (u64, u64)>,
    R::IntoIter: ExactSizeIterator,
{
    put_string(out, stream);
    let left_out = left_out.into_iter();
    put_varint(out, left_out.len() as u64);
    for (first, last) in left_out {
        put_varint(out, first);
        put_varint(out, last);
    }
    put_varint(out, u64::from(count));
    put_varint(out, block.len() as u64);
    out.extend_from_slice(block);
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// A binary body, read and checked, borrowing from the request.
#[derive(Debug, Clone)]
pub struct Body<'a> {
    pub agent_id: &'a str,
    pub group: &'a str,
    pub epoch: u64,
    pub batches: Vec<Batch<'a>>,
}

/// One stream's part of a body.
#[derive(Debug, Clone)]
pub struct Batch<'a> {
    pub stream: &'a str,
    /// Inclusive `(first, last)` ranges, as sent (their meaning is the
    /// server's to check).
    pub left_out: Vec<(u64, u64)>,
    pub events: Vec<Event<'a>>,
}

/// One event of a batch: its seq, its fields, and its encoded bytes (seq
/// included), which a sequenced block can take as they are.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub seq: u64,
    pub event: EventRef<'a>,
    pub encoded: &'a [u8],
}

/// Why a body was refused: where (byte offset in the body, and the batch)
/// and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    pub offset: usize,
    /// The batch's index and stream name (as far as it was read).
    pub batch: Option<(usize, String)>,
    pub kind: BodyErrorKind,
}

/// What was wrong at [`BodyError::offset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyErrorKind {
    /// It does not start with `SAFD`.
    NotABody,
    /// A version this reader does not know.
    Version(u8),
    /// The body ends inside a field.
    Truncated,
    /// A number runs past 10 bytes.
    BadVarint,
    /// A name is not valid UTF-8.
    BadUtf8 { field: &'static str },
    /// More batches or ranges than the rest of the body can hold.
    CountTooLarge { field: &'static str, declared: u64 },
    /// The event block does not decode (or its count is wrong).
    Block(BlockErrorKind),
    /// An event with seq 0.
    SeqZero,
    /// A seq not above the one before it.
    SeqOrder { seq: u64, after: u64 },
    /// Bytes after the last declared batch.
    TrailingBytes,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "binary body, byte {}", self.offset)?;
        if let Some((index, stream)) = &self.batch {
            write!(
                f,
                " (batches[{index}], stream `{}`)",
                names::quote(stream, names::QUOTE_CHARS)
            )?;
        }
        f.write_str(": ")?;
        match &self.kind {
            BodyErrorKind::NotABody => {
                f.write_str("does not start with `SAFD`; send the binary body of docs/protocol.md")
            }
            BodyErrorKind::Version(v) => {
                write!(f, "version {v}; this server reads version 1")
            }
            BodyErrorKind::Truncated => f.write_str("ends in the middle of a field"),
            BodyErrorKind::BadVarint => f.write_str("malformed number (varint)"),
            BodyErrorKind::BadUtf8 { field } => write!(f, "{field} is not valid UTF-8"),
            BodyErrorKind::CountTooLarge { field, declared } => write!(
                f,
                "declares {declared} {field}, more than the rest of the body can hold"
            ),
            BodyErrorKind::Block(kind) => {
                // The block's own messages, without its offset (ours is
                // counted from the start of the body).
                let inner = crate::BlockError {
                    offset: 0,
                    kind: kind.clone(),
                }
                .to_string();
                let inner = inner.split_once(": ").map_or(inner.as_str(), |(_, s)| s);
                write!(f, "event block {inner}")
            }
            BodyErrorKind::SeqZero => f.write_str("seq 0; seqs start at 1"),
            BodyErrorKind::SeqOrder { seq, after } => write!(
                f,
                "seq {seq} follows seq {after}; the seqs of a batch must increase"
            ),
            BodyErrorKind::TrailingBytes => f.write_str("bytes after the last declared batch"),
        }
    }
}

impl std::error::Error for BodyError {}

/// Read and check a binary body: the framing, the UTF-8 of every name and
/// event, every block's count, and that each batch's seqs are 1 or more
/// and increase. Nothing of a body that fails is returned.
pub fn parse(body: &[u8]) -> Result<Body<'_>, BodyError> {
    let mut reader = Reader {
        bytes: body,
        pos: 0,
        batch: None,
    };
    let prefix = reader.take(PREFIX.len())?;
    if prefix[..4] != PREFIX[..4] {
        return Err(reader.error_at(0, BodyErrorKind::NotABody));
    }
    if prefix[4] != PREFIX[4] {
        return Err(reader.error_at(4, BodyErrorKind::Version(prefix[4])));
    }
    let agent_id = reader.string("agent_id")?;
    let group = reader.string("group")?;
    let epoch = reader.varint()?;
    let declared = reader.count("batches", MIN_BATCH_BYTES)?;
    let mut batches = Vec::with_capacity(declared);
    for index in 0..declared {
        reader.batch = Some((index, String::new()));
        let stream = reader.string("stream")?;
        reader.batch = Some((index, stream.to_owned()));
        let ranges = reader.count("left_out ranges", 2)?;
        let mut left_out = Vec::with_capacity(ranges);
        for _ in 0..ranges {
            left_out.push((reader.varint()?, reader.varint()?));
        }
        let count = reader.varint()?;
        let len = reader.length()?;
        let block_start = reader.pos;
        let block = reader.take(len)?;
        // A count beyond the block's bytes is refused by the block reader
        // before anything is sized by it.
        let Ok(count) = u32::try_from(count) else {
            return Err(reader.error_at(
                block_start,
                BodyErrorKind::CountTooLarge {
                    field: "events",
                    declared: count,
                },
            ));
        };
        let events = reader.events(block_start, block, count)?;
        batches.push(Batch {
            stream,
            left_out,
            events,
        });
    }
    reader.batch = None;
    if reader.pos != body.len() {
        return Err(reader.error_at(reader.pos, BodyErrorKind::TrailingBytes));
    }
    Ok(Body {
        agent_id,
        group,
        epoch,
        batches,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    batch: Option<(usize, String)>,
}

impl<'a> Reader<'a> {
    fn error_at(&self, offset: usize, kind: BodyErrorKind) -> BodyError {
        BodyError {
            offset,
            batch: self.batch.clone(),
            kind,
        }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], BodyError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.error_at(self.pos, BodyErrorKind::Truncated))?;
        let piece = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(piece)
    }

    fn varint(&mut self) -> Result<u64, BodyError> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        match crate::read_varint(rest) {
            Ok((value, len)) => {
                self.pos += len;
                Ok(value)
            }
            Err(BlockErrorKind::BadVarint) => {
                Err(self.error_at(self.pos, BodyErrorKind::BadVarint))
            }
            Err(_) => Err(self.error_at(self.bytes.len(), BodyErrorKind::Truncated)),
        }
    }

    fn length(&mut self) -> Result<usize, BodyError> {
        let at = self.pos;
        let len = self.varint()?;
        usize::try_from(len).map_err(|_| self.error_at(at, BodyErrorKind::Truncated))
    }

    /// A declared number of items of at least `min_bytes` each, refused
    /// when the rest of the body cannot hold them: a count is never
    /// trusted as a size.
    fn count(&mut self, field: &'static str, min_bytes: usize) -> Result<usize, BodyError> {
        let at = self.pos;
        let declared = self.varint()?;
        let room = (self.bytes.len() - self.pos) / min_bytes;
        usize::try_from(declared)
            .ok()
            .filter(|&n| n <= room)
            .ok_or_else(|| self.error_at(at, BodyErrorKind::CountTooLarge { field, declared }))
    }

    fn string(&mut self, field: &'static str) -> Result<&'a str, BodyError> {
        let len = self.length()?;
        let start = self.pos;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map_err(|e| self.error_at(start + e.valid_up_to(), BodyErrorKind::BadUtf8 { field }))
    }

    /// The events of one block that starts at `block_start` in the body.
    fn events(
        &self,
        block_start: usize,
        block: &'a [u8],
        count: u32,
    ) -> Result<Vec<Event<'a>>, BodyError> {
        let mut events = Vec::with_capacity(count as usize);
        let mut items = crate::sequenced(block, count);
        let mut previous = 0u64;
        loop {
            let start = items.offset();
            let Some(item) = items.next() else {
                break;
            };
            let (seq, event) = item
                .map_err(|e| self.error_at(block_start + e.offset, BodyErrorKind::Block(e.kind)))?;
            if seq == 0 {
                return Err(self.error_at(block_start + start, BodyErrorKind::SeqZero));
            }
            if seq <= previous {
                return Err(self.error_at(
                    block_start + start,
                    BodyErrorKind::SeqOrder {
                        seq,
                        after: previous,
                    },
                ));
            }
            previous = seq;
            events.push(Event {
                seq,
                event,
                encoded: &block[start..items.offset()],
            });
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::BlockWriter;

    fn block(seqs: &[u64]) -> (u32, Vec<u8>) {
        let mut writer = BlockWriter::new();
        for &seq in seqs {
            writer.push_sequenced(
                seq,
                &format!("id-{seq}"),
                1_000 + seq as i64,
                3,
                [("system", "\\PROD1"), ("k", "é")],
                "LINE NOT READY",
            );
        }
        writer.finish()
    }

    /// (stream, left-out ranges, event count, block) of one batch.
    type BatchParts<'a> = (&'a str, &'a [(u64, u64)], u32, &'a [u8]);

    fn body(batches: &[BatchParts<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        put_header(&mut out, "agent-1", "mgmt", 7, batches.len());
        for (stream, left_out, count, bytes) in batches {
            put_batch(&mut out, stream, left_out.iter().copied(), *count, bytes);
        }
        out
    }

    #[test]
    fn a_body_reads_back_with_each_event_and_its_bytes() {
        let (count_a, block_a) = block(&[1, 2, 5]);
        let (count_b, block_b) = block(&[]);
        let bytes = body(&[
            ("ems", &[(3, 4)], count_a, &block_a),
            ("other", &[(1, 9)], count_b, &block_b),
        ]);
        let parsed = parse(&bytes).unwrap();
        assert_eq!(
            (parsed.agent_id, parsed.group, parsed.epoch),
            ("agent-1", "mgmt", 7)
        );
        assert_eq!(parsed.batches.len(), 2);
        let ems = &parsed.batches[0];
        assert_eq!(ems.stream, "ems");
        assert_eq!(ems.left_out, [(3, 4)]);
        let seqs: Vec<u64> = ems.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 5]);
        assert_eq!(ems.events[2].event.id, "id-5");
        assert_eq!(ems.events[2].event.attributes.get("k"), Some("é"));
        // The encoded events, back to back, are the block as it was sent.
        let mut again = BlockWriter::new();
        for event in &ems.events {
            again.push_encoded(1, event.encoded);
        }
        assert_eq!(again.finish(), (count_a, block_a));
        assert_eq!(parsed.batches[1].left_out, [(1, 9)]);
        assert!(parsed.batches[1].events.is_empty());
    }

    /// The worked example of docs/protocol.md ("Binary body").
    #[test]
    fn the_documented_example_is_exact() {
        let mut block = BlockWriter::new();
        block.push_sequenced(7, "e", 0, 5, std::iter::empty::<(&str, &str)>(), "hi");
        let (count, bytes) = block.finish();
        let mut out = Vec::new();
        put_header(&mut out, "a", "g", 3, 1);
        put_batch(&mut out, "s", [], count, &bytes);
        assert_eq!(
            out,
            [
                0x53, 0x41, 0x46, 0x44, 0x01, 0x01, 0x61, 0x01, 0x67, 0x03, 0x01, 0x01, 0x73, 0x00,
                0x01, 0x09, 0x07, 0x00, 0x05, 0x00, 0x01, 0x02, 0x65, 0x68, 0x69
            ]
        );
        let parsed = parse(&out).unwrap();
        assert_eq!(parsed.batches[0].events[0].event.body, "hi");
    }

    fn refused(bytes: &[u8]) -> String {
        parse(bytes).unwrap_err().to_string()
    }

    #[test]
    fn every_kind_of_damage_is_refused_naming_the_place() {
        let (count, good) = block(&[1, 2, 3]);
        assert!(refused(b"{\"agent_id\":1}").contains("does not start with `SAFD`"));
        assert!(refused(b"SAFD\x02").contains("version 2"));
        assert!(refused(b"SAF").contains("ends in the middle"));

        // A wrong count either way.
        let message = refused(&body(&[("ems", &[], count + 1, &good)]));
        assert!(message.contains("batches[0], stream `ems`"), "{message}");
        assert!(
            message.contains("declares 4 events but holds 3"),
            "{message}"
        );
        let message = refused(&body(&[("ems", &[], count - 1, &good)]));
        assert!(
            message.contains("bytes left after the declared 2 events"),
            "{message}"
        );
        let message = refused(&body(&[("ems", &[], 1_000_000, &good)]));
        assert!(message.contains("declares 1000000 events"), "{message}");

        // Bad UTF-8 inside an event's text: the offset points at it.
        let mut bad = good.clone();
        let at = bad.windows(4).position(|w| w == b"LINE").unwrap();
        bad[at] = 0xff;
        let bytes = body(&[("ems", &[], count, &bad)]);
        let error = parse(&bytes).unwrap_err();
        assert_eq!(error.kind, BodyErrorKind::Block(BlockErrorKind::BadUtf8));
        assert_eq!(bytes[error.offset], 0xff);

        // Bad UTF-8 in a name.
        let mut bytes = body(&[("ems", &[], count, &good)]);
        let at = bytes.windows(3).position(|w| w == b"ems").unwrap();
        bytes[at + 1] = 0xc3;
        assert!(refused(&bytes).contains("stream is not valid UTF-8"));

        // Seqs out of order, repeated, or 0.
        let (count, backwards) = block(&[1, 3, 2]);
        let message = refused(&body(&[("ems", &[], count, &backwards)]));
        assert!(message.contains("seq 2 follows seq 3"), "{message}");
        let (count, twice) = block(&[4, 4]);
        assert!(refused(&body(&[("ems", &[], count, &twice)])).contains("seq 4 follows seq 4"));
        let (count, zero) = block(&[0, 1]);
        assert!(refused(&body(&[("ems", &[], count, &zero)])).contains("seq 0"));

        // More batches declared than sent, bytes after the last, a huge
        // batch count.
        let (count, good) = block(&[1]);
        let mut bytes = body(&[("ems", &[], count, &good)]);
        let mut short = bytes.clone();
        short.truncate(short.len() - 1);
        assert!(refused(&short).contains("ends in the middle"));
        bytes.push(0);
        assert!(refused(&bytes).contains("bytes after the last declared batch"));
        let mut huge = Vec::new();
        put_header(&mut huge, "a", "g", 1, usize::MAX >> 1);
        assert!(refused(&huge).contains("more than the rest of the body can hold"));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..200))| {
            let mut with_prefix = PREFIX.to_vec();
            with_prefix.extend_from_slice(&bytes);
            let _ = parse(&bytes);
            let _ = parse(&with_prefix);
        });
    }
}
