//! The `syslog` destination plugin, run by safd's real runtime, against a
//! real rsyslog (imtcp + imrelp) on loopback: RFC 5424 fields and
//! structured data as rsyslog parsed them, both TCP framings, RELP through
//! a `kill -9` of rsyslog, long messages, the sandbox's grant check, and
//! both over TLS (made by safd) against rsyslog's GnuTLS driver.

use crate::support::plugins::{plugin_path, runtime};

use crate::support::certs::{Issued, TestCa};
use crate::support::rsyslog::{Rsyslog, ServerTls};
use crate::support::safd_process::{run_with_admin, safd, stop_cleanly, wait_for};
use safd_connector::{
    Attribute, ConnectorError, DestinationConnector, DestinationSession, Endpoint, Event,
    MemberRole, SequencedEvent, SessionError, SessionInfo, Severity, StreamBatch,
};
use safd_runtime::{Grants, TlsFiles};
use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

async fn open(
    config: serde_json::Value,
    address: SocketAddr,
    granted: bool,
) -> Box<dyn DestinationSession> {
    let grants = Grants {
        tcp: if granted {
            vec![address.to_string()]
        } else {
            Vec::new()
        },
        ..Grants::default()
    };
    open_with(config, &address.to_string(), &grants).await
}

async fn open_with(
    config: serde_json::Value,
    address: &str,
    grants: &Grants,
) -> Box<dyn DestinationSession> {
    let runtime = runtime();
    let plugin = runtime.load(&plugin_path("syslog")).unwrap();
    let destination = plugin
        .destination("siem", config.to_string(), grants)
        .await
        .unwrap();
    destination
        .open(Endpoint {
            member: "primary".into(),
            address: address.to_owned(),
            role: MemberRole::Primary,
        })
        .await
        .unwrap()
}

fn info() -> SessionInfo {
    SessionInfo {
        agent_id: "prod1-safd".into(),
        group: "siem".into(),
        epoch: 1,
        active: true,
        ..SessionInfo::default()
    }
}

fn event(seq: u64) -> SequencedEvent {
    SequencedEvent {
        seq,
        event: Event {
            id: format!("\\PROD1:$0:ZZEV0001:{}", seq * 100),
            time: 1_763_800_000_123_456 + seq as i64 * 1000,
            severity: if seq.is_multiple_of(2) {
                Severity::Major
            } else {
                Severity::Info
            },
            attributes: vec![
                Attribute::new("system", "\\PROD1"),
                Attribute::new("process", "$ZTM00"),
                Attribute::new("subsystem", "TMF"),
                Attribute::new("event_number", "187"),
                Attribute::new("note", "quote \" backslash \\ bracket ]"),
            ],
            body: format!("The MAT Audit Trail is critically full #{seq}\n  continued line"),
        },
    }
}

fn batch(seqs: std::ops::RangeInclusive<u64>) -> [StreamBatch; 1] {
    [StreamBatch {
        stream: "ems".into(),
        events: seqs.map(event).collect(),
        left_out: Vec::new(),
    }]
}

/// The structured data as rsyslog's mmpstrucdata parsed it.
fn sd(message: &serde_json::Value) -> serde_json::Value {
    let text = message["sd"]
        .as_str()
        .unwrap_or_else(|| panic!("no SD in {message}"));
    serde_json::from_str::<serde_json::Value>(text).unwrap()["safd@32473"].clone()
}

