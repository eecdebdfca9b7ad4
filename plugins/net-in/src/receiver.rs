//! The listening socket and its connections: accept up to the limit, read
//! what each sender wrote, cut it into messages and make each an event.
//! Plain `std::net` (wasi:sockets inside the sandbox), non-blocking, so a
//! poll takes what has arrived and returns; its tests run natively.
//!
//! RELP connections are answered here too: `open` and `close` at once, a
//! `syslog` message only when [`Receiver::acknowledge`] is told that the
//! poll that took it is stored (the source's commit).

use crate::config::{Config, Format, Framing};
use crate::ems::{self, Assembler, Converter};
use crate::framing::{Frame, Framer};
use crate::relp::{self, Command};
use crate::resend::{ResendGuard, message_hash};
use crate::syslog::{self, Message};
use crate::transport::{Listener, OpenError, Stream};
use safd_plugin_sdk::events::EventWriter;
use safd_plugin_sdk::log;
use safd_plugin_sdk::syslog::FACILITIES;
use safd_plugin_sdk::types::Severity;
use std::borrow::Cow;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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

pub(crate) struct Receiver {
    listener: Listener,
    connections: Vec<Connection>,
    /// Where the next poll begins (round robin when a poll's budget runs
    /// out, so one busy sender cannot starve the others).
    first_served: usize,
    /// RELP messages stored whose answer did not reach their sender.
    resend: ResendGuard,
    /// RELP messages recognised as sent again since the start.
    resent: u64,
    /// Format `ems`: the parser and buffers (made at the first poll).
    ems: Option<Converter>,
    /// When the last commit answered RELP messages.
    answered_at: Option<Instant>,
}

struct Connection {
    stream: Stream,
    peer: SocketAddr,
    /// `PEER/ACCEPTED_AT_µs/`: with a message's offset in the connection,
    /// an id no other message has had, across connections and restarts.
    id_prefix: String,
    /// The sender's address as text (the `sender` attribute).
    sender: String,
    framer: Framer,
    /// Format `ems` on lines: the record under way.
    records: Assembler,
    last_read: Instant,
    /// Nothing more is read (the sender closed, went silent, or broke the
    /// protocol).
    closed: bool,
    /// RELP: answers not yet written to the socket.
    out: Vec<u8>,
    /// RELP: messages taken whose `200 OK` waits for their poll's commit.
    unanswered: Vec<Unanswered>,
    /// RELP: hashes of the messages whose answers are in `out`.
    answering: Vec<u64>,
    /// RELP: the connection's first messages may be ones sent again.
    may_resend: bool,
    /// RELP: how many of them were.
    resent_here: u64,
    /// RELP: close once `out` is written (after `close`, or a broken frame).
    closing: bool,
    /// Writing failed: the connection is gone.
    dead: bool,
}

/// A RELP message taken by a poll whose commit has not come yet.
struct Unanswered {
    poll: u64,
    txnr: u32,
    hash: u64,
}

/// Bytes read from a connection at a time.
const READ_CHUNK: usize = 64 * 1024;

impl Receiver {
    /// Listen on `address`; `resume_from` is the last cursor safd stored
    /// (it names the RELP messages that may come again).
    pub(crate) fn open(
        address: SocketAddr,
        tls: bool,
        resume_from: Option<&[u8]>,
    ) -> Result<Self, OpenError> {
        let listener = Listener::bind(address, tls)?;
        let resend = resume_from
            .map(ResendGuard::from_cursor)
            .unwrap_or_default();
        if !resend.is_empty() {
            log::info(&format!(
                "{} RELP messages stored before the restart were not answered: when their \
                 senders send them again they are answered, not stored twice",
                resend.len()
            ));
        }
        Ok(Self {
            listener,
            connections: Vec::new(),
            first_served: 0,
            resend,
            resent: 0,
            ems: None,
            answered_at: None,
        })
    }

    /// RELP messages taken and not yet answered.
    pub(crate) fn unanswered(&self) -> usize {
        self.connections.iter().map(|c| c.unanswered.len()).sum()
    }

    /// When the last commit answered RELP messages, if one did since this
    /// was last asked.
    pub(crate) fn take_answered_at(&mut self) -> Option<Instant> {
        self.answered_at.take()
    }

