//! One connection to a NATS server: the handshake, JetStream requests, and
//! publishes whose answers fill the [`Window`].
//!
//! Blocking, as a plugin's calls are: every read is bounded by the
//! connection's timeout, and waiting for answers by a deadline. Errors are
//! already the WIT cases the engine acts on: `unauthorized` for refused
//! credentials, `unavailable` for a server that cannot take the events
//! (gone, no JetStream, needs TLS), `fatal` only for a stream setting that
//! no retry can fix.

use crate::ack::{self, PubOutcome, Window};
use crate::nkey::KeyPair;
use crate::protocol::{self, Auth, Message, Reader, ServerInfo, ServerOp};
use safd_plugin_sdk::tcp::Connection;
use safd_plugin_sdk::types::ConnectorError;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// Moves bytes to and from the server: safd's TCP connection in the
/// plugin, the same over loopback in the tests.
pub trait Transport {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), ConnectorError>;
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ConnectorError>;
}

impl Transport for Connection {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), ConnectorError> {
        Connection::write_all(self, bytes)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ConnectorError> {
        Connection::read(self, buf)
    }
}

/// Who the client is to the server.
#[derive(Debug)]
pub enum Credentials {
    None,
    Token(String),
    UserPassword { user: String, password: String },
    Nkey(KeyPair),
}

/// A stream as JetStream describes it (the fields the plugin acts on).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StreamConfig {
    pub name: String,
    pub subjects: Vec<String>,
    /// Nanoseconds within which a repeated `Nats-Msg-Id` is recognised.
    pub duplicate_window: u64,
    pub num_replicas: u32,
    pub storage: String,
}

/// How much a stream holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StreamState {
    pub messages: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// A stream's configuration and state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StreamInfo {
    pub config: StreamConfig,
    pub state: StreamState,
}

#[derive(Deserialize)]
struct StreamInfoJson {
    #[serde(default)]
    config: Option<StreamConfig>,
    #[serde(default)]
    state: StreamState,
    #[serde(default)]
    error: Option<ack::ApiError>,
}

/// JetStream's "stream not found".
const STREAM_NOT_FOUND: u32 = 10059;

/// A publish whose answer said it was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub stream: String,
    pub seq: u64,
    pub reason: String,
    /// No retry will store it (JetStream said so with a 4xx code): the
    /// event is for the dead letters. Its place in the run counts as
    /// settled.
    pub permanent: bool,
    /// No stream takes the subject at all.
    pub no_stream: bool,
}

pub struct Client<T> {
    transport: T,
    address: String,
    reader: Reader,
    info: ServerInfo,
    /// `_INBOX.<id>`: answers come to `<inbox>.<token>`.
    inbox: String,
    out: Vec<u8>,
    window: Window,
    next_request: u64,
}

impl<T> std::fmt::Debug for Client<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .field("server", &self.info.server_name)
            .finish_non_exhaustive()
    }
}

/// Subscription id of the inbox (the only subscription).
const INBOX_SID: u64 = 1;
/// Buffered publishes are written once this many bytes gather.
const WRITE_AT: usize = 64 * 1024;

