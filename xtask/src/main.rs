//! Developer tasks: `cargo xtask <task>`.
//!
//! - `plugins`: install the wasm32-wasip2 target if needed, build every
//!   plugin in `plugins/` (Rust, and Python and JavaScript ones with their
//!   tools, `other_languages.rs`) and assemble `target/plugins/`
//!   (`<name>.wasm` + `<name>.toml`), a ready plugin directory;
//! - `test`: `plugins`, the plugins' native unit tests, then every test of
//!   the host workspace;
//! - `demo`: `plugins`, then safd's demo on the built plugins;
//! - `bench`: `plugins`, then the criterion benchmarks;
//! - `bench-pipeline`: `plugins`, release builds of safd, safd-mgmt and
//!   ems-sim, then `safd-tools bench` (the whole pipeline against its targets);
//!   `bench-syslog`, `bench-net-in` and `bench-nats` likewise (the last
//!   installs nats-server when missing);
//! - `dist`: `plugins`, release builds of safd and safd-mgmt, then their
//!   Debian packages, a tarball of both and `SHA256SUMS` in `target/dist/`
//!   (`dist.rs`);
//! - `wit`: the WIT package as a binary package in `target/wit/` (`wit.rs`);
//! - `soak`: `plugins`, then `safd-tools soak` (the demo pipeline under random
//!   faults for `--minutes N`, every event counted at the end).