    /// Sleep until a sender writes, connects or closes, or `timeout` has
    /// passed.
    pub(crate) fn wait_readable(&self, timeout: Duration) {
        let streams = self
            .connections
            .iter()
            .filter(|c| !c.closed)
            .map(|c| &c.stream);
        if let Err(err) = self.listener.wait(streams, timeout) {
            // Looking again at once is all a failed wait costs.
            log::debug(&format!("waiting for senders failed: {err}"));
        }
    }

    /// Take what has arrived into `out`, within `budget`; true when more is
    /// waiting than the budget took. `poll` numbers this poll: its commit
    /// answers the RELP messages it took.
    pub(crate) fn poll(
        &mut self,
        config: &Config,
        out: &mut EventWriter,
        budget: &Budget,
        poll: u64,
    ) -> bool {
        self.accept(config);
        let now = safd_plugin_sdk::time::now_micros();
        let ems = self.ems.get_or_insert_with(|| Converter::new(config));
        let count = self.connections.len();
        let first = self.first_served % count.max(1);
        let mut more = false;
        for i in (first..count).chain(0..first) {
            if budget.spent(out) {
                self.first_served = i;
                more = true;
                break;
            }
            let mut context = Context {
                config,
                out,
                budget,
                now,
                poll,
                resend: &mut self.resend,
                resent: &mut self.resent,
                ems,
            };
            more |= self.connections[i].pump(&mut context);
        }
        for connection in &mut self.connections {
            connection.flush();
        }
        let resend = &mut self.resend;
        self.connections.retain_mut(|c| {
            let done = c.dead || (c.closed && c.framer.pending() == 0 && c.out.is_empty());
            if done {
                log::debug(&format!("connection from {} closed", c.peer));
                // Whatever was taken and not answered comes again.
                for message in c.unanswered.drain(..) {
                    resend.hold(message.hash);
                }
                for hash in c.answering.drain(..) {
                    resend.hold(hash);
                }
            }
            !done
        });
        more
    }

    /// The poll numbered `poll` (and every one before it) is stored: answer
    /// the RELP messages they took.
    pub(crate) fn acknowledge(&mut self, poll: u64) {
        for connection in &mut self.connections {
            let answered = connection
                .unanswered
                .iter()
                .take_while(|m| m.poll <= poll)
                .count();
            if answered > 0 {
                self.answered_at = Some(Instant::now());
            }
            for message in connection.unanswered.drain(..answered) {
                relp::ok(&mut connection.out, message.txnr);
                connection.answering.push(message.hash);
            }
            connection.flush();
        }
    }

    /// The RELP messages a restart must expect again, for the cursor of
    /// the poll just taken: those whose answer has not reached the socket
    /// (this poll's, and answers a slow sender has not read), and what the
    /// guard still holds.
    pub(crate) fn write_unanswered(&mut self, cursor: &mut Vec<u8>) {
        for connection in &self.connections {
            for message in &connection.unanswered {
                cursor.extend_from_slice(&message.hash.to_le_bytes());
            }
            for hash in &connection.answering {
                cursor.extend_from_slice(&hash.to_le_bytes());
            }
        }
        self.resend.write(cursor);
    }

    fn accept(&mut self, config: &Config) {
        loop {
            match self.listener.accept() {
                Ok(Some((stream, peer))) => {
                    if self.connections.len() >= config.max_connections {
                        log::warn(&format!(
                            "connection from {peer} refused: already {} connections \
                             (max_connections)",
                            self.connections.len()
                        ));
                        continue;
                    }
                    log::debug(&format!("connection from {peer}"));
                    self.connections.push(Connection {
                        stream,
                        peer,
                        id_prefix: format!("{peer}/{}/", safd_plugin_sdk::time::now_micros()),
                        sender: peer.to_string(),
                        framer: Framer::new(config.framing),
                        records: Assembler::default(),
                        last_read: Instant::now(),
                        closed: false,
                        out: Vec::new(),
                        unanswered: Vec::new(),
                        answering: Vec::new(),
                        may_resend: !self.resend.is_empty(),
                        resent_here: 0,
                        closing: false,
                        dead: false,
                    });
                }
                Ok(None) => return,
                Err(err) => {
                    log::warn(&format!("accepting a connection failed: {err}"));
                    return;
                }
            }
        }
    }
}

