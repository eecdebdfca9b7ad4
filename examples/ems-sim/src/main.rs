//! `ems-sim`: writes realistic NonStop EMS event logs for demos, tests and
//! benchmarks.
//!
//! Bulk: `ems-sim --dir logs --events 1000000` writes as fast as it can.
//! Live: `ems-sim --dir logs --rate 200` writes 200 events per second, with
//! the wall clock's time, until stopped (or `--duration`).
//! Network: `--tcp HOST:PORT` instead of `--dir` writes the same text to a
//! TCP connection, as an EMS printing distributor writes to a network
//! printer (for safd's net-in source with `format = "ems"`).

use anyhow::Context;
use clap::Parser;
use ems_sim::{Generator, LogWriter, SimConfig, StreamWriter};
use safd_ems::{EmsEvent, Format, Zone};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "ems-sim", version, max_term_width = 100)]
struct Args {
    /// Log directory (created if missing); writing continues after the
    /// newest ZZEVnnnn file in it.
    #[arg(long, required_unless_present = "tcp", conflicts_with = "tcp")]
    dir: Option<PathBuf>,
    /// Instead of log files: connect to this address (host:port) and write
    /// the events there.
    #[arg(long)]
    tcp: Option<String>,
    /// `a` (printing-distributor text) or `b` (tokenized JSON Lines).
    #[arg(long, default_value = "a", value_parser = parse_format)]
    format: Format,
    /// Time zone of format A's local times (IANA name, UTC or +hh:mm).
    #[arg(long, default_value = "UTC")]
    zone: String,
    /// Same seed, same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The node name.
    #[arg(long, default_value = "\\PROD1")]
    system: String,
    /// Bulk mode: write this many events as fast as possible.
    #[arg(long, conflicts_with = "rate")]
    events: Option<u64>,
    /// Live mode: events per second, timestamped with the wall clock.
    #[arg(long)]
    rate: Option<u32>,
    /// Live mode: stop after this many seconds (default: run until killed).
    #[arg(long, requires = "rate")]
    duration: Option<u64>,
    /// Start a new log file when the current one would exceed this size.
    #[arg(long, default_value_t = 4 << 20)]
    rotate_bytes: u64,
    /// Keep at most this many log files, purging the oldest (0: keep all).
    #[arg(long, default_value_t = 0)]
    keep_files: usize,
    /// Every this many events a burst of `burst-size` events starts (0: none).
    #[arg(long, default_value_t = 5_000)]
    burst_every: u64,
    #[arg(long, default_value_t = 200)]
    burst_size: u32,
    /// Every this many events the clock is set back by `setback-secs`
    /// (logged as EMS event 524; 0: never).
    #[arg(long, default_value_t = 0)]
    setback_every: u64,
    #[arg(long, default_value_t = 30)]
    setback_secs: i64,
}

fn parse_format(text: &str) -> Result<Format, String> {
    match text.to_ascii_lowercase().as_str() {
        "a" => Ok(Format::A),
        "b" => Ok(Format::B),
        other => Err(format!(
            "unknown format `{other}`: use `a` (text) or `b` (JSON Lines)"
        )),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let zone = Zone::parse(&args.zone)?;
    let mut config = SimConfig {
        seed: args.seed,
        system: args.system.clone(),
        burst_every: args.burst_every,
        burst_size: args.burst_size,
        setback_every: args.setback_every,
        setback_secs: args.setback_secs,
        ..SimConfig::default()
    };
    if args.rate.is_some() {
        config.start = jiff::Timestamp::now().as_microsecond();
        // The wall clock paces live events: each is stamped when written,
        // not a random gap after the previous one (which put event times
        // up to 100 ms in the future and made latencies meaningless).
        config.mean_gap_micros = 1;
    }
    let mut generator = Generator::new(config);
    let (mut writer, target) = match (&args.dir, &args.tcp) {
        (Some(dir), _) => (
            Output::Files(
                LogWriter::create(dir, args.format, zone, args.rotate_bytes, args.keep_files)
                    .with_context(|| format!("cannot write logs in {}", dir.display()))?,
            ),
            dir.display().to_string(),
        ),
        (None, Some(address)) => {
            let stream = std::net::TcpStream::connect(address)
                .with_context(|| format!("cannot connect to {address}"))?;
            (
                Output::Tcp(StreamWriter::new(stream, args.format, zone)),
                format!("tcp://{address}"),
            )
        }
        (None, None) => anyhow::bail!("say where to write: --dir DIR or --tcp HOST:PORT"),
    };
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    match (args.events, args.rate) {
        (Some(events), _) => {
            for _ in 0..events {
                writer.write(&generator.next_event())?;
            }
            writer.flush()?;
        }
        (None, Some(rate)) => {
            let rate = u64::from(rate.max(1));
            let stop = args.duration.map(|d| started + Duration::from_secs(d));
            let mut last_report = started;
            loop {
                let due = started.elapsed().as_micros() as u64 * rate / 1_000_000;
                while generator.produced() < due {
                    generator.set_clock(jiff::Timestamp::now().as_microsecond());
                    writer.write(&generator.next_event())?;
                }
                writer.flush()?;
                if last_report.elapsed() >= Duration::from_secs(5) {
                    last_report = Instant::now();
                    writeln!(out, "ems-sim: {} events written", writer.written())?;
                }
                if stop.is_some_and(|stop| Instant::now() >= stop) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        (None, None) => {
            anyhow::bail!("say how much to write: --events N (bulk) or --rate R (live)")
        }
    }
    let secs = started.elapsed().as_secs_f64();
    writeln!(
        out,
        "ems-sim: {} events in {} ({:?} format), {:.2} s, {:.0} events/s",
        writer.written(),
        target,
        args.format,
        secs,
        writer.written() as f64 / secs.max(1e-9)
    )?;
    Ok(())
}

/// Where events go: log files, or a TCP connection.
enum Output {
    Files(LogWriter),
    Tcp(StreamWriter<std::net::TcpStream>),
}

impl Output {
    fn write(&mut self, event: &EmsEvent) -> std::io::Result<()> {
        match self {
            Self::Files(w) => w.write(event),
            Self::Tcp(w) => w.write(event),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Files(w) => w.flush(),
            Self::Tcp(w) => w.flush(),
        }
    }

    fn written(&self) -> u64 {
        match self {
            Self::Files(w) => w.written(),
            Self::Tcp(w) => w.written(),
        }
    }
}
