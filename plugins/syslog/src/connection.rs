//! A TCP connection to the receiver through wasi:sockets, with the I/O
//! errors mapped onto safd's error cases.

use safd_plugin_sdk::types::ConnectorError;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Where the receiver listens: an `ip:port` (the sandbox resolves no names).
pub(crate) fn parse_address(address: &str) -> Result<SocketAddr, String> {
    address.parse().map_err(|_| {
        format!(
            "address `{address}` must be ip:port, e.g. 10.0.0.9:6514 or [::1]:2514 (host names \
             are not resolved inside the sandbox)"
        )
    })
}

#[derive(Debug)]
pub(crate) struct Connection {
    stream: TcpStream,
    address: SocketAddr,
}

impl Connection {
    pub(crate) fn open(
        address: SocketAddr,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self, ConnectorError> {
        let stream = TcpStream::connect_timeout(&address, connect_timeout)
            .map_err(|err| connect_error(address, &err))?;
        // On wasm32-wasip2 a refused `connect_timeout` returns Ok and
        // leaves the refusal in SO_ERROR.
        if let Some(err) = stream.take_error().ok().flatten() {
            return Err(connect_error(address, &err));
        }
        // Without these a receiver that stops reading would hold the call
        // until safd's wall-clock limit rebuilds the whole plugin.
        let _ = stream.set_write_timeout(Some(timeout));
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_nodelay(true);
        Ok(Self { stream, address })
    }

    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> Result<(), ConnectorError> {
        self.stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
            .map_err(|err| io_error(self.address, "writing to", &err))
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Result<usize, ConnectorError> {
        loop {
            match self.stream.read(buf) {
                Ok(0) => {
                    return Err(ConnectorError::Unavailable(format!(
                        "{} closed the connection",
                        self.address
                    )));
                }
                Ok(n) => return Ok(n),
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(io_error(self.address, "reading from", &err)),
            }
        }
    }

    /// Whether the receiver has closed its end, as far as this side has
    /// seen yet. A plain syslog receiver never writes, so anything readable
    /// is a close (or a reset): writing into such a connection would
    /// "succeed" into the void. A close that happened a moment ago may not
    /// be visible yet; that is plain TCP's weakness, and RELP's reason to be.
    pub(crate) fn peer_closed(&mut self) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut buf = [0u8; 512];
        let closed = loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break true,
                // Unexpected bytes; nothing in these protocols to answer.
                Ok(_) => {}
                Err(err) if err.kind() == ErrorKind::WouldBlock => break false,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        closed || self.stream.set_nonblocking(false).is_err()
    }
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

fn io_error(address: SocketAddr, doing: &str, err: &std::io::Error) -> ConnectorError {
    ConnectorError::Unavailable(format!("{doing} {address}: {err}"))
}