/// What a connection's pump works with.
struct Context<'a> {
    config: &'a Config,
    out: &'a mut EventWriter,
    budget: &'a Budget,
    now: i64,
    poll: u64,
    resend: &'a mut ResendGuard,
    resent: &'a mut u64,
    ems: &'a mut Converter,
}

impl Connection {
    /// Emit what is buffered, then read and emit more, until nothing more
    /// has arrived or the budget is spent (then true).
    fn pump(&mut self, cx: &mut Context<'_>) -> bool {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            while let Some(frame) = self.framer.next(cx.config.max_message_bytes, self.closed) {
                match frame.relp {
                    None if cx.config.format == Format::Ems
                        && cx.config.framing == Framing::Newline =>
                    {
                        self.ems_line(cx, &frame);
                    }
                    None => self.emit(cx, &frame),
                    Some((txnr, command)) => self.relp_frame(cx, &frame, txnr, command),
                }
                if cx.budget.spent(cx.out) {
                    self.framer.compact();
                    return self.framer.pending() > 0 || !self.closed;
                }
            }
            self.framer.compact();
            if let Some(why) = self.framer.broken()
                && !self.closing
            {
                log::warn(&format!(
                    "RELP connection from {} closed: {why}; what it sent is kept, flagged",
                    self.peer
                ));
                relp::server_close(&mut self.out);
                self.closing = true;
                self.closed = true;
            }
            if self.closed {
                // The connection's last record is whole.
                if let Some((record, offset)) = self.records.take() {
                    self.push_record(cx, &record, offset);
                }
                return false;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.framer.extend(&chunk[..n]);
                    self.last_read = Instant::now();
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => {
                    if self.last_read.elapsed() >= ems::RECORD_QUIET
                        && let Some((record, offset)) = self.records.take()
                    {
                        self.push_record(cx, &record, offset);
                    }
                    if self.last_read.elapsed() >= cx.config.idle_timeout {
                        log::warn(&format!(
                            "connection from {} closed: silent for {} ms (idle_timeout_ms)",
                            self.peer,
                            cx.config.idle_timeout.as_millis()
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

    fn relp_frame(&mut self, cx: &mut Context<'_>, frame: &Frame, txnr: u32, command: Command) {
        match command {
            Command::Syslog => {
                let data = &self.framer.buffered()[frame.start..frame.end];
                let hash = message_hash(self.peer.ip(), data);
                if self.may_resend {
                    if cx.resend.take(hash) {
                        // Stored before: answer, do not store it twice.
                        *cx.resent += 1;
                        self.resent_here += 1;
                        relp::ok(&mut self.out, txnr);
                        return;
                    }
                    // A sender sends what it has not been answered for
                    // first: past the first new message, nothing is.
                    self.may_resend = false;
                    if self.resent_here > 0 {
                        log::info(&format!(
                            "{} messages {} sent again were stored before its reconnect: \
                             answered, not stored twice ({} since the start)",
                            self.resent_here, self.peer, cx.resent
                        ));
                    }
                }
                self.emit(cx, frame);
                self.unanswered.push(Unanswered {
                    poll: cx.poll,
                    txnr,
                    hash,
                });
            }
            Command::Open => relp::open_ok(&mut self.out, txnr),
            Command::Close => {
                relp::close_ok(&mut self.out, txnr);
                self.closing = true;
                self.closed = true;
            }
            Command::Other => {
                relp::error(&mut self.out, txnr, "command not supported by safd net-in");
            }
        }
    }

    /// Write what answers are waiting, as far as the socket takes them.
    fn flush(&mut self) {
        let mut written = 0;
        while written < self.out.len() {
            match self.stream.write(&self.out[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => {
                    log::warn(&format!(
                        "answering the RELP sender {} failed: {err}",
                        self.peer
                    ));
                    self.dead = true;
                    return;
                }
            }
        }
        self.out.drain(..written);
        if self.out.is_empty() {
            self.answering.clear();
            if self.closing {
                self.stream.shutdown();
            }
        }
    }

    /// Format `ems` on lines: the line joins the record under way, or
    /// completes it.
    fn ems_line(&mut self, cx: &mut Context<'_>, frame: &Frame) {
        let bytes = &self.framer.buffered()[frame.start..frame.end];
        let line = text_of(bytes);
        if let Some((record, offset)) = self.records.line(&line, frame.offset) {
            self.push_record(cx, &record, offset);
        }
    }

    fn push_record(&self, cx: &mut Context<'_>, record: &str, offset: u64) {
        let mut id = String::with_capacity(self.id_prefix.len() + 20);
        id.push_str(&self.id_prefix);
        id.push_str(itoa::Buffer::new().format(offset));
        cx.ems
            .push(cx.out, cx.config, &id, &self.sender, record, cx.now);
    }

    fn emit(&self, cx: &mut Context<'_>, frame: &Frame) {
        let config = cx.config;
        let now = cx.now;
        let bytes = &self.framer.buffered()[frame.start..frame.end];
        let text = text_of(bytes);
        if config.format == Format::Ems {
            // One record per message (RELP, octet counting).
            self.push_record(cx, &text, frame.offset);
            return;
        }
        let message = syslog::parse(&text, config.format, now);
        let mut id = String::with_capacity(self.id_prefix.len() + 20);
        id.push_str(&self.id_prefix);
        id.push_str(itoa::Buffer::new().format(frame.offset));
        let mut attributes = attributes(&self.peer, &message, frame, matches!(text, Cow::Owned(_)));
        if config.parse_ems {
            // An EMS event forwarded as syslog: the event it carries, as
            // format ems makes it, or the message kept and flagged.
            match cx
                .ems
                .try_push(cx.out, config, &id, &self.sender, message.text)
            {
                Ok(()) => return,
                Err(error) => attributes.push(("ems_parse_error".to_owned(), error.0)),
            }
        }
        cx.out.push_fields(
            &id,
            message.time.unwrap_or(now),
            message.severity.map_or(config.severity, severity_of),
            attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            message.text,
        );
    }
}

/// A message's text, its invalid bytes replaced. Valid UTF-8 is checked a
/// word at a time; `String::from_utf8_lossy` checks every message a byte at
/// a time (5 % of safd's CPU in `bench-net-in`).
fn text_of(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
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
    use std::io::{Read, Write};
    use std::net::TcpStream;
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
        let receiver = Receiver::open("127.0.0.1:0".parse().unwrap(), false, None).unwrap();
        let Listener::Plain(listener) = &receiver.listener else {
            unreachable!("a plain listener")
        };
        let address = listener.local_addr().unwrap();
        (config, receiver, address)
    }

    /// One poll: its events and whether it said more was waiting.
    fn poll(receiver: &mut Receiver, config: &Config, events: usize) -> (Vec<Got>, bool) {
        let mut out = EventWriter::new();
        let budget = Budget {
            events,
            bytes: 1 << 30,
        };
        let more = receiver.poll(config, &mut out, &budget, 1);
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
    fn five_hundred_senders_at_once_all_get_in() {
        let (config, mut receiver, address) = setup(r#", "max_connections": 600"#);
        let senders = std::thread::spawn(move || {
            (0..500)
                .map(|i| {
                    let mut sender = TcpStream::connect(address).unwrap();
                    sender
                        .write_all(format!("sender {i:03}\n").as_bytes())
                        .unwrap();
                    sender
                })
                .collect::<Vec<_>>()
        });
        let got = collect(&mut receiver, &config, 500);
        assert_eq!(got.len(), 500);
        drop(senders.join().unwrap());
    }

    #[test]
    fn ems_format_a_records_become_events_as_ems_reader_makes_them() {
        let (config, mut receiver, address) = setup(r#", "format": "ems""#);
        let mut sender = TcpStream::connect(address).unwrap();
        sender
            .write_all(
                b"24-03-11 02:14:07 \\PROD1.$0        TANDEM.EMS.H01      000513 EMS: COLLECTOR STARTED\n\
                  24-03-11 02:23:48 \\PROD1.$TMP    * TANDEM.TMF.H01      000042 First line\n    second line\n\
                  not EMS at all\n\
                  24-03-11 02:23:49 \\PROD1.1,23      TANDEM.EXPAND.H01   000045 LAST\n",
            )
            .unwrap();
        // The last record is whole after a quiet moment, the connection
        // still open.
        let got = collect(&mut receiver, &config, 4);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0].body, "EMS: COLLECTOR STARTED");
        assert_eq!(got[0].attribute("system"), Some("\\PROD1"));
        assert_eq!(got[0].attribute("process"), Some("$0"));
        assert_eq!(got[0].attribute("event_number"), Some("513"));
        assert_eq!(got[0].attribute("collector"), Some("$0"));
        let sender_address = sender.local_addr().unwrap().to_string();
        assert_eq!(got[0].attribute("sender"), Some(sender_address.as_str()));
        assert_eq!(got[0].severity, Severity::Info);
        assert_eq!(got[1].body, "First line\nsecond line");
        assert_eq!(got[1].severity, Severity::Critical);
        assert!(got[2].attribute("parse_error").is_some());
        assert_eq!(got[2].body, "not EMS at all");
        assert_eq!(got[2].severity, Severity::Warning);
        assert_eq!(got[3].attribute("process"), Some("1,23"));
        assert_eq!(got[3].body, "LAST");
        let ids: std::collections::HashSet<&str> = got.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids.len(), 4);
    }

    #[test]
    fn ems_events_inside_syslog_messages_become_the_events_they_carry() {
        let (config, mut receiver, address) = setup(
            r#", "parse_ems": true, "severity_overrides":
                [{"subsystem": "expand", "event": 45, "severity": "major"}]"#,
        );
        let mut sender = TcpStream::connect(address).unwrap();
        // Octet counting, so that an event's continuation line travels
        // inside its message.
        let frame = |text: &str| format!("{} {text}", text.len());
        let messages = [
            "<13>1 2024-03-11T01:14:07Z prod1 ems - - - 24-03-11 02:14:07 \\PROD1.$0        TANDEM.EMS.H01      000513 EMS: COLLECTOR STARTED",
            "<13>Mar 11 02:23:48 prod1 ems: 24-03-11 02:23:48 \\PROD1.$TMP    * TANDEM.TMF.H01      000042 First line\n    second line",
            "<13>1 2024-03-11T01:14:07Z prod1 app - - - an ordinary message",
            "<13>1 2024-03-11T01:14:07Z prod1 ems - - - 24-03-11 02:23:49 \\PROD1.1,23      TANDEM.EXPAND.H01   000045 LAST",
        ];
        let text: String = messages.iter().map(|m| frame(m)).collect();
        sender.write_all(text.as_bytes()).unwrap();
        let got = collect(&mut receiver, &config, 4);
        assert_eq!(got.len(), 4, "{got:?}");
        // The same event as format ems (and ems-reader) makes of the text.
        assert_eq!(got[0].body, "EMS: COLLECTOR STARTED");
        assert_eq!(got[0].attribute("system"), Some("\\PROD1"));
        assert_eq!(got[0].attribute("event_number"), Some("513"));
        assert_eq!(got[0].attribute("format"), None);
        assert_eq!(got[1].body, "First line\nsecond line");
        assert_eq!(got[1].severity, Severity::Critical);
        // Not EMS: the syslog message, flagged.
        assert_eq!(got[2].body, "an ordinary message");
        assert_eq!(got[2].attribute("app"), Some("app"));
        assert!(got[2].attribute("ems_parse_error").is_some(), "{got:?}");
        // The configured override wins over "info".
        assert_eq!(got[3].severity, Severity::Major);
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

    /// Read RELP answers until `want` of them came (or `within` passed).
    fn answers_within(client: &mut TcpStream, want: usize, within: Duration) -> Vec<String> {
        client
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let deadline = Instant::now() + within;
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while text.matches(" rsp ").count() < want && Instant::now() < deadline {
            if let Ok(n) = client.read(&mut buf) {
                text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
            }
        }
        text.split_inclusive('\n')
            .filter(|l| l.contains(" rsp "))
            .map(|l| l.trim_end().to_owned())
            .collect()
    }

    fn answers(client: &mut TcpStream, want: usize) -> Vec<String> {
        answers_within(client, want, Duration::from_secs(5))
    }

    fn syslog_frame(txnr: u32, message: &str) -> String {
        format!("{txnr} syslog {} {message}\n", message.len())
    }

    #[test]
    fn relp_messages_are_answered_in_the_commit_and_a_resend_after_a_restart_is_not_stored_twice() {
        let (config, mut receiver, address) = setup(r#", "transport": "relp""#);
        let mut client = TcpStream::connect(address).unwrap();
        let offers = "relp_version=0\nrelp_software=t\ncommands=syslog";
        client
            .write_all(format!("1 open {} {offers}\n", offers.len()).as_bytes())
            .unwrap();
        let batch: String = (0..3)
            .map(|i| syslog_frame(i + 2, &format!("<13>1 - h app - - - m{i}")))
            .collect();
        client.write_all(batch.as_bytes()).unwrap();
        let got = collect(&mut receiver, &config, 3);
        assert_eq!(
            got.iter().map(|g| g.body.as_str()).collect::<Vec<_>>(),
            ["m0", "m1", "m2"]
        );
        // The open is answered at once, the messages not before the commit.
        let open = answers(&mut client, 1);
        assert!(
            open[0].starts_with("1 rsp ") && open[0].contains("200 OK"),
            "{open:?}"
        );
        assert!(answers_within(&mut client, 1, Duration::from_millis(300)).is_empty());
        let mut cursor = 1u64.to_be_bytes().to_vec();
        receiver.write_unanswered(&mut cursor);
        assert_eq!(cursor.len(), 8 + 3 * 8);

        // safd dies after storing the poll, before its commit: the sender
        // gets no answer, reconnects and sends the three again, then more.
        drop(receiver);
        drop(client);
        let mut receiver = Receiver::open(address, false, Some(&cursor)).unwrap();
        let mut client = TcpStream::connect(address).unwrap();
        let again: String = (0..4)
            .map(|i| syslog_frame(i + 1, &format!("<13>1 - h app - - - m{i}")))
            .collect();
        client.write_all(again.as_bytes()).unwrap();
        let got = collect(&mut receiver, &config, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "m3");
        // The three stored before are answered without waiting; m3 once
        // its poll is committed.
        assert_eq!(
            answers(&mut client, 3),
            ["1 rsp 6 200 OK", "2 rsp 6 200 OK", "3 rsp 6 200 OK"]
        );
        assert_eq!(receiver.resent, 3);
        receiver.acknowledge(1);
        assert_eq!(answers(&mut client, 1), ["4 rsp 6 200 OK"]);
        // Only what is answered is off the cursor.
        let mut cursor = Vec::new();
        receiver.write_unanswered(&mut cursor);
        assert!(cursor.is_empty());

        // The same text later, on the same connection, is a new message.
        client
            .write_all(syslog_frame(5, "<13>1 - h app - - - m0").as_bytes())
            .unwrap();
        assert_eq!(collect(&mut receiver, &config, 1)[0].body, "m0");
        client.write_all(b"6 close 0\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !receiver.connections.is_empty() && Instant::now() < deadline {
            poll(&mut receiver, &config, 1000);
        }
        // m0's answer is lost with the connection: it is expected back.
        assert_eq!(answers(&mut client, 1), ["6 rsp 0"]);
        assert_eq!(receiver.resend.len(), 1);
    }

    #[test]
    fn a_relp_message_whose_sender_left_unanswered_is_expected_back() {
        let (config, mut receiver, address) = setup(r#", "transport": "relp""#);
        let mut client = TcpStream::connect(address).unwrap();
        client
            .write_all(syslog_frame(1, "lost answer").as_bytes())
            .unwrap();
        assert_eq!(collect(&mut receiver, &config, 1).len(), 1);
        drop(client);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !receiver.connections.is_empty() && Instant::now() < deadline {
            poll(&mut receiver, &config, 1000);
        }
        assert_eq!(receiver.resend.len(), 1);
        let mut client = TcpStream::connect(address).unwrap();
        client
            .write_all(
                format!(
                    "{}{}",
                    syslog_frame(1, "lost answer"),
                    syslog_frame(2, "new")
                )
                .as_bytes(),
            )
            .unwrap();
        let got = collect(&mut receiver, &config, 1);
        assert_eq!(
            got.iter().map(|g| g.body.as_str()).collect::<Vec<_>>(),
            ["new"]
        );
        assert_eq!(answers(&mut client, 1), ["1 rsp 6 200 OK"]);
        assert!(receiver.resend.is_empty());
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
