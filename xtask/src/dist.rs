//! `cargo xtask dist`: the release files. A Debian package for safd (the
//! binary, the shipped plugins, the configuration as a conffile, the
//! hardened unit, sysusers.d / tmpfiles.d entries, shell completions and
//! man pages generated from the CLI definition, the operator docs), one
//! for safd-mgmt likewise, a tarball of both trees, and `SHA256SUMS`.
//!
//! The packages are laid out here and built with `dpkg-deb` (always on a
//! Debian system; its `--root-owner-group` gives root-owned files without
//! fakeroot), rather than with cargo-deb: the layout is a dozen lines per
//! package and the maintainer scripts are ours either way.

use crate::{build_binaries, cargo, run};
use anyhow::{Context, Result, bail};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What `dist` builds from: release binaries (what ships), or the debug
/// binaries the tests already built (quick, for the package test).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Release,
    Debug,
}

/// One package's contents beyond the common layout.
struct Package {
    name: &'static str,
    summary: &'static str,
    description: &'static str,
    /// The configuration installed under /etc/<name>/: (source in the
    /// repository, file name, mode, group).
    conffile: (&'static str, &'static str, &'static str, &'static str),
    /// Pages from `docs/` installed in /usr/share/doc/<name>/.
    docs: &'static [&'static str],
    /// Further files: (source in the repository, destination).
    extra: &'static [(&'static str, &'static str)],
    /// The arguments that print a completion script (the shell follows).
    completions: &'static [&'static str],
    man: ManPages,
}

enum ManPages {
    /// `safd man-pages DIR`: one page per command.
    IntoDirectory(&'static [&'static str]),
    /// `safd-mgmt --man-page`: one page on stdout.
    OnStdout(&'static [&'static str]),
}

const PACKAGES: [Package; 2] = [
    Package {
        name: "safd",
        summary: "store-and-forward event daemon for HPE NonStop EMS",
        description: "safd forwards operational events, first of all NonStop EMS events, to\n \
                      management servers without losing any: every event is on disk before\n \
                      its source moves on and stays queued until a server has durably\n \
                      acknowledged it, across failover, outages and restarts. Connectors\n \
                      are sandboxed WebAssembly plugins; the shipped ones are in\n \
                      /usr/lib/safd/plugins.",
        conffile: ("configs/safd.example.toml", "safd.toml", "0640", "safd"),
        docs: &[
            "operations.md",
            "deployment.md",
            "configuration.md",
            "delivery.md",
            "events.md",
            "admin.md",
            "security.md",
            "reliability.md",
            "ems-reader.md",
            "ems-formats.md",
            "file-tail.md",
            "net-in.md",
            "mgmt-http.md",
            "syslog.md",
            "nats-jetstream.md",
            "scale-out.md",
            "plugins.md",
            "plugin-guide.md",
            "protocol.md",
        ],
        extra: &[
            (
                "configs/safd-dashboard.json",
                "usr/share/doc/safd/examples/safd-dashboard.json",
            ),
            (
                "configs/safd-alerts.yml",
                "usr/share/doc/safd/examples/safd-alerts.yml",
            ),
        ],
        completions: &["completions"],
        man: ManPages::IntoDirectory(&["man-pages"]),
    },
    Package {
        name: "safd-mgmt",
        summary: "reference management server for safd",
        description: "safd-mgmt stores the events safd delivers, durably and deduplicated,\n \
                      answers registration and catch-up, and shows the events in a web\n \
                      console.",
        conffile: ("packaging/safd-mgmt.env", "safd-mgmt.env", "0600", "root"),
        docs: &["mgmt-server.md", "protocol.md"],
        extra: &[],
        completions: &["--completions"],
        man: ManPages::OnStdout(&["--man-page"]),
    },
];

const SHELLS: [(&str, &str); 3] = [
    ("bash", "usr/share/bash-completion/completions/{}"),
    ("zsh", "usr/share/zsh/vendor-completions/_{}"),
    ("fish", "usr/share/fish/vendor_completions.d/{}.fish"),
];

