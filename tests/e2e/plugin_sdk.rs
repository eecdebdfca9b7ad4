//! The plugin SDK's helpers, through the example plugins built on them and
//! a real `safd run`: the `http` helper sends bodies a receiver that reads
//! only `Content-Length` gets whole (wasi:http alone sends them chunked,
//! and such a receiver used to get empty bodies, answer 200, and the
//! events counted as delivered).

use crate::support::plugins::file_tail_config;
use crate::support::safd_process::{run, wait_for};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The bodies of every POST, as received.
pub(crate) type Bodies = Arc<Mutex<Vec<Vec<u8>>>>;

/// An HTTP receiver as small webhooks are written: it reads the headers,
/// then exactly `Content-Length` bytes (none without it; it knows nothing
/// of chunked bodies), and answers 200.
pub(crate) fn content_length_only_receiver() -> (String, Bodies) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let bodies: Bodies = Arc::default();
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for connection in listener.incoming().flatten() {
            let kept = kept.clone();
            std::thread::spawn(move || serve(connection, &kept));
        }
    });
    (address, bodies)
}

fn serve(connection: TcpStream, bodies: &Bodies) {
    let mut reader = BufReader::new(connection.try_clone().unwrap());
    let mut writer = connection;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if request_line.starts_with("POST") {
            bodies.lock().unwrap().push(body);
        }
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

#[test]
fn the_webhook_example_delivers_whole_bodies_to_a_content_length_only_receiver() {
    const LINES: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let (address, bodies) = content_length_only_receiver();
    let lines: Vec<String> = (0..LINES).map(|n| format!("line {n:04}")).collect();
    let config = file_tail_config(
        dir.path(),
        &lines,
        "sdk-test",
        &format!(
            r#"
[groups.hook]
mode = "failover"
plugin = "webhook"
config = {{ token = "t0ken", timeout_ms = 3000 }}
grants = {{ http = ["{address}"] }}
members = [{{ name = "receiver", address = "http://{address}/hook" }}]
streams = ["app"]
"#
        ),
    );
    let _daemon = run(&config, Stdio::null());

    let received = || -> Vec<serde_json::Value> {
        bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|body| {
                // Every POST carried its whole array: none empty, none cut.
                let events: Vec<serde_json::Value> = serde_json::from_slice(body)
                    .unwrap_or_else(|e| panic!("a body that is not a JSON array ({e}): {body:?}"));
                assert!(!events.is_empty(), "an empty delivery");
                events
            })
            .collect()
    };
    wait_for(
        Duration::from_secs(60),
        "every line at the receiver",
        || received().len() >= LINES,
    );
    let events = received();
    let lines: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["body"].as_str()).collect();
    assert_eq!(lines.len(), LINES, "every line once");
    assert!(lines.contains("line 0000") && lines.contains("line 0299"));
    let first = &events[0];
    assert_eq!(first["stream"], "app");
    assert!(first["seq"].as_u64().is_some() && first["time"].as_str().is_some());
}

