//! EMS lines per second through the ems-reader plugin via the host, for
//! formats A and B: a directory of 100 000 simulated events is read from
//! its start by a fresh session, in polls of 1024 events.
//!
//! `cargo xtask bench -p safd --bench ems_reader`
#![allow(clippy::unwrap_used)]

// The allocator the `safd` binary uses, so the figures are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ems_sim::{Generator, LogWriter, SimConfig};
use safd_connector::{PollLimits, SourceConnector};
use safd_ems::{Format, Zone};
use safd_runtime::{Grants, Limits, Runtime, RuntimeConfig};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const EVENTS: u64 = 100_000;

fn plugin_dir() -> PathBuf {
    std::env::var_os("SAFD_PLUGIN_DIR").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/plugins")),
        PathBuf::from,
    )
}

fn bench_read(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/bench-plugin-cache"
        )),
        limits: Limits::default(),
    })
    .unwrap();
    let plugin = runtime.load(&plugin_dir().join("ems-reader.wasm")).unwrap();
    let mut group = c.benchmark_group("ems_reader");
    group.throughput(Throughput::Elements(EVENTS));
    for (format, name) in [(Format::A, "a"), (Format::B, "b")] {
        let dir = tempfile::tempdir().unwrap();
        let mut generator = Generator::new(SimConfig::default());
        let mut log = LogWriter::create(dir.path(), format, Zone::utc(), 4 << 20, 0).unwrap();
        for _ in 0..=EVENTS {
            log.write(&generator.next_event()).unwrap();
        }
        log.flush().unwrap();
        let config = serde_json::json!({
            "directory": dir.path(), "format": name, "system": "\\PROD1",
        });
        let source = plugin
            .source(
                "bench",
                config.to_string(),
                &Grants {
                    dirs: vec![dir.path().to_owned()],
                    ..Grants::default()
                },
            )
            .unwrap();
        group.bench_function(BenchmarkId::new("format", name), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let mut session = source.open(None).await.unwrap();
                        let mut read = 0;
                        while read < EVENTS {
                            let batch = session
                                .poll(PollLimits {
                                    max_events: 1024,
                                    max_bytes: 4 << 20,
                                })
                                .await
                                .unwrap();
                            read += batch.events.len() as u64;
                        }
                        total += start.elapsed();
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = ems_reader;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    targets = bench_read
}
criterion_main!(ems_reader);
