//! Example destination plugin: POSTs each delivery to an HTTP endpoint as
//! one JSON array of events, with the SDK's `http` helper (a body with
//! `Content-Length`, timeouts, the status → error table). The member's
//! address is the endpoint's URL. docs/plugin-guide.md walks through it.

use safd_plugin_sdk::destination::{
    Acknowledgement, DeliveryReport, Endpoint, Guest, GuestWriter, Health, Registration,
    SessionInfo,
};
use safd_plugin_sdk::events::{BlockError, severity};
use safd_plugin_sdk::http::{self, BaseUrl, Request, Timeouts};
use safd_plugin_sdk::types::{
    ConfigProblem, ConnectorError, ConnectorKind, Description, StreamBatch, StreamPosition,
};
use safd_plugin_sdk::{config, time};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Sent as `Authorization: Bearer …` when set.
    #[serde(default)]
    token: Option<String>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u32,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u32,
}

fn default_timeout_ms() -> u32 {
    5000
}

fn default_connect_timeout_ms() -> u32 {
    1000
}

struct Plugin;

impl Guest for Plugin {
    type Writer = Writer;

    fn describe() -> Description {
        Description {
            name: "webhook".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kind: ConnectorKind::Destination,
            summary: "POSTs each delivery as a JSON array of events to an HTTP endpoint."
                .to_owned(),
            config_schema: r#"{"type":"object","additionalProperties":false,
                "properties":{"token":{"type":"string"},
                "timeout_ms":{"type":"integer","minimum":1},
                "connect_timeout_ms":{"type":"integer","minimum":1}}}"#
                .to_owned(),
        }
    }

    fn acknowledgement_kind() -> Acknowledgement {
        // A 2xx is the receiver's promise that it has the events: use this
        // plugin with receivers that store before they answer.
        Acknowledgement::DurableCommit
    }

    fn validate_config(config: String) -> Result<(), Vec<ConfigProblem>> {
        config::parse::<Config>(&config)
            .map(drop)
            .map_err(|p| vec![p])
    }
}

struct Writer {
    config: Config,
    base: BaseUrl,
}

impl Writer {
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(self.config.connect_timeout_ms.into()),
            response: Duration::from_millis(self.config.timeout_ms.into()),
        }
    }

    fn send(&self, request: Request<'_>) -> Result<http::Reply, ConnectorError> {
        let request = match &self.config.token {
            Some(token) => request.bearer(token),
            None => request,
        };
        http::exchange(&self.base, request, self.timeouts())
            .map_err(|e| e.into_connector_error(&self.base))
    }
}

impl GuestWriter for Writer {
    fn new(config: String, endpoint: Endpoint) -> Result<Self, ConnectorError> {
        let config = config::parse::<Config>(&config)
            .map_err(|p| ConnectorError::Fatal(config::describe_problems(&[p])))?;
        let base = BaseUrl::parse(&endpoint.address)
            .map_err(|why| ConnectorError::Fatal(format!("member `{}`: {why}", endpoint.member)))?;
        Ok(Self { config, base })
    }

    fn register(&self, _info: SessionInfo) -> Result<Registration, ConnectorError> {
        // A webhook keeps no positions: it reports no high-water and never
        // asks for a catch-up. Reaching it now makes a dead endpoint fail
        // over before the first delivery.
        let health = self.probe()?;
        Ok(Registration {
            high_water: Vec::new(),
            service_ready: health.service_ready,
            catch_up: None,
        })
    }

    fn deliver(&self, batches: Vec<StreamBatch>) -> Result<DeliveryReport, ConnectorError> {
        let body = json_body(&batches)?;
        let reply = self.send(Request::post("", "application/json", &body))?;
        if !reply.is_success() {
            return Err(http::status_error(
                &reply,
                &format!("POST {}", self.base.url("")),
            ));
        }
        // The whole array was taken: every batch is acknowledged to its end.
        let mut acknowledged = Vec::new();
        for batch in &batches {
            if let Some(seq) = batch.last_seq()? {
                acknowledged.push(StreamPosition {
                    stream: batch.stream.clone(),
                    seq,
                });
            }
        }
        Ok(DeliveryReport {
            acknowledged,
            rejected: Vec::new(),
        })
    }

    fn probe(&self) -> Result<Health, ConnectorError> {
        // No health endpoint: any HTTP answer to a HEAD (even 404 or 405)
        // says the receiver is there; a refused token says it is not ours.
        let reply = self.send(Request::head(""))?;
        if matches!(reply.status, 401 | 403) {
            return Err(http::status_error(
                &reply,
                &format!("HEAD {}", self.base.url("")),
            ));
        }
        Ok(Health {
            service_ready: reply.status != 503,
            detail: format!("HEAD answered {}", reply.status),
        })
    }
}

/// One event in the POSTed array.
#[derive(Serialize)]
struct JsonEvent<'a> {
    stream: &'a str,
    seq: u64,
    id: &'a str,
    /// RFC 3339, UTC.
    time: String,
    severity: &'static str,
    attributes: BTreeMap<&'a str, &'a str>,
    body: &'a str,
}

/// Every batch's events, in order, as one JSON array.
fn json_body(batches: &[StreamBatch]) -> Result<Vec<u8>, BlockError> {
    let mut events = Vec::new();
    for batch in batches {
        for item in batch.events() {
            let (seq, event) = item?;
            let mut time_text = String::new();
            time::rfc3339(&mut time_text, event.time);
            events.push(JsonEvent {
                stream: &batch.stream,
                seq,
                id: event.id,
                time: time_text,
                severity: severity(&event).as_str(),
                attributes: event.attributes.iter().collect(),
                body: event.body,
            });
        }
    }
    // Serializing borrowed strings cannot fail.
    Ok(serde_json::to_vec(&events).unwrap_or_default())
}

safd_plugin_sdk::export_destination!(Plugin);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use safd_plugin_sdk::types::{Attribute, Event, Severity};

    #[test]
    fn a_delivery_is_one_json_array_of_every_batchs_events() {
        let event = |id: &str, severity| Event {
            id: id.to_owned(),
            time: 1_700_000_000_000_000,
            severity,
            attributes: vec![Attribute::new("system", "\\PROD1")],
            body: format!("text of {id}"),
        };
        let batches = [
            StreamBatch::sequenced("ems", 7, &[event("a", Severity::Major)]),
            StreamBatch::sequenced("safd", 1, &[event("b", Severity::Info)]),
        ];
        let body: serde_json::Value =
            serde_json::from_slice(&json_body(&batches).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!([
                {"stream": "ems", "seq": 7, "id": "a", "time": "2023-11-14T22:13:20.000000Z",
                 "severity": "major", "attributes": {"system": "\\PROD1"}, "body": "text of a"},
                {"stream": "safd", "seq": 1, "id": "b", "time": "2023-11-14T22:13:20.000000Z",
                 "severity": "info", "attributes": {"system": "\\PROD1"}, "body": "text of b"},
            ])
        );
    }
}
