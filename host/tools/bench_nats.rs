//! `safd-tools bench-nats`: file-tail → durable queue → nats-jetstream → an
//! R1 file-backed JetStream stream on a local `nats-server`, safd as its own
//! process with its default batch settings. Two runs each time:
//!
//! - **throughput**: a file of N lines written first; the clock runs from
//!   safd's start until the stream holds the last one; safd's CPU seconds
//!   per million events; the stream's count and its distinct message ids
//!   (every line once);
//! - **latency**: lines appended at a steady rate, each carrying the time
//!   it was written; after the run every tenth stored message is read back
//!   with the time JetStream stored it (which is when it sent the
//!   acknowledgement), so the figure is event written → acknowledged.
//!
//! The stream is read with the official Rust client (`async-nats`), a
//! second implementation of the protocol beside the plugin's own.

use crate::bench::{Figure, ReportSpec, Run, RunArgs, Safd, report_status, wait_counting};
use crate::syslog_receiver::config_head;
use anyhow::{Context, bail};
use clap::Args;
use std::io::{BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub(crate) struct BenchNatsArgs {
    /// Plugin directory holding file-tail and nats-jetstream (built by
    /// `cargo xtask plugins` into target/plugins).
    #[arg(long, env = "SAFD_PLUGIN_DIR")]
    plugins: PathBuf,
    /// Lines of the throughput run.
    #[arg(long, default_value_t = 1_000_000)]
    lines: u64,
    /// Bytes per line, the line feed included.
    #[arg(long, default_value_t = 160)]
    line_bytes: usize,
    /// Lines per second of the latency run.
    #[arg(long, default_value_t = 10_000)]
    rate: u32,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// The plugin's `window` (unanswered publishes); its default when not
    /// given.
    #[arg(long)]
    window: Option<u32>,
    /// The nats-server binary (the Debian package's by default).
    #[arg(long, default_value = "nats-server")]
    nats_server: PathBuf,
    #[command(flatten)]
    runs: RunArgs,
}

const STREAM: &str = "EMS";

const FIGURES: [Figure; 7] = [
    Figure {
        key: "events_per_sec",
        label: "file → JetStream, fsync on (from safd's start)",
        unit: "events/s",
        target: Some((300_000.0, true)),
    },
    Figure {
        key: "cpu_secs_per_million",
        label: "safd CPU time per million events",
        unit: "s",
        target: None,
    },
    Figure {
        key: "server_cpu_secs_per_million",
        label: "nats-server CPU time per million events",
        unit: "s",
        target: None,
    },
    Figure {
        key: "lost",
        label: "lines not in the stream",
        unit: "events",
        target: Some((0.0, false)),
    },
    Figure {
        key: "stored_twice",
        label: "lines stored more than once",
        unit: "events",
        target: Some((0.0, false)),
    },
    Figure {
        key: "latency_p50_ms",
        label: "event written → acknowledged, p50",
        unit: "ms",
        target: None,
    },
    Figure {
        key: "latency_p99_ms",
        label: "event written → acknowledged, p99",
        unit: "ms",
        target: None,
    },
];

pub(crate) async fn run(args: BenchNatsArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || bench(&args, &runtime)).await?
}

fn bench(args: &BenchNatsArgs, runtime: &tokio::runtime::Handle) -> anyhow::Result<ExitCode> {
    if args.line_bytes < 64 {
        bail!("--line-bytes must be at least 64");
    }
    args.runs
        .compile_named(&args.plugins, &["file-tail", "nats-jetstream"])?;
    let (_temporary, work) = args.runs.work()?;
    let safd = safd::cli::harness::sibling("safd")?;
    let runs = args.runs.repeat(&work, "nats", &FIGURES, |dir, run| {
        throughput(args, runtime, &safd, &dir.join("throughput"), run)?;
        latency(args, runtime, &safd, &dir.join("latency"), run)
    })?;
    let spec = ReportSpec {
        out: &args.runs.out,
        stem: "bench-nats",
        title: "safd file-tail → nats-jetstream benchmark",
        settings: format!(
            "{} runs · {} lines of {} bytes · R1 file stream on one local nats-server · \
             latency at {} lines/s for {} s · safd's default batch settings",
            args.runs.count, args.lines, args.line_bytes, args.rate, args.latency_secs
        ),
        json_settings: serde_json::json!({
            "runs": args.runs.count,
            "lines": args.lines,
            "line_bytes": args.line_bytes,
            "rate": args.rate,
            "latency_secs": args.latency_secs,
        }),
    };
    let figures: Vec<&Figure> = FIGURES.iter().collect();
    report_status(&spec, &figures, &runs)
}

