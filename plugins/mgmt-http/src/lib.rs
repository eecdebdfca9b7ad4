//! `mgmt-http`: delivers to a management server over HTTP, protocol v1
//! (`docs/protocol.md`).
//!
//! The endpoint's address (chosen by safd for each group member) is the
//! server's base URL, e.g. `http://10.0.0.5:8471`; safd's sandbox lets the
//! plugin reach only the authorities the operator granted (`grants.http`).
//! Config (JSON): `token` (required), `connect_timeout_ms` (default 1000),
//! `timeout_ms` (default 10000).

mod wire;

use safd_event_block::delivery;
use safd_plugin_sdk::config;
use safd_plugin_sdk::destination::{
    Acknowledgement, DeliveryReport, Endpoint, Guest, GuestWriter, Health, MemberRole,
    Registration, SessionInfo,
};
use safd_plugin_sdk::http::{self, BaseUrl, Reply, Request, Timeouts};
use safd_plugin_sdk::types::{
    Backpressure, ConfigProblem, ConnectorError, ConnectorKind, Description, StreamBatch,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Bearer token the server expects.
    token: String,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u32,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u32,
}

fn default_connect_timeout_ms() -> u32 {
    1000
}
fn default_timeout_ms() -> u32 {
    10_000
}

/// Characters of a server's error answer kept in the error safd logs.
const MAX_DETAIL_CHARS: usize = 400;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["token"],
  "properties": {
    "token": {"type": "string", "minLength": 1, "description": "Bearer token the management server expects"},
    "connect_timeout_ms": {"type": "integer", "minimum": 1, "default": 1000, "description": "Give up connecting after this long (the member is then unreachable)"},
    "timeout_ms": {"type": "integer", "minimum": 1, "default": 10000, "description": "Give up waiting for an answer after this long"}
  }
}"#;

fn check(config: &Config) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    if config.token.trim().is_empty() {
        problems.push(ConfigProblem::new(
            "token",
            "is empty; set the token the management server was started with",
        ));
    } else if let Some(problem) = safd_event_block::names::header_token_problem(&config.token) {
        // It travels in the Authorization header: a request with a bad one
        // would fail at every call.
        problems.push(ConfigProblem::new("token", problem));
    }
    for (key, value, max) in [
        ("connect_timeout_ms", config.connect_timeout_ms, 600_000),
        ("timeout_ms", config.timeout_ms, 3_600_000),
    ] {
        problems.extend(config::check_range(
            key,
            u64::from(value),
            1..=max,
            "milliseconds",
        ));
    }
    problems
}

fn parse_config(text: &str) -> Result<Config, Vec<ConfigProblem>> {
    let (config, mut problems): (Config, _) = config::parse_naming_unknown_keys(text, SCHEMA)?;
    problems.extend(check(&config));
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

struct Plugin;

impl Guest for Plugin {
    type Writer = Writer;

    fn describe() -> Description {
        Description {
            name: "mgmt-http".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kind: ConnectorKind::Destination,
            summary: "Delivers events to a management server over HTTP (safd protocol v1); \
                      an event counts as delivered once the server has committed it."
                .to_owned(),
            config_schema: SCHEMA.to_owned(),
        }
    }

    fn acknowledgement_kind() -> Acknowledgement {
        // The protocol answers only after the server's durable commit.
        Acknowledgement::DurableCommit
    }

    fn validate_config(config: String) -> Result<(), Vec<ConfigProblem>> {
        parse_config(&config).map(drop)
    }
}

struct Writer {
    config: Config,
    endpoint: Endpoint,
    base: BaseUrl,
    /// Identity sent with every delivery, and the body format the server
    /// takes, learnt at registration.
    session: RefCell<Option<Session>>,
}

/// What a registration settles for the deliveries that follow it.
struct Session {
    agent_id: String,
    group: String,
    epoch: u64,
    body: BodyFormat,
}

/// How a delivery's events travel (docs/protocol.md, "Deliver").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFormat {
    /// One JSON object per event: what every protocol v1 server reads.
    Json,
    /// The queue's sequenced event blocks as they are, for a server that
    /// lists `application/vnd.safd.event-block` when it answers register.
    EventBlock,
}

