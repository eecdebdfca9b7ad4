//! The HTTP API (protocol version 1 plus the server's own query and admin
//! endpoints) and the console.

use crate::credentials::{Caller, Credentials, Need};
use crate::protocol::{
    BodyFormats, CatchUp, CatchUpFrom, DeliverRequest, Delivery, ErrorBody, Health, Names,
    Positions, RegisterRequest, RegisterResponse, ServiceSwitch,
};
use crate::store::{EventQuery, Session, Store, StoreError};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use safd_event_block::delivery;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest request body accepted; larger batches get 413 and safd splits
/// them.
pub const MAX_BODY_BYTES: usize = 16 << 20;

#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub credentials: Credentials,
    /// Requests refused because the token may not do what was asked.
    pub forbidden: Arc<AtomicU64>,
    /// Which delivery bodies this server reads.
    pub body_formats: BodyFormats,
    /// Deliveries received in each body (`/stats`: `deliveries`).
    pub deliveries: Arc<BodyCounts>,
}

/// Deliveries per body format since the server started: which agents speak
/// which body shows in `/stats`.
#[derive(Debug, Default)]
pub struct BodyCounts {
    pub json: AtomicU64,
    pub event_block: AtomicU64,
}

/// An error answer with its status.
#[derive(Debug)]
struct ApiError(StatusCode, String);

/// Characters of an error answer: serde's messages quote the offending
/// value, which a client may have made megabytes long.
const MAX_ERROR_CHARS: usize = 400;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = safd_event_block::names::quote(&self.1, MAX_ERROR_CHARS);
        if self.0.is_client_error() {
            tracing::debug!(status = %self.0, "request refused: {error}");
        }
        (self.0, Json(ErrorBody { error })).into_response()
    }
}

/// 400 for a request whose names break the rules.
fn check_names(request: &impl Names) -> Result<(), ApiError> {
    match request.bad_name() {
        None => Ok(()),
        Some(problem) => Err(ApiError(StatusCode::BAD_REQUEST, problem)),
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        tracing::error!("storage failed: {err}");
        // 503: the server cannot accept anything right now; safd fails over.
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("storage failed: {err}"),
        )
    }
}

fn parse<'a, T: Deserialize<'a>>(body: &'a Bytes) -> Result<T, ApiError> {
    // The fast parser first; only a bad body pays for tracking the path
    // that the error message names.
    serde_json::from_slice(body).map_err(|_| {
        let mut json = serde_json::Deserializer::from_slice(body);
        match serde_path_to_error::deserialize::<_, T>(&mut json) {
            Err(e) => {
                let path = e.path().to_string();
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("malformed request at `{path}`: {}", e.into_inner()),
                )
            }
            Ok(_) => ApiError(StatusCode::BAD_REQUEST, "malformed request".to_owned()),
        }
    })
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/register", post(register))
        .route("/events", post(deliver))
        .route("/health", get(health))
        .route("/query/events", get(query_events))
        .route("/query/sessions", get(query_sessions))
        .route("/stats", get(stats))
        .route("/stats/history", get(stats_history))
        .route("/admin/service", post(switch_service))
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .nest("/safd/v1", api)
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(console))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such path; this server speaks /safd/v1 (docs/protocol.md)".to_owned(),
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Bearer-token check for every protocol, query and admin endpoint, and
/// what the token may do there; who called goes with the request.
async fn authorize(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let caller = match presented.map(|token| state.credentials.caller(token)) {
        Some(Some(caller)) => caller,
        Some(None) => {
            return ApiError(StatusCode::UNAUTHORIZED, "wrong token".to_owned()).into_response();
        }
        None => {
            return ApiError(
                StatusCode::UNAUTHORIZED,
                "missing `Authorization: Bearer <token>` header".to_owned(),
            )
            .into_response();
        }
    };
    // Inside `/safd/v1` (axum may hand the nested router either form).
    let path = request.uri().path();
    let need = match path.strip_prefix("/safd/v1").unwrap_or(path) {
        "/health" => Need::Any,
        "/register" | "/events" => Need::Agent,
        "/query/events" | "/query/sessions" | "/stats" | "/stats/history" => Need::Read,
        _ => Need::Operator,
    };
    if let Some(refusal) = caller.refusal(need) {
        return forbidden(&state, refusal);
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// 403, counted (`/stats`: `forbidden`).
fn forbidden(state: &AppState, refusal: String) -> Response {
    state.forbidden.fetch_add(1, Ordering::Relaxed);
    tracing::warn!("request refused: {refusal}");
    ApiError(StatusCode::FORBIDDEN, refusal).into_response()
}

async fn register(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: RegisterRequest = parse(&body)?;
    check_names(&request)?;
    if let Some(refusal) = caller.acting_as(&request.agent_id) {
        return Ok(forbidden(&state, refusal));
    }
    let high_water = state.store.high_water(&request.agent_id).await;
    // Ask for what the agent holds beyond what is here.
    let missing: Positions = request
        .stored
        .iter()
        .filter_map(|(stream, &stored)| {
            let held = high_water.get(stream).copied().unwrap_or(0);
            (stored > held).then(|| (stream.clone(), held + 1))
        })
        .collect();
    let catch_up = if missing.is_empty() {
        None
    } else {
        Some(CatchUp {
            epoch: request.epoch,
            from: CatchUpFrom::Positions(missing),
        })
    };
    let session = Session {
        agent_id: request.agent_id.clone(),
        group: request.group.clone(),
        member: request.member.clone(),
        role: request.role.clone(),
        epoch: request.epoch,
        active: request.active,
        stored: request.stored.clone(),
        acknowledged: request.acknowledged.clone(),
        registered_at: jiff::Timestamp::now().to_string(),
        high_water: high_water.clone(),
        asked_catch_up: catch_up.is_some(),
        holds: Default::default(),
    };
    state.store.record_session(&session).await?;
    tracing::info!(
        agent = %request.agent_id,
        group = %request.group,
        member = %request.member,
        epoch = request.epoch,
        catch_up = catch_up.is_some(),
        "agent registered"
    );
    Ok(Json(RegisterResponse {
        high_water,
        service_ready: state.store.service_ready(),
        catch_up,
        body_formats: state.body_formats.listed(),
    })
    .into_response())
}

async fn deliver(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let binary = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == delivery::CONTENT_TYPE.as_bytes());
    if binary {
        if !state.body_formats.reads_binary() {
            return Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "this server was started with --body-formats json: send the deliveries as \
                     JSON (it did not list {} when the agent registered)",
                    delivery::CONTENT_TYPE
                ),
            ));
        }
        // Framing, UTF-8 and seq order of the whole body first: a body that
        // fails any of them is refused whole, nothing of it stored.
        let parsed = delivery::parse(&body)
            .map_err(|err| ApiError(StatusCode::BAD_REQUEST, err.to_string()))?;
        state.deliveries.event_block.fetch_add(1, Ordering::Relaxed);
        store_delivery(&state, &caller, &Delivery::from_binary(&parsed)).await
    } else {
        let request: DeliverRequest<'_> = parse(&body)?;
        state.deliveries.json.fetch_add(1, Ordering::Relaxed);
        store_delivery(&state, &caller, &Delivery::from_json(&request)).await
    }
}

