//! Example destination plugin: writes each event to safd's log and
//! acknowledges it. The walkthrough in docs/plugin-guide.md explains it.

use safd_plugin_sdk::destination::{
    Acknowledgement, DeliveryReport, Endpoint, Guest, GuestWriter, Health, Registration,
    SessionInfo,
};
use safd_plugin_sdk::types::{
    ConfigProblem, ConnectorError, ConnectorKind, Description, StreamBatch, StreamPosition,
};
use safd_plugin_sdk::{config, log};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Text put in front of every logged event.
    #[serde(default)]
    prefix: String,
}

struct Plugin;

impl Guest for Plugin {
    type Writer = Writer;

    fn describe() -> Description {
        Description {
            name: "log-destination".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kind: ConnectorKind::Destination,
            summary: "Writes each event to safd's log.".to_owned(),
            config_schema: r#"{"type":"object","additionalProperties":false,
                "properties":{"prefix":{"type":"string"}}}"#
                .to_owned(),
        }
    }

    fn acknowledgement_kind() -> Acknowledgement {
        // The log is not a durable receiver: say so honestly.
        Acknowledgement::TransportWrite
    }

    fn validate_config(config: String) -> Result<(), Vec<ConfigProblem>> {
        config::parse::<Config>(&config)
            .map(drop)
            .map_err(|p| vec![p])
    }
}

struct Writer {
    config: Config,
    endpoint: Endpoint,
}

impl GuestWriter for Writer {
    fn new(config: String, endpoint: Endpoint) -> Result<Self, ConnectorError> {
        let config = config::parse::<Config>(&config)
            .map_err(|p| ConnectorError::Fatal(config::describe_problems(&[p])))?;
        Ok(Self { config, endpoint })
    }

    fn register(&self, _info: SessionInfo) -> Result<Registration, ConnectorError> {
        log::info(&format!("registered with {}", self.endpoint.member));
        // The log holds nothing, so it never asks for catch-up.
        Ok(Registration {
            high_water: Vec::new(),
            service_ready: true,
            catch_up: None,
        })
    }

    fn deliver(&self, batches: Vec<StreamBatch>) -> Result<DeliveryReport, ConnectorError> {
        let mut acknowledged = Vec::new();
        for batch in batches {
            let mut last_seq = None;
            // Events are borrowed from the batch's block: nothing is copied.
            for event in batch.events() {
                let (seq, event) = event?;
                log::log(
                    log::LogLevel::Info,
                    &format!("{}{}", self.config.prefix, event.body),
                    &[
                        ("stream", &batch.stream),
                        ("seq", &seq.to_string()),
                        ("id", event.id),
                    ],
                );
                last_seq = Some(seq);
            }
            if let Some(seq) = last_seq {
                acknowledged.push(StreamPosition {
                    stream: batch.stream.clone(),
                    seq,
                });
            }
        }
        // Plain printing reaches the log too, without level or fields.
        println!("delivered {} streams", acknowledged.len());
        Ok(DeliveryReport {
            acknowledged,
            rejected: Vec::new(),
        })
    }

    fn probe(&self) -> Result<Health, ConnectorError> {
        Ok(Health {
            service_ready: true,
            detail: String::new(),
        })
    }
}

safd_plugin_sdk::export_destination!(Plugin);
