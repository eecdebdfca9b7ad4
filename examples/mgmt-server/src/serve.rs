//! Serving connections with limits a client cannot talk its way around: at
//! most `max_connections` at once (further ones are closed at once), a
//! request's headers within `header_timeout` of the connection being ready
//! for one (a client that connects and says nothing, or a keep-alive
//! connection left idle, is closed after it), and each request — its body
//! included — answered within `request_timeout` or refused with 408.
//! `axum::serve` has none of these.

use axum::Router;
use axum::response::IntoResponse as _;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// What one client may hold.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// `router` with every request cut after `timeout` (408).
pub fn with_request_timeout(router: Router, timeout: Duration) -> Router {
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| async move {
            match tokio::time::timeout(timeout, next.run(request)).await {
                Ok(response) => response,
                Err(_) => {
                    tracing::warn!(
                        "a request was not done within {} s (a slow body?); answered 408",
                        timeout.as_secs()
                    );
                    (
                        axum::http::StatusCode::REQUEST_TIMEOUT,
                        axum::Json(serde_json::json!({
                            "error": format!(
                                "the request was not done within {} s; send its body without \
                                 pausing",
                                timeout.as_secs()
                            )
                        })),
                    )
                        .into_response()
                }
            }
        },
    ))
}

/// Serve `router` on `listener` until `shutdown` completes, then let the
/// requests in progress finish.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    let router = with_request_timeout(router, limits.request_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    let mut refused_since_said = 0u64;
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Closed at once: a client over the limit holds nothing here.
            refused_since_said += 1;
            if refused_since_said.is_power_of_two() {
                tracing::warn!(
                    ?peer,
                    refused = refused_since_said,
                    "connection refused: {} connections are open (--max-connections)",
                    limits.max_connections
                );
            }
            drop(io);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(?peer, "connection ended: {err}");
            }
            drop(permit);
        });
    }
    // Stop accepting; answer what is in progress (at most the request
    // timeout), then return.
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.request_timeout) => {
            tracing::warn!("connections still open after the request timeout; closing them");
        }
    }
}
