//! `safd-tools bench-net-in`: EMS format A text sent over the network into
//! net-in → durable queue (fsync before every source commit) → syslog
//! (plain TCP) → a local receiver, with safd as its own process. Two
//! transports: plain TCP (one connection, the text as a printing
//! distributor writes it) and RELP (one session, a window of 1 024 frames,
//! each answered only after safd stored it). The clock runs from the first
//! byte sent to the moment the receiver has the last event; the report
//! gives events/s, safd's CPU seconds per million events and what the
//! receiver got (every event once), median of the runs.

use crate::bench::{
    Figure, ReportSpec, Run, RunArgs, Safd, report_status, wait_counting, wait_until,
};
use crate::syslog_receiver::{LineKey, Receiver, config_head};
use anyhow::{Context, bail};
use clap::Args;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub(crate) struct BenchNetInArgs {
    /// Plugin directory holding net-in and syslog (built by `cargo xtask
    /// plugins` into target/plugins).
    #[arg(long, env = "SAFD_PLUGIN_DIR")]
    plugins: PathBuf,
    /// EMS events sent per transport.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Bytes per event record, the line feed included.
    #[arg(long, default_value_t = 160)]
    record_bytes: usize,
    /// RELP frames sent before waiting for their answers.
    #[arg(long, default_value_t = 1024)]
    relp_window: u64,
    #[command(flatten)]
    runs: RunArgs,
}

const FIGURES: [Figure; 8] = [
    Figure {
        key: "tcp_events_per_sec",
        label: "plain TCP → receiver, fsync on",
        unit: "events/s",
        target: Some((400_000.0, true)),
    },
    Figure {
        key: "tcp_cpu_per_million",
        label: "plain TCP: safd CPU per million events",
        unit: "s",
        target: None,
    },
    Figure {
        key: "tcp_lost",
        label: "plain TCP: events never received",
        unit: "events",
        target: Some((0.0, false)),
    },
    Figure {
        key: "tcp_extra",
        label: "plain TCP: events received more than once",
        unit: "events",
        target: Some((0.0, false)),
    },
    Figure {
        key: "relp_events_per_sec",
        label: "RELP → receiver, answered after fsync",
        unit: "events/s",
        target: Some((250_000.0, true)),
    },
    Figure {
        key: "relp_cpu_per_million",
        label: "RELP: safd CPU per million events",
        unit: "s",
        target: None,
    },
    Figure {
        key: "relp_lost",
        label: "RELP: events never received",
        unit: "events",
        target: Some((0.0, false)),
    },
    Figure {
        key: "relp_extra",
        label: "RELP: events received more than once",
        unit: "events",
        target: Some((0.0, false)),
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Relp,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Relp => "relp",
        }
    }
}

pub(crate) async fn run(args: BenchNetInArgs) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(move || bench(&args)).await?
}

fn bench(args: &BenchNetInArgs) -> anyhow::Result<ExitCode> {
    if args.record_bytes < 100 {
        bail!("--record-bytes must be at least 100");
    }
    args.runs
        .compile_named(&args.plugins, &["net-in", "syslog"])?;
    let (_temporary, work) = args.runs.work()?;
    let safd = safd::cli::harness::sibling("safd")?;
    let runs = args.runs.repeat(&work, "net-in", &FIGURES, |dir, run| {
        for transport in [Transport::Tcp, Transport::Relp] {
            let dir = dir.join(transport.name());
            std::fs::create_dir_all(&dir)?;
            one_run(args, &safd, &dir, transport, run)?;
        }
        Ok(())
    })?;
    let spec = ReportSpec {
        out: &args.runs.out,
        stem: "bench-net-in",
        title: "safd net-in benchmark (EMS format A over TCP and RELP → syslog)",
        settings: format!(
            "{} runs · {} events of {} bytes per transport · RELP window {}",
            args.runs.count, args.events, args.record_bytes, args.relp_window
        ),
        json_settings: serde_json::json!({
            "runs": args.runs.count,
            "events": args.events,
            "record_bytes": args.record_bytes,
            "relp_window": args.relp_window,
        }),
    };
    let figures: Vec<&Figure> = FIGURES.iter().collect();
    report_status(&spec, &figures, &runs)
}

