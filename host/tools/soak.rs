//! `safd-tools soak`: the demo pipeline — EMS simulator → `safd run` (its own
//! process) → primary and backup `safd-mgmt` — for as long as asked, with
//! faults drawn at random from the table in `docs/reliability.md`: kill -9
//! of safd and of either server, a server stopped (SIGSTOP), safd's index
//! (sled) removed while safd is down, and the queue's disk filled up. At
//! the end the simulator stops, safd delivers what is left, and the events
//! are counted: every generated event must have exactly one seq, be held by
//! a server, and be stored once per server.

use crate::bench::Safd;
use anyhow::{Context, bail};
use clap::Args;
use safd::cli::harness::{
    IdCount, Server, check_plugins, clock_micros, config_text, generated, start_simulator, tools,
    union,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub(crate) struct SoakArgs {
    /// Plugin directory holding ems-reader and mgmt-http.
    #[arg(long, env = "SAFD_PLUGIN_DIR")]
    plugins: PathBuf,
    /// Where `safd-mgmt` and `ems-sim` are (default: next to this safd).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// How long faults are injected; then the run drains and counts.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// EMS events the simulator writes per second.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Seconds between faults: each pause is drawn from 1..=2×this.
    #[arg(long, default_value_t = 15)]
    mean_interval_secs: u64,
    /// Seed of the fault schedule (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Directory for soak.json and soak.md.
    #[arg(long, default_value = "target/soak-report")]
    out: PathBuf,
    /// Work directory (default: a temporary directory removed at the end).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// The compiled-plugin cache `safd run` uses.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

/// The faults a soak draws from (rows of the table in
/// `docs/reliability.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Fault {
    KillSafd,
    KillPrimary,
    KillBackup,
    StopPrimary,
    StopBackup,
    RemoveIndex,
    FullDisk,
}

impl Fault {
    fn describe(self) -> &'static str {
        match self {
            Self::KillSafd => "kill -9 of safd, restarted",
            Self::KillPrimary => "kill -9 of the primary server, restarted",
            Self::KillBackup => "kill -9 of the backup server, restarted",
            Self::StopPrimary => "primary server stopped (SIGSTOP), continued",
            Self::StopBackup => "backup server stopped (SIGSTOP), continued",
            Self::RemoveIndex => "safd killed, its sled index removed, restarted",
            Self::FullDisk => "the queue's disk filled to the last byte, then freed",
        }
    }
}

/// What the report says.
#[derive(Debug, Serialize)]
struct Report {
    seed: u64,
    minutes_of_faults: f64,
    rate: u32,
    faults: BTreeMap<Fault, u64>,
    /// Fault kinds that could not be injected here, and why.
    skipped: BTreeMap<Fault, String>,
    /// Events the simulator wrote (complete lines).
    generated: u64,
    /// Distinct event ids held by either server.
    delivered: u64,
    lost: u64,
    /// Events one server stored more than once (ids seen twice in its
    /// store).
    stored_twice: u64,
    /// Per server: distinct events held, re-sent events recognised.
    servers: BTreeMap<&'static str, ServerCount>,
    /// safd's seqs beyond the generated events: events a source read again
    /// (deep catch-ups, 4004), each deduplicated by id at the servers.
    seqs_beyond_generated: u64,
    passed: bool,
}

#[derive(Debug, Serialize)]
struct ServerCount {
    events: u64,
    /// Deliveries of what it already held (retries, catch-up overlap,
    /// events read again under new seqs).
    recognised: u64,
}

pub(crate) async fn run(args: SoakArgs) -> anyhow::Result<ExitCode> {
    // Processes are started, killed and waited for: plain threads.
    tokio::task::spawn_blocking(move || soak(&args)).await?
}

