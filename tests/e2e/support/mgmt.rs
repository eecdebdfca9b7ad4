//! The real `safd-mgmt` on a loopback port, with the requests the tests
//! make of it. The process itself is started by safd's one runner of the
//! reference server (`safd::cli::harness::Server`, which `safd demo` and
//! `safd-tools` use too).

use safd::cli::harness::{self, ServerOptions};
use safd_event_block::delivery;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;

pub const TOKEN: &str = "test-token";

/// The `host:port` of an `http://host:port` (or `https://`) address.
pub fn authority_of(address: &str) -> String {
    address
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_owned()
}

pub struct Server {
    process: harness::Server,
    pub base: String,
    /// How [`Server::post`] sends deliveries.
    body: Body,
}

/// The two delivery bodies of protocol v1: the tests of the server and of
/// mgmt-http run once with each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// The server started with `--body-formats json`; deliveries as JSON.
    Json,
    /// The server as it starts by default (both bodies listed);
    /// deliveries in the binary body wherever a request can be written in
    /// it (see [`binary_body`]).
    Binary,
}

impl Body {
    /// The `/stats` `deliveries` key of this body.
    pub fn stats_key(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Binary => "event_block",
        }
    }
}

impl Server {
    /// Start the server on a free port with its database in `data`.
    pub fn start(data: &Path, extra: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", data, extra)
    }

    /// [`Server::start`] for tests run with each body: with `Body::Json`
    /// the server reads and lists JSON only, so that mgmt-http sends JSON
    /// too.
    pub fn start_for(body: Body, data: &Path, extra: &[&str]) -> Self {
        let mut args = extra.to_vec();
        if body == Body::Json {
            args.extend(["--body-formats", "json"]);
        }
        let mut server = Self::start(data, &args);
        server.body = body;
        server
    }

    /// Deliveries the server received in each body: (JSON, binary).
    pub fn deliveries(&self) -> (u64, u64) {
        let stats = self.get("stats").1;
        let count = |key: &str| stats["deliveries"][key].as_u64().unwrap();
        (count("json"), count("event_block"))
    }

    /// Every delivery so far came in `body` (and there was one).
    pub fn assert_deliveries_in(&self, body: Body) {
        let (json, binary) = self.deliveries();
        match body {
            Body::Json => assert!(json > 0 && binary == 0, "json {json}, binary {binary}"),
            Body::Binary => assert!(binary > 0 && json == 0, "json {json}, binary {binary}"),
        }
    }

    /// Start the server on `listen` (e.g. the address a killed server had).
    pub fn start_on(listen: &str, data: &Path, extra: &[&str]) -> Self {
        let options = ServerOptions {
            listen: listen.parse::<SocketAddr>().unwrap(),
            token: TOKEN.to_owned(),
            extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
        };
        let process = harness::Server::start_with(
            "safd-mgmt",
            &super::binary("safd-mgmt"),
            data.to_owned(),
            options,
        )
        .unwrap();
        let base = process.base();
        Self {
            process,
            base,
            body: Body::Json,
        }
    }

    /// `host:port`, as safd's `grants.http` names it.
    pub fn authority(&self) -> String {
        authority_of(&self.base)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid().unwrap()
    }

    /// Stop the server (SIGKILL: nothing may depend on a clean exit).
    pub fn kill(mut self) {
        self.process.kill();
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
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
        let binary = (self.body == Body::Binary && path == "events")
            .then(|| binary_body(body))
            .flatten();
        let mut response = match binary {
            Some(bytes) => request
                .header("Content-Type", delivery::CONTENT_TYPE)
                .send(&bytes[..])
                .unwrap(),
            None => request.send_json(body).unwrap(),
        };
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
        self.post_typed(path, "application/json", body)
    }

    /// POST raw bytes as `content_type`; (status, the answer's text).
    pub fn post_typed(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        let mut response = Self::agent()
            .post(&self.url(path))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .header("Content-Type", content_type)
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

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.get_with(path, TOKEN)
    }

