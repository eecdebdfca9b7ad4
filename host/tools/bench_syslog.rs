//! `safd-tools bench-syslog`: file-tail → durable queue → syslog (plain TCP,
//! newline framing) → a local receiver, with safd as its own process and
//! fsync before every source acknowledgement. A file of N lines is written
//! first; the clock runs from safd's start to the moment the receiver has
//! the last line. The report gives events/s, safd's CPU seconds and what
//! the receiver got (every line once), median of the runs.

use crate::bench::{Figure, ReportSpec, Run, RunArgs, Safd, report, wait_until};
use anyhow::bail;
use clap::Args;
use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, Args)]
pub(crate) struct BenchSyslogArgs {
    /// Plugin directory holding file-tail and syslog (built by
    /// `cargo xtask plugins` into target/plugins).
    #[arg(long, env = "SAFD_PLUGIN_DIR")]
    plugins: PathBuf,
    /// Lines in the file.
    #[arg(long, default_value_t = 1_000_000)]
    lines: u64,
    /// Bytes per line, the line feed included.
    #[arg(long, default_value_t = 160)]
    line_bytes: usize,
    #[command(flatten)]
    runs: RunArgs,
}

const FIGURES: [Figure; 4] = [
    Figure {
        key: "events_per_sec",
        label: "file → receiver, fsync on (from safd's start)",
        unit: "events/s",
        target: Some((650_000.0, true)),
    },
    Figure {
        key: "cpu_secs",
        label: "safd CPU time (user + system)",
        unit: "s",
        target: None,
    },
    Figure {
        key: "lost_lines",
        label: "lines never received",
        unit: "lines",
        target: Some((0.0, false)),
    },
    Figure {
        key: "extra_lines",
        label: "lines received more than once",
        unit: "lines",
        target: Some((0.0, false)),
    },
];

pub(crate) async fn run(args: BenchSyslogArgs) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(move || bench(&args)).await?
}