impl BodyFormat {
    /// The best format among those a server listed; JSON when it listed
    /// none (servers before the binary body).
    fn choose(listed: &[String]) -> Self {
        if listed.iter().any(|f| f == delivery::CONTENT_TYPE) {
            Self::EventBlock
        } else {
            Self::Json
        }
    }
}

impl Writer {
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(u64::from(self.config.connect_timeout_ms)),
            response: Duration::from_millis(u64::from(self.config.timeout_ms)),
        }
    }

    /// One request; any answer but 200 becomes the matching error.
    fn call<T: DeserializeOwned>(&self, request: Request<'_>) -> Result<T, ConnectorError> {
        let path = request.path;
        let reply = http::exchange(
            &self.base,
            request.bearer(&self.config.token),
            self.timeouts(),
        )
        .map_err(|err| err.into_connector_error(&self.base))?;
        if reply.status == 200 {
            return serde_json::from_slice(&reply.body).map_err(|e| {
                ConnectorError::Fatal(format!(
                    "{} answered {path} with a body that is not protocol v1: {e}",
                    self.endpoint.address
                ))
            });
        }
        Err(self.status_error(path, &reply))
    }

    /// The error table of docs/protocol.md.
    fn status_error(&self, path: &str, reply: &Reply) -> ConnectorError {
        // At most a short prefix of whatever the server said: it ends up
        // in safd's log and in dead letters.
        let detail = serde_json::from_slice::<wire::ErrorAnswer>(&reply.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&reply.body).into_owned());
        let detail = safd_event_block::names::quote(&detail, MAX_DETAIL_CHARS);
        let message = format!(
            "{} answered {} to {path}: {detail}",
            self.endpoint.address, reply.status
        );
        match reply.status {
            400 | 413 => ConnectorError::Rejected(message),
            401 | 403 => ConnectorError::Unauthorized(message),
            404 => ConnectorError::Fatal(format!(
                "{message} (is this a safd management server speaking protocol v1?)"
            )),
            429 => ConnectorError::Backpressure(Backpressure {
                retry_after_ms: reply.retry_after_secs.unwrap_or(1).saturating_mul(1000),
                message,
            }),
            503 => ConnectorError::Unavailable(message),
            _ => ConnectorError::Transient(message),
        }
    }
}

impl GuestWriter for Writer {
    fn new(config: String, endpoint: Endpoint) -> Result<Self, ConnectorError> {
        let config = parse_config(&config)
            .map_err(|p| ConnectorError::Fatal(config::describe_problems(&p)))?;
        let base = BaseUrl::parse(&endpoint.address)
            .map_err(|why| ConnectorError::Fatal(format!("member `{}`: {why}", endpoint.member)))?;
        Ok(Self {
            config,
            endpoint,
            base,
            session: RefCell::new(None),
        })
    }

    fn register(&self, info: SessionInfo) -> Result<Registration, ConnectorError> {
        let role = match self.endpoint.role {
            MemberRole::Primary => "primary",
            MemberRole::Backup => "backup",
            MemberRole::Broadcast => "broadcast",
        };
        let mut body = String::with_capacity(256);
        body.push_str("{\"agent_id\":");
        wire::string(&mut body, &info.agent_id);
        body.push_str(",\"group\":");
        wire::string(&mut body, &info.group);
        body.push_str(",\"member\":");
        wire::string(&mut body, &self.endpoint.member);
        body.push_str(",\"role\":");
        wire::string(&mut body, role);
        body.push_str(&format!(
            ",\"epoch\":{},\"active\":{},\"stored\":",
            info.epoch, info.active
        ));
        wire::positions(&mut body, &info.stored);
        body.push_str(",\"acknowledged\":");
        wire::positions(&mut body, &info.acknowledged);
        body.push('}');
        let answer: wire::RegisterAnswer = self.call(Request::post(
            "/safd/v1/register",
            "application/json",
            body.as_bytes(),
        ))?;
        let body = BodyFormat::choose(answer.body_formats());
        let (high_water, service_ready, catch_up) = answer
            .into_parts()
            .map_err(|why| ConnectorError::Fatal(format!("{}: {why}", self.endpoint.address)))?;
        *self.session.borrow_mut() = Some(Session {
            agent_id: info.agent_id,
            group: info.group,
            epoch: info.epoch,
            body,
        });
        Ok(Registration {
            high_water,
            service_ready,
            catch_up,
        })
    }

