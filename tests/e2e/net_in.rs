//! `net-in` in `safd run`: senders write syslog and raw lines to the
//! address it was granted, the events reach a real `safd-mgmt`; without the
//! grant `safd check` refuses it, and the sandbox refuses to listen.

use crate::support::certs::TestCa;
use crate::support::mgmt;
use crate::support::plugins::{plugin_dir, plugin_path, runtime};
use crate::support::rsyslog::{ForwardTls, Rsyslog};
use crate::support::safd_process::{Daemon, run_with_admin, safd, stop_cleanly, wait_for};
use safd_connector::{
    DestinationConnector, Endpoint, Event, MemberRole, PollLimits, SequencedEvent, SessionInfo,
    Severity, SourceConnector, StreamBatch,
};
use safd_runtime::{Grants, TlsFiles};
use serde_json::Value;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A loopback address nothing listens on (now).
fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// net-in on `listen` (granted `grant`) → mgmt-http → `server`.
fn config(dir: &Path, listen: &str, grant: &str, server: &mgmt::Server) -> PathBuf {
    config_with(dir, listen, grant, server, "", "")
}

/// A safd-mgmt in `dir/server` and a configuration of net-in on a free
/// address (granted) with `net_in` keys added, to it: (server, address,
/// configuration file).
fn granted_net_in(dir: &Path, net_in: &str) -> (mgmt::Server, String, PathBuf) {
    granted_net_in_with(dir, net_in, "")
}

/// The same, with more grants (`, key = value`).
fn granted_net_in_with(dir: &Path, net_in: &str, grants: &str) -> (mgmt::Server, String, PathBuf) {
    let server = mgmt::Server::start(&dir.join("server"), &[]);
    let listen = free_address();
    let path = config_with(
        dir,
        &listen,
        &format!("\"{listen}\""),
        &server,
        net_in,
        grants,
    );
    (server, listen, path)
}

/// The same, with more keys for net-in and its grants (`, key = value`).
fn config_with(
    dir: &Path,
    listen: &str,
    grant: &str,
    server: &mgmt::Server,
    net_in: &str,
    grants: &str,
) -> PathBuf {
    let text = format!(
        r#"agent_id = "test-safd"
data_dir = "{data}"
plugin_dir = "{plugins}"

[admin]
listen = "127.0.0.1:0"

[sources.net]
plugin = "net-in"
config = {{ listen = "{listen}"{net_in} }}
grants = {{ listen = [{grant}]{grants} }}

[groups.mgmt]
mode = "failover"
plugin = "mgmt-http"
config = {{ token = "{token}", timeout_ms = 3000 }}
grants = {{ http = ["{authority}"] }}
members = [{{ name = "primary", address = "{base}" }}]
probe_interval_ms = 200
"#,
        data = dir.join("data").display(),
        plugins = plugin_dir().display(),
        token = mgmt::TOKEN,
        authority = server.authority(),
        base = server.base,
    );
    let path = dir.join("safd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn attribute<'a>(event: &'a Value, key: &str) -> Option<&'a str> {
    event["attributes"]
        .as_array()?
        .iter()
        .find(|pair| pair[0] == key)
        .and_then(|pair| pair[1].as_str())
}

#[test]
fn messages_written_to_the_granted_address_reach_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (server, listen, path) = granted_net_in(dir.path(), "");
    let (mut daemon, _admin, rest) = run_with_admin(&path);

    let mut sender = None;
    wait_for(Duration::from_secs(30), "net-in listening", || {
        sender = TcpStream::connect(&listen).ok();
        sender.is_some()
    });
    let mut sender = sender.unwrap();
    sender
        .write_all(
            b"<11>1 2024-03-11T01:17:10.5Z prod1 ems 42 ZZEV [ems subsystem=\"TMF\"] \
              LDEV 123: LINE NOT READY\n\
              <14>Mar 11 01:17:10 prod1 app[7]: all fine\n\
              a raw line\n",
        )
        .unwrap();
    // Octet-counted from a second sender, a line break inside.
    let mut framed = TcpStream::connect(&listen).unwrap();
    framed.write_all(b"9 two\nlines").unwrap();
    drop(framed);

    let mut events = Vec::new();
    wait_for(Duration::from_secs(30), "four events at the server", || {
        events = server.events("stream=net&limit=100");
        events.len() >= 4
    });
    let find = |body: &str| {
        events
            .iter()
            .find(|e| e["body"] == body)
            .unwrap_or_else(|| panic!("no `{body}` in {events:?}"))
    };
    let ems = find("LDEV 123: LINE NOT READY");
    assert_eq!(ems["severity"], "major");
    assert_eq!(ems["time"], 1_710_119_830_500_000i64);
    assert_eq!(attribute(ems, "host"), Some("prod1"));
    assert_eq!(attribute(ems, "ems.subsystem"), Some("TMF"));
    assert_eq!(attribute(ems, "format"), Some("rfc5424"));
    let bsd = find("all fine");
    assert_eq!(
        (attribute(bsd, "app"), attribute(bsd, "procid")),
        (Some("app"), Some("7"))
    );
    assert_eq!(find("a raw line")["severity"], "info");
    find("two\nlines");
    let sender_address = sender.local_addr().unwrap().to_string();
    assert_eq!(attribute(ems, "sender"), Some(sender_address.as_str()));
    drop(sender);
    stop_cleanly(&mut daemon, rest);
}