fn bench(args: &BenchSyslogArgs) -> anyhow::Result<ExitCode> {
    for plugin in ["file-tail", "syslog"] {
        if !args.plugins.join(format!("{plugin}.wasm")).is_file() {
            bail!(
                "{plugin}.wasm is not in {}; build the plugins with `cargo xtask plugins`",
                args.plugins.display()
            );
        }
    }
    if args.line_bytes < 64 {
        bail!("--line-bytes must be at least 64");
    }
    args.runs.compile_plugins(&[
        args.plugins.join("file-tail.wasm"),
        args.plugins.join("syslog.wasm"),
    ])?;
    let (_temporary, work) = args.runs.work()?;
    let safd = safd::cli::harness::sibling("safd")?;
    let mut runs = Vec::new();
    for n in 1..=args.runs.count {
        let dir = work.join(format!("syslog-run-{n}"));
        std::fs::create_dir_all(&dir)?;
        println!("run {n} of {}", args.runs.count);
        let run = one_run(args, &safd, &dir)?;
        for figure in &FIGURES {
            if let Some(value) = run.get(figure.key) {
                println!("  {:<48} {value:>12.1} {}", figure.label, figure.unit);
            }
        }
        runs.push(run);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let spec = ReportSpec {
        out: &args.runs.out,
        stem: "bench-syslog",
        title: "safd file-tail → syslog benchmark",
        settings: format!(
            "{} runs · {} lines of {} bytes · plain TCP, newline framing",
            args.runs.count, args.lines, args.line_bytes
        ),
        json_settings: serde_json::json!({
            "runs": args.runs.count,
            "lines": args.lines,
            "line_bytes": args.line_bytes,
        }),
    };
    let figures: Vec<&Figure> = FIGURES.iter().collect();
    Ok(if report(&spec, &figures, &runs)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn one_run(args: &BenchSyslogArgs, safd: &Path, dir: &Path) -> anyhow::Result<Run> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    write_lines(&logs.join("app.log"), args.lines, args.line_bytes)?;
    let receiver = Receiver::start(args.lines, args.line_bytes)?;
    let config = dir.join("safd.toml");
    std::fs::write(
        &config,
        config_text(dir, &args.plugins, &logs, receiver.address),
    )?;
    let safd = Safd::start(safd, &config, args.runs.cache_dir.as_deref())?;
    wait_until("the last line at the receiver", || {
        receiver.completed().is_some()
    })?;
    let cpu = safd.cpu_secs();
    let done = receiver.completed().unwrap_or_else(Instant::now);
    let elapsed = done.duration_since(safd.started()).as_secs_f64();
    safd.stop()?;
    let received = receiver.lines.load(Ordering::Relaxed);
    let distinct = receiver.distinct.load(Ordering::Relaxed);
    let mut run = Run::new();
    run.insert("events_per_sec", args.lines as f64 / elapsed);
    run.insert("cpu_secs", cpu);
    run.insert("lost_lines", args.lines.saturating_sub(distinct) as f64);
    run.insert("extra_lines", received.saturating_sub(distinct) as f64);
    Ok(run)
}

/// `lines` lines of exactly `line_bytes` bytes (line feed included).
fn write_lines(path: &Path, lines: u64, line_bytes: usize) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut line = Vec::with_capacity(line_bytes);
    for n in 1..=lines {
        line.clear();
        write!(
            line,
            "2026-11-22T10:00:00.000000Z web01 app[4242]: request {n:09} GET /api/v1/orders status=200 bytes=5120 ms={} ",
            n % 997
        )?;
        line.resize(line_bytes - 1, b'x');
        line.push(b'\n');
        out.write_all(&line)?;
    }
    out.flush()?;
    Ok(())
}

fn config_text(dir: &Path, plugins: &Path, logs: &Path, receiver: SocketAddr) -> String {
    format!(
        r#"agent_id = "bench-safd"
data_dir = "{queue}"
plugin_dir = "{plugins}"

[admin]
listen = "127.0.0.1:0"

[sources.app]
plugin = "file-tail"
config = {{ directory = "{logs}", pattern = "app.log" }}
grants = {{ dirs = ["{logs}"] }}
max_events = 4096

[groups.siem]
mode = "failover"
plugin = "syslog"
config = {{ transport = "tcp", framing = "newline" }}
grants = {{ tcp = ["{receiver}"] }}
members = [{{ name = "receiver", address = "{receiver}" }}]
batch_max_events = 4096
batch_max_bytes = 4194304
"#,
        queue = dir.join("queue").display(),
        plugins = plugins.display(),
        logs = logs.display(),
    )
}

/// A syslog receiver on a loopback port: counts the lines of stream `app`
/// over every connection safd opens, each line by its number (so a loss
/// and a duplicate do not cancel out), and notes when the last missing
/// one came.
struct Receiver {
    address: SocketAddr,
    /// Lines received, repeats included.
    lines: Arc<AtomicU64>,
    /// Distinct lines received.
    distinct: Arc<AtomicU64>,
    completed: Arc<Mutex<Option<Instant>>>,
}

/// What the receiving threads share.
struct Tally {
    expected: u64,
    line_bytes: u64,
    /// One bit per line of the file.
    seen: Vec<AtomicU64>,
    lines: Arc<AtomicU64>,
    distinct: Arc<AtomicU64>,
    completed: Arc<Mutex<Option<Instant>>>,
}

impl Tally {
    /// Count the line whose event id ends in `:offset`.
    fn line_at(&self, offset: u64) {
        self.lines.fetch_add(1, Ordering::Relaxed);
        let line = offset / self.line_bytes;
        let Some(word) = usize::try_from(line / 64)
            .ok()
            .and_then(|w| self.seen.get(w))
        else {
            return;
        };
        let bit = 1u64 << (line % 64);
        if word.fetch_or(bit, Ordering::Relaxed) & bit == 0
            && self.distinct.fetch_add(1, Ordering::Relaxed) + 1 == self.expected
            && let Ok(mut done) = self.completed.lock()
        {
            *done = Some(Instant::now());
        }
    }
}

impl Receiver {
    fn start(expected: u64, line_bytes: usize) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let tally = Arc::new(Tally {
            expected,
            line_bytes: line_bytes as u64,
            seen: (0..expected.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            lines: Arc::default(),
            distinct: Arc::default(),
            completed: Arc::default(),
        });
        let receiver = Self {
            address,
            lines: tally.lines.clone(),
            distinct: tally.distinct.clone(),
            completed: tally.completed.clone(),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let tally = tally.clone();
                std::thread::spawn(move || count_lines(&mut stream, &tally));
            }
        });
        Ok(receiver)
    }

    fn completed(&self) -> Option<Instant> {
        self.completed.lock().ok().and_then(|d| *d)
    }
}