fn seq_of(message: &serde_json::Value) -> u64 {
    sd(message)["seq"]
        .as_str()
        .and_then(|seq| seq.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {message}"))
}

#[tokio::test]
async fn octet_counted_tcp_delivers_rfc5424_with_the_attributes_as_structured_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = Rsyslog::start(dir.path());
    let mut session = open(serde_json::json!({}), server.tcp, true).await;
    session.register(&info()).await.unwrap();
    let report = session.deliver(&batch(1..=200)).await.unwrap();
    assert_eq!(report.acknowledged[0].seq, 200, "tcp: written = delivered");

    let messages = server.wait_for(200, Duration::from_secs(20));
    assert_eq!(messages.len(), 200, "every message arrived once");
    let first = &messages[0];
    assert_eq!(first["hostname"], "\\PROD1", "{first}");
    assert_eq!(first["app"], "safd");
    assert_eq!(first["procid"], "$ZTM00");
    assert_eq!(first["msgid"], "TMF-187");
    // local0 (16) * 8 + informational (6); seq 2 is major → crit (2).
    assert_eq!(first["pri"], "134");
    assert_eq!(messages[1]["pri"], "130");
    assert_eq!(first["time"], "2025-11-22T08:26:40.124456Z");
    let sd = sd(first);
    assert_eq!(sd["id"], "\\PROD1:$0:ZZEV0001:100");
    assert_eq!(sd["stream"], "ems");
    assert_eq!(sd["seq"], "1");
    assert_eq!(sd["subsystem"], "TMF");
    assert_eq!(sd["event_number"], "187");
    assert_eq!(sd["note"], "quote \" backslash \\ bracket ]");
    // Octet counting keeps the line break inside the message (rsyslog's
    // own input escaping turns the control character into #012).
    let msg = first["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("The MAT Audit Trail is critically full #1"),
        "{msg}"
    );
    assert!(msg.ends_with("continued line"), "{msg}");
    let seqs: Vec<u64> = messages.iter().map(seq_of).collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>(), "in order");
}

#[tokio::test]
async fn newline_framing_escapes_line_breaks_so_each_event_stays_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = Rsyslog::start(dir.path());
    let config = serde_json::json!({"framing": "newline", "hostname": "nonstop-gw", "app_name": "ems", "facility": "local3"});
    let mut session = open(config, server.tcp, true).await;
    session.register(&info()).await.unwrap();
    // A tailed file whose name holds a line break and a forged message: in
    // an attribute, as file-tail reports it.
    let forged = "app.log\n<13>1 2025-01-01T00:00:00Z forged app - - - injected\r";
    let mut batches = batch(1..=50);
    batches[0].events = (1..=50)
        .map(|seq| {
            let mut event = event(seq);
            event
                .event
                .attributes
                .push(Attribute::new("log_file", forged));
            event
        })
        .collect();
    session.deliver(&batches).await.unwrap();
    let messages = server.wait_for(50, Duration::from_secs(20));
    assert_eq!(messages.len(), 50, "a line break did not split a message");
    assert!(
        messages.iter().all(|m| m["hostname"] == "nonstop-gw"),
        "a forged message got through: {messages:?}"
    );
    assert_eq!(messages[0]["app"], "ems");
    assert_eq!(messages[0]["pri"], (19 * 8 + 6).to_string());
    let msg = messages[0]["msg"].as_str().unwrap();
    assert!(msg.contains("#1#012  continued line"), "{msg}");
    assert_eq!(
        sd(&messages[0])["log_file"],
        "app.log#012<13>1 2025-01-01T00:00:00Z forged app - - - injected#015"
    );
}

#[tokio::test]
async fn a_message_longer_than_the_limit_is_cut_and_marked_never_split_or_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let server = Rsyslog::start(dir.path());
    let config = serde_json::json!({"transport": "relp", "max_message_bytes": 1024});
    let mut session = open(config, server.relp, true).await;
    session.register(&info()).await.unwrap();
    let mut long = event(1);
    long.event.body = "é".repeat(3000);
    let report = session
        .deliver(&[StreamBatch {
            stream: "ems".into(),
            events: vec![long, event(2)].into(),
            left_out: Vec::new(),
        }])
        .await
        .unwrap();
    assert_eq!(report.acknowledged[0].seq, 2);
    let messages = server.wait_for(2, Duration::from_secs(20));
    assert_eq!(messages.len(), 2);
    assert_eq!(sd(&messages[0])["truncated"], "6000", "{}", messages[0]);
    let msg = messages[0]["msg"].as_str().unwrap();
    assert!(msg.len() < 1024 && msg.chars().all(|c| c == 'é'), "{msg}");
    assert_eq!(seq_of(&messages[1]), 2);
}

