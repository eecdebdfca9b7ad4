//! Durable ingest (fsync per group commit) and replay reads, with 200-byte
//! events, at batch sizes 1, 64, 256 and 1024.
//!
//! `cargo bench -p safd-engine --bench ingest`. Four concurrent writers
//! (streams) model several sources sharing the group commit.
#![allow(clippy::unwrap_used)]

// The allocator the `safd` binary uses, so the figures are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use common::event;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use safd_connector::Event;
use safd_engine::{Notices, Queue, QueueOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH_SIZES: [usize; 4] = [1, 64, 256, 1024];
const WRITERS: usize = 4;

/// A queue that never fills up: criterion's iteration counts at these
/// rates store more than the default 1 GiB capacity, and nothing is
/// delivered to free it.
fn open_unbounded(path: &std::path::Path) -> Queue {
    let options = QueueOptions {
        capacity_bytes: 64 << 30,
        ..QueueOptions::default()
    };
    Queue::open_with(path, options, Notices::default(), Arc::default())
        .unwrap()
        .0
}

fn bench_ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("durable_ingest");
    for size in BATCH_SIZES {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(open_unbounded(dir.path()));
        let batch: Arc<Vec<Event>> = Arc::new((0..size).map(event).collect());
        group.throughput(Throughput::Elements((size * WRITERS) as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..WRITERS)
                        .map(|w| {
                            let queue = queue.clone();
                            let batch = batch.clone();
                            tokio::spawn(async move {
                                let stream = format!("s{w}");
                                for i in 0..iters {
                                    let cursor = i.to_be_bytes().to_vec();
                                    queue.ingest(&stream, &batch, Some(&cursor)).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn bench_replay(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap().0;
    let total = 200_000usize;
    let batch: Vec<Event> = (0..256).map(event).collect();
    rt.block_on(async {
        for _ in 0..total / 256 {
            queue.ingest("ems", &batch, None).await.unwrap();
        }
    });
    let stored = (total / 256 * 256) as u64;
    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(stored));
    group.bench_function("read_all_256_per_call", |b| {
        b.iter(|| {
            let mut from = 1;
            while from <= stored {
                let events = queue.read("ems", from, 256, usize::MAX).unwrap();
                from = events.last().unwrap().seq + 1;
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = ingest;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bench_ingest, bench_replay
}
criterion_main!(ingest);
