//! NonStop EMS format A over the network: the printing distributor's text,
//! made into events exactly as ems-reader makes them from log files
//! (`safd_ems::safd_event`), so an event looks the same whichever way it
//! came; only where it came from differs (`sender` instead of `log_file`).
//!
//! On a line-framed connection a record is a header line and the indented
//! continuation lines after it: it is whole when the next header line
//! starts, when the connection closes, or when the sender has been quiet
//! for [`RECORD_QUIET`] (a distributor writes a record at once; the last
//! one of a burst would otherwise wait for the next event).

use crate::config::Config;
use safd_ems::ParseError;
use safd_ems::safd_event::{self, Fields};
use safd_ems::text::{TextParser, is_continuation};
use safd_plugin_sdk::events::EventWriter;
use safd_plugin_sdk::types::Severity;
use std::time::Duration;

/// A record whose sender has said nothing for this long is whole.
pub(crate) const RECORD_QUIET: Duration = Duration::from_millis(200);

/// The record being assembled on one connection.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    /// Its text so far, and the offset of its first byte.
    pending: Option<(String, u64)>,
}

impl Assembler {
    /// One line (at `offset` in the connection): a continuation joins the
    /// record under way; a header line starts a new one and hands back
    /// the record it completes.
    pub(crate) fn line(&mut self, line: &str, offset: u64) -> Option<(String, u64)> {
        if is_continuation(line.as_bytes())
            && let Some((text, _)) = &mut self.pending
        {
            text.push('\n');
            text.push_str(line);
            return None;
        }
        self.pending.replace((line.to_owned(), offset))
    }

    /// The record under way, complete as it is.
    pub(crate) fn take(&mut self) -> Option<(String, u64)> {
        self.pending.take()
    }
}

/// What making events needs from one poll to the next.
#[derive(Debug)]
pub(crate) struct Converter {
    parser: TextParser,
    scratch: safd_event::Scratch,
}

impl Converter {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            parser: TextParser::new(config.zone.clone()),
            scratch: safd_event::Scratch::default(),
        }
    }

    /// The event of one record; a record that does not parse is kept with
    /// its raw text, flagged `parse_error`, as ems-reader keeps it.
    pub(crate) fn push(
        &mut self,
        out: &mut EventWriter,
        config: &Config,
        id: &str,
        sender: &str,
        record: &str,
        now: i64,
    ) {
        if let Err(error) = self.try_push(out, config, id, sender, record) {
            out.push_fields(
                id,
                now,
                Severity::Warning,
                [
                    ("parse_error", error.0.as_str()),
                    ("collector", config.collector.as_str()),
                    ("sender", sender),
                ],
                record,
            );
        }
    }

    /// The event of one record if it parses; else nothing is written and
    /// the caller keeps the record its own way.
    pub(crate) fn try_push(
        &mut self,
        out: &mut EventWriter,
        config: &Config,
        id: &str,
        sender: &str,
        record: &str,
    ) -> Result<(), ParseError> {
        let event = self.parser.parse(record)?;
        let fields = Fields::from_text(&event);
        let severity = safd_event::severity(&config.overrides, &fields);
        let origin = [("collector", config.collector.as_str()), ("sender", sender)];
        safd_event::with_attributes(&fields, &origin, &mut self.scratch, |attributes| {
            out.push_fields(
                id,
                fields.gentime,
                severity,
                attributes.iter().copied(),
                fields.text,
            );
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn continuation_lines_join_their_header_line() {
        let mut records = Assembler::default();
        assert_eq!(records.line("24-03-11 01:17:10 \\PROD1 first", 0), None);
        assert_eq!(records.line("   more of it", 30), None);
        let first = records
            .line("24-03-11 01:17:11 \\PROD1 second", 44)
            .unwrap();
        assert_eq!(
            first,
            (
                "24-03-11 01:17:10 \\PROD1 first\n   more of it".to_owned(),
                0
            )
        );
        assert_eq!(records.take().unwrap().1, 44);
        assert_eq!(records.take(), None);
        // A continuation with nothing before it is a record of its own
        // (it will not parse, and is kept flagged).
        assert_eq!(records.line("  stray", 80), None);
        assert_eq!(records.take().unwrap().0, "  stray");
    }
}
