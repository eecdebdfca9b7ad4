//! `nats-jetstream`: a safd destination that publishes into a NATS
//! JetStream stream with `durable-commit` acknowledgements: an event counts
//! as delivered once JetStream answered that it stored it (on the stream's
//! replicas), and each event carries `Nats-Msg-Id` = agent, stream and seq,
//! so one sent again (after a reconnect, a failover, a safd restart) is
//! stored once within the stream's duplicate window.
//!
//! `async-nats` does not build for wasm32-wasip2, so the plugin speaks the
//! NATS client protocol itself over the sandbox's TCP socket. What it needs
//! of it is small and tested natively:
//!
//! - [`protocol`]: the server's operations read from a byte stream
//!   (`INFO`, `MSG`, `HMSG`, `PING`, `PONG`, `+OK`, `-ERR`) and the
//!   client's written (`CONNECT`, `PUB`, `HPUB`, `SUB`, `PING`, `PONG`),
//!   with message headers;
//! - [`subject`]: the subject template (`safd.{agent}.{stream}`) and the
//!   characters a subject token may not hold;
//! - [`nkey`]: an nkey seed read and the server's nonce signed with it;
//! - [`ack`]: JetStream's publish acknowledgements and the window of
//!   outstanding publishes, whose unbroken run of stored events is what
//!   safd may count as acknowledged;
//! - [`client`]: one connection — the handshake, JetStream's stream API,
//!   publishes and their answers — with its errors already the WIT cases;
//! - [`config`], [`writer`]: the configuration, and one member's session.

pub mod ack;
pub mod client;
pub mod config;
pub mod nkey;
pub mod protocol;
pub mod subject;
pub mod writer;

use safd_plugin_sdk::destination::{
    Acknowledgement, DeliveryReport, Endpoint, Guest, GuestWriter, Health, Registration,
    SessionInfo,
};
use safd_plugin_sdk::types::{
    ConfigProblem, ConnectorError, ConnectorKind, Description, StreamBatch,
};
use std::cell::RefCell;

struct Plugin;

impl Guest for Plugin {
    type Writer = Writer;

    fn describe() -> Description {
        Description {
            name: "nats-jetstream".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kind: ConnectorKind::Destination,
            summary: "Publishes events into a NATS JetStream stream; acknowledged once \
                      JetStream stored them, each once by its message id."
                .to_owned(),
            config_schema: config::SCHEMA.to_owned(),
        }
    }

    fn acknowledgement_kind() -> Acknowledgement {
        Acknowledgement::DurableCommit
    }

    fn validate_config(text: String) -> Result<(), Vec<ConfigProblem>> {
        config::parse(&text).map(drop)
    }
}

/// A member's address: `ip:port`, with or without `nats://`.
fn member_address(endpoint: &Endpoint) -> Result<String, ConnectorError> {
    let address = endpoint
        .address
        .strip_prefix("nats://")
        .unwrap_or(&endpoint.address);
    safd_plugin_sdk::tcp::parse_address(address, false).map_err(|why| {
        ConnectorError::Fatal(format!(
            "member `{}`: {why} (a NATS server's client port, default 4222)",
            endpoint.member
        ))
    })
}

struct Writer {
    member: RefCell<writer::Member>,
    agent: RefCell<String>,
}

impl GuestWriter for Writer {
    fn new(config: String, endpoint: Endpoint) -> Result<Self, ConnectorError> {
        let config = config::parse(&config).map_err(|problems| {
            ConnectorError::Fatal(safd_plugin_sdk::config::describe_problems(&problems))
        })?;
        let address = member_address(&endpoint)?;
        Ok(Self {
            member: RefCell::new(writer::Member::new(config, address, &endpoint.member)),
            agent: RefCell::new(String::new()),
        })
    }

    fn register(&self, info: SessionInfo) -> Result<Registration, ConnectorError> {
        *self.agent.borrow_mut() = info.agent_id;
        let mut member = self.member.borrow_mut();
        let found = member.open_stream()?;
        safd_plugin_sdk::log::info(&format!(
            "JetStream stream on {}: subjects {:?}, {} replicas, duplicate window {} s",
            member.address(),
            found.subjects,
            found.replicas,
            found.duplicate_window.as_secs()
        ));
        // JetStream keeps no per-agent positions safd could resume from:
        // what it holds is found by message id, so nothing is asked for.
        Ok(Registration {
            high_water: Vec::new(),
            service_ready: true,
            catch_up: None,
        })
    }

    fn deliver(&self, batches: Vec<StreamBatch>) -> Result<DeliveryReport, ConnectorError> {
        let agent = self.agent.borrow().clone();
        self.member.borrow_mut().deliver(&agent, &batches)
    }

    fn probe(&self) -> Result<Health, ConnectorError> {
        Ok(Health {
            service_ready: true,
            detail: self.member.borrow_mut().probe()?,
        })
    }
}

safd_plugin_sdk::export_destination!(Plugin);
