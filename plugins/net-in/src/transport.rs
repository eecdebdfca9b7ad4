//! The listening socket and its connections behind one non-blocking face:
//! plain TCP (`std::net`, wasi:sockets inside the sandbox), or TLS that
//! safd does (the SDK's `TlsListener`/`TlsStream`, with the certificate
//! and key of the source's `grants.tls`). Reads and writes that cannot
//! proceed now say `WouldBlock`, whichever it is.

use safd_plugin_sdk::tls::{TlsError, TlsListener, TlsStream, wait_any};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

/// Why the listener could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The sandbox refused (the address is not in `grants.listen`).
    NotGranted(SocketAddr),
    /// Anything else (address in use, no such interface).
    Io(SocketAddr, io::Error),
    /// safd could not listen with TLS (its message names the fix).
    Tls(TlsError),
}

pub(crate) enum Listener {
    Plain(TcpListener),
    Tls(TlsListener),
}

pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(TlsStream),
}

impl Listener {
    pub(crate) fn bind(address: SocketAddr, tls: bool) -> Result<Self, OpenError> {
        if tls {
            return TlsListener::bind(&address.to_string())
                .map(Self::Tls)
                .map_err(OpenError::Tls);
        }
        let listener = TcpListener::bind(address).map_err(|err| match err.kind() {
            ErrorKind::PermissionDenied => OpenError::NotGranted(address),
            _ => OpenError::Io(address, err),
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|err| OpenError::Io(address, err))?;
        Ok(Self::Plain(listener))
    }

    /// The next sender waiting to be taken, if any.
    pub(crate) fn accept(&self) -> io::Result<Option<(Stream, SocketAddr)>> {
        match self {
            Self::Plain(listener) => loop {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        stream.set_nonblocking(true)?;
                        return Ok(Some((Stream::Plain(stream), peer)));
                    }
                    Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(None),
                    Err(err) if err.kind() == ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
            },
            Self::Tls(listener) => Ok(listener.accept().map(|stream| {
                let peer = stream
                    .peer_address()
                    .parse()
                    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                (Stream::Tls(stream), peer)
            })),
        }
    }

    /// Sleep until a sender connects, writes or closes, or `timeout` has
    /// passed; the wait wakes on the sockets, not on a timer.
    pub(crate) fn wait<'a>(
        &self,
        streams: impl Iterator<Item = &'a Stream>,
        timeout: Duration,
    ) -> io::Result<()> {
        match self {
            Self::Plain(listener) => {
                let sockets =
                    std::iter::once(listener.as_fd()).chain(streams.filter_map(|s| match s {
                        Stream::Plain(stream) => Some(stream.as_fd()),
                        Stream::Tls(_) => None,
                    }));
                safd_plugin_sdk::net::wait_readable(sockets, timeout).map(drop)
            }
            Self::Tls(listener) => {
                let mut pollables = vec![listener.acceptable()];
                pollables.extend(streams.filter_map(|s| match s {
                    Stream::Tls(stream) => Some(stream.readable()),
                    Stream::Plain(_) => None,
                }));
                let pollables: Vec<_> = pollables.iter().collect();
                wait_any(&pollables, timeout);
                Ok(())
            }
        }
    }
}

impl Stream {
    /// What has arrived; `WouldBlock` when nothing has, 0 at the close.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(stream) => stream.read(buf),
            Self::Tls(stream) => stream.try_read(buf)?.ok_or_else(would_block),
        }
    }

    /// Write what the connection takes now; `WouldBlock` when it takes
    /// nothing.
    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(stream) => stream.write(buf),
            Self::Tls(stream) => stream.try_write(buf)?.ok_or_else(would_block),
        }
    }

    /// No more of this connection. A TLS one ends when it is dropped,
    /// and what safd still holds of it would go with it: wait (a moment at
    /// most) until safd has sent the last answers.
    pub(crate) fn shutdown(&mut self) {
        match self {
            Self::Plain(stream) => {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
            Self::Tls(stream) => {
                stream.set_write_timeout(Some(CLOSING_FLUSH));
                let _ = stream.flush();
            }
        }
    }
}

/// How long a closing TLS connection may take to send its last answers.
const CLOSING_FLUSH: Duration = Duration::from_secs(1);

fn would_block() -> io::Error {
    io::Error::from(ErrorKind::WouldBlock)
}
