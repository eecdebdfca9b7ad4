//! `safd demo`: the delivery engine on the built plugins.
//!
//! Generated events flow from the `fixture-source` plugin through the
//! engine's durable queue to a failover group of two `fixture-destination`
//! plugin instances. The primary is scripted to fail now and then
//! (`unavailable`, as if its server went away, and refusing probes for a
//! while), so the demo shows failover, damped failback and the numbered
//! events, and ends with a count: generated, stored, delivered, lost.

use anyhow::Context;
use clap::Args;
use safd_engine::{
    Engine, EngineOptions, GroupConfig, GroupMode, MemberConfig, Metrics, PumpTuning, QueueOptions,
    Tuning,
};
use safd_runtime::Grants;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Plugin directory holding fixture-source and fixture-destination
    /// (built by `cargo xtask plugins` into target/plugins).
    #[arg(long, env = "SAFD_PLUGIN_DIR")]
    plugins: PathBuf,
    /// How many events to move.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Events per poll and per delivery.
    #[arg(long, default_value_t = 256)]
    batch: u32,
    /// Deliveries the primary accepts before it fails (0: never fails).
    #[arg(long, default_value_t = 150)]
    fail_after: usize,
    /// Queue directory (default: a temporary directory removed at the end).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Give up if delivery has not finished after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    #[command(flatten)]
    cache: super::CacheArgs,
}

const STREAM: &str = "demo";

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let runtime = args.cache.runtime()?;
    let load = |name: &str| {
        runtime
            .load(&args.plugins.join(format!("{name}.wasm")))
            .with_context(|| {
                format!("loading {name}; build the plugins with `cargo xtask plugins`")
            })
    };
    let source_plugin = load("fixture-source")?;
    let destination_plugin = load("fixture-destination")?;
    let source = source_plugin.source(
        "demo-source",
        serde_json::json!({
            "total": args.events,
            "events_per_poll": args.batch,
            "prefix": STREAM,
        })
        .to_string(),
        &Grants::default(),
    )?;
    // The primary delivers `fail_after` batches, then its server "goes
    // away" (the call fails as unavailable). Its next session answers
    // again: safd fails back after the damping probes, and the cycle
    // repeats `fail_after` batches later.
    let mut primary_script = vec!["ok"; args.fail_after];
    primary_script.push("error:unavailable");
    let primary_config = if args.fail_after == 0 {
        serde_json::json!({})
    } else {
        serde_json::json!({ "script": primary_script })
    };
    let primary = destination_plugin
        .destination(
            "demo-primary",
            primary_config.to_string(),
            &Grants::default(),
        )
        .await?;
    let backup = destination_plugin
        .destination("demo-backup", "{}".into(), &Grants::default())
        .await?;

    let temporary = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_owned());
    let (engine, _) = Engine::open(EngineOptions {
        agent_id: "safd-demo".into(),
        data_dir,
        queue: QueueOptions::default(),
        retention_interval: Duration::from_secs(10),
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "safd demo: {} events from `fixture-source` through the durable queue to group `mgmt` \
         (primary, backup: `fixture-destination`); the primary fails every {} deliveries",
        args.events, args.fail_after
    )?;
    let started = Instant::now();
    engine.add_source(
        STREAM,
        Arc::new(source),
        PumpTuning {
            limits: safd_connector::PollLimits {
                max_events: args.batch,
                max_bytes: 4 << 20,
            },
            ..PumpTuning::default()
        },
    )?;
    engine.add_group(GroupConfig {
        name: "mgmt".into(),
        mode: GroupMode::Failover,
        members: vec![
            MemberConfig {
                name: "primary".into(),
                address: "in-process".into(),
                connector: Arc::new(primary),
            },
            MemberConfig {
                name: "backup".into(),
                address: "in-process".into(),
                connector: Arc::new(backup),
            },
        ],
        tuning: Tuning {
            batch_max_events: args.batch as usize * 2,
            probe_interval: Duration::from_millis(200),
            ..Tuning::default()
        },
    })?;

    let deadline = started + Duration::from_secs(args.timeout_secs);
    let mut shown_notices = 0;
    let mut last_report = Instant::now();
    let delivered = loop {
        let notices = engine.notices().recent();
        for notice in notices.iter().skip(shown_notices) {
            writeln!(out, "  [{}] {}", notice.id, notice.message)?;
        }
        shown_notices = notices.len().max(shown_notices);
        let (stored, delivered, active) = progress(&engine).await;
        if delivered >= args.events || Instant::now() >= deadline {
            break delivered;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            writeln!(
                out,
                "  stored {stored:>8}  delivered {delivered:>8}  active {}",
                active.as_deref().unwrap_or("none")
            )?;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = started.elapsed();
    let (stored, _, _) = progress(&engine).await;
    engine.shutdown().await?;
    let metrics = engine.metrics();
    let lost = args.events.saturating_sub(delivered);
    writeln!(out, "summary:")?;
    writeln!(out, "  generated   {}", args.events)?;
    writeln!(out, "  stored      {stored}")?;
    writeln!(out, "  delivered   {delivered}")?;
    writeln!(out, "  lost        {lost}")?;
    writeln!(
        out,
        "  failovers   {}   failbacks {}",
        Metrics::get(&metrics.failovers),
        Metrics::get(&metrics.failbacks)
    )?;
    writeln!(
        out,
        "  time        {:.2} s ({:.0} events/s, fsync before every acknowledgement to the source)",
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64().max(1e-9)
    )?;
    Ok(if lost == 0 && stored == args.events {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Stored and acknowledged events of the demo stream, and the active member.
async fn progress(engine: &Engine) -> (u64, u64, Option<String>) {
    let stored = engine.queue().stored_through(STREAM).await;
    let groups = engine.groups();
    let lane = groups.first().and_then(|g| g.lanes.first());
    let delivered = lane.and_then(|l| l.acked.get(STREAM).copied()).unwrap_or(0);
    (stored, delivered, lane.and_then(|l| l.active.clone()))
}
