//! What a destination learns about its receiver that an operator must hear
//! of (`receiver-notice`, contract 0.2.1): safd turns each into a numbered
//! event. Only destinations can use it; a plugin that does needs a safd at
//! 0.2.1 or later (its manifest says `safd:connector@0.2.1`).

use crate::types::Timestamp;

/// The receiver recognises an event sent again only within `window_ms` of
/// storing it, and `stream`'s events from `first_seq` — the oldest with
/// event time `oldest` — are older than that: one that had reached the
/// receiver before could be stored twice. safd reports it as event 1013,
/// once per stream while the plugin instance lives, so calling it for
/// every delivery costs nothing.
///
/// In a native build (a plugin's unit tests) it goes to stderr.
pub fn outside_dedup_window(stream: &str, first_seq: u64, oldest: Timestamp, window_ms: u64) {
    #[cfg(target_family = "wasm")]
    crate::destination_bindings::safd::connector::receiver_notice::outside_dedup_window(
        stream, first_seq, oldest, window_ms,
    );
    #[cfg(not(target_family = "wasm"))]
    eprintln!(
        "[notice] outside the dedup window: {stream} from {first_seq}, oldest {oldest}, window {window_ms} ms"
    );
}

/// Whether an event of time `event_time` is older than `window_ms` at
/// `now` (both microseconds since the epoch): the test a destination makes
/// before [`outside_dedup_window`].
pub fn older_than(event_time: Timestamp, window_ms: u64, now: Timestamp) -> bool {
    let window_us = i64::try_from(window_ms.saturating_mul(1000)).unwrap_or(i64::MAX);
    now.saturating_sub(event_time) > window_us
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_outside_the_window_only_when_older_than_it() {
        let now = 1_000_000_000_000;
        assert!(!older_than(now, 120_000, now));
        assert!(!older_than(now - 120_000_000, 120_000, now));
        assert!(older_than(now - 120_000_001, 120_000, now));
        assert!(!older_than(now + 5_000_000, 120_000, now));
        // Extremes saturate instead of overflowing.
        assert!(older_than(i64::MIN, 1, now));
        assert!(!older_than(i64::MIN, u64::MAX, now));
    }
}
