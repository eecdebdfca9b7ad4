//! The nats-jetstream destination against a real nats-server with
//! JetStream: every event stored once and in order, also when the server
//! or safd is killed mid-stream, and each misconfiguration a clear answer.

use crate::support::nats::{self, NatsServer};
use crate::support::plugins::{file_tail_config, plugin_dir};
use crate::support::safd_process::{run, safd, wait_for};
use std::process::{Output, Stdio};
use std::time::Duration;

fn group(server: &str, config: &str) -> String {
    format!(
        r#"
[groups.js]
mode = "failover"
plugin = "nats-jetstream"
config = {{ {config} }}
grants = {{ tcp = ["{server}"] }}
members = [{{ name = "n1", address = "{server}" }}]
streams = ["app"]
"#
    )
}

/// 4 000 lines from file-tail, written in three parts: nats-server is
/// killed (-9) and restarted once the first events are stored, safd once
/// the second part is; the lines written after each kill can only arrive
/// through what survived it. Then the stream holds each event once (one
/// message per Nats-Msg-Id), in the order of safd's seqs, with the headers
/// the docs list.
#[test]
fn every_event_is_stored_once_and_in_order_across_kills_of_nats_server_and_safd() {
    const LINES: u64 = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let mut server = NatsServer::start(&dir.path().join("nats"), &[]);
    let lines: Vec<String> = (0..LINES).map(|n| format!("line {n:04} ü")).collect();
    let config = file_tail_config(
        dir.path(),
        &lines[..2_000],
        "nats-test",
        &group(
            &server.address,
            r#"stream = "EMS", create_stream = {}, timeout_ms = 3000"#,
        ),
    );
    let stored = |server: &NatsServer| nats::count(&server.address, "EMS");
    let mut daemon = run(&config, Stdio::null());
    wait_for(
        Duration::from_secs(120),
        "the first events in the stream",
        || stored(&server) >= 300,
    );
    server.kill_and_restart();
    append(dir.path(), &lines[2_000..3_000]);
    wait_for(Duration::from_secs(60), "the second part", || {
        stored(&server) >= 3_000
    });
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    append(dir.path(), &lines[3_000..]);
    let _daemon = run(&config, Stdio::null());
    wait_for(Duration::from_secs(120), "every event", || {
        stored(&server) >= LINES
    });

    let messages = nats::messages(&server.address, "EMS");
    assert_eq!(messages.len() as u64, LINES, "an event stored twice");
    let mut ids: Vec<&str> = messages
        .iter()
        .map(|m| m.header("Nats-Msg-Id").unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, LINES);
    for (n, message) in messages.iter().enumerate() {
        let seq = n as u64 + 1;
        assert_eq!(message.subject, "safd.nats-test.app");
        assert_eq!(
            message.header("Nats-Msg-Id"),
            Some(format!("nats-test:app:{seq}").as_str()),
            "out of order at stream seq {}",
            message.stream_seq
        );
        assert_eq!(message.header("Safd-Seq"), Some(seq.to_string().as_str()));
        assert_eq!(message.header("Safd-Severity"), Some("info"));
        assert!(
            message
                .header("Safd-Event-Id")
                .is_some_and(|id| !id.is_empty())
        );
        assert!(
            message
                .header("Safd-Time")
                .is_some_and(|t| t.ends_with('Z'))
        );
        let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(event["seq"], seq);
        assert_eq!(event["body"], format!("line {:04} ü", n));
    }
}

/// Append `lines` to the log file-tail reads (`file_tail_config`).
fn append(dir: &std::path::Path, lines: &[String]) {
    use std::io::Write;
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("logs").join("app.log"))
        .unwrap();
    let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
    log.write_all(text.as_bytes()).unwrap();
}

/// `safd plugins try` against `server` with `config`: what a destination's
/// register and delivery came to.
fn try_plugin(server: &str, config: &str, grant: bool, events: Option<&std::path::Path>) -> String {
    let mut command = safd();
    command
        .args(["plugins", "try"])
        .arg(plugin_dir().join("nats-jetstream.wasm"))
        .args(["--config", config, "--address", server]);
    if grant {
        command.args(["--grant-tcp", server]);
    }
    if let Some(events) = events {
        command.arg("--events").arg(events);
    }
    let Output { stdout, stderr, .. } = command.output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    )
}

