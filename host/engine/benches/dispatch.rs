//! Dispatch: events already in the queue delivered through a failover
//! group's dispatcher to a null destination (acknowledges everything at
//! once), 200-byte events, batches of 512. Measures the engine's own cost
//! per event: queue reads, batching, ack bookkeeping.
//!
//! `cargo bench -p safd-engine --bench dispatch`
#![allow(clippy::unwrap_used)]

// The allocator the `safd` binary uses, so the figures are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use async_trait::async_trait;
use common::event;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use safd_connector::{
    Acknowledgement, DeliveryReport, DestinationConnector, DestinationSession, Endpoint, Event,
    Health, Registration, SessionError, SessionInfo, StreamBatch, StreamPosition,
};
use safd_engine::{
    Engine, EngineOptions, GroupConfig, GroupMode, MemberConfig, QueueOptions, Tuning,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EVENTS: usize = 100_000;

#[derive(Debug)]
struct Null;

#[async_trait]
impl DestinationConnector for Null {
    async fn open(&self, _: Endpoint) -> Result<Box<dyn DestinationSession>, SessionError> {
        Ok(Box::new(Null))
    }
    fn acknowledgement(&self) -> Acknowledgement {
        Acknowledgement::DurableCommit
    }
}

#[async_trait]
impl DestinationSession for Null {
    async fn register(&mut self, _: &SessionInfo) -> Result<Registration, SessionError> {
        Ok(Registration {
            high_water: Vec::new(),
            service_ready: true,
            catch_up: None,
        })
    }
    async fn deliver(&mut self, batches: &[StreamBatch]) -> Result<DeliveryReport, SessionError> {
        Ok(DeliveryReport {
            acknowledged: batches
                .iter()
                .filter_map(|b| {
                    b.events.last_seq().map(|seq| StreamPosition {
                        stream: b.stream.clone(),
                        seq,
                    })
                })
                .collect(),
            rejected: Vec::new(),
        })
    }
    async fn probe(&mut self) -> Result<Health, SessionError> {
        Ok(Health {
            service_ready: true,
            detail: String::new(),
        })
    }
}

fn bench_dispatch(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("null_destination_batch_512", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(async {
                    let dir = tempfile::tempdir().unwrap();
                    let (engine, _) = Engine::open(EngineOptions {
                        agent_id: "bench".into(),
                        data_dir: dir.path().to_owned(),
                        queue: QueueOptions::default(),
                        retention_interval: Duration::from_secs(3600),
                    })
                    .unwrap();
                    let batch: Vec<Event> = (0..1024).map(event).collect();
                    for _ in 0..EVENTS / 1024 {
                        engine.queue().ingest("ems", &batch, None).await.unwrap();
                    }
                    let stored = (EVENTS / 1024 * 1024) as u64;
                    let start = Instant::now();
                    engine
                        .add_group(GroupConfig {
                            name: "null".into(),
                            mode: GroupMode::Failover,
                            members: vec![MemberConfig {
                                name: "null".into(),
                                address: "null".into(),
                                connector: Arc::new(Null),
                            }],
                            tuning: Tuning::default(),
                            streams: safd_engine::Routes::all(),
                            min_severity: None,
                        })
                        .unwrap();
                    loop {
                        let lanes = &engine.groups()[0].lanes;
                        if lanes[0].acked.get("ems").copied().unwrap_or(0) >= stored {
                            break;
                        }
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                    let took = start.elapsed();
                    engine.shutdown().await.unwrap();
                    took
                });
            }
            total
        })
    });
    group.finish();
}

criterion_group! {
    name = dispatch;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    targets = bench_dispatch
}
criterion_main!(dispatch);
