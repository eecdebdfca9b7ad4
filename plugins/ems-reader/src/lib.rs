//! ems-reader: a safd source plugin that reads a directory of rotating
//! NonStop EMS event logs (format A, printing-distributor text, or format
//! B, tokenized JSON Lines; see `docs/ems-formats.md` and
//! `docs/ems-reader.md`).
//!
//! Every complete record becomes one event with a stable id (system,
//! collector, file, byte offset). Records that do not parse are emitted
//! flagged with their raw text; files purged or truncated before they were
//! read become a critical gap event. The cursor is (file, offset after the
//! last record, its logtime) plus the furthest position ever emitted.

mod config;
mod convert;
mod cursor;

use convert::Fields;
use cursor::ReaderCursor;
use safd_ems::json::JsonEvent;
use safd_ems::tail::{ItemRef, Position, Tail};
use safd_ems::text::{TextEvent, TextParser};
use safd_ems::{Format, ParseError};
use safd_plugin_sdk::events::EventWriter;
use safd_plugin_sdk::source::{Batch, Guest, GuestReader, PollLimits};
use safd_plugin_sdk::types::{
    ConfigProblem, ConnectorError, ConnectorKind, Cursor, Description, Timestamp,
};
use std::cell::RefCell;
use std::path::Path;

struct Plugin;

impl Guest for Plugin {
    type Reader = Reader;

    fn describe() -> Description {
        Description {
            name: "ems-reader".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kind: ConnectorKind::Source,
            summary: "Reads rotating NonStop EMS event logs (format A text or format B JSON \
                      Lines) from a granted directory; never skips an event silently."
                .to_owned(),
            config_schema: config::SCHEMA.to_owned(),
        }
    }

    fn validate_config(config: String) -> Result<(), Vec<ConfigProblem>> {
        config::parse(&config).map(drop)
    }
}

struct Reader {
    config: config::Config,
    state: RefCell<State>,
}

struct State {
    tail: Tail,
    /// LOGTIME of the last record emitted (time of gap events).
    logtime: i64,
    /// The furthest position ever emitted.
    high_water: Position,
    /// After a seek to time T: records before the high-water with a
    /// logtime before T were emitted already (the go-back window).
    skip_before: Option<(i64, Position)>,
    /// Since when polls have found nothing new (for `settle_ms`).
    idle_since: Option<std::time::Instant>,
    parser: TextParser,
    scratch: convert::Scratch,
}

/// A record parsed in its format, borrowing from the record's text.
enum Parsed<'a> {
    Text(TextEvent<'a>),
    Json(JsonEvent<'a>),
}

impl Parsed<'_> {
    fn fields(&self) -> Fields<'_> {
        match self {
            Parsed::Text(event) => Fields::from_text(event),
            Parsed::Json(event) => Fields::from_json(event),
        }
    }
}

fn parse<'a>(
    format: Format,
    parser: &mut TextParser,
    text: &'a str,
) -> Result<Parsed<'a>, ParseError> {
    match format {
        Format::A => parser.parse(text).map(Parsed::Text),
        Format::B => safd_ems::json::parse_borrowed(text).map(Parsed::Json),
    }
}

impl GuestReader for Reader {
    fn new(config: String, resume_from: Option<Cursor>) -> Result<Self, ConnectorError> {
        let config = config::parse(&config).map_err(|problems| {
            ConnectorError::Fatal(safd_plugin_sdk::config::describe_problems(&problems))
        })?;
        if let Err(err) = std::fs::read_dir(&config.directory) {
            return Err(ConnectorError::Fatal(format!(
                "cannot read the EMS log directory `{}`: {err}; grant it to this plugin with \
                 `grants.dirs = [\"{}\"]` and check that it exists",
                config.directory, config.directory
            )));
        }
        let cursor = match resume_from {
            Some(bytes) => ReaderCursor::decode(&bytes).map_err(ConnectorError::BadCursor)?,
            None => ReaderCursor::default(),
        };
        let tail = Tail::new(Path::new(&config.directory), config.format, cursor.position);
        Ok(Self {
            state: RefCell::new(State {
                tail,
                logtime: cursor.logtime,
                high_water: cursor.high_water.max(cursor.position),
                skip_before: None,
                idle_since: None,
                parser: TextParser::new(config.zone.clone()),
                scratch: convert::Scratch::default(),
            }),
            config,
        })
    }

