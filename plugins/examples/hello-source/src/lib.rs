//! Example source plugin: emits `count` greeting events, then nothing.
//! The walkthrough in docs/plugin-guide.md explains every part.

use safd_plugin_sdk::config;
use safd_plugin_sdk::events::EventWriter;
use safd_plugin_sdk::source::{Batch, Guest, GuestReader, PollLimits};
use safd_plugin_sdk::types::{
    Attribute, ConfigProblem, ConnectorError, ConnectorKind, Cursor, Description, Event, Severity,
    Timestamp,
};
use std::cell::Cell;

/// The plugin's config, parsed from the JSON text safd passes in.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// How many events to emit in total.
    count: u64,
    /// Who to greet.
    #[serde(default = "default_name")]
    name: String,
}

fn default_name() -> String {
    "world".to_owned()
}

struct Plugin;

impl Guest for Plugin {
    type Reader = Reader;

    fn describe() -> Description {
        Description {
            name: "hello-source".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kind: ConnectorKind::Source,
            summary: "Emits `count` greeting events.".to_owned(),
            config_schema: r#"{"type":"object","required":["count"],"additionalProperties":false,
                "properties":{"count":{"type":"integer","minimum":0},"name":{"type":"string"}}}"#
                .to_owned(),
        }
    }

    fn validate_config(config: String) -> Result<(), Vec<ConfigProblem>> {
        config::parse::<Config>(&config)
            .map(drop)
            .map_err(|p| vec![p])
    }
}

struct Reader {
    config: Config,
    /// Number of events emitted so far; also the cursor.
    next: Cell<u64>,
}

impl GuestReader for Reader {
    fn new(config: String, resume_from: Option<Cursor>) -> Result<Self, ConnectorError> {
        let config = config::parse::<Config>(&config)
            .map_err(|p| ConnectorError::Fatal(config::describe_problems(&[p])))?;
        // The cursor is whatever this plugin returned earlier; safd stores it
        // verbatim. Here: the next event number, 8 bytes big endian.
        let next = match resume_from {
            None => 0,
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .try_into()
                    .map_err(|_| ConnectorError::BadCursor("expected 8 bytes".to_owned()))?,
            ),
        };
        Ok(Self {
            config,
            next: Cell::new(next),
        })
    }

    fn poll(&self, limits: PollLimits) -> Result<Batch, ConnectorError> {
        let start = self.next.get();
        let end = self.config.count.min(start + u64::from(limits.max_events));
        let mut events = EventWriter::new();
        for n in start..end {
            events.push(&Event {
                // Stable: the same event always gets the same id.
                id: format!("hello-{n}"),
                time: 1_700_000_000_000_000 + n as Timestamp,
                severity: Severity::Info,
                attributes: vec![Attribute::new("greeting", "hello")],
                body: format!("hello, {} (#{n})", self.config.name),
            });
        }
        self.next.set(end);
        Ok(Batch {
            cursor: (end > start).then(|| end.to_be_bytes().to_vec()),
            more: end < self.config.count,
            events: events.finish(),
        })
    }

    fn commit(&self, _cursor: Cursor) -> Result<(), ConnectorError> {
        // Nothing to release: the events are generated, not borrowed.
        Ok(())
    }

    fn seek(&self, _from_time: Timestamp) -> Result<(), ConnectorError> {
        // `rejected`: safd announces what a catch-up asked for as a gap
        // and this source reads on.
        Err(ConnectorError::Rejected(
            "hello-source cannot seek: it has no history".to_owned(),
        ))
    }
}

safd_plugin_sdk::export_source!(Plugin);
