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

/// Label pairs as Prometheus writes them: `k="v",…`.
fn labels(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| format!("{key}=\"{}\"", label(value)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A histogram family: cumulative buckets (µs bounds, shown in seconds),
/// sum and count, each sample with `with` labels.
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    series: &[(String, safd_engine::metrics::HistogramSnapshot)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (with, snapshot) in series {
        let sep = if with.is_empty() { "" } else { "," };
        for (bound, count) in &snapshot.buckets {
            let le = bound.map_or_else(
                || "+Inf".to_owned(),
                |micros| (micros as f64 / 1e6).to_string(),
            );
            let _ = writeln!(out, "{name}_bucket{{{with}{sep}le=\"{le}\"}} {count}");
        }
        let braces = if with.is_empty() {
            String::new()
        } else {
            format!("{{{with}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            snapshot.sum_micros as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braces} {}", snapshot.count);
    }
}

pub async fn render(engine: &Engine) -> String {
    let metrics = engine.metrics();
    let mut out = String::new();
    family(
        &mut out,
        "safd_build_info",
        "gauge",
        "Always 1; the labels say which safd this is.",
        &[(format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1)],
    );
    // Counters by stream, group and member: sum them for totals.
    let labelled = [
        (
            "safd_events_ingested_total",
            "Events stored durably (fsync) from sources, per stream.",
        ),
        (
            "safd_events_delivered_total",
            "Events acknowledged, per group, member and stream.",
        ),
        (
            "safd_delivery_calls_total",
            "Delivery calls made, per group and member.",
        ),
        (
            "safd_delivery_retries_total",
            "Failed delivery calls that will be retried, per group and member.",
        ),
        (
            "safd_failovers_total",
            "Changes of active member to a lower-priority member (event 1002), per group.",
        ),
        (
            "safd_failbacks_total",
            "Changes of active member back to a higher-priority member (event 1003), per group.",
        ),
        ("safd_catch_ups_total", "Catch-ups started, per group."),
        (
            "safd_catch_ups_refused_total",
            "Catch-up requests refused by fencing (event 4003), per group.",
        ),
        (
            "safd_dead_lettered_total",
            "Events permanently rejected and kept as dead letters, per group and member.",
        ),
    ];
    for (name, help) in labelled {
        let samples: Vec<(String, u64)> = metrics
            .labelled
            .samples(name)
            .into_iter()
            .map(|(pairs, n)| (labels(&pairs), n))
            .collect();
        family(&mut out, name, "counter", help, &samples);
    }
    family(
        &mut out,
        "safd_events_dropped_total",
        "counter",
        "Events dropped by when_full = \"drop_oldest\" (event 2003).",
        &[(String::new(), Metrics::get(&metrics.events_dropped))],
    );

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
    let queue = engine.queue();
    family(
        &mut out,
        "safd_queue_capacity_bytes",
        "gauge",
        "The queue's capacity (queue.capacity_mib): stored bytes, acknowledged or not.",
        &[(String::new(), queue.options().capacity_bytes)],
    );
    if let Some(free) = queue.free_space() {
        family(
            &mut out,
            "safd_data_disk_free_bytes",
            "gauge",
            "Free space on the data directory's file system.",
            &[(String::new(), free)],
        );
    }
    family(
        &mut out,
        "safd_data_disk_min_free_bytes",
        "gauge",
        "Free space the queue keeps (queue.min_free_mib): below it, sources wait.",
        &[(String::new(), queue.options().min_free_bytes)],
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
    family(
        &mut out,
        "safd_oldest_unacknowledged_age_seconds",
        "gauge",
        "Per cursor (group) and stream: how old the oldest event not yet acknowledged is, by \
         the event's own time (0 when all are acknowledged).",
        &super::status::oldest_unacknowledged(engine, &streams)
            .into_iter()
            .map(|((cursor, stream), age)| {
                (
                    format!(
                        "cursor=\"{}\",stream=\"{}\"",
                        label(&cursor),
                        label(&stream)
                    ),
                    age,
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
    histogram(
        &mut out,
        "safd_fsync_seconds",
        "Time of the queue's fsyncs (one may serve many ingests).",
        &[(String::new(), metrics.fsync.snapshot())],
    );
    histogram(
        &mut out,
        "safd_delivery_latency_seconds",
        "Per group: from an event's own time to its acknowledgement, for the last event of \
         every acknowledged run (a catch-up of old events shows as long latencies).",
        &metrics
            .delivery_latency
            .snapshot()
            .into_iter()
            .map(|(group, snapshot)| (format!("group=\"{}\"", label(&group)), snapshot))
            .collect::<Vec<_>>(),
    );
    let notices = engine.notices().counts();
    let per_connector = |id: u32| -> Vec<(String, u64)> {
        notices
            .iter()
            .filter(|(n, connector, _)| *n == id && !connector.is_empty())
            .map(|(_, connector, count)| (format!("connector=\"{}\"", label(connector)), *count))
            .collect()
    };
    family(
        &mut out,
        "safd_plugin_restarts_total",
        "counter",
        "Plugin instances rebuilt after a trap, a timeout or a fatal error (event 3003), per \
         connector.",
        &per_connector(safd_connector::event_ids::PLUGIN_RESTARTED),
    );
    family(
        &mut out,
        "safd_plugin_disabled_total",
        "counter",
        "Plugin instances disabled after repeated failures (event 3004), per connector; one \
         stays disabled until a reload.",
        &per_connector(safd_connector::event_ids::PLUGIN_DISABLED),
    );
    let mut by_id: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    for (id, _, count) in &notices {
        *by_id.entry(*id).or_default() += count;
    }
    family(
        &mut out,
        "safd_numbered_events_total",
        "counter",
        "safd's numbered events emitted since the start, per id (docs/events.md).",
        &by_id
            .iter()
            .map(|(id, count)| (format!("event_id=\"{id}\""), *count))
            .collect::<Vec<_>>(),
    );
    for (name, kind, help, value) in super::process::samples() {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
    out
}
