//! The last 15 minutes of intake, in 5-second buckets, for the console's
//! plots: events stored per second and their lag (the time the server
//! received an event minus the event's own time). A fixed ring: what a
//! client sends cannot make it grow. Not persisted: after a restart the
//! plots start empty.

use serde::Serialize;
use std::collections::VecDeque;

/// Width of one bucket.
pub const BUCKET_MICROS: i64 = 5_000_000;
/// Buckets kept: 15 minutes.
pub const BUCKETS: usize = 180;

#[derive(Debug, Default)]
pub struct History {
    /// Oldest first; only buckets that saw a delivery.
    buckets: VecDeque<Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: i64,
    stored: u64,
    lag_sum_micros: i128,
    lag_max_micros: i64,
}

/// What one delivery stored: `events` new events whose lags add up to
/// `lag_sum_micros`, the longest `lag_max_micros`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Intake {
    pub events: u64,
    pub lag_sum_micros: i128,
    pub lag_max_micros: i64,
}

impl Intake {
    pub fn add(&mut self, received_at: i64, event_time: i64) {
        // An event from the future (a skewed clock) counts as no lag.
        let lag = received_at.saturating_sub(event_time).max(0);
        self.events += 1;
        self.lag_sum_micros += i128::from(lag);
        self.lag_max_micros = self.lag_max_micros.max(lag);
    }
}

/// One point of a plot.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// The bucket's start, microseconds since the Unix epoch.
    pub at: i64,
    pub events_per_sec: f64,
    /// Mean and longest lag of the bucket's events; absent without events.
    pub lag_avg_ms: Option<f64>,
    pub lag_max_ms: Option<f64>,
}

impl History {
    pub fn record(&mut self, received_at: i64, intake: Intake) {
        if intake.events == 0 {
            return;
        }
        let start = received_at - received_at.rem_euclid(BUCKET_MICROS);
        match self.buckets.back_mut() {
            Some(last) if last.start == start => {
                last.stored += intake.events;
                last.lag_sum_micros += intake.lag_sum_micros;
                last.lag_max_micros = last.lag_max_micros.max(intake.lag_max_micros);
            }
            _ => self.buckets.push_back(Bucket {
                start,
                stored: intake.events,
                lag_sum_micros: intake.lag_sum_micros,
                lag_max_micros: intake.lag_max_micros,
            }),
        }
        while self
            .buckets
            .front()
            .is_some_and(|first| first.start <= start - BUCKETS as i64 * BUCKET_MICROS)
        {
            self.buckets.pop_front();
        }
    }

    /// Every bucket of the 15 minutes up to `now`, oldest first; those
    /// without deliveries as zero.
    pub fn points(&self, now: i64) -> Vec<Point> {
        let current = now - now.rem_euclid(BUCKET_MICROS);
        let first = current - (BUCKETS as i64 - 1) * BUCKET_MICROS;
        let mut kept = self.buckets.iter().peekable();
        (0..BUCKETS as i64)
            .map(|n| {
                let at = first + n * BUCKET_MICROS;
                while kept.peek().is_some_and(|b| b.start < at) {
                    kept.next();
                }
                match kept.peek() {
                    Some(b) if b.start == at => Point {
                        at,
                        events_per_sec: b.stored as f64 * 1e6 / BUCKET_MICROS as f64,
                        lag_avg_ms: Some(b.lag_sum_micros as f64 / b.stored as f64 / 1000.0),
                        lag_max_ms: Some(b.lag_max_micros as f64 / 1000.0),
                    },
                    _ => Point {
                        at,
                        events_per_sec: 0.0,
                        lag_avg_ms: None,
                        lag_max_ms: None,
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intake(events: u64, lag_ms: i64) -> Intake {
        let mut intake = Intake::default();
        for _ in 0..events {
            intake.add(lag_ms * 1000, 0);
        }
        intake
    }

    #[test]
    fn deliveries_add_up_per_bucket_and_old_buckets_fall_out() {
        let mut history = History::default();
        let t0 = 1_000 * BUCKET_MICROS;
        history.record(t0 + 1, intake(10, 100));
        history.record(t0 + 2_000_000, intake(40, 300));
        history.record(t0 + BUCKET_MICROS, intake(5, 50));
        let points = history.points(t0 + BUCKET_MICROS + 1);
        assert_eq!(points.len(), BUCKETS);
        let last = &points[BUCKETS - 1];
        let before = &points[BUCKETS - 2];
        assert_eq!(before.at, t0);
        assert_eq!(before.events_per_sec, 10.0);
        assert_eq!(before.lag_avg_ms, Some(260.0));
        assert_eq!(before.lag_max_ms, Some(300.0));
        assert_eq!(last.events_per_sec, 1.0);
        assert_eq!(points[0].lag_avg_ms, None);

        // Fifteen minutes on, the old buckets are gone from memory too.
        history.record(t0 + BUCKETS as i64 * BUCKET_MICROS, intake(1, 0));
        assert_eq!(history.buckets.len(), 2);
        history.record(t0 + 2 * BUCKETS as i64 * BUCKET_MICROS, intake(1, 0));
        assert_eq!(history.buckets.len(), 1);
    }

    #[test]
    fn an_event_from_the_future_has_no_lag() {
        let mut intake = Intake::default();
        intake.add(0, 5_000_000);
        assert_eq!(intake.lag_max_micros, 0);
    }
}
