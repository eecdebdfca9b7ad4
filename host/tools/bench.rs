//! `safd-tools bench`: the whole pipeline — EMS simulator → ems-reader → durable
//! queue → mgmt-http → `safd-mgmt` — measured with safd as its own process
//! (`safd run`, fsync before every acknowledgement), against the targets of
//! the product. Each figure is taken in every run; the report gives the
//! median and every run's value, as JSON and as markdown.
//!
//! The runs: (1) throughput — N events written beforehand, from safd's
//! start until the server holds the last one; (2) latency — the simulator
//! live at a fixed rate, event time to the server's commit time; (3)
//! failover — the primary killed (connections refused) and later stopped
//! (SIGSTOP, a silent peer) with the simulator running, the time from the
//! fault to the first event the backup stores, and what was lost; (4)
//! backlog — a million events queued while no server is up (safd's RSS with
//! that backlog), then the server back and the backlog replayed to it; (5)
//! the throughput run again with the server reading JSON only
//! (`--body-formats json`), so the binary body's gain shows in one report;
//! (6) memory per source — 100 file-tail sources of 2 000 lines each into
//! one server, safd's peak RSS and, once idle, its RSS per source beyond a
//! one-source safd.
//!
//! Every run uses safd's default settings but one: `request_timeout_ms =
//! 1000`, which the silent-failover target needs (the default, 3 s, gives
//! a slow server longer).

use anyhow::{Context, bail};
use clap::Args;
use safd::admin::client::AdminClient;
use safd::cli::harness::{IdCount, STREAM, Server, config_text, count, generated, tools, union};
use serde::Serialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    /// Plugin directory holding ems-reader and mgmt-http (built by
    /// `cargo xtask plugins` into target/plugins).
    #[arg(long, env = "SAFD_PLUGIN_DIR")]
    plugins: PathBuf,
    /// Where `safd-mgmt` and `ems-sim` are (default: next to this safd).
    /// Measure release builds: `cargo xtask bench-pipeline` builds them.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Events of the throughput runs (enough that safd's start, a fixed
    /// 0.2 to 0.3 s, weighs little in the rate).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Events queued while no server is up (backlog RSS, replay rate).
    #[arg(long, default_value_t = 1_000_000)]
    backlog: u64,
    /// Events per second of the latency and failover runs.
    #[arg(long, default_value_t = 10_000)]
    rate: u32,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    #[command(flatten)]
    runs: RunArgs,
}

/// What every pipeline benchmark takes: how many runs, where the report
/// and the work go, the plugin cache.
#[derive(Debug, Clone, Args)]
pub(super) struct RunArgs {
    /// Runs; the report gives the median of each figure.
    #[arg(long = "runs", default_value_t = 3)]
    pub(super) count: usize,
    /// Directory for the JSON and markdown reports.
    #[arg(long, default_value = "target/bench-report")]
    pub(super) out: PathBuf,
    /// Work directory (default: a temporary directory removed at the end).
    #[arg(long)]
    pub(super) work_dir: Option<PathBuf>,
    /// Compiled plugin cache for the safd processes.
    #[arg(long, env = "SAFD_CACHE_DIR")]
    pub(super) cache_dir: Option<PathBuf>,
}

impl RunArgs {
    /// The work directory, and the temporary directory that holds it when
    /// none was given (removed when dropped).
    pub(super) fn work(&self) -> std::io::Result<(tempfile::TempDir, PathBuf)> {
        let temporary = tempfile::tempdir()?;
        let work = self
            .work_dir
            .clone()
            .unwrap_or_else(|| temporary.path().to_owned());
        Ok((temporary, work))
    }