fn throughput(
    args: &BenchNatsArgs,
    runtime: &tokio::runtime::Handle,
    safd: &Path,
    dir: &Path,
    run: &mut Run,
) -> anyhow::Result<()> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut lines = BufWriter::with_capacity(1 << 20, std::fs::File::create(logs.join("app.log"))?);
    let mut line = Vec::with_capacity(args.line_bytes);
    for n in 1..=args.lines {
        write_line(&mut line, n, 0, args.line_bytes)?;
        lines.write_all(&line)?;
    }
    lines.flush()?;
    drop(lines);
    let (server, stream, safd) = start(args, runtime, safd, dir, &logs)?;
    wait_counting(
        "events in the stream",
        args.lines,
        || stream.count(),
        |count| count >= args.lines,
    )?;
    let elapsed = safd.started().elapsed().as_secs_f64();
    let cpu = safd.cpu_secs();
    let server_cpu = crate::bench::process_cpu_secs(server.child.id());
    safd.stop()?;
    let (count, distinct) = stream.count_and_distinct_ids()?;
    run.insert("events_per_sec", args.lines as f64 / elapsed);
    run.insert("cpu_secs_per_million", cpu * 1e6 / args.lines as f64);
    run.insert(
        "server_cpu_secs_per_million",
        server_cpu * 1e6 / args.lines as f64,
    );
    run.insert("lost", args.lines.saturating_sub(distinct) as f64);
    run.insert("stored_twice", count.saturating_sub(distinct) as f64);
    Ok(())
}

fn latency(
    args: &BenchNatsArgs,
    runtime: &tokio::runtime::Handle,
    safd: &Path,
    dir: &Path,
    run: &mut Run,
) -> anyhow::Result<()> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let path = logs.join("app.log");
    std::fs::File::create(&path)?;
    let (_server, stream, safd) = start(args, runtime, safd, dir, &logs)?;
    // Appended in 1 ms ticks: `rate / 1000` lines each, each written and
    // flushed with the time it was written.
    let total = u64::from(args.rate) * args.latency_secs;
    let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
    let began = Instant::now();
    let mut line = Vec::with_capacity(args.line_bytes);
    let mut written = 0;
    while written < total {
        let due = (began.elapsed().as_secs_f64() * f64::from(args.rate)) as u64;
        let mut chunk = Vec::new();
        while written < due.min(total) {
            written += 1;
            write_line(&mut line, written, now_micros(), args.line_bytes)?;
            chunk.extend_from_slice(&line);
        }
        file.write_all(&chunk)?;
        std::thread::sleep(Duration::from_millis(1));
    }
    wait_counting(
        "events of the latency run in the stream",
        total,
        || stream.count(),
        |count| count >= total,
    )?;
    safd.stop()?;
    // The first second is warm-up (the first polls, the session opening).
    let from = u64::from(args.rate) + 1;
    let mut latencies = stream.latencies_micros(from, total, 10)?;
    if latencies.is_empty() {
        bail!("the latency run stored no events after its first second");
    }
    crate::bench::insert_latency_quantiles(run, &mut latencies);
    Ok(())
}

/// A nats-server for the run, the bench's reader of its stream, and
/// `safd run` on the run's configuration (file-tail on `logs`).
fn start<'a>(
    args: &BenchNatsArgs,
    runtime: &'a tokio::runtime::Handle,
    safd: &Path,
    dir: &Path,
    logs: &Path,
) -> anyhow::Result<(NatsServer, StreamReader<'a>, Safd)> {
    let server = NatsServer::start(&args.nats_server, &dir.join("nats"))?;
    let stream = StreamReader::connect(runtime, &server.address)?;
    let config = dir.join("safd.toml");
    std::fs::write(
        &config,
        config_text(dir, &args.plugins, logs, &server, args.window),
    )?;
    let safd = Safd::start(safd, &config, args.runs.cache_dir.as_deref())?;
    Ok((server, stream, safd))
}

/// One line of exactly `line_bytes` bytes: its number, the time it was
/// written (µs since the epoch; 0 in the throughput run) and filler.
fn write_line(
    line: &mut Vec<u8>,
    n: u64,
    written_us: i64,
    line_bytes: usize,
) -> anyhow::Result<()> {
    line.clear();
    write!(
        line,
        "2026-11-22T10:00:00.000000Z node01 ems[4242]: event {n:09} written_us={written_us:016} "
    )?;
    line.resize(line_bytes - 1, b'x');
    line.push(b'\n');
    Ok(())
}

