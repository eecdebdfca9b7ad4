//! `syslog`: delivers events as RFC 5424 syslog messages to a SIEM or log
//! server, over plain TCP (RFC 6587 octet-counting or newline framing) or
//! RELP (rsyslog's reliable protocol, acknowledged per message).
//!
//! The endpoint's address (chosen by safd for each group member) is the
//! receiver's `ip:port`; safd's sandbox lets the plugin connect only to the
//! addresses the operator granted (`grants.tcp`). See `docs/syslog.md`.

mod config;
mod connection;
mod message;
mod relp;

use config::{Config, Framing, Transport};
use connection::Connection;
use safd_plugin_sdk::destination::{
    Acknowledgement, DeliveryReport, Endpoint, Guest, GuestWriter, Health, Registration,
    SessionInfo,
};
use safd_plugin_sdk::types::{
    ConfigProblem, ConnectorError, ConnectorKind, Description, StreamBatch, StreamPosition,
};
use std::cell::RefCell;
use std::net::SocketAddr;

struct Plugin;

impl Guest for Plugin {
    type Writer = Writer;

    fn describe() -> Description {
        Description {
            name: "syslog".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kind: ConnectorKind::Destination,
            summary: "Delivers RFC 5424 syslog messages (attributes as structured data) over TCP \
                      or RELP. With RELP an event counts as delivered once the server \
                      acknowledged it; with plain TCP once it was written and flushed to the \
                      connection, which the receiver never confirms."
                .to_owned(),
            config_schema: config::SCHEMA.to_owned(),
        }
    }

    fn acknowledgement_kind() -> Acknowledgement {
        // The kind is per plugin, not per config: plain TCP can only ever
        // promise "written", so that is what safd is told (and warns about).
        // RELP's acks are real and documented as such in docs/syslog.md.
        Acknowledgement::TransportWrite
    }

    fn validate_config(config: String) -> Result<(), Vec<ConfigProblem>> {
        config::parse(&config).map(drop)
    }
}

/// The open connection of a session.
enum Link {
    Tcp(Connection),
    Relp(relp::Session),
}

struct Writer {
    config: Config,
    address: SocketAddr,
    /// HOSTNAME fallback, learnt at registration.
    agent_id: RefCell<String>,
    link: RefCell<Option<Link>>,
}

/// Events of one `deliver` call written per network write (TCP) or per
/// acknowledgement wait (RELP, bounded by the window as well).
const WRITE_CHUNK_BYTES: usize = 1 << 20;

