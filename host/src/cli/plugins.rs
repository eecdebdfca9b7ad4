//! `safd plugins …`

use super::{CacheArgs, PluginDirArgs};
use anyhow::Context;
use clap::Subcommand;
use safd_connector::Acknowledgement;
use safd_runtime::{CompileOrigin, Plugin, supported_api};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(crate) enum PluginsCommand {
    /// List the plugins in a directory: name, version, kind, API version,
    /// requested capabilities, and whether compiled code is cached. Files that
    /// cannot be used are reported one line each on stderr (exit status 1).
    List(PluginDirArgs),
    /// Create a new plugin crate that builds as it is: the manifest, a typed
    /// config, every WIT function in its simplest correct form (commented
    /// with what it must guarantee), a native unit test and a README.
    New(super::scaffold::NewArgs),
    /// Build a plugin crate for wasm32-wasip2 into NAME.wasm + NAME.toml,
    /// load it as safd would, and print its SHA-256 for pinning.
    Build(super::plugin_build::BuildArgs),
    /// Run one plugin on its own in safd's sandbox: a source's events as
    /// JSON lines and a restart from its cursor, or a destination's
    /// register, deliver and probe against `--address`.
    Try(super::plugin_try::TryArgs),
    /// The conformance suite every connector must pass: describe and its
    /// schema, config problems naming their keys, a source's cursors and
    /// ids, a destination's acknowledged-through and error cases against
    /// `--address`, odd inputs that must never make it trap. Exit status 1
    /// when a check fails.
    Test(super::conformance::TestArgs),
    /// Show what one plugin says about itself, including its config schema.
    Inspect {
        /// The plugin's `.wasm` file (its `.toml` manifest must be beside it).
        file: PathBuf,
        #[command(flatten)]
        cache: CacheArgs,
    },
}

pub(crate) async fn run(command: PluginsCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginsCommand::List(args) => list(args),
        PluginsCommand::New(args) => super::scaffold::new(args),
        PluginsCommand::Build(args) => super::plugin_build::build(args).await,
        PluginsCommand::Try(args) => super::plugin_try::run(args).await,
        PluginsCommand::Test(args) => super::conformance::run(args).await,
        PluginsCommand::Inspect { file, cache } => inspect(file, cache).await,
    }
}

fn compiled(origin: CompileOrigin) -> &'static str {
    match origin {
        CompileOrigin::Cached => "yes (cached)",
        CompileOrigin::Compiled => "yes (compiled now)",
    }
}

fn list(args: PluginDirArgs) -> anyhow::Result<ExitCode> {
    let runtime = args.cache.runtime()?;
    let report = runtime.load_dir(&args.dir)?;
    let mut plugins: Vec<&Plugin> = report.plugins.iter().map(AsRef::as_ref).collect();
    plugins.sort_by(|a, b| a.name().cmp(b.name()));

    let header = [
        "NAME",
        "VERSION",
        "KIND",
        "API",
        "CAPABILITIES",
        "COMPILED",
        "SHA256",
    ];
    let rows: Vec<[String; 7]> = plugins
        .iter()
        .map(|p| {
            [
                p.name().to_owned(),
                p.manifest.version.clone(),
                p.kind().to_string(),
                p.manifest.api.clone(),
                p.manifest.capabilities.to_string(),
                compiled(p.origin).to_owned(),
                p.sha256.clone(),
            ]
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if rows.is_empty() {
        writeln!(out, "no usable plugins in {}", args.dir.display())?;
    } else {
        write_table(&mut out, &header, &rows)?;
    }
    for refused in &report.refused {
        eprintln!("refused: {refused}");
    }
    Ok(if report.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn write_table<const N: usize>(
    out: &mut impl Write,
    header: &[&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

async fn inspect(file: PathBuf, cache: CacheArgs) -> anyhow::Result<ExitCode> {
    let runtime = cache.runtime()?;
    let plugin = runtime.load(&file)?;
    let description = plugin
        .describe()
        .await
        .with_context(|| format!("{}: describe failed", file.display()))?;
    let schema = serde_json::from_str::<serde_json::Value>(&description.config_schema)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| description.config_schema.clone());
    let mut out = std::io::stdout().lock();
    writeln!(out, "file:          {}", plugin.wasm_path.display())?;
    writeln!(out, "sha256:        {}", plugin.sha256)?;
    writeln!(out, "name:          {}", description.name)?;
    writeln!(out, "version:       {}", description.version)?;
    writeln!(out, "kind:          {}", description.kind)?;
    writeln!(
        out,
        "api:           {} (this safd: {})",
        plugin.manifest.api,
        supported_api()
    )?;
    writeln!(out, "capabilities:  {}", plugin.manifest.capabilities)?;
    if let Some(endpoint) = &plugin.manifest.endpoint {
        writeln!(out, "addresses:     {endpoint}")?;
    }
    if let Some(ack) = description.acknowledgement {
        let meaning = match ack {
            Acknowledgement::DurableCommit => {
                "durable-commit (the receiver confirms it stored each event)"
            }
            Acknowledgement::TransportWrite => {
                "transport-write (WARNING: events count as delivered once written to the network; the receiver does not confirm them)"
            }
        };
        writeln!(out, "acknowledges:  {meaning}")?;
    }
    writeln!(out, "compiled:      {}", compiled(plugin.origin))?;
    writeln!(out, "summary:       {}", description.summary)?;
    if plugin.manifest.name != description.name {
        writeln!(
            out,
            "note:          the manifest calls it `{}`",
            plugin.manifest.name
        )?;
    }
    writeln!(out, "config schema:\n{schema}")?;
    Ok(ExitCode::SUCCESS)
}
