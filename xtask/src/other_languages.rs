//! Plugins written in other languages than Rust, in
//! `plugins/other-languages/<name>/` beside their `<name>.toml`:
//!
//! - Python (`app.py`): componentize-py, from PyPI, in a virtual
//!   environment under `target/tools/python`;
//! - JavaScript (`plugin.js`): componentize-js (StarlingMonkey), from npm,
//!   under `target/tools/js`. It is called directly rather than through
//!   `jco componentize`, whose bundled wasm-tools could not read a WIT
//!   directory here ("failed to get path metadata").
//!
//! The tools are installed when missing, at the versions pinned below, so
//! a fresh machine needs only python3 and node. A plugin is rebuilt only
//! when one of its files or the WIT changed; its native tests (`python3
//! -m unittest`, `node --test`) run with the Rust plugins' ones.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

const COMPONENTIZE_PY: &str = "0.25.1";
const COMPONENTIZE_JS: &str = "0.23.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Language {
    Python,
    JavaScript,
}

#[derive(Debug)]
struct Plugin {
    name: String,
    dir: PathBuf,
    language: Language,
    /// The WIT world: `source` or `destination`, from the manifest.
    world: String,
}

fn plugins(root: &Path) -> Result<Vec<Plugin>> {
    let base = root.join("plugins/other-languages");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(&base) else {
        return Ok(found);
    };
    for entry in entries {
        let dir = entry?.path();
        let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let manifest = dir.join(format!("{name}.toml"));
        let language = if dir.join("app.py").is_file() {
            Language::Python
        } else if dir.join("plugin.js").is_file() {
            Language::JavaScript
        } else {
            continue;
        };
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let world = if text.contains("kind = \"source\"") {
            "source"
        } else {
            "destination"
        };
        found.push(Plugin {
            name,
            dir,
            language,
            world: world.to_owned(),
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Build every such plugin into `out` (`<name>.wasm` + `<name>.toml`);
/// returns how many there are.
pub fn build(root: &Path, out: &Path) -> Result<usize> {
    let plugins = plugins(root)?;
    let wit = crate::wit::wit_dir(root);
    for plugin in &plugins {
        let wasm = out.join(format!("{}.wasm", plugin.name));
        let newest_input = newest(&[&plugin.dir, &wit])?;
        let built_at = std::fs::metadata(&wasm).and_then(|m| m.modified()).ok();
        if built_at.is_none_or(|built| built < newest_input) {
            eprintln!("xtask: building {} ({:?})", plugin.name, plugin.language);
            match plugin.language {
                Language::Python => build_python(root, plugin, &wit, &wasm)?,
                Language::JavaScript => build_javascript(root, plugin, &wit, &wasm)?,
            }
        }
        crate::copy_if_changed(
            &plugin.dir.join(format!("{}.toml", plugin.name)),
            &out.join(format!("{}.toml", plugin.name)),
        )?;
    }
    Ok(plugins.len())
}

fn build_python(root: &Path, plugin: &Plugin, wit: &Path, wasm: &Path) -> Result<()> {
    let tool = componentize_py(root)?;
    crate::run(
        Command::new(tool)
            .arg("-d")
            .arg(wit)
            .args(["-w", &plugin.world, "componentize", "app", "-p"])
            .arg(&plugin.dir)
            .arg("-o")
            .arg(wasm)
            .current_dir(&plugin.dir),
    )
}

fn build_javascript(root: &Path, plugin: &Plugin, wit: &Path, wasm: &Path) -> Result<()> {
    let tool = componentize_js(root)?;
    // componentize-js reads the sources and the WIT from where it runs:
    // a copy of both, so nothing is written into the source tree.
    let stage = root.join("target/js-build").join(&plugin.name);
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage).with_context(|| format!("creating {}", stage.display()))?;
    for entry in std::fs::read_dir(&plugin.dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "js") {
            std::fs::copy(&path, stage.join(path.file_name().unwrap_or_default()))?;
        }
    }
    copy_dir(wit, &stage.join("wit"))?;
    crate::run(
        Command::new(tool)
            .args(["plugin.js", "--wit", "wit", "--world-name", &plugin.world])
            // The plugin reaches nothing but safd's own interfaces.
            .args(["--disable", "http", "fetch-event", "-o"])
            .arg(wasm)
            .current_dir(&stage),
    )
}

/// componentize-py at the pinned version, installed into a virtual
/// environment under target/tools when missing.
fn componentize_py(root: &Path) -> Result<PathBuf> {
    let venv = root.join("target/tools/python");
    let tool = venv.join("bin/componentize-py");
    let installed = Command::new(&tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(COMPONENTIZE_PY));
    if !installed {
        eprintln!(
            "xtask: installing componentize-py {COMPONENTIZE_PY} into {}",
            venv.display()
        );
        crate::run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        crate::run(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(format!("componentize-py=={COMPONENTIZE_PY}")),
        )?;
    }
    Ok(tool)
}

/// componentize-js at the pinned version, installed with npm under
/// target/tools when missing.
fn componentize_js(root: &Path) -> Result<PathBuf> {
    let dir = root.join("target/tools/js");
    let tool = dir.join("node_modules/.bin/componentize-js");
    let installed = std::fs::read_to_string(
        dir.join("node_modules/@bytecodealliance/componentize-js/package.json"),
    )
    .is_ok_and(|text| text.contains(&format!("\"version\": \"{COMPONENTIZE_JS}\"")));
    if !installed || !tool.is_file() {
        eprintln!(
            "xtask: installing componentize-js {COMPONENTIZE_JS} into {}",
            dir.display()
        );
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("package.json"),
            format!(
                "{{\"private\": true, \"dependencies\": {{\"@bytecodealliance/componentize-js\": \"{COMPONENTIZE_JS}\"}}}}\n"
            ),
        )?;
        crate::run(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir),
        )?;
    }
    Ok(tool)
}

/// The plugins' own tests, natively: `python3 -m unittest`, `node --test`.
pub fn test_natively(root: &Path) -> Result<()> {
    for plugin in plugins(root)? {
        let mut cmd = match plugin.language {
            Language::Python => {
                let mut cmd = Command::new("python3");
                cmd.args(["-m", "unittest", "--quiet"]);
                cmd
            }
            Language::JavaScript => {
                let mut cmd = Command::new("node");
                cmd.arg("--test");
                cmd
            }
        };
        cmd.current_dir(&plugin.dir);
        crate::run(&mut cmd).with_context(|| format!("the native tests of {}", plugin.name))?;
    }
    Ok(())
}

/// The latest modification time of any file under `dirs`.
fn newest(dirs: &[&Path]) -> Result<SystemTime> {
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut pending: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name();
            if name == "__pycache__" || name == "node_modules" {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                newest = newest.max(entry.metadata()?.modified()?);
            }
        }
    }
    Ok(newest)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name() else {
            bail!("{} has no name", path.display());
        };
        if path.is_dir() {
            copy_dir(&path, &to.join(name))?;
        } else {
            std::fs::copy(&path, to.join(name))?;
        }
    }
    Ok(())
}