/// Build everything into `out` and return the files made.
pub fn dist(root: &Path, plugins: &Path, profile: Profile, out: &Path) -> Result<Vec<PathBuf>> {
    let binaries = build(root, profile)?;
    let version = version_of(&binaries.join("safd"))?;
    let arch = output_of(Command::new("dpkg").arg("--print-architecture"))?;
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
    }
    let stage = out.join("stage");
    let mut made = Vec::new();
    for package in &PACKAGES {
        let tree = stage.join(package.name);
        lay_out(root, package, &binaries, plugins, &tree)?;
        normalize_modes(&tree)?;
        write_control(root, package, &version, &arch, &tree)?;
        let deb = out.join(format!("{}_{version}_{arch}.deb", package.name));
        let mut cmd = Command::new("dpkg-deb");
        cmd.arg("--root-owner-group");
        if profile == Profile::Debug {
            // 100 MiB of debug binaries: fast beats small here.
            cmd.args(["-Zgzip", "-z1"]);
        }
        run(cmd.arg("--build").arg(&tree).arg(&deb))?;
        made.push(deb);
    }
    made.push(tarball(&stage, &version, profile, out)?);
    made.push(checksums(out, &made)?);
    std::fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    for file in &made {
        eprintln!("xtask: {}", file.display());
    }
    Ok(made)
}

/// The directory holding safd and safd-mgmt built with `profile`.
fn build(root: &Path, profile: Profile) -> Result<PathBuf> {
    let target = root.join("target");
    match profile {
        Profile::Debug => {
            build_binaries(root, &[])?;
            Ok(target.join("debug"))
        }
        Profile::Release => {
            run(cargo(root).args([
                "build",
                "--release",
                "-p",
                "safd",
                "-p",
                "safd-mgmt",
                "--bin",
                "safd",
                "--bin",
                "safd-mgmt",
            ]))?;
            Ok(target.join("release"))
        }
    }
}

/// "safd 0.1.0" → "0.1.0": the version the binary itself reports.
fn version_of(safd: &Path) -> Result<String> {
    let line = output_of(Command::new(safd).arg("--version"))?;
    match line.split_whitespace().nth(1) {
        Some(version) => Ok(version.to_owned()),
        None => bail!("`{} --version` printed {line:?}", safd.display()),
    }
}

fn output_of(cmd: &mut Command) -> Result<String> {
    let output = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !output.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn lay_out(
    root: &Path,
    package: &Package,
    binaries: &Path,
    plugins: &Path,
    tree: &Path,
) -> Result<()> {
    let name = package.name;
    let binary = binaries.join(name);
    install(&binary, &tree.join("usr/bin").join(name), 0o755)?;
    install(
        &root.join(format!("configs/{name}.service")),
        &tree.join(format!("usr/lib/systemd/system/{name}.service")),
        0o644,
    )?;
    for (kind, dir) in [("sysusers", "sysusers.d"), ("tmpfiles", "tmpfiles.d")] {
        install(
            &root.join(format!("packaging/{name}.{kind}")),
            &tree.join(format!("usr/lib/{dir}/{name}.conf")),
            0o644,
        )?;
    }
    let (source, file, _, _) = package.conffile;
    install(
        &root.join(source),
        &tree.join(format!("etc/{name}/{file}")),
        0o644,
    )?;
    let doc = tree.join(format!("usr/share/doc/{name}"));
    for page in package.docs {
        install(&root.join("docs").join(page), &doc.join(page), 0o644)?;
    }
    install(&root.join("README.md"), &doc.join("README.md"), 0o644)?;
    write(
        &doc.join("copyright"),
        &format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
             Upstream-Name: {name}\n\nFiles: *\nCopyright: the safd developers\n\
             License: Apache-2.0\n On Debian systems the full text is in\n \
             /usr/share/common-licenses/Apache-2.0.\n"
        ),
        0o644,
    )?;
    if name == "safd" {
        // The contract for plugin authors: the WIT files and the binary
        // package of them.
        let wit = tree.join("usr/share/safd/wit");
        let source = crate::wit::wit_dir(root);
        for file in ["connector.wit", "deps/io.wit", "deps/clocks.wit"] {
            install(&source.join(file), &wit.join(file), 0o644)?;
        }
        let binary = crate::wit::write(root, &wit)?;
        set_mode(&binary, 0o644)?;
    }
    for (source, destination) in package.extra {
        install(&root.join(source), &tree.join(destination), 0o644)?;
    }
    if name == "safd" {
        for plugin in shipped_plugins(root)? {
            for file in [format!("{plugin}.wasm"), format!("{plugin}.toml")] {
                install(
                    &plugins.join(&file),
                    &tree.join("usr/lib/safd/plugins").join(&file),
                    0o644,
                )?;
            }
        }
    }
    for (shell, destination) in SHELLS {
        let script = output_of(
            Command::new(&binary)
                .args(package.completions)
                .arg(shell)
                .env_remove("SAFD_MGMT_TOKEN"),
        )?;
        write(
            &tree.join(destination.replace("{}", name)),
            &(script + "\n"),
            0o644,
        )?;
    }
    let man = tree.join("usr/share/man/man1");
    std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    match package.man {
        ManPages::IntoDirectory(args) => run(Command::new(&binary).args(args).arg(&man))?,
        ManPages::OnStdout(args) => write(
            &man.join(format!("{name}.1")),
            &(output_of(Command::new(&binary).args(args))? + "\n"),
            0o644,
        )?,
    }
    // Debian ships man pages compressed; -n leaves the time out so the
    // same page gives the same bytes.
    run(Command::new("gzip")
        .args(["-9", "-n", "-f", "-r"])
        .arg(&man))
}

