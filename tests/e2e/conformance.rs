//! `safd plugins test`: every plugin in this repository passes the
//! conformance suite against a working receiver or real input, and the
//! suite catches what it exists for: fixtures that skip on a cursor,
//! answer a seek without moving, acknowledge backwards or past what they
//! were given, and trap on odd input each fail, naming the check.

use crate::plugin_sdk::content_length_only_receiver;
use crate::support::mgmt;
use crate::support::plugins::plugin_dir;
use crate::support::{binary, plugin_cache};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// One run of the suite: the plugin, its working config, the other flags.
struct Case {
    plugin: &'static str,
    config: String,
    flags: Vec<String>,
}

impl Case {
    fn new(plugin: &'static str, config: serde_json::Value, flags: &[&str]) -> Self {
        Self {
            plugin,
            config: config.to_string(),
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    fn run(&self) -> Output {
        let file = plugin_dir().join(format!("{}.wasm", self.plugin));
        Command::new(binary("safd"))
            .args(["plugins", "test"])
            .arg(file)
            .args(["--config", &self.config])
            .args(&self.flags)
            .env("SAFD_CACHE_DIR", plugin_cache())
            .output()
            .unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A TCP receiver that reads and drops everything: syslog over TCP's
/// receiver as far as the suite can tell, and the fixture's networked one.
fn draining_listener() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut connection in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buffer = [0u8; 64 * 1024];
                while connection.read(&mut buffer).is_ok_and(|n| n > 0) {}
            });
        }
    });
    address
}

/// A free loopback address for a listening source.
fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Send `lines` syslog lines to `address` once something listens there.
fn send_when_listening(address: String, lines: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut connection = loop {
            match TcpStream::connect(&address) {
                Ok(connection) => break connection,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(err) => panic!("nothing listened on {address}: {err}"),
            }
        };
        let text: String = (0..lines)
            .map(|n| format!("<13>1 2026-12-06T10:00:00Z host app - - - line {n}\n"))
            .collect();
        connection.write_all(text.as_bytes()).unwrap();
    })
}

#[test]
fn every_plugin_in_the_repository_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("ems");
    crate::support::ems_sim_logs(&logs, 1500);
    let tail = dir.path().join("tail");
    std::fs::create_dir(&tail).unwrap();
    let lines: String = (0..700).map(|n| format!("line {n} of a log\n")).collect();
    std::fs::write(tail.join("app.log"), lines).unwrap();
    let server = mgmt::Server::start(&dir.path().join("mgmt"), &[]);
    let (hook, _bodies) = content_length_only_receiver();
    let syslog = draining_listener();
    let fixture = draining_listener();
    let listen = free_address();
    let lines = crate::support::tls_lines::LineReceiver::start(dir.path(), "lines");
    let nats = crate::support::nats::NatsServer::start(&dir.path().join("nats"), &[]);
    let tls_flags = [
        "--address",
        lines.address.as_str(),
        "--grant-tcp",
        lines.address.as_str(),
        "--grant-tls-ca",
        lines.ca.to_str().unwrap(),
    ];

    let cases = [
        Case::new(
            "ems-reader",
            serde_json::json!({"directory": logs, "format": "a", "system": "\\PROD1"}),
            &["--grant-dir", logs.to_str().unwrap()],
        ),
        Case::new(
            "file-tail",
            serde_json::json!({"directory": tail, "pattern": "*.log", "read_from": "beginning"}),
            &["--grant-dir", tail.to_str().unwrap()],
        ),
        Case::new(
            "net-in",
            serde_json::json!({"listen": listen}),
            &["--grant-listen", &listen],
        ),
        Case::new("fixture-source", serde_json::json!({"total": 500}), &[]),
        Case::new("hello-source", serde_json::json!({"count": 300}), &[]),
        Case::new(
            "mgmt-http",
            serde_json::json!({"token": mgmt::TOKEN}),
            &[
                "--address",
                &server.base,
                "--grant-http",
                &server.authority(),
            ],
        ),
        Case::new(
            "syslog",
            serde_json::json!({"transport": "tcp"}),
            &["--address", &syslog, "--grant-tcp", &syslog],
        ),
        Case::new(
            "webhook",
            serde_json::json!({}),
            &[
                "--address",
                &format!("http://{hook}/hook"),
                "--grant-http",
                &hook,
            ],
        ),
        Case::new(
            "fixture-destination",
            serde_json::json!({}),
            &[
                "--address",
                &format!("tcp://{fixture}"),
                "--grant-tcp",
                &fixture,
            ],
        ),
        Case::new(
            "log-destination",
            serde_json::json!({}),
            &["--address", "log"],
        ),
        Case::new(
            "nats-jetstream",
            serde_json::json!({"stream": "SUITE", "create_stream": {}}),
            &["--address", &nats.address, "--grant-tcp", &nats.address],
        ),
        Case::new("python-jsonl", serde_json::json!({}), &tls_flags),
        Case::new("js-jsonl", serde_json::json!({}), &tls_flags),
    ];
    let sender = send_when_listening(listen.clone(), 300);
    // Side by side: each run spends most of its time waiting on its
    // receiver or its quiet periods.
    let outputs: Vec<(&str, Output)> = std::thread::scope(|scope| {
        let runs: Vec<_> = cases
            .iter()
            .map(|case| (case.plugin, scope.spawn(|| case.run())))
            .collect();
        runs.into_iter()
            .map(|(plugin, run)| (plugin, run.join().unwrap()))
            .collect()
    });
    sender.join().unwrap();
    for (plugin, output) in outputs {
        let report = text(&output.stdout);
        eprintln!("{plugin}: {}", report.lines().last().unwrap_or_default());
        assert!(
            output.status.success() && report.contains("PASSED"),
            "{plugin}:\n{report}{}",
            text(&output.stderr)
        );
        assert!(!report.contains("FAIL"), "{plugin}:\n{report}");
        // Each source read events, so its cursor checks ran.
        if report.contains("(source ") {
            assert!(
                report.contains("ok   cursor round-trip") && report.contains("ok   seek"),
                "{plugin}:\n{report}"
            );
        }
        if report.contains("(destination ") {
            assert!(
                report.contains("ok   deliver: odd events"),
                "{plugin}:\n{report}"
            );
        }
    }
    assert!(server.stored() > 0);
    assert!(!lines.received().is_empty());
}

