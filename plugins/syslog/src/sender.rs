//! Sending one delivery to the receiver: the connection kept across
//! deliveries, plain TCP (octet-counting or newline framing) with its
//! written-counts-as-delivered promise, and RELP with its window of
//! acknowledged messages; the acknowledged prefix per stream. Plain
//! `std::net` (wasi:sockets inside the sandbox), so its tests run natively
//! against receivers on loopback.

use crate::config::{Config, Framing, Transport};
use crate::{message, relp};
use safd_plugin_sdk::destination::DeliveryReport;
use safd_plugin_sdk::tcp::Connection;
use safd_plugin_sdk::types::{ConnectorError, StreamBatch, StreamPosition};
use std::cell::RefCell;

/// The open connection of a session.
enum Link {
    Tcp(Connection),
    Relp(relp::Session),
}

pub(crate) struct Sender {
    config: Config,
    /// `ip:port`, or with TLS also `name:port`.
    address: String,
    /// HOSTNAME fallback, learnt at registration.
    agent_id: RefCell<String>,
    link: RefCell<Option<Link>>,
}

/// Events of one `deliver` call written per network write (TCP) or per
/// acknowledgement wait (RELP, bounded by the window as well).
const WRITE_CHUNK_BYTES: usize = 1 << 20;

impl Sender {
    pub(crate) fn new(config: Config, address: String) -> Self {
        Self {
            config,
            address,
            agent_id: RefCell::new(String::new()),
            link: RefCell::new(None),
        }
    }

    /// A fresh session for `agent_id` (the HOSTNAME fallback): whatever the
    /// old connection had in flight is settled by safd's resend, not by
    /// this one.
    pub(crate) fn register(&self, agent_id: String) -> Result<(), ConnectorError> {
        *self.agent_id.borrow_mut() = agent_id;
        *self.link.borrow_mut() = None;
        drop(self.link()?);
        Ok(())
    }

