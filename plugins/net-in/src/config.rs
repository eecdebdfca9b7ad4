//! The plugin's configuration (JSON) and its checks.

use safd_ems::safd_event::{self, Overrides, SeverityOverride};
use safd_plugin_sdk::config::{self, check_range};
use safd_plugin_sdk::types::{ConfigProblem, Severity};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    #[serde(default = "default_transport")]
    transport: String,
    #[serde(default = "default_auto")]
    framing: String,
    #[serde(default = "default_auto")]
    format: String,
    #[serde(default = "default_max_connections")]
    max_connections: u32,
    #[serde(default = "default_max_message_bytes")]
    max_message_bytes: u32,
    #[serde(default = "default_idle_timeout_ms")]
    idle_timeout_ms: u32,
    #[serde(default = "default_severity")]
    severity: String,
    #[serde(default = "default_time_zone")]
    time_zone: String,
    #[serde(default = "default_collector")]
    collector: String,
    #[serde(default)]
    severity_overrides: Vec<SeverityOverride>,
    #[serde(default)]
    parse_ems: bool,
    #[serde(default)]
    tls: bool,
    #[serde(default = "default_max_events")]
    max_events: u32,
    #[serde(default = "default_max_bytes")]
    max_bytes: u32,
}

fn default_transport() -> String {
    "tcp".to_owned()
}
fn default_auto() -> String {
    "auto".to_owned()
}
fn default_max_connections() -> u32 {
    100
}
fn default_max_message_bytes() -> u32 {
    64 * 1024
}
fn default_idle_timeout_ms() -> u32 {
    300_000
}
fn default_time_zone() -> String {
    "UTC".to_owned()
}
fn default_collector() -> String {
    "$0".to_owned()
}
fn default_severity() -> String {
    "info".to_owned()
}
fn default_max_events() -> u32 {
    4096
}
fn default_max_bytes() -> u32 {
    4 << 20
}

/// How messages are delimited on a connection (RFC 6587).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Decided per connection by its first byte: a digit means octet
    /// counting, anything else a line.
    Auto,
    Newline,
    OctetCounting,
    /// RELP frames (`transport = "relp"`).
    Relp,
}

/// What the senders speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Messages framed by line or octet count; nothing acknowledged.
    Tcp,
    /// RELP: every message acknowledged once safd stored it.
    Relp,
}

/// How a message's text is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// RFC 5424 when it starts `<PRI>1 `, RFC 3164 when it starts `<PRI>`,
    /// else a raw line.
    Auto,
    Rfc5424,
    Rfc3164,
    Raw,
    /// NonStop EMS format A, the printing distributor's text: a header
    /// line and indented continuation lines per event (with newline
    /// framing; over RELP or octet counting, one event per message).
    Ems,
}

/// The validated configuration.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) listen: SocketAddr,
    pub(crate) transport: Transport,
    pub(crate) framing: Framing,
    pub(crate) format: Format,
    pub(crate) max_connections: usize,
    pub(crate) max_message_bytes: usize,
    pub(crate) idle_timeout: Duration,
    /// For raw lines, and for syslog messages whose priority is unreadable.
    pub(crate) severity: Severity,
    /// Format A's local times are in this zone.
    pub(crate) zone: safd_ems::Zone,
    /// The EMS collector the events are said to come from (as ems-reader's
    /// `collector`).
    pub(crate) collector: String,
    /// EMS events: severities by (subsystem, event number), as
    /// ems-reader's.
    pub(crate) overrides: Overrides,
    /// A syslog message whose text is an EMS event becomes that event.
    pub(crate) parse_ems: bool,
    /// Senders connect with TLS (done by safd with `grants.tls`).
    pub(crate) tls: bool,
    pub(crate) max_events: u32,
    pub(crate) max_bytes: u32,
}