/// The start of a syslog line from one of safd's own events (stream
/// `safd`), which the receiver does not count.
const OWN_EVENT: &[u8] = b"[safd@32473 id=\"safd:";
/// Where the event id starts in the structured data; file-tail's ids end
/// in `:OFFSET`, the line's byte offset in the file.
const ID: &[u8] = b" id=\"";
/// How much of a line's start is enough to see its id.
const HEAD: usize = 160;

/// The offset at the end of the event id in `head`.
fn id_offset(head: &[u8], id: &memchr::memmem::Finder<'_>) -> Option<u64> {
    let start = id.find(head)? + ID.len();
    let rest = head.get(start..)?;
    let end = memchr::memchr(b'"', rest)?;
    let value = rest.get(..end)?;
    let colon = memchr::memrchr(b':', value)?;
    std::str::from_utf8(value.get(colon + 1..)?)
        .ok()?
        .parse()
        .ok()
}

fn count_lines(stream: &mut impl Read, tally: &Tally) {
    let mut buf = vec![0u8; 1 << 20];
    // The start of a line cut by the end of a read.
    let mut carry: Vec<u8> = Vec::with_capacity(HEAD);
    // SIMD searches: the receiver shares the machine with the safd it
    // measures, so it must cost as little CPU as it can.
    let own_event = memchr::memmem::Finder::new(OWN_EVENT);
    let id = memchr::memmem::Finder::new(ID);
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        while let Some(end) = memchr::memchr(b'\n', chunk) {
            let take = end.min(HEAD.saturating_sub(carry.len()));
            carry.extend_from_slice(&chunk[..take]);
            if own_event.find(&carry).is_none()
                && let Some(offset) = id_offset(&carry, &id)
            {
                tally.line_at(offset);
            }
            carry.clear();
            chunk = &chunk[end + 1..];
        }
        let take = chunk.len().min(HEAD.saturating_sub(carry.len()));
        carry.extend_from_slice(&chunk[..take]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_once_by_the_offset_in_their_id() {
        let head = b"<134>1 2026-11-22T10:00:00Z web01 safd - - [safd@32473 \
                     id=\"000000000000abcd00000000000000ff:2560\" stream=\"app\" seq=\"11\"";
        let finder = memchr::memmem::Finder::new(ID);
        assert_eq!(id_offset(head, &finder), Some(2560));
        assert_eq!(id_offset(b"no id here", &finder), None);

        let tally = Tally {
            expected: 3,
            line_bytes: 256,
            seen: (0..1).map(|_| AtomicU64::new(0)).collect(),
            lines: Arc::default(),
            distinct: Arc::default(),
            completed: Arc::default(),
        };
        for offset in [0, 256, 256, 0] {
            tally.line_at(offset);
        }
        // A repeat is counted as received, not as another line: the run
        // is not complete while line 3 is missing.
        assert_eq!(tally.lines.load(Ordering::Relaxed), 4);
        assert_eq!(tally.distinct.load(Ordering::Relaxed), 2);
        assert!(tally.completed.lock().unwrap().is_none());
        tally.line_at(512);
        assert!(tally.completed.lock().unwrap().is_some());
    }
}
