//! The reader's configuration (JSON).

use safd_ems::safd_event::{self, Overrides, SeverityOverride};
use safd_ems::{Format, Zone};
use safd_plugin_sdk::config;
use safd_plugin_sdk::types::ConfigProblem;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// The EMS log directory (must be granted to the plugin: grants.dirs).
    directory: String,
    format: Format,
    /// Time zone of format A's local times.
    #[serde(default = "utc")]
    time_zone: String,
    /// The node whose logs these are, e.g. `\PROD1` (part of event ids).
    system: String,
    /// The collector that writes the logs, e.g. `$0`.
    #[serde(default = "default_collector")]
    collector: String,
    #[serde(default)]
    severity_overrides: Vec<SeverityOverride>,
    /// A seek (deep catch-up) starts this many seconds earlier, like OVNM's
    /// reposition window; events already emitted in it are not emitted
    /// again.
    #[serde(default = "default_go_back")]
    go_back_secs: u32,
    #[serde(default = "default_max_events")]
    max_events: u32,
    #[serde(default = "default_max_bytes")]
    max_bytes: u32,
    /// Format A: the last event of the newest file is emitted once the
    /// file has not grown for this long (its continuation lines could
    /// otherwise still be coming). 0: only once the next event begins.
    #[serde(default = "default_settle_ms")]
    settle_ms: u32,
}

fn utc() -> String {
    "UTC".to_owned()
}
fn default_collector() -> String {
    "$0".to_owned()
}
fn default_go_back() -> u32 {
    10
}
/// As safd's own poll defaults: larger polls cost less per event (a
/// million format-B events: 3.2 s of CPU at 1 024 per poll, 2.7 s at
/// 4 096), and a poll returns what is ready, so a quiet log still yields
/// each event at once.
fn default_max_events() -> u32 {
    4096
}
fn default_max_bytes() -> u32 {
    4 << 20
}
fn default_settle_ms() -> u32 {
    2000
}

/// The validated configuration.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) directory: String,
    pub(crate) format: Format,
    pub(crate) zone: Zone,
    pub(crate) system: String,
    pub(crate) collector: String,
    /// Event number → (subsystem name in upper case, severity): looked up
    /// by number first, so an event costs no allocation to check.
    pub(crate) overrides: Overrides,
    pub(crate) go_back_micros: i64,
    pub(crate) max_events: u32,
    pub(crate) max_bytes: u32,
    /// `None`: never settle (see `settle_ms`).
    pub(crate) settle: Option<std::time::Duration>,
}

pub(crate) const SCHEMA: &str = concat!(
    r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["directory", "format", "system"],
  "properties": {
    "directory": {"type": "string", "description": "EMS log directory, granted read-only (grants.dirs)"},
    "format": {"enum": ["a", "b"], "description": "a: printing-distributor text; b: tokenized JSON Lines"},
    "time_zone": {"type": "string", "default": "UTC", "description": "format A local time: IANA name, UTC or +hh:mm"},
    "system": {"type": "string", "description": "node name, e.g. \\PROD1"},
    "collector": {"type": "string", "default": "$0"},
    "#,
    safd_ems::severity_overrides_schema!(),
    r#",
    "go_back_secs": {"type": "integer", "minimum": 0, "default": 10},
    "max_events": {"type": "integer", "minimum": 1, "default": 4096},
    "max_bytes": {"type": "integer", "minimum": 1024, "default": 4194304},
    "settle_ms": {"type": "integer", "minimum": 0, "default": 2000, "description": "format A: emit the newest file's last event once the file has been quiet this long (0: only when the next event begins)"}
  }
}"#
);

pub(crate) fn parse(text: &str) -> Result<Config, Vec<ConfigProblem>> {
    let (raw, mut problems): (RawConfig, _) = config::parse_naming_unknown_keys(text, SCHEMA)?;
    let zone = Zone::parse(&raw.time_zone).unwrap_or_else(|err| {
        problems.push(ConfigProblem::new("time_zone", err.to_string()));
        Zone::utc()
    });
    let overrides = safd_event::overrides(&raw.severity_overrides, |i, name| {
        config::severity(&format!("severity_overrides[{i}].severity"), name)
    })
    .unwrap_or_else(|bad| {
        problems.extend(bad);
        Overrides::new()
    });
    if raw.directory.trim().is_empty() {
        problems.push(ConfigProblem::new(
            "directory",
            "must name the EMS log directory",
        ));
    }
    if raw.system.trim().is_empty() {
        problems.push(ConfigProblem::new(
            "system",
            "must name the node, e.g. \\PROD1",
        ));
    }
    for (key, value, range, unit) in [
        ("max_events", raw.max_events, 1..=65_536, "events"),
        ("max_bytes", raw.max_bytes, 1_024..=(64 << 20), "bytes"),
        ("settle_ms", raw.settle_ms, 0..=3_600_000, "milliseconds"),
    ] {
        problems.extend(config::check_range(key, u64::from(value), range, unit));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Config {
        directory: raw.directory,
        format: raw.format,
        zone,
        system: raw.system,
        collector: raw.collector,
        overrides,
        go_back_micros: i64::from(raw.go_back_secs) * 1_000_000,
        max_events: raw.max_events,
        max_bytes: raw.max_bytes,
        settle: (raw.settle_ms > 0)
            .then(|| std::time::Duration::from_millis(u64::from(raw.settle_ms))),
    })
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
    fn every_bad_key_is_named_with_its_range() {
        let good = r#"{"directory": "/ems", "format": "b", "system": "\\PROD1"}"#;
        let config = parse(good).unwrap();
        assert_eq!((config.max_events, config.max_bytes), (4096, 4 << 20));
        let problems = parse(
            r#"{"directory": "/ems", "format": "b", "system": " ",
                "max_events": 0, "max_bytes": 100, "settle_ms": 4000000}"#,
        )
        .unwrap_err();
        let found: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(found[0].0, "system");
        assert_eq!(
            found[1..],
            [
                ("max_events", "is 0; give 1 to 65536 (events)"),
                ("max_bytes", "is 100; give 1024 to 67108864 (bytes)"),
                ("settle_ms", "is 4000000; give 0 to 3600000 (milliseconds)"),
            ]
        );
        assert_eq!(
            parse(r#"{"directory": "/ems", "format": "c", "system": "S"}"#).unwrap_err()[0].path,
            "format"
        );
    }
}
