//! The built plugins and a runtime to load them into, for every test of
//! this binary.

use safd_runtime::{Limits, Runtime, RuntimeConfig};
use std::path::PathBuf;

/// The directory `cargo xtask plugins` builds (or `SAFD_PLUGIN_DIR`),
/// checked to hold every plugin the tests use.
pub fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("SAFD_PLUGIN_DIR")
        .map_or_else(|| super::target_dir().join("plugins"), PathBuf::from);
    for plugin in [
        "ems-reader",
        "mgmt-http",
        "syslog",
        "file-tail",
        "net-in",
        "fixture-source",
        "fixture-destination",
    ] {
        assert!(
            dir.join(format!("{plugin}.wasm")).is_file(),
            "{plugin}.wasm is not in {}; run `cargo xtask plugins` (or `cargo xtask test`)",
            dir.display()
        );
    }
    dir
}

/// The built plugin `name`'s component file.
pub fn plugin_path(name: &str) -> PathBuf {
    plugin_dir().join(format!("{name}.wasm"))
}

/// A runtime compiling into the tests' shared cache.
pub fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: super::plugin_cache(),
        limits: Limits::default(),
    })
    .unwrap()
}

/// A configuration in `dir`: file-tail on `dir/logs/app.log`, which holds
/// `lines`, as stream `app`, then `groups` (TOML text); returns its path.
pub fn file_tail_config(
    dir: &std::path::Path,
    lines: &[String],
    agent: &str,
    groups: &str,
) -> PathBuf {
    let config = dir.join("safd.toml");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
    std::fs::write(logs.join("app.log"), text).unwrap();
    std::fs::write(
        &config,
        format!(
            r#"agent_id = "{agent}"
data_dir = "{data}"
plugin_dir = "{plugins}"

[admin]
listen = "127.0.0.1:0"

[sources.app]
plugin = "file-tail"
config = {{ directory = "{logs}", pattern = "app.log", scan_interval_ms = 50 }}
grants = {{ dirs = ["{logs}"] }}
{groups}"#,
            data = dir.join("data").display(),
            plugins = plugin_dir().display(),
            logs = logs.display(),
        ),
    )
    .unwrap();
    config
}