/// Deliver 1..=last the way safd's engine does: resend from the
/// acknowledged position after an error, re-registering first.
async fn deliver_all(session: &mut Box<dyn DestinationSession>, last: u64, chunk: u64) {
    let mut next = 1;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut registered = false;
    while next <= last {
        assert!(Instant::now() < deadline, "stuck at seq {next}");
        if !registered {
            if session.register(&info()).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            registered = true;
        }
        match session
            .deliver(&batch(next..=(next + chunk - 1).min(last)))
            .await
        {
            Ok(report) => {
                if let Some(ack) = report.acknowledged.first() {
                    next = ack.seq + 1;
                }
            }
            Err(SessionError::Connector(
                ConnectorError::Unavailable(_) | ConnectorError::Transient(_),
            )) => registered = false,
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
}

#[tokio::test]
async fn relp_loses_nothing_when_rsyslog_is_killed_mid_stream_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Rsyslog::start(dir.path());
    let config = serde_json::json!({"transport": "relp", "relp_window": 64, "timeout_ms": 3000});
    let mut session = open(config, server.relp, true).await;
    deliver_through_a_kill(
        &mut session,
        server,
        dir.path().join("messages.jsonl"),
        20_000,
        2_000_000,
    )
    .await;
}

/// Deliver 1..=`last` over RELP while `server` is killed (-9) once its
/// file holds `kill_at` bytes and started again on the same ports; then
/// every event is at the server (some twice: resends).
async fn deliver_through_a_kill(
    session: &mut Box<dyn DestinationSession>,
    mut server: Rsyslog,
    messages: PathBuf,
    last: u64,
    kill_at: u64,
) {
    let killer = std::thread::spawn(move || {
        // Kill while the stream is flowing, then restart on the same port.
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::metadata(&messages).map_or(0, |m| m.len()) < kill_at {
            assert!(Instant::now() < deadline, "delivery never got going");
            std::thread::sleep(Duration::from_millis(2));
        }
        server.kill();
        std::thread::sleep(Duration::from_millis(300));
        server.restart();
        server
    });
    deliver_all(session, last, 500).await;
    let server = killer.join().unwrap();
    let messages = server.wait_for(last as usize, Duration::from_secs(20));
    let mut seqs: Vec<u64> = messages.iter().map(seq_of).collect();
    let received = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "every acknowledged event is at rsyslog after the kill ({received} messages with resends)"
    );
}

/// A CA, a certificate for `localhost` for rsyslog, a client certificate
/// for safd, and a TLS rsyslog using them.
fn tls_rsyslog(dir: &Path) -> (Rsyslog, TestCa, Issued) {
    let ca = TestCa::new(dir, "site");
    let server = ca.server(dir, "rsyslog", &["localhost"]);
    let client = ca.client(dir, "safd");
    let rsyslog = Rsyslog::start_tls(
        &dir.join("rsyslog"),
        ServerTls {
            ca: ca.pem.clone(),
            cert: server.cert,
            key: server.key,
        },
    );
    (rsyslog, ca, client)
}

/// `grants.tcp` naming `address`, and the TLS files.
fn tls_grants(address: &str, ca: &Path, client: Option<&Issued>) -> Grants {
    Grants {
        tcp: vec![address.to_owned()],
        tls: Some(TlsFiles {
            ca_file: Some(ca.to_owned()),
            cert_file: client.map(|c| c.cert.clone()),
            key_file: client.map(|c| c.key.clone()),
        }),
        ..Grants::default()
    }
}

#[tokio::test]
async fn syslog_over_tls_reaches_rsyslog_by_name_with_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca, _) = tls_rsyslog(dir.path());
    // By name: safd resolves it and checks the certificate for it.
    let address = format!("localhost:{}", server.tcp.port());
    let grants = tls_grants(&address, &ca.pem, None);
    let mut session = open_with(serde_json::json!({"transport": "tls"}), &address, &grants).await;
    let health = session.probe().await.unwrap();
    assert!(health.detail.contains("(tls)"), "{}", health.detail);
    let last = 5_000;
    deliver_all(&mut session, last, 500).await;
    let messages = server.wait_for(last as usize, Duration::from_secs(20));
    let mut seqs: Vec<u64> = messages.iter().map(seq_of).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "every line once");
    // The structured data crossed intact.
    let first = messages.iter().find(|m| seq_of(m) == 1).unwrap();
    assert_eq!(sd(first)["process"], "$ZTM00", "{first}");
}

#[tokio::test]
async fn relp_over_tls_loses_nothing_when_rsyslog_is_killed_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca, client) = tls_rsyslog(dir.path());
    let address = format!("localhost:{}", server.relp.port());
    // rsyslog's RELP input requires a client certificate its CA signed.
    let grants = tls_grants(&address, &ca.pem, Some(&client));
    let config = serde_json::json!({"transport": "relp", "tls": true, "relp_window": 64, "timeout_ms": 3000});
    let mut session = open_with(config, &address, &grants).await;
    deliver_through_a_kill(
        &mut session,
        server,
        dir.path().join("rsyslog/messages.jsonl"),
        10_000,
        1_000_000,
    )
    .await;
}

