//! `safd demo`: the whole product on one machine, with failures on cue.
//!
//! It starts the EMS simulator (live), a primary and a backup `safd-mgmt`
//! on free loopback ports, and safd itself (in this process) with a
//! generated configuration: ems-reader → durable queue → mgmt-http. Then it
//! kills the primary (failover), restarts it (failback), stops both servers
//! and restarts them (catch-up by exactly one), stops the simulator, waits
//! for the queue to drain, and counts: generated, delivered, lost,
//! duplicates, failover and failback times.

use super::daemon::start_engine;
use super::harness::{
    IdCount, Server, TOKEN, check_plugins, clock_micros, config_text, count, generated,
    start_simulator, tools, union,
};
use crate::config;

use clap::Args;
use safd_engine::Engine;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Plugin directory holding ems-reader and mgmt-http (built by
    /// `cargo xtask plugins` into target/plugins).
    #[arg(long, env = "SAFD_PLUGIN_DIR")]
    plugins: PathBuf,
    /// Where `safd-mgmt` and `ems-sim` are (default: next to this safd).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// EMS events the simulator writes per second.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Seconds of each phase (normal, after failover, after failback,
    /// total outage).
    #[arg(long, default_value_t = 4)]
    phase_secs: u64,
    /// Keep the servers (and their consoles) running after the summary
    /// until Ctrl-C. Default: when stdout is a terminal.
    #[arg(long)]
    keep_servers: Option<bool>,
    /// Work directory (default: a temporary directory removed at the end).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    cache: super::CacheArgs,
}

fn active(engine: &Engine) -> Option<String> {
    engine
        .groups()
        .first()
        .and_then(|g| g.lanes.first())
        .and_then(|l| l.active.clone())
}

/// Wait until `member` is active; the time it took.
async fn until_active(engine: &Engine, member: Option<&str>, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if active(engine).as_deref() == member {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// "N ms", or that it did not happen within the 30 s waited.
fn within(took: Option<Duration>) -> String {
    took.map_or("(not within 30 s)".to_owned(), |d| {
        format!("{} ms", d.as_millis())
    })
}

struct Show<'a> {
    out: std::io::StdoutLock<'a>,
    shown: usize,
}

impl Show<'_> {
    /// Print safd's new numbered events, then a progress line.
    fn progress(
        &mut self,
        engine: &Engine,
        logs: &Path,
        servers: [&Server; 2],
    ) -> anyhow::Result<()> {
        let notices = engine.notices().recent();
        for notice in notices.iter().skip(self.shown) {
            writeln!(self.out, "    [{}] {}", notice.id, notice.message)?;
        }
        self.shown = self.shown.max(notices.len());
        let at = |server: &Server| {
            if server.is_up() {
                count(&server.held()).to_string()
            } else {
                "down".to_owned()
            }
        };
        writeln!(
            self.out,
            "  generated {:>7}   at primary {:>7}   at backup {:>7}   active {}",
            generated(logs),
            at(servers[0]),
            at(servers[1]),
            active(engine).as_deref().unwrap_or("none")
        )?;
        Ok(())
    }

    fn say(&mut self, text: &str) -> anyhow::Result<()> {
        writeln!(self.out, "{text}")?;
        Ok(())
    }
}

