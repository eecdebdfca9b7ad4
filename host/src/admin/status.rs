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
    pub streams: Vec<StreamView>,
    /// Every source: what it is doing and its last error.
    #[serde(default)]
    pub sources: Vec<SourceView>,
    pub groups: Vec<GroupView>,
    /// safd's numbered events (failover, failback, catch-up…), newest last.
    pub recent_events: Vec<NoticeView>,
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
}

impl From<SourceStatus> for SourceView {
    fn from(s: SourceStatus) -> Self {
        Self {
            stream: s.stream,
            state: s.activity.name().to_owned(),
            since_secs: s.since.as_secs(),
            failures: s.failures,
            last_error: s.last_error,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupView {
    pub name: String,
    pub mode: String,
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
        let groups = engine
            .groups()
            .into_iter()
            .map(|group| GroupView {
                name: group.name,
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
        Self {
            agent_id: agent_id.to_owned(),
            uptime_secs: uptime.as_secs(),
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
            sources: engine.sources().into_iter().map(SourceView::from).collect(),
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