async fn store_delivery(
    state: &AppState,
    caller: &Caller,
    delivery: &Delivery<'_>,
) -> Result<Response, ApiError> {
    check_names(delivery)?;
    if let Some(refusal) = caller.acting_as(delivery.agent_id) {
        return Ok(forbidden(state, refusal));
    }
    let response = state.store.deliver(delivery).await?;
    Ok(Json(response).into_response())
}

async fn health(State(state): State<AppState>) -> Json<Health> {
    let counters = state.store.counters();
    Json(Health {
        service_ready: state.store.service_ready(),
        detail: format!("inbox {}, stored {}", counters.inbox, counters.stored),
    })
}

async fn stats(State(state): State<AppState>) -> Json<serde_json::Value> {
    let mut counters = serde_json::to_value(state.store.counters()).unwrap_or_default();
    counters["forbidden"] = state.forbidden.load(Ordering::Relaxed).into();
    Json(serde_json::json!({
        "service_ready": state.store.service_ready(),
        "counters": counters,
        "deliveries": {
            "json": state.deliveries.json.load(Ordering::Relaxed),
            "event_block": state.deliveries.event_block.load(Ordering::Relaxed),
        },
        "streams": state.store.streams().await,
    }))
}

/// Events stored per second and their lag, 5-second buckets over the
/// last 15 minutes: the console's plots.
async fn stats_history(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "bucket_secs": crate::history::BUCKET_MICROS / 1_000_000,
        "points": state.store.history(),
    }))
}

async fn query_events(
    State(state): State<AppState>,
    query: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let store = state.store.clone();
    let events = tokio::task::spawn_blocking(move || store.query(&query))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    Ok(Json(events).into_response())
}

async fn query_sessions(State(state): State<AppState>) -> Result<Json<Vec<Session>>, ApiError> {
    let mut sessions = state.store.sessions()?;
    for session in &mut sessions {
        session.holds = state.store.high_water(&session.agent_id).await;
    }
    Ok(Json(sessions))
}

async fn switch_service(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Health>, ApiError> {
    let switch: ServiceSwitch = parse(&body)?;
    state.store.set_service_ready(switch.ready).await?;
    tracing::info!(ready = switch.ready, "event service switched");
    Ok(health(State(state)).await)
}

async fn console() -> Html<&'static str> {
    Html(include_str!("console.html"))
}