pub(crate) const SCHEMA: &str = concat!(
    r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["listen"],
  "properties": {
    "listen": {"type": "string", "description": "ip:port to listen on, e.g. 0.0.0.0:1514; must also be in this source's grants.listen"},
    "transport": {"enum": ["tcp", "relp"], "default": "tcp", "description": "tcp: messages framed by line or octet count, nothing acknowledged; relp: rsyslog's RELP, each message acknowledged only once safd's queue stored it"},
    "tls": {"type": "boolean", "default": false, "description": "senders connect with TLS (syslog over TLS, RFC 5425, or RELP over TLS): safd does the TLS with the certificate and key of this source's grants.tls, and with grants.tls.ca_file requires client certificates that CA signed"},
    "framing": {"enum": ["auto", "newline", "octet-counting"], "default": "auto", "description": "transport tcp only (RFC 6587): auto decides per connection (a digit first means octet counting)"},
    "format": {"enum": ["auto", "rfc5424", "rfc3164", "raw", "ems"], "default": "auto", "description": "auto: RFC 5424 when a message starts <PRI>1, RFC 3164 when it starts <PRI>, else a raw line; ems: NonStop EMS format A (the printing distributor's text), events as ems-reader makes them"},
    "time_zone": {"type": "string", "default": "UTC", "description": "format ems: the zone of the printed local times: IANA name, UTC or +hh:mm"},
    "collector": {"type": "string", "default": "$0", "description": "format ems: the collector the events are attributed to, as ems-reader's collector"},
    "parse_ems": {"type": "boolean", "default": false, "description": "formats auto, rfc5424, rfc3164: a message whose text is an EMS event (format A, the printing distributor's text) becomes that event, as format ems makes it; a text that is not stays the syslog message, flagged ems_parse_error"},
    "#,
    safd_ems::severity_overrides_schema!(),
    r#",
    "max_connections": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100, "description": "further connections are closed at once (and logged)"},
    "max_message_bytes": {"type": "integer", "minimum": 480, "maximum": 16777216, "default": 65536, "description": "a longer message is cut to this size and flagged truncated=<its length>"},
    "idle_timeout_ms": {"type": "integer", "minimum": 1000, "maximum": 86400000, "default": 300000, "description": "a connection silent this long is closed"},
    "severity": {"enum": ["debug", "info", "warning", "minor", "major", "critical"], "default": "info", "description": "of raw lines"},
    "max_events": {"type": "integer", "minimum": 1, "maximum": 1000000, "default": 4096},
    "max_bytes": {"type": "integer", "minimum": 1024, "maximum": 268435456, "default": 4194304}
  }
}"#
);

