//! Destination group configuration.

use safd_connector::{DestinationConnector, MemberRole};
use std::sync::Arc;
use std::time::Duration;

/// How a group spreads events over its members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupMode {
    /// One active member at a time, chosen by priority and health
    /// (`failover-matrix.csv`); one cursor per stream for the group.
    Failover,
    /// Every member receives every event; one cursor per member and
    /// stream (OVNM's "alert" mode).
    Broadcast,
}

/// One member of a group, in priority order within the group.
#[derive(Clone)]
pub struct MemberConfig {
    pub name: String,
    /// Where the connector should deliver (URL, host:port…), passed to it
    /// as the session's endpoint.
    pub address: String,
    pub connector: Arc<dyn DestinationConnector>,
}

impl std::fmt::Debug for MemberConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberConfig")
            .field("name", &self.name)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Timings and sizes of a group's delivery. The defaults fail over in well
/// under a second on a refused connection and detect a silent peer within
/// `request_timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Events per delivery call (across streams).
    pub batch_max_events: usize,
    /// Event bytes per delivery call (at least one event is always sent).
    pub batch_max_bytes: usize,
    /// A register, deliver or probe call taking longer makes the member
    /// unreachable (a silent peer).
    pub request_timeout: Duration,
    /// How often members are probed (the active one only while idle).
    pub probe_interval: Duration,
    /// Consecutive healthy probes before failing back to a higher-priority
    /// member.
    pub failback_after: u32,
    /// Consecutive transient errors after which a member counts as
    /// unreachable.
    pub transient_limit: u32,
    /// First and longest wait before retrying an unreachable member.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// For destinations that only confirm writes (plain TCP): how long
    /// written events wait before they count as delivered. They are
    /// confirmed by a later call that started after the linger and
    /// succeeded on the same member; any failure before sends them again.
    pub linger: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            batch_max_events: 512,
            batch_max_bytes: 1 << 20,
            request_timeout: Duration::from_secs(3),
            probe_interval: Duration::from_secs(1),
            failback_after: 3,
            transient_limit: 3,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            linger: Duration::from_secs(1),
        }
    }
}

/// A destination group.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    pub name: String,
    pub mode: GroupMode,
    pub members: Vec<MemberConfig>,
    pub tuning: Tuning,
}

impl GroupConfig {
    /// The role a member plays, by its position.
    pub(crate) fn role(&self, index: usize) -> MemberRole {
        match (self.mode, index) {
            (GroupMode::Broadcast, _) => MemberRole::Broadcast,
            (GroupMode::Failover, 0) => MemberRole::Primary,
            (GroupMode::Failover, _) => MemberRole::Backup,
        }
    }
}
