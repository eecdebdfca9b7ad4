//! Command-line interface.

mod admin;
mod assets;
mod conformance;
mod daemon;
mod demo;
pub mod harness;
pub mod log;
mod plugin_build;
mod plugin_try;
mod plugins;
mod scaffold;
mod systemd;
mod top;
mod verify;

use clap::{Args, Parser, Subcommand};
use safd_runtime::{Limits, Runtime, RuntimeConfig};
use std::path::PathBuf;
use std::process::ExitCode;

/// safd forwards operational events (NonStop EMS and others) to management
/// servers without losing any: every event is on disk before its source
/// moves on, and stays queued until a management server has acknowledged it,
/// across primary/backup failover, outages and restarts.
///
/// Connectors are sandboxed WebAssembly plugins: drop `<name>.wasm` and
/// `<name>.toml` into the plugin directory.
#[derive(Debug, Parser)]
#[command(name = "safd", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). The
    /// SAFD_LOG environment variable (e.g. `safd_runtime=debug`) overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Log lines as text or JSON (one object per line). Default: the
    /// configuration's `[log] format` for `run`, else text.
    #[arg(long, global = true, env = "SAFD_LOG_FORMAT", value_enum)]
    pub log_format: Option<log::LogFormat>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: sources → durable queue → destination groups, as the
    /// configuration file says, until SIGINT or SIGTERM.
    Run(daemon::ConfigArgs),
    /// Check a configuration file (including each plugin's own check of its
    /// config) without opening anything; one line per problem, with its
    /// line number and the fix.
    Check(daemon::ConfigArgs),
    /// Show a running safd's sources, queue, groups, member states and
    /// recent failover / catch-up events (its admin API).
    Status(admin::StatusArgs),
    /// A live view of a running safd, refreshed every second: ingest and
    /// delivery rates, queue fill, backlog age, member and source states
    /// (`q` quits).
    Top(top::TopArgs),
    /// Ask a running safd to replay to a group's active member, from a seq
    /// per stream or from a time.
    #[command(name = "catchup")]
    CatchUp(admin::CatchUpArgs),
    /// Check that a group's servers together hold every event safd counts
    /// as acknowledged (safd-mgmt servers): lists the seqs none holds.
    /// Exit status 1 when some are missing.
    Verify(verify::VerifyArgs),
    /// Make a running safd re-read its configuration file (like SIGHUP) and
    /// say what it changed: sources and groups added, restarted (their
    /// section or plugin file changed) or removed, and what needs a restart.
    Reload(admin::ReloadArgs),
    /// List or replay a running safd's dead letters.
    #[command(subcommand)]
    Dlq(admin::DlqCommand),
    /// List, inspect and check connector plugins.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// Run the whole product on this machine, with failures on cue.
    ///
    /// The EMS simulator, safd (ems-reader → durable queue → mgmt-http) and
    /// a primary and a backup safd-mgmt on loopback ports: kills the
    /// primary (failover), restarts it (failback), stops both (catch-up by
    /// exactly one), and counts every event.
    Demo(demo::DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell) on stdout.
    Completions(assets::CompletionsArgs),
    /// Write the man pages (safd.1, safd-COMMAND.1) into a directory.
    #[command(hide = true)]
    ManPages(assets::ManPagesArgs),
}

impl Cli {
    /// The form of the log: the flag (or its variable), else for `run` the
    /// configuration's `[log] format`, else text.
    pub fn log_format(&self) -> log::LogFormat {
        self.log_format
            .or_else(|| self.configured_log_format())
            .unwrap_or_default()
    }

    /// `[log] format` of `run`'s file, read before anything else so the
    /// first line is in the right form (an unreadable file is reported by
    /// the check that follows, in text).
    fn configured_log_format(&self) -> Option<log::LogFormat> {
        let Command::Run(args) = &self.command else {
            return None;
        };
        let text = std::fs::read_to_string(&args.config).ok()?;
        let table: toml::Table = toml::from_str(&text).ok()?;
        let log: crate::config::LogSection = table.get("log")?.clone().try_into().ok()?;
        Some(log.format)
    }

    /// The command prints safd's numbered events on stdout itself, so the
    /// log need not repeat them.
    pub fn prints_notices(&self) -> bool {
        matches!(self.command, Command::Demo(_))
    }
}

/// Options shared by commands that load plugins.
#[derive(Debug, Args)]
pub(crate) struct PluginDirArgs {
    /// Plugin directory: `<name>.wasm` components with `<name>.toml` manifests.
    #[arg(
        long = "dir",
        short = 'd',
        env = "SAFD_PLUGIN_DIR",
        default_value = "/usr/lib/safd/plugins"
    )]
    pub dir: PathBuf,
    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Where compiled plugin code is cached (created if missing; owned by
    /// safd, never the plugin directory). Default: $XDG_CACHE_HOME/safd or
    /// ~/.cache/safd.
    #[arg(long, env = "SAFD_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl CacheArgs {
    pub fn runtime(&self) -> anyhow::Result<Runtime> {
        let cache_dir = self.cache_dir.clone().unwrap_or_else(default_cache_dir);
        Ok(Runtime::new(RuntimeConfig {
            cache_dir,
            limits: Limits::default(),
        })?)
    }
}

fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("safd").join("compiled")
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => daemon::run(args).await,
        Command::Check(args) => daemon::check(args).await,
        Command::Status(args) => admin::status(args).await,
        Command::Top(args) => top::run(args).await,
        Command::CatchUp(args) => admin::catch_up(args).await,
        Command::Dlq(command) => admin::dlq(command).await,
        Command::Reload(args) => admin::reload(args).await,
        Command::Verify(args) => tokio::task::spawn_blocking(move || verify::run(args)).await?,
        Command::Plugins(command) => plugins::run(command).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Completions(args) => Ok(assets::completions(args)),
        Command::ManPages(args) => assets::man_pages(args),
    }
}
