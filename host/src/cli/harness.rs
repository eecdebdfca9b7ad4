//! What `safd demo` and `safd-tools bench` set up around safd: `safd-mgmt`
//! servers that can be killed, stopped and restarted on their address, the
//! EMS simulator, the generated configuration, and counting what the
//! servers hold.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

pub const TOKEN: &str = "demo";
pub const STREAM: &str = "ems-prod1";

/// The binary `name` next to the running one (`safd` for `safd-tools`).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?
        .parent()
        .context("the directory of this program")?
        .join(name);
    if !path.is_file() {
        bail!(
            "{} is missing; build it with `cargo build -p safd` (the xtask commands do)",
            path.display()
        );
    }
    Ok(path)
}

/// `safd-mgmt` and `ems-sim`, from `bin_dir` or next to this safd.
pub fn tools(bin_dir: Option<&Path>) -> anyhow::Result<(PathBuf, PathBuf)> {
    let bin_dir = match bin_dir {
        Some(dir) => dir.to_owned(),
        None => std::env::current_exe()?
            .parent()
            .context("the directory of this safd")?
            .to_owned(),
    };
    let tool = |name: &str| -> anyhow::Result<PathBuf> {
        let path = bin_dir.join(name);
        if !path.is_file() {
            bail!(
                "{} is missing; build it with `cargo build -p {name}` (`cargo xtask demo` does), \
                 or point --bin-dir at it",
                path.display()
            );
        }
        Ok(path)
    };
    Ok((tool("safd-mgmt")?, tool("ems-sim")?))
}

/// The EMS simulator writing live format B logs into `logs` at `rate`
/// events/s (from `seed`), until killed.
pub fn start_simulator(sim: &Path, logs: &Path, rate: u32, seed: u64) -> anyhow::Result<Child> {
    Command::new(sim)
        .arg("--dir")
        .arg(logs)
        .args(["--format", "b", "--seed"])
        .arg(seed.to_string())
        .arg("--rate")
        .arg(rate.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", sim.display()))
}

/// Fail early, naming the fix, when the plugins are not built.
pub fn check_plugins(plugins: &Path) -> anyhow::Result<()> {
    for plugin in ["ems-reader", "mgmt-http"] {
        if !plugins.join(format!("{plugin}.wasm")).is_file() {
            bail!(
                "{plugin}.wasm is not in {}; build the plugins with `cargo xtask plugins`",
                plugins.display()
            );
        }
    }
    Ok(())
}

/// A configuration: the EMS directory `logs` (format B) → the failover
/// group `mgmt` of `members` (name, address), with `group_extra` lines
/// appended to the group's table.
pub fn config_text(
    queue: &Path,
    plugins: &Path,
    logs: &Path,
    members: &[(&str, SocketAddr)],
    group_extra: &str,
) -> String {
    format!(
        r#"agent_id = "prod1-safd"
data_dir = "{queue}"
plugin_dir = "{plugins}"

[admin]
listen = "127.0.0.1:0"

[sources.{STREAM}]
plugin = "ems-reader"
config = {{ directory = "{logs}", format = "b", system = "\\PROD1" }}
grants = {{ dirs = ["{logs}"] }}
{group}"#,
        queue = queue.display(),
        plugins = plugins.display(),
        logs = logs.display(),
        group = mgmt_group(
            members,
            ", connect_timeout_ms = 500",
            &format!("probe_interval_ms = 200\n{group_extra}\n"),
        ),
    )
}

/// Group `mgmt`: mgmt-http to `members` (name, address) with the demo
/// token, `config_extra` appended inside its plugin config (`, key = …`)
/// and `group_extra` after the group's settings.
pub fn mgmt_group(members: &[(&str, SocketAddr)], config_extra: &str, group_extra: &str) -> String {
    let grants: Vec<String> = members.iter().map(|(_, a)| format!("\"{a}\"")).collect();
    let members: Vec<String> = members
        .iter()
        .map(|(name, a)| format!("{{ name = \"{name}\", address = \"http://{a}\" }}"))
        .collect();
    format!(
        r#"
[groups.mgmt]
mode = "failover"
plugin = "mgmt-http"
config = {{ token = "{TOKEN}"{config_extra} }}
grants = {{ http = [{grants}] }}
members = [{members}]
{group_extra}"#,
        grants = grants.join(", "),
        members = members.join(", "),
    )
}

/// A `safd-mgmt` process that can be killed and restarted on its address:
/// the one runner of the reference server, used by `safd demo`, by
/// `safd-tools` and by the end-to-end tests (`tests/e2e/support/mgmt.rs`).
#[derive(Debug)]
pub struct Server {
    name: &'static str,
    binary: PathBuf,
    data: PathBuf,
    options: ServerOptions,
    pub address: SocketAddr,
    /// `https` when started with `--tls-cert`.
    scheme: &'static str,
    child: Option<Child>,
}

/// How a [`Server`] is started, beyond its binary and data directory.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Where it listens first (port 0: a free one); a restart reuses the
    /// address it got.
    pub listen: SocketAddr,
    /// The bearer token it accepts (`--token`).
    pub token: String,
    /// More command-line arguments (`--max-streams 10`, …).
    pub extra: Vec<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: TOKEN.to_owned(),
            extra: Vec::new(),
        }
    }
}