#[tokio::test]
async fn tls_refusals_name_the_member_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca, client) = tls_rsyslog(dir.path());
    let unavailable = async |config: serde_json::Value, address: &str, grants: &Grants| {
        let mut session = open_with(config, address, grants).await;
        match session.register(&info()).await {
            Err(SessionError::Connector(ConnectorError::Unavailable(message))) => message,
            other => panic!("expected unavailable, got {other:?}"),
        }
    };
    let tls = serde_json::json!({"transport": "tls"});
    let by_name = format!("localhost:{}", server.tcp.port());

    // A CA safd was not told to trust.
    let other = TestCa::new(dir.path(), "other");
    let message = unavailable(
        tls.clone(),
        &by_name,
        &tls_grants(&by_name, &other.pem, None),
    )
    .await;
    assert!(message.contains("grants.tls.ca_file"), "{message}");

    // The certificate is for `localhost`, not for the IP address.
    let by_ip = server.tcp.to_string();
    let message = unavailable(tls.clone(), &by_ip, &tls_grants(&by_ip, &ca.pem, None)).await;
    assert!(message.contains("not issued for the name"), "{message}");

    // RELP over TLS without the client certificate rsyslog requires.
    let relp = format!("localhost:{}", server.relp.port());
    let message = unavailable(
        serde_json::json!({"transport": "relp", "tls": true}),
        &relp,
        &tls_grants(&relp, &ca.pem, None),
    )
    .await;
    assert!(message.contains("grants.tls.cert_file"), "{message}");

    // A plain-text port: the handshake never completes.
    let plain = Rsyslog::start(&dir.path().join("plain"));
    let plain_address = plain.tcp.to_string();
    let message = unavailable(
        serde_json::json!({"transport": "tls", "connect_timeout_ms": 500}),
        &plain_address,
        &tls_grants(&plain_address, &ca.pem, Some(&client)),
    )
    .await;
    assert!(message.contains("TLS"), "{message}");

    // A name not granted as written.
    let mut session = open_with(tls, &by_name, &tls_grants(&by_ip, &ca.pem, None)).await;
    match session.register(&info()).await {
        Err(SessionError::NotGranted(message)) => {
            assert!(message.contains("grants.tcp"), "{message}");
        }
        other => panic!("expected a missing grant, got {other:?}"),
    }
}

#[tokio::test]
async fn an_address_not_granted_is_refused_by_the_sandbox_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let server = Rsyslog::start(dir.path());
    let mut session = open(serde_json::json!({}), server.tcp, false).await;
    let err = session.register(&info()).await.unwrap_err();
    let SessionError::Connector(ConnectorError::Unauthorized(message)) = &err else {
        panic!("expected unauthorized, got {err:?}");
    };
    assert!(message.contains("grants.tcp"), "{message}");
    assert!(message.contains(&server.tcp.to_string()), "{message}");
}

#[tokio::test]
async fn a_stopped_receiver_is_unavailable_for_tcp_and_relp_alike() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Rsyslog::start(dir.path());
    let (tcp, relp) = (server.tcp, server.relp);
    let mut tcp_session = open(serde_json::json!({}), tcp, true).await;
    let mut relp_session = open(serde_json::json!({"transport": "relp"}), relp, true).await;
    tcp_session.register(&info()).await.unwrap();
    relp_session.register(&info()).await.unwrap();
    server.kill();
    let unavailable = |result: Result<(), SessionError>| match result {
        Err(SessionError::Connector(ConnectorError::Unavailable(_))) => true,
        Err(other) => panic!("expected unavailable, got {other:?}"),
        Ok(()) => false,
    };
    // RELP waits for the server's answer: the very next delivery fails.
    assert!(unavailable(
        relp_session.deliver(&batch(1..=3)).await.map(drop)
    ));
    // Plain TCP notices the close before writing once the close has
    // reached this side, and says so (a transient error: safd sends again
    // what it had not yet confirmed); reconnecting then fails.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tcp_session.deliver(&batch(1..=3)).await {
            Err(SessionError::Connector(ConnectorError::Transient(message))) => {
                assert!(message.contains("closed the connection"), "{message}");
                break;
            }
            Err(SessionError::Connector(ConnectorError::Unavailable(_))) => break,
            Err(other) => panic!("expected the close to be noticed, got {other:?}"),
            Ok(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "the closed receiver went unnoticed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for session in [&mut tcp_session, &mut relp_session] {
        assert!(unavailable(session.probe().await.map(drop)));
    }
}

