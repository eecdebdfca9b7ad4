//! The NATS client protocol, as much of it as a publisher needs
//! (<https://docs.nats.io/reference/reference-protocols/nats-protocol>).
//!
//! Reading: bytes from the socket are [`Reader::feed`]-ed in, whole
//! operations come out of [`Reader::next_op`]; a partial one waits for more
//! bytes. Every size the server states is checked against a limit before
//! anything is allocated for it, so a broken or hostile server cannot make
//! the plugin reserve memory it does not have. Writing: `write_*`
//! functions append one operation to a buffer.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The longest control line (the operation and its arguments) read; the
/// server's own default limit is 4 KiB, and an `INFO` carrying a long
/// list of cluster URLs can be longer.
pub const MAX_CONTROL_LINE: usize = 64 * 1024;

const CRLF: &[u8] = b"\r\n";

/// What the server says when the connection opens (and again when the
/// cluster changes). Only the fields the plugin acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ServerInfo {
    pub server_id: String,
    pub server_name: String,
    pub version: String,
    /// Largest message payload (headers included) the server accepts.
    pub max_payload: u64,
    pub headers: bool,
    pub auth_required: bool,
    pub tls_required: bool,
    /// Signed with an nkey seed to authenticate.
    pub nonce: Option<String>,
    pub jetstream: bool,
}

/// One operation read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    Info(Box<ServerInfo>),
    Msg(Message),
    Ping,
    Pong,
    Ok,
    /// `-ERR 'text'`, the quotes removed.
    Err(String),
}

/// A message delivered to one of our subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub sid: u64,
    pub reply_to: Option<String>,
    /// Present for `HMSG`.
    pub headers: Option<Headers>,
    pub payload: Vec<u8>,
}

/// A header block: the status a server may put on its first line (`503`
/// for "no responders") and the fields in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    pub status: Option<u16>,
    pub description: String,
    pub fields: Vec<(String, String)>,
}

impl Headers {
    /// The first value of field `name` (names compare ignoring case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The server broke the protocol; the connection cannot be used further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the NATS server broke the protocol: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn broken(what: impl Into<String>) -> ProtocolError {
    ProtocolError(what.into())
}

/// Reads server operations from the bytes of one connection.
#[derive(Debug)]
pub struct Reader {
    buffer: Vec<u8>,
    /// Where unread bytes start in `buffer`.
    start: usize,
    max_message: usize,
}

impl Reader {
    /// A reader that refuses messages over `max_message` bytes (headers and
    /// payload together). Until `INFO` says otherwise, NATS's default of
    /// 1 MiB is a fair bound.
    pub fn new(max_message: usize) -> Self {
        Self {
            buffer: Vec::new(),
            start: 0,
            max_message,
        }
    }

