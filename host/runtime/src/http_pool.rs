//! Keep-alive connections for a connector instance's outgoing HTTP requests.
//!
//! wasmtime-wasi-http's default sender opens a TCP connection per request
//! and closes it after the response. A destination that delivers hundreds
//! of batches a second then pays a connect and the server's accept for each
//! one, and leaves each socket in TIME_WAIT for a minute (tens of thousands
//! at full rate: enough to run out of ephemeral ports). The pool keeps
//! plain-HTTP connections open between requests of one instance instead.
//!
//! What stays as it was: the request's connect, first-byte and
//! between-bytes timeouts; a refused connection still fails at once (a
//! server that went away has closed its pooled connections, which are
//! dropped before a new connect is tried). A request is retried on another
//! connection only when hyper hands it back unsent, so no request is ever
//! sent twice by the pool.
//!
//! HTTPS connections are kept the same way; their TLS is the instance's
//! (`grants.tls`: the operator's CA bundle and client certificate, else the
//! public web roots), and a failed handshake comes back to the plugin as
//! one sentence saying what is wrong and what to do.

use core::pin::Pin;
use core::task::{Context, Poll, ready};
use http::uri::Scheme;
use hyper::client::conn::http1::{self, SendRequest};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// How long an idle connection is kept. Below the keep-alive timeout of
/// common servers (5 s for Apache httpd and Node.js), so the pool rarely
/// picks a connection the server is just closing.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Idle connections kept per authority; an instance sends one request at a
/// time, so more would only hold sockets open.
const MAX_IDLE_PER_AUTHORITY: usize = 4;

/// wasmtime-wasi-http's default when a request sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The future of the connection's I/O that wasi:http reports errors from;
/// a pooled connection is driven by its own task, so this one has nothing
/// left to do.
pub(crate) type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

struct IdleConnection {
    sender: SendRequest<WasiBody>,
    since: Instant,
}

/// Idle keep-alive connections by authority (`host:port`).
#[derive(Default)]
pub(crate) struct ConnectionPool {
    idle: Mutex<HashMap<String, Vec<IdleConnection>>>,
    /// TLS for HTTPS; `None`: the public web roots, no client certificate.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// The public web roots, no client certificate: HTTPS without
/// `grants.tls`.
fn public_roots() -> Result<Arc<rustls::ClientConfig>, Error> {
    crate::tls::public_roots().map_err(|e| Error::InternalError(Some(e)))
}

impl std::fmt::Debug for ConnectionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPool")
            .field("idle", &self.idle_count())
            .finish()
    }
}

#[derive(Clone, Copy)]
struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
}

impl Timeouts {
    fn from_options(options: Option<RequestOptions>) -> Self {
        let or_default = |t: Option<Duration>| t.unwrap_or(DEFAULT_TIMEOUT);
        Self {
            connect: or_default(options.and_then(|o| o.connect_timeout)),
            first_byte: or_default(options.and_then(|o| o.first_byte_timeout)),
            // Tokio's interval panics on zero.
            between_bytes: or_default(options.and_then(|o| o.between_bytes_timeout))
                .max(Duration::from_nanos(1)),
        }
    }
}

impl ConnectionPool {
    /// A pool whose HTTPS connections use `tls`.
    pub(crate) fn new(tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self {
            idle: Mutex::default(),
            tls,
        }
    }

    /// Idle connections held, all authorities together.
    pub(crate) fn idle_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<IdleConnection>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used open connection to `authority`, dropping the
    /// closed and the expired ones.
    fn checkout(&self, authority: &str) -> Option<SendRequest<WasiBody>> {
        let mut idle = self.lock();
        let connections = idle.get_mut(authority)?;
        while let Some(connection) = connections.pop() {
            if connection.since.elapsed() < IDLE_TIMEOUT && connection.sender.is_ready() {
                return Some(connection.sender);
            }
        }
        None
    }