impl Writer {
    /// The live connection, opened (or reopened) when needed.
    fn link(&self) -> Result<std::cell::RefMut<'_, Link>, ConnectorError> {
        let mut slot = self.link.borrow_mut();
        let stale = match slot.as_mut() {
            Some(Link::Tcp(connection)) => {
                if connection.peer_closed() {
                    // Plain TCP confirms nothing: what was written lately
                    // may have died with the connection. Say so instead of
                    // quietly reconnecting, so that safd sends again what
                    // it has not yet counted as delivered (the linger).
                    *slot = None;
                    return Err(ConnectorError::Transient(format!(
                        "{} closed the connection; events not yet confirmed are sent again",
                        self.address
                    )));
                }
                false
            }
            Some(Link::Relp(session)) => session.connection().peer_closed(),
            None => true,
        };
        if stale {
            *slot = None;
            let connection = Connection::open(
                self.address,
                self.config.connect_timeout,
                self.config.timeout,
            )?;
            *slot = Some(match self.config.transport {
                Transport::Tcp => Link::Tcp(connection),
                Transport::Relp => Link::Relp(relp::Session::open(connection)?),
            });
        }
        std::cell::RefMut::filter_map(slot, Option::as_mut)
            .map_err(|_| ConnectorError::Fatal("the connection vanished while opening".to_owned()))
    }

    fn header(&self) -> (std::cell::Ref<'_, String>, bool) {
        (
            self.agent_id.borrow(),
            self.config.transport == Transport::Tcp && self.config.framing == Framing::Newline,
        )
    }

    fn deliver_tcp(
        &self,
        connection: &mut Connection,
        batches: &[StreamBatch],
    ) -> Result<(DeliveryReport, bool), ConnectorError> {
        let (agent_id, escape) = self.header();
        let header = message::Header {
            config: &self.config,
            agent_id: &agent_id,
            escape_line_breaks: escape,
        };
        let mut out = Vec::with_capacity(WRITE_CHUNK_BYTES + 16 * 1024);
        let mut scratch = Vec::with_capacity(1024);
        let mut text = String::with_capacity(1024);
        // What is in `out`, and what reached the connection before it.
        let mut buffered = Acks::default();
        let mut written = Acks::default();
        for (i, batch) in batches.iter().enumerate() {
            for event in batch.events() {
                let (seq, event) = event?;
                match self.config.framing {
                    Framing::OctetCounting => {
                        scratch.clear();
                        message::write(
                            &mut scratch,
                            &mut text,
                            &header,
                            &batch.stream,
                            seq,
                            &event,
                        );
                        out.extend_from_slice(itoa::Buffer::new().format(scratch.len()).as_bytes());
                        out.push(b' ');
                        out.extend_from_slice(&scratch);
                    }
                    Framing::Newline => {
                        message::write(&mut out, &mut text, &header, &batch.stream, seq, &event);
                        out.push(b'\n');
                    }
                }
                buffered.accept(i, seq);
                if out.len() >= WRITE_CHUNK_BYTES {
                    if let Err(err) = connection.write_all(&out) {
                        // Chunks written before count (as written);
                        // resending them would only duplicate them.
                        return written.report_or(batches, err);
                    }
                    out.clear();
                    written = buffered.clone();
                }
            }
        }
        if let Err(err) = connection.write_all(&out) {
            return written.report_or(batches, err);
        }
        Ok((buffered.report(batches), true))
    }

    fn deliver_relp(
        &self,
        session: &mut relp::Session,
        batches: &[StreamBatch],
    ) -> Result<(DeliveryReport, bool), ConnectorError> {
        let (agent_id, _) = self.header();
        let header = message::Header {
            config: &self.config,
            agent_id: &agent_id,
            escape_line_breaks: false,
        };
        let mut acks = Acks::default();
        let mut out = Vec::with_capacity(WRITE_CHUNK_BYTES + 16 * 1024);
        let mut scratch = Vec::with_capacity(1024);
        let mut text = String::with_capacity(1024);
        // (txnr, batch index, seq) sent and not yet answered, oldest first.
        let mut pending = std::collections::VecDeque::with_capacity(self.config.relp_window);
        let mut events = batches.iter().enumerate().flat_map(|(i, batch)| {
            batch
                .events()
                .map(move |event| event.map(|(seq, event)| (i, seq, event)))
        });
        let mut exhausted = false;
        while !exhausted || !pending.is_empty() {
            while !exhausted
                && pending.len() < self.config.relp_window
                && out.len() < WRITE_CHUNK_BYTES
            {
                match events.next() {
                    Some(event) => {
                        let (i, seq, event) = event?;
                        scratch.clear();
                        message::write(
                            &mut scratch,
                            &mut text,
                            &header,
                            &batches[i].stream,
                            seq,
                            &event,
                        );
                        let txnr = session.frame_syslog(&mut out, &scratch);
                        pending.push_back((txnr, i, seq));
                    }
                    None => exhausted = true,
                }
            }
            if !out.is_empty() {
                if let Err(err) = session.connection().write_all(&out) {
                    return acks.report_or(batches, err);
                }
                out.clear();
            }
            // Read half a window of answers before sending more, so the
            // server always has work queued while the plugin formats.
            let target = if exhausted {
                0
            } else {
                self.config.relp_window / 2
            };
            while pending.len() > target {
                let response = match session.read_response() {
                    Ok(response) => response,
                    Err(err) => return acks.report_or(batches, err),
                };
                let Some(&(txnr, i, seq)) = pending.front() else {
                    break;
                };
                if response.txnr != txnr || !response.ok {
                    let err = if response.ok {
                        ConnectorError::Fatal(format!(
                            "{}: RELP answer for txnr {} while {txnr} was expected",
                            self.address, response.txnr
                        ))
                    } else {
                        ConnectorError::Transient(format!(
                            "{} refused a message: {}",
                            self.address, response.text
                        ))
                    };
                    return acks.report_or(batches, err);
                }
                pending.pop_front();
                acks.accept(i, seq);
            }
        }
        Ok((acks.report(batches), true))
    }
}