impl Server {
    pub fn start(name: &'static str, binary: &Path, data: PathBuf) -> anyhow::Result<Self> {
        Self::start_with(name, binary, data, ServerOptions::default())
    }

    pub fn start_with(
        name: &'static str,
        binary: &Path,
        data: PathBuf,
        options: ServerOptions,
    ) -> anyhow::Result<Self> {
        let mut server = Self {
            name,
            binary: binary.to_owned(),
            data,
            address: options.listen,
            options,
            scheme: "http",
            child: None,
        };
        server.restart()?;
        Ok(server)
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        let mut child = Command::new(&self.binary)
            .arg("--listen")
            .arg(self.address.to_string())
            .args(["--token", &self.options.token, "--data"])
            .arg(&self.data)
            .args(&self.options.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let stdout = child.stdout.take().context("safd-mgmt's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let listening = line.trim().strip_prefix("listening on ");
        let Some((scheme, address)) = listening.and_then(|url| url.split_once("://")) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("safd-mgmt ({}) did not start: {line:?}", self.name);
        };
        self.scheme = if scheme == "https" { "https" } else { "http" };
        self.address = address.parse()?;
        self.child = Some(child);
        Ok(())
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process was started and has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// SIGKILL: from now on its address refuses connections.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Send `signal` (`STOP`, `CONT`) to the running server.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("the server is not running")?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{signal} {} failed", child.id());
        }
        Ok(())
    }

