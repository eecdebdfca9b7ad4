//! `file-tail`: a safd source plugin that follows the log files matching a
//! pattern in a granted directory and emits one event per line (or per
//! multi-line record), like `tail -F` that never loses its place.
//!
//! Files are followed by identity, not by name: a file renamed by
//! rotation is read to its end, a file truncated in place (copytruncate)
//! is read again from its start, and a copy of a followed file is read
//! from where the original was. The cursor is, per file, (identity,
//! fingerprint of its first line, offset after the last emitted line).
//! See `docs/file-tail.md`.

mod config;
mod cursor;
// The directory through wasi:filesystem in the sandbox; through std::fs in
// native builds, where the tailer's unit tests run.
#[cfg_attr(target_os = "wasi", path = "dir_wasi.rs")]
#[cfg_attr(not(target_os = "wasi"), path = "dir_native.rs")]
mod dir;
mod tail;

use cursor::TailCursor;
use safd_plugin_sdk::events::EventWriter;
use safd_plugin_sdk::source::{Batch, Guest, GuestReader, PollLimits};
use safd_plugin_sdk::types::{
    ConfigProblem, ConnectorError, ConnectorKind, Cursor, Description, Timestamp,
};
use std::cell::RefCell;

struct Plugin;

impl Guest for Plugin {
    type Reader = Reader;

    fn describe() -> Description {
        Description {
            name: "file-tail".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kind: ConnectorKind::Source,
            summary: "Tails the log files matching a pattern in a granted directory, one event \
                      per line (or per multi-line record); follows rotation by rename and by \
                      copytruncate, and resumes exactly where it stopped."
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
    tailer: RefCell<tail::Tailer>,
}

impl GuestReader for Reader {
    fn new(config: String, resume_from: Option<Cursor>) -> Result<Self, ConnectorError> {
        let config = config::parse(&config).map_err(|problems| {
            ConnectorError::Fatal(safd_plugin_sdk::config::describe_problems(&problems))
        })?;
        let dir = dir::Directory::open(&config.directory).map_err(ConnectorError::Fatal)?;
        let resume = resume_from
            .map(|bytes| TailCursor::decode(&bytes))
            .transpose()
            .map_err(ConnectorError::BadCursor)?;
        Ok(Self {
            tailer: RefCell::new(tail::Tailer::new(dir, resume)),
            config,
        })
    }

    fn poll(&self, limits: PollLimits) -> Result<Batch, ConnectorError> {
        let mut tailer = self.tailer.borrow_mut();
        let budget = tail::Budget {
            events: limits.max_events.min(self.config.max_events).max(1) as usize,
            bytes: limits.max_bytes.min(self.config.max_bytes).max(1) as usize,
        };
        let mut events = EventWriter::with_capacity(budget.bytes.min(1 << 20) + 4096);
        let read = tailer
            .read(&self.config, &mut events, &budget)
            .map_err(|err| {
                ConnectorError::Transient(format!("reading `{}`: {err}", self.config.directory))
            })?;
        Ok(Batch {
            cursor: (read.moved || !events.is_empty()).then(|| tailer.cursor().encode()),
            more: read.more,
            events: events.finish(),
        })
    }

    fn commit(&self, _cursor: Cursor) -> Result<(), ConnectorError> {
        // The files are only read, never consumed: nothing to release.
        Ok(())
    }

    fn seek(&self, from_time: Timestamp) -> Result<(), ConnectorError> {
        let from_secs = u64::try_from(from_time.div_euclid(1_000_000)).unwrap_or(0);
        let mut tailer = self.tailer.borrow_mut();
        tailer.seek(&self.config, from_secs).map_err(|err| {
            ConnectorError::Transient(format!("seeking in `{}`: {err}", self.config.directory))
        })
    }
}

safd_plugin_sdk::export_source!(Plugin);