fn soak(args: &SoakArgs) -> anyhow::Result<ExitCode> {
    let (mgmt, sim) = tools(args.bin_dir.as_deref())?;
    check_plugins(&args.plugins)?;
    let safd_binary = safd::cli::harness::sibling("safd")?;
    let temporary = tempfile::tempdir()?;
    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_owned());
    let logs = work.join("ems-logs");
    let queue = work.join("queue");
    std::fs::create_dir_all(&logs)?;
    std::fs::create_dir_all(&queue)?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64)
    });
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut skipped = BTreeMap::new();
    let disk = match SmallDisk::mount(&queue) {
        Ok(disk) => Some(disk),
        Err(err) => {
            skipped.insert(Fault::FullDisk, format!("{err:#}"));
            None
        }
    };

    let mut primary = Server::start("primary", &mgmt, work.join("mgmt-primary"))?;
    let mut backup = Server::start("backup", &mgmt, work.join("mgmt-backup"))?;
    let mut simulator = start_simulator(&sim, &logs, args.rate, 7)?;
    let config = work.join("safd.toml");
    let text = config_text(
        &queue,
        &args.plugins,
        &logs,
        &[("primary", primary.address), ("backup", backup.address)],
        "request_timeout_ms = 2000",
    )
    .replace(
        "[admin]",
        "[queue]\ncapacity_mib = 256\nretention_mib = 16\nmin_free_mib = 64\n\n[admin]",
    );
    std::fs::write(&config, text)?;
    let start_safd = || Safd::start(&safd_binary, &config, args.cache_dir.as_deref());
    let mut safd = Some(start_safd()?);

    let mut out = std::io::stdout();
    writeln!(
        out,
        "safd-tools soak: {} min of faults, {} events/s, seed {seed}, work {}",
        args.minutes,
        args.rate,
        work.display()
    )?;
    let mut faults: BTreeMap<Fault, u64> = BTreeMap::new();
    let mut kinds = vec![
        Fault::KillSafd,
        Fault::KillPrimary,
        Fault::KillBackup,
        Fault::StopPrimary,
        Fault::StopBackup,
        Fault::RemoveIndex,
    ];
    if disk.is_some() {
        kinds.push(Fault::FullDisk);
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(args.minutes * 60);
    let pause = |rng: &mut fastrand::Rng, low: u64, high: u64| {
        std::thread::sleep(Duration::from_millis(rng.u64(low..=high)));
    };
    while Instant::now() < until {
        pause(&mut rng, 1000, args.mean_interval_secs.max(1) * 2000);
        let fault = kinds[rng.usize(..kinds.len())];
        match fault {
            Fault::KillSafd | Fault::RemoveIndex => {
                drop(safd.take());
                if fault == Fault::RemoveIndex {
                    remove_index(&queue)?;
                }
                pause(&mut rng, 200, 3000);
                safd = Some(start_safd()?);
            }
            Fault::KillPrimary | Fault::KillBackup => {
                let server = if fault == Fault::KillPrimary {
                    &mut primary
                } else {
                    &mut backup
                };
                server.kill();
                pause(&mut rng, 500, 6000);
                server.restart()?;
            }
            Fault::StopPrimary | Fault::StopBackup => {
                let server = if fault == Fault::StopPrimary {
                    &primary
                } else {
                    &backup
                };
                server.signal("STOP")?;
                pause(&mut rng, 500, 6000);
                server.signal("CONT")?;
            }
            Fault::FullDisk => {
                if let Some(disk) = &disk {
                    disk.fill()?;
                    pause(&mut rng, 1000, 8000);
                    disk.free()?;
                }
            }
        }
        *faults.entry(fault).or_default() += 1;
        let held = union(&primary.held(), &backup.held());
        writeln!(
            out,
            "  {:>5} s  {:<55} generated {:>8}  delivered {:>8}",
            started.elapsed().as_secs(),
            fault.describe(),
            generated(&logs),
            held
        )?;
    }
    let minutes_of_faults = started.elapsed().as_secs_f64() / 60.0;

    writeln!(out, "faults over; the simulator stops and safd drains")?;
    let _ = simulator.kill();
    let _ = simulator.wait();
    let total = generated(&logs);
    let safd = safd.context("safd is running")?;
    let deadline = Instant::now() + Duration::from_secs(900);
    // Every event is delivered once its id is held somewhere: deep
    // catch-ups give events read again new seqs, so seqs overcount. Count
    // once safd has delivered everything it holds.
    while !safd.drained() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
    }
    let (from, until) = (
        clock_micros(started) - 120_000_000,
        clock_micros(Instant::now()) + 120_000_000,
    );
    let seqs_assigned = safd.stored();
    safd.stop()?;
    let ids = IdCount::of(&[&primary, &backup], from, until)?;
    let mut servers = BTreeMap::new();
    for ((name, server), events) in [("primary", &primary), ("backup", &backup)]
        .into_iter()
        .zip(&ids.per_server)
    {
        servers.insert(
            name,
            ServerCount {
                events: *events,
                recognised: server.recognised(),
            },
        );
    }
    let stored_twice = ids.stored_twice;
    let delivered = ids.held;
    let lost = total.saturating_sub(delivered);
    let passed = lost == 0 && stored_twice == 0 && delivered == total;
    let report = Report {
        seed,
        minutes_of_faults,
        rate: args.rate,
        faults,
        skipped,
        generated: total,
        delivered,
        lost,
        stored_twice,
        servers,
        seqs_beyond_generated: seqs_assigned.saturating_sub(total),
        passed,
    };
    drop(disk);
    write_report(&args.out, &report)?;
    writeln!(out, "{}", markdown(&report))?;
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Remove sled's files from the queue directory (what an operator does with
/// a damaged index); the segment files stay.
fn remove_index(queue: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(queue)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if matches!(name.as_str(), "conf" | "db") || name.starts_with("snap.") {
            std::fs::remove_file(entry.path())?;
        } else if name == "blobs" {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// A small tmpfs mounted on the queue directory, so that it can be filled.
struct SmallDisk {
    mount: PathBuf,
    ballast: PathBuf,
}

impl SmallDisk {
    const SIZE: &str = "size=512m";

    fn mount(dir: &Path) -> anyhow::Result<Self> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", Self::SIZE, "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .context("running mount")?;
        if !status.success() {
            bail!("cannot mount a tmpfs on the queue directory (needs root): {status}");
        }
        Ok(Self {
            mount: dir.to_owned(),
            ballast: dir.join("ballast"),
        })
    }

    /// Write until the disk is full (ENOSPC).
    fn fill(&self) -> anyhow::Result<()> {
        let mut file = std::fs::File::create(&self.ballast)?;
        let chunk = vec![0u8; 1 << 20];
        loop {
            match file.write(&chunk) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(err) if err.raw_os_error() == Some(28) => return Ok(()),
                Err(err) => return Err(err.into()),
            }
        }
    }

    fn free(&self) -> anyhow::Result<()> {
        std::fs::remove_file(&self.ballast)?;
        Ok(())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ballast);
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

fn markdown(report: &Report) -> String {
    let mut text = format!(
        "## Soak: {:.1} minutes of faults, {} events/s (seed {})\n\n| fault | injected |\n|---|---|\n",
        report.minutes_of_faults, report.rate, report.seed
    );
    for (fault, n) in &report.faults {
        text.push_str(&format!("| {} | {n} |\n", fault.describe()));
    }
    for (fault, why) in &report.skipped {
        text.push_str(&format!("| {} | skipped: {why} |\n", fault.describe()));
    }
    text.push_str(&format!(
        "\n| count | value |\n|---|---|\n| generated | {} |\n\
         | delivered (distinct event ids at a server) | {} |\n| lost | {} |\n\
         | stored twice by one server | {} |\n\
         | read again by a source under new seqs (deep catch-up), stored once | {} |\n",
        report.generated,
        report.delivered,
        report.lost,
        report.stored_twice,
        report.seqs_beyond_generated
    ));
    for (name, server) in &report.servers {
        text.push_str(&format!(
            "| {name}: events held / re-sent events recognised | {} / {} |\n",
            server.events, server.recognised
        ));
    }
    text.push_str(&format!(
        "\n**{}**\n",
        if report.passed { "passed" } else { "FAILED" }
    ));
    text
}

fn write_report(out: &Path, report: &Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("soak.json"), serde_json::to_vec_pretty(report)?)?;
    std::fs::write(out.join("soak.md"), markdown(report))?;
    Ok(())
}