#[tokio::test]
async fn a_bad_config_names_the_key_and_the_fix() {
    let runtime = runtime();
    let plugin = runtime.load(&plugin_path("syslog")).unwrap();
    let problems = plugin
        .validate_config(
            &serde_json::json!({"transport": "relp", "framing": "newline", "facility": "local9", "sd_id": "plain"})
                .to_string(),
        )
        .await
        .unwrap();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["facility", "sd_id", "framing"], "{problems:?}");
    assert!(problems[1].message.contains("@32473"), "{problems:?}");
}

fn append_lines(path: &Path, range: std::ops::RangeInclusive<u64>) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let text: String = range
        .map(|n| format!("2026-11-22T10:00:00Z app[42]: request {n:07} served\n"))
        .collect();
    file.write_all(text.as_bytes()).unwrap();
}

/// `safd.toml` in `dir`: file-tail on `logs` (files matching `pattern`)
/// → the failover group `siem` of syslog `members` (name, address), with
/// the plugin's `config` and `extra` lines in the group's table.
fn tail_to_syslog_config(
    dir: &Path,
    logs: &Path,
    pattern: &str,
    config: &str,
    members: &[(&str, SocketAddr)],
    extra: &str,
) -> PathBuf {
    let plugins = plugin_path("syslog").parent().unwrap().to_owned();
    let grants: Vec<String> = members.iter().map(|(_, a)| format!("\"{a}\"")).collect();
    let members: Vec<String> = members
        .iter()
        .map(|(name, a)| format!("{{ name = \"{name}\", address = \"{a}\" }}"))
        .collect();
    let path = dir.join("safd.toml");
    std::fs::write(
        &path,
        format!(
            r#"agent_id = "e2e-safd"
data_dir = "{data}"
plugin_dir = "{plugins}"

[admin]
listen = "127.0.0.1:0"

[sources.app]
plugin = "file-tail"
config = {{ directory = "{logs}", pattern = "{pattern}" }}
grants = {{ dirs = ["{logs}"] }}

[groups.siem]
mode = "failover"
plugin = "syslog"
config = {config}
grants = {{ tcp = [{grants}] }}
members = [{members}]
probe_interval_ms = 200
{extra}
"#,
            data = dir.join("data").display(),
            plugins = plugins.display(),
            logs = logs.display(),
            grants = grants.join(", "),
            members = members.join(", "),
        ),
    )
    .unwrap();
    path
}

/// The whole daemon: `safd run` tails a live, rotating log into rsyslog
/// over RELP; rsyslog is killed mid-stream and comes back; every line
/// arrives (resends after the kill carry the same event id).
#[test]
fn safd_run_tails_a_rotating_log_into_rsyslog_over_relp_through_an_rsyslog_kill() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut server = Rsyslog::start(&dir.path().join("rsyslog"));
    let config = tail_to_syslog_config(
        dir.path(),
        &logs,
        "app.log*",
        r#"{ transport = "relp", timeout_ms = 3000 }"#,
        &[("rsyslog", server.relp)],
        "",
    );

    let check = safd().arg("check").arg("-c").arg(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning: groups.siem.plugin: `syslog` only confirms"),
        "safd check warns about transport-write acknowledgements: {stdout}"
    );

    let (mut daemon, _admin, stderr) = run_with_admin(&config);
    let total = 30_000;
    let log = logs.join("app.log");
    append_lines(&log, 1..=10_000);
    wait_for(
        Duration::from_secs(60),
        "the first lines at rsyslog",
        || server.messages().len() >= 3_000,
    );
    server.kill();
    append_lines(&log, 10_001..=20_000);
    std::fs::rename(&log, logs.join("app.log.1")).unwrap();
    append_lines(&log, 20_001..=total);
    server.restart();
    let mut ids = HashSet::new();
    wait_for(Duration::from_secs(120), "every line at rsyslog", || {
        ids = server
            .messages()
            .iter()
            .map(sd)
            .filter(|sd| sd["stream"] == "app")
            .map(|sd| sd["id"].as_str().unwrap().to_owned())
            .collect();
        ids.len() as u64 >= total
    });
    stop_cleanly(&mut daemon, stderr);
    let messages = server.messages();
    // safd's own numbered events travel the same way, in stream `safd`.
    assert!(
        messages
            .iter()
            .any(|m| sd(m)["stream"] == "safd" && sd(m)["event_id"] == "1007"),
        "the member's recovery (1007) reached rsyslog too"
    );
    let bodies: HashSet<u64> = messages
        .iter()
        .filter(|m| sd(m)["stream"] == "app")
        .map(|m| {
            let msg = m["msg"].as_str().unwrap();
            msg.split("request ")
                .nth(1)
                .and_then(|rest| rest.get(..7)?.parse().ok())
                .unwrap_or_else(|| panic!("not a test line: {m}"))
        })
        .collect();
    assert_eq!(bodies.len() as u64, total, "every line once, none missing");
    assert_eq!(ids.len() as u64, total, "one id per line");
}