fn now_micros() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

fn config_text(
    dir: &Path,
    plugins: &Path,
    logs: &Path,
    server: &NatsServer,
    window: Option<u32>,
) -> String {
    format!(
        r#"{head}[sources.app]
plugin = "file-tail"
config = {{ directory = "{logs}", pattern = "app.log" }}
grants = {{ dirs = ["{logs}"] }}

[groups.jetstream]
mode = "failover"
plugin = "nats-jetstream"
config = {{ stream = "{STREAM}", create_stream = {{ replicas = 1, storage = "file" }}{extra} }}
grants = {{ tcp = ["{address}"] }}
members = [{{ name = "nats", address = "{address}" }}]
streams = ["app"]
"#,
        head = config_head(&dir.join("queue"), plugins),
        logs = logs.display(),
        address = server.address,
        extra = window
            .map(|w| format!(", window = {w}"))
            .unwrap_or_default(),
    )
}

/// A `nats-server -js` on a free loopback port with its store under the
/// run's directory; killed when dropped.
struct NatsServer {
    child: Child,
    address: String,
}

impl NatsServer {
    fn start(binary: &Path, store: &Path) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (cargo xtask test installs the Debian package nats-server)",
                    binary.display()
                )
            })?;
        let server = Self {
            child,
            address: format!("127.0.0.1:{port}"),
        };
        crate::bench::wait_until("nats-server to listen", || {
            TcpStream::connect(&server.address).is_ok()
        })?;
        Ok(server)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The benchmark's view of the stream, through `async-nats`.
struct StreamReader<'a> {
    runtime: &'a tokio::runtime::Handle,
    js: async_nats::jetstream::Context,
}

impl<'a> StreamReader<'a> {
    fn connect(runtime: &'a tokio::runtime::Handle, address: &str) -> anyhow::Result<Self> {
        let client = runtime
            .block_on(async_nats::connect(address))
            .with_context(|| format!("connecting to nats-server at {address}"))?;
        Ok(Self {
            runtime,
            js: async_nats::jetstream::new(client),
        })
    }

    /// Messages in the stream; 0 until safd created it.
    fn count(&self) -> u64 {
        self.runtime.block_on(async {
            match self.js.get_stream(STREAM).await {
                Ok(mut stream) => stream.info().await.map_or(0, |i| i.state.messages),
                Err(_) => 0,
            }
        })
    }

    /// The stream's message count and its distinct `Nats-Msg-Id`s, read
    /// through an ordered consumer (fetching a million messages one
    /// request at a time would take minutes).
    fn count_and_distinct_ids(&self) -> anyhow::Result<(u64, u64)> {
        use futures_util::StreamExt;
        self.runtime.block_on(async {
            let mut stream = self.js.get_stream(STREAM).await?;
            let total = stream.info().await?.state.messages;
            let consumer = stream
                .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
                .await?;
            let mut messages = consumer.messages().await?;
            let mut ids = std::collections::HashSet::new();
            let mut read = 0;
            while read < total {
                let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
                    .await
                    .context("the stream stopped delivering")?
                    .context("the ordered consumer ended")?
                    .map_err(|e| anyhow::anyhow!("reading the stream: {e}"))?;
                read += 1;
                let id = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.as_str().to_owned())
                    .context("a message without Nats-Msg-Id")?;
                ids.insert(id);
            }
            Ok((total, ids.len() as u64))
        })
    }

    /// Stored time − written time, in µs, of every `step`th message from
    /// stream seq `from` to `to` (one safd stream, so stream seq = line).
    fn latencies_micros(&self, from: u64, to: u64, step: usize) -> anyhow::Result<Vec<i64>> {
        self.runtime.block_on(async {
            let stream = self.js.get_stream(STREAM).await?;
            let mut latencies = Vec::new();
            for seq in (from..=to).step_by(step) {
                let message = stream.get_raw_message(seq).await?;
                let stored = (message.time.unix_timestamp_nanos() / 1000) as i64;
                let written = written_us(&message.payload)
                    .with_context(|| format!("stream message {seq} has no written_us"))?;
                latencies.push(stored - written);
            }
            Ok(latencies)
        })
    }
}

/// The `written_us=` figure in a message's payload (the JSON body holds
/// the line as written).
fn written_us(payload: &[u8]) -> Option<i64> {
    const KEY: &[u8] = b"written_us=";
    let start = memchr::memmem::find(payload, KEY)? + KEY.len();
    let digits = payload.get(start..start + 16)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}
