//! Counters and the fsync latency histogram the daemon publishes.
//!
//! Gauges that are cheap to compute from state (queue depth and bytes,
//! cursor lag) are not kept here; `Engine::status` computes them on demand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the fsync latency buckets, in microseconds.
pub const FSYNC_BUCKETS_MICROS: [u64; 10] = [
    250, 500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
];

/// A cumulative-bucket latency histogram (Prometheus style).
#[derive(Debug, Default)]
pub struct Histogram {
    /// One count per bucket of `FSYNC_BUCKETS_MICROS`, plus one for +Inf.
    buckets: [AtomicU64; FSYNC_BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = FSYNC_BUCKETS_MICROS
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(FSYNC_BUCKETS_MICROS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Per bucket (upper bound in µs, `None` = +Inf) the cumulative count,
    /// then the sum in µs and the total count.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (FSYNC_BUCKETS_MICROS.get(i).copied(), cumulative)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(Option<u64>, u64)>,
    pub sum_micros: u64,
    pub count: u64,
}

/// Engine-wide counters (monotonic).
#[derive(Debug, Default)]
pub struct Metrics {
    pub events_ingested: AtomicU64,
    pub events_delivered: AtomicU64,
    pub delivery_calls: AtomicU64,
    /// Failed delivery calls that will be retried (on this or another member).
    pub delivery_retries: AtomicU64,
    pub failovers: AtomicU64,
    pub failbacks: AtomicU64,
    pub catch_ups: AtomicU64,
    pub catch_ups_refused: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub events_dropped: AtomicU64,
    pub fsync: Histogram,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
