//! Events meant to break a naive reader: empty and very long strings,
//! multi-byte and control characters, markup and quoting characters, many
//! attributes, times at the ends of the range, every severity.
//!
//! Every one of them is a valid event (it encodes and decodes), so a plugin
//! must handle it: deliver it, or reject it by name, but never trap on it.
//! `safd plugins test` delivers them to destinations; plugin authors can use
//! them in native unit tests (the SDK re-exports this module as
//! `safd_plugin_sdk::testing::odd_events`).
//!
//! Deterministic from a seed, with a small generator of its own, so a
//! failure can be replayed (`--seed`) and the crate needs no dependency.

use crate::{Attribute, Event, Severity};

/// `count` odd events generated from `seed`; the same seed gives the same
/// events on every platform.
pub fn odd_events(seed: u64, count: usize) -> Vec<Event> {
    let mut rng = SplitMix64(seed);
    (0..count).map(|n| odd_event(&mut rng, n)).collect()
}

/// Pieces of text that have broken readers somewhere: quoting and markup
/// characters, line ends, a NUL, a byte-order mark, combining and
/// right-to-left marks, characters outside the basic plane, and text that
/// looks like a number or a format directive.
const PIECES: &[&str] = &[
    "",
    " ",
    "a",
    "\"",
    "'",
    "\\",
    "\\\"",
    "{",
    "}",
    "[]",
    "<>&",
    "%s%n",
    "{{stream}}",
    "\n",
    "\r\n",
    "\t",
    "\0",
    "\u{7f}",
    "\u{1b}[31m",
    "\u{feff}",
    "e\u{301}",
    "\u{202e}",
    "é",
    "ß",
    "€",
    "日本語",
    "𝄞",
    "🙂",
    "null",
    "-0",
    "1e309",
    "NaN",
    "; DROP TABLE events;",
    "=",
    ":",
    ",",
    "|",
    "#",
];

fn odd_event(rng: &mut SplitMix64, n: usize) -> Event {
    let id = match rng.below(6) {
        0 => String::new(),
        1 => text(rng, 1),
        2 => "x".repeat(1 + rng.below(4096) as usize),
        _ => format!("odd-{n}-{}", text(rng, 3)),
    };
    let time = match rng.below(6) {
        0 => i64::MIN,
        1 => i64::MAX,
        2 => 0,
        3 => -1,
        _ => 1_700_000_000_000_000 + (rng.next() % 1_000_000_000_000) as i64,
    };
    let severity = Severity::from_code((rng.below(6)) as u8).unwrap_or(Severity::Info);
    let attributes = match rng.below(5) {
        0 => Vec::new(),
        // Many attributes, some with the same key.
        1 => {
            let many = 1 + rng.below(200);
            (0..many)
                .map(|i| Attribute::new(format!("k{}", i % 7), text(rng, 2)))
                .collect()
        }
        _ => {
            let few = rng.below(6);
            (0..few)
                .map(|_| Attribute::new(text(rng, 2), text(rng, 4)))
                .collect()
        }
    };
    let body = match rng.below(6) {
        0 => String::new(),
        // Larger than a syslog line or a small HTTP body limit.
        1 => {
            let times = 1 + rng.below(64 * 1024) as usize;
            text(rng, 1).repeat(times)
        }
        _ => {
            let pieces = 1 + rng.below(40) as usize;
            text(rng, pieces)
        }
    };
    Event {
        id,
        time,
        severity,
        attributes,
        body,
    }
}

/// `pieces` random pieces joined.
fn text(rng: &mut SplitMix64, pieces: usize) -> String {
    (0..pieces)
        .map(|_| PIECES[rng.below(PIECES.len() as u64) as usize])
        .collect()
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast and good enough to
/// choose test inputs.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn odd_events_encode_decode_and_repeat_from_their_seed() {
        let events = odd_events(7, 300);
        assert_eq!(events, odd_events(7, 300));
        assert_ne!(events, odd_events(8, 300));
        let mut block = crate::BlockWriter::new();
        for event in &events {
            event.write_to(&mut block);
        }
        let (count, bytes) = block.finish();
        let read: Vec<Event> = crate::events(&bytes, count)
            .map(|e| Event::from_ref(&e.unwrap()))
            .collect();
        assert_eq!(read, events);
        // The generator reaches its edges within a few hundred events.
        assert!(events.iter().any(|e| e.id.is_empty()));
        assert!(events.iter().any(|e| e.time == i64::MIN));
        assert!(events.iter().any(|e| e.body.len() > 10_000));
        assert!(events.iter().any(|e| e.body.contains('\0')));
        assert!(events.iter().any(|e| e.attributes.len() > 50));
    }
}