    pub fn set_max_message(&mut self, max_message: usize) {
        self.max_message = max_message;
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        // What was read goes first, so a connection that always ends a
        // read inside an operation does not grow the buffer for ever.
        self.buffer.drain(..self.start);
        self.start = 0;
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole operation, `None` until more bytes are needed.
    pub fn next_op(&mut self) -> Result<Option<ServerOp>, ProtocolError> {
        let unread = &self.buffer[self.start..];
        let Some(line_end) = memchr::memmem::find(unread, CRLF) else {
            if unread.len() > MAX_CONTROL_LINE {
                return Err(broken(format!(
                    "a control line longer than {MAX_CONTROL_LINE} bytes"
                )));
            }
            return Ok(None);
        };
        if line_end > MAX_CONTROL_LINE {
            return Err(broken(format!(
                "a control line longer than {MAX_CONTROL_LINE} bytes"
            )));
        }
        let line = std::str::from_utf8(&unread[..line_end])
            .map_err(|_| broken("a control line that is not UTF-8"))?;
        let (op, args) = line.split_once([' ', '\t']).unwrap_or((line, ""));
        let args = args.trim_start_matches([' ', '\t']);
        let after_line = self.start + line_end + CRLF.len();
        let op = if op.eq_ignore_ascii_case("MSG") {
            let Some((message, end)) = self.message(args, after_line, false)? else {
                return Ok(None);
            };
            self.start = end;
            return Ok(Some(ServerOp::Msg(message)));
        } else if op.eq_ignore_ascii_case("HMSG") {
            let Some((message, end)) = self.message(args, after_line, true)? else {
                return Ok(None);
            };
            self.start = end;
            return Ok(Some(ServerOp::Msg(message)));
        } else if op.eq_ignore_ascii_case("PING") {
            ServerOp::Ping
        } else if op.eq_ignore_ascii_case("PONG") {
            ServerOp::Pong
        } else if op.eq_ignore_ascii_case("+OK") {
            ServerOp::Ok
        } else if op.eq_ignore_ascii_case("-ERR") {
            ServerOp::Err(args.trim().trim_matches('\'').to_owned())
        } else if op.eq_ignore_ascii_case("INFO") {
            let info: ServerInfo = serde_json::from_str(args)
                .map_err(|e| broken(format!("an INFO that does not parse: {e}")))?;
            ServerOp::Info(Box::new(info))
        } else {
            return Err(broken(format!(
                "an unknown operation `{}`",
                op.escape_debug()
            )));
        };
        self.start = after_line;
        Ok(Some(op))
    }

    /// `MSG subject sid [reply] size` or `HMSG subject sid [reply]
    /// header-size total-size`, whose body starts at `body_at`: the message
    /// and where the next operation starts, or `None` while the body is
    /// incomplete.
    fn message(
        &self,
        args: &str,
        body_at: usize,
        with_headers: bool,
    ) -> Result<Option<(Message, usize)>, ProtocolError> {
        let parts: Vec<&str> = args.split_ascii_whitespace().collect();
        let sizes = if with_headers { 2 } else { 1 };
        if parts.len() != 2 + sizes && parts.len() != 3 + sizes {
            return Err(broken(format!("a message line `{}`", args.escape_debug())));
        }
        let (fixed, sizes_at) = parts.split_at(parts.len() - sizes);
        let number = |text: &str, what: &str| {
            text.parse::<u64>()
                .map_err(|_| broken(format!("a message {what} `{}`", text.escape_debug())))
        };
        let sid = number(fixed[1], "sid")?;
        let total = number(sizes_at[sizes - 1], "size")?;
        let header_len = if with_headers {
            number(sizes_at[0], "header size")?
        } else {
            0
        };
        if header_len > total {
            return Err(broken("a header size larger than the message"));
        }
        let total = usize::try_from(total).unwrap_or(usize::MAX);
        if total > self.max_message {
            return Err(broken(format!(
                "a message of {total} bytes, over the {} the connection allows",
                self.max_message
            )));
        }
        let end = body_at + total + CRLF.len();
        if self.buffer.len() < end {
            return Ok(None);
        }
        if &self.buffer[end - CRLF.len()..end] != CRLF {
            return Err(broken("a message body not followed by CRLF"));
        }
        let header_len = header_len as usize;
        let body = &self.buffer[body_at..body_at + total];
        let headers = if with_headers {
            Some(parse_headers(&body[..header_len])?)
        } else {
            None
        };
        Ok(Some((
            Message {
                subject: fixed[0].to_owned(),
                sid,
                reply_to: fixed.get(2).map(|s| (*s).to_owned()),
                headers,
                payload: body[header_len..].to_vec(),
            },
            end,
        )))
    }
}

/// `NATS/1.0[ status[ description]]\r\n(Name: value\r\n)*\r\n`.
pub fn parse_headers(block: &[u8]) -> Result<Headers, ProtocolError> {
    let text = std::str::from_utf8(block).map_err(|_| broken("headers that are not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let Some(rest) = first.strip_prefix("NATS/1.0") else {
        return Err(broken(format!(
            "a header block starting `{}`",
            first.escape_debug()
        )));
    };
    let rest = rest.trim();
    let mut headers = Headers::default();
    if !rest.is_empty() {
        let (code, description) = rest.split_once(' ').unwrap_or((rest, ""));
        headers.status = Some(
            code.parse()
                .map_err(|_| broken(format!("a header status `{}`", code.escape_debug())))?,
        );
        headers.description = description.trim().to_owned();
    }
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(broken(format!("a header line `{}`", line.escape_debug())));
        };
        headers
            .fields
            .push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(headers)
}

/// How the client proves who it is.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    #[default]
    None,
    Token(String),
    UserPassword {
        user: String,
        password: String,
    },
    /// The public nkey and the server nonce signed with its seed
    /// (base64url, no padding).
    Nkey {
        public: String,
        signature: String,
    },
}

