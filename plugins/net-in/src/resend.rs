//! Recognising what a RELP sender sends again.
//!
//! A RELP sender keeps every message it has no `200 OK` for and sends it
//! again after a reconnect, with a new transaction number. A message safd
//! stored whose answer never reached the sender (safd killed between the
//! durable write and the commit, or the connection lost before the answer)
//! comes back: stored twice, it would reach the servers twice under two
//! ids. The guard holds a hash of each such message (the sender's address
//! and the message's bytes) until it comes back; a new connection's first
//! messages that match are answered at once and not stored again.
//!
//! The guard travels in the source's cursor, which safd stores with the
//! events, so it outlives a crash: the cursor of the last stored batch
//! names that batch's RELP messages (their answers were not sent yet),
//! and whatever the guard still held.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use xxhash_rust::xxh3::Xxh3;

/// A sender that has not come back within this time is not expected to.
const HOLD_FOR: Duration = Duration::from_secs(3600);
/// At most this many messages are held (the oldest let go first): 128 KiB
/// in every cursor while they are.
const MAX_HELD: usize = 16 * 1024;

/// xxh3-64 of the sender's address and the message's bytes: stable across
/// versions (it is stored in cursors).
pub(crate) fn message_hash(sender: IpAddr, data: &[u8]) -> u64 {
    let mut hasher = Xxh3::new();
    match sender {
        IpAddr::V4(ip) => hasher.update(&ip.to_ipv6_mapped().octets()),
        IpAddr::V6(ip) => hasher.update(&ip.octets()),
    }
    hasher.update(data);
    hasher.digest()
}

#[derive(Debug, Default)]
pub(crate) struct ResendGuard {
    counts: HashMap<u64, u32>,
    /// In the order held, for the cap and the expiry (entries taken since
    /// stay here until they age out; their count is what says).
    order: VecDeque<(u64, Instant)>,
}

impl ResendGuard {
    /// The hashes a cursor carries after its 8-byte poll number.
    pub(crate) fn from_cursor(cursor: &[u8]) -> Self {
        let mut guard = Self::default();
        let now = Instant::now();
        if let Some(hashes) = cursor.get(8..) {
            for chunk in hashes.chunks_exact(8) {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(chunk);
                guard.hold_at(u64::from_le_bytes(bytes), now);
            }
        }
        guard
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.counts.values().map(|&n| n as usize).sum()
    }

    /// Expect this message again.
    pub(crate) fn hold(&mut self, hash: u64) {
        self.hold_at(hash, Instant::now());
    }

    fn hold_at(&mut self, hash: u64, at: Instant) {
        *self.counts.entry(hash).or_default() += 1;
        self.order.push_back((hash, at));
        while self.order.len() > MAX_HELD {
            self.let_go_oldest();
        }
    }

    /// True (and no longer held) when this message was expected.
    pub(crate) fn take(&mut self, hash: u64) -> bool {
        self.expire();
        match self.counts.get_mut(&hash) {
            Some(count) => {
                *count -= 1;
                if *count == 0 {
                    self.counts.remove(&hash);
                }
                if self.counts.is_empty() {
                    self.order.clear();
                }
                true
            }
            None => false,
        }
    }

    /// Append what is held, 8 bytes a message, for a cursor.
    pub(crate) fn write(&mut self, out: &mut Vec<u8>) {
        self.expire();
        for (&hash, &count) in &self.counts {
            for _ in 0..count {
                out.extend_from_slice(&hash.to_le_bytes());
            }
        }
    }

    fn expire(&mut self) {
        while self
            .order
            .front()
            .is_some_and(|(_, at)| at.elapsed() >= HOLD_FOR)
        {
            self.let_go_oldest();
        }
    }

    fn let_go_oldest(&mut self) {
        if let Some((hash, _)) = self.order.pop_front()
            && let Some(count) = self.counts.get_mut(&hash)
        {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&hash);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn held_messages_survive_a_cursor_and_are_taken_once_each() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = message_hash(ip, b"a");
        let b = message_hash(ip, b"b");
        assert_ne!(a, message_hash("10.0.0.1".parse().unwrap(), b"a"));
        let mut guard = ResendGuard::default();
        guard.hold(a);
        guard.hold(a);
        guard.hold(b);
        let mut cursor = 7u64.to_be_bytes().to_vec();
        guard.write(&mut cursor);
        assert_eq!(cursor.len(), 8 + 3 * 8);
        let mut again = ResendGuard::from_cursor(&cursor);
        assert_eq!(again.len(), 3);
        assert!(again.take(a));
        assert!(again.take(b));
        assert!(!again.take(b));
        assert!(again.take(a));
        assert!(!again.take(a));
        assert!(again.is_empty());
        // A cursor of an older version (the poll number alone) holds nothing.
        assert!(ResendGuard::from_cursor(&cursor[..8]).is_empty());
    }

    #[test]
    fn the_oldest_are_let_go_past_the_cap() {
        let mut guard = ResendGuard::default();
        for hash in 0..(MAX_HELD as u64 + 10) {
            guard.hold(hash);
        }
        assert_eq!(guard.len(), MAX_HELD);
        assert!(!guard.take(3));
        assert!(guard.take(MAX_HELD as u64 + 9));
    }
}
