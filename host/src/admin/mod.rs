//! The admin API: status, Prometheus metrics, operator-triggered catch-up,
//! dead letters, configuration reload. Loopback by default; a bearer token
//! when configured.
//!
//! The `safd status`, `safd catchup`, `safd dlq` and `safd reload` commands
//! are its clients (`client`).

pub mod client;
mod health;
mod metrics;
mod process;
mod status;
pub mod tls;

use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use safd_connector::{CatchUpFrom, StreamPosition};
use safd_engine::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

use crate::reload::ReloadReport;

/// A reload asked for through the API; the daemon's main loop applies it
/// (one at a time, like SIGHUP) and answers on the channel.
pub type ReloadRequest = oneshot::Sender<ReloadReport>;

pub use health::Health;
pub use status::{GroupView, LaneView, QueueView, Status};

#[derive(Debug, Clone)]
struct AdminState {
    engine: Arc<Engine>,
    agent_id: Arc<str>,
    token: Option<Arc<str>>,
    started: Instant,
    reload: mpsc::Sender<ReloadRequest>,
}

/// An error answer: `{"error": "..."}` with its status.
#[derive(Debug)]
struct ApiError(StatusCode, String);

/// Characters of an error answer: messages quote what the client sent,
/// which may be megabytes long.
const MAX_ERROR_CHARS: usize = 400;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = safd_event_block::names::quote(&self.1, MAX_ERROR_CHARS);
        (self.0, Json(serde_json::json!({ "error": error }))).into_response()
    }
}

impl From<safd_engine::EngineError> for ApiError {
    fn from(err: safd_engine::EngineError) -> Self {
        ApiError(StatusCode::BAD_REQUEST, err.to_string())
    }
}

/// Bind the admin listener and build its routes; the caller serves them.
pub async fn bind(
    engine: Arc<Engine>,
    agent_id: &str,
    listen: SocketAddr,
    token: Option<String>,
    reload: mpsc::Sender<ReloadRequest>,
) -> std::io::Result<(SocketAddr, tokio::net::TcpListener, Router)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let state = AdminState {
        engine,
        agent_id: Arc::from(agent_id),
        token: token.map(Arc::from),
        started: Instant::now(),
        reload,
    };
    let router = Router::new()
        .route("/status", get(get_status))
        .route("/metrics", get(get_metrics))
        .route("/catchup", post(post_catch_up))
        .route("/dlq", get(get_dead_letters))
        .route("/dlq/replay", post(post_replay))
        .route("/reload", post(post_reload))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        // Probes carry no token: /health says only whether safd is ready,
        // and names its sources and groups.
        .route("/health", get(get_health))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such path; see docs/admin.md (/health, /status, /metrics, /catchup, /dlq, \
                 /dlq/replay, /reload)"
                    .to_owned(),
            )
        })
        .layer(middleware::from_fn_with_state(
            addr.ip().is_loopback(),
            refuse_web_pages,
        ))
        .with_state(state);
    Ok((addr, listener, router))
}

/// What a web page in an operator's browser could make it send is refused:
/// a POST must say `Content-Type: application/json` (a cross-site form or
/// a "simple" fetch cannot, without the browser asking first), and on a
/// loopback listener the `Host` must be a loopback name (a page that had
/// its own name resolve to 127.0.0.1 — DNS rebinding — sends its own).
async fn refuse_web_pages(State(loopback): State<bool>, request: Request, next: Next) -> Response {
    if loopback {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !is_loopback_host(host) {
            return ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "Host `{host}` is not a loopback name: this API listens on loopback and \
                     answers only requests addressed to 127.0.0.1, [::1] or localhost"
                ),
            )
            .into_response();
        }
    }
    if !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a POST to the admin API must carry `Content-Type: application/json` (safd's \
                 own commands do); other requests could come from a web page"
                    .to_owned(),
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// `127.0.0.1[:port]`, `[::1][:port]`, `localhost[:port]` and the like.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => {
            next.run(request).await
        }
        _ => ApiError(
            StatusCode::UNAUTHORIZED,
            "this admin API wants `Authorization: Bearer <admin.token>` (safd status --token)"
                .to_owned(),
        )
        .into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn get_status(State(state): State<AdminState>) -> Json<Status> {
    Json(Status::gather(&state.engine, &state.agent_id, state.started.elapsed()).await)
}

