//! `syslog`: delivers events as RFC 5424 syslog messages to a SIEM or log
//! server, over plain TCP (RFC 6587 octet-counting or newline framing) or
//! RELP (rsyslog's reliable protocol, acknowledged per message).
//!
//! The endpoint's address (chosen by safd for each group member) is the
//! receiver's `ip:port`; safd's sandbox lets the plugin connect only to the
//! addresses the operator granted (`grants.tcp`). See `docs/syslog.md`.

mod config;
mod message;
mod relp;
mod sender;

use safd_plugin_sdk::destination::{
    Acknowledgement, DeliveryReport, Endpoint, Guest, GuestWriter, Health, Registration,
    SessionInfo,
};
use safd_plugin_sdk::types::{
    ConfigProblem, ConnectorError, ConnectorKind, Description, StreamBatch,
};
use sender::Sender;

struct Plugin;

impl Guest for Plugin {
    type Writer = Writer;

    fn describe() -> Description {
        Description {
            name: "syslog".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kind: ConnectorKind::Destination,
            summary: "Delivers RFC 5424 syslog messages (attributes as structured data) over TCP \
                      or RELP. With RELP an event counts as delivered once the server \
                      acknowledged it; with plain TCP once it was written and flushed to the \
                      connection, which the receiver never confirms."
                .to_owned(),
            config_schema: config::SCHEMA.to_owned(),
        }
    }

    fn acknowledgement_kind() -> Acknowledgement {
        // The kind is per plugin, not per config: plain TCP can only ever
        // promise "written", so that is what safd is told (and warns about).
        // RELP's acks are real and documented as such in docs/syslog.md.
        Acknowledgement::TransportWrite
    }

    fn validate_config(config: String) -> Result<(), Vec<ConfigProblem>> {
        config::parse(&config).map(drop)
    }
}

/// A session: the WIT face over [`Sender`].
struct Writer(Sender);

impl GuestWriter for Writer {
    fn new(config: String, endpoint: Endpoint) -> Result<Self, ConnectorError> {
        let config = config::parse(&config)
            .map_err(|p| ConnectorError::Fatal(safd_plugin_sdk::config::describe_problems(&p)))?;
        let address = safd_plugin_sdk::tcp::parse_address(&endpoint.address, config.tls)
            .map_err(|why| ConnectorError::Fatal(format!("member `{}`: {why}", endpoint.member)))?;
        Ok(Self(Sender::new(config, address)))
    }

    fn register(&self, info: SessionInfo) -> Result<Registration, ConnectorError> {
        self.0.register(info.agent_id)?;
        // A syslog receiver keeps no per-stream high-water to report and
        // never asks for catch-up.
        Ok(Registration {
            high_water: Vec::new(),
            service_ready: true,
            catch_up: None,
        })
    }

    fn deliver(&self, batches: Vec<StreamBatch>) -> Result<DeliveryReport, ConnectorError> {
        self.0.deliver(&batches)
    }

    fn probe(&self) -> Result<Health, ConnectorError> {
        Ok(Health {
            service_ready: true,
            detail: self.0.connect()?,
        })
    }
}

safd_plugin_sdk::export_destination!(Plugin);