#[test]
fn the_suite_fails_plugins_that_skip_ignore_a_seek_acknowledge_wrongly_or_trap_on_odd_input() {
    let fixture = draining_listener();
    let address = format!("tcp://{fixture}");
    let destination = |config: serde_json::Value| {
        Case::new(
            "fixture-destination",
            config,
            &[
                "--address",
                &address,
                "--grant-tcp",
                &fixture,
                "--seed",
                "5",
            ],
        )
    };
    let cases = [
        (
            Case::new(
                "fixture-source",
                serde_json::json!({"total": 500, "cursor_skip": 3}),
                &[],
            ),
            "FAIL cursor round-trip: opened from the cursor after event 256, the read does not \
             go on with event 257: it skipped 3 events",
        ),
        (
            Case::new(
                "fixture-source",
                serde_json::json!({"total": 500, "seek_ignored": true}),
                &[],
            ),
            "FAIL seek: seek answered ok but nothing was read again",
        ),
        (
            destination(serde_json::json!({"ack_backwards": true})),
            "FAIL deliver: acknowledged-through: acknowledged-through of `conformance-",
        ),
        (
            destination(serde_json::json!({"ack_beyond": 2})),
            "through 52, past the last seq it was given (50)",
        ),
        (
            destination(serde_json::json!({"trap_on_odd_input": true})),
            "FAIL deliver: odd events: the batch of seqs 181–200: trapped",
        ),
        (
            // Nothing listens at the address: the fixture says unavailable,
            // so a working receiver is missing and registering fails.
            Case::new(
                "fixture-destination",
                serde_json::json!({}),
                &["--address", &format!("tcp://{}", free_address())],
            ),
            "FAIL register: a working receiver refused it with unavailable",
        ),
    ];
    let outputs: Vec<Output> = std::thread::scope(|scope| {
        let runs: Vec<_> = cases
            .iter()
            .map(|(case, _)| scope.spawn(|| case.run()))
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    for ((case, expected), output) in cases.iter().zip(outputs) {
        let report = text(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{} {}:\n{report}",
            case.plugin,
            case.config
        );
        assert!(
            report.contains(expected),
            "{} {}: expected {expected:?} in\n{report}",
            case.plugin,
            case.config
        );
        assert!(report.contains("FAILED:"), "{report}");
    }
}