#[test]
fn each_misconfiguration_is_one_clear_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(&dir.path().join("plain"), &[]);
    let address = server.address.as_str();

    let missing = try_plugin(address, r#"{"stream": "NOPE"}"#, true, None);
    assert!(
        missing.contains("does not exist") && missing.contains("create_stream"),
        "{missing}"
    );
    let not_granted = try_plugin(address, r#"{"stream": "EMS"}"#, false, None);
    assert!(not_granted.contains("grants.tcp"), "{not_granted}");

    let token_dir = dir.path().join("token");
    let guarded = NatsServer::start(&token_dir, &["--auth", "right-token"]);
    let refused = try_plugin(
        &guarded.address,
        r#"{"stream": "EMS", "token": "wrong-token"}"#,
        true,
        None,
    );
    assert!(
        refused.contains("unauthorized") && refused.contains("Authorization Violation"),
        "{refused}"
    );
    assert!(
        !refused.contains("wrong-token"),
        "the token was printed: {refused}"
    );

    // A server without JetStream: the same binary without -js.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut plain = std::process::Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let plain_address = format!("127.0.0.1:{port}");
    wait_for(
        Duration::from_secs(20),
        "nats-server without JetStream",
        || std::net::TcpStream::connect(&plain_address).is_ok(),
    );
    let no_js = try_plugin(&plain_address, r#"{"stream": "EMS"}"#, true, None);
    let _ = plain.kill();
    let _ = plain.wait();
    assert!(no_js.contains("no JetStream"), "{no_js}");

    // An event larger than max_payload is a dead letter with the reason;
    // the others are stored.
    let small_dir = dir.path().join("small");
    std::fs::create_dir_all(&small_dir).unwrap();
    let conf = small_dir.join("nats.conf");
    std::fs::write(&conf, "max_payload: 4096\n").unwrap();
    let small = NatsServer::start(&small_dir.join("store"), &["-c", conf.to_str().unwrap()]);
    let events = dir.path().join("events.jsonl");
    let event = |body: &str| {
        serde_json::json!({"id": format!("e-{}", body.len()), "time": "2026-12-07T10:00:00Z",
                           "severity": "major", "attributes": {}, "body": body})
        .to_string()
    };
    std::fs::write(
        &events,
        format!(
            "{}\n{}\n{}\n",
            event("small"),
            event(&"x".repeat(8000)),
            event("tail")
        ),
    )
    .unwrap();
    let oversized = try_plugin(
        &small.address,
        r#"{"stream": "EMS", "create_stream": {}}"#,
        true,
        Some(&events),
    );
    assert!(
        oversized.contains("max_payload (4096 bytes)"),
        "{oversized}"
    );
    assert_eq!(nats::count(&small.address, "EMS"), 2, "{oversized}");
}

/// A three-server JetStream cluster, an R3 stream, all three servers as
/// the group's members: the server safd publishes to is killed (-9) once
/// a thousand events are stored; the lines written after that reach the
/// stream (still writable with two of three) through the next member, and
/// it holds every event once and in order.
#[test]
fn a_cluster_member_killed_mid_stream_costs_nothing() {
    const LINES: u64 = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let mut servers = NatsServer::cluster(&dir.path().join("cluster"), 3);
    let addresses: Vec<String> = servers.iter().map(|s| s.address.clone()).collect();
    let lines: Vec<String> = (0..LINES).map(|n| format!("line {n:04}")).collect();
    let members = addresses
        .iter()
        .enumerate()
        .map(|(n, a)| format!(r#"{{ name = "n{n}", address = "{a}" }}"#))
        .collect::<Vec<_>>()
        .join(", ");
    let grants = addresses
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let groups = format!(
        r#"
[groups.js]
mode = "failover"
plugin = "nats-jetstream"
config = {{ stream = "EMS", create_stream = {{ replicas = 3 }}, timeout_ms = 3000 }}
grants = {{ tcp = [{grants}] }}
members = [{members}]
streams = ["app"]
"#
    );
    let config = file_tail_config(dir.path(), &lines[..2_000], "cluster-test", &groups);
    let _daemon = run(&config, Stdio::null());
    let survivor = addresses[1].clone();
    wait_for(
        Duration::from_secs(120),
        "a thousand events in the stream",
        || nats::count(&survivor, "EMS") >= 1_000,
    );
    // The first member is the primary safd publishes to.
    servers[0].kill();
    append(dir.path(), &lines[2_000..]);
    wait_for(
        Duration::from_secs(120),
        "every event after the failover",
        || nats::count(&survivor, "EMS") >= LINES,
    );
    let messages = nats::messages(&survivor, "EMS");
    assert_eq!(messages.len() as u64, LINES, "an event stored twice");
    for (n, message) in messages.iter().enumerate() {
        assert_eq!(
            message.header("Nats-Msg-Id"),
            Some(format!("cluster-test:app:{}", n + 1).as_str()),
            "out of order or missing at stream seq {}",
            message.stream_seq
        );
    }
}