impl<T: Transport> Client<T> {
    /// The handshake on a fresh connection: the server's `INFO`, our
    /// `CONNECT` (signed for an nkey), a `PING` whose `PONG` proves the
    /// server accepted it, and the inbox subscription. `inbox_id` must be
    /// unique among the server's clients.
    pub fn connect(
        mut transport: T,
        address: &str,
        name: &str,
        credentials: &Credentials,
        inbox_id: &str,
        timeout: Duration,
    ) -> Result<Self, ConnectorError> {
        let mut reader = Reader::new(1 << 20);
        let deadline = Instant::now() + timeout;
        let info = match next_op(&mut transport, &mut reader, address, deadline)? {
            ServerOp::Info(info) => *info,
            other => {
                return Err(unavailable(
                    address,
                    format!("it did not start with INFO but {other:?}; is it a NATS server?"),
                ));
            }
        };
        if info.tls_required {
            return Err(unavailable(
                address,
                "the server requires TLS, which this plugin cannot do yet (NATS starts TLS \
                 after its INFO line, safd's TLS does not); give safd a listener without \
                 `tls` on a trusted network",
            ));
        }
        if !info.headers {
            return Err(unavailable(
                address,
                "the server does not support message headers (NATS 2.2 or later is needed for \
                 Nats-Msg-Id deduplication)",
            ));
        }
        let auth = match credentials {
            Credentials::None => Auth::None,
            Credentials::Token(token) => Auth::Token(token.clone()),
            Credentials::UserPassword { user, password } => Auth::UserPassword {
                user: user.clone(),
                password: password.clone(),
            },
            Credentials::Nkey(pair) => {
                let Some(nonce) = &info.nonce else {
                    return Err(ConnectorError::Unauthorized(format!(
                        "NATS server {address} sent no nonce to sign: it is not configured \
                         for nkey authentication (use the credentials it is configured for)"
                    )));
                };
                Auth::Nkey {
                    public: pair.public_key(),
                    signature: pair.sign_nonce(nonce),
                }
            }
        };
        reader.set_max_message(message_limit(&info));
        let mut client = Self {
            transport,
            address: address.to_owned(),
            reader,
            info,
            inbox: format!("_INBOX.{inbox_id}"),
            out: Vec::new(),
            window: Window::default(),
            next_request: 0,
        };
        protocol::write_connect(&mut client.out, name, &auth);
        protocol::write_sub(&mut client.out, &format!("{}.*", client.inbox), INBOX_SID);
        protocol::write_ping(&mut client.out);
        client.flush()?;
        loop {
            match client.next_op(deadline)? {
                ServerOp::Pong => return Ok(client),
                ServerOp::Ping => {
                    protocol::write_pong(&mut client.out);
                    client.flush()?;
                }
                ServerOp::Info(info) => client.info = *info,
                ServerOp::Ok | ServerOp::Msg(_) => {}
                ServerOp::Err(text) => return Err(client.server_error(&text)),
            }
        }
    }

    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// The largest header block and payload the server takes together.
    pub fn max_payload(&self) -> usize {
        usize::try_from(self.info.max_payload).unwrap_or(usize::MAX)
    }