    /// Send `batches`; the acknowledged prefix per stream. A connection that
    /// failed mid-delivery is not reused.
    pub(crate) fn deliver(
        &self,
        batches: &[StreamBatch],
    ) -> Result<DeliveryReport, ConnectorError> {
        let mut link = self.link()?;
        let result = match &mut *link {
            Link::Tcp(connection) => self.deliver_tcp(connection, batches),
            Link::Relp(session) => self.deliver_relp(session, batches),
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

    /// Connect if not connected: what `probe` reports.
    pub(crate) fn connect(&self) -> Result<String, ConnectorError> {
        drop(self.link()?);
        Ok(format!(
            "connected to {} ({})",
            self.address,
            match (self.config.transport, self.config.tls) {
                (Transport::Tcp, _) => "tcp",
                (Transport::Tls, _) => "tls",
                (Transport::Relp, false) => "relp",
                (Transport::Relp, true) => "relp over tls",
            }
        ))
    }

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
                &self.address,
                self.config.tls,
                self.config.connect_timeout,
                self.config.timeout,
            )?;
            *slot = Some(match self.config.transport {
                Transport::Tcp | Transport::Tls => Link::Tcp(connection),
                Transport::Relp => Link::Relp(relp::Session::open(connection)?),
            });
        }
        std::cell::RefMut::filter_map(slot, Option::as_mut)
            .map_err(|_| ConnectorError::Fatal("the connection vanished while opening".to_owned()))
    }

    fn header(&self) -> (std::cell::Ref<'_, String>, bool) {
        (
            self.agent_id.borrow(),
            self.config.transport != Transport::Relp && self.config.framing == Framing::Newline,
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

/// The sender against receivers on loopback: a plain TCP one that reads
/// everything, and RELP servers that answer, refuse, or die mid-window.
#[cfg(all(test, not(target_os = "wasi")))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use safd_plugin_sdk::types::EventBlock;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::thread::JoinHandle;

    fn sender(listener: &TcpListener, extra: &str) -> Sender {
        let text = format!(r#"{{"connect_timeout_ms": 2000, "timeout_ms": 5000 {extra}}}"#);
        let config = crate::config::parse(&text).unwrap_or_else(|p| panic!("{}", p[0].message));
        Sender::new(config, listener.local_addr().unwrap().to_string())
    }

    /// One batch of stream `stream` holding `(seq, body)` events.
    fn batch(stream: &str, events: &[(u64, &str)]) -> StreamBatch {
        let mut block = safd_event_block::BlockWriter::new();
        for &(seq, body) in events {
            block.push_sequenced(seq, &format!("id-{seq}"), 0, 1, [("k", "v")], body);
        }
        let (count, bytes) = block.finish();
        StreamBatch {
            stream: stream.to_owned(),
            events: EventBlock { count, bytes },
            left_out: Vec::new(),
        }
    }

    fn acknowledged(report: &DeliveryReport) -> Vec<(String, u64)> {
        report
            .acknowledged
            .iter()
            .map(|p| (p.stream.clone(), p.seq))
            .collect()
    }

    /// Octet-counted frames (`LEN SP MSG`) read until the sender closes.
    fn octet_counted(mut stream: TcpStream) -> Vec<String> {
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).unwrap();
        let mut messages = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let space = rest.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&rest[..space])
                .unwrap()
                .parse()
                .unwrap();
            let message = &rest[space + 1..space + 1 + len];
            messages.push(String::from_utf8(message.to_vec()).unwrap());
            rest = &rest[space + 1 + len..];
        }
        messages
    }

    #[test]
    fn plain_tcp_frames_every_event_and_counts_all_written_as_delivered() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sender = sender(&listener, "");
        let receiver = std::thread::spawn({
            let listener = listener.try_clone().unwrap();
            move || octet_counted(listener.accept().unwrap().0)
        });
        sender.register("prod1-safd".into()).unwrap();
        let report = sender
            .deliver(&[
                batch("ems", &[(1, "first\nline"), (2, "second")]),
                batch("app", &[(7, "third")]),
            ])
            .unwrap();
        assert_eq!(
            acknowledged(&report),
            [("ems".to_owned(), 2), ("app".to_owned(), 7)]
        );
        drop(sender);
        let messages = receiver.join().unwrap();
        assert_eq!(messages.len(), 3);
        // Octet-counting keeps the line break inside the message.
        assert!(messages[0].ends_with("first\nline"), "{}", messages[0]);
        assert!(messages[2].ends_with("third"), "{}", messages[2]);
    }

    #[test]
    fn a_plain_tcp_receiver_that_closed_is_reported_not_written_into() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sender = sender(&listener, "");
        sender.register("prod1-safd".into()).unwrap();
        drop(listener.accept().unwrap().0);
        // The close is seen before the next write, not after it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let err = loop {
            match sender.deliver(&[batch("ems", &[(1, "one")])]) {
                Err(err) => break err,
                Ok(_) => assert!(std::time::Instant::now() < deadline, "close never seen"),
            }
        };
        assert!(
            matches!(&err, ConnectorError::Transient(m) if m.contains("sent again")),
            "{err:?}"
        );
    }

    /// A RELP server that accepts the session, then answers the first
    /// `answer` syslog messages with `status` and closes.
    fn relp_server(
        listener: TcpListener,
        answer: usize,
        status: &'static str,
    ) -> JoinHandle<usize> {
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut out = stream.try_clone().unwrap();
            let mut input = BufReader::new(stream);
            let mut answered = 0;
            loop {
                let Some((txnr, command)) = read_frame(&mut input) else {
                    return answered;
                };
                let reply = match command.as_str() {
                    "open" => "200 OK\nrelp_version=0\ncommands=syslog".to_owned(),
                    "syslog" if answered < answer => {
                        answered += 1;
                        status.to_owned()
                    }
                    _ => return answered,
                };
                let frame = format!("{txnr} rsp {} {reply}\n", reply.len());
                out.write_all(frame.as_bytes()).unwrap();
            }
        })
    }

    /// One client frame, `TXNR SP COMMAND SP DATALEN [SP DATA] LF`: its
    /// txnr and command; `None` once the client closed.
    fn read_frame(input: &mut impl BufRead) -> Option<(String, String)> {
        let mut field = |stops: &[u8]| -> Option<(String, u8)> {
            let mut text = String::new();
            loop {
                let mut byte = [0u8; 1];
                input.read_exact(&mut byte).ok()?;
                if stops.contains(&byte[0]) {
                    return Some((text, byte[0]));
                }
                text.push(char::from(byte[0]));
            }
        };
        let (txnr, _) = field(b" ")?;
        let (command, _) = field(b" ")?;
        let (len, end) = field(b" \n")?;
        if end == b' ' {
            let mut data = vec![0; len.parse().ok()?];
            input.read_exact(&mut data).ok()?;
            input.read_exact(&mut [0u8; 1]).ok()?;
        }
        Some((txnr, command))
    }

    #[test]
    fn relp_counts_exactly_the_acknowledged_messages() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sender = sender(&listener, r#", "transport": "relp", "relp_window": 4"#);
        let server = relp_server(listener.try_clone().unwrap(), 100, "200 OK");
        sender.register("prod1-safd".into()).unwrap();
        let events: Vec<(u64, &str)> = (1..=10).map(|seq| (seq, "event")).collect();
        let report = sender.deliver(&[batch("ems", &events)]).unwrap();
        assert_eq!(acknowledged(&report), [("ems".to_owned(), 10)]);
        drop(sender);
        assert_eq!(server.join().unwrap(), 10);
    }

    #[test]
    fn a_relp_server_dying_mid_window_leaves_only_its_answers_delivered() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sender = sender(&listener, r#", "transport": "relp", "relp_window": 8"#);
        let server = relp_server(listener.try_clone().unwrap(), 3, "200 OK");
        sender.register("prod1-safd".into()).unwrap();
        let events: Vec<(u64, &str)> = (1..=10).map(|seq| (seq, "event")).collect();
        let report = sender.deliver(&[batch("ems", &events)]).unwrap();
        // Three answered: seqs 1-3 count, the rest are safd's to resend.
        assert_eq!(acknowledged(&report), [("ems".to_owned(), 3)]);
        assert_eq!(server.join().unwrap(), 3);
    }

    #[test]
    fn a_relp_refusal_of_the_first_message_is_an_error_not_a_delivery() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sender = sender(&listener, r#", "transport": "relp""#);
        let _server = relp_server(listener.try_clone().unwrap(), 1, "500 queue full");
        sender.register("prod1-safd".into()).unwrap();
        let err = sender.deliver(&[batch("ems", &[(1, "one")])]).unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Transient(m) if m.contains("500 queue full")),
            "{err:?}"
        );
    }
}
