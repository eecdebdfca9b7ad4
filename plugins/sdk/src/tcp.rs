//! A destination's connection to its receiver over TCP: plain through
//! wasi:sockets, or TLS made by safd ([`crate::tls::TlsStream`]), with
//! what every such plugin needs and gets wrong alone:
//!
//! - connect with a timeout, and see a refusal: on `wasm32-wasip2` a
//!   refused `connect_timeout` returns `Ok` and leaves the refusal in
//!   `SO_ERROR`;
//! - read and write timeouts, so a receiver that stops reading cannot hold
//!   a call until safd's wall-clock limit rebuilds the plugin;
//! - [`Connection::peer_closed`]: whether a receiver that never writes has
//!   closed its end, before writing into the void;
//! - I/O errors mapped onto the WIT cases: a refusal by the sandbox is
//!   `unauthorized` naming the grant, anything else `unavailable` (the
//!   group fails over).
//!
//! The syslog destination (RFC 5424 and RELP) is built on it.

use crate::tls::{TlsError, TlsStream};
use crate::types::ConnectorError;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Check a member's address: an `ip:port` (the sandbox resolves no
/// names), or with TLS also `name:port` (safd resolves it and checks the
/// certificate for that name).
pub fn parse_address(address: &str, tls: bool) -> Result<String, String> {
    if address.parse::<SocketAddr>().is_ok() {
        return Ok(address.to_owned());
    }
    let named = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if tls && named {
        return Ok(address.to_owned());
    }
    Err(if tls {
        format!(
            "address `{address}` must be ip:port or name:port, e.g. 10.0.0.9:6514 or \
             siem.example.com:6514"
        )
    } else {
        format!(
            "address `{address}` must be ip:port, e.g. 10.0.0.9:514 or [::1]:2514 (host \
             names are not resolved inside the sandbox; with TLS they are, by safd)"
        )
    })
}

#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(TlsStream),
}

#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    address: String,
}

impl Connection {
    /// Connect to `address` (see [`parse_address`]), with TLS by safd when
    /// `tls`; `timeout` bounds every later read and write.
    pub fn open(
        address: &str,
        tls: bool,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self, ConnectorError> {
        let stream = if tls {
            let mut stream =
                TlsStream::connect(address, connect_timeout).map_err(|err| tls_error(&err))?;
            stream.set_write_timeout(Some(timeout));
            stream.set_read_timeout(Some(timeout));
            Stream::Tls(stream)
        } else {
            Stream::Plain(open_plain(address, connect_timeout, timeout)?)
        };
        Ok(Self {
            stream,
            address: address.to_owned(),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), ConnectorError> {
        let written = match &mut self.stream {
            Stream::Plain(stream) => stream.write_all(bytes).and_then(|()| stream.flush()),
            Stream::Tls(stream) => stream.write_all(bytes).and_then(|()| stream.flush()),
        };
        written.map_err(|err| io_error(&self.address, "writing to", &err))
    }

    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, ConnectorError> {
        loop {
            let read = match &mut self.stream {
                Stream::Plain(stream) => stream.read(buf),
                Stream::Tls(stream) => stream.read(buf),
            };
            match read {
                Ok(0) => {
                    return Err(ConnectorError::Unavailable(format!(
                        "{} closed the connection",
                        self.address
                    )));
                }
                Ok(n) => return Ok(n),
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(io_error(&self.address, "reading from", &err)),
            }
        }
    }

    /// Whether the receiver has closed its end, as far as this side has
    /// seen yet. A plain syslog receiver never writes, so anything readable
    /// is a close (or a reset): writing into such a connection would
    /// "succeed" into the void. A close that happened a moment ago may not
    /// be visible yet; that is plain TCP's weakness, and RELP's reason to be.
    pub fn peer_closed(&mut self) -> bool {
        match &mut self.stream {
            Stream::Plain(stream) => plain_peer_closed(stream),
            Stream::Tls(stream) => {
                let mut buf = [0u8; 512];
                loop {
                    match stream.try_read(&mut buf) {
                        Ok(None) => break false,
                        Ok(Some(0)) | Err(_) => break true,
                        // Unexpected bytes; nothing in these protocols to answer.
                        Ok(Some(_)) => {}
                    }
                }
            }
        }
    }
}

fn open_plain(
    address: &str,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<TcpStream, ConnectorError> {
    let addr: SocketAddr = address
        .parse()
        .map_err(|_| ConnectorError::Fatal(format!("`{address}` is not an ip:port address")))?;
    let stream = TcpStream::connect_timeout(&addr, connect_timeout)
        .map_err(|err| connect_error(addr, &err))?;
    // On wasm32-wasip2 a refused `connect_timeout` returns Ok and
    // leaves the refusal in SO_ERROR.
    if let Some(err) = stream.take_error().ok().flatten() {
        return Err(connect_error(addr, &err));
    }
    // Without these a receiver that stops reading would hold the call
    // until safd's wall-clock limit rebuilds the whole plugin.
    let _ = stream.set_write_timeout(Some(timeout));
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn plain_peer_closed(stream: &mut TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            // Unexpected bytes; nothing in these protocols to answer.
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::WouldBlock => break false,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => break true,
        }
    };
    closed || stream.set_nonblocking(false).is_err()
}

fn connect_error(address: SocketAddr, err: &std::io::Error) -> ConnectorError {
    match err.kind() {
        ErrorKind::PermissionDenied => ConnectorError::Unauthorized(format!(
            "safd's sandbox refused the connection to {address}: add `{address}` to this \
             destination's grants.tcp"
        )),
        _ => ConnectorError::Unavailable(format!("cannot connect to {address}: {err}")),
    }
}

/// safd's TLS errors name the address and the fix already.
fn tls_error(err: &TlsError) -> ConnectorError {
    match err {
        TlsError::Denied(message) => ConnectorError::Unauthorized(message.clone()),
        TlsError::Settings(message) | TlsError::Failed(message) => {
            ConnectorError::Unavailable(message.clone())
        }
    }
}

fn io_error(address: &str, doing: &str, err: &std::io::Error) -> ConnectorError {
    ConnectorError::Unavailable(format!("{doing} {address}: {err}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn addresses_are_ip_port_or_with_tls_a_name() {
        assert_eq!(
            parse_address("10.0.0.9:514", false).unwrap(),
            "10.0.0.9:514"
        );
        assert!(
            parse_address("siem:514", false)
                .unwrap_err()
                .contains("not resolved")
        );
        assert_eq!(parse_address("siem:6514", true).unwrap(), "siem:6514");
        assert!(parse_address("siem", true).is_err());
    }

    #[test]
    fn a_refused_connection_is_unavailable_and_a_close_is_seen() {
        let second = Duration::from_secs(1);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let mut connection = Connection::open(&address, false, second, second).unwrap();
        let (peer, _) = listener.accept().unwrap();
        assert!(!connection.peer_closed());
        connection.write_all(b"<13>1 - - - - - - hello\n").unwrap();
        drop(peer);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !connection.peer_closed() {
            assert!(
                std::time::Instant::now() < deadline,
                "the close never showed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(listener);
        match Connection::open(&address, false, second, second) {
            Err(ConnectorError::Unavailable(message)) => {
                assert!(message.contains(&address), "{message}");
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
}
