//! The release files `cargo xtask dist` makes, built from the debug
//! binaries by `cargo xtask test` (in `SAFD_DIST_DIR`): the Debian packages
//! installed with dpkg on this machine, used as an operator would, and
//! removed; the tarball and the checksums. Installing needs root: where
//! that is missing the test says SKIPPED, unless SAFD_REQUIRE_ROOT_TESTS is
//! set (CI sets it).

use crate::support::{plugin_cache, sha256_of, target_dir};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const SHIPPED_PLUGINS: [&str; 5] = ["ems-reader", "file-tail", "mgmt-http", "net-in", "syslog"];

#[test]
fn the_packages_install_run_the_shipped_configuration_and_remove_cleanly() {
    let Some(dist) = dist_dir_to_install() else {
        return;
    };
    let packages = InstalledPackages::install(&dist);

    // The binaries, on PATH, say their version.
    for binary in ["safd", "safd-mgmt"] {
        let output = run(Command::new(format!("/usr/bin/{binary}")).arg("--version"));
        assert_eq!(stdout(&output).trim(), format!("{binary} {VERSION}"));
    }

    // sysusers.d made the users, tmpfiles.d the private directories; the
    // configuration, which may hold a token, is readable by the service only.
    for (user, state) in [
        ("safd", "/var/lib/safd"),
        ("safd-mgmt", "/var/lib/safd-mgmt"),
    ] {
        let uid = stdout(&run(Command::new("id").args(["-u", user])))
            .trim()
            .parse::<u32>()
            .unwrap();
        let state = std::fs::metadata(state).unwrap();
        assert_eq!((state.uid(), state.mode() & 0o777), (uid, 0o700));
    }
    let config = Path::new("/etc/safd/safd.toml");
    assert_eq!(std::fs::metadata(config).unwrap().mode() & 0o777, 0o640);
    assert_eq!(
        std::fs::metadata("/etc/safd-mgmt/safd-mgmt.env")
            .unwrap()
            .mode()
            & 0o777,
        0o600
    );
    for shipped in [
        "/usr/lib/systemd/system/safd.service",
        "/usr/lib/systemd/system/safd-mgmt.service",
        "/usr/share/man/man1/safd.1.gz",
        "/usr/share/man/man1/safd-run.1.gz",
        "/usr/share/man/man1/safd-mgmt.1.gz",
        "/usr/share/bash-completion/completions/safd",
        "/usr/share/zsh/vendor-completions/_safd-mgmt",
        "/usr/share/fish/vendor_completions.d/safd.fish",
        "/usr/share/doc/safd/operations.md",
        "/usr/share/doc/safd/examples/safd-alerts.yml",
        "/usr/share/safd/wit/connector.wit",
        "/usr/share/safd/wit/safd-connector-0.2.1.wasm",
    ] {
        assert!(Path::new(shipped).is_file(), "{shipped} is not installed");
    }

    // The shipped configuration, its placeholders filled in, passes the
    // check with the installed plugins.
    let ems = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(config).unwrap();
    assert!(shipped.contains("/var/ems/prod1"), "{shipped}");
    std::fs::write(
        config,
        shipped.replace("/var/ems/prod1", &ems.path().display().to_string()),
    )
    .unwrap();
    let check = run(installed_safd().args(["check", "-c"]).arg(config));
    assert!(stdout(&check).contains(": OK"), "{}", stdout(&check));

    // `safd plugins list` finds the installed plugins (its default
    // directory) and shows each one's digest.
    let list = stdout(&run(installed_safd().args(["plugins", "list"])));
    for plugin in SHIPPED_PLUGINS {
        let installed = Path::new("/usr/lib/safd/plugins").join(format!("{plugin}.wasm"));
        let digest = sha256_of(&installed);
        assert_eq!(
            digest,
            sha256_of(&target_dir().join("plugins").join(format!("{plugin}.wasm")))
        );
        assert!(
            list.lines()
                .any(|line| line.starts_with(plugin) && line.ends_with(&digest)),
            "{plugin} {digest} not in\n{list}"
        );
    }
    assert!(!list.contains("fixture"), "test plugins shipped:\n{list}");

    // Removed and purged: nothing of the packages is left.
    packages.purge();
    for gone in [
        "/usr/bin/safd",
        "/usr/bin/safd-mgmt",
        "/usr/lib/safd",
        "/etc/safd",
        "/etc/safd-mgmt",
        "/var/cache/safd",
        "/var/lib/safd",
        "/var/lib/safd-mgmt",
        "/usr/lib/systemd/system/safd.service",
        "/usr/share/man/man1/safd.1.gz",
        "/usr/share/safd",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left after a purge");
    }
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "safd"])
        .output()
        .unwrap();
    assert!(
        !stdout(&status).contains("installed"),
        "{}",
        stdout(&status)
    );
}

