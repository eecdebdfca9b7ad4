//! The `receiver-notice` interface (contract 0.2.1): what a destination
//! plugin learns about its receiver that an operator must hear of, turned
//! into numbered events — today event 1013, events older than the
//! receiver's duplicate window being sent.

use crate::bindings::destination_world::safd::connector::receiver_notice;
use crate::report::Reporter;
use crate::state::InstanceState;
use safd_connector::{Notice, event_ids};
use std::collections::HashSet;

/// Streams a plugin instance may report at most (a stream name comes from
/// safd's own configuration, so a handful; the bound keeps a plugin that
/// invents names from growing host memory).
const MAX_STREAMS: usize = 1024;

/// The reporter and the streams already reported by one instance.
#[derive(Debug)]
pub(crate) struct ReceiverNotices {
    reporter: Reporter,
    reported: HashSet<String>,
}

impl ReceiverNotices {
    pub(crate) fn new(reporter: Reporter) -> Self {
        Self {
            reporter,
            reported: HashSet::new(),
        }
    }

    /// Whether `stream` is reported for the first time (and room is left).
    fn first_time(&mut self, stream: &str) -> bool {
        if self.reported.contains(stream) || self.reported.len() >= MAX_STREAMS {
            return false;
        }
        self.reported.insert(stream.to_owned());
        true
    }
}

impl receiver_notice::Host for InstanceState {
    fn outside_dedup_window(
        &mut self,
        stream: String,
        first_seq: u64,
        oldest: i64,
        window_ms: u64,
    ) {
        let stream = crate::log_text::clean(&stream, crate::log_text::MAX_FIELD);
        if !self.notices.first_time(&stream) {
            return;
        }
        let age_s = now_micros().saturating_sub(oldest).max(0) / 1_000_000;
        let window_s = window_ms / 1000;
        self.notices.reporter.emit(
            Notice::new(
                event_ids::OUTSIDE_DEDUP_WINDOW,
                format!(
                    "sending events of stream `{stream}` from seq {first_seq} that are {age_s} s \
                     old, beyond the receiver's {window_s} s duplicate window: one that had \
                     reached it before could be stored twice (lengthen the receiver's window, \
                     e.g. the JetStream stream's duplicate_window, or deduplicate by event id)"
                ),
            )
            .with("connector", &*self.connector)
            .with("stream", &stream)
            .with("seq", first_seq)
            .with("age_s", age_s)
            .with("window_s", window_s),
        );
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stream_is_reported_once_and_the_set_is_bounded() {
        let mut notices = ReceiverNotices::new(Reporter::default());
        assert!(notices.first_time("ems"));
        assert!(!notices.first_time("ems"));
        assert!(notices.first_time("app"));
        for n in 0..2 * MAX_STREAMS {
            notices.first_time(&format!("s{n}"));
        }
        assert_eq!(notices.reported.len(), MAX_STREAMS);
    }
}