async fn phase(
    show: &mut Show<'_>,
    engine: &Engine,
    logs: &Path,
    servers: [&Server; 2],
    seconds: u64,
) -> anyhow::Result<()> {
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        show.progress(engine, logs, servers)?;
    }
    Ok(())
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let (mgmt, sim) = tools(args.bin_dir.as_deref())?;
    check_plugins(&args.plugins)?;
    let temporary = tempfile::tempdir()?;
    let work = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_owned());
    let logs = work.join("ems-logs");
    std::fs::create_dir_all(&logs)?;

    let mut primary = Server::start("primary", &mgmt, work.join("mgmt-primary"))?;
    let mut backup = Server::start("backup", &mgmt, work.join("mgmt-backup"))?;
    let started = Instant::now();
    let mut simulator = start_simulator(&sim, &logs, args.rate, 1)?;

    let config_path = work.join("safd.toml");
    std::fs::write(
        &config_path,
        config_text(
            &work.join("queue"),
            &args.plugins,
            &logs,
            &[("primary", primary.address), ("backup", backup.address)],
            "request_timeout_ms = 2000",
        ),
    )?;
    let checked = config::check(&config_path, |_| args.cache.runtime())
        .await
        .map_err(|e| anyhow::anyhow!("the generated configuration: {e}"))?;
    let engine = start_engine(checked)?;

    let stdout = std::io::stdout();
    let mut show = Show {
        out: stdout.lock(),
        shown: 0,
    };
    show.say(&format!(
        "safd demo: EMS simulator ({} events/s) → ems-reader → durable queue → mgmt-http → \
         safd-mgmt primary {} / backup {}",
        args.rate,
        primary.base(),
        backup.base()
    ))?;
    show.say(&format!("  work directory {}", work.display()))?;
    let secs = args.phase_secs;

    show.say("1. normal operation")?;
    phase(&mut show, &engine, &logs, [&primary, &backup], secs).await?;

    show.say("2. the primary's server is killed: failover")?;
    primary.kill();
    let failover = until_active(&engine, Some("backup"), Duration::from_secs(30)).await;
    show.say(&format!(
        "  active member is the backup after {}",
        within(failover)
    ))?;
    phase(&mut show, &engine, &logs, [&primary, &backup], secs).await?;

    show.say("3. the primary's server is back: failback after the damping probes")?;
    primary.restart()?;
    let failback = until_active(&engine, Some("primary"), Duration::from_secs(30)).await;
    show.say(&format!(
        "  active member is the primary again after {}",
        within(failback)
    ))?;
    phase(&mut show, &engine, &logs, [&primary, &backup], secs).await?;

    show.say("4. both servers down: events wait in safd's queue")?;
    primary.kill();
    backup.kill();
    until_active(&engine, None, Duration::from_secs(30)).await;
    phase(&mut show, &engine, &logs, [&primary, &backup], secs).await?;
    show.say(
        "   both back (primary first): the first to register catches up, the other is refused",
    )?;
    let outage_notices = engine.notices().recent().len();
    primary.restart()?;
    until_active(&engine, Some("primary"), Duration::from_secs(30)).await;
    backup.restart()?;
    phase(&mut show, &engine, &logs, [&primary, &backup], secs).await?;

    show.say("5. the simulator stops; safd delivers what is left")?;
    let _ = simulator.kill();
    let _ = simulator.wait();
    let total = generated(&logs);
    let deadline = Instant::now() + Duration::from_secs(120);
    let delivered = loop {
        let delivered = union(&primary.held(), &backup.held());
        if delivered >= total || Instant::now() >= deadline {
            break delivered;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        show.progress(&engine, &logs, [&primary, &backup])?;
    };
    show.progress(&engine, &logs, [&primary, &backup])?;
    engine.shutdown().await?;

    let (at_primary, at_backup) = (primary.held(), backup.held());
    let both = count(&at_primary) + count(&at_backup) - delivered;
    // Counted from what the servers store, by event id: every line the
    // simulator wrote has an id of its own, so what is missing is lost,
    // and an id a server holds twice is a duplicate. (A loss and a
    // duplicate would cancel out in a count of seqs.)
    let ids = IdCount::of(
        &[&primary, &backup],
        clock_micros(started) - 120_000_000,
        clock_micros(Instant::now()) + 120_000_000,
    )?;
    let lost = total.saturating_sub(ids.held);
    let notices = engine.notices().recent();
    // Who caught up after the total outage, and whose request was refused.
    let members_of = |id: u32| -> Vec<String> {
        let mut members: Vec<String> = notices
            .iter()
            .skip(outage_notices)
            .filter(|n| n.id == id)
            .filter_map(|n| n.field("member").map(str::to_owned))
            .collect();
        members.dedup();
        members
    };
    let (caught_up, refused) = (members_of(4001), members_of(4003));
    show.say("summary:")?;
    show.say(&format!("  generated            {total}"))?;
    show.say(&format!(
        "  delivered            {} distinct events (primary {}, backup {}; {both} on both: \
         failover and catch-up)",
        ids.held,
        count(&at_primary),
        count(&at_backup)
    ))?;
    // Each server stores a (stream, seq) and an event id once; what it got
    // again (retries, catch-up overlap) it counts and acknowledges.
    show.say(&format!(
        "  duplicates           {} stored twice by a server ({} re-sent events recognised and \
         not stored again)",
        ids.stored_twice,
        primary.recognised() + backup.recognised()
    ))?;
    show.say(&format!("  lost                 {lost}"))?;
    show.say(&format!(
        "  failover             {}",
        failover.map_or("-".to_owned(), |d| format!(
            "{} ms after the primary was killed",
            d.as_millis()
        ))
    ))?;
    show.say(&format!(
        "  failback             {}",
        failback.map_or("-".to_owned(), |d| format!(
            "{} ms after the primary was back",
            d.as_millis()
        ))
    ))?;
    show.say(&format!(
        "  catch-up             by {} (refused: {})",
        if caught_up.is_empty() {
            "nobody".to_owned()
        } else {
            caught_up.join(", ")
        },
        if refused.is_empty() {
            "nobody".to_owned()
        } else {
            refused.join(", ")
        }
    ))?;
    show.say(&format!(
        "  console              {}/console#token={TOKEN}  (backup: {}/console#token={TOKEN})",
        primary.base(),
        backup.base()
    ))?;
    let keep = args
        .keep_servers
        .unwrap_or_else(|| std::io::stdout().is_terminal());
    if keep {
        show.say("  the servers keep running for the console; Ctrl-C to end")?;
        drop(show);
        let _ = tokio::signal::ctrl_c().await;
    }
    Ok(
        if lost == 0 && ids.stored_twice == 0 && failover.is_some() && failback.is_some() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}