pub(crate) fn parse(text: &str) -> Result<Config, Vec<ConfigProblem>> {
    let (raw, mut problems): (RawConfig, _) = config::parse_naming_unknown_keys(text, SCHEMA)?;
    let listen = raw
        .listen
        .parse::<SocketAddr>()
        .ok()
        .filter(|a| a.port() != 0);
    if listen.is_none() {
        problems.push(ConfigProblem::new(
            "listen",
            format!(
                "`{}` is not an ip:port to listen on; write e.g. 0.0.0.0:1514 or [::]:1514",
                raw.listen
            ),
        ));
    }
    let transport = match raw.transport.as_str() {
        "tcp" => Transport::Tcp,
        "relp" => Transport::Relp,
        other => {
            problems.push(ConfigProblem::new(
                "transport",
                format!("unknown transport `{other}`: use tcp or relp"),
            ));
            Transport::Tcp
        }
    };
    let framing = match raw.framing.as_str() {
        _ if transport == Transport::Relp => {
            if raw.framing != "auto" {
                problems.push(ConfigProblem::new(
                    "framing",
                    "RELP frames its messages itself: remove `framing` (it applies to \
                     transport = \"tcp\")",
                ));
            }
            Framing::Relp
        }
        "auto" => Framing::Auto,
        "newline" => Framing::Newline,
        "octet-counting" => Framing::OctetCounting,
        other => {
            problems.push(ConfigProblem::new(
                "framing",
                format!("unknown framing `{other}`: use auto, newline or octet-counting"),
            ));
            Framing::Auto
        }
    };
    let format = match raw.format.as_str() {
        "auto" => Format::Auto,
        "rfc5424" => Format::Rfc5424,
        "rfc3164" => Format::Rfc3164,
        "raw" => Format::Raw,
        "ems" => Format::Ems,
        other => {
            problems.push(ConfigProblem::new(
                "format",
                format!("unknown format `{other}`: use auto, rfc5424, rfc3164, raw or ems"),
            ));
            Format::Auto
        }
    };
    // EMS text starts with a digit (the date): `auto` would take it for
    // an octet count. Its lines are lines.
    let framing = match (format, framing) {
        (Format::Ems, Framing::Auto) => Framing::Newline,
        (_, framing) => framing,
    };
    let zone = safd_ems::Zone::parse(&raw.time_zone).unwrap_or_else(|err| {
        problems.push(ConfigProblem::new("time_zone", err.to_string()));
        safd_ems::Zone::utc()
    });
    let overrides = safd_event::overrides(&raw.severity_overrides, |i, name| {
        config::severity(&format!("severity_overrides[{i}].severity"), name)
    })
    .unwrap_or_else(|bad| {
        problems.extend(bad);
        Overrides::new()
    });
    if raw.parse_ems && matches!(format, Format::Ems | Format::Raw) {
        problems.push(ConfigProblem::new(
            "parse_ems",
            "parse_ems reads EMS events inside syslog messages: use it with format auto, \
             rfc5424 or rfc3164 (format ems reads EMS text directly)",
        ));
    }
    let severity = config::severity("severity", &raw.severity).unwrap_or_else(|problem| {
        problems.push(problem);
        Severity::Info
    });
    problems.extend(
        [
            check_range(
                "max_connections",
                raw.max_connections.into(),
                1..=10_000,
                "connections",
            ),
            check_range(
                "max_message_bytes",
                raw.max_message_bytes.into(),
                480..=16 << 20,
                "bytes",
            ),
            check_range(
                "idle_timeout_ms",
                raw.idle_timeout_ms.into(),
                1000..=86_400_000,
                "milliseconds",
            ),
            check_range("max_events", raw.max_events.into(), 1..=1_000_000, "events"),
            check_range("max_bytes", raw.max_bytes.into(), 1024..=256 << 20, "bytes"),
        ]
        .into_iter()
        .flatten(),
    );
    match listen {
        Some(listen) if problems.is_empty() => Ok(Config {
            listen,
            transport,
            framing,
            format,
            max_connections: raw.max_connections as usize,
            max_message_bytes: raw.max_message_bytes as usize,
            idle_timeout: Duration::from_millis(raw.idle_timeout_ms.into()),
            severity,
            zone,
            collector: raw.collector,
            overrides,
            parse_ems: raw.parse_ems,
            tls: raw.tls,
            max_events: raw.max_events,
            max_bytes: raw.max_bytes,
        }),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_schema_is_json_and_names_every_key() {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        assert!(schema["properties"]["severity_overrides"]["items"].is_object());
    }

    #[test]
    fn defaults_and_every_bad_key_named() {
        let config = parse(r#"{"listen": "127.0.0.1:1514"}"#).unwrap();
        assert_eq!(config.framing, Framing::Auto);
        assert_eq!(config.max_connections, 100);
        let problems = parse(
            r#"{"listen": "localhost:0", "framing": "lf", "format": "json",
                "max_connections": 0, "severity": "loud"}"#,
        )
        .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["listen", "framing", "format", "severity", "max_connections"]
        );
        assert!(parse(r#"{"listen": "0.0.0.0:1514", "port": 1}"#).is_err());
        let relp = parse(r#"{"listen": "127.0.0.1:2514", "transport": "relp"}"#).unwrap();
        assert_eq!(
            (relp.transport, relp.framing),
            (Transport::Relp, Framing::Relp)
        );
        let problems =
            parse(r#"{"listen": "127.0.0.1:2514", "transport": "relp", "framing": "newline"}"#)
                .unwrap_err();
        assert_eq!(problems[0].path, "framing");
        assert!(problems[0].message.contains("RELP frames"));
        let problems = parse(r#"{"listen": "127.0.0.1:2514", "transport": "udp"}"#).unwrap_err();
        assert_eq!(problems[0].path, "transport");
        let problems = parse(
            r#"{"listen": "127.0.0.1:2514", "format": "ems", "parse_ems": true,
                "severity_overrides": [{"subsystem": "EXPAND", "event": 45, "severity": "loud"}]}"#,
        )
        .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["severity_overrides[0].severity", "parse_ems"]);
    }
}