/// `safd-tools bench-syslog` end to end on a small file: it runs, every line
/// arrives once, and the report says so (the figures themselves are for
/// `cargo xtask bench-syslog` on release builds).
#[test]
fn bench_syslog_reports_every_line_received_once() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_path("syslog").parent().unwrap().to_owned();
    let median = crate::support::bench::run_tiny(
        dir.path(),
        "bench-syslog",
        &plugins,
        &["--lines", "20000"],
    );
    assert_eq!(median("lines received more than once"), 0.0);
    assert_eq!(median("lines never received"), 0.0);
    assert!(median("file → receiver") > 0.0);
}

/// The lines of stream `app` a receiver holds, by their number.
fn app_lines(server: &Rsyslog) -> HashSet<u64> {
    server
        .messages()
        .iter()
        .filter(|m| sd(m)["stream"] == "app")
        .filter_map(|m| {
            let msg = m["msg"].as_str()?;
            msg.split("request ").nth(1)?.get(..7)?.parse().ok()
        })
        .collect()
}

/// Plain TCP, which confirms nothing: `safd run` tails a log written at
/// about 20 000 lines/s into a primary and a backup rsyslog over plain TCP;
/// the primary is killed (kill -9: what sat in its socket buffer is gone),
/// later the backup too, then they come back. Every line arrives: written
/// events count as delivered only after the linger, and a failure sends
/// the unconfirmed ones again (some twice, which their ids show).
#[test]
fn plain_tcp_loses_nothing_when_receivers_die_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut primary = Rsyslog::start(&dir.path().join("primary"));
    let mut backup = Rsyslog::start(&dir.path().join("backup"));
    let config = tail_to_syslog_config(
        dir.path(),
        &logs,
        "app.log",
        r#"{ transport = "tcp", timeout_ms = 3000 }"#,
        &[("primary", primary.tcp), ("backup", backup.tcp)],
        "linger_ms = 1000",
    );
    let (mut daemon, _admin, stderr) = run_with_admin(&config);
    let log = logs.join("app.log");
    let total = 60_000u64;
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            // 1 000 lines every 50 ms: about 20 000 lines/s.
            for start in (1..=total).step_by(1000) {
                append_lines(&log, start..=start + 999);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Each receiver stops reading for a moment (what safd writes meanwhile
    // sits in its socket buffer), then dies with it.
    wait_for(Duration::from_secs(60), "lines at the primary", || {
        app_lines(&primary).len() >= 10_000
    });
    primary.freeze();
    std::thread::sleep(Duration::from_millis(300));
    primary.kill();
    wait_for(Duration::from_secs(60), "the backup taking over", || {
        app_lines(&backup).len() >= 10_000
    });
    backup.freeze();
    std::thread::sleep(Duration::from_millis(300));
    backup.kill();
    std::thread::sleep(Duration::from_millis(500));
    primary.restart();
    backup.restart();
    writer.join().unwrap();
    wait_for(Duration::from_secs(120), "every line at a receiver", || {
        let mut held = app_lines(&primary);
        held.extend(app_lines(&backup));
        held.len() as u64 >= total
    });
    stop_cleanly(&mut daemon, stderr);
    let mut held = app_lines(&primary);
    held.extend(app_lines(&backup));
    assert_eq!(
        held,
        (1..=total).collect::<HashSet<u64>>(),
        "every line, none lost"
    );
}
