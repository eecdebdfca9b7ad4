//! The listening socket and its connections: accept up to the limit, read
//! what each sender wrote, cut it into messages and make each an event.
//! Plain `std::net` (wasi:sockets inside the sandbox), non-blocking, so a
//! poll takes what has arrived and returns; its tests run natively.

use crate::config::Config;
use crate::framing::{Frame, Framer};
use crate::syslog::{self, Message};
use safd_plugin_sdk::events::EventWriter;
use safd_plugin_sdk::log;
use safd_plugin_sdk::syslog::FACILITIES;
use safd_plugin_sdk::types::Severity;
use std::borrow::Cow;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

/// What one poll may take.
pub(crate) struct Budget {
    pub(crate) events: usize,
    pub(crate) bytes: usize,
}

impl Budget {
    fn spent(&self, out: &EventWriter) -> bool {
        out.len() >= self.events || out.text_bytes() >= self.bytes
    }
}

/// Why the listener could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The sandbox refused (the address is not in `grants.listen`).
    NotGranted(SocketAddr),
    /// Anything else (address in use, no such interface).
    Io(SocketAddr, std::io::Error),
}

pub(crate) struct Receiver {
    listener: TcpListener,
    connections: Vec<Connection>,
    /// Where the next poll begins (round robin when a poll's budget runs
    /// out, so one busy sender cannot starve the others).
    first_served: usize,
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    /// `PEER/ACCEPTED_AT_µs/`: with a message's offset in the connection,
    /// an id no other message has had, across connections and restarts.
    id_prefix: String,
    framer: Framer,
    last_read: Instant,
    closed: bool,
}

/// Bytes read from a connection at a time.
const READ_CHUNK: usize = 64 * 1024;

impl Receiver {
    pub(crate) fn open(address: SocketAddr) -> Result<Self, OpenError> {
        let listener = TcpListener::bind(address).map_err(|err| match err.kind() {
            ErrorKind::PermissionDenied => OpenError::NotGranted(address),
            _ => OpenError::Io(address, err),
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|err| OpenError::Io(address, err))?;
        Ok(Self {
            listener,
            connections: Vec::new(),
            first_served: 0,
        })
    }

    /// Take what has arrived into `out`, within `budget`; true when more is
    /// waiting than the budget took.
    pub(crate) fn poll(&mut self, config: &Config, out: &mut EventWriter, budget: &Budget) -> bool {
        self.accept(config);
        let now = safd_plugin_sdk::time::now_micros();
        let count = self.connections.len();
        let first = self.first_served % count.max(1);
        let mut more = false;
        for i in (first..count).chain(0..first) {
            if budget.spent(out) {
                self.first_served = i;
                more = true;
                break;
            }
            more |= self.connections[i].pump(config, out, budget, now);
        }
        self.connections.retain(|c| {
            let done = c.closed && c.framer.pending() == 0;
            if done {
                log::debug(&format!("connection from {} closed", c.peer));
            }
            !done
        });
        more
    }

    fn accept(&mut self, config: &Config) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if self.connections.len() >= config.max_connections {
                        log::warn(&format!(
                            "connection from {peer} refused: already {} connections \
                             (max_connections)",
                            self.connections.len()
                        ));
                        continue;
                    }
                    if let Err(err) = stream.set_nonblocking(true) {
                        log::warn(&format!("connection from {peer} dropped: {err}"));
                        continue;
                    }
                    log::debug(&format!("connection from {peer}"));
                    self.connections.push(Connection {
                        stream,
                        peer,
                        id_prefix: format!("{peer}/{}/", safd_plugin_sdk::time::now_micros()),
                        framer: Framer::new(config.framing),
                        last_read: Instant::now(),
                        closed: false,
                    });
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => {
                    log::warn(&format!("accepting a connection failed: {err}"));
                    return;
                }
            }
        }
    }
}

