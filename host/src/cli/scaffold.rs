//! `safd plugins new NAME --kind source|destination`: a plugin crate that
//! builds as it is (Cargo.toml on the SDK, the manifest, `src/lib.rs` with
//! a typed config and every WIT function in its simplest correct form,
//! commented with what it must guarantee, a native unit test, a README).
//! The templates are in `scaffold/`; `tests/e2e/cli.rs` builds both kinds
//! and loads them.

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Kind {
    Source,
    Destination,
}

#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// The plugin's name: lowercase letters, digits and `-`, starting with
    /// a letter (it becomes `NAME.wasm` and `NAME.toml`).
    name: String,
    #[arg(long, value_enum)]
    kind: Kind,
    /// Where to create the crate's directory `NAME` (default: here).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The SDK crate (`plugins/sdk` of the safd sources). Default: the one
    /// this safd was built from, when it is still there.
    #[arg(long)]
    sdk: Option<PathBuf>,
}

const CARGO_TOML: &str = include_str!("scaffold/Cargo.toml.in");
const MANIFEST: &str = include_str!("scaffold/manifest.toml.in");
const README: &str = include_str!("scaffold/README.md.in");
const SOURCE: &str = include_str!("scaffold/source.rs.in");
const DESTINATION: &str = include_str!("scaffold/destination.rs.in");

pub(crate) fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    check_name(&args.name)?;
    let sdk = sdk_dir(args.sdk.as_deref())?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let parent = args
        .dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.dir.display()))?;
    let crate_dir = parent.join(&args.name);
    if crate_dir.exists() {
        bail!(
            "{} exists already; choose another name or --dir",
            crate_dir.display()
        );
    }
    let workspace = enclosing_workspace(&parent);
    let (kind, does, section, lib) = match args.kind {
        Kind::Source => ("source", "reads", "sources", SOURCE),
        Kind::Destination => ("destination", "delivers to", "groups", DESTINATION),
    };
    let endpoint = match args.kind {
        Kind::Source => "",
        Kind::Destination => {
            "\n# The form of a member's `address` (docs/plugins.md), e.g.\n\
             # [endpoint]\n# schemes = [\"http\", \"https\"]   # or: socket_address = true\n"
        }
    };
    let fill = |template: &str| {
        template
            .replace("@NAME@", &args.name)
            .replace("@CRATE@", &args.name.replace('-', "_"))
            .replace("@KIND@", kind)
            .replace("@DOES@", does)
            .replace("@SECTION@", section)
            .replace("@API@", &safd_runtime::supported_api())
            .replace("@ENDPOINT@", endpoint)
            .replace("@SDK@", &relative(&crate_dir, &sdk).display().to_string())
            .replace(
                "@WORKSPACE@",
                if workspace.is_some() {
                    "\n[lints]\nworkspace = true\n"
                } else {
                    "\n# A crate of its own, not a member of an enclosing workspace.\n[workspace]\n"
                },
            )
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        (&format!("{}.toml", args.name) as &str, fill(MANIFEST)),
        ("README.md", fill(README)),
        ("src/lib.rs", fill(lib)),
    ];
    for (path, text) in &files {
        let path = crate_dir.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "created the {kind} plugin `{}` in {}",
        args.name,
        crate_dir.display()
    );
    if let Some(manifest) = workspace {
        println!(
            "it is inside the workspace of {}: add \"{}\" to its members",
            manifest.display(),
            relative(manifest.parent().unwrap_or(&parent), &crate_dir).display()
        );
    }
    println!(
        "next: cd {} && cargo test (then see README.md)",
        crate_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        bail!(
            "`{name}` cannot be a plugin name: use lowercase letters, digits and `-`, starting \
             with a letter (e.g. `my-webhook`)"
        );
    }
    Ok(())
}

/// The SDK crate to depend on.
fn sdk_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let candidate = match given {
        Some(path) => path.to_owned(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk"),
    };
    match candidate.join("Cargo.toml").is_file() {
        true => candidate
            .canonicalize()
            .with_context(|| format!("resolving {}", candidate.display())),
        false if given.is_some() => bail!(
            "--sdk {}: no Cargo.toml there; give the `plugins/sdk` directory of the safd sources",
            candidate.display()
        ),
        false => bail!(
            "the SDK this safd was built from is not at {} any more; give --sdk with the \
             `plugins/sdk` directory of the safd sources",
            candidate.display()
        ),
    }
}

/// The `Cargo.toml` of a workspace above `dir`, if any: the new crate must
/// then be added to its members (or cargo refuses to build it).
fn enclosing_workspace(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join("Cargo.toml"))
        .find(|manifest| {
            std::fs::read_to_string(manifest)
                .ok()
                .and_then(|text| text.parse::<toml::Table>().ok())
                .is_some_and(|table| table.contains_key("workspace"))
        })
}

/// `to` relative to `from` (both absolute), so that a crate made inside
/// the safd sources keeps working when they move.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component<'_>> = from.components().collect();
    let to_parts: Vec<Component<'_>> = to.components().collect();
    let common = from
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    if common <= 1 {
        return to.to_owned();
    }
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for part in &to_parts[common..] {
        path.push(part);
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_paths_made_relative() {
        assert!(check_name("my-webhook2").is_ok());
        for bad in ["", "My", "2go", "a_b", "end-", "über"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            relative(Path::new("/w/plugins/mine"), Path::new("/w/plugins/sdk")),
            PathBuf::from("../sdk")
        );
        assert_eq!(
            relative(Path::new("/tmp/x/mine"), Path::new("/w/plugins/sdk")),
            PathBuf::from("/w/plugins/sdk")
        );
    }
}
