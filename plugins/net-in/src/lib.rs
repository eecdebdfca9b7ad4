//! `net-in`: a safd source plugin that listens on a granted TCP address and
//! turns every message senders write into an event: RFC 5424 and RFC 3164
//! syslog, or raw lines, framed by line or by octet count (RFC 6587). For
//! NonStop sites that forward EMS events over the network instead of
//! sharing the log files. See `docs/net-in.md`.
//!
//! Plain TCP acknowledges nothing to the sender: what safd had read from
//! its socket but not yet stored when it was killed is lost (at most one
//! poll's worth, `max_events` / `max_bytes`), and what was still in the
//! kernel's buffers is lost with the connection.

mod config;
mod framing;
mod receiver;
mod syslog;

use receiver::{Budget, OpenError, Receiver};
use safd_plugin_sdk::events::EventWriter;
use safd_plugin_sdk::log;
use safd_plugin_sdk::source::{Batch, Guest, GuestReader, PollLimits};
use safd_plugin_sdk::types::{
    ConfigProblem, ConnectorError, ConnectorKind, Cursor, Description, Timestamp,
};
use std::cell::{Cell, RefCell};

struct Plugin;

impl Guest for Plugin {
    type Reader = Reader;

    fn describe() -> Description {
        Description {
            name: "net-in".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kind: ConnectorKind::Source,
            summary: "Listens on a granted TCP address and makes every message senders write an \
                      event: RFC 5424 or RFC 3164 syslog, or raw lines, framed by line or by \
                      octet count (RFC 6587). Malformed messages are kept, flagged."
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
    receiver: RefCell<Receiver>,
    /// Numbers the polls that returned events: the cursor (nothing here is
    /// re-readable; the cursor only tells one batch from the next).
    polls: Cell<u64>,
}

impl GuestReader for Reader {
    fn new(config: String, _resume_from: Option<Cursor>) -> Result<Self, ConnectorError> {
        let config = config::parse(&config).map_err(|problems| {
            ConnectorError::Fatal(safd_plugin_sdk::config::describe_problems(&problems))
        })?;
        let receiver = Receiver::open(config.listen).map_err(|err| match err {
            OpenError::NotGranted(address) => ConnectorError::Fatal(format!(
                "safd's sandbox refused to listen on {address}: add \"{address}\" to this \
                 source's grants.listen"
            )),
            OpenError::Io(address, err) => {
                ConnectorError::Transient(format!("cannot listen on {address}: {err}"))
            }
        })?;
        log::info(&format!("listening on {}", config.listen));
        Ok(Self {
            config,
            receiver: RefCell::new(receiver),
            polls: Cell::new(0),
        })
    }

    fn poll(&self, limits: PollLimits) -> Result<Batch, ConnectorError> {
        let budget = Budget {
            events: limits.max_events.min(self.config.max_events).max(1) as usize,
            bytes: limits.max_bytes.min(self.config.max_bytes).max(1) as usize,
        };
        let mut events = EventWriter::with_capacity(budget.bytes.min(1 << 20) + 4096);
        let more = self
            .receiver
            .borrow_mut()
            .poll(&self.config, &mut events, &budget);
        let cursor = (!events.is_empty()).then(|| {
            let poll = self.polls.get() + 1;
            self.polls.set(poll);
            poll.to_be_bytes().to_vec()
        });
        Ok(Batch {
            cursor,
            more,
            events: events.finish(),
        })
    }

    fn commit(&self, _cursor: Cursor) -> Result<(), ConnectorError> {
        // Plain TCP has no acknowledgement to send.
        Ok(())
    }

    fn seek(&self, _from_time: Timestamp) -> Result<(), ConnectorError> {
        // What senders wrote is not kept anywhere this plugin could read
        // again: a deep catch-up finds it in safd's queue or nowhere.
        log::info("net-in cannot replay: what was received is in safd's queue");
        Ok(())
    }
}

safd_plugin_sdk::export_source!(Plugin);
