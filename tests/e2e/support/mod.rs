//! What the end-to-end tests find and start: the built binaries and
//! plugins, a `safd` process runner, a `safd-mgmt` runner, rsyslog, a
//! headless browser. Every
//! test of this binary gets them from here, and only from here.
#![allow(dead_code)]

pub mod bench;
pub mod browser;
pub mod certs;
pub mod mgmt;
pub mod nats;
pub mod plugins;
pub mod rsyslog;
pub mod safd_process;
pub mod tls_lines;

use std::path::{Path, PathBuf};

/// This workspace's `target/`, where `cargo xtask` puts the plugins and the
/// tests keep their plugin cache.
pub fn target_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target"))
}

/// The plugin compile cache shared by every test (compiling a plugin takes
/// seconds; its cached form loads in milliseconds).
pub fn plugin_cache() -> PathBuf {
    target_dir().join("test-plugin-cache")
}

/// The workspace binary `name` (`safd`, `safd-tools`, `safd-mgmt`,
/// `ems-sim`), built beside this test binary's directory: Cargo gives a
/// test the path only of its own package's binaries, and these belong to
/// others. Before the first use the workspace's binaries are brought up to
/// date (a no-op after `cargo xtask test`'s own build), so that
/// `cargo test -p safd-tests` after an edit never runs a stale `safd`.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_binaries);
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/e2e-HASH → target/debug/NAME
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing; build it with `cargo build --workspace --bins --tests` \
         (`cargo xtask test` does)",
        path.display()
    );
    path
}

/// `cargo build --workspace --bins --tests`, as `cargo xtask test` runs it
/// (the test targets make features resolve as for the tests).
fn build_binaries() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["build", "--workspace", "--bins", "--tests", "--quiet"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("running cargo to build the workspace's binaries");
    assert!(
        output.status.success(),
        "building the workspace's binaries failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `events` EMS events (format A) written by ems-sim into `logs`.
pub fn ems_sim_logs(logs: &Path, events: u32) {
    let simulated = std::process::Command::new(binary("ems-sim"))
        .arg("--dir")
        .arg(logs)
        .args(["--events", &events.to_string()])
        .output()
        .unwrap();
    assert!(
        simulated.status.success(),
        "{}",
        String::from_utf8_lossy(&simulated.stderr)
    );
}

/// A file's SHA-256 as `sha256sum` prints it (lowercase hex).
pub fn sha256_of(path: &Path) -> String {
    let output = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs");
    assert!(output.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}