/// The SDK as a plugin author outside this repository gets it: `cargo
/// package` of the SDK and the event-block crate it depends on (the WIT
/// inside the SDK's package), unpacked as a registry would, a plugin made
/// by `safd plugins new` in a directory outside the tree against that
/// package, built by `safd plugins build`, passing `safd plugins test`.
#[test]
fn the_packaged_sdk_builds_a_plugin_outside_the_repository() {
    let repository = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = crate::support::target_dir();
    let packaged = target.join("sdk-package");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(&cargo)
        .args([
            "package",
            "-p",
            "safd-event-block",
            "-p",
            "safd-plugin-sdk",
            "--no-verify",
            "--allow-dirty",
            "--target-dir",
        ])
        .arg(&packaged)
        .current_dir(repository.join("plugins"))
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let vendor = dir.path().join("vendor");
    std::fs::create_dir_all(&vendor).unwrap();
    for name in ["safd-event-block", "safd-plugin-sdk"] {
        let file = packaged
            .join("package")
            .join(format!("{name}-{}.crate", env!("CARGO_PKG_VERSION")));
        let unpacked = std::process::Command::new("tar")
            .arg("xzf")
            .arg(&file)
            .arg("-C")
            .arg(&vendor)
            .status()
            .unwrap();
        assert!(unpacked.success(), "{}", file.display());
    }
    let version = env!("CARGO_PKG_VERSION");
    let sdk = vendor.join(format!("safd-plugin-sdk-{version}"));
    assert!(
        sdk.join("wit/connector.wit").is_file(),
        "the WIT is not in the SDK's package"
    );
    assert!(sdk.join("wit/deps/io.wit").is_file());
    let packaged_manifest = std::fs::read_to_string(sdk.join("Cargo.toml")).unwrap();
    assert!(
        !packaged_manifest.contains("path = \"../"),
        "the packaged SDK still points into the repository:\n{packaged_manifest}"
    );

    let safd = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(crate::support::binary("safd"))
            .args(args)
            .env("SAFD_CACHE_DIR", crate::support::plugin_cache())
            // The scaffold test's target: the SDK's dependencies compile once.
            .env("CARGO_TARGET_DIR", target.join("scaffold-test"))
            .env_remove("RUSTFLAGS")
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let made = safd(&[
        &os("plugins"),
        &os("new"),
        &os("outside"),
        &os("--kind"),
        &os("destination"),
        &os("--dir"),
        dir.path().as_os_str(),
        &os("--sdk"),
        sdk.as_os_str(),
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // As if from crates.io: the packaged SDK names event-block by version.
    let crate_dir = dir.path().join("outside");
    std::fs::create_dir_all(crate_dir.join(".cargo")).unwrap();
    std::fs::write(
        crate_dir.join(".cargo/config.toml"),
        format!(
            "[patch.crates-io]\nsafd-event-block = {{ path = \"{}\" }}\n",
            vendor.join(format!("safd-event-block-{version}")).display()
        ),
    )
    .unwrap();
    let plugins = dir.path().join("plugins");
    let built = safd(&[
        &os("plugins"),
        &os("build"),
        crate_dir.as_os_str(),
        &os("--out"),
        plugins.as_os_str(),
    ]);
    assert!(
        built.status.success(),
        "{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let tested = safd(&[
        &os("plugins"),
        &os("test"),
        plugins.join("outside.wasm").as_os_str(),
        &os("--address"),
        &os("log"),
    ]);
    let report = String::from_utf8_lossy(&tested.stdout);
    assert!(tested.status.success(), "{report}");
    assert!(report.contains("PASSED"), "{report}");
}

/// The Python and JavaScript plugins (componentize-py, componentize-js,
/// built by `cargo xtask plugins`) in a running safd: file-tail → two
/// groups, one to each, → JSON lines over TLS at two receivers; every line
/// of the file arrives at each, once, in order, with the lines' shape.
#[test]
fn python_and_javascript_plugins_deliver_every_event_from_a_running_safd() {
    const LINES: usize = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..LINES).map(|n| format!("line {n:04} ü🙂")).collect();
    let python = crate::support::tls_lines::LineReceiver::start(dir.path(), "python");
    let javascript = crate::support::tls_lines::LineReceiver::start(dir.path(), "javascript");
    let group = |name: &str, plugin: &str, receiver: &crate::support::tls_lines::LineReceiver| {
        format!(
            r#"
[groups.{name}]
mode = "failover"
plugin = "{plugin}"
config = {{ timeout_ms = 3000 }}
grants = {{ tcp = ["{address}"], tls = {{ ca_file = "{ca}" }} }}
members = [{{ name = "receiver", address = "{address}" }}]
streams = ["app"]
"#,
            address = receiver.address,
            ca = receiver.ca.display(),
        )
    };
    let config = file_tail_config(
        dir.path(),
        &lines,
        "languages-test",
        &(group("py", "python-jsonl", &python) + &group("js", "js-jsonl", &javascript)),
    );
    let _daemon = run(&config, Stdio::null());
    wait_for(
        // The first start compiles two large components (CPython, SpiderMonkey).
        Duration::from_secs(240),
        "every line at both receivers",
        || python.received().len() >= LINES && javascript.received().len() >= LINES,
    );
    for (language, receiver) in [("python", &python), ("javascript", &javascript)] {
        let lines = receiver.received();
        assert_eq!(lines.len(), LINES, "{language}: a line twice");
        for (n, line) in lines.iter().enumerate() {
            assert_eq!(line["stream"], "app", "{language}: {line}");
            assert_eq!(line["agent"], "languages-test");
            assert_eq!(
                line["seq"].as_u64(),
                Some(n as u64 + 1),
                "{language}: out of order"
            );
            assert_eq!(line["body"], format!("line {n:04} ü🙂"), "{language}");
            assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z')));
            assert!(line["id"].as_str().is_some_and(|id| !id.is_empty()));
        }
    }
}
