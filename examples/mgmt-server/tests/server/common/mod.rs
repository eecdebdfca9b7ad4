//! Runs the real `safd-mgmt` binary on a loopback port. Shared with safd's
//! own end-to-end tests (`host/tests/e2e`, through `#[path]`).
#![allow(dead_code, clippy::unwrap_used)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const TOKEN: &str = "test-token";

/// The `safd-mgmt` binary: Cargo names it for this package's tests; other
/// packages' tests find it next to their own executable's directory
/// (`cargo test --workspace`, as `cargo xtask test` runs, builds it).
pub fn binary() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_safd-mgmt") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("safd-mgmt");
    assert!(
        path.is_file(),
        "{} is missing; build it with `cargo build -p safd-mgmt` (`cargo xtask test` does)",
        path.display()
    );
    path
}

/// The `host:port` of an `http://host:port` address.
pub fn authority_of(address: &str) -> String {
    address.trim_start_matches("http://").to_owned()
}

pub struct Server {
    child: Child,
    pub base: String,
}

impl Server {
    /// Start the server on a free port with its database in `data`.
    pub fn start(data: &Path, extra: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", data, extra)
    }

    /// Start the server on `listen` (e.g. the address a killed server had).
    pub fn start_on(listen: &str, data: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(binary())
            .args(["--listen", listen, "--token", TOKEN, "--data"])
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first).unwrap();
        let base = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
            .to_owned();
        Self { child, base }
    }

    /// `host:port`, as safd's `grants.http` names it.
    pub fn authority(&self) -> String {
        authority_of(&self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop the server (SIGKILL: nothing may depend on a clean exit).
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/safd/v1/{path}", self.base)
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    /// POST `body` with the right token; (status, JSON answer).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_with(path, body, Some(TOKEN))
    }

    pub fn post_with(&self, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
        let mut request = Self::agent().post(&self.url(path));
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = request.send_json(body).unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_json().unwrap_or(Value::Null),
        )
    }

    pub fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let (status, text) = self.post_bytes(path, body.as_bytes());
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// POST raw bytes (which need not be JSON, or UTF-8); (status, the
    /// answer's text).
    pub fn post_bytes(&self, path: &str, body: &[u8]) -> (u16, String) {
        let mut response = Self::agent()
            .post(&self.url(path))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    /// The server's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        memory_kib(self.pid(), "VmRSS").unwrap()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let mut response = Self::agent()
            .get(&self.url(path))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_json().unwrap_or(Value::Null),
        )
    }

    pub fn register(&self, agent: &str, stored: Value) -> Value {
        let (status, body) = self.post(
            "register",
            &json!({
                "agent_id": agent, "group": "mgmt", "member": "primary", "role": "primary",
                "epoch": 3, "active": true, "stored": stored, "acknowledged": {}
            }),
        );
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Deliver events `(seq, id)` of one stream; returns the answer.
    pub fn deliver(&self, agent: &str, stream: &str, events: &[(u64, &str)]) -> Value {
        let events: Vec<Value> = events.iter().map(|&(seq, id)| event(seq, id)).collect();
        let (status, body) = self.post(
            "events",
            &json!({"agent_id": agent, "group": "mgmt", "epoch": 3,
                    "batches": [{"stream": stream, "events": events}]}),
        );
        assert_eq!(status, 200, "{body}");
        body
    }

    pub fn stored(&self) -> u64 {
        self.get("stats").1["counters"]["stored"].as_u64().unwrap()
    }

    pub fn events(&self, query: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("query/events?{query}"));
        assert_eq!(status, 200, "{body}");
        body.as_array().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn event(seq: u64, id: &str) -> Value {
    json!({
        "seq": seq, "id": id, "time": "2024-03-11T01:17:10.002311Z", "severity": "critical",
        "attributes": [["subsystem", "EXPAND"], ["event_number", "45"]],
        "body": format!("LDEV 123 $LHNY1: LINE NOT READY ({id})")
    })
}

/// A memory figure (`VmRSS`, `VmHWM`, …) of process `pid` in KiB, from
/// `/proc/PID/status`; `None` once the process is gone.
pub fn memory_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}
