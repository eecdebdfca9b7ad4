//! The admin API over HTTPS (`[admin] tls`): axum serves the connections
//! of a TLS listener whose handshakes run beside its accept loop, so a
//! client that never finishes one holds no other client back.

use safd_runtime::TlsListener;
use std::net::SocketAddr;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// [`TlsListener`] as an axum listener.
#[derive(Debug)]
pub struct AdminTlsListener(pub TlsListener);

impl axum::serve::Listener for AdminTlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.0.accept().await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.0.local_addr())
    }
}