    fn poll(&self, limits: PollLimits) -> Result<Batch, ConnectorError> {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let start = state.tail.position();
        let max_events = limits.max_events.min(self.config.max_events).max(1) as usize;
        let max_bytes = limits.max_bytes.min(self.config.max_bytes).max(1) as usize;
        let settled = self
            .config
            .settle
            .zip(state.idle_since)
            .is_some_and(|(settle, since)| since.elapsed() >= settle);
        state.tail.set_settled(settled);
        // Sized for what a poll usually gives; it grows if more.
        let mut events = EventWriter::with_capacity(max_events.saturating_mul(512).min(4 << 20));
        let (config, parser, scratch) = (&self.config, &mut state.parser, &mut state.scratch);
        let (skip_before, logtime) = (state.skip_before, &mut state.logtime);
        let read = state
            .tail
            .read_each(max_events, max_bytes, |item| match item {
                ItemRef::Record(record) => {
                    let position = Position {
                        file: record.file,
                        offset: record.start,
                    };
                    match parse(config.format, parser, &record.text) {
                        Ok(parsed) => {
                            let fields = parsed.fields();
                            let skip = skip_before.is_some_and(|(time, high_water)| {
                                position < high_water && fields.logtime < time
                            });
                            *logtime = fields.logtime;
                            if !skip {
                                convert::push_event(&mut events, config, scratch, &record, &fields);
                            }
                        }
                        Err(error) => {
                            let skip =
                                skip_before.is_some_and(|(_, high_water)| position < high_water);
                            if !skip {
                                events.push(&convert::unparsed(config, &record, &error, *logtime));
                            }
                        }
                    }
                }
                ItemRef::Gap(gap) => events.push(&convert::gap(config, &gap, *logtime)),
            });
        state.tail.set_settled(false);
        let more = read.map_err(|err| {
            ConnectorError::Transient(format!(
                "cannot read the EMS log directory `{}`: {err}",
                self.config.directory
            ))
        })?;
        let position = state.tail.position();
        if state
            .skip_before
            .is_some_and(|(_, high_water)| position >= high_water)
        {
            state.skip_before = None;
        }
        state.high_water = state.high_water.max(position);
        let moved = position != start || !events.is_empty();
        if moved {
            state.idle_since = None;
        } else if state.idle_since.is_none() {
            state.idle_since = Some(std::time::Instant::now());
        }
        Ok(Batch {
            cursor: moved.then(|| {
                ReaderCursor {
                    position,
                    logtime: state.logtime,
                    high_water: state.high_water,
                }
                .encode()
            }),
            more,
            events: events.finish(),
        })
    }

    fn commit(&self, _cursor: Cursor) -> Result<(), ConnectorError> {
        // The logs are only read, never consumed: nothing to release.
        Ok(())
    }

    fn seek(&self, from_time: Timestamp) -> Result<(), ConnectorError> {
        let mut state = self.state.borrow_mut();
        let target = from_time.saturating_sub(self.config.go_back_micros);
        let format = self.config.format;
        let mut parser = TextParser::new(self.config.zone.clone());
        state
            .tail
            .seek(target, |text| {
                parse(format, &mut parser, text)
                    .ok()
                    .map(|parsed| parsed.fields().logtime)
            })
            .map_err(|err| {
                ConnectorError::Transient(format!(
                    "cannot read the EMS log directory `{}` to seek: {err}",
                    self.config.directory
                ))
            })?;
        let high_water = state.high_water;
        state.skip_before = Some((from_time, high_water));
        Ok(())
    }
}

safd_plugin_sdk::export_source!(Plugin);