/// 500 senders connected at once each get their message in; a sender that
/// stays silent is cut after `idle_timeout_ms`; an over-long line is cut
/// to `max_message_bytes` and flagged, not dropped; a connection over
/// `max_connections` is closed at once.
#[test]
fn five_hundred_senders_at_once_a_silent_one_cut_and_an_over_long_line_kept() {
    const SENDERS: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let (server, listen, path) = granted_net_in(
        dir.path(),
        &format!(
            ", max_connections = {}, idle_timeout_ms = 8000, max_message_bytes = 1024",
            SENDERS + 2
        ),
    );
    let (mut daemon, _admin, rest) = run_with_admin(&path);
    let mut silent = None;
    wait_for(Duration::from_secs(30), "net-in listening", || {
        silent = TcpStream::connect(&listen).ok();
        silent.is_some()
    });
    let mut silent = silent.unwrap();
    // Each writes as soon as it is connected (connecting 500 takes
    // seconds: the listen backlog is 128).
    let senders: Vec<TcpStream> = (0..SENDERS)
        .map(|i| {
            let mut sender = TcpStream::connect(&listen).unwrap();
            sender
                .write_all(format!("<14>1 - host{i} app - - - sender {i:03}\n").as_bytes())
                .unwrap();
            sender
        })
        .collect();
    let mut long = TcpStream::connect(&listen).unwrap();
    long.write_all(format!("{}\n", "L".repeat(5000)).as_bytes())
        .unwrap();
    // One more than max_connections: closed at once.
    let mut over = TcpStream::connect(&listen).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        matches!(std::io::Read::read(&mut over, &mut byte), Ok(0) | Err(_)),
        "a connection over max_connections was kept"
    );

    let mut events = Vec::new();
    wait_for(Duration::from_secs(60), "every sender's message", || {
        events = server.events("stream=net&limit=1000");
        events.len() > SENDERS
    });
    let mut bodies: Vec<&str> = events.iter().filter_map(|e| e["body"].as_str()).collect();
    bodies.sort_unstable();
    bodies.dedup();
    assert_eq!(bodies.len(), SENDERS + 1, "{bodies:?}");
    for i in 0..SENDERS {
        assert!(
            bodies.contains(&format!("sender {i:03}").as_str()),
            "sender {i}"
        );
    }
    let cut = events
        .iter()
        .find(|e| e["body"].as_str().is_some_and(|b| b.starts_with('L')))
        .unwrap();
    assert_eq!(cut["body"].as_str().unwrap().len(), 1024);
    let truncated: u64 = attribute(cut, "truncated").unwrap().parse().unwrap();
    assert!(truncated > 1024, "{cut}");

    // The silent one (and the others, silent since) are cut.
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert!(
        matches!(std::io::Read::read(&mut silent, &mut byte), Ok(0) | Err(_)),
        "a silent sender was not cut"
    );
    drop(senders);
    let stderr = stop_cleanly(&mut daemon, rest);
    assert!(!stderr.contains("trapped"), "{stderr}");
}