mod dist;
mod other_languages;
mod wit;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(about = "safd developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build all plugins into target/plugins/.
    Plugins,
    /// Build the plugins, then run every test (extra args go to cargo test).
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the plugins, then run safd's demo.
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the plugins, then run the benchmarks (extra args go to cargo bench).
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the plugins and release binaries, then run `safd-tools bench` (extra
    /// args go to it; the report lands in target/bench-report).
    BenchPipeline {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the plugins and release binaries, then run `safd-tools
    /// bench-syslog` (file-tail → queue → syslog to a local receiver).
    BenchSyslog {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the plugins and release binaries, then run `safd-tools
    /// bench-net-in` (EMS text over TCP and RELP → net-in → queue → syslog
    /// to a local receiver).
    BenchNetIn {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the plugins and release binaries, then run `safd-tools
    /// bench-nats` (file-tail → queue → nats-jetstream → a local
    /// nats-server's stream; installs nats-server when missing).
    BenchNats {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the plugins and release binaries, then the Debian packages of
    /// safd and safd-mgmt, a tarball of both and SHA256SUMS.
    Dist {
        /// Package the debug binaries (quick; what the package test installs).
        #[arg(long)]
        debug: bool,
        /// Where the files go (emptied first). Default: target/dist.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write the connector WIT package as a binary package (as `wasm-tools
    /// component wit --wasm` does) into target/wit/, for non-Rust tools.
    Wit,
    /// Build the plugins, then run `safd-tools soak` (extra args go to it, e.g.
    /// `--minutes 30`; the report lands in target/soak-report).
    Soak {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

const WASM_TARGET: &str = "wasm32-wasip2";

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.task {
        Task::Plugins => build_plugins(&root).map(drop),
        Task::Wit => {
            let path = wit::write(&root, &root.join("target").join("wit"))?;
            eprintln!("xtask: {}", path.display());
            Ok(())
        }
        Task::Test { args } => {
            ensure_system_packages(&[
                ("chromium", "chromium"),
                ("chromedriver", "chromium-driver"),
                ("rsyslogd", "rsyslog"),
                ("", "rsyslog-relp"),
                ("", "rsyslog-gnutls"),
                ("tmux", "tmux"),
                ("nats-server", "nats-server"),
            ])?;
            let dir = build_plugins(&root)?;
            test_plugins_natively(&root)?;
            build_binaries(&root, &[])?;
            // The packages of the debug binaries, which the package test
            // installs (as root) and removes.
            let dist_dir = root.join("target").join("dist-test");
            dist::dist(&root, &dir, dist::Profile::Debug, &dist_dir)?;
            let mut cmd = cargo(&root);
            cmd.args(["test", "--workspace"]).args(args);
            cmd.env("SAFD_PLUGIN_DIR", &dir);
            cmd.env("SAFD_DIST_DIR", &dist_dir);
            run(&mut cmd)
        }
        Task::Demo { args } => {
            let dir = build_plugins(&root)?;
            // Not quiet: a first build takes minutes, and cargo's progress
            // says that something is happening.
            build_binaries(&root, &[])?;
            let safd = root.join("target").join("debug").join("safd");
            let mut cmd = Command::new(&safd);
            cmd.args(["demo", "--plugins"]).arg(&dir).args(args);
            run(&mut cmd)
        }
        Task::Soak { args } => {
            let dir = build_plugins(&root)?;
            // Not quiet: a first build takes minutes, and cargo's progress
            // says that something is happening.
            build_binaries(&root, &[])?;
            let target = root.join("target");
            let mut cmd = Command::new(target.join("debug").join("safd-tools"));
            cmd.args(["soak", "--plugins"])
                .arg(&dir)
                .arg("--cache-dir")
                .arg(target.join("soak-plugin-cache"))
                .arg("--out")
                .arg(target.join("soak-report"))
                .args(args);
            let status = cmd
                .status()
                .with_context(|| format!("cannot run {cmd:?}"))?;
            std::process::exit(status.code().unwrap_or(1))
        }
        Task::BenchPipeline { args } => bench_release(&root, "bench", &args),
        Task::BenchSyslog { args } => bench_release(&root, "bench-syslog", &args),
        Task::BenchNetIn { args } => bench_release(&root, "bench-net-in", &args),
        Task::BenchNats { args } => {
            ensure_system_packages(&[("nats-server", "nats-server")])?;
            bench_release(&root, "bench-nats", &args)
        }
        Task::Dist { debug, out } => {
            let dir = build_plugins(&root)?;
            let profile = if debug {
                dist::Profile::Debug
            } else {
                dist::Profile::Release
            };
            // Absolute: the tarball is made with `tar -C` into each tree.
            let out = match out {
                Some(out) => std::env::current_dir()?.join(out),
                None => root.join("target").join("dist"),
            };
            dist::dist(&root, &dir, profile, &out).map(drop)
        }
        Task::Bench { args } => {
            let dir = build_plugins(&root)?;
            let mut cmd = cargo(&root);
            cmd.args(["bench", "--workspace"]).args(args);
            cmd.env("SAFD_PLUGIN_DIR", &dir);
            run(&mut cmd)
        }
    }
}

/// Build the plugins and release binaries, then run `safd-tools <command>`
/// with the report in target/bench-report.
fn bench_release(root: &Path, command: &str, args: &[String]) -> Result<()> {
    let dir = build_plugins(root)?;
    run(cargo(root).args([
        "build",
        "--release",
        "-p",
        "safd",
        "-p",
        "safd-mgmt",
        "-p",
        "ems-sim",
    ]))?;
    let target = root.join("target");
    let mut cmd = Command::new(target.join("release").join("safd-tools"));
    cmd.args([command, "--plugins"])
        .arg(&dir)
        .arg("--cache-dir")
        .arg(target.join("bench-plugin-cache"))
        .arg("--out")
        .arg(target.join("bench-report"))
        .args(args);
    // Exit status 1 means a target was missed: the report says which;
    // that is a result, not a failure of the task.
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    std::process::exit(status.code().unwrap_or(1))
}

/// The workspace's binaries (safd, safd-tools, safd-mgmt, ems-sim) in
/// `target/debug`, which the end-to-end tests run as processes. Built with
/// the test targets so that dependency features resolve exactly as for
/// `cargo test --workspace`: a plain `cargo build -p safd` would resolve
/// them differently and compile wasmtime a second time.
pub(crate) fn build_binaries(root: &Path, extra: &[&str]) -> Result<()> {
    run(cargo(root)
        .args(["build", "--workspace", "--bins", "--tests"])
        .args(extra))
}

fn workspace_root() -> PathBuf {
    // xtask lives one level below the root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub(crate) fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context(
            "rustup is needed to install the wasm32-wasip2 target; install Rust with rustup",
        )?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    eprintln!("xtask: installing the {WASM_TARGET} target");
    run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
}

/// Install the Debian packages whose programs the tests drive (a headless
/// browser for the console test, rsyslog with RELP and TLS for the syslog
/// plugin, nats-server for the JetStream destination)
/// when missing: `(command, package)` pairs; a package without a command of
/// its own (a module) is looked up in dpkg's records.
fn ensure_system_packages(needed: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(command, package)| !on_path(command) && !dpkg_installed(package))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let root = std::env::var("USER").is_ok_and(|u| u == "root")
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let apt_get = || {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg("apt-get");
            sudo
        };
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    let mut install = apt_get();
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing);
    if run(&mut install).is_err() {
        // A fresh machine may have empty package lists.
        run(apt_get().arg("update"))?;
        run(&mut install)?;
    }
    Ok(())
}

fn on_path(command: &str) -> bool {
    // Daemons live in sbin, which a non-root PATH often lacks.
    let sbin = [PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")];
    !command.is_empty()
        && std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default()
            .iter()
            .chain(&sbin)
            .any(|dir| dir.join(command).is_file())
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Build every plugin crate that has a `<name>.toml` manifest beside its
/// `Cargo.toml`, and gather them in `target/plugins/`.
fn build_plugins(root: &Path) -> Result<PathBuf> {
    ensure_wasm_target()?;
    let plugins_root = root.join("plugins");
    let target_dir = root.join("target").join("wasm");
    let mut cmd = cargo(&plugins_root);
    cmd.args([
        "build",
        "--release",
        "--target",
        WASM_TARGET,
        "--target-dir",
    ])
    .arg(&target_dir)
    .arg("--manifest-path")
    .arg(plugins_root.join("Cargo.toml"));
    // The host build's RUSTFLAGS (if any) are not meant for the guests.
    cmd.env_remove("RUSTFLAGS");
    run(&mut cmd)?;

    let out = root.join("target").join("plugins");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let built = target_dir.join(WASM_TARGET).join("release");
    let mut count = 0;
    for crate_dir in plugin_crates(&plugins_root)? {
        let name = crate_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let manifest = crate_dir.join(format!("{name}.toml"));
        let wasm = built.join(format!("{}.wasm", name.replace('-', "_")));
        copy_if_changed(&wasm, &out.join(format!("{name}.wasm")))?;
        copy_if_changed(&manifest, &out.join(format!("{name}.toml")))?;
        count += 1;
    }
    count += other_languages::build(root, &out)?;
    eprintln!("xtask: {count} plugins in {}", out.display());
    Ok(out)
}

/// The plugins' own logic (message formats, protocol parsers, config
/// checks) has unit tests that run natively: the guest crates build for the
/// host too, and a test there is far quicker to write and to debug than one
/// through wasmtime.
fn test_plugins_natively(root: &Path) -> Result<()> {
    let plugins_root = root.join("plugins");
    let mut cmd = cargo(&plugins_root);
    cmd.args(["test", "--workspace", "--target-dir"])
        .arg(root.join("target").join("plugins-native"))
        .arg("--manifest-path")
        .arg(plugins_root.join("Cargo.toml"));
    cmd.env_remove("RUSTFLAGS");
    run(&mut cmd)?;
    other_languages::test_natively(root)
}

pub(crate) fn plugin_crates(plugins_root: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![plugins_root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if !path.is_dir() || path.ends_with("target") {
                continue;
            }
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if let Some(name) = name
                && path.join("Cargo.toml").is_file()
                && path.join(format!("{name}.toml")).is_file()
            {
                found.push(path.clone());
            }
            pending.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Copy only when the content differs, so timestamps (and the host's
/// compiled-code cache) stay put across rebuilds.
pub(crate) fn copy_if_changed(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    if std::fs::read(to).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    std::fs::write(to, bytes).with_context(|| format!("writing {}", to.display()))
}
