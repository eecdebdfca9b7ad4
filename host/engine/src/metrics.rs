//! Counters and the fsync latency histogram the daemon publishes.
//!
//! Gauges that are cheap to compute from state (queue depth and bytes,
//! cursor lag) are not kept here; `Engine::status` computes them on demand.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds of the fsync latency buckets, in microseconds.
pub const FSYNC_BUCKETS_MICROS: [u64; 10] = [
    250, 500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
];

/// Upper bounds of the delivery latency buckets (an event's time to its
/// acknowledgement), in microseconds: 10 ms to an hour.
pub const LATENCY_BUCKETS_MICROS: [u64; 12] = [
    10_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    60_000_000,
    300_000_000,
    3_600_000_000,
];

/// A cumulative-bucket latency histogram (Prometheus style).
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds of the buckets, in µs.
    bounds: &'static [u64],
    /// One count per bound, plus one for +Inf.
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    /// The fsync histogram's buckets.
    fn default() -> Self {
        Self::with_bounds(&FSYNC_BUCKETS_MICROS)
    }
}

impl Histogram {
    pub fn with_bounds(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = self
            .bounds
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(self.bounds.len());
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
                (self.bounds.get(i).copied(), cumulative)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// Label names and values of one sample, in a fixed order.
pub type Labels = Vec<(&'static str, String)>;

/// Counters that carry labels (per stream, group, member): one count per
/// family and label set. A lock per increment, taken once per batch or
/// call, never per event.
#[derive(Debug, Default)]
pub struct LabelledCounters {
    counts: Mutex<BTreeMap<(&'static str, Labels), u64>>,
}

impl LabelledCounters {
    pub(crate) fn add(&self, family: &'static str, labels: &[(&'static str, &str)], n: u64) {
        let labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        *self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((family, labels))
            .or_default() += n;
    }

    /// The samples of `family`.
    pub fn samples(&self, family: &str) -> Vec<(Labels, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|((f, _), _)| *f == family)
            .map(|((_, labels), n)| (labels.clone(), *n))
            .collect()
    }
}

/// Histograms per group (the delivery latency).
#[derive(Debug, Default)]
pub struct GroupHistograms {
    groups: Mutex<BTreeMap<String, Arc<Histogram>>>,
}

impl GroupHistograms {
    pub(crate) fn observe(&self, group: &str, latency: Duration) {
        let histogram = {
            let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
            match groups.get(group) {
                Some(histogram) => histogram.clone(),
                None => groups
                    .entry(group.to_owned())
                    .or_insert_with(|| Arc::new(Histogram::with_bounds(&LATENCY_BUCKETS_MICROS)))
                    .clone(),
            }
        };
        histogram.observe(latency);
    }

    pub fn snapshot(&self) -> Vec<(String, HistogramSnapshot)> {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(group, h)| (group.clone(), h.snapshot()))
            .collect()
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
    /// The counters above that carry labels, by label set (the totals
    /// stay above, for the status).
    pub labelled: LabelledCounters,
    /// Per group: from an event's own time to its acknowledgement,
    /// observed for the last event of every acknowledged run.
    pub delivery_latency: GroupHistograms,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_counters_add_up_per_label_set() {
        let counters = LabelledCounters::default();
        counters.add("safd_x_total", &[("group", "mgmt"), ("member", "a")], 3);
        counters.add("safd_x_total", &[("group", "mgmt"), ("member", "a")], 2);
        counters.add("safd_x_total", &[("group", "mgmt"), ("member", "b")], 1);
        counters.add("safd_y_total", &[("stream", "ems")], 7);
        let x = counters.samples("safd_x_total");
        assert_eq!(
            x,
            vec![
                (vec![("group", "mgmt".into()), ("member", "a".into())], 5),
                (vec![("group", "mgmt".into()), ("member", "b".into())], 1),
            ]
        );
        assert_eq!(counters.samples("safd_y_total").len(), 1);
        assert!(counters.samples("safd_z_total").is_empty());
    }

    #[test]
    fn latency_histograms_count_per_group_in_their_buckets() {
        let groups = GroupHistograms::default();
        groups.observe("mgmt", Duration::from_millis(5));
        groups.observe("mgmt", Duration::from_secs(2));
        groups.observe("siem", Duration::from_secs(7200));
        let snapshot = groups.snapshot();
        let (name, mgmt) = &snapshot[0];
        assert_eq!(name, "mgmt");
        assert_eq!(mgmt.count, 2);
        // 5 ms is in the first bucket (≤ 10 ms), 2 s in ≤ 2.5 s.
        assert_eq!(mgmt.buckets[0], (Some(10_000), 1));
        assert_eq!(mgmt.buckets[6], (Some(2_500_000), 2));
        let (_, siem) = &snapshot[1];
        assert_eq!(siem.buckets.last(), Some(&(None, 1)));
        assert_eq!(siem.buckets[LATENCY_BUCKETS_MICROS.len() - 1].1, 0);
    }
}
