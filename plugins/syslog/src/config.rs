//! The plugin's configuration (JSON) and its checks.

use safd_plugin_sdk::config;
use safd_plugin_sdk::types::ConfigProblem;
use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Transport {
    /// Plain TCP; delivered = written and flushed.
    Tcp,
    /// TCP inside TLS (RFC 5425), made by safd; delivered = written and
    /// flushed, as with plain TCP.
    Tls,
    /// RELP; delivered = acknowledged by the server.
    Relp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Framing {
    /// RFC 6587 3.4.1: `LEN SP MSG`; a message may hold line breaks.
    OctetCounting,
    /// RFC 6587 3.4.2: `MSG LF`; line breaks inside a message are escaped.
    Newline,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_transport")]
    transport: Transport,
    #[serde(default = "default_framing")]
    framing: Framing,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default = "default_app_name")]
    app_name: String,
    #[serde(default = "default_facility")]
    facility: String,
    #[serde(default = "default_sd_id")]
    sd_id: String,
    #[serde(default = "default_max_message_bytes")]
    max_message_bytes: u32,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u32,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u32,
    #[serde(default = "default_relp_window")]
    relp_window: u32,
    #[serde(default)]
    tls: bool,
}

fn default_transport() -> Transport {
    Transport::Tcp
}
fn default_framing() -> Framing {
    Framing::OctetCounting
}
fn default_app_name() -> String {
    "safd".to_owned()
}
fn default_facility() -> String {
    "local0".to_owned()
}
fn default_sd_id() -> String {
    "safd@32473".to_owned()
}
fn default_max_message_bytes() -> u32 {
    8192
}
fn default_connect_timeout_ms() -> u32 {
    1000
}
fn default_timeout_ms() -> u32 {
    10_000
}
fn default_relp_window() -> u32 {
    128
}

/// The validated configuration.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) transport: Transport,
    pub(crate) framing: Framing,
    /// `None`: each event's `system` attribute, else the agent id.
    pub(crate) hostname: Option<String>,
    pub(crate) app_name: String,
    pub(crate) facility: u8,
    pub(crate) sd_id: String,
    pub(crate) max_message_bytes: usize,
    pub(crate) connect_timeout: std::time::Duration,
    pub(crate) timeout: std::time::Duration,
    pub(crate) relp_window: usize,
    /// The connection is TLS (made and checked by safd).
    pub(crate) tls: bool,
}

pub(crate) const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "transport": {"enum": ["tcp", "tls", "relp"], "default": "tcp", "description": "tcp: delivered once written and flushed; tls: the same inside TLS (RFC 5425); relp: delivered once the server acknowledged"},
    "tls": {"type": "boolean", "default": false, "description": "relp only: RELP inside TLS (for syslog over TLS, transport = \"tls\"); certificates come from grants.tls"},
    "framing": {"enum": ["octet-counting", "newline"], "default": "octet-counting", "description": "tcp and tls only (RFC 6587): octet-counting keeps line breaks; newline escapes them as #012"},
    "hostname": {"type": "string", "description": "HOSTNAME field; default: the event's `system` attribute, else safd's agent id"},
    "app_name": {"type": "string", "default": "safd", "maxLength": 48},
    "facility": {"type": "string", "default": "local0", "description": "kern, user, daemon, auth, syslog, local0 … local7, or a number 0-23"},
    "sd_id": {"type": "string", "default": "safd@32473", "description": "SD-ID of the structured-data element holding the event's attributes (name@enterprise-number)"},
    "max_message_bytes": {"type": "integer", "minimum": 480, "default": 8192, "description": "longer messages are cut at a character boundary and marked truncated=\"<original bytes>\""},
    "connect_timeout_ms": {"type": "integer", "minimum": 1, "default": 1000},
    "timeout_ms": {"type": "integer", "minimum": 1, "default": 10000, "description": "give up on a write, or on a RELP answer, after this long"},
    "relp_window": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 128, "description": "RELP: messages sent before waiting for their acknowledgements"}
  }
}"#;

