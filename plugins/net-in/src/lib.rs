//! `net-in`: a safd source plugin that listens on a granted TCP address and
//! turns every message senders write into an event: RFC 5424 and RFC 3164
//! syslog, or raw lines, framed by line or by octet count (RFC 6587) or
//! carried by RELP. For NonStop sites that forward EMS events over the
//! network instead of sharing the log files. See `docs/net-in.md`.
//!
//! Plain TCP acknowledges nothing to the sender: what safd had read from
//! its socket but not yet stored when it was killed is lost (at most one
//! poll's worth, `max_events` / `max_bytes`), and what was still in the
//! kernel's buffers is lost with the connection. RELP answers each message
//! only in the commit of the poll that took it, after safd's durable write.

mod config;
mod ems;
mod framing;
mod receiver;
mod relp;
mod resend;
mod syslog;
mod transport;

use receiver::{Budget, Receiver};
use safd_plugin_sdk::events::EventWriter;
use safd_plugin_sdk::log;
use safd_plugin_sdk::source::{Batch, Guest, GuestReader, PollLimits};
use safd_plugin_sdk::tls::TlsError;
use safd_plugin_sdk::types::{
    ConfigProblem, ConnectorError, ConnectorKind, Cursor, Description, Timestamp,
};
use std::cell::{Cell, RefCell};
use std::time::Duration;
use transport::OpenError;

/// How long a poll waits for the frames a RELP sender sends once
/// answered.
const ANSWER_WAIT: Duration = Duration::from_millis(5);

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
                      octet count (RFC 6587), or over RELP (each message answered once safd \
                      stored it). Malformed messages are kept, flagged."
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
    /// Numbers the polls that returned events: the cursor starts with it
    /// (nothing here is re-readable; the number tells the commit which
    /// RELP messages to answer), and goes on with the RELP messages a
    /// restart must expect again.
    polls: Cell<u64>,
}

impl GuestReader for Reader {
    fn new(config: String, resume_from: Option<Cursor>) -> Result<Self, ConnectorError> {
        let config = config::parse(&config).map_err(|problems| {
            ConnectorError::Fatal(safd_plugin_sdk::config::describe_problems(&problems))
        })?;
        let receiver =
            Receiver::open(config.listen, config.tls, resume_from.as_deref()).map_err(|err| {
                match err {
                    OpenError::NotGranted(address) => ConnectorError::Fatal(format!(
                        "safd's sandbox refused to listen on {address}: add \"{address}\" to this \
                     source's grants.listen"
                    )),
                    OpenError::Io(address, err) => {
                        ConnectorError::Transient(format!("cannot listen on {address}: {err}"))
                    }
                    OpenError::Tls(TlsError::Failed(message)) => ConnectorError::Transient(message),
                    OpenError::Tls(TlsError::Denied(message) | TlsError::Settings(message)) => {
                        ConnectorError::Fatal(message)
                    }
                }
            })?;
        let transport = match (config.transport, config.tls) {
            (config::Transport::Tcp, false) => "plain TCP",
            (config::Transport::Tcp, true) => "TCP over TLS",
            (config::Transport::Relp, false) => "RELP",
            (config::Transport::Relp, true) => "RELP over TLS",
        };
        log::info(&format!("listening on {} ({transport})", config.listen));
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
        let poll = self.polls.get() + 1;
        let mut receiver = self.receiver.borrow_mut();
        let unanswered_before = receiver.unanswered();
        let mut more = receiver.poll(&self.config, &mut events, &budget, poll);
        // RELP senders answered in the last commit send their next frames
        // now: wait for them a moment here rather than for safd's idle
        // wait between polls (10 ms), which capped RELP at one window per
        // 10 ms. The wait wakes on the sockets: a sleep-and-look loop
        // slept whole milliseconds (the host's timer) and held RELP at
        // 220 000 events/s in `bench-net-in`, 320 000 without.
        if let Some(answered_at) = receiver.take_answered_at() {
            while events.is_empty() {
                let Some(left) = ANSWER_WAIT.checked_sub(answered_at.elapsed()) else {
                    break;
                };
                receiver.wait_readable(left);
                more = receiver.poll(&self.config, &mut events, &budget, poll);
            }
        }
        // Messages taken now are answered in this poll's commit, and their
        // senders then send more: poll again at once.
        more |= receiver.unanswered() > unanswered_before;
        let cursor = (!events.is_empty()).then(|| {
            self.polls.set(poll);
            let mut cursor = poll.to_be_bytes().to_vec();
            receiver.write_unanswered(&mut cursor);
            cursor
        });
        Ok(Batch {
            cursor,
            more,
            events: events.finish(),
        })
    }

    fn commit(&self, cursor: Cursor) -> Result<(), ConnectorError> {
        // The poll's events are on safd's disk: RELP senders get their
        // answers now (plain TCP has none to send).
        if let Some(poll) = cursor.first_chunk::<8>() {
            self.receiver
                .borrow_mut()
                .acknowledge(u64::from_be_bytes(*poll));
        }
        Ok(())
    }

    fn seek(&self, _from_time: Timestamp) -> Result<(), ConnectorError> {
        // What senders wrote is not kept anywhere this plugin could read
        // again: a deep catch-up finds it in safd's queue or nowhere, and
        // `rejected` has safd announce what is nowhere as a gap.
        Err(ConnectorError::Rejected(
            "net-in cannot read again what senders wrote: what was received is in safd's \
             queue or nowhere"
                .to_owned(),
        ))
    }
}

safd_plugin_sdk::export_source!(Plugin);