    /// The stream `name`, `None` when JetStream has no such stream.
    pub fn stream_info(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<StreamInfo>, ConnectorError> {
        let answer = self.request(&format!("$JS.API.STREAM.INFO.{name}"), b"", timeout)?;
        self.stream_answer(&answer, name, "describe")
    }

    /// Create the stream `config.name`.
    pub fn create_stream(
        &mut self,
        config: &serde_json::Value,
        name: &str,
        timeout: Duration,
    ) -> Result<StreamInfo, ConnectorError> {
        let body = config.to_string();
        let answer = self.request(
            &format!("$JS.API.STREAM.CREATE.{name}"),
            body.as_bytes(),
            timeout,
        )?;
        self.stream_answer(&answer, name, "create")?.ok_or_else(|| {
            ConnectorError::Fatal(format!("JetStream did not create stream `{name}`"))
        })
    }

    fn stream_answer(
        &self,
        answer: &Message,
        name: &str,
        doing: &str,
    ) -> Result<Option<StreamInfo>, ConnectorError> {
        if answer.headers.as_ref().and_then(|h| h.status) == Some(503) {
            return Err(unavailable(
                &self.address,
                "the server has no JetStream (start nats-server with `-js`, or `jetstream {}` \
                 in its configuration)",
            ));
        }
        let parsed: StreamInfoJson = serde_json::from_slice(&answer.payload).map_err(|e| {
            unavailable(
                &self.address,
                format!("its answer to {doing} stream `{name}` does not parse: {e}"),
            )
        })?;
        match (parsed.error, parsed.config) {
            (Some(error), _) if error.err_code == STREAM_NOT_FOUND => Ok(None),
            (Some(error), _) => {
                let message = format!(
                    "JetStream refused to {doing} stream `{name}`: {} (code {}, error {})",
                    error.description, error.code, error.err_code
                );
                Err(if error.code == 403 {
                    ConnectorError::Unauthorized(message)
                } else {
                    ConnectorError::Unavailable(message)
                })
            }
            (None, Some(config)) => Ok(Some(StreamInfo {
                config,
                state: parsed.state,
            })),
            (None, None) => Err(unavailable(
                &self.address,
                format!("its answer to {doing} stream `{name}` holds no stream"),
            )),
        }
    }

    /// A request and its one answer (JetStream's API).
    fn request(
        &mut self,
        subject: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Message, ConnectorError> {
        self.next_request += 1;
        let reply = format!("{}.r{}", self.inbox, self.next_request);
        protocol::write_pub(&mut self.out, subject, &reply, payload);
        self.flush()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let ServerOp::Msg(message) = self.next_op(deadline)? {
                if message.subject == reply {
                    return Ok(message);
                }
                self.take_answer(&message);
            }
        }
    }

    /// Queue a publish of `seq` of safd stream `stream` (written once
    /// enough gather, or by [`Client::flush`]). Returns its token.
    pub fn publish(
        &mut self,
        stream: &str,
        seq: u64,
        subject: &str,
        headers: &[u8],
        payload: &[u8],
    ) -> Result<u64, ConnectorError> {
        let token = self.window.publish(stream, seq);
        protocol::write_hpub_to_inbox(&mut self.out, subject, &self.inbox, token, headers, payload);
        if self.out.len() >= WRITE_AT {
            self.flush()?;
        }
        Ok(token)
    }

    pub fn flush(&mut self) -> Result<(), ConnectorError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = self.transport.write_all(&self.out);
        self.out.clear();
        result
    }

    /// Read answers until fewer than `at_most` publishes wait for one, or
    /// the deadline passes (then `unavailable`: a server that stopped
    /// answering is as good as gone). Refusals are returned; the window
    /// holds what was stored.
    pub fn wait_answers(
        &mut self,
        at_most: usize,
        deadline: Instant,
    ) -> Result<Vec<Refusal>, ConnectorError> {
        self.flush()?;
        let mut refusals = Vec::new();
        while self.window.unanswered() > at_most {
            if let ServerOp::Msg(message) = self.next_op(deadline)?
                && let Some(refusal) = self.take_answer(&message)
            {
                refusals.push(refusal);
            }
        }
        Ok(refusals)
    }

    pub fn window(&mut self) -> &mut Window {
        &mut self.window
    }

