//! Events per second the management server accepts from the `mgmt-http`
//! plugin through safd's runtime over loopback, at batch 256 and 1024
//! (realistic events: six attributes, 200-byte body). Each delivery is
//! answered only after the server's durable commit.
//!
//! Run with `cargo xtask bench -p safd-mgmt --bench delivery`.
#![allow(clippy::unwrap_used)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use safd_connector::{
    Attribute, DestinationConnector, Endpoint, Event, MemberRole, SequencedEvent, SessionInfo,
    Severity, StreamBatch,
};
use safd_runtime::{Grants, Limits, Runtime, RuntimeConfig};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn event(seq: u64) -> SequencedEvent {
    let text = "LDEV 123 $LHNY1: LINE NOT READY, ERROR 140 ";
    SequencedEvent {
        seq,
        event: Event {
            id: format!("bench-{seq}"),
            time: 1_710_119_830_000_000 + seq as i64,
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
        },
    }
}

fn bench_delivery(c: &mut Criterion) {
    let data = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_safd-mgmt"))
        .args(["--listen", "127.0.0.1:0", "--token", "bench", "--data"])
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let plugins = std::env::var_os("SAFD_PLUGIN_DIR").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/plugins")),
        PathBuf::from,
    );
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/bench-plugin-cache"
        )),
        limits: Limits::default(),
    })
    .unwrap();
    let plugin = runtime.load(&plugins.join("mgmt-http.wasm")).unwrap();
    let grants = Grants {
        http: vec![base.trim_start_matches("http://").to_owned()],
        ..Grants::default()
    };
    let destination = rt
        .block_on(plugin.destination("bench", r#"{"token":"bench"}"#.into(), &grants))
        .unwrap();
    let mut session = rt
        .block_on(destination.open(Endpoint {
            member: "primary".into(),
            address: base,
            role: MemberRole::Primary,
        }))
        .unwrap();
    rt.block_on(session.register(&SessionInfo {
        agent_id: "bench".into(),
        group: "mgmt".into(),
        epoch: 1,
        active: true,
        stored: Vec::new(),
        acknowledged: Vec::new(),
    }))
    .unwrap();

    let mut next_seq = 1u64;
    let mut group = c.benchmark_group("mgmt_delivery");
    for size in [256u64, 1024] {
        group.throughput(Throughput::Elements(size));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_custom(|iters| {
                let mut busy = Duration::ZERO;
                for _ in 0..iters {
                    // Fresh seqs and ids: every event is stored, none deduplicated.
                    let batch = [StreamBatch {
                        stream: "ems".into(),
                        events: (next_seq..next_seq + size).map(event).collect(),
                    }];
                    next_seq += size;
                    let started = Instant::now();
                    let report = rt.block_on(session.deliver(&batch)).unwrap();
                    busy += started.elapsed();
                    assert_eq!(report.acknowledged[0].seq, next_seq - 1);
                }
                busy
            })
        });
    }
    group.finish();
    let _ = server.kill();
    let _ = server.wait();
}

criterion_group! {
    name = delivery;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = bench_delivery
}
criterion_main!(delivery);
