//! `GET /status`: what an operator asks first — are events flowing, where
//! are they waiting, which member is active and why.

use safd_engine::{Engine, GroupMode, MemberHealth, SourceStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How many of safd's own recent events the status shows.
const RECENT_EVENTS: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub agent_id: String,
    pub uptime_secs: u64,
    /// How full the queue is, and the disk it is on.
    #[serde(default)]
    pub queue: QueueView,
    pub streams: Vec<StreamView>,
    /// Every source: what it is doing and its last error.
    #[serde(default)]
    pub sources: Vec<SourceView>,
    pub groups: Vec<GroupView>,
    /// safd's numbered events (failover, failback, catch-up…), newest last.
    pub recent_events: Vec<NoticeView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueueView {
    /// `queue.capacity_mib`, in bytes; `stored_bytes` against it is the
    /// fill (acknowledged events within retention included).
    pub capacity_bytes: u64,
    pub stored_bytes: u64,
    /// Free space on the data directory's file system (when it can be
    /// told), and what the queue keeps free (`queue.min_free_mib`).
    pub disk_free_bytes: Option<u64>,
    pub min_free_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamView {
    pub name: String,
    /// Oldest seq still stored and the next seq to be assigned.
    pub first_seq: u64,
    pub next_seq: u64,
    /// Events and bytes held (acknowledged ones within retention included).
    pub stored_events: u64,
    pub bytes: u64,
    /// Whether the source has a durable cursor yet.
    pub has_cursor: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceView {
    /// The stream it feeds (the source's name).
    pub stream: String,
    /// `starting`, `running`, `held-back` or `failing`.
    pub state: String,
    /// Seconds in that state.
    pub since_secs: u64,
    /// Failures in a row (0 while it runs).
    pub failures: u32,
    /// The last failure or hold-up, kept after it recovered.
    pub last_error: Option<String>,
    /// Times its plugin instance was rebuilt (event 3003) since the start.
    #[serde(default)]
    pub restarts: u64,
}

impl SourceView {
    fn of(s: SourceStatus, restarts: u64) -> Self {
        Self {
            stream: s.stream,
            state: s.activity.name().to_owned(),
            since_secs: s.since.as_secs(),
            failures: s.failures,
            last_error: s.last_error,
            restarts,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupView {
    pub name: String,
    pub mode: String,
    /// The `streams` globs it delivers (empty: every stream).
    #[serde(default)]
    pub streams: Vec<String>,
    pub lanes: Vec<LaneView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaneView {
    /// The cursor owner: the group, or `group/member` in broadcast mode.
    pub cursor: String,
    pub active: Option<String>,
    pub epoch: u64,
    pub catching_up: bool,
    /// Per stream: the highest acknowledged seq, and how many stored events
    /// are not acknowledged yet.
    pub acknowledged: BTreeMap<String, u64>,
    pub lag: BTreeMap<String, u64>,
    /// Per stream: how old the oldest event not yet acknowledged is, in
    /// seconds by the event's own time (0 when none is waiting).
    #[serde(default)]
    pub oldest_unacknowledged_secs: BTreeMap<String, u64>,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberView {
    pub name: String,
    pub address: String,
    /// `ready`, `degraded` or `unreachable`.
    pub health: String,
    pub registered: bool,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoticeView {
    pub id: u32,
    pub severity: String,
    pub message: String,
    /// RFC 3339.
    pub time: String,
    pub fields: BTreeMap<String, String>,
}

pub fn health_name(health: MemberHealth) -> &'static str {
    match health {
        MemberHealth::Ready => "ready",
        MemberHealth::Degraded => "degraded",
        MemberHealth::Unreachable => "unreachable",
    }
}

pub fn rfc3339(micros: i64) -> String {
    jiff::Timestamp::from_microsecond(micros)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| micros.to_string())
}

impl Status {
    pub async fn gather(engine: &Engine, agent_id: &str, uptime: Duration) -> Self {
        let streams = engine.streams().await;
        let lag = engine.lag().await;
        let oldest = oldest_unacknowledged(engine, &streams);
        let groups = engine
            .groups()
            .into_iter()
            .map(|group| GroupView {
                name: group.name,
                streams: group.streams,
                mode: match group.mode {
                    GroupMode::Failover => "failover",
                    GroupMode::Broadcast => "broadcast",
                }
                .to_owned(),
                lanes: group
                    .lanes
                    .into_iter()
                    .map(|lane| LaneView {
                        lag: lag
                            .iter()
                            .filter(|((cursor, _), _)| *cursor == lane.cursor)
                            .map(|((_, stream), &n)| (stream.clone(), n))
                            .collect(),
                        oldest_unacknowledged_secs: oldest
                            .iter()
                            .filter(|((cursor, _), _)| *cursor == lane.cursor)
                            .map(|((_, stream), age)| (stream.clone(), *age))
                            .collect(),
                        cursor: lane.cursor,
                        active: lane.active,
                        epoch: lane.epoch,
                        catching_up: lane.catching_up,
                        acknowledged: lane.acked,
                        members: lane
                            .members
                            .into_iter()
                            .map(|m| MemberView {
                                name: m.name,
                                address: m.address,
                                health: health_name(m.health).to_owned(),
                                registered: m.registered,
                                last_error: m.last_error,
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        let notices = engine.notices().recent();
        let skip = notices.len().saturating_sub(RECENT_EVENTS);
        let counts = engine.notices().counts();
        let restarts = |connector: &str| {
            counts
                .iter()
                .filter(|(id, c, _)| {
                    *id == safd_connector::event_ids::PLUGIN_RESTARTED && c == connector
                })
                .map(|(_, _, n)| n)
                .sum()
        };
        let queue = engine.queue();
        Self {
            agent_id: agent_id.to_owned(),
            uptime_secs: uptime.as_secs(),
            queue: QueueView {
                capacity_bytes: queue.options().capacity_bytes,
                stored_bytes: streams.iter().map(|s| s.bytes).sum(),
                disk_free_bytes: queue.free_space(),
                min_free_bytes: queue.options().min_free_bytes,
            },
            streams: streams
                .into_iter()
                .map(|s| StreamView {
                    stored_events: s.next_seq.saturating_sub(s.first_seq),
                    name: s.name,
                    first_seq: s.first_seq,
                    next_seq: s.next_seq,
                    bytes: s.bytes,
                    has_cursor: s.cursor.is_some(),
                })
                .collect(),
            sources: engine
                .sources()
                .into_iter()
                .map(|source| {
                    let restarts = restarts(&source.stream);
                    SourceView::of(source, restarts)
                })
                .collect(),
            groups,
            recent_events: notices
                .into_iter()
                .skip(skip)
                .map(|n| NoticeView {
                    id: n.id,
                    severity: format!("{:?}", n.severity).to_lowercase(),
                    message: n.message,
                    time: rfc3339(n.time),
                    fields: n
                        .fields
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Per cursor and stream, the age in seconds of the oldest stored event
/// the cursor has not acknowledged (0 when it has them all), by the
/// event's own time: one event read from the queue per pair with a
/// backlog.
pub fn oldest_unacknowledged(
    engine: &Engine,
    streams: &[safd_engine::StreamStatus],
) -> Vec<((String, String), u64)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let mut out = Vec::new();
    for group in engine.groups() {
        for lane in group.lanes {
            for stream in streams {
                let acked = lane.acked.get(&stream.name).copied().unwrap_or(0);
                let first = (acked + 1).max(stream.first_seq);
                let age = if first >= stream.next_seq {
                    0
                } else {
                    match engine.queue().read(&stream.name, first, 1, 0) {
                        Ok(events) => events.first().map_or(0, |e| {
                            u64::try_from(now.saturating_sub(e.event.time) / 1_000_000).unwrap_or(0)
                        }),
                        Err(err) => {
                            tracing::debug!("oldest unacknowledged of {}: {err}", stream.name);
                            0
                        }
                    }
                };
                out.push(((lane.cursor.clone(), stream.name.clone()), age));
            }
        }
    }
    out
}
