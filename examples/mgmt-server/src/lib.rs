//! `safd-mgmt`, the reference management server for safd.
//!
//! It speaks protocol version 1 (`docs/protocol.md`): agents register and
//! learn what the server holds, deliver batches that are stored durably
//! (an event log synced before the answer, indexed in sled) and deduplicated on (agent, stream,
//! seq) and on event id, and probe its health. Its event service can be
//! taken down while the server stays reachable: events then wait in a
//! durable inbox and are released when the service is back. A query API
//! and a web console show what arrived.

pub mod credentials;
mod held;
pub mod history;
pub mod http;
mod id_index;
mod journal;
pub mod protocol;
mod segment;
pub mod serve;
pub mod store;
pub mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Open the store and bind the listener; the caller serves it.
pub async fn bind(
    data: &Path,
    listen: SocketAddr,
    credentials: credentials::Credentials,
    service_ready: Option<bool>,
    limits: store::Limits,
    index_cache_bytes: u64,
    body_formats: protocol::BodyFormats,
) -> anyhow::Result<(tokio::net::TcpListener, axum::Router)> {
    let store = Arc::new(
        store::Store::open_with_cache(data, service_ready, index_cache_bytes)
            .map_err(|e| anyhow::anyhow!("cannot open the database at {}: {e}", data.display()))?
            .with_limits(limits),
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let router = http::router(http::AppState {
        store,
        credentials,
        forbidden: Arc::default(),
        body_formats,
        deliveries: Arc::default(),
    });
    Ok((listener, router))
}
