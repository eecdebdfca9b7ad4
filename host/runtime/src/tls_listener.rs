//! A TLS listener whose handshakes run beside the accept loop: a client
//! that connects and says nothing holds one of a bounded number of places
//! for at most [`HANDSHAKE_TIMEOUT`], never the loop itself. Used for
//! plugins' TLS listeners (the `tls` interface) and for safd's admin API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;

/// How long a client may take over its handshake before it is cut.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes running at once; more clients wait in the kernel's backlog.
/// Each costs a socket and rustls' buffers, so a flood of silent clients
/// costs at most this many.
const CONCURRENT_HANDSHAKES: usize = 64;

/// Connections whose handshake is done, waiting to be accepted: more wait
/// in the handshake places, then in the kernel's backlog, not in memory.
const READY_CONNECTIONS: usize = 16;

/// Accepts TLS clients on one socket.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Serve TLS with `config` on `listener`; failed handshakes are logged
    /// as `owner`'s (`TLS client ADDRESS refused: REASON`).
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        owner: Arc<str>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (ready, waiting) = mpsc::channel(READY_CONNECTIONS);
        let task = tokio::spawn(accept_loop(
            listener,
            tokio_rustls::TlsAcceptor::from(config),
            ready,
            owner,
        ));
        Ok(Self {
            local,
            ready: waiting,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next client whose handshake is done.
    pub async fn accept(&mut self) -> (TlsStream<TcpStream>, SocketAddr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The loop never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    /// The next client whose handshake is done, if there is one now.
    pub fn try_accept(&mut self) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
        self.ready.try_recv().ok()
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    owner: Arc<str>,
) {
    let handshakes = Arc::new(Semaphore::new(CONCURRENT_HANDSHAKES));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: pass, and try again.
                tracing::warn!(listener = &*owner, "TLS listener cannot accept: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        let owner = owner.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    drop(permit);
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err(err)) => tracing::warn!(
                    listener = &*owner,
                    "TLS client {peer} refused: {}",
                    crate::tls::explain_handshake_error(&peer.to_string(), &err)
                ),
                Err(_) => tracing::warn!(
                    listener = &*owner,
                    "TLS client {peer} cut: no handshake within {HANDSHAKE_TIMEOUT:?}"
                ),
            }
        });
    }
}
