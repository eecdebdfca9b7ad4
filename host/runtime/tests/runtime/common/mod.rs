//! Shared helpers of the runtime's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use safd_connector::{
    Attribute, Endpoint, Event, MemberRole, SequencedEvent, Severity, StreamBatch,
};
use safd_runtime::{Grants, Limits, Plugin, RestartPolicy, Runtime, RuntimeConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The plugin directory built by `cargo xtask plugins`.
pub fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("SAFD_PLUGIN_DIR").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/plugins")),
        PathBuf::from,
    );
    assert!(
        dir.join("fixture-source.wasm").is_file(),
        "no built plugins in {}; run `cargo xtask plugins` (or `cargo xtask test`)",
        dir.display()
    );
    dir
}

/// Compiled code shared by all tests, so each plugin is compiled once.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/test-plugin-cache"
    ))
}

/// Limits that make failures quick to provoke.
pub fn test_limits() -> Limits {
    Limits {
        memory_bytes: 32 << 20,
        call_timeout: Duration::from_millis(500),
        restart: RestartPolicy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_restarts: 5,
            window: Duration::from_secs(60),
        },
    }
}

pub fn runtime_with(limits: Limits) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: cache_dir(),
        limits,
    })
    .unwrap()
}

pub fn runtime() -> Runtime {
    runtime_with(test_limits())
}

pub fn fixture(runtime: &Runtime, name: &str) -> Arc<Plugin> {
    runtime
        .load(&plugin_dir().join(format!("{name}.wasm")))
        .unwrap()
}

/// The primary member at `address`.
pub fn primary(address: &str) -> Endpoint {
    Endpoint {
        member: "primary".into(),
        address: address.into(),
        role: MemberRole::Primary,
    }
}

pub fn no_grants() -> Grants {
    Grants::default()
}

/// Source config with a per-poll script.
pub fn source_config(script: &[&str]) -> String {
    serde_json::json!({ "script": script, "events_per_poll": 4 }).to_string()
}

/// A batch of stream `stream` with events of the given seqs.
pub fn batch(stream: &str, seqs: std::ops::RangeInclusive<u64>) -> StreamBatch {
    StreamBatch {
        stream: stream.to_owned(),
        events: seqs
            .map(|seq| SequencedEvent {
                seq,
                event: Event {
                    id: format!("{stream}-{seq}"),
                    time: 1_710_119_830_000_000,
                    severity: Severity::Major,
                    attributes: vec![Attribute::new("subsystem", "TMF")],
                    body: "The MAT Audit Trail is critically full.".to_owned(),
                },
            })
            .collect(),
        left_out: Vec::new(),
    }
}
