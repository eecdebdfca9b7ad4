//! A connection to the receiver: plain TCP through wasi:sockets, or TLS
//! made by safd (the SDK's `TlsStream`), with the I/O errors mapped onto
//! safd's error cases.

use safd_plugin_sdk::tls::{TlsError, TlsStream};
use safd_plugin_sdk::types::ConnectorError;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Where the receiver listens: an `ip:port` (the sandbox resolves no
/// names), or with TLS also `name:port` (safd resolves it and checks the
/// certificate for that name).
pub(crate) fn parse_address(address: &str, tls: bool) -> Result<String, String> {
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
pub(crate) struct Connection {
    stream: Stream,
    address: String,
}

impl Connection {
    pub(crate) fn open(
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

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> Result<(), ConnectorError> {
        let written = match &mut self.stream {
            Stream::Plain(stream) => stream.write_all(bytes).and_then(|()| stream.flush()),
            Stream::Tls(stream) => stream.write_all(bytes).and_then(|()| stream.flush()),
        };
        written.map_err(|err| io_error(&self.address, "writing to", &err))
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Result<usize, ConnectorError> {
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
    pub(crate) fn peer_closed(&mut self) -> bool {
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