async fn get_health(State(state): State<AdminState>) -> Response {
    let health = Health::gather(&state.engine).await;
    let code = if health.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(health)).into_response()
}

async fn get_metrics(State(state): State<AdminState>) -> Response {
    let body = metrics::render(&state.engine).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// `POST /catchup`: replay to a group's active member from a seq per
/// stream or from a time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatchUpRequest {
    pub group: String,
    /// Only for a broadcast group: the member to replay to.
    #[serde(default)]
    pub member: Option<String>,
    /// Per stream, the first seq to send again.
    #[serde(default)]
    pub from_seq: BTreeMap<String, u64>,
    /// Or: events ingested since this RFC 3339 time.
    #[serde(default)]
    pub from_time: Option<String>,
}

async fn post_catch_up(
    State(state): State<AdminState>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: CatchUpRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("malformed request: {e}")))?;
    let from = match (&request.from_time, request.from_seq.is_empty()) {
        (Some(time), true) => {
            let time: jiff::Timestamp = time.parse().map_err(|e| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("from_time `{time}` is not an RFC 3339 time: {e}"),
                )
            })?;
            CatchUpFrom::Time(time.as_microsecond())
        }
        (None, false) => CatchUpFrom::Positions(
            request
                .from_seq
                .iter()
                .map(|(stream, &seq)| StreamPosition {
                    stream: stream.clone(),
                    seq,
                })
                .collect(),
        ),
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "give either from_seq (per stream) or from_time, not both or neither".to_owned(),
            ));
        }
    };
    state
        .engine
        .catch_up(&request.group, request.member.as_deref(), from)
        .await?;
    Ok(Json(serde_json::json!({ "started": true })))
}

#[derive(Debug, Deserialize)]
struct GroupQuery {
    group: String,
}

/// One dead letter as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetterView {
    pub group: String,
    pub stream: String,
    pub seq: u64,
    pub id: String,
    pub member: String,
    pub reason: String,
    /// RFC 3339.
    pub rejected_at: String,
    pub body: String,
}

async fn get_dead_letters(
    State(state): State<AdminState>,
    query: Result<Query<GroupQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<DeadLetterView>>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{}; use /dlq?group=NAME", e.body_text()),
        )
    })?;
    let letters = state.engine.dead_letters(&query.group)?;
    Ok(Json(
        letters
            .into_iter()
            .map(|letter| DeadLetterView {
                group: letter.group,
                stream: letter.stream,
                seq: letter.event.seq,
                id: letter.event.event.id,
                member: letter.member,
                reason: letter.reason,
                rejected_at: status::rfc3339(letter.rejected_at),
                body: letter.event.event.body,
            })
            .collect(),
    ))
}

async fn post_replay(
    State(state): State<AdminState>,
    query: Result<Query<GroupQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{}; use /dlq/replay?group=NAME", e.body_text()),
        )
    })?;
    let queued = state.engine.replay_dead_letters(&query.group).await?;
    Ok(Json(serde_json::json!({ "queued": queued })))
}

/// Re-read the configuration file and apply what changed; the answer is
/// the reload report (also when the file was refused: see `problems`).
async fn post_reload(State(state): State<AdminState>) -> Result<Json<ReloadReport>, ApiError> {
    let unavailable = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "safd is stopping; nothing was reloaded".to_owned(),
        )
    };
    let (reply, answer) = oneshot::channel();
    state.reload.send(reply).await.map_err(|_| unavailable())?;
    answer.await.map(Json).map_err(|_| unavailable())
}
