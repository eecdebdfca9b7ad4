//! TLS connections done by safd for the plugin (the WIT `tls` interface),
//! as blocking streams with timeouts, like `std::net::TcpStream`.
//!
//! safd makes the connection, completes the handshake and checks the
//! certificates with the operator's files (`grants.tls`); the plugin reads
//! and writes plain bytes. [`TlsStream`] implements [`std::io::Read`] and
//! [`std::io::Write`] with the timeouts set on it, so code written against
//! a `TcpStream` runs over TLS unchanged. [`TlsListener`] accepts TLS
//! clients on a granted address (`grants.listen`).
//!
//! Waiting: a read or write that cannot proceed waits on the stream's
//! pollable (it wakes when the stream does, not on a timer); a plugin that
//! serves many connections waits for any of them with [`wait_any`].

use crate::source_bindings::safd::connector::tls as wit;
use crate::source_bindings::wasi::clocks::monotonic_clock;
use crate::source_bindings::wasi::io::poll::{Pollable, poll};
use crate::source_bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};
use std::io;
use std::time::{Duration, Instant};

pub use wit::TlsError;

impl TlsError {
    /// safd's explanation: what failed and the fix.
    pub fn message(&self) -> &str {
        match self {
            TlsError::Denied(m) | TlsError::Settings(m) | TlsError::Failed(m) => m,
        }
    }
}

/// One TLS connection: blocking reads and writes of plain bytes, with
/// optional timeouts.
#[derive(Debug)]
pub struct TlsStream {
    // Dropped before `output`'s flush would matter: the order of fields is
    // the order of drops, and the input stream holds no pending bytes.
    input: InputStream,
    output: OutputStream,
    peer: String,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl TlsStream {
    /// Connect to `address` (`ip:port` or `name:port`, as written in
    /// `grants.tcp`) and complete the handshake within `timeout`.
    pub fn connect(address: &str, timeout: Duration) -> Result<Self, TlsError> {
        let millis = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        wit::connect(address, millis).map(Self::from_connection)
    }

    fn from_connection(connection: wit::Connection) -> Self {
        Self {
            input: connection.input,
            output: connection.output,
            peer: connection.peer_address,
            read_timeout: None,
            write_timeout: None,
        }
    }

    /// The peer's `ip:port`.
    pub fn peer_address(&self) -> &str {
        &self.peer
    }

    /// How long a read waits for the first byte (`None`: for ever).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// How long a write (and its flush) may wait for the peer to take the
    /// bytes (`None`: for ever).
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    /// What has arrived, without waiting: `Ok(None)` when nothing has,
    /// `Ok(Some(0))` when the peer closed the connection.
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.input.read(buf.len() as u64) {
            Ok(bytes) if bytes.is_empty() => Ok(None),
            Ok(bytes) => {
                buf[..bytes.len()].copy_from_slice(&bytes);
                Ok(Some(bytes.len()))
            }
            Err(StreamError::Closed) => Ok(Some(0)),
            Err(StreamError::LastOperationFailed(err)) => Err(stream_error(&err)),
        }
    }

    /// Write what safd takes now, without waiting: `Ok(None)` when it
    /// takes nothing (its buffer for this connection is full).
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<Option<usize>> {
        if buf.is_empty() {
            return Ok(Some(0));
        }
        let permitted = self.output.check_write().map_err(|e| write_error(&e))?;
        if permitted == 0 {
            return Ok(None);
        }
        let n = buf
            .len()
            .min(usize::try_from(permitted).unwrap_or(usize::MAX));
        self.output.write(&buf[..n]).map_err(|e| write_error(&e))?;
        Ok(Some(n))
    }

    /// Ready when a read would not wait (data, or the peer's close).
    pub fn readable(&self) -> Pollable {
        self.input.subscribe()
    }
}

impl io::Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.read_timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(n) = self.try_read(buf)? {
                return Ok(n);
            }
            if !wait_until(&self.input.subscribe(), deadline) {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("nothing from {} in time", self.peer),
                ));
            }
        }
    }
}

impl io::Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let deadline = self.write_timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(n) = self.try_write(buf)? {
                return Ok(n);
            }
            if !wait_until(&self.output.subscribe(), deadline) {
                return Err(self.write_timed_out());
            }
        }
    }

    /// Wait until safd has handed every byte written to the connection.
    fn flush(&mut self) -> io::Result<()> {
        let deadline = self.write_timeout.map(|t| Instant::now() + t);
        self.output.flush().map_err(|e| write_error(&e))?;
        loop {
            // A flush is done when writing is permitted again.
            if self.output.check_write().map_err(|e| write_error(&e))? > 0 {
                return Ok(());
            }
            if !wait_until(&self.output.subscribe(), deadline) {
                return Err(self.write_timed_out());
            }
        }
    }
}

impl TlsStream {
    fn write_timed_out(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{} takes no more bytes (write timeout)", self.peer),
        )
    }
}

/// Accepts TLS clients on one granted address; safd completes each
/// handshake before offering the connection.
#[derive(Debug)]
pub struct TlsListener {
    listener: wit::Listener,
}

impl TlsListener {
    /// Listen on `address` (`ip:port`, as written in `grants.listen`).
    pub fn bind(address: &str) -> Result<Self, TlsError> {
        wit::listen(address).map(|listener| Self { listener })
    }

    /// The next client whose handshake is done, without waiting.
    pub fn accept(&self) -> Option<TlsStream> {
        self.listener.accept().map(TlsStream::from_connection)
    }

    /// Ready when [`TlsListener::accept`] has a client to give.
    pub fn acceptable(&self) -> Pollable {
        self.listener.subscribe()
    }
}

/// Wait until one of `pollables` is ready or `timeout` has passed; true
/// when one is.
pub fn wait_any(pollables: &[&Pollable], timeout: Duration) -> bool {
    let timer = monotonic_clock::subscribe_duration(nanos(timeout));
    let mut all: Vec<&Pollable> = Vec::with_capacity(pollables.len() + 1);
    all.extend_from_slice(pollables);
    all.push(&timer);
    let timer_index = (all.len() - 1) as u32;
    poll(&all).iter().any(|&i| i != timer_index)
}

/// Wait for `pollable` until `deadline` (`None`: for ever); true when it
/// is ready.
fn wait_until(pollable: &Pollable, deadline: Option<Instant>) -> bool {
    match deadline {
        None => {
            pollable.block();
            true
        }
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            !left.is_zero() && wait_any(&[pollable], left) || pollable.ready()
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn stream_error(err: &crate::source_bindings::wasi::io::error::Error) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, err.to_debug_string())
}

fn write_error(err: &StreamError) -> io::Error {
    match err {
        StreamError::Closed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "the peer closed the connection")
        }
        StreamError::LastOperationFailed(err) => stream_error(err),
    }
}