    /// GET with `token`; (status, the answer as JSON).
    pub fn get_with(&self, path: &str, token: &str) -> (u16, Value) {
        let mut response = Self::agent()
            .get(&self.url(path))
            .header("Authorization", &format!("Bearer {token}"))
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

/// A JSON delivery request written as the binary body, or `None` when it
/// says something only JSON can (a severity or time that does not parse,
/// a field the protocol does not have, seqs that do not increase): the
/// tests of JSON's own checks then still send JSON.
pub fn binary_body(request: &Value) -> Option<Vec<u8>> {
    let request = request.as_object()?;
    only_keys(request, &["agent_id", "group", "epoch", "batches"])?;
    let batches = request.get("batches")?.as_array()?;
    let mut out = Vec::new();
    delivery::put_header(
        &mut out,
        request.get("agent_id")?.as_str()?,
        request.get("group")?.as_str()?,
        request.get("epoch")?.as_u64()?,
        batches.len(),
    );
    for batch in batches {
        let batch = batch.as_object()?;
        only_keys(batch, &["stream", "events", "left_out"])?;
        let mut block = safd_event_block::BlockWriter::new();
        let mut previous = 0;
        for event in batch.get("events")?.as_array()? {
            let event = event.as_object()?;
            only_keys(
                event,
                &["seq", "id", "time", "severity", "attributes", "body"],
            )?;
            let seq = event.get("seq")?.as_u64().filter(|&seq| seq > previous)?;
            previous = seq;
            let time: jiff::Timestamp = event.get("time")?.as_str()?.parse().ok()?;
            let severity = safd_event_block::Severity::from_name(event.get("severity")?.as_str()?)?;
            let attributes = pairs(event.get("attributes"), Value::as_str)?;
            block.push_sequenced(
                seq,
                event.get("id")?.as_str()?,
                time.as_microsecond(),
                severity.code(),
                attributes,
                event.get("body")?.as_str()?,
            );
        }
        let left_out = pairs(batch.get("left_out"), Value::as_u64)?;
        let (count, bytes) = block.finish();
        delivery::put_batch(
            &mut out,
            batch.get("stream")?.as_str()?,
            left_out,
            count,
            &bytes,
        );
    }
    Some(out)
}

/// A JSON list of two-element lists (`[["k", "v"], …]`, `[[1, 5], …]`),
/// each element read by `item`; an absent list is empty.
fn pairs<'v, T>(
    list: Option<&'v Value>,
    item: impl Fn(&'v Value) -> Option<T>,
) -> Option<Vec<(T, T)>> {
    let Some(list) = list else {
        return Some(Vec::new());
    };
    list.as_array()?
        .iter()
        .map(|pair| match pair.as_array()?.as_slice() {
            [a, b] => Some((item(a)?, item(b)?)),
            _ => None,
        })
        .collect()
}

fn only_keys(object: &serde_json::Map<String, Value>, known: &[&str]) -> Option<()> {
    object
        .keys()
        .all(|key| known.contains(&key.as_str()))
        .then_some(())
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

/// What [`tail_config`] adds to its sections (TOML, each may be empty).
#[derive(Default)]
pub struct TailConfig<'a> {
    /// Lines after `[admin] listen`.
    pub admin: &'a str,
    /// mgmt-http's config keys before `timeout_ms` (with its trailing
    /// comma), e.g. `token = "…",`.
    pub mgmt: &'a str,
    /// Keys after `grants.http` (with a leading comma).
    pub grants: &'a str,
}

/// A safd configuration in `dir/safd.toml`: file-tail on `dir/logs/app.log`
/// (stream `app`) to the member `primary` at `base` through mgmt-http.
pub fn tail_config(dir: &Path, base: &str, extra: &TailConfig<'_>) -> std::path::PathBuf {
    let logs = dir.join("logs");
    let mgmt = if extra.mgmt.is_empty() {
        format!("token = \"{TOKEN}\",")
    } else {
        extra.mgmt.to_owned()
    };
    let text = format!(
        r#"agent_id = "tail-agent"
data_dir = "{data}"
plugin_dir = "{plugins}"

[admin]
listen = "127.0.0.1:0"
{admin}

[sources.app]
plugin = "file-tail"
config = {{ directory = "{logs}", pattern = "app.log" }}
grants = {{ dirs = ["{logs}"] }}

[groups.mgmt]
mode = "failover"
plugin = "mgmt-http"
config = {{ {mgmt} timeout_ms = 3000 }}
grants = {{ http = ["{authority}"]{grants} }}
members = [{{ name = "primary", address = "{base}" }}]
probe_interval_ms = 200
"#,
        data = dir.join("data").display(),
        plugins = super::plugins::plugin_dir().display(),
        logs = logs.display(),
        admin = extra.admin,
        grants = extra.grants,
        authority = authority_of(base),
    );
    let path = dir.join("safd.toml");
    std::fs::write(&path, text).unwrap();
    path
}
