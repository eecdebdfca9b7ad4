//! `safd demo`: a smoke pipeline through two plugins.
//!
//! Moves generated events from the `fixture-source` plugin through the host
//! into the `fixture-destination` plugin, with the same protocol the daemon
//! uses (poll → deliver → acknowledge → commit), and counts every event.

use anyhow::{Context, bail};
use clap::Args;
use safd_connector::{
    DestinationConnector, Endpoint, MemberRole, PollLimits, SequencedEvent, SessionInfo,
    SourceConnector, StreamBatch,
};
use safd_runtime::Grants;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
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
    let source_config = serde_json::json!({
        "total": args.events,
        "events_per_poll": args.batch,
        "prefix": STREAM,
    });
    let source =
        source_plugin.source("demo-source", source_config.to_string(), &Grants::default())?;
    let destination = destination_plugin
        .destination("demo-destination", "{}".into(), &Grants::default())
        .await?;

    let mut reader = source.open(None).await?;
    let mut writer = destination
        .open(Endpoint {
            member: "primary".into(),
            address: "in-process".into(),
            role: MemberRole::Primary,
        })
        .await?;
    writer.register(&SessionInfo::default()).await?;

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "safd demo: {} events, source `fixture-source` -> destination `fixture-destination`, batch {}",
        args.events, args.batch
    )?;
    let limits = PollLimits {
        max_events: args.batch,
        max_bytes: 4 << 20,
    };
    let started = Instant::now();
    let mut last_report = started;
    let mut next_seq = 1u64;
    let mut acknowledged = 0u64;
    let mut ids = BTreeSet::new();
    let mut duplicates = 0u64;
    loop {
        let batch = reader.poll(limits).await?;
        if batch.events.is_empty() {
            break;
        }
        let events: Vec<SequencedEvent> = batch
            .events
            .into_iter()
            .map(|event| {
                let seq = next_seq;
                next_seq += 1;
                SequencedEvent { seq, event }
            })
            .collect();
        for e in &events {
            if !ids.insert(e.event.id.clone()) {
                duplicates += 1;
            }
        }
        let last = events.last().map_or(0, |e| e.seq);
        let report = writer
            .deliver(&[StreamBatch {
                stream: STREAM.into(),
                events,
            }])
            .await?;
        let through = report
            .acknowledged
            .iter()
            .find(|p| p.stream == STREAM)
            .map_or(0, |p| p.seq);
        if through != last {
            bail!("destination acknowledged through {through}, expected {last}");
        }
        acknowledged = through;
        if let Some(cursor) = &batch.cursor {
            reader.commit(cursor).await?;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            writeln!(out, "  {acknowledged} events delivered")?;
        }
        if !batch.more {
            break;
        }
    }
    let elapsed = started.elapsed();
    let generated = next_seq - 1;
    let lost = args.events.saturating_sub(acknowledged);
    writeln!(out, "summary:")?;
    writeln!(out, "  generated   {generated}")?;
    writeln!(out, "  delivered   {acknowledged}")?;
    writeln!(out, "  duplicates  {duplicates}")?;
    writeln!(out, "  lost        {lost}")?;
    writeln!(
        out,
        "  time        {:.2} s ({:.0} events/s through both plugins)",
        elapsed.as_secs_f64(),
        acknowledged as f64 / elapsed.as_secs_f64().max(1e-9)
    )?;
    Ok(
        if lost == 0 && duplicates == 0 && generated == args.events {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}
