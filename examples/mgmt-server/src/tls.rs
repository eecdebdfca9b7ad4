//! `--tls-cert`/`--tls-key` (and `--client-ca` for mutual TLS): the server
//! speaks HTTPS only. Handshakes run beside the accept loop, each with a
//! deadline, so a client that connects and says nothing holds neither the
//! loop nor other clients.

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server to take them.
const READY_BACKLOG: usize = 64;

/// Handshakes under way at once; a connection beyond them is closed at
/// once, so a flood of silent connections costs at most this many tasks.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// The server's TLS: its certificate chain and key, and with `client_ca`
/// a client certificate signed by one of those CAs required of every
/// client.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates("--tls-cert", cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "--tls-key {}: no usable private key in PEM (PKCS#8, PKCS#1 or SEC1)",
            key.display()
        )
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certificates("--client-ca", path)?);
            if added == 0 {
                bail!(
                    "--client-ca {}: no certificate in it can be a trust anchor",
                    path.display()
                );
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .with_context(|| format!("--client-ca {}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key_der).with_context(|| {
        format!(
            "--tls-key {} does not go with --tls-cert {}",
            key.display(),
            cert.display()
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(flag: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("{flag} {}: not a readable PEM file", path.display()))?;
    if certificates.is_empty() {
        bail!("{flag} {}: holds no certificate", path.display());
    }
    Ok(certificates)
}

/// A listener whose connections are TLS sessions.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Serve TLS with `config` on `listener`'s connections.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> anyhow::Result<Self> {
        let local = listener.local_addr().context("listener address")?;
        let (sender, ready) = mpsc::channel(READY_BACKLOG);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!("accepting a connection failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                if sender.is_closed() {
                    return;
                }
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    tracing::warn!(
                        "{MAX_PENDING_HANDSHAKES} TLS handshakes are under way; the connection \
                         from {peer} is closed"
                    );
                    continue;
                };
                let acceptor = acceptor.clone();
                let ready = sender.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready.send((tls, peer)).await;
                        }
                        Ok(Err(err)) => tracing::warn!("TLS handshake from {peer} failed: {err}"),
                        Err(_) => tracing::warn!(
                            "TLS handshake from {peer} did not finish within {} s; closed",
                            HANDSHAKE_TIMEOUT.as_secs()
                        ),
                    }
                });
            }
        });
        Ok(Self { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ends only when this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
