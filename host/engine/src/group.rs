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
            batch_max_events: 4096,
            batch_max_bytes: 4 << 20,
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

/// Which streams a group delivers: all, or those whose name matches one
/// of its globs (`*`, `?`, `[…]`, as a shell's).
#[derive(Clone, Debug, Default)]
pub struct Routes {
    /// `None`: every stream.
    set: Option<Arc<globset::GlobSet>>,
    patterns: Vec<String>,
}

impl Routes {
    /// Every stream.
    pub fn all() -> Self {
        Self::default()
    }

    /// The streams `patterns` match; an empty list would route nothing and
    /// is refused, as is a pattern that is not a glob.
    pub fn matching(patterns: &[String]) -> Result<Self, String> {
        if patterns.is_empty() {
            return Err(
                "routes no stream; remove `streams` to deliver them all, or name some".to_owned(),
            );
        }
        let mut builder = globset::GlobSetBuilder::new();
        for pattern in patterns {
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(false)
                .build()
                .map_err(|e| format!("`{pattern}` is not a glob: {e}"))?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| e.to_string())?;
        Ok(Self {
            set: Some(Arc::new(set)),
            patterns: patterns.to_vec(),
        })
    }

    /// Whether the group delivers `stream`.
    pub fn routes(&self, stream: &str) -> bool {
        self.set.as_ref().is_none_or(|set| set.is_match(stream))
    }

    /// Whether it delivers every stream.
    pub fn is_all(&self) -> bool {
        self.set.is_none()
    }

    /// The globs as written (empty for all).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

/// A destination group.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    pub name: String,
    pub mode: GroupMode,
    pub members: Vec<MemberConfig>,
    pub tuning: Tuning,
    /// The streams it delivers; the others it passes over (acknowledged as
    /// nothing to deliver, so they neither wait in its backlog nor hold
    /// back retention).
    pub streams: Routes,
    /// Events below it are not delivered (`min_severity`): the group's
    /// receivers are told which seqs were left out, so their held
    /// positions stay whole.
    pub min_severity: Option<safd_connector::Severity>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_stream_names_like_a_shell() {
        assert!(Routes::all().routes("anything"));
        let routes = Routes::matching(&["ems-*".into(), "safd".into()]).unwrap();
        assert!(routes.routes("ems-prod1") && routes.routes("safd"));
        assert!(!routes.routes("app") && !routes.routes("safd2"));
        assert!(Routes::matching(&[]).is_err());
        let err = Routes::matching(&["ems-[".into()]).unwrap_err();
        assert!(err.contains("`ems-[` is not a glob"), "{err}");
    }
}