    /// Record an answer to a publish; a refusal is also returned.
    fn take_answer(&mut self, message: &Message) -> Option<Refusal> {
        let token = message
            .subject
            .strip_prefix(&self.inbox)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|token| token.parse::<u64>().ok())?;
        let outcome = ack::outcome(message);
        if let Ok(PubOutcome::Stored { .. }) = outcome {
            // The common case, with nothing to name.
            self.window.answer(token, Ok(()));
            return None;
        }
        let (stream, seq) = self
            .window
            .publish_of(token)
            .map(|(stream, seq)| (stream.to_owned(), seq))?;
        let refusal = |reason: String, permanent: bool, no_stream: bool| Refusal {
            stream: stream.clone(),
            seq,
            reason,
            permanent,
            no_stream,
        };
        let refusal = match outcome {
            Ok(PubOutcome::Stored { .. }) => None,
            Ok(PubOutcome::NoResponders) => Some(refusal(
                "no stream takes its subject (check the stream's subjects and the subject \
                 template)"
                    .to_owned(),
                false,
                true,
            )),
            Ok(PubOutcome::Refused {
                code,
                err_code,
                description,
            }) => Some(refusal(
                format!("JetStream refused it: {description} (code {code}, error {err_code})"),
                (400..500).contains(&code),
                false,
            )),
            Err(err) => Some(refusal(err.to_string(), false, false)),
        };
        let settled = refusal.as_ref().is_none_or(|r| r.permanent);
        let result = if settled {
            Ok(())
        } else {
            Err(refusal
                .as_ref()
                .map(|r| r.reason.clone())
                .unwrap_or_default())
        };
        self.window.answer(token, result);
        refusal
    }

    /// A round trip: the server is there and reads what we send.
    pub fn ping(&mut self, timeout: Duration) -> Result<(), ConnectorError> {
        protocol::write_ping(&mut self.out);
        self.flush()?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_op(deadline)? {
                ServerOp::Pong => return Ok(()),
                ServerOp::Msg(message) => {
                    self.take_answer(&message);
                }
                _ => {}
            }
        }
    }

    /// The next operation, answering the server's pings on the way.
    fn next_op(&mut self, deadline: Instant) -> Result<ServerOp, ConnectorError> {
        loop {
            let op = next_op(
                &mut self.transport,
                &mut self.reader,
                &self.address,
                deadline,
            )?;
            match op {
                ServerOp::Ping => {
                    protocol::write_pong(&mut self.out);
                    self.flush()?;
                }
                ServerOp::Err(text) => return Err(self.server_error(&text)),
                ServerOp::Info(info) => {
                    self.reader.set_max_message(message_limit(&info));
                    self.info = *info;
                }
                other => return Ok(other),
            }
        }
    }

    fn server_error(&self, text: &str) -> ConnectorError {
        let message = format!("NATS server {} said: {text}", self.address);
        if text.to_ascii_lowercase().contains("authorization") {
            ConnectorError::Unauthorized(format!(
                "{message} (check the credentials in the configuration and the server's \
                 authorization block)"
            ))
        } else {
            ConnectorError::Unavailable(message)
        }
    }
}

/// Room for a message of the server's maximum payload and its headers.
fn message_limit(info: &ServerInfo) -> usize {
    usize::try_from(info.max_payload)
        .unwrap_or(usize::MAX)
        .max(1 << 20)
        .saturating_add(64 * 1024)
}

fn unavailable(address: &str, why: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Unavailable(format!("NATS server {address}: {why}"))
}

