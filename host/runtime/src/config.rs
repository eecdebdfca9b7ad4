//! What the operator decides about plugins: limits and grants.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Runtime-wide settings.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Where compiled plugin code is cached. Owned by safd: never point it
    /// at the plugin directory, which operators (and attackers) write to.
    pub cache_dir: PathBuf,
    /// Default limits for every connector instance.
    pub limits: Limits,
}

/// Per-instance resource limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum linear memory of one instance, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock limit of one call into the plugin (including the time it
    /// spends blocked in host calls).
    pub call_timeout: Duration,
    pub restart: RestartPolicy,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            call_timeout: Duration::from_secs(10),
            restart: RestartPolicy::default(),
        }
    }
}

/// When a failed instance is rebuilt, and when it is given up on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Backoff before the first rebuild; doubles with every further failure
    /// within `window`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// More than this many failures within `window` disables the instance.
    pub max_restarts: u32,
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// What the operator grants one connector instance. Anything not granted is
/// denied; a grant only takes effect if the plugin's manifest requested that
/// capability.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Host directories the plugin may read (read-only). Each is visible in
    /// the guest at the same absolute path.
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
    /// HTTP authorities (`host:port`, or `host` for the scheme's default
    /// port) the plugin may send requests to.
    #[serde(default)]
    pub http: Vec<String>,
    /// TCP addresses (`ip:port` or `host:port`) the plugin may connect to.
    #[serde(default)]
    pub tcp: Vec<String>,
    /// Local addresses (`ip:port`, e.g. `0.0.0.0:1514` or `[::]:2514`) a
    /// source plugin may listen on; exactly these, no other address or port.
    #[serde(default)]
    pub listen: Vec<String>,
    /// The files of TLS for the plugin's HTTPS requests (a CA bundle, a
    /// client certificate and key), read by safd: the plugin never sees
    /// them.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsFiles>,
}