/// The bodies of the `net` stream's events at the server.
fn stored_bodies(server: &mgmt::Server) -> Vec<String> {
    server
        .events("stream=net&limit=10000")
        .iter()
        .filter_map(|e| e["body"].as_str().map(|b| b.trim().to_owned()))
        .collect()
}

/// Once `message NNNNN` number `messages - 1` is at the server: checks
/// that none is stored twice and returns the numbers of those never
/// stored. (The last message written is the last stored: a sender sends
/// again what was not answered before anything new, and safd delivers in
/// seq order, so once it is at the server anything stored twice is too.)
fn lost_once_the_last_arrives(server: &mgmt::Server, messages: usize) -> Vec<usize> {
    let last = format!("message {:05}", messages - 1);
    let mut got = Vec::new();
    wait_for(
        Duration::from_secs(120),
        "the last message at the server",
        || {
            got = stored_bodies(server);
            got.contains(&last)
        },
    );
    let mut counts = std::collections::BTreeMap::new();
    for body in &got {
        *counts.entry(body.as_str()).or_insert(0) += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    (0..messages)
        .filter(|i| !counts.contains_key(format!("message {i:05}").as_str()))
        .collect()
}

/// rsyslog forwards over RELP into net-in; safd is killed (-9) while the
/// messages flow and started again: rsyslog sends again what was not
/// answered, and every message is in safd's queue (here: at the server,
/// which keeps each event safd delivers under its own id) exactly once.
#[test]
fn relp_from_rsyslog_survives_a_kill_with_every_message_stored_once() {
    const MESSAGES: usize = 6000;
    let dir = tempfile::tempdir().unwrap();
    let (server, listen, path) =
        granted_net_in(dir.path(), ", transport = \"relp\", max_events = 200");
    let (daemon, _admin, _rest) = run_with_admin(&path);
    let forwarder = Rsyslog::forwarder(&dir.path().join("rsyslog"), listen.parse().unwrap());
    let (mut daemon, rest) =
        forward_through_a_kill(&forwarder, &server, &path, daemon, MESSAGES, || {});
    stop_cleanly(&mut daemon, rest);
}

/// `messages` lines written to `forwarder` at a pace while safd (`daemon`,
/// run on `path`) is killed (-9) once a fifth are at `server` and started
/// again (the last hundred only then); `after_restart` runs once it runs
/// again. Returns the new safd and its stderr once every message is at the
/// server, each once.
fn forward_through_a_kill(
    forwarder: &Rsyslog,
    server: &mgmt::Server,
    path: &Path,
    mut daemon: Daemon,
    messages: usize,
    after_restart: impl FnOnce(),
) -> (Daemon, std::thread::JoinHandle<String>) {
    let tcp = forwarder.tcp;
    let restarted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer_may_finish = restarted.clone();
    let writer = std::thread::spawn(move || {
        let mut input = TcpStream::connect(tcp).unwrap();
        for chunk in 0..messages / 100 {
            if chunk == messages / 100 - 1 {
                wait_for(Duration::from_secs(60), "safd restarted", || {
                    writer_may_finish.load(std::sync::atomic::Ordering::SeqCst)
                });
            }
            let lines: String = (chunk * 100..(chunk + 1) * 100)
                .map(|i| format!("<13>1 2024-03-11T01:17:10Z prod1 ems - - - message {i:05}\n"))
                .collect();
            input.write_all(lines.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    wait_for(
        Duration::from_secs(60),
        "the first messages at the server",
        || stored_bodies(server).len() >= messages / 5,
    );
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let (daemon, _admin, rest) = run_with_admin(path);
    restarted.store(true, std::sync::atomic::Ordering::SeqCst);
    after_restart();
    writer.join().unwrap();
    let lost = lost_once_the_last_arrives(server, messages);
    assert!(lost.is_empty(), "lost: {lost:?}");
    (daemon, rest)
}

/// RELP over TLS (done by safd, the certificate and key from
/// `grants.tls`, client certificates required by its `ca_file`): rsyslog
/// forwards with its certificate through a kill -9 of safd, every message
/// is stored once; a forwarder without a certificate is refused and
/// nothing of it is stored.
#[test]
fn relp_over_tls_from_rsyslog_survives_a_kill_and_a_client_without_certificate_is_refused() {
    const MESSAGES: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "site");
    let identity = ca.server(dir.path(), "safd", &["localhost", "127.0.0.1"]);
    let client = ca.client(dir.path(), "rsyslog");
    let grants = format!(
        ", tls = {{ ca_file = \"{}\", cert_file = \"{}\", key_file = \"{}\" }}",
        ca.pem.display(),
        identity.cert.display(),
        identity.key.display()
    );
    let (server, listen, path) = granted_net_in_with(
        dir.path(),
        ", transport = \"relp\", tls = true, max_events = 200",
        &grants,
    );
    let (daemon, _admin, _rest) = run_with_admin(&path);
    let forwarder = Rsyslog::tls_forwarder(
        &dir.path().join("rsyslog"),
        listen.parse().unwrap(),
        ForwardTls {
            ca: ca.pem.clone(),
            client: Some((client.cert, client.key)),
        },
    );
    // Without a certificate: refused at the handshake, never read.
    let mut intruder = None;
    let (mut daemon, rest) =
        forward_through_a_kill(&forwarder, &server, &path, daemon, MESSAGES, || {
            let forwarder = Rsyslog::tls_forwarder(
                &dir.path().join("intruder"),
                listen.parse().unwrap(),
                ForwardTls {
                    ca: ca.pem.clone(),
                    client: None,
                },
            );
            TcpStream::connect(forwarder.tcp)
                .unwrap()
                .write_all(b"<13>1 2024-03-11T01:17:10Z prod1 ems - - - intruder\n")
                .unwrap();
            intruder = Some(forwarder);
        });
    let log = stop_cleanly(&mut daemon, rest);
    assert!(
        log.contains("TLS client 127.0.0.1:") && log.contains("refused"),
        "the refusal is logged: {log}"
    );
    assert!(
        !stored_bodies(&server)
            .iter()
            .any(|b| b.contains("intruder")),
        "nothing of the client without a certificate is stored"
    );
    drop(intruder);
}

/// Both ends of TLS in safd's plugins: the syslog destination
/// (`transport = "tls"`, by name, with a client certificate) sends to
/// net-in listening with TLS (client certificates required); every event
/// arrives once, in order, with its text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_tls_from_the_syslog_plugin_reaches_net_in_listening_with_tls() {
    const EVENTS: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "site");
    let identity = ca.server(dir.path(), "net-in", &["localhost"]);
    let client = ca.client(dir.path(), "sender");
    let listen = free_address();
    let port = listen.rsplit_once(':').unwrap().1.to_owned();
    let runtime = runtime();

    let net_in = runtime.load(&plugin_path("net-in")).unwrap();
    let source = net_in
        .source(
            "net",
            serde_json::json!({ "listen": listen, "tls": true, "max_events": 500 }).to_string(),
            &Grants {
                listen: vec![listen.clone()],
                tls: Some(TlsFiles {
                    ca_file: Some(ca.pem.clone()),
                    cert_file: Some(identity.cert.clone()),
                    key_file: Some(identity.key.clone()),
                }),
                ..Grants::default()
            },
        )
        .unwrap();
    let mut reader = source.open(None).await.unwrap();

    let syslog = runtime.load(&plugin_path("syslog")).unwrap();
    let address = format!("localhost:{port}");
    let destination = syslog
        .destination(
            "siem",
            serde_json::json!({ "transport": "tls" }).to_string(),
            &Grants {
                tcp: vec![address.clone()],
                tls: Some(TlsFiles {
                    ca_file: Some(ca.pem.clone()),
                    cert_file: Some(client.cert.clone()),
                    key_file: Some(client.key.clone()),
                }),
                ..Grants::default()
            },
        )
        .await
        .unwrap();
    let mut writer = destination
        .open(Endpoint {
            member: "primary".into(),
            address,
            role: MemberRole::Primary,
        })
        .await
        .unwrap();

    let sending = async {
        writer.register(&SessionInfo::default()).await.unwrap();
        for first in (1..=EVENTS).step_by(250) {
            let events = (first..first + 250)
                .map(|seq| SequencedEvent {
                    seq,
                    event: Event {
                        id: format!("e{seq}"),
                        time: 1_763_800_000_000_000,
                        severity: Severity::Info,
                        attributes: Vec::new(),
                        body: format!("tls event {seq:05}"),
                    },
                })
                .collect();
            let batches = [StreamBatch {
                stream: "app".into(),
                events,
                left_out: Vec::new(),
            }];
            let report = writer.deliver(&batches).await.unwrap();
            assert_eq!(report.acknowledged[0].seq, first + 249);
        }
    };
    let receiving = async {
        let mut bodies = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while (bodies.len() as u64) < EVENTS {
            assert!(
                std::time::Instant::now() < deadline,
                "{} arrived",
                bodies.len()
            );
            let batch = reader
                .poll(PollLimits {
                    max_events: 500,
                    max_bytes: 1 << 20,
                })
                .await
                .unwrap();
            for event in batch.events.to_events() {
                bodies.push(event.body);
            }
            if let Some(cursor) = &batch.cursor {
                reader.commit(cursor).await.unwrap();
            }
            if batch.events.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        bodies
    };
    let ((), bodies) = tokio::join!(sending, receiving);
    let expected: Vec<String> = (1..=EVENTS)
        .map(|seq| format!("tls event {seq:05}"))
        .collect();
    assert_eq!(bodies, expected, "every event once, in order");
}

/// Plain TCP acknowledges nothing: a sender writes while safd is killed
/// (-9), sends again what its failed write held once safd is back, and
/// what is lost is what docs/net-in.md says it can be — a run of the
/// messages written last before the break, no more than one poll and the
/// two sockets' buffers hold — while nothing after it is lost and nothing
/// is stored twice.
#[test]
fn plain_tcp_loses_at_most_one_poll_and_the_socket_buffers_when_safd_is_killed() {
    const MESSAGES: usize = 6000;
    const MAX_EVENTS: usize = 200;
    let line = |i: usize| format!("<13>1 2024-03-11T01:17:10Z prod1 ems - - - message {i:05}\n");
    let dir = tempfile::tempdir().unwrap();
    let (server, listen, path) =
        granted_net_in(dir.path(), &format!(", max_events = {MAX_EVENTS}"));
    let (mut daemon, _admin, _rest) = run_with_admin(&path);
    let restarted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let may_reconnect = restarted.clone();
    // The last tenth is written only once safd was killed, so that the
    // kill lands while the sender writes, however busy the machine.
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let may_go_on = killed.clone();
    let address = listen.clone();
    // Returns the first message of the write that failed: every message
    // before it was accepted by the sender's kernel.
    let writer = std::thread::spawn(move || {
        let mut input = None;
        wait_for(Duration::from_secs(30), "net-in listening", || {
            input = TcpStream::connect(&address).ok();
            input.is_some()
        });
        let mut input = input.unwrap();
        let mut broke_at = None;
        let mut chunk = 0;
        while chunk * 50 < MESSAGES {
            if chunk * 50 == MESSAGES * 9 / 10 {
                wait_for(Duration::from_secs(60), "safd killed", || {
                    may_go_on.load(std::sync::atomic::Ordering::SeqCst)
                });
            }
            let lines: String = (chunk * 50..(chunk + 1) * 50).map(line).collect();
            if input.write_all(lines.as_bytes()).is_err() {
                broke_at.get_or_insert(chunk * 50);
                wait_for(Duration::from_secs(60), "safd restarted", || {
                    may_reconnect.load(std::sync::atomic::Ordering::SeqCst)
                });
                let mut again = None;
                wait_for(Duration::from_secs(30), "net-in listening again", || {
                    again = TcpStream::connect(&address).ok();
                    again.is_some()
                });
                input = again.unwrap();
                continue; // the failed write is sent again
            }
            chunk += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        broke_at
    });
    wait_for(
        Duration::from_secs(60),
        "the first messages at the server",
        || stored_bodies(&server).len() >= MESSAGES / 6,
    );
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    killed.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut daemon, _admin, rest) = run_with_admin(&path);
    restarted.store(true, std::sync::atomic::Ordering::SeqCst);
    let broke_at = writer
        .join()
        .unwrap()
        .expect("the kill broke the sender's connection while it wrote");

    let lost = lost_once_the_last_arrives(&server, MESSAGES);
    // Lost: the last ones written before the break, in one run.
    let first_lost = broke_at - lost.len();
    assert_eq!(
        lost,
        (first_lost..broke_at).collect::<Vec<_>>(),
        "lost must be the run written last before the break (at {broke_at})"
    );
    // No more than docs/net-in.md allows: one poll, safd's receive buffer
    // and the sender's send buffer (each at most the kernel's maximum).
    let kernel_max = |name: &str| -> usize {
        let text = std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).unwrap();
        text.split_whitespace().last().unwrap().parse().unwrap()
    };
    let buffers = kernel_max("tcp_rmem") + kernel_max("tcp_wmem");
    let allowed = MAX_EVENTS + buffers / line(0).len();
    eprintln!(
        "plain TCP, safd killed: {} of {MESSAGES} messages lost (allowed: {allowed})",
        lost.len()
    );
    assert!(lost.len() <= allowed, "lost {} > {allowed}", lost.len());
    stop_cleanly(&mut daemon, rest);
}

#[test]
fn check_refuses_a_listen_address_that_is_not_granted() {
    let dir = tempfile::tempdir().unwrap();
    let server = mgmt::Server::start(&dir.path().join("server"), &[]);
    let listen = free_address();
    let other = free_address();
    for grant in [format!("\"{other}\""), String::new()] {
        let path = config(dir.path(), &listen, &grant, &server);
        let output = safd().arg("check").arg("-c").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains("sources.net.grants.listen"), "{stderr}");
        assert!(stderr.contains("grants.listen"), "{stderr}");
    }
}

/// Past `safd check` (a config that names no address of its own), the
/// sandbox itself refuses: the bind fails inside the plugin, which says
/// which grant is missing, and safd announces the denied access (3007).
#[tokio::test]
async fn the_sandbox_refuses_to_listen_without_the_grant() {
    let listen = free_address();
    let plugin = runtime().load(&plugin_path("net-in")).unwrap();
    let grants = Grants {
        listen: vec![free_address()],
        ..Grants::default()
    };
    let config = serde_json::json!({ "listen": listen }).to_string();
    let source = plugin.source("net", config, &grants).unwrap();
    let err = match source.open(None).await {
        Ok(mut session) => session
            .poll(PollLimits {
                max_events: 10,
                max_bytes: 1 << 20,
            })
            .await
            .map(drop)
            .unwrap_err(),
        Err(err) => err,
    };
    let message = err.to_string();
    assert!(
        message.contains(&format!("add \"{listen}\" to this source's grants.listen")),
        "{message}"
    );
    assert!(
        TcpStream::connect(&listen).is_err(),
        "something listens on {listen}"
    );
}

#[test]
fn inspect_shows_the_listen_capability() {
    let output = safd()
        .args(["plugins", "inspect"])
        .arg(plugin_dir().join("net-in.wasm"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("capabilities:  listen"), "{stdout}");
    assert!(stdout.contains("max_connections"), "{stdout}");
}

/// `/health` answers 503 naming the failing source while net-in cannot
/// listen (its port taken), and 200 once it can; with `[log] format =
/// "json"` every line safd writes to stderr is a JSON object.
#[test]
fn health_follows_the_source_and_json_logs_parse_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = mgmt::Server::start(&dir.path().join("server"), &[]);
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = squatter.local_addr().unwrap().to_string();
    let path = config(dir.path(), &listen, &format!("\"{listen}\""), &server);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n[log]\nformat = \"json\"\n");
    std::fs::write(&path, text).unwrap();
    let (mut daemon, admin, rest) = run_with_admin(&path);

    let health = || {
        let mut response = ureq::get(&format!("http://{admin}/health"))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        let code = response.status().as_u16();
        (code, response.body_mut().read_json::<Value>().unwrap())
    };
    let mut answer = (0, Value::Null);
    wait_for(Duration::from_secs(30), "503 naming the source", || {
        answer = health();
        answer.0 == 503
            && answer.1["not_ready"][0]
                .as_str()
                .is_some_and(|r| r.contains("source `net` is failing") && r.contains(&listen))
    });
    assert_eq!(answer.1["live"], true);
    drop(squatter);
    wait_for(Duration::from_secs(60), "200 once it listens", || {
        answer = health();
        answer.0 == 200
    });
    assert_eq!(answer.1["ready"], true, "{}", answer.1);
    let status: Value = ureq::get(&format!("http://{admin}/status"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(status["sources"][0]["stream"], "net", "{status}");
    assert_eq!(status["sources"][0]["state"], "running", "{status}");
    assert!(
        status["sources"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot listen")),
        "{status}"
    );

    let stderr = stop_cleanly(&mut daemon, rest);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{stderr}");
    for line in lines {
        let object: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            object["timestamp"].is_string() && object["level"].is_string(),
            "{line}"
        );
    }
    assert!(stderr.contains("safd: stopped"), "{stderr}");
}

/// The same EMS format A text, written to log files by ems-sim and read by
/// ems-reader, and streamed by ems-sim over TCP into net-in (`--tcp`, as
/// a printing distributor writes to a network printer): the server gets the same events from both — body,
/// time, severity and every attribute — but where each came from
/// (`log_file` for one, `sender` for the other).
#[test]
fn ems_text_over_tcp_becomes_the_events_ems_reader_makes_of_the_files() {
    const EVENTS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let ems_sim = |output: &[&str]| {
        let run = std::process::Command::new(crate::support::binary("ems-sim"))
            .args(output)
            .args([
                "--events",
                &EVENTS.to_string(),
                "--seed",
                "25",
                "--format",
                "a",
            ])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    };
    ems_sim(&["--dir", logs.to_str().unwrap()]);

    let (server, listen, path) = granted_net_in(dir.path(), ", format = \"ems\"");
    let mut config_text = std::fs::read_to_string(&path).unwrap();
    config_text = config_text.replace(
        "[groups.mgmt]",
        &format!(
            "[sources.ems]\nplugin = \"ems-reader\"\nconfig = {{ directory = \"{logs}\", format = \"a\", \
             system = \"\\\\PROD1\" }}\ngrants = {{ dirs = [\"{logs}\"] }}\n\n[groups.mgmt]",
            logs = logs.display()
        ),
    );
    std::fs::write(&path, config_text).unwrap();
    let (mut daemon, _admin, rest) = run_with_admin(&path);
    wait_for(Duration::from_secs(30), "net-in listening", || {
        TcpStream::connect(&listen).is_ok()
    });
    // The same events again, over the network.
    ems_sim(&["--tcp", &listen]);

    let mut from_files = Vec::new();
    let mut from_network = Vec::new();
    wait_for(Duration::from_secs(60), "every event from both", || {
        from_files = server.events("stream=ems&limit=1000");
        from_network = server.events("stream=net&limit=1000");
        from_files.len() >= EVENTS && from_network.len() >= EVENTS
    });
    assert_eq!(from_files.len(), EVENTS);
    assert_eq!(from_network.len(), EVENTS);
    let shape = |event: &Value, origin: &str| {
        let mut attributes: Vec<(String, String)> = event["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().unwrap().to_owned(),
                    pair[1].as_str().unwrap().to_owned(),
                )
            })
            .filter(|(key, _)| key != origin)
            .collect();
        attributes.sort();
        (
            event["body"].clone(),
            event["time"].clone(),
            event["severity"].clone(),
            attributes,
        )
    };
    for (file, network) in from_files.iter().zip(&from_network) {
        assert_eq!(shape(file, "log_file"), shape(network, "sender"));
        assert!(attribute(file, "log_file").is_some(), "{file}");
        assert!(attribute(network, "sender").is_some(), "{network}");
        assert!(attribute(network, "parse_error").is_none(), "{network}");
        assert!(attribute(network, "subsystem").is_some(), "{network}");
    }
    stop_cleanly(&mut daemon, rest);
}

/// `safd-tools bench-net-in` at a tiny size: both transports deliver every
/// event once, and the report says so (the speed of a debug build is no
/// figure).
#[test]
fn bench_net_in_reports_every_event_received_once_over_tcp_and_relp() {
    let dir = tempfile::tempdir().unwrap();
    let median = crate::support::bench::run_tiny(
        dir.path(),
        "bench-net-in",
        &plugin_dir(),
        &["--events", "3000", "--relp-window", "256"],
    );
    for transport in ["plain TCP", "RELP"] {
        assert_eq!(median(&format!("{transport}: events never received")), 0.0);
        assert_eq!(
            median(&format!("{transport}: events received more than once")),
            0.0
        );
        assert!(median(&format!("{transport} → receiver")) > 0.0);
    }
}