impl Connection {
    /// Emit what is buffered, then read and emit more, until nothing more
    /// has arrived or the budget is spent (then true).
    fn pump(&mut self, config: &Config, out: &mut EventWriter, budget: &Budget, now: i64) -> bool {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            while let Some(frame) = self.framer.next(config.max_message_bytes, self.closed) {
                self.emit(config, &frame, out, now);
                if budget.spent(out) {
                    self.framer.compact();
                    return self.framer.pending() > 0 || !self.closed;
                }
            }
            self.framer.compact();
            if self.closed {
                return false;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.framer.extend(&chunk[..n]);
                    self.last_read = Instant::now();
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => {
                    if self.last_read.elapsed() >= config.idle_timeout {
                        log::warn(&format!(
                            "connection from {} closed: silent for {} ms (idle_timeout_ms)",
                            self.peer,
                            config.idle_timeout.as_millis()
                        ));
                        self.closed = true;
                        continue;
                    }
                    return false;
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => {
                    log::warn(&format!("connection from {} failed: {err}", self.peer));
                    self.closed = true;
                }
            }
        }
    }

    fn emit(&self, config: &Config, frame: &Frame, out: &mut EventWriter, now: i64) {
        let bytes = &self.framer.buffered()[frame.start..frame.end];
        let text = String::from_utf8_lossy(bytes);
        let message = syslog::parse(&text, config.format, now);
        let mut id = String::with_capacity(self.id_prefix.len() + 20);
        id.push_str(&self.id_prefix);
        id.push_str(itoa::Buffer::new().format(frame.offset));
        let attributes = attributes(&self.peer, &message, frame, matches!(text, Cow::Owned(_)));
        out.push_fields(
            &id,
            message.time.unwrap_or(now),
            message.severity.map_or(config.severity, severity_of),
            attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            message.text,
        );
    }
}

/// The event's attributes: who sent it and what the message said about
/// itself; what was wrong with it, if anything.
fn attributes(
    peer: &SocketAddr,
    m: &Message<'_>,
    frame: &Frame,
    invalid_utf8: bool,
) -> Vec<(String, String)> {
    let mut out = vec![
        ("sender".to_owned(), peer.to_string()),
        ("format".to_owned(), m.format.to_owned()),
    ];
    let mut add = |key: &str, value: Option<&str>| {
        if let Some(value) = value {
            out.push((key.to_owned(), value.to_owned()));
        }
    };
    add(
        "facility",
        m.facility
            .and_then(|f| FACILITIES.get(usize::from(f)).copied()),
    );
    add("host", m.hostname);
    add("app", m.app);
    add("procid", m.procid);
    add("msgid", m.msgid);
    let problem = m.problem.as_deref().or(frame.problem);
    add("malformed", problem);
    out.extend(m.structured.iter().cloned());
    if let Some(len) = frame.truncated_from {
        out.push(("truncated".to_owned(), len.to_string()));
    }
    if invalid_utf8 {
        out.push(("invalid_utf8".to_owned(), "true".to_owned()));
    }
    out
}

/// syslog severity (0 emergency … 7 debug) → safd's.
fn severity_of(syslog: u8) -> Severity {
    match syslog {
        0..=2 => Severity::Critical,
        3 => Severity::Major,
        4 => Severity::Warning,
        5 | 6 => Severity::Info,
        _ => Severity::Debug,
    }
}

