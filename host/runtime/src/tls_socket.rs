//! The `tls` interface: TLS connections safd makes and accepts for a plugin.
//!
//! Why the host and not the guest: the guest would need a TLS library built
//! for wasm32-wasip2 (rustls with a pure-Rust crypto provider, at a fraction
//! of native speed, with no AES instructions), it would have to read the
//! private key itself (a plugin could then leak it), and every plugin would
//! verify certificates its own way. Here rustls runs natively with the same
//! files, checks and error texts as the HTTPS requests of `http_pool`, and
//! the plugin gets wasi:io streams of plain bytes (wasmtime-wasi's
//! `AsyncReadStream`/`AsyncWriteStream` over the two halves of the TLS
//! stream), which it reads, writes and waits on like any other stream.

use crate::bindings::source_world::safd::connector::tls::{
    Connection, Host, HostListener, TlsError,
};
use crate::report::Reporter;
use crate::state::InstanceState;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::net::TcpStream;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::pipe::{AsyncReadStream, AsyncWriteStream};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, Pollable};

/// Bytes the plugin may have written and safd not yet sent: what
/// `check-write` allows at most.
const WRITE_BUDGET: usize = 256 * 1024;

/// What one instance's `tls` interface may do: its grants and TLS settings.
#[derive(Debug)]
pub(crate) struct TlsSockets {
    pub(crate) connector: Arc<str>,
    pub(crate) tcp: Arc<HashSet<SocketAddr>>,
    pub(crate) tcp_entries: Arc<HashSet<String>>,
    pub(crate) listen: Arc<HashSet<SocketAddr>>,
    pub(crate) client: Option<Arc<rustls::ClientConfig>>,
    pub(crate) server: Option<Arc<rustls::ServerConfig>>,
    pub(crate) denials: Arc<AtomicU64>,
    pub(crate) reporter: Reporter,
}

impl TlsSockets {
    fn deny(&self, message: String) -> TlsError {
        crate::sandbox::report_denial(
            &self.reporter,
            &self.denials,
            &self.connector,
            message.clone(),
        );
        TlsError::Denied(message)
    }

    /// Where `address` leads and the name its certificate must hold, if
    /// the grants allow it.
    async fn resolve(
        &self,
        address: &str,
        timeout: Duration,
    ) -> Result<(Vec<SocketAddr>, rustls::pki_types::ServerName<'static>), TlsError> {
        let not_granted = || {
            self.deny(format!(
                "TLS connection to `{address}` denied: add \"{address}\" to this connector's \
                 grants.tcp"
            ))
        };
        if let Ok(addr) = address.parse::<SocketAddr>() {
            if !self.tcp.contains(&addr) {
                return Err(not_granted());
            }
            return Ok((vec![addr], addr.ip().into()));
        }
        let Some((host, _port)) = address
            .rsplit_once(':')
            .filter(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        else {
            return Err(TlsError::Failed(format!(
                "`{address}` is not an address: write ip:port or name:port, e.g. \
                 10.0.0.9:6514 or siem.example.com:6514"
            )));
        };
        // A name is allowed as the operator wrote it, and checked against
        // what it resolves to now (not at start), as the certificate is.
        if !self.tcp_entries.contains(address) {
            return Err(not_granted());
        }
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|_| {
            TlsError::Failed(format!(
                "`{host}` is not a name TLS can check a certificate for"
            ))
        })?;
        let addrs = tokio::time::timeout(timeout, tokio::net::lookup_host(address))
            .await
            .map_err(|_| TlsError::Failed(format!("resolving `{host}` took over {timeout:?}")))?
            .map_err(|err| TlsError::Failed(format!("cannot resolve `{host}`: {err}")))?
            .collect::<Vec<_>>();
        Ok((addrs, name))
    }

    async fn connect(&self, address: &str, timeout: Duration) -> Result<Established, TlsError> {
        let (addrs, name) = self.resolve(address, timeout).await?;
        let config = match &self.client {
            Some(config) => config.clone(),
            None => crate::tls::public_roots().map_err(TlsError::Settings)?,
        };
        let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        let started = tokio::time::Instant::now();
        let mut last_error = None;
        let mut tcp = None;
        for addr in addrs {
            let left = timeout.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    tcp = Some(stream);
                    break;
                }
                Ok(Err(err)) => last_error = Some(format!("cannot connect to {addr}: {err}")),
                Err(_) => last_error = Some(format!("connecting to {addr} took over {timeout:?}")),
            }
        }
        let Some(tcp) = tcp else {
            return Err(TlsError::Failed(
                last_error.unwrap_or_else(|| format!("`{address}` resolves to no address")),
            ));
        };
        // Messages are written whole; Nagle would hold the last segment
        // back for the previous one's ACK.
        let _ = tcp.set_nodelay(true);
        let peer = tcp
            .peer_addr()
            .map_or_else(|_| address.to_owned(), |a| a.to_string());
        // Without a client certificate of its own, note whether the server
        // asks for one (it will refuse the connection after the handshake).
        let (config, watcher) = crate::tls::NoClientCertificate::watching(config);
        let connector = tokio_rustls::TlsConnector::from(config);
        let left = timeout.saturating_sub(started.elapsed());
        let stream = tokio::time::timeout(left, connector.connect(name, tcp))
            .await
            .map_err(|_| {
                TlsError::Failed(format!(
                    "the TLS handshake with {address} did not finish within {} ms: is it a TLS \
                     port?",
                    timeout.as_millis()
                ))
            })?
            .map_err(|err| TlsError::Failed(crate::tls::explain_handshake_error(host, &err)))?;
        // A server may ask for a certificate without requiring one
        // (rsyslog's GnuTLS driver does); one that requires it refuses
        // the connection with TLS 1.3 only after the handshake, on the
        // first read, and that error then says what to do.
        let asked_for_certificate = watcher.is_some_and(|w| w.was_asked());
        Ok(Established {
            stream: tokio_rustls::TlsStream::Client(stream),
            peer,
            explain: Some(Explain {
                host: host.to_owned(),
                asked_for_certificate,
            }),
        })
    }

    fn listen(&self, address: &str) -> Result<Listener, TlsError> {
        let addr = address
            .parse::<SocketAddr>()
            .ok()
            .filter(|addr| self.listen.contains(addr))
            .ok_or_else(|| {
                self.deny(format!(
                    "TLS listener on `{address}` denied: add \"{address}\" to this connector's \
                     grants.listen (ip:port)"
                ))
            })?;
        let config = self.server.clone().ok_or_else(|| {
            TlsError::Settings(
                "a TLS listener needs its certificate: set grants.tls.cert_file and key_file \
                 (and ca_file to require client certificates)"
                    .to_owned(),
            )
        })?;
        let listener = bind(addr)
            .map_err(|err| TlsError::Failed(format!("cannot listen on {addr}: {err}")))?;
        let listener =
            crate::tls_listener::TlsListener::new(listener, config, self.connector.clone())
                .map_err(|err| TlsError::Failed(format!("cannot listen on {addr}: {err}")))?;
        Ok(Listener {
            listener,
            next: None,
        })
    }
}