    fn deliver(&self, batches: Vec<StreamBatch>) -> Result<DeliveryReport, ConnectorError> {
        let session = self.session.borrow();
        let Some(session) = session.as_ref() else {
            return Err(ConnectorError::Fatal(
                "deliver called before register".to_owned(),
            ));
        };
        let (content_type, body) = match session.body {
            BodyFormat::EventBlock => (delivery::CONTENT_TYPE, block_body(session, &batches)),
            BodyFormat::Json => ("application/json", json_body(session, &batches)?),
        };
        let answer: wire::DeliverAnswer =
            self.call(Request::post("/safd/v1/events", content_type, &body))?;
        Ok(answer.into())
    }

    fn probe(&self) -> Result<Health, ConnectorError> {
        let answer: wire::HealthAnswer = self.call(Request::get("/safd/v1/health"))?;
        Ok(answer.into())
    }
}

/// The binary body: each batch's sequenced block copied as the queue
/// holds it.
fn block_body(session: &Session, batches: &[StreamBatch]) -> Vec<u8> {
    let capacity: usize = batches
        .iter()
        .map(|b| b.events.bytes.len() + b.stream.len() + 16 * b.left_out.len() + 16)
        .sum();
    let mut body = Vec::with_capacity(capacity + 64);
    delivery::put_header(
        &mut body,
        &session.agent_id,
        &session.group,
        session.epoch,
        batches.len(),
    );
    for batch in batches {
        delivery::put_batch(
            &mut body,
            &batch.stream,
            batch.left_out.iter().map(|r| (r.first, r.last)),
            batch.events.count,
            &batch.events.bytes,
        );
    }
    body
}

/// The JSON body: every event written out as an object.
fn json_body(session: &Session, batches: &[StreamBatch]) -> Result<Vec<u8>, ConnectorError> {
    let capacity: usize = batches.iter().map(|b| b.events.bytes.len() * 2 + 64).sum();
    let mut body = String::with_capacity(capacity + 128);
    body.push_str("{\"agent_id\":");
    wire::string(&mut body, &session.agent_id);
    body.push_str(",\"group\":");
    wire::string(&mut body, &session.group);
    body.push_str(&format!(",\"epoch\":{},\"batches\":[", session.epoch));
    for (i, batch) in batches.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str("{\"stream\":");
        wire::string(&mut body, &batch.stream);
        body.push_str(",\"events\":[");
        for (n, event) in batch.events().enumerate() {
            let (seq, event) = event?;
            if n > 0 {
                body.push(',');
            }
            wire::event(&mut body, seq, &event);
        }
        body.push(']');
        // Seqs the group left out (its min_severity): the server
        // counts them as held (docs/protocol.md, "left_out").
        if !batch.left_out.is_empty() {
            body.push_str(",\"left_out\":[");
            for (n, range) in batch.left_out.iter().enumerate() {
                if n > 0 {
                    body.push(',');
                }
                body.push_str(&format!("[{},{}]", range.first, range.last));
            }
            body.push(']');
        }
        body.push('}');
    }
    body.push_str("]}");
    Ok(body.into_bytes())
}

safd_plugin_sdk::export_destination!(Plugin);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn problems(text: &str) -> Vec<(String, String)> {
        let config: Config = config::parse(text).unwrap();
        check(&config)
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    #[test]
    fn tokens_must_travel_in_a_header_and_timeouts_be_in_range() {
        assert!(problems(r#"{"token": "s3cret-Token_1.~+/="}"#).is_empty());
        for bad in ["a b", "a\r\nX-Evil: 1", "é", "\u{0}"] {
            let found = problems(&serde_json::json!({ "token": bad }).to_string());
            assert_eq!(found.len(), 1, "{bad:?}");
            assert!(found[0].1.contains("HTTP header"), "{found:?}");
        }
        assert!(problems(r#"{"token": "  "}"#)[0].1.contains("is empty"));
        let found = problems(r#"{"token": "t", "connect_timeout_ms": 0, "timeout_ms": 3600001}"#);
        assert_eq!(
            found,
            [
                (
                    "connect_timeout_ms".to_owned(),
                    "is 0; give 1 to 600000 (milliseconds)".to_owned()
                ),
                (
                    "timeout_ms".to_owned(),
                    "is 3600001; give 1 to 3600000 (milliseconds)".to_owned()
                ),
            ]
        );
    }
}