/// The acknowledged prefix of a delivery, per batch.
#[derive(Clone, Default)]
struct Acks {
    /// Per batch index, the last acknowledged seq.
    last: Vec<Option<u64>>,
    any: bool,
}

impl Acks {
    fn accept(&mut self, batch: usize, seq: u64) {
        if self.last.len() <= batch {
            self.last.resize(batch + 1, None);
        }
        self.last[batch] = Some(seq);
        self.any = true;
    }

    fn report(self, batches: &[StreamBatch]) -> DeliveryReport {
        DeliveryReport {
            acknowledged: self
                .last
                .iter()
                .enumerate()
                .filter_map(|(i, seq)| {
                    seq.map(|seq| StreamPosition {
                        stream: batches[i].stream.clone(),
                        seq,
                    })
                })
                .collect(),
            rejected: Vec::new(),
        }
    }

    /// A failure mid-delivery: what the server acknowledged still counts
    /// (safd resends the rest, and the session is not reused); with nothing
    /// acknowledged, the error.
    fn report_or(
        self,
        batches: &[StreamBatch],
        err: ConnectorError,
    ) -> Result<(DeliveryReport, bool), ConnectorError> {
        if self.any {
            Ok((self.report(batches), false))
        } else {
            Err(err)
        }
    }
}

impl GuestWriter for Writer {
    fn new(config: String, endpoint: Endpoint) -> Result<Self, ConnectorError> {
        let config = config::parse(&config)
            .map_err(|p| ConnectorError::Fatal(safd_plugin_sdk::config::describe_problems(&p)))?;
        let address = connection::parse_address(&endpoint.address)
            .map_err(|why| ConnectorError::Fatal(format!("member `{}`: {why}", endpoint.member)))?;
        Ok(Self {
            config,
            address,
            agent_id: RefCell::new(String::new()),
            link: RefCell::new(None),
        })
    }

    fn register(&self, info: SessionInfo) -> Result<Registration, ConnectorError> {
        *self.agent_id.borrow_mut() = info.agent_id;
        // A fresh session: whatever the old connection had in flight is
        // settled by safd's resend, not by this one.
        *self.link.borrow_mut() = None;
        drop(self.link()?);
        // A syslog receiver keeps no per-stream high-water to report and
        // never asks for catch-up.
        Ok(Registration {
            high_water: Vec::new(),
            service_ready: true,
            catch_up: None,
        })
    }

    fn deliver(&self, batches: Vec<StreamBatch>) -> Result<DeliveryReport, ConnectorError> {
        let mut link = self.link()?;
        let result = match &mut *link {
            Link::Tcp(connection) => self.deliver_tcp(connection, &batches),
            Link::Relp(session) => self.deliver_relp(session, &batches),
        };
        drop(link);
        match result {
            Ok((report, true)) => Ok(report),
            other => {
                *self.link.borrow_mut() = None;
                other.map(|(report, _)| report)
            }
        }
    }

    fn probe(&self) -> Result<Health, ConnectorError> {
        drop(self.link()?);
        Ok(Health {
            service_ready: true,
            detail: format!(
                "connected to {} ({})",
                self.address,
                match self.config.transport {
                    Transport::Tcp => "tcp",
                    Transport::Relp => "relp",
                }
            ),
        })
    }
}

safd_plugin_sdk::export_destination!(Plugin);