// Credentials never reach a log line through `{:?}`.
impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Auth::None => "Auth::None",
            Auth::Token(_) => "Auth::Token(..)",
            Auth::UserPassword { .. } => "Auth::UserPassword(..)",
            Auth::Nkey { .. } => "Auth::Nkey(..)",
        })
    }
}

#[derive(Serialize)]
struct Connect<'a> {
    verbose: bool,
    pedantic: bool,
    tls_required: bool,
    name: &'a str,
    lang: &'static str,
    version: &'static str,
    protocol: u8,
    headers: bool,
    no_responders: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nkey: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sig: Option<&'a str>,
}

/// `CONNECT` with verbose off (no `+OK` per operation), headers and
/// no-responders on (a publish to a subject no stream listens on is
/// answered with status 503 at once instead of timing out).
pub fn write_connect(out: &mut Vec<u8>, name: &str, auth: &Auth) {
    let mut connect = Connect {
        verbose: false,
        pedantic: false,
        tls_required: false,
        name,
        lang: "rust-safd",
        version: env!("CARGO_PKG_VERSION"),
        protocol: 1,
        headers: true,
        no_responders: true,
        auth_token: None,
        user: None,
        pass: None,
        nkey: None,
        sig: None,
    };
    match auth {
        Auth::None => {}
        Auth::Token(token) => connect.auth_token = Some(token),
        Auth::UserPassword { user, password } => {
            connect.user = Some(user);
            connect.pass = Some(password);
        }
        Auth::Nkey { public, signature } => {
            connect.nkey = Some(public);
            connect.sig = Some(signature);
        }
    }
    out.extend_from_slice(b"CONNECT ");
    // Serialising strings and bools into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &connect);
    out.extend_from_slice(CRLF);
}

pub fn write_sub(out: &mut Vec<u8>, subject: &str, sid: u64) {
    out.extend_from_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
}

pub fn write_ping(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PING\r\n");
}

pub fn write_pong(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PONG\r\n");
}

