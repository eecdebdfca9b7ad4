//! `safd plugins build DIR`: a plugin crate (in or out of the safd
//! sources) built for wasm32-wasip2 and laid out as safd loads it,
//! `NAME.wasm` beside `NAME.toml`, then loaded once as safd would (the
//! manifest checked, the component compiled, `describe` called) and its
//! digest printed for pinning (`sha256 = "…"` in safd.toml).

use super::CacheArgs;
use anyhow::{Context, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// The plugin crate: its `Cargo.toml` and the `NAME.toml` manifest
    /// beside it.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Where `NAME.wasm` and `NAME.toml` go (default: DIR/target/plugin),
    /// e.g. safd's `plugin_dir`.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
}

const TARGET: &str = "wasm32-wasip2";

pub(crate) async fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let cargo_toml = args.dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&cargo_toml)
        .with_context(|| format!("{}: is this a plugin crate?", cargo_toml.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{}: not TOML", cargo_toml.display()))?;
    let Some(name) = table
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
    else {
        bail!("{}: no [package] name", cargo_toml.display());
    };
    let manifest = args.dir.join(format!("{name}.toml"));
    if !manifest.is_file() {
        bail!(
            "{} is missing: a plugin crate carries its manifest as NAME.toml beside Cargo.toml \
             (`safd plugins new` writes one)",
            manifest.display()
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = target_directory(&cargo, &args.dir)?;
    let status = Command::new(&cargo)
        .args(["build", "--release", "--target", TARGET])
        .current_dir(&args.dir)
        // The host's flags are not meant for the guest.
        .env_remove("RUSTFLAGS")
        .status()
        .context("cannot run cargo; install Rust with rustup (https://rustup.rs)")?;
    if !status.success() {
        bail!(
            "cargo build failed ({status}); if it says the {TARGET} target may not be \
             installed: rustup target add {TARGET}"
        );
    }
    let built = target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.dir.join("target").join("plugin"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let wasm = out.join(format!("{name}.wasm"));
    std::fs::copy(&built, &wasm)
        .with_context(|| format!("copying {} to {}", built.display(), wasm.display()))?;
    std::fs::copy(&manifest, out.join(format!("{name}.toml")))
        .with_context(|| format!("copying {}", manifest.display()))?;

    // Loaded as safd loads it: a manifest or component safd would refuse
    // is refused here, with the same words.
    let plugin = args.cache.runtime()?.load(&wasm)?;
    let description = plugin
        .describe()
        .await
        .with_context(|| format!("{}: describe failed", wasm.display()))?;
    println!(
        "built {} {} ({}) into {}",
        description.name,
        description.version,
        description.kind,
        out.display()
    );
    println!("sha256 {}", plugin.sha256);
    println!("pin it in safd.toml with: sha256 = \"{}\"", plugin.sha256);
    Ok(ExitCode::SUCCESS)
}

/// Where cargo puts this crate's build output (its workspace's `target/`,
/// or `CARGO_TARGET_DIR`).
fn target_directory(cargo: &std::ffi::OsStr, dir: &Path) -> anyhow::Result<PathBuf> {
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(dir)
        .output()
        .context("cannot run cargo; install Rust with rustup (https://rustup.rs)")?;
    if !output.status.success() {
        bail!(
            "cargo metadata in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata's answer")?;
    match metadata["target_directory"].as_str() {
        Some(path) => Ok(PathBuf::from(path)),
        None => bail!("cargo metadata gave no target_directory"),
    }
}
