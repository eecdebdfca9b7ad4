//! Deduplication on event id: which (agent, stream, id) is stored under
//! which seq.
//!
//! Ids are unique per agent *and stream*: two sources of one agent that
//! happen to produce the same id (two EMS readers configured alike, say)
//! hold different events, and both are stored. (Deduplicating per agent
//! alone stored one and counted the other as a duplicate: an event lost
//! with no error anywhere.)
//!
//! The index lives in memory, keyed by a 128-bit hash of (agent, id), and
//! is persisted as one small record per segment (the hashes and seqs of
//! that segment's events) written in the same atomic batch as the segment.
//! On open those records rebuild it. A per-event database key would cost
//! a leaf-node rewrite per event (see `segment`); 24 bytes per event read
//! once at start cost nothing by comparison. Memory: about 40 bytes per
//! stored event.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use xxhash_rust::xxh3::Xxh3;

/// The keys are already xxh3 hashes: hashing them again (SipHash, the
/// default) cost more than the rest of the index. This passes the low 64
/// bits through.
#[derive(Debug, Default)]
pub struct PassThrough(u64);

/// For maps keyed by [`IdHash`].
pub type BuildPassThrough = BuildHasherDefault<PassThrough>;

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than u128; fold them in anyway.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

/// xxh3-128 of (agent, id): stable across versions (it is persisted);
/// a collision between two real ids is not a practical concern at 128 bits.
pub type IdHash = u128;

///
/// The input is `agent \0 id`, one-to-one as long as the agent holds no
/// 0 byte, which the protocol's name rules make sure of. An agent that
/// holds one anyway (a store used directly) is hashed in a form of its
/// own, `0xFF len(agent) agent id`: no UTF-8 text starts with 0xFF, so it
/// meets no hash of the first form either.
pub fn id_hash(agent: &str, id: &str) -> IdHash {
    let mut hasher = Xxh3::new();
    if agent.as_bytes().contains(&0) {
        hasher.update(&[0xFF]);
        hasher.update(&(agent.len() as u64).to_le_bytes());
        hasher.update(agent.as_bytes());
    } else {
        hasher.update(agent.as_bytes());
        hasher.update(&[0]);
    }
    hasher.update(id.as_bytes());
    hasher.digest128()
}

const ENTRY: usize = 16 + 8;

/// Encode a segment's (hash, seq) pairs.
pub fn encode_entries(entries: &[(IdHash, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY);
    for (hash, seq) in entries {
        out.extend_from_slice(&hash.to_le_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
    }
    out
}

/// Decode what [`encode_entries`] wrote; `None` if the length is wrong.
pub fn decode_entries(bytes: &[u8]) -> Option<impl Iterator<Item = (IdHash, u64)> + '_> {
    if !bytes.len().is_multiple_of(ENTRY) {
        return None;
    }
    Some(bytes.chunks_exact(ENTRY).filter_map(|entry| {
        let (hash, seq) = entry.split_first_chunk::<16>()?;
        let seq: [u8; 8] = seq.try_into().ok()?;
        Some((u128::from_le_bytes(*hash), u64::from_be_bytes(seq)))
    }))
}

/// The key of `hash` (of agent and id, as persisted) within stream number
/// `stream`: the in-memory index is per (agent, stream, id). The persisted
/// hashes stay those of (agent, id), so data written before ids were
/// scoped by stream reads back unchanged.
pub fn scoped(hash: IdHash, stream: u32) -> IdHash {
    // An odd 128-bit constant (from the golden ratio): distinct streams
    // give keys that differ in every word.
    const MIX: u128 = 0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835;
    hash ^ (u128::from(stream) + 1).wrapping_mul(MIX)
}

/// Where each stored id is, per stream: stream names are interned so an
/// entry stays small.
#[derive(Debug, Default)]
pub struct IdIndex {
    /// Scoped key → seq.
    locations: HashMap<IdHash, u64, BuildPassThrough>,
    streams: Vec<String>,
    stream_numbers: HashMap<String, u32>,
}

impl IdIndex {
    /// The seq under which the id hashed as `hash` is stored in `stream`.
    #[cfg(test)]
    pub fn get(&self, hash: IdHash, stream: &str) -> Option<u64> {
        self.of_stream(stream).get(hash)
    }

    pub fn insert(&mut self, hash: IdHash, stream: &str, seq: u64) {
        self.insert_many(stream, &[(hash, seq)]);
    }

    /// Insert the (hash, seq) pairs of one stream (its name looked up
    /// once).
    pub fn insert_many(&mut self, stream: &str, entries: &[(IdHash, u64)]) {
        if entries.is_empty() {
            return;
        }
        let number = match self.stream_numbers.get(stream) {
            Some(&number) => number,
            None => {
                let number = u32::try_from(self.streams.len()).unwrap_or(u32::MAX);
                self.streams.push(stream.to_owned());
                self.stream_numbers.insert(stream.to_owned(), number);
                number
            }
        };
        self.locations.reserve(entries.len());
        for &(hash, seq) in entries {
            self.locations.insert(scoped(hash, number), seq);
        }
    }

    /// The ids of one stream, for looking up many (its name looked up
    /// once).
    pub fn of_stream(&self, stream: &str) -> StreamIds<'_> {
        StreamIds {
            index: self,
            number: self.stream_numbers.get(stream).copied(),
        }
    }

    pub fn len(&self) -> usize {
        self.locations.len()
    }
}

/// The ids of one stream of an [`IdIndex`].
#[derive(Debug, Clone, Copy)]
pub struct StreamIds<'a> {
    index: &'a IdIndex,
    /// None: the stream holds no ids yet.
    number: Option<u32>,
}

impl StreamIds<'_> {
    pub fn get(&self, hash: IdHash) -> Option<u64> {
        let number = self.number?;
        self.index.locations.get(&scoped(hash, number)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_lengths_are_refused() {
        let entries = vec![(id_hash("a", "x"), 7), (id_hash("a", "y"), 9)];
        let bytes = encode_entries(&entries);
        let back: Vec<_> = decode_entries(&bytes).unwrap().collect();
        assert_eq!(back, entries);
        assert!(decode_entries(&bytes[1..]).is_none());
    }

    #[test]
    fn the_agent_is_part_of_the_identity() {
        assert_ne!(id_hash("a", "bc"), id_hash("ab", "c"));
        assert_ne!(id_hash("a", "x"), id_hash("b", "x"));
        assert_ne!(id_hash("a\0b", "c"), id_hash("a", "b\0c"));
        assert_ne!(id_hash("a\0", "bc"), id_hash("a", "\0bc"));
        let mut index = IdIndex::default();
        index.insert(id_hash("a", "x"), "s1", 4);
        assert_eq!(index.get(id_hash("a", "x"), "s1"), Some(4));
        assert_eq!(index.get(id_hash("b", "x"), "s1"), None);
        // The same id in another stream of the agent is another event.
        assert_eq!(index.get(id_hash("a", "x"), "s2"), None);
        index.insert(id_hash("a", "x"), "s2", 9);
        assert_eq!(index.get(id_hash("a", "x"), "s1"), Some(4));
        assert_eq!(index.get(id_hash("a", "x"), "s2"), Some(9));
        assert_eq!(index.len(), 2);
    }
}
