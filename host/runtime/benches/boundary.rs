//! Host ↔ guest boundary cost: `poll` (guest → host) and `deliver`
//! (host → guest) at batch sizes 1, 64, 256 and 1024, with realistic events
//! (id, time, severity, six string attributes, 200-byte body).
//!
//! Run with `cargo xtask bench -p safd-runtime --bench boundary`. Criterion
//! reports time per call; divide by the batch size (or read the throughput
//! line) for the cost per event.
#![allow(clippy::unwrap_used)]

// The allocator the `safd` binary uses, so the figures are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use safd_connector::{
    Attribute, DestinationConnector, Endpoint, Event, MemberRole, PollLimits, SequencedEvent,
    SessionInfo, Severity, SourceConnector, StreamBatch,
};
use safd_runtime::{Grants, Limits, Runtime, RuntimeConfig};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const BATCH_SIZES: [u32; 4] = [1, 64, 256, 1024];

fn plugin_dir() -> PathBuf {
    std::env::var_os("SAFD_PLUGIN_DIR").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/plugins")),
        PathBuf::from,
    )
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/bench-plugin-cache"
        )),
        limits: Limits::default(),
    })
    .unwrap()
}

fn realistic_event(n: u64) -> Event {
    let text = "LDEV 123 $LHNY1: LINE NOT READY, ERROR 140 ";
    Event {
        id: format!("ems-prod1-ZZEV0001-{n:012}"),
        time: 1_710_119_830_000_000 + n as i64,
        severity: Severity::Critical,
        attributes: vec![
            Attribute::new("system", "\\PROD1"),
            Attribute::new("process", "$LHNY1"),
            Attribute::new("subsystem", "TANDEM.EXPAND.H01"),
            Attribute::new("event_number", "45"),
            Attribute::new("collector", "$0"),
            Attribute::new("log_file", "ZZEV0001"),
        ],
        body: text.chars().cycle().take(200).collect(),
    }
}

fn bench_poll(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let runtime = runtime();
    let plugin = runtime
        .load(&plugin_dir().join("fixture-source.wasm"))
        .unwrap();
    let mut group = c.benchmark_group("poll");
    for size in BATCH_SIZES {
        let config = serde_json::json!({ "events_per_poll": size, "body_bytes": 200 });
        let source = plugin
            .source("bench", config.to_string(), &Grants::default())
            .unwrap();
        let mut session = rt.block_on(source.open(None)).unwrap();
        let limits = PollLimits {
            max_events: size,
            max_bytes: u32::MAX,
        };
        group.throughput(Throughput::Elements(u64::from(size)));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let batch = session.poll(limits).await.unwrap();
                        assert_eq!(batch.events.len(), size as usize);
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn bench_deliver(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let runtime = runtime();
    let plugin = runtime
        .load(&plugin_dir().join("fixture-destination.wasm"))
        .unwrap();
    let destination = rt
        .block_on(plugin.destination("bench", "{}".into(), &Grants::default()))
        .unwrap();
    let mut session = rt
        .block_on(destination.open(Endpoint {
            member: "primary".into(),
            address: "in-process".into(),
            role: MemberRole::Primary,
        }))
        .unwrap();
    rt.block_on(session.register(&SessionInfo::default()))
        .unwrap();
    let mut group = c.benchmark_group("deliver");
    for size in BATCH_SIZES {
        let batch = [StreamBatch {
            stream: "ems-prod1".into(),
            events: (1..=u64::from(size))
                .map(|seq| SequencedEvent {
                    seq,
                    event: realistic_event(seq),
                })
                .collect(),
            left_out: Vec::new(),
        }];
        group.throughput(Throughput::Elements(u64::from(size)));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let report = session.deliver(&batch).await.unwrap();
                        assert_eq!(report.acknowledged[0].seq, u64::from(size));
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = boundary;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_poll, bench_deliver
}
criterion_main!(boundary);
