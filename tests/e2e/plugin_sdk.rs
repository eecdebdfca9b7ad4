//! The plugin SDK's helpers, through the example plugins built on them and
//! a real `safd run`: the `http` helper sends bodies a receiver that reads
//! only `Content-Length` gets whole (wasi:http alone sends them chunked,
//! and such a receiver used to get empty bodies, answer 200, and the
//! events counted as delivered).

use crate::support::plugins::plugin_dir;
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
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let text: String = (0..LINES).map(|n| format!("line {n:04}\n")).collect();
    std::fs::write(logs.join("app.log"), text).unwrap();
    let (address, bodies) = content_length_only_receiver();
    let config = dir.path().join("safd.toml");
    std::fs::write(
        &config,
        format!(
            r#"agent_id = "sdk-test"
data_dir = "{data}"
plugin_dir = "{plugins}"

[admin]
listen = "127.0.0.1:0"

[sources.app]
plugin = "file-tail"
config = {{ directory = "{logs}", pattern = "app.log", scan_interval_ms = 50 }}
grants = {{ dirs = ["{logs}"] }}

[groups.hook]
mode = "failover"
plugin = "webhook"
config = {{ token = "t0ken", timeout_ms = 3000 }}
grants = {{ http = ["{address}"] }}
members = [{{ name = "receiver", address = "http://{address}/hook" }}]
streams = ["app"]
"#,
            data = dir.path().join("data").display(),
            plugins = plugin_dir().display(),
            logs = logs.display(),
        ),
    )
    .unwrap();
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
