//! The nats-jetstream destination against a real nats-server with
//! JetStream: every event stored once and in order, also when the server
//! or safd is killed mid-stream, and each misconfiguration a clear answer.

use crate::support::nats::{self, NatsServer};
use crate::support::plugins::{file_tail_config, plugin_dir};
use crate::support::safd_process::{run, run_with_admin, safd, status, stop_cleanly, wait_for};
use std::process::{Output, Stdio};
use std::time::Duration;

fn group(server: &str, config: &str) -> String {
    cluster_group(config, &[server.to_owned()], 0)
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

/// A stream whose duplicate window (1 s) is shorter than an outage of its
/// server: the events that waited in safd's queue through it are older
/// than the window when the server is back, and safd says so, once —
/// event 1013, which names the stream and the fix — while every event
/// still arrives once.
#[test]
fn events_older_than_the_duplicate_window_are_announced() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = NatsServer::start(&dir.path().join("nats"), &[]);
    let lines: Vec<String> = (0..40).map(|n| format!("line {n:02}")).collect();
    let config = file_tail_config(
        dir.path(),
        &lines[..20],
        "window-test",
        &group(
            &server.address,
            r#"stream = "EMS", create_stream = { duplicate_window_s = 1 }, timeout_ms = 2000"#,
        ),
    );
    let (mut daemon, admin, stderr) = run_with_admin(&config);
    wait_for(Duration::from_secs(60), "the first events", || {
        nats::count(&server.address, "EMS") >= 20
    });
    server.kill();
    append(dir.path(), &lines[20..]);
    let stored = |admin: &str| {
        status(admin)["streams"]
            .as_array()
            .and_then(|streams| streams.iter().find(|s| s["name"] == "app"))
            .and_then(|app| app["next_seq"].as_u64())
            .unwrap_or(0)
    };
    wait_for(Duration::from_secs(30), "the rest in safd's queue", || {
        stored(&admin) > 40
    });
    // No condition to wait on: the queued events must grow older than the
    // stream's one-second window while the server is away.
    std::thread::sleep(Duration::from_millis(1500));
    server.restart();
    wait_for(
        Duration::from_secs(60),
        "every event after the outage",
        || nats::count(&server.address, "EMS") >= 40,
    );
    let metrics = || {
        ureq::get(format!("http://{admin}/metrics"))
            .call()
            .map(|mut r| r.body_mut().read_to_string().unwrap_or_default())
            .unwrap_or_default()
    };
    // Once per stream while the plugin instance lives: a session reopened
    // on a fresh instance during the outage may say it again.
    wait_for(Duration::from_secs(20), "event 1013", || {
        metrics()
            .lines()
            .filter_map(|l| l.strip_prefix("safd_numbered_events_total{event_id=\"1013\"} "))
            .any(|count| count.parse::<u64>().is_ok_and(|n| n >= 1))
    });
    let log = stop_cleanly(&mut daemon, stderr);
    assert!(
        log.contains("beyond the receiver's 1 s duplicate window") && log.contains("`app`"),
        "{log}"
    );
    assert_eq!(nats::count(&server.address, "EMS"), 40);
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
/// the group's members: the stream's leader is killed (-9) once a thousand
/// events are stored, and if that was not the server safd publishes to,
/// that one too after the leader is back; the lines written after each
/// kill reach the stream (writable with two of three) through a new leader
/// or the next member, and it holds every event once and — with `window =
/// 1`, the setting for strict order through leader elections — in seq
/// order.
#[test]
fn the_stream_leader_killed_mid_stream_costs_nothing() {
    const LINES: u64 = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let mut servers = NatsServer::cluster(&dir.path().join("cluster"), 3);
    let addresses: Vec<String> = servers.iter().map(|s| s.address.clone()).collect();
    let lines: Vec<String> = (0..LINES).map(|n| format!("line {n:04}")).collect();
    let groups = cluster_group(
        "stream = \"EMS\", create_stream = { replicas = 3 }, timeout_ms = 3000, window = 1",
        &addresses,
        0,
    );
    let config = file_tail_config(dir.path(), &lines[..2_000], "cluster-test", &groups);
    let _daemon = run(&config, Stdio::null());
    wait_for(
        Duration::from_secs(120),
        "a thousand events in the stream",
        || nats::count(&addresses[1], "EMS") >= 1_000,
    );
    let leader = leader_index(&addresses[0], "EMS");
    servers[leader].kill();
    let live = addresses[(leader + 1) % 3].clone();
    append(dir.path(), &lines[2_000..3_000]);
    wait_for(
        Duration::from_secs(120),
        "the second part after the leader was killed",
        || nats::count(&live, "EMS") >= 3_000,
    );
    // The first member is the one safd publishes to while it lives.
    servers[leader].restart();
    if leader != 0 {
        wait_for(
            Duration::from_secs(60),
            "the old leader to catch up",
            || nats::replicas_current(&addresses[leader], "EMS"),
        );
        servers[0].kill();
    }
    let survivor = addresses[if leader == 1 { 2 } else { 1 }].clone();
    append(dir.path(), &lines[3_000..]);
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

/// A failover group into the cluster at `addresses` (server `nK` at
/// `addresses[K]`), every one granted, the members in order from
/// `first`; `config` is the plugin's config without its braces.
fn cluster_group(config: &str, addresses: &[String], first: usize) -> String {
    let size = addresses.len();
    let members = (0..size)
        .map(|k| {
            let server = (first + k) % size;
            format!(
                r#"{{ name = "n{server}", address = "{}" }}"#,
                addresses[server]
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let grants = addresses
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[groups.js]
mode = "failover"
plugin = "nats-jetstream"
config = {{ {config} }}
grants = {{ tcp = [{grants}] }}
members = [{members}]
streams = ["app"]
"#
    )
}

/// Which of the cluster's servers (`-n nN`) leads `stream`.
fn leader_index(address: &str, stream: &str) -> usize {
    let mut leader = None;
    wait_for(Duration::from_secs(30), "the stream's leader", || {
        leader = nats::stream_leader(address, stream);
        leader.is_some()
    });
    let leader = leader.unwrap_or_default();
    leader
        .strip_prefix('n')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a leader named {leader}"))
}

/// A fleet: fifty `safd run` processes, each its own agent with its own
/// data directory and log, into an R3 stream on a three-server cluster,
/// each agent's members in its own order (so a third of the fleet
/// publishes to each server). Lines are written in three parts; during the
/// run the stream's leader and five agents are killed (-9) and restarted.
/// At the end the stream holds, for every agent, each of its events once.
/// (With the default window an agent whose publishes failed during the
/// leader election while later ones went through has the re-sent run
/// stored after those; the test counts such agents and says so.)
#[test]
fn a_fleet_of_fifty_agents_loses_nothing_when_a_server_and_five_agents_are_killed() {
    const AGENTS: usize = 50;
    const KILLED_AGENTS: usize = 5;
    const LINES: usize = 150;
    const PARTS: [std::ops::Range<usize>; 3] = [0..60, 60..110, 110..150];
    let dir = tempfile::tempdir().unwrap();
    let mut servers = NatsServer::cluster(&dir.path().join("cluster"), 3);
    let addresses: Vec<String> = servers.iter().map(|s| s.address.clone()).collect();
    nats::create_stream(&addresses[0], "FLEET", &["safd.>"], 3);
    let lines: Vec<String> = (0..LINES).map(|n| format!("fleet event {n:03}")).collect();
    let agent_dir = |n: usize| dir.path().join(format!("agent-{n:02}"));
    let configs: Vec<std::path::PathBuf> = (0..AGENTS)
        .map(|n| {
            let groups = cluster_group("stream = \"FLEET\", timeout_ms = 3000", &addresses, n);
            std::fs::create_dir_all(agent_dir(n)).unwrap();
            file_tail_config(
                &agent_dir(n),
                &lines[PARTS[0].clone()],
                &format!("agent-{n:02}"),
                &groups,
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let mut agents: Vec<_> = configs.iter().map(|c| run(c, Stdio::null())).collect();
    let stored = |servers: &[&String]| {
        servers
            .iter()
            .map(|a| nats::count(a, "FLEET"))
            .max()
            .unwrap_or(0)
    };
    let all: Vec<&String> = addresses.iter().collect();
    wait_for(
        Duration::from_secs(240),
        "half the first part from the fleet",
        || stored(&all) as usize >= AGENTS * PARTS[0].len() / 2,
    );
    let leader = leader_index(&addresses[0], "FLEET");
    servers[leader].kill();
    let live: Vec<&String> = (0..3)
        .filter(|&k| k != leader)
        .map(|k| &addresses[k])
        .collect();
    for n in 0..AGENTS {
        append(&agent_dir(n), &lines[PARTS[1].clone()]);
    }
    for agent in agents.iter_mut().take(KILLED_AGENTS) {
        agent.kill().unwrap();
        agent.wait().unwrap();
    }
    wait_for(
        Duration::from_secs(240),
        "the second part from the agents still running",
        || stored(&live) as usize >= (AGENTS - KILLED_AGENTS) * PARTS[1].end,
    );
    servers[leader].restart();
    for (agent, config) in agents.iter_mut().zip(&configs).take(KILLED_AGENTS) {
        *agent = run(config, Stdio::null());
    }
    for n in 0..AGENTS {
        append(&agent_dir(n), &lines[PARTS[2].clone()]);
    }
    wait_for(Duration::from_secs(240), "every event of the fleet", || {
        stored(&live) as usize >= AGENTS * LINES
    });
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "fleet: {AGENTS} agents, {} events in {elapsed:.1} s, {:.0} events/s aggregate",
        AGENTS * LINES,
        (AGENTS * LINES) as f64 / elapsed
    );

    let messages = nats::messages(live[0], "FLEET");
    assert_eq!(messages.len(), AGENTS * LINES, "an event stored twice");
    let mut seqs: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for message in &messages {
        let id = message.header("Nats-Msg-Id").unwrap();
        let (agent, seq) = id.rsplit_once(":app:").unwrap();
        seqs.entry(agent.to_owned())
            .or_default()
            .push(seq.parse().unwrap());
    }
    assert_eq!(seqs.len(), AGENTS, "agents missing from the stream");
    let every: Vec<u64> = (1..=LINES as u64).collect();
    let mut reordered = 0;
    for (agent, stored) in &mut seqs {
        if !stored.is_sorted() {
            reordered += 1;
        }
        stored.sort_unstable();
        assert_eq!(stored, &every, "{agent}: an event lost or stored twice");
    }
    println!(
        "fleet: every event once; {reordered} of {AGENTS} agents had a run re-sent after \
         later events (stored out of seq order)"
    );
    drop(agents);
}