    pub fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.address)
    }

    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    fn get(&self, path: &str) -> Option<serde_json::Value> {
        let mut response = ureq::get(&format!("{}/safd/v1/{path}", self.base()))
            .header("Authorization", &format!("Bearer {}", self.options.token))
            .call()
            .ok()?;
        response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_json()
            .ok()
    }

    /// The stream's entry in `/stats`.
    fn stream(&self) -> Option<serde_json::Value> {
        self.get("stats")?["streams"]
            .as_array()?
            .iter()
            .find(|s| s["stream"] == STREAM)
            .cloned()
    }

    /// This stream's held seq ranges at the server (empty if it is down).
    pub fn held(&self) -> Vec<(u64, u64)> {
        self.stream()
            .and_then(|s| s["held"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|pair| Some((pair[0].as_u64()?, pair[1].as_u64()?)))
            .collect()
    }

    /// Highest seq held with every seq below it (0 if none, or down).
    pub fn high_water(&self) -> u64 {
        self.stream()
            .and_then(|s| s["high_water"].as_u64())
            .unwrap_or(0)
    }

    /// Events this server stored, over every agent and stream (0 if down).
    pub fn stored(&self) -> u64 {
        self.get("stats")
            .and_then(|stats| stats["counters"]["stored"].as_u64())
            .unwrap_or(0)
    }

    /// Events this server received again and stored once.
    pub fn recognised(&self) -> u64 {
        self.get("stats")
            .and_then(|stats| stats["counters"]["duplicates"].as_u64())
            .unwrap_or(0)
    }

    /// The ids of the stream's events whose event time is in `since..until`
    /// (µs), as stored, one entry per stored event: asked for in windows of
    /// `step` µs (a query walks its whole time range, so small windows are
    /// much faster than one large one split on demand).
    pub fn ids_in_windows(&self, since: i64, until: i64, step: i64) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut from = since;
        while from < until {
            let to = (from + step.max(1)).min(until);
            ids.extend(self.ids(from, to)?);
            from = to;
        }
        Ok(ids)
    }

    /// The ids of the stream's events whose event time is in `since..until`
    /// (µs), as stored, one entry per stored event; windows holding more than
    /// a query returns are split.
    pub fn ids(&self, since: i64, until: i64) -> anyhow::Result<Vec<String>> {
        const LIMIT: usize = 10_000;
        let rfc3339 = |micros: i64| {
            jiff::Timestamp::from_microsecond(micros)
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        let events = self
            .get(&format!(
                "query/events?stream={STREAM}&since={}&until={}&limit={LIMIT}",
                rfc3339(since),
                rfc3339(until)
            ))
            .and_then(|events| events.as_array().cloned())
            .with_context(|| format!("querying {} for events", self.name))?;
        if events.len() >= LIMIT && until - since > 1 {
            let middle = since + (until - since) / 2;
            let mut ids = self.ids(since, middle)?;
            ids.extend(self.ids(middle, until)?);
            return Ok(ids);
        }
        Ok(events
            .iter()
            .filter_map(|e| e["id"].as_str().map(str::to_owned))
            .collect())
    }

    /// (event time, received at) in µs of the stream's events whose event
    /// time is in `since..until` (µs); at most the 10 000 received last.
    pub fn times(&self, since: i64, until: i64) -> Vec<(i64, i64)> {
        let rfc3339 = |micros: i64| {
            jiff::Timestamp::from_microsecond(micros)
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        self.get(&format!(
            "query/events?stream={STREAM}&since={}&until={}&limit=10000",
            rfc3339(since),
            rfc3339(until)
        ))
        .and_then(|events| events.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| Some((e["time"].as_i64()?, e["received_at"].as_i64()?)))
        .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A stopped process cannot die until it is continued.
        let _ = self.signal("CONT");
        self.kill();
    }
}

/// What the servers hold, counted by event id (not by seq: a source that
/// read events again gives them new seqs, which a count of seqs would take
/// for new events, and a loss and a duplicate would cancel out).
#[derive(Debug, Default)]
pub struct IdCount {
    /// Distinct ids held by any of the servers.
    pub held: u64,
    /// Per server, distinct ids held.
    pub per_server: Vec<u64>,
    /// Events a server stored more than once (an id it holds twice),
    /// summed over the servers.
    pub stored_twice: u64,
}

impl IdCount {
    /// Count the ids of the events whose event time is in `from..until`
    /// (µs) at each of `servers`.
    pub fn of(servers: &[&Server], from: i64, until: i64) -> anyhow::Result<Self> {
        let mut count = Self::default();
        let mut held: std::collections::HashSet<String> = std::collections::HashSet::new();
        for server in servers {
            let ids = server.ids_in_windows(from, until, 4_000_000)?;
            let distinct: std::collections::HashSet<&String> = ids.iter().collect();
            count.stored_twice += (ids.len() - distinct.len()) as u64;
            count.per_server.push(distinct.len() as u64);
            held.extend(ids);
        }
        count.held = held.len() as u64;
        Ok(count)
    }
}

/// The wall-clock time of `at`, in µs since the Unix epoch: the event
/// times of what the simulator wrote since then start there.
pub fn clock_micros(at: Instant) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let ago =
        i64::try_from(Instant::now().saturating_duration_since(at).as_micros()).unwrap_or(i64::MAX);
    now.saturating_sub(ago)
}

pub fn count(held: &[(u64, u64)]) -> u64 {
    held.iter().map(|(a, b)| b - a + 1).sum()
}

/// Distinct seqs held by either server.
pub fn union(a: &[(u64, u64)], b: &[(u64, u64)]) -> u64 {
    let mut all: Vec<(u64, u64)> = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    let mut total = 0;
    let mut current: Option<(u64, u64)> = None;
    for (start, end) in all {
        current = match current {
            Some((s, e)) if start <= e + 1 => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s + 1;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    total + current.map_or(0, |(s, e)| e - s + 1)
}

/// Complete lines (format B: one event each) in the simulator's files.
pub fn generated(logs: &Path) -> u64 {
    std::fs::read_dir(logs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path()).ok())
        .map(|bytes| bytes.iter().filter(|&&b| b == b'\n').count() as u64)
        .sum()
}