fn one_run(
    args: &BenchNetInArgs,
    safd: &Path,
    dir: &Path,
    transport: Transport,
    run: &mut Run,
) -> anyhow::Result<()> {
    let receiver = Receiver::start(args.events, LineKey::RequestNumber)?;
    let listen = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let config = dir.join("safd.toml");
    std::fs::write(
        &config,
        config_text(dir, &args.plugins, listen, transport, &receiver),
    )?;
    let safd = Safd::start(safd, &config, args.runs.cache_dir.as_deref())?;
    let mut connection = None;
    wait_until("net-in listening", || {
        connection = TcpStream::connect(listen).ok();
        connection.is_some()
    })?;
    let connection = connection.context("net-in listening")?;
    let started = Instant::now();
    let sender = {
        let (events, record_bytes, window) = (args.events, args.record_bytes, args.relp_window);
        std::thread::spawn(move || match transport {
            Transport::Tcp => send_tcp(connection, events, record_bytes),
            Transport::Relp => send_relp(connection, events, record_bytes, window),
        })
    };
    wait_counting(
        "lines at the receiver",
        args.events,
        || receiver.lines.load(Ordering::Relaxed),
        |_| receiver.completed().is_some(),
    )?;
    let cpu = safd.cpu_secs();
    let done = receiver.completed().unwrap_or_else(Instant::now);
    let elapsed = done.duration_since(started).as_secs_f64();
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    safd.stop()?;
    let received = receiver.lines.load(Ordering::Relaxed);
    let distinct = receiver.distinct.load(Ordering::Relaxed);
    let [per_sec, cpu_per_million, lost, extra] = match transport {
        Transport::Tcp => [
            "tcp_events_per_sec",
            "tcp_cpu_per_million",
            "tcp_lost",
            "tcp_extra",
        ],
        Transport::Relp => [
            "relp_events_per_sec",
            "relp_cpu_per_million",
            "relp_lost",
            "relp_extra",
        ],
    };
    run.insert(per_sec, args.events as f64 / elapsed);
    run.insert(cpu_per_million, cpu * 1e6 / args.events as f64);
    run.insert(lost, args.events.saturating_sub(distinct) as f64);
    run.insert(extra, received.saturating_sub(distinct) as f64);
    Ok(())
}

/// Event `n` as format A prints it, `record_bytes` long with its line
/// feed: `request NNNNNNNNN` in the text tells the receiver which it is.
fn record(n: u64, record_bytes: usize, out: &mut Vec<u8>) {
    let start = out.len();
    // `write!` into a Vec cannot fail.
    let _ = write!(
        out,
        "24-03-11 02:{:02}:{:02} \\PROD1.$ZZKRN    TANDEM.EMS.H01      000512 request {n:09} ",
        (n / 60) % 60,
        n % 60,
    );
    let end = start + record_bytes - 1;
    out.resize(end.max(out.len()), b'x');
    out.push(b'\n');
}

fn send_tcp(connection: TcpStream, events: u64, record_bytes: usize) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, connection);
    let mut line = Vec::with_capacity(record_bytes);
    for n in 0..events {
        line.clear();
        record(n, record_bytes, &mut line);
        out.write_all(&line)?;
    }
    out.flush()?;
    Ok(())
}

/// A RELP client as rsyslog's omrelp is: `open`, then `syslog` frames,
/// at most `window` of them unanswered, then `close`.
fn send_relp(
    connection: TcpStream,
    events: u64,
    record_bytes: usize,
    window: u64,
) -> anyhow::Result<()> {
    let answered = Arc::new(AtomicU64::new(0));
    let reader = {
        let answered = answered.clone();
        let stream = connection.try_clone()?;
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut lines = BufReader::with_capacity(1 << 16, stream);
            let mut line = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                // `N rsp 6 200 OK`; the open's answer goes on over lines
                // of its own (its offers), which hold no ` rsp `.
                if line.contains(" rsp ") && !line.starts_with("1 rsp ") {
                    if !line.contains(" 200 OK") && !line.trim_end().ends_with(" rsp 0") {
                        bail!("RELP refused: {}", line.trim_end());
                    }
                    answered.fetch_add(1, Ordering::Release);
                }
            }
        })
    };
    let mut out = BufWriter::with_capacity(1 << 20, connection);
    let offers = "relp_version=0\nrelp_software=safd-bench\ncommands=syslog";
    writeln!(out, "1 open {} {offers}", offers.len())?;
    let mut message = Vec::with_capacity(record_bytes);
    for n in 0..events {
        while n.saturating_sub(answered.load(Ordering::Acquire)) >= window {
            out.flush()?;
            std::thread::sleep(Duration::from_micros(200));
        }
        message.clear();
        record(n, record_bytes, &mut message);
        message.pop(); // one record per frame, without its line feed
        write!(out, "{} syslog {} ", n + 2, message.len())?;
        out.write_all(&message)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    while answered.load(Ordering::Acquire) < events {
        std::thread::sleep(Duration::from_millis(1));
    }
    writeln!(out, "{} close 0", events + 2)?;
    out.flush()?;
    drop(out);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the RELP reader panicked"))?
}

fn config_text(
    dir: &Path,
    plugins: &Path,
    listen: SocketAddr,
    transport: Transport,
    receiver: &Receiver,
) -> String {
    format!(
        r#"{head}[sources.ems]
plugin = "net-in"
config = {{ listen = "{listen}", transport = "{transport}", format = "ems" }}
grants = {{ listen = ["{listen}"] }}
max_events = 4096

{group}"#,
        head = config_head(&dir.join("queue"), plugins),
        transport = transport.name(),
        group = receiver.group_config(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_format_a_of_the_asked_length() {
        let mut out = Vec::new();
        record(123_456, 160, &mut out);
        assert_eq!(out.len(), 160);
        let text = String::from_utf8(out).unwrap();
        let zone = safd_ems::Zone::parse("UTC").unwrap();
        let event = safd_ems::text::parse(text.trim_end(), &zone).unwrap();
        assert!(
            event.text.starts_with("request 000123456 "),
            "{}",
            event.text
        );
    }
}