    fn check_in(&self, authority: String, sender: SendRequest<WasiBody>) {
        let mut idle = self.lock();
        let connections = idle.entry(authority).or_default();
        connections.retain(|c| c.since.elapsed() < IDLE_TIMEOUT && !c.sender.is_closed());
        if connections.len() < MAX_IDLE_PER_AUTHORITY {
            connections.push(IdleConnection {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Send `request` (plain HTTP, absolute URI) on a pooled connection or
    /// a new one.
    pub(crate) async fn send(
        self: Arc<Self>,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
        let timeouts = Timeouts::from_options(options);
        let https = match request.uri().scheme() {
            Some(scheme) if *scheme == Scheme::HTTPS => true,
            Some(scheme) if *scheme == Scheme::HTTP => false,
            _ => return Err(Error::HttpProtocolError),
        };
        let host = request
            .uri()
            .host()
            .ok_or(Error::HttpRequestUriInvalid)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let authority = authority_with_port(request.uri(), https)?;
        // Plain and TLS connections to one authority are never mixed up.
        let pool_key = if https {
            format!("https://{authority}")
        } else {
            authority.clone()
        };
        // The request line carries only the path: the URI holds scheme and
        // authority, which HTTP/1 sends only to proxies.
        *request.uri_mut() = origin_form(request.uri())?;

        let (response, sender) = loop {
            let (mut sender, reused) = match self.checkout(&pool_key) {
                Some(sender) => (sender, true),
                None => {
                    let tls = match (https, &self.tls) {
                        (false, _) => None,
                        (true, Some(granted)) => Some(granted.clone()),
                        (true, None) => Some(public_roots()?),
                    };
                    (
                        connect(&authority, &host, tls, timeouts.connect).await?,
                        false,
                    )
                }
            };
            let sent = tokio::time::timeout(timeouts.first_byte, sender.try_send_request(request))
                .await
                .map_err(|_| Error::ConnectionReadTimeout)?;
            match sent {
                Ok(response) => break (response, sender),
                Err(mut failed) => match failed.take_message() {
                    // Not written: the connection closed while idle. Only
                    // then is sending again safe.
                    Some(unsent) if reused => request = unsent,
                    _ => {
                        let err = failed.into_error();
                        return Err(match crate::tls::explain_in_sources(&host, &err) {
                            Some(explained) => Error::InternalError(Some(explained)),
                            None => Error::from(err),
                        });
                    }
                },
            }
        };

        // Back into the pool once this response has been read to its end
        // (HTTP/1 carries one exchange at a time); a response dropped
        // half-read closes the connection instead.
        let pool = Arc::downgrade(&self);
        tokio::spawn(return_when_ready(pool, pool_key, sender));

        let between_bytes = timeouts.between_bytes;
        let response = response.map(|incoming| {
            use http_body_util::BodyExt;
            let mut timeout = tokio::time::interval(between_bytes);
            timeout.reset();
            TimedBody { incoming, timeout }.boxed_unsync()
        });
        Ok((response, Box::new(async { Ok(()) })))
    }
}

async fn return_when_ready(
    pool: Weak<ConnectionPool>,
    authority: String,
    mut sender: SendRequest<WasiBody>,
) {
    if sender.ready().await.is_ok()
        && let Some(pool) = pool.upgrade()
    {
        pool.check_in(authority, sender);
    }
}

/// Open a connection (TLS when `tls` is given, verifying the server's
/// certificate for `host`) and start the task that drives it.
async fn connect(
    authority: &str,
    host: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<SendRequest<WasiBody>, Error> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(authority))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    // Requests are written whole; Nagle would hold the last segment back
    // for the previous one's ACK.
    let _ = stream.set_nodelay(true);
    match tls {
        None => handshake(stream, timeout).await,
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|_| {
                Error::InternalError(Some(format!(
                    "`{host}` is not a name TLS can verify a certificate for"
                )))
            })?;
            // Without a client certificate of its own, note whether the
            // server asks for one (and will refuse the connection).
            let (config, watcher) = crate::tls::NoClientCertificate::watching(config);
            let connector = tokio_rustls::TlsConnector::from(config);
            let stream = tokio::time::timeout(timeout, connector.connect(name, stream))
                .await
                .map_err(|_| {
                    Error::InternalError(Some(format!(
                        "the TLS handshake with {host} did not finish within {} ms: is {authority} \
                         a TLS port (or is the member's address meant to be http://)?",
                        timeout.as_millis()
                    )))
                })?
                .map_err(|err| {
                    Error::InternalError(Some(crate::tls::explain_handshake_error(host, &err)))
                })?;
            if watcher.is_some_and(|w| w.was_asked()) {
                return Err(Error::InternalError(Some(format!(
                    "{host} asks for a client certificate (mutual TLS) and safd has none for \
                     it: set grants.tls.cert_file and key_file"
                ))));
            }
            handshake(stream, timeout).await
        }
    }
}

/// HTTP/1 over `stream`, driven by a task of its own.
async fn handshake<S>(stream: S, timeout: Duration) -> Result<SendRequest<WasiBody>, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = tokio::time::timeout(
        timeout,
        http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            // The request that used it has its own error.
            tracing::debug!("HTTP connection ended: {err}");
        }
    });
    Ok(sender)
}