#[cfg(all(test, not(target_os = "wasi")))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[derive(Debug)]
    struct Got {
        id: String,
        body: String,
        severity: Severity,
        attributes: Vec<(String, String)>,
    }

    impl Got {
        fn attribute(&self, key: &str) -> Option<&str> {
            self.attributes
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        }
    }

    fn setup(extra: &str) -> (Config, Receiver, SocketAddr) {
        let config =
            crate::config::parse(&format!(r#"{{"listen": "127.0.0.1:1" {extra}}}"#)).unwrap();
        let receiver = Receiver::open("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = receiver.listener.local_addr().unwrap();
        (config, receiver, address)
    }

    /// One poll: its events and whether it said more was waiting.
    fn poll(receiver: &mut Receiver, config: &Config, events: usize) -> (Vec<Got>, bool) {
        let mut out = EventWriter::new();
        let budget = Budget {
            events,
            bytes: 1 << 30,
        };
        let more = receiver.poll(config, &mut out, &budget);
        let got = out
            .finish()
            .iter()
            .map(|e| {
                let e = e.unwrap();
                Got {
                    id: e.id.to_owned(),
                    body: e.body.to_owned(),
                    severity: Severity::from_code(e.severity).unwrap(),
                    attributes: e
                        .attributes
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                }
            })
            .collect();
        (got, more)
    }

    /// Poll until `n` events came (or 5 s passed).
    fn collect(receiver: &mut Receiver, config: &Config, n: usize) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut all = Vec::new();
        while all.len() < n && Instant::now() < deadline {
            all.extend(poll(receiver, config, 1000).0);
            std::thread::sleep(Duration::from_millis(5));
        }
        all
    }

    #[test]
    fn messages_from_several_senders_become_events_with_distinct_ids() {
        let (config, mut receiver, address) = setup("");
        let mut a = TcpStream::connect(address).unwrap();
        let mut b = TcpStream::connect(address).unwrap();
        a.write_all(b"<11>1 2024-03-11T01:17:10Z prod1 ems - - - disk failed\n")
            .unwrap();
        b.write_all(b"just a line\n").unwrap();
        a.write_all(b"<14>Mar 11 01:17:10 prod1 app: fine\n")
            .unwrap();
        let mut got = collect(&mut receiver, &config, 3);
        got.sort_by(|x, y| x.body.cmp(&y.body));
        let bodies: Vec<&str> = got.iter().map(|g| g.body.as_str()).collect();
        assert_eq!(bodies, ["disk failed", "fine", "just a line"]);
        assert_eq!(got[0].severity, Severity::Major);
        assert_eq!(got[0].attribute("host"), Some("prod1"));
        assert_eq!(got[1].attribute("format"), Some("rfc3164"));
        assert_eq!(got[2].attribute("format"), Some("raw"));
        assert_eq!(got[2].severity, Severity::Info);
        let sender = b.local_addr().unwrap().to_string();
        assert_eq!(got[2].attribute("sender"), Some(sender.as_str()));
        let mut ids: Vec<&str> = got.iter().map(|g| g.id.as_str()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 3);
        // Closed connections are let go once read.
        drop((a, b));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !receiver.connections.is_empty() && Instant::now() < deadline {
            poll(&mut receiver, &config, 1000);
        }
        assert!(receiver.connections.is_empty());
    }

    #[test]
    fn a_small_budget_takes_messages_in_order_over_several_polls() {
        let (config, mut receiver, address) = setup("");
        let mut sender = TcpStream::connect(address).unwrap();
        let text: String = (0..10).map(|i| format!("line {i}\n")).collect();
        sender.write_all(text.as_bytes()).unwrap();
        drop(sender);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut all = Vec::new();
        while all.len() < 10 && Instant::now() < deadline {
            let (got, more) = poll(&mut receiver, &config, 3);
            assert!(got.len() <= 3);
            if got.len() == 3 {
                assert!(more);
            }
            all.extend(got);
        }
        let bodies: Vec<String> = all.iter().map(|g| g.body.clone()).collect();
        let expected: Vec<String> = (0..10).map(|i| format!("line {i}")).collect();
        assert_eq!(bodies, expected);
    }

    #[test]
    fn connections_over_the_limit_are_closed_and_silent_ones_cut() {
        let (mut config, mut receiver, address) = setup(r#", "max_connections": 2"#);
        config.idle_timeout = Duration::from_millis(200);
        let first = TcpStream::connect(address).unwrap();
        let second = TcpStream::connect(address).unwrap();
        let mut third = TcpStream::connect(address).unwrap();
        poll(&mut receiver, &config, 1000);
        assert_eq!(receiver.connections.len(), 2);
        third
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 1];
        assert!(matches!(third.read(&mut buf), Ok(0) | Err(_)));
        // Both stay silent: cut after the idle timeout.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !receiver.connections.is_empty() && Instant::now() < deadline {
            poll(&mut receiver, &config, 1000);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(receiver.connections.is_empty());
        drop((first, second));
    }

    #[test]
    fn an_over_long_or_broken_message_is_flagged_never_dropped() {
        let (config, mut receiver, address) = setup(r#", "max_message_bytes": 480"#);
        let mut sender = TcpStream::connect(address).unwrap();
        let long = "y".repeat(1000);
        sender
            .write_all(format!("{long}\n<13>1 bad-time h a - - - x\nok\n").as_bytes())
            .unwrap();
        sender.write_all(b"\xff bytes\n").unwrap();
        let got = collect(&mut receiver, &config, 4);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0].body.len(), 480);
        assert!(got[0].attribute("truncated").is_some());
        assert!(got[1].attribute("malformed").unwrap().contains("TIMESTAMP"));
        assert_eq!(got[3].attribute("invalid_utf8"), Some("true"));
    }
}