pub(crate) fn parse(text: &str) -> Result<Config, Vec<ConfigProblem>> {
    let (raw, mut problems): (RawConfig, _) = config::parse_naming_unknown_keys(text, SCHEMA)?;
    let facility = safd_plugin_sdk::syslog::facility(&raw.facility).unwrap_or_else(|| {
        problems.push(ConfigProblem::new(
            "facility",
            format!(
                "unknown facility `{}`: use kern, user, mail, daemon, auth, syslog, lpr, news, \
                 uucp, cron, authpriv, ftp, local0 … local7, or a number 0-23",
                raw.facility
            ),
        ));
        16
    });
    if let Some(hostname) = &raw.hostname
        && let Err(why) = header_field(hostname, 255)
    {
        problems.push(ConfigProblem::new("hostname", why));
    }
    if let Err(why) = header_field(&raw.app_name, 48) {
        problems.push(ConfigProblem::new("app_name", why));
    }
    if let Err(why) = sd_id(&raw.sd_id) {
        problems.push(ConfigProblem::new("sd_id", why));
    }
    // RFC 5424 receivers accept at least 480 bytes.
    for (key, value, range, unit) in [
        (
            "max_message_bytes",
            raw.max_message_bytes,
            480..=(16 << 20),
            "bytes",
        ),
        (
            "connect_timeout_ms",
            raw.connect_timeout_ms,
            1..=600_000,
            "milliseconds",
        ),
        ("timeout_ms", raw.timeout_ms, 1..=3_600_000, "milliseconds"),
        ("relp_window", raw.relp_window, 1..=100_000, "messages"),
    ] {
        problems.extend(config::check_range(key, u64::from(value), range, unit));
    }
    if raw.transport == Transport::Relp && raw.framing == Framing::Newline {
        problems.push(ConfigProblem::new(
            "framing",
            "applies to transport = \"tcp\" only (RELP frames every message itself); remove it",
        ));
    }
    if raw.tls && raw.transport != Transport::Relp {
        problems.push(ConfigProblem::new(
            "tls",
            "applies to transport = \"relp\" only; for syslog over TLS (RFC 5425) write \
             transport = \"tls\" instead",
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Config {
        transport: raw.transport,
        framing: raw.framing,
        hostname: raw.hostname,
        app_name: raw.app_name,
        facility,
        sd_id: raw.sd_id,
        max_message_bytes: raw.max_message_bytes as usize,
        connect_timeout: std::time::Duration::from_millis(u64::from(raw.connect_timeout_ms)),
        timeout: std::time::Duration::from_millis(u64::from(raw.timeout_ms)),
        relp_window: raw.relp_window as usize,
        tls: raw.tls || raw.transport == Transport::Tls,
    })
}

/// RFC 5424 header fields: 1..max printable US-ASCII characters, no spaces.
fn header_field(value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max {
        return Err(format!("must be 1 to {max} characters"));
    }
    if let Some(c) = value.chars().find(|c| !matches!(c, '!'..='~')) {
        return Err(format!(
            "`{c}` is not allowed: use printable ASCII without spaces (RFC 5424)"
        ));
    }
    Ok(())
}

/// SD-ID: printable ASCII up to 32 characters without `=`, space, `]`,
/// `"`; a name without `@` is reserved to the IANA, so ask for one.
fn sd_id(value: &str) -> Result<(), String> {
    header_field(value, 32)?;
    if value.contains(['=', ']', '"']) {
        return Err("must not contain `=`, `]` or `\"`".to_owned());
    }
    if !value.contains('@') {
        return Err(format!(
            "`{value}` has no `@enterprise-number`; names without one are reserved to the \
             IANA (RFC 5424 7.2), e.g. `{value}@32473`"
        ));
    }
    Ok(())
}