/// Read until one whole operation is there.
fn next_op<T: Transport>(
    transport: &mut T,
    reader: &mut Reader,
    address: &str,
    deadline: Instant,
) -> Result<ServerOp, ConnectorError> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(op) = reader.next_op().map_err(|err| unavailable(address, err))? {
            return Ok(op);
        }
        if Instant::now() >= deadline {
            return Err(unavailable(address, "no answer in time"));
        }
        let n = transport.read(&mut buf)?;
        reader.feed(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A scripted server on loopback: sends `greeting`, then answers each
    /// line the client writes with what `answer` returns for it.
    fn server(
        greeting: &'static str,
        answer: impl Fn(&str) -> Option<String> + Send + 'static,
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            writer.write_all(greeting.as_bytes()).unwrap();
            let mut lines = BufReader::new(stream);
            let mut line = String::new();
            while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
                if let Some(reply) = answer(line.trim_end()) {
                    let _ = writer.write_all(reply.as_bytes());
                }
                line.clear();
            }
        });
        address
    }

    const INFO: &str = "INFO {\"server_id\":\"S\",\"server_name\":\"n1\",\"version\":\"2.9.10\",\
                        \"headers\":true,\"max_payload\":1024,\"nonce\":\"PXoWU7zWAMt75FY\"}\r\n";

    fn connect(
        address: &str,
        credentials: &Credentials,
    ) -> Result<Client<Connection>, ConnectorError> {
        let connection = Connection::open(
            address,
            false,
            Duration::from_secs(2),
            Duration::from_secs(2),
        )?;
        Client::connect(
            connection,
            address,
            "safd test",
            credentials,
            "t1",
            Duration::from_secs(2),
        )
    }

    #[test]
    fn the_handshake_signs_the_nonce_and_waits_for_pong() {
        let address = server(INFO, |line| {
            if let Some(json) = line.strip_prefix("CONNECT ") {
                let connect: serde_json::Value = serde_json::from_str(json).unwrap();
                assert_eq!(
                    connect["nkey"],
                    "UCK5N7N66OBOINFXAYC2ACJQYFSOD4VYNU6APEJTAVFZB2SVHLKGEW7L"
                );
                assert_eq!(
                    connect["sig"],
                    "ZaAiVDgB5CeYoXoQ7cBCmq-ZllzUnGUoDVb8C7PilWvCs8XKfUchAUhz2P4BYAF--Dg3w05CqyQFRDiGL6LrDw"
                );
            }
            (line == "PING").then(|| "PING\r\nPONG\r\n".to_owned())
        });
        let pair = KeyPair::from_seed("SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU")
            .unwrap();
        let client = connect(&address, &Credentials::Nkey(pair)).unwrap();
        assert_eq!(client.max_payload(), 1024);
        assert_eq!(client.info().server_name, "n1");
    }

    #[test]
    fn refused_credentials_tls_and_missing_headers_are_named() {
        let address = server(INFO, |line| {
            (line == "PING").then(|| "-ERR 'Authorization Violation'\r\n".to_owned())
        });
        let err = connect(&address, &Credentials::Token("wrong".into())).unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Unauthorized(m) if m.contains("Authorization Violation")),
            "{err:?}"
        );
        let address = server("INFO {\"headers\":true,\"tls_required\":true}\r\n", |_| {
            None
        });
        let err = connect(&address, &Credentials::None).unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Unavailable(m) if m.contains("requires TLS")),
            "{err:?}"
        );
        let address = server("INFO {\"headers\":false}\r\n", |_| None);
        let err = connect(&address, &Credentials::None).unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Unavailable(m) if m.contains("headers")),
            "{err:?}"
        );
        let address = server("HTTP/1.1 400 Bad Request\r\n", |_| None);
        let err = connect(&address, &Credentials::None).unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Unavailable(m) if m.contains("NATS")),
            "{err:?}"
        );
    }

    #[test]
    fn stream_info_tells_a_missing_stream_and_a_server_without_jetstream() {
        let address = server(INFO, |line| {
            if line == "PING" {
                return Some("PONG\r\n".to_owned());
            }
            let reply = line.strip_prefix("PUB $JS.API.STREAM.INFO.")?;
            let (name, rest) = reply.split_once(' ')?;
            let reply_to = rest.split(' ').next()?;
            Some(match name {
                "EMS" => {
                    let body = r#"{"config":{"name":"EMS","subjects":["safd.>"],"duplicate_window":120000000000,"num_replicas":3,"storage":"file"}}"#;
                    format!("MSG {reply_to} 1 {}\r\n{body}\r\n", body.len())
                }
                "NOJS" => format!("HMSG {reply_to} 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"),
                _ => {
                    let body = r#"{"error":{"code":404,"err_code":10059,"description":"stream not found"}}"#;
                    format!("MSG {reply_to} 1 {}\r\n{body}\r\n", body.len())
                }
            })
        });
        let mut client = connect(&address, &Credentials::None).unwrap();
        let config = client
            .stream_info("EMS", Duration::from_secs(2))
            .unwrap()
            .unwrap()
            .config;
        assert_eq!(config.subjects, ["safd.>"]);
        assert_eq!(config.duplicate_window, 120_000_000_000);
        assert_eq!(config.num_replicas, 3);
        assert!(
            client
                .stream_info("OTHER", Duration::from_secs(2))
                .unwrap()
                .is_none()
        );
        let err = client
            .stream_info("NOJS", Duration::from_secs(2))
            .unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Unavailable(m) if m.contains("no JetStream")),
            "{err:?}"
        );
    }

    #[test]
    fn publishes_are_matched_to_their_answers_and_refusals_come_back() {
        let address = server(INFO, |line| {
            if line == "PING" {
                return Some("PONG\r\n".to_owned());
            }
            let rest = line.strip_prefix("HPUB ")?;
            let mut parts = rest.split(' ');
            let subject = parts.next()?;
            let reply_to = parts.next()?;
            let token: u64 = reply_to.rsplit('.').next()?.parse().ok()?;
            let body = if subject.ends_with("full") {
                r#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#.to_owned()
            } else {
                format!(r#"{{"stream":"EMS","seq":{token}}}"#)
            };
            Some(format!("MSG {reply_to} 1 {}\r\n{body}\r\n", body.len()))
        });
        let mut client = connect(&address, &Credentials::None).unwrap();
        let headers = protocol::header_block(&[("Nats-Msg-Id", "a:s:1")]);
        for seq in 1..=3 {
            let subject = if seq == 3 { "safd.a.full" } else { "safd.a.s" };
            client.publish("s", seq, subject, &headers, b"{}").unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let refusals = client.wait_answers(0, deadline).unwrap();
        assert_eq!(refusals.len(), 1);
        assert!(refusals[0].reason.contains("maximum messages exceeded"));
        assert_eq!(client.window().take_settled(), [("s".to_owned(), 2)]);
        assert_eq!(client.window().first_failure().unwrap().seq, 3);
    }

    /// The same against a real nats-server with JetStream (installed by
    /// `cargo xtask test`): a stream created, 100 events published twice
    /// with the same message ids, stored once.
    #[test]
    fn a_real_jetstream_stores_each_message_id_once() {
        let store = std::env::temp_dir().join(format!("safd-nats-{}", std::process::id()));
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        /// Stops the server also when the test fails.
        struct Running(std::process::Child, std::path::PathBuf);
        impl Drop for Running {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
                let _ = std::fs::remove_dir_all(&self.1);
            }
        }
        let server = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server is needed (cargo xtask test installs the Debian package)");
        let _server = Running(server, store.clone());
        let address = format!("127.0.0.1:{port}");
        let until = Instant::now() + Duration::from_secs(10);
        let mut client = loop {
            match connect(&address, &Credentials::None) {
                Ok(client) => break client,
                Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
                Err(err) => panic!("{err:?}"),
            }
        };
        let timeout = Duration::from_secs(5);
        assert!(client.stream_info("EMS", timeout).unwrap().is_none());
        let created = client
            .create_stream(
                &serde_json::json!({"name": "EMS", "subjects": ["safd.>"], "storage": "file",
                                    "num_replicas": 1, "duplicate_window": 120_000_000_000u64}),
                "EMS",
                timeout,
            )
            .unwrap();
        assert_eq!(created.config.subjects, ["safd.>"]);
        for _round in 0..2 {
            for seq in 1..=100u64 {
                let id = format!("agent:s:{seq}");
                let headers = protocol::header_block(&[("Nats-Msg-Id", &id)]);
                client
                    .publish("s", seq, "safd.agent.s", &headers, b"{\"body\":1}")
                    .unwrap();
            }
            let refusals = client.wait_answers(0, Instant::now() + timeout).unwrap();
            assert!(refusals.is_empty(), "{refusals:?}");
            assert_eq!(client.window().take_settled(), [("s".to_owned(), 100)]);
        }
        let info = client.stream_info("EMS", timeout).unwrap().unwrap();
        assert_eq!(info.state.messages, 100);
        // Nothing takes this subject.
        client
            .publish(
                "s",
                101,
                "other.subject",
                &protocol::header_block(&[]),
                b"x",
            )
            .unwrap();
        let refusals = client.wait_answers(0, Instant::now() + timeout).unwrap();
        assert!(
            refusals[0].reason.contains("no stream takes"),
            "{refusals:?}"
        );
    }
}