    /// `self.count` runs of `one`, each given an empty directory
    /// `<work>/<stem>-run-N` (removed after it, so the next run starts
    /// from empty directories) and printing its figures when done.
    pub(super) fn repeat(
        &self,
        work: &Path,
        stem: &str,
        figures: &[Figure],
        mut one: impl FnMut(&Path, &mut Run) -> anyhow::Result<()>,
    ) -> anyhow::Result<Vec<Run>> {
        let mut runs = Vec::new();
        for n in 1..=self.count {
            let dir = work.join(format!("{stem}-run-{n}"));
            std::fs::create_dir_all(&dir)?;
            println!("run {n} of {}", self.count);
            let mut run = Run::new();
            one(&dir, &mut run)?;
            print_run(figures, &run);
            runs.push(run);
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(runs)
    }

    /// Compile the plugins `names` in `dir` (each required to be there)
    /// into the cache the timed safd processes use, so no run pays for
    /// compiling them (a one-time cost per plugin file, not part of
    /// forwarding: an operator's restarts find them cached).
    pub(super) fn compile_named(&self, dir: &Path, names: &[&str]) -> anyhow::Result<()> {
        let mut plugins = Vec::new();
        for name in names {
            let plugin = dir.join(format!("{name}.wasm"));
            if !plugin.is_file() {
                bail!(
                    "{name}.wasm is not in {}; build the plugins with `cargo xtask plugins`",
                    dir.display()
                );
            }
            plugins.push(plugin);
        }
        let runtime = safd::cli::CacheArgs {
            cache_dir: self.cache_dir.clone(),
        }
        .runtime()?;
        for plugin in &plugins {
            runtime
                .load(plugin)
                .with_context(|| format!("compiling {}", plugin.display()))?;
        }
        Ok(())
    }
}

/// How long any one wait may take before the run is declared failed.
const DEADLINE: Duration = Duration::from_secs(300);
/// The group settings of every run: a silent peer is given up on after
/// one second; everything else is safd's default.
const GROUP_TUNING: &str = "request_timeout_ms = 1000";

/// One figure: its name, unit, target and which way is better.
pub(super) struct Figure {
    pub(super) key: &'static str,
    pub(super) label: &'static str,
    pub(super) unit: &'static str,
    /// The target and whether higher values are better.
    pub(super) target: Option<(f64, bool)>,
}

const FIGURES: [Figure; 14] = [
    Figure {
        key: "end_to_end_events_per_sec",
        label: "end to end (fsync on)",
        unit: "events/s",
        target: Some((300_000.0, true)),
    },
    Figure {
        key: "end_to_end_json_events_per_sec",
        label: "end to end, JSON body (--body-formats json)",
        unit: "events/s",
        target: None,
    },
    Figure {
        key: "latency_p50_ms",
        label: "event → server commit, p50",
        unit: "ms",
        target: None,
    },
    Figure {
        key: "latency_p99_ms",
        label: "event → server commit, p99",
        unit: "ms",
        target: Some((25.0, false)),
    },
    Figure {
        key: "failover_refused_ms",
        label: "failover, primary killed (refused)",
        unit: "ms",
        target: Some((100.0, false)),
    },
    Figure {
        key: "failover_silent_ms",
        label: "failover, primary SIGSTOPped (silent)",
        unit: "ms",
        target: Some((2_000.0, false)),
    },
    Figure {
        key: "lost_in_failover",
        label: "events lost across both failovers",
        unit: "events",
        target: Some((0.0, false)),
    },
    Figure {
        key: "stored_twice_in_failover",
        label: "events a server stored twice (failovers)",
        unit: "events",
        target: Some((0.0, false)),
    },
    Figure {
        key: "backlog_ingest_events_per_sec",
        label: "ingest with no server up",
        unit: "events/s",
        target: Some((500_000.0, true)),
    },
    Figure {
        key: "catch_up_events_per_sec",
        label: "backlog replay to the returning server",
        unit: "events/s",
        target: Some((500_000.0, true)),
    },
    Figure {
        key: "reconnect_ms",
        label: "server back → first replayed event stored",
        unit: "ms",
        target: None,
    },
    Figure {
        key: "peak_rss_mib",
        label: "safd peak RSS (backlog run)",
        unit: "MiB",
        target: Some((100.0, false)),
    },
    Figure {
        key: "sources_peak_rss_mib",
        label: "safd peak RSS, 100 file-tail sources",
        unit: "MiB",
        target: Some((150.0, false)),
    },
    Figure {
        key: "rss_per_idle_source_mib",
        label: "RSS per idle source (100 vs 1)",
        unit: "MiB",
        target: Some((1.0, false)),
    },
];

pub(super) type Run = std::collections::BTreeMap<&'static str, f64>;

/// Print a run's figures as they come.
pub(super) fn print_run(figures: &[Figure], run: &Run) {
    for figure in figures {
        if let Some(value) = run.get(figure.key) {
            println!("  {:<48} {value:>12.1} {}", figure.label, figure.unit);
        }
    }
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(move || bench(&args)).await?
}

fn bench(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let (mgmt, sim) = tools(args.bin_dir.as_deref())?;
    safd::cli::harness::check_plugins(&args.plugins)?;
    args.runs
        .compile_named(&args.plugins, &["ems-reader", "mgmt-http"])?;
    let (_temporary, work) = args.runs.work()?;
    let tools = Tools {
        safd: safd::cli::harness::sibling("safd")?,
        mgmt,
        sim,
        args: args.clone(),
    };
    let runs = args.runs.repeat(&work, "pipeline", &FIGURES, |dir, run| {
        tools.throughput(&dir.join("throughput"), run)?;
        tools.latency(&dir.join("latency"), run)?;
        tools.failover(&dir.join("failover"), run)?;
        tools.backlog(&dir.join("backlog"), run)?;
        tools.json_throughput(&dir.join("json"), run)?;
        tools.sources(&dir.join("sources"), run)
    })?;
    let extra = Figure {
        key: "rss_with_backlog_mib",
        label: "safd RSS holding the backlog",
        unit: "MiB",
        target: Some((150.0, false)),
    };
    let figures: Vec<&Figure> = FIGURES.iter().chain(std::iter::once(&extra)).collect();
    let spec = ReportSpec {
        out: &args.runs.out,
        stem: "bench",
        title: "safd pipeline benchmark",
        settings: format!(
            "{} runs · throughput {} events · backlog {} events · live rate {} events/s",
            args.runs.count, args.events, args.backlog, args.rate
        ),
        json_settings: serde_json::json!({
            "runs": args.runs.count,
            "events": args.events,
            "backlog": args.backlog,
            "rate": args.rate,
        }),
    };
    report_status(&spec, &figures, &runs)
}

struct Tools {
    safd: PathBuf,
    mgmt: PathBuf,
    sim: PathBuf,
    args: BenchArgs,
}

/// A `safd run` process, killed when dropped (`stop` ends it cleanly).
pub(super) struct Safd {
    child: Child,
    admin: AdminClient,
    started: Instant,
}

impl Safd {
    /// `safd run -c config`, once its admin API is up.
    pub(super) fn start(
        safd: &Path,
        config: &Path,
        cache_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(safd);
        command
            .arg("run")
            .arg("-c")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(cache) = cache_dir {
            command.env("SAFD_CACHE_DIR", cache);
        }
        let started = Instant::now();
        let mut child = command.spawn().context("starting safd run")?;
        let stderr = child.stderr.take().context("safd's stderr")?;
        let mut stderr = BufReader::new(stderr);
        let mut seen = String::new();
        let admin = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line)? == 0 {
                bail!("safd ended before it ran:\n{seen}");
            }
            seen.push_str(&line);
            if let Some((_, address)) = line.trim().rsplit_once("admin API on http://") {
                break address.to_owned();
            }
        };
        // Keep reading so safd never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = stderr.read_to_end(&mut sink);
        });
        Ok(Self {
            child,
            admin: AdminClient::new(&admin, None, &Default::default())?,
            started,
        })
    }

    /// When `safd run` was started.
    pub(super) fn started(&self) -> Instant {
        self.started
    }

    /// CPU seconds (user + system) safd has used so far.
    pub(super) fn cpu_secs(&self) -> f64 {
        process_cpu_secs(self.child.id())
    }

    fn status(&self) -> anyhow::Result<safd::admin::Status> {
        self.admin.status()
    }

    fn active(&self) -> Option<String> {
        self.status()
            .ok()?
            .groups
            .first()?
            .lanes
            .first()?
            .active
            .clone()
    }

    /// Every lane has acknowledged all of the stream's stored events.
    pub(super) fn drained(&self) -> bool {
        self.status().ok().is_some_and(|status| {
            status
                .groups
                .iter()
                .flat_map(|g| &g.lanes)
                .all(|lane| lane.lag.get(STREAM).copied().unwrap_or(0) == 0)
        })
    }

    /// Events of the stream in safd's queue (its next seq − 1).
    pub(super) fn stored(&self) -> u64 {
        self.status()
            .ok()
            .and_then(|s| s.streams.into_iter().find(|s| s.name == STREAM))
            .map_or(0, |s| s.next_seq - 1)
    }

    /// (current, peak) resident set size in MiB.
    fn rss_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(0.0, |kib| kib / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub(super) fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait()?;
        if !status.success() {
            bail!("safd exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Safd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) process `pid` has used so far.
pub(super) fn process_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may
    // hold spaces: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / clock_ticks_per_sec()
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux
/// almost everywhere).
fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub(super) fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > DEADLINE {
            bail!("gave up waiting for {what} after {} s", DEADLINE.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(started.elapsed())
}

/// `wait_until` with progress: `count` of `total` shown while waiting
/// (a bar on a terminal, a line every few seconds otherwise); `done` is
/// asked with each count.
pub(super) fn wait_counting(
    what: &str,
    total: u64,
    mut count: impl FnMut() -> u64,
    mut done: impl FnMut(u64) -> bool,
) -> anyhow::Result<Duration> {
    let mut progress = crate::progress::Progress::new(what, total);
    let waited = wait_until(what, || {
        let counted = count();
        progress.set(counted);
        done(counted)
    });
    progress.finish();
    waited
}

fn now_micros() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

impl Tools {
    /// Start `safd run` on a generated configuration.
    fn safd(&self, dir: &Path, logs: &Path, members: &[&Server]) -> anyhow::Result<Safd> {
        let members: Vec<(&str, std::net::SocketAddr)> = members
            .iter()
            .zip(["primary", "backup"])
            .map(|(server, name)| (name, server.address))
            .collect();
        let config = dir.join("safd.toml");
        std::fs::write(
            &config,
            config_text(
                &dir.join("queue"),
                &self.args.plugins,
                logs,
                &members,
                GROUP_TUNING,
            ),
        )?;
        Safd::start(&self.safd, &config, self.args.runs.cache_dir.as_deref())
    }

    /// Write `events` EMS events (format B) into `logs` as fast as possible.
    fn simulate(&self, logs: &Path, events: u64) -> anyhow::Result<()> {
        let status = Command::new(&self.sim)
            .arg("--dir")
            .arg(logs)
            .args(["--format", "b", "--events", &events.to_string()])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("ems-sim failed: {status}");
        }
        Ok(())
    }

    /// The simulator live at the configured rate.
    fn live(&self, logs: &Path, seconds: Option<u64>) -> anyhow::Result<Child> {
        let mut command = Command::new(&self.sim);
        command
            .arg("--dir")
            .arg(logs)
            .args(["--format", "b", "--rate", &self.args.rate.to_string()])
            .stdout(Stdio::null());
        if let Some(seconds) = seconds {
            command.args(["--duration", &seconds.to_string()]);
        }
        Ok(command.spawn()?)
    }

    fn server(&self, dir: &Path, name: &'static str) -> anyhow::Result<Server> {
        Server::start(name, &self.mgmt, dir.join(name))
    }

    fn throughput(&self, dir: &Path, run: &mut Run) -> anyhow::Result<()> {
        let server = self.server(dir, "primary")?;
        let rate = self.end_to_end(dir, &server)?;
        run.insert("end_to_end_events_per_sec", rate);
        Ok(())
    }

    /// The throughput run with a server that reads JSON only.
    fn json_throughput(&self, dir: &Path, run: &mut Run) -> anyhow::Result<()> {
        let options = safd::cli::harness::ServerOptions {
            extra: vec!["--body-formats".to_owned(), "json".to_owned()],
            ..Default::default()
        };
        let server = Server::start_with("primary", &self.mgmt, dir.join("primary"), options)?;
        let rate = self.end_to_end(dir, &server)?;
        run.insert("end_to_end_json_events_per_sec", rate);
        Ok(())
    }

    /// Events per second from safd's start until `server` holds all of
    /// `--events` written beforehand.
    fn end_to_end(&self, dir: &Path, server: &Server) -> anyhow::Result<f64> {
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        self.simulate(&logs, self.args.events)?;
        let safd = self.safd(dir, &logs, &[server])?;
        let events = self.args.events;
        wait_counting(
            "events at the server",
            events,
            || server.high_water(),
            |held| held >= events,
        )?;
        let took = safd.started.elapsed().as_secs_f64();
        safd.stop()?;
        Ok(events as f64 / took)
    }

    /// 100 file-tail sources of 2 000 lines each into one server: safd's
    /// peak RSS, and once all is delivered and the sources idle, its RSS
    /// beyond that of a safd with one such source, per source.
    fn sources(&self, dir: &Path, run: &mut Run) -> anyhow::Result<()> {
        let server = self.server(dir, "primary")?;
        let one = self.idle_sources(&dir.join("one"), &server, 1)?;
        let hundred = self.idle_sources(&dir.join("hundred"), &server, SOURCES)?;
        run.insert("sources_peak_rss_mib", hundred.1);
        run.insert(
            "rss_per_idle_source_mib",
            (hundred.0 - one.0).max(0.0) / (SOURCES - 1) as f64,
        );
        Ok(())
    }

    /// safd with `count` file-tail sources, each with a file of
    /// `SOURCE_LINES` lines, run until the server holds them all and then
    /// left idle a moment: its (RSS, peak RSS) in MiB.
    fn idle_sources(
        &self,
        dir: &Path,
        server: &Server,
        count: usize,
    ) -> anyhow::Result<(f64, f64)> {
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        for n in 0..count {
            let mut text = String::with_capacity(SOURCE_LINES as usize * 100);
            for line in 0..SOURCE_LINES {
                text.push_str(&format!(
                    "2026-12-07T08:00:00.000000Z web{n:03} app[42]: request {line:06} GET /api/v1/orders status=200\n"
                ));
            }
            std::fs::write(logs.join(format!("s{n:03}.log")), text)?;
        }
        let config = dir.join("safd.toml");
        std::fs::write(
            &config,
            sources_config(dir, &self.args.plugins, &logs, count, server),
        )?;
        let before = server.stored();
        let safd = Safd::start(&self.safd, &config, self.args.runs.cache_dir.as_deref())?;
        let lines = count as u64 * SOURCE_LINES;
        wait_counting(
            "the sources' lines at the server",
            lines,
            || server.stored().saturating_sub(before),
            |stored| stored >= lines,
        )?;
        // Idle: every source polled empty a few times, the group drained.
        std::thread::sleep(Duration::from_secs(2));
        let rss = safd.rss_mib();
        safd.stop()?;
        Ok(rss)
    }

    fn latency(&self, dir: &Path, run: &mut Run) -> anyhow::Result<()> {
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let server = self.server(dir, "primary")?;
        let safd = self.safd(dir, &logs, &[&server])?;
        wait_until("the server to be active", || {
            safd.active().as_deref() == Some("primary")
        })?;
        let mut sim = self.live(&logs, Some(self.args.latency_secs))?;
        let began = now_micros();
        sim.wait()?;
        let total = generated(&logs);
        wait_until("every event at the server", || server.high_water() >= total)?;
        // Second by second (the server answers at most 10 000 events per
        // query); the first second is warm-up (files created, first polls).
        let mut latencies: Vec<i64> = (1..self.args.latency_secs)
            .flat_map(|second| {
                let from = began + second as i64 * 1_000_000;
                server.times(from, from + 1_000_000)
            })
            .map(|(time, received)| received - time)
            .collect();
        if latencies.is_empty() {
            bail!("the latency run stored no events after its first second");
        }
        insert_latency_quantiles(run, &mut latencies);
        safd.stop()
    }

    fn failover(&self, dir: &Path, run: &mut Run) -> anyhow::Result<()> {
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let mut primary = self.server(dir, "primary")?;
        let backup = self.server(dir, "backup")?;
        let safd = self.safd(dir, &logs, &[&primary, &backup])?;
        wait_until("the primary to be active", || {
            safd.active().as_deref() == Some("primary")
        })?;
        let simulated_from = now_micros();
        let mut sim = self.live(&logs, None)?;
        wait_until("events at the primary", || primary.high_water() > 1_000)?;

        // A dead primary: its port refuses connections.
        let killed = now_micros();
        primary.kill();
        // From `fault` to the first event the backup stores after it, in ms.
        let until_backup_stores = |fault: i64| -> anyhow::Result<f64> {
            let mut first = None;
            wait_until("the backup to store events", || {
                first = backup
                    .times(fault - 2_000_000, fault + 3_600_000_000)
                    .into_iter()
                    .map(|(_, received)| received)
                    .filter(|received| *received >= fault)
                    .min();
                first.is_some()
            })?;
            Ok(first.map_or(0.0, |at| (at - fault) as f64 / 1000.0))
        };
        run.insert("failover_refused_ms", until_backup_stores(killed)?);

        primary.restart()?;
        wait_until("the failback", || {
            safd.active().as_deref() == Some("primary")
        })?;
        let held = count(&primary.held());
        wait_until("events at the primary again", || {
            count(&primary.held()) > held + 1_000
        })?;
        // A silent primary: connections hang.
        let stopped = now_micros();
        primary.signal("STOP")?;
        run.insert("failover_silent_ms", until_backup_stores(stopped)?);
        primary.signal("CONT")?;

        let _ = sim.kill();
        let _ = sim.wait();
        let total = generated(&logs);
        let all_there = || union(&primary.held(), &backup.held()) >= total;
        let _ = wait_until("every event at one of the servers", all_there);
        // Counted by event id at the servers: a loss and an event stored
        // twice would cancel out in a count of seqs.
        let ids = IdCount::of(
            &[&primary, &backup],
            simulated_from - 120_000_000,
            now_micros() + 120_000_000,
        )?;
        run.insert("lost_in_failover", total.saturating_sub(ids.held) as f64);
        run.insert("stored_twice_in_failover", ids.stored_twice as f64);
        safd.stop()
    }

    fn backlog(&self, dir: &Path, run: &mut Run) -> anyhow::Result<()> {
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        self.simulate(&logs, self.args.backlog)?;
        let mut server = self.server(dir, "primary")?;
        // Its address is known, nothing answers there.
        server.kill();
        let safd = self.safd(dir, &logs, &[&server])?;
        let backlog = self.args.backlog;
        let ingest = wait_counting(
            "the backlog in safd's queue",
            backlog,
            || safd.stored(),
            |stored| stored >= backlog,
        )?;
        run.insert(
            "backlog_ingest_events_per_sec",
            self.args.backlog as f64 / ingest.as_secs_f64(),
        );
        let (with_backlog, _) = safd.rss_mib();
        run.insert("rss_with_backlog_mib", with_backlog);

        server.restart()?;
        // safd finds the server back at its next retry of the member (an
        // unreachable member is retried with backoff, up to 5 s apart):
        // that wait is reported on its own, and the replay rate counts
        // from the first event the server holds.
        let restarted = Instant::now();
        // The last moment the server was seen holding nothing: the replay
        // is timed from there (within one look, 20 ms, of its start).
        let mut empty_at = restarted;
        wait_until("the first replayed event at the server", || {
            let any = server.high_water() > 0;
            if !any {
                empty_at = Instant::now();
            }
            any
        })?;
        run.insert(
            "reconnect_ms",
            empty_at.duration_since(restarted).as_secs_f64() * 1000.0,
        );
        wait_counting(
            "the backlog at the server",
            backlog,
            || server.high_water(),
            |held| held >= backlog,
        )?;
        run.insert(
            "catch_up_events_per_sec",
            backlog as f64 / empty_at.elapsed().as_secs_f64(),
        );
        run.insert("peak_rss_mib", safd.rss_mib().1);
        safd.stop()
    }
}

/// Sources of the memory run, and lines each.
const SOURCES: usize = 100;
const SOURCE_LINES: u64 = 2_000;

/// `count` file-tail sources (`s000` …, each its own file in `logs`) into
/// `server` through mgmt-http, safd's defaults otherwise.
fn sources_config(
    dir: &Path,
    plugins: &Path,
    logs: &Path,
    count: usize,
    server: &Server,
) -> String {
    // An agent of its own per run: the server keeps each run's streams
    // apart.
    let mut text = format!(
        r#"agent_id = "sources-{count}"
data_dir = "{queue}"
plugin_dir = "{plugins}"

[admin]
listen = "127.0.0.1:0"
"#,
        queue = dir.join("queue").display(),
        plugins = plugins.display(),
    );
    for n in 0..count {
        text.push_str(&format!(
            r#"
[sources.s{n:03}]
plugin = "file-tail"
config = {{ directory = "{logs}", pattern = "s{n:03}.log" }}
grants = {{ dirs = ["{logs}"] }}
"#,
            logs = logs.display(),
        ));
    }
    text.push_str(&safd::cli::harness::mgmt_group(
        &[("primary", server.address)],
        "",
        "",
    ));
    text
}

/// `latency_p50_ms` and `latency_p99_ms` of `latencies` (µs, not empty).
pub(super) fn insert_latency_quantiles(run: &mut Run, latencies: &mut [i64]) {
    latencies.sort_unstable();
    let at = |q: f64| {
        let index = ((latencies.len() - 1) as f64 * q).round() as usize;
        latencies[index] as f64 / 1000.0
    };
    run.insert("latency_p50_ms", at(0.50));
    run.insert("latency_p99_ms", at(0.99));
}

pub(super) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[derive(Serialize)]
struct Row {
    figure: &'static str,
    unit: &'static str,
    median: f64,
    runs: Vec<f64>,
    target: Option<String>,
    met: Option<bool>,
}

/// What a report is about: where it goes and the settings it ran with.
pub(super) struct ReportSpec<'a> {
    pub(super) out: &'a Path,
    /// File stem: `<stem>.json` and `<stem>.md`.
    pub(super) stem: &'a str,
    pub(super) title: &'a str,
    /// One line for the markdown, e.g. "3 runs · 1000000 events".
    pub(super) settings: String,
    /// The same settings for the JSON.
    pub(super) json_settings: serde_json::Value,
}

/// [`report`], then the exit status: 1 when a target was missed (the
/// report says which; that is a result, not a failure of the tool).
pub(super) fn report_status(
    spec: &ReportSpec<'_>,
    figures: &[&Figure],
    runs: &[Run],
) -> anyhow::Result<ExitCode> {
    Ok(if report(spec, figures, runs)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Write `<stem>.json` and `<stem>.md`; true when every target is met.
pub(super) fn report(
    spec: &ReportSpec<'_>,
    figures: &[&Figure],
    runs: &[Run],
) -> anyhow::Result<bool> {
    let mut rows = Vec::new();
    for figure in figures {
        let mut values: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.get(figure.key))
            .copied()
            .collect();
        let all = values.clone();
        let median = median(&mut values);
        let met = figure.target.map(|(target, higher)| {
            if higher {
                median >= target
            } else {
                median <= target
            }
        });
        rows.push(Row {
            figure: figure.label,
            unit: figure.unit,
            median,
            runs: all,
            target: figure.target.map(|(target, higher)| {
                format!(
                    "{} {target} {}",
                    if higher { "≥" } else { "≤" },
                    figure.unit
                )
            }),
            met,
        });
    }
    std::fs::create_dir_all(spec.out)?;
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH
    );
    let when = jiff::Timestamp::now().to_string();
    let json = serde_json::json!({
        "when": when,
        "machine": machine,
        "settings": spec.json_settings,
        "figures": rows,
    });
    let json_path = spec.out.join(format!("{}.json", spec.stem));
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)?;

    let mut md = format!(
        "# {}\n\n{when} · {machine} · {}\n\n\
         | figure | median | runs | target | met |\n|---|---|---|---|---|\n",
        spec.title, spec.settings
    );
    for row in &rows {
        let runs: Vec<String> = row.runs.iter().map(|v| format!("{v:.1}")).collect();
        md.push_str(&format!(
            "| {} | {:.1} {} | {} | {} | {} |\n",
            row.figure,
            row.median,
            row.unit,
            runs.join(", "),
            row.target.as_deref().unwrap_or("-"),
            match row.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            }
        ));
    }
    let md_path = spec.out.join(format!("{}.md", spec.stem));
    std::fs::write(&md_path, &md)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{md}")?;
    writeln!(
        out,
        "report: {} and {}",
        json_path.display(),
        md_path.display()
    )?;
    Ok(rows.iter().all(|r| r.met != Some(false)))
}