#[test]
fn the_tarball_holds_both_trees_and_the_checksums_verify() {
    let Some(dist) = dist_dir() else {
        return;
    };
    let sums = run(Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&dist));
    let verified = stdout(&sums);
    for file in [
        format!("safd_{VERSION}_"),
        format!("safd-mgmt_{VERSION}_"),
        format!("safd-{VERSION}-linux-"),
    ] {
        assert!(
            verified
                .lines()
                .any(|line| line.starts_with(&file) && line.ends_with(": OK")),
            "{file} not verified:\n{verified}"
        );
    }
    let tarball = files_starting_with(&dist, &format!("safd-{VERSION}-linux-"));
    let listing = stdout(&run(Command::new("tar").arg("-tzf").arg(&tarball[0])));
    let top = format!("safd-{VERSION}/");
    for expected in [
        "usr/bin/safd",
        "usr/bin/safd-mgmt",
        "usr/lib/safd/plugins/ems-reader.wasm",
        "etc/safd/safd.toml",
        "usr/lib/systemd/system/safd-mgmt.service",
        "usr/lib/sysusers.d/safd.conf",
    ] {
        assert!(
            listing
                .lines()
                .any(|line| line == format!("{top}{expected}")),
            "{top}{expected} not in the tarball"
        );
    }
    assert!(listing.lines().all(|line| line.starts_with(&top)));
    assert!(!listing.contains("DEBIAN"));
}

/// `safd` as installed, with the tests' plugin cache, and without the
/// test environment's plugin directory (the installed one must be used).
fn installed_safd() -> Command {
    let mut command = Command::new("/usr/bin/safd");
    command
        .env("SAFD_CACHE_DIR", plugin_cache())
        .env_remove("SAFD_PLUGIN_DIR");
    command
}

/// The installed packages, purged when dropped too (a failed assertion
/// must not leave safd installed on the machine).
struct InstalledPackages {
    purged: bool,
}

impl InstalledPackages {
    fn install(dist: &Path) -> Self {
        // What an interrupted earlier run may have left.
        purge_packages();
        let mut debs = files_starting_with(dist, &format!("safd_{VERSION}_"));
        debs.extend(files_starting_with(dist, &format!("safd-mgmt_{VERSION}_")));
        assert_eq!(debs.len(), 2, "{debs:?}");
        run(Command::new("dpkg").arg("-i").args(&debs));
        Self { purged: false }
    }

    fn purge(mut self) {
        self.purged = true;
        run(Command::new("dpkg").args(["--purge", "safd", "safd-mgmt"]));
    }
}

impl Drop for InstalledPackages {
    fn drop(&mut self) {
        if !self.purged {
            purge_packages();
        }
    }
}

fn purge_packages() {
    let _ = Command::new("dpkg")
        .args(["--purge", "safd", "safd-mgmt"])
        .output();
}

/// The release files, or `None` (SKIPPED) outside `cargo xtask test`.
fn dist_dir() -> Option<PathBuf> {
    match std::env::var_os("SAFD_DIST_DIR") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            skip_unless_required("SAFD_DIST_DIR is not set (`cargo xtask test` sets it)");
            None
        }
    }
}

/// The release files when this test may install them: as root, with dpkg.
fn dist_dir_to_install() -> Option<PathBuf> {
    let dist = dist_dir()?;
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| stdout(&o).trim() == "0");
    let dpkg = Command::new("dpkg").arg("--version").output().is_ok();
    if !(root && dpkg) {
        skip_unless_required("installing a package needs root and dpkg");
        return None;
    }
    Some(dist)
}

fn skip_unless_required(why: &str) {
    assert!(
        std::env::var_os("SAFD_REQUIRE_ROOT_TESTS").is_none(),
        "{why}, and SAFD_REQUIRE_ROOT_TESTS says this test must run"
    );
    eprintln!("SKIPPED: {why}");
}

fn files_starting_with(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(prefix))
        })
        .collect();
    found.sort();
    found
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}
