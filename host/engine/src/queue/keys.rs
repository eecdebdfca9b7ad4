//! Key layout of the queue's single sled tree. One tree, so that events and
//! the source cursor that produced them commit in one atomic batch.
//!
//! - `C` stream-id(u32 BE) first-seq(u64 BE) → where a chunk of events is
//!   stored (segment, offset, length) and its ingest and earliest times
//! - `E` (same layout as `C`)                  → a chunk of events stored in sled
//!   itself, as queues before segment files did; moved into segments at open
//! - `S` stream-id(u32 BE)                   → the stream's state (name, next seq, cursor)
//! - `G` group name                           → the group's epoch, active member and acked seqs
//! - `Q` original key                         → a quarantined (damaged) record
//! - `D` name-len(u16 BE) group stream-id(u32 BE) seq(u64 BE) → a dead letter
//!
//! Big-endian integers keep sled's byte order equal to numeric order, so a
//! range scan walks a stream in seq order.

pub(crate) const EVENTS: u8 = b'C';
pub(crate) const LEGACY_EVENTS: u8 = b'E';
pub(crate) const STREAM: u8 = b'S';
pub(crate) const QUARANTINE: u8 = b'Q';
pub(crate) const GROUP: u8 = b'G';
pub(crate) const DEAD_LETTER: u8 = b'D';

pub(crate) fn group(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1);
    key.push(GROUP);
    key.extend_from_slice(name.as_bytes());
    key
}

pub(crate) fn events(stream: u32, first_seq: u64) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[0] = EVENTS;
    key[1..5].copy_from_slice(&stream.to_be_bytes());
    key[5..].copy_from_slice(&first_seq.to_be_bytes());
    key
}

pub(crate) fn stream(stream: u32) -> [u8; 5] {
    let mut key = [0u8; 5];
    key[0] = STREAM;
    key[1..].copy_from_slice(&stream.to_be_bytes());
    key
}

pub(crate) fn quarantine(original: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(original.len() + 1);
    key.push(QUARANTINE);
    key.extend_from_slice(original);
    key
}

/// Decode an events key into (stream id, first seq).
pub(crate) fn parse_events(key: &[u8]) -> Option<(u32, u64)> {
    parse_chunk_key(key, EVENTS)
}

/// Decode the key of a chunk stored in sled (see [`LEGACY_EVENTS`]).
pub(crate) fn parse_legacy_events(key: &[u8]) -> Option<(u32, u64)> {
    parse_chunk_key(key, LEGACY_EVENTS)
}

fn parse_chunk_key(key: &[u8], prefix: u8) -> Option<(u32, u64)> {
    if key.len() != 13 || key[0] != prefix {
        return None;
    }
    let stream = u32::from_be_bytes(key[1..5].try_into().ok()?);
    let seq = u64::from_be_bytes(key[5..].try_into().ok()?);
    Some((stream, seq))
}

/// Decode a stream key into its id.
pub(crate) fn parse_stream(key: &[u8]) -> Option<u32> {
    if key.len() != 5 || key[0] != STREAM {
        return None;
    }
    Some(u32::from_be_bytes(key[1..].try_into().ok()?))
}

/// The prefix of every dead letter of `group`.
pub(crate) fn dead_letters(group: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(group.len() + 15);
    key.push(DEAD_LETTER);
    // Group names are short (validated by the config); saturating keeps the
    // key well-formed regardless.
    let len = u16::try_from(group.len()).unwrap_or(u16::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(group.as_bytes());
    key
}

pub(crate) fn dead_letter(group: &str, stream: u32, seq: u64) -> Vec<u8> {
    let mut key = dead_letters(group);
    key.extend_from_slice(&stream.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}
