//! `GET /metrics` in the Prometheus text format. The engine keeps plain
//! atomic counters (cheap on the hot path); this renders them on request.

use safd_engine::{Engine, Metrics, SourceActivity};
use std::fmt::Write as _;

/// One metric family: HELP, TYPE and its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn render(engine: &Engine) -> String {
    let metrics = engine.metrics();
    let mut out = String::new();
    let counters: [(&str, &str, &std::sync::atomic::AtomicU64); 10] = [
        (
            "safd_events_ingested_total",
            "Events stored durably (fsync) from sources.",
            &metrics.events_ingested,
        ),
        (
            "safd_events_delivered_total",
            "Events acknowledged by destination members.",
            &metrics.events_delivered,
        ),
        (
            "safd_delivery_calls_total",
            "Delivery calls made to destination members.",
            &metrics.delivery_calls,
        ),
        (
            "safd_delivery_retries_total",
            "Failed delivery calls that will be retried.",
            &metrics.delivery_retries,
        ),
        (
            "safd_failovers_total",
            "Changes of active member to a lower-priority member (event 1002).",
            &metrics.failovers,
        ),
        (
            "safd_failbacks_total",
            "Changes of active member back to a higher-priority member (event 1003).",
            &metrics.failbacks,
        ),
        (
            "safd_catch_ups_total",
            "Catch-ups started.",
            &metrics.catch_ups,
        ),
        (
            "safd_catch_ups_refused_total",
            "Catch-up requests refused by fencing (event 4003).",
            &metrics.catch_ups_refused,
        ),
        (
            "safd_dead_lettered_total",
            "Events permanently rejected and kept in a dead-letter queue.",
            &metrics.dead_lettered,
        ),
        (
            "safd_events_dropped_total",
            "Events dropped by when_full = \"drop_oldest\" (event 2003).",
            &metrics.events_dropped,
        ),
    ];
    for (name, help, counter) in counters {
        family(
            &mut out,
            name,
            "counter",
            help,
            &[(String::new(), Metrics::get(counter))],
        );
    }

    let streams = engine.streams().await;
    family(
        &mut out,
        "safd_queue_events",
        "gauge",
        "Events held in the queue per stream (acknowledged ones within retention included).",
        &streams
            .iter()
            .map(|s| {
                (
                    format!("stream=\"{}\"", label(&s.name)),
                    s.next_seq.saturating_sub(s.first_seq),
                )
            })
            .collect::<Vec<_>>(),
    );
    family(
        &mut out,
        "safd_queue_bytes",
        "gauge",
        "Stored bytes per stream.",
        &streams
            .iter()
            .map(|s| (format!("stream=\"{}\"", label(&s.name)), s.bytes))
            .collect::<Vec<_>>(),
    );
    let lag = engine.lag().await;
    family(
        &mut out,
        "safd_unacknowledged_events",
        "gauge",
        "Stored events not yet acknowledged, per cursor (group) and stream.",
        &lag.iter()
            .map(|((cursor, stream), &n)| {
                (
                    format!("cursor=\"{}\",stream=\"{}\"", label(cursor), label(stream)),
                    n,
                )
            })
            .collect::<Vec<_>>(),
    );
    let sources = engine.sources();
    let mut states = Vec::new();
    for source in &sources {
        for activity in SourceActivity::ALL {
            states.push((
                format!(
                    "stream=\"{}\",state=\"{}\"",
                    label(&source.stream),
                    activity.name()
                ),
                u64::from(source.activity == activity),
            ));
        }
    }
    family(
        &mut out,
        "safd_source_state",
        "gauge",
        "1 for the source's current state (starting, running, held-back, failing).",
        &states,
    );
    family(
        &mut out,
        "safd_source_failures",
        "gauge",
        "Failures in a row of the source's open, poll, seek or commit (0 while it runs).",
        &sources
            .iter()
            .map(|s| {
                (
                    format!("stream=\"{}\"", label(&s.stream)),
                    u64::from(s.failures),
                )
            })
            .collect::<Vec<_>>(),
    );
    let mut members = Vec::new();
    let mut epochs = Vec::new();
    for group in engine.groups() {
        for lane in group.lanes {
            epochs.push((format!("cursor=\"{}\"", label(&lane.cursor)), lane.epoch));
            for member in lane.members {
                let active = lane.active.as_deref() == Some(member.name.as_str());
                for health in ["ready", "degraded", "unreachable"] {
                    let value = u64::from(super::status::health_name(member.health) == health);
                    members.push((
                        format!(
                            "cursor=\"{}\",member=\"{}\",health=\"{health}\"",
                            label(&lane.cursor),
                            label(&member.name)
                        ),
                        value,
                    ));
                }
                members.push((
                    format!(
                        "cursor=\"{}\",member=\"{}\",health=\"active\"",
                        label(&lane.cursor),
                        label(&member.name)
                    ),
                    u64::from(active),
                ));
            }
        }
    }
    family(
        &mut out,
        "safd_member_state",
        "gauge",
        "1 for the member's current health, and for health=\"active\" when it is the active member.",
        &members,
    );
    family(
        &mut out,
        "safd_group_epoch",
        "gauge",
        "The group's epoch: bumped at every change of active member.",
        &epochs,
    );
    let fsync = metrics.fsync.snapshot();
    let _ = writeln!(
        out,
        "# HELP safd_fsync_seconds Time of the queue's fsyncs (one may serve many ingests)."
    );
    let _ = writeln!(out, "# TYPE safd_fsync_seconds histogram");
    for (bound, count) in &fsync.buckets {
        let le = bound.map_or_else(
            || "+Inf".to_owned(),
            |micros| (micros as f64 / 1e6).to_string(),
        );
        let _ = writeln!(out, "safd_fsync_seconds_bucket{{le=\"{le}\"}} {count}");
    }
    let _ = writeln!(
        out,
        "safd_fsync_seconds_sum {}",
        fsync.sum_micros as f64 / 1e6
    );
    let _ = writeln!(out, "safd_fsync_seconds_count {}", fsync.count);
    out
}