fn authority_with_port(uri: &http::Uri, https: bool) -> Result<String, Error> {
    let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
    Ok(match authority.port() {
        Some(_) => authority.to_string(),
        None if https => format!("{authority}:443"),
        None => format!("{authority}:80"),
    })
}

fn origin_form(uri: &http::Uri) -> Result<http::Uri, Error> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)
}

/// A response body that fails when no bytes arrive for the between-bytes
/// timeout.
struct TimedBody {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
}

impl http_body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(if err.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                Error::from(err)
            }))),
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;

    fn request(address: std::net::SocketAddr) -> http::Request<WasiBody> {
        http::Request::post(format!("http://{address}/events"))
            .header(http::header::HOST, address.to_string())
            .body(
                Full::new(bytes::Bytes::from_static(b"{}"))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap()
    }

    /// A server answering every request with "ok"; counts connections.
    async fn server(keep_alive: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(
                            TokioIo::new(stream),
                            hyper::service::service_fn(|_| async {
                                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                    bytes::Bytes::from_static(b"ok"),
                                )))
                            }),
                        ),
                );
            }
        });
        (address, accepted)
    }

    async fn exchange(pool: &Arc<ConnectionPool>, address: std::net::SocketAddr) -> Vec<u8> {
        let (response, _) = pool.clone().send(request(address), None).await.unwrap();
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    async fn wait_for_idle(pool: &ConnectionPool, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.idle_count() != count {
            assert!(Instant::now() < deadline, "pool never held {count}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn requests_one_after_another_share_one_connection() {
        let (address, accepted) = server(true).await;
        let pool = Arc::new(ConnectionPool::new(None));
        for _ in 0..5 {
            assert_eq!(exchange(&pool, address).await, b"ok");
            wait_for_idle(&pool, 1).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closes_is_not_used_again() {
        let (address, accepted) = server(false).await;
        let pool = Arc::new(ConnectionPool::new(None));
        for round in 1..=3 {
            assert_eq!(exchange(&pool, address).await, b"ok");
            assert_eq!(accepted.load(Ordering::SeqCst), round);
        }
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_refused_connection_fails_the_request() {
        let address = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let pool = Arc::new(ConnectionPool::new(None));
        match pool.send(request(address), None).await {
            Err(Error::Connect(err)) => {
                assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused)
            }
            other => panic!("expected a refused connection, got {:?}", other.err()),
        }
    }

    #[tokio::test]
    async fn a_server_that_never_answers_runs_into_the_first_byte_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        let options = RequestOptions {
            first_byte_timeout: Some(Duration::from_millis(50)),
            ..RequestOptions::default()
        };
        let pool = Arc::new(ConnectionPool::new(None));
        let result = pool.clone().send(request(address), Some(options)).await;
        assert!(matches!(result, Err(Error::ConnectionReadTimeout)));
        assert_eq!(pool.idle_count(), 0);
    }
}