/// A listening socket on `addr`, reusable at once after a restart (as
/// wasi:sockets' listeners are).
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A connection whose handshake is done.
#[derive(Debug)]
struct Established {
    stream: tokio_rustls::TlsStream<TcpStream>,
    peer: String,
    /// How to explain its I/O errors (connections safd made).
    explain: Option<Explain>,
}

/// What a connection's I/O errors are explained with: a TLS alert from
/// the server becomes the fix, in the words of `crate::tls`.
#[derive(Clone, Debug)]
struct Explain {
    host: String,
    asked_for_certificate: bool,
}

impl Explain {
    fn error(&self, err: std::io::Error) -> std::io::Error {
        let text = match crate::tls::explain_in_sources(&self.host, &err) {
            Some(text) => text,
            None if self.asked_for_certificate => format!(
                "{err} ({} asked for a client certificate and safd has none for it: if it \
                 requires one, set grants.tls.cert_file and key_file)",
                self.host
            ),
            None => return err,
        };
        std::io::Error::new(err.kind(), text)
    }
}

/// One half of a connection, its errors explained.
struct Explained<S> {
    inner: S,
    explain: Option<Explain>,
}

impl<S> Explained<S> {
    fn map<T>(&self, result: std::io::Result<T>) -> std::io::Result<T> {
        match (&self.explain, result) {
            (Some(explain), Err(err)) => Err(explain.error(err)),
            (_, result) => result,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Explained<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        polled.map(|result| self.map(result))
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Explained<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        polled.map(|result| self.map(result))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        polled.map(|result| self.map(result))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        polled.map(|result| self.map(result))
    }
}

/// A TLS listener of one instance: connections come from its accept loop
/// once their handshake is done.
#[derive(Debug)]
pub struct Listener {
    listener: crate::tls_listener::TlsListener,
    /// One taken by a wait and not yet accepted.
    next: Option<Established>,
}

fn established(
    (stream, peer): (tokio_rustls::server::TlsStream<TcpStream>, SocketAddr),
) -> Established {
    Established {
        stream: tokio_rustls::TlsStream::Server(stream),
        peer: peer.to_string(),
        explain: None,
    }
}

#[async_trait::async_trait]
impl Pollable for Listener {
    async fn ready(&mut self) {
        if self.next.is_none() {
            self.next = Some(established(self.listener.accept().await));
        }
    }
}

impl InstanceState {
    /// The plugin's two streams over `established`.
    fn streams(&mut self, established: Established) -> wasmtime::Result<Connection> {
        let (read, write) = tokio::io::split(established.stream);
        let read = Explained {
            inner: read,
            explain: established.explain.clone(),
        };
        let write = Explained {
            inner: write,
            explain: established.explain,
        };
        let input: DynInputStream = Box::new(AsyncReadStream::new(read));
        let output: DynOutputStream = Box::new(AsyncWriteStream::new(WRITE_BUDGET, write));
        let table = self.table();
        let input = table.push(input)?;
        let output = table.push(output)?;
        Ok(Connection {
            input,
            output,
            peer_address: established.peer,
        })
    }
}

impl Host for InstanceState {
    async fn connect(
        &mut self,
        address: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Connection, TlsError>> {
        let timeout = Duration::from_millis(u64::from(timeout_ms.max(1)));
        match self.tls_sockets.connect(&address, timeout).await {
            Ok(established) => Ok(Ok(self.streams(established)?)),
            Err(err) => Ok(Err(err)),
        }
    }

    fn listen(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<Listener>, TlsError>> {
        match self.tls_sockets.listen(&address) {
            Ok(listener) => Ok(Ok(self.table().push(listener)?)),
            Err(err) => Ok(Err(err)),
        }
    }
}

impl HostListener for InstanceState {
    fn accept(&mut self, listener: Resource<Listener>) -> wasmtime::Result<Option<Connection>> {
        let listener = self.table().get_mut(&listener)?;
        let next = match listener.next.take() {
            Some(connection) => Some(connection),
            None => listener.listener.try_accept().map(established),
        };
        next.map(|established| self.streams(established))
            .transpose()
    }

    fn subscribe(
        &mut self,
        listener: Resource<Listener>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(self.table(), listener)
    }

    fn drop(&mut self, listener: Resource<Listener>) -> wasmtime::Result<()> {
        self.table().delete(listener)?;
        Ok(())
    }
}
