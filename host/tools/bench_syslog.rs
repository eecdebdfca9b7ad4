//! `safd-tools bench-syslog`: file-tail → durable queue → syslog (plain TCP,
//! newline framing) → a local receiver, with safd as its own process and
//! fsync before every source acknowledgement. A file of N lines is written
//! first; the clock runs from safd's start to the moment the receiver has
//! the last line. The report gives events/s, safd's CPU seconds (and per
//! million lines) and what the receiver got (every line once), median of
//! the runs. safd runs on its default settings: what a new user gets.

use crate::bench::{Figure, ReportSpec, Run, RunArgs, Safd, report_status, wait_counting};
use crate::syslog_receiver::{LineKey, Receiver, config_head};
use anyhow::bail;
use clap::Args;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
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

const FIGURES: [Figure; 5] = [
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
        key: "cpu_secs_per_million",
        label: "safd CPU per million lines",
        unit: "s",
        target: Some((1.5, false)),
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
    if args.line_bytes < 64 {
        bail!("--line-bytes must be at least 64");
    }
    args.runs
        .compile_named(&args.plugins, &["file-tail", "syslog"])?;
    let (_temporary, work) = args.runs.work()?;
    let safd = safd::cli::harness::sibling("safd")?;
    let runs = args.runs.repeat(&work, "syslog", &FIGURES, |dir, run| {
        *run = one_run(args, &safd, dir)?;
        Ok(())
    })?;
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
    report_status(&spec, &figures, &runs)
}

fn one_run(args: &BenchSyslogArgs, safd: &Path, dir: &Path) -> anyhow::Result<Run> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    write_lines(&logs.join("app.log"), args.lines, args.line_bytes)?;
    let receiver = Receiver::start(
        args.lines,
        LineKey::IdOffset {
            line_bytes: args.line_bytes as u64,
        },
    )?;
    let config = dir.join("safd.toml");
    std::fs::write(&config, config_text(dir, &args.plugins, &logs, &receiver))?;
    let safd = Safd::start(safd, &config, args.runs.cache_dir.as_deref())?;
    wait_counting(
        "lines at the receiver",
        args.lines,
        || receiver.lines.load(Ordering::Relaxed),
        |_| receiver.completed().is_some(),
    )?;
    let cpu = safd.cpu_secs();
    let done = receiver.completed().unwrap_or_else(Instant::now);
    let elapsed = done.duration_since(safd.started()).as_secs_f64();
    safd.stop()?;
    let received = receiver.lines.load(Ordering::Relaxed);
    let distinct = receiver.distinct.load(Ordering::Relaxed);
    let mut run = Run::new();
    run.insert("events_per_sec", args.lines as f64 / elapsed);
    run.insert("cpu_secs", cpu);
    run.insert("cpu_secs_per_million", cpu * 1e6 / args.lines as f64);
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

fn config_text(dir: &Path, plugins: &Path, logs: &Path, receiver: &Receiver) -> String {
    format!(
        r#"{head}[sources.app]
plugin = "file-tail"
config = {{ directory = "{logs}", pattern = "app.log" }}
grants = {{ dirs = ["{logs}"] }}

{group}"#,
        head = config_head(&dir.join("queue"), plugins),
        logs = logs.display(),
        group = receiver.group_config(),
    )
}