/// The product's plugins: the crates directly in `plugins/` (the test
/// fixtures and the plugin authors' examples live in subdirectories).
fn shipped_plugins(root: &Path) -> Result<Vec<String>> {
    let plugins_root = root.join("plugins");
    Ok(crate::plugin_crates(&plugins_root)?
        .into_iter()
        .filter(|dir| dir.parent() == Some(plugins_root.as_path()))
        .filter_map(|dir| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect())
}

fn write_control(
    root: &Path,
    package: &Package,
    version: &str,
    arch: &str,
    tree: &Path,
) -> Result<()> {
    let name = package.name;
    let debian = tree.join("DEBIAN");
    let installed_kib = output_of(
        Command::new("du")
            .args(["-sk", "--apparent-size"])
            .arg(tree),
    )?
    .split_whitespace()
    .next()
    .unwrap_or("0")
    .to_owned();
    write(
        &debian.join("control"),
        &format!(
            "Package: {name}\nVersion: {version}\nArchitecture: {arch}\n\
             Maintainer: safd developers <safd@example.invalid>\n\
             Installed-Size: {installed_kib}\nDepends: libc6 (>= 2.34), systemd | systemd-standalone-sysusers\n\
             Section: admin\nPriority: optional\n\
             Description: {}\n {}\n",
            package.summary, package.description
        ),
        0o644,
    )?;
    let (_, file, mode, group) = package.conffile;
    write(
        &debian.join("conffiles"),
        &format!("/etc/{name}/{file}\n"),
        0o644,
    )?;
    for script in ["postinst", "prerm", "postrm"] {
        let template = read(&root.join(format!("packaging/debian/{script}.in")))?;
        let text = template
            .replace("@PKG@", name)
            .replace("@CONF@", file)
            .replace("@CONF_MODE@", mode)
            .replace("@CONF_GROUP@", group);
        write(&debian.join(script), &text, 0o755)?;
    }
    Ok(())
}

/// Both packages' trees (without DEBIAN/) under `safd-VERSION/`, for
/// systems without dpkg: README "Install" says how to put it in place.
fn tarball(stage: &Path, version: &str, profile: Profile, out: &Path) -> Result<PathBuf> {
    let top = format!("safd-{version}");
    let file = out.join(format!("{top}-linux-{}.tar.gz", std::env::consts::ARCH));
    let mut cmd = Command::new("tar");
    cmd.args(["--owner=0", "--group=0", "--numeric-owner", "--sort=name"])
        .arg(format!("--transform=s,^\\.,{top},"))
        .args(["--exclude=./DEBIAN", "-I"])
        .arg(match profile {
            Profile::Debug => "gzip -1 -n",
            Profile::Release => "gzip -9 -n",
        })
        .arg("-cf")
        .arg(&file);
    for package in &PACKAGES {
        cmd.arg("-C").arg(stage.join(package.name)).arg(".");
    }
    run(&mut cmd)?;
    Ok(file)
}

/// `SHA256SUMS` in `sha256sum -c` form, names relative to `out`.
fn checksums(out: &Path, files: &[PathBuf]) -> Result<PathBuf> {
    let mut cmd = Command::new("sha256sum");
    cmd.current_dir(out);
    for file in files {
        cmd.arg(file.file_name().context("a file without a name")?);
    }
    let sums = out.join("SHA256SUMS");
    write(&sums, &(output_of(&mut cmd)? + "\n"), 0o644)?;
    Ok(sums)
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    set_mode(to, mode)
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    set_mode(to, mode)
}

/// Directories and programs 0755, other files 0644, whatever the umask
/// they were made under (safd writes its man pages with its own private
/// umask): a package's files become the system's.
fn normalize_modes(path: &Path) -> Result<()> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let executable = metadata.is_dir() || metadata.permissions().mode() & 0o100 != 0;
    set_mode(path, if executable { 0o755 } else { 0o644 })?;
    if metadata.is_dir() {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?
        {
            normalize_modes(&entry?.path())?;
        }
    }
    Ok(())
}

fn read(from: &Path) -> Result<String> {
    std::fs::read_to_string(from).with_context(|| format!("reading {}", from.display()))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}