/// `PUB subject reply size` with its payload (a request without headers).
pub fn write_pub(out: &mut Vec<u8>, subject: &str, reply_to: &str, payload: &[u8]) {
    out.extend_from_slice(format!("PUB {subject} {reply_to} {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(CRLF);
}

/// The header block for `fields`: CR and LF in values (which would end the
/// field) become spaces, and a name keeps only the characters a header
/// name may hold.
pub fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    write_header_block(&mut block, fields);
    block
}

/// [`header_block`] into `block` (cleared first), so a publisher reuses
/// one buffer for every message.
pub fn write_header_block(block: &mut Vec<u8>, fields: &[(&str, &str)]) {
    block.clear();
    block.extend_from_slice(b"NATS/1.0\r\n");
    for (name, value) in fields {
        block.extend(name.bytes().filter(|b| b.is_ascii_graphic() && *b != b':'));
        block.extend_from_slice(b": ");
        block.extend(value.bytes().map(|b| match b {
            b'\r' | b'\n' => b' ',
            other => other,
        }));
        block.extend_from_slice(CRLF);
    }
    block.extend_from_slice(CRLF);
}

/// `HPUB subject inbox.token header-size total-size` with its body, written
/// without allocating (one allocation per message adds up at hundreds of
/// thousands a second). The subject and inbox must be valid subjects
/// ([`crate::subject`] makes them so).
pub fn write_hpub_to_inbox(
    out: &mut Vec<u8>,
    subject: &str,
    inbox: &str,
    token: u64,
    headers: &[u8],
    payload: &[u8],
) {
    let reply = |out: &mut Vec<u8>| {
        out.extend_from_slice(inbox.as_bytes());
        out.push(b'.');
        push_decimal(out, token);
    };
    write_hpub_with(out, subject, reply, headers, payload);
}

fn write_hpub_with(
    out: &mut Vec<u8>,
    subject: &str,
    reply_to: impl FnOnce(&mut Vec<u8>),
    headers: &[u8],
    payload: &[u8],
) {
    let total = headers.len() + payload.len();
    out.extend_from_slice(b"HPUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    reply_to(out);
    out.push(b' ');
    push_decimal(out, headers.len() as u64);
    out.push(b' ');
    push_decimal(out, total as u64);
    out.extend_from_slice(CRLF);
    out.extend_from_slice(headers);
    out.extend_from_slice(payload);
    out.extend_from_slice(CRLF);
}

fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    out.extend_from_slice(safd_plugin_sdk::json::decimal(n, &mut digits));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn read_all(bytes: &[u8]) -> Vec<ServerOp> {
        let mut reader = Reader::new(1 << 20);
        reader.feed(bytes);
        let mut ops = Vec::new();
        while let Some(op) = reader.next_op().unwrap() {
            ops.push(op);
        }
        ops
    }

    #[test]
    fn info_ping_pong_ok_and_err_are_read() {
        let ops = read_all(
            b"INFO {\"server_id\":\"N1\",\"version\":\"2.9.10\",\"max_payload\":1048576,\
              \"headers\":true,\"jetstream\":true,\"nonce\":\"abc\",\"unknown\":[1]}\r\n\
              PING\r\npong\r\n+OK\r\n-ERR 'Authorization Violation'\r\n",
        );
        let ServerOp::Info(info) = &ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!(info.max_payload, 1_048_576);
        assert!(info.headers && info.jetstream);
        assert_eq!(info.nonce.as_deref(), Some("abc"));
        assert_eq!(
            ops[1..],
            [
                ServerOp::Ping,
                ServerOp::Pong,
                ServerOp::Ok,
                ServerOp::Err("Authorization Violation".into())
            ]
        );
    }

    #[test]
    fn messages_with_and_without_headers_are_read_in_pieces() {
        let bytes = b"MSG _INBOX.x.1 7 10\r\n{\"seq\":12}\r\n\
                      HMSG _INBOX.x.2 7 16 16\r\nNATS/1.0 503\r\n\r\n\r\n\
                      HMSG a.b 9 reply.to 29 34\r\nNATS/1.0\r\nNats-Msg-Id: m1\r\n\r\nhello\r\n";
        // Fed one byte at a time: nothing comes out before it is whole.
        let mut reader = Reader::new(1 << 20);
        let mut ops = Vec::new();
        for byte in bytes {
            reader.feed(&[*byte]);
            while let Some(op) = reader.next_op().unwrap() {
                ops.push(op);
            }
        }
        assert_eq!(ops, read_all(bytes));
        // Only the unread tail is kept between reads.
        for _ in 0..1000 {
            reader.feed(b"PING\r\nPO");
            assert_eq!(reader.next_op().unwrap(), Some(ServerOp::Ping));
            assert_eq!(reader.next_op().unwrap(), None);
            reader.feed(b"NG\r\n");
            assert_eq!(reader.next_op().unwrap(), Some(ServerOp::Pong));
        }
        assert!(reader.buffer.len() < 16, "{}", reader.buffer.len());
        let [
            ServerOp::Msg(plain),
            ServerOp::Msg(status),
            ServerOp::Msg(full),
        ] = &ops[..]
        else {
            panic!("{ops:?}")
        };
        assert_eq!(plain.subject, "_INBOX.x.1");
        assert_eq!(plain.sid, 7);
        assert_eq!(plain.payload, b"{\"seq\":12}");
        assert!(plain.headers.is_none());
        let headers = status.headers.as_ref().unwrap();
        assert_eq!(headers.status, Some(503));
        assert!(status.payload.is_empty());
        assert_eq!(full.reply_to.as_deref(), Some("reply.to"));
        assert_eq!(
            full.headers.as_ref().unwrap().get("nats-msg-id"),
            Some("m1")
        );
        assert_eq!(full.payload, b"hello");
    }

    #[test]
    fn a_server_that_breaks_the_protocol_is_named_not_trusted() {
        let fails = |bytes: &[u8], max: usize| {
            let mut reader = Reader::new(max);
            reader.feed(bytes);
            loop {
                match reader.next_op() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("accepted {:?}", String::from_utf8_lossy(bytes)),
                    Err(err) => return err.to_string(),
                }
            }
        };
        assert!(fails(b"BOGUS x\r\n", 100).contains("unknown operation"));
        assert!(fails(b"MSG a 1 99999999999\r\n", 1 << 20).contains("over the"));
        assert!(fails(b"MSG a x 1\r\nz\r\n", 100).contains("sid"));
        assert!(fails(b"MSG a 1 1\r\nzz\r\n", 100).contains("CRLF"));
        assert!(fails(b"HMSG a 1 9 3\r\nabc\r\n", 100).contains("header size"));
        assert!(fails(b"HMSG a 1 3 3\r\nabc\r\n", 100).contains("header block"));
        assert!(fails(b"INFO {\r\n", 100).contains("INFO"));
        let endless = vec![b'x'; MAX_CONTROL_LINE + 1];
        assert!(fails(&endless, 100).contains("control line"));
    }

    #[test]
    fn connect_carries_the_options_and_one_kind_of_credentials() {
        let mut out = Vec::new();
        write_connect(
            &mut out,
            "safd agent-1",
            &Auth::UserPassword {
                user: "u".into(),
                password: "p\"w".into(),
            },
        );
        let text = String::from_utf8(out).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(text.strip_prefix("CONNECT ").unwrap().trim_end()).unwrap();
        assert_eq!(json["verbose"], false);
        assert_eq!(json["headers"], true);
        assert_eq!(json["no_responders"], true);
        assert_eq!(json["user"], "u");
        assert_eq!(json["pass"], "p\"w");
        assert!(json.get("auth_token").is_none() && json.get("sig").is_none());
        assert!(text.ends_with("\r\n"));
        assert_eq!(
            format!("{:?}", Auth::Token("secret".into())),
            "Auth::Token(..)"
        );
    }

    #[test]
    fn hpub_frames_headers_and_payload_as_the_server_reads_them() {
        let headers = header_block(&[("Nats-Msg-Id", "a:s:1"), ("Safd-Body\r\n", "x\r\ny")]);
        let mut out = Vec::new();
        write_hpub_to_inbox(&mut out, "safd.a.s", "_INBOX.r", 1, &headers, b"{}");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(&format!(
            "HPUB safd.a.s _INBOX.r.1 {} {}\r\n",
            headers.len(),
            headers.len() + 2
        )));
        // What we write, a server's HMSG would deliver unchanged.
        let delivered = text.replacen("HPUB safd.a.s _INBOX.r.1", "HMSG safd.a.s 1 _INBOX.r.1", 1);
        let ops = read_all(delivered.as_bytes());
        let [ServerOp::Msg(message)] = &ops[..] else {
            panic!("{ops:?}")
        };
        let parsed = message.headers.as_ref().unwrap();
        assert_eq!(parsed.get("Nats-Msg-Id"), Some("a:s:1"));
        assert_eq!(parsed.get("Safd-Body"), Some("x  y"));
        assert_eq!(message.payload, b"{}");
    }
}
