//! Which member of a failover group receives events.
//!
//! The rule is the one in `docs/design/failover-matrix.csv` (derived from the
//! OVNM primary/backup table): the highest-priority member that is reachable
//! and whose event service is ready; otherwise the highest-priority member
//! that is reachable at all (its server keeps events in its own durable
//! inbox until its service is back); otherwise nobody, and events wait in
//! safd's own queue.

/// How safd currently sees one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberHealth {
    /// Reachable, event service running.
    Ready,
    /// Reachable, event service not running (it spools into its inbox).
    Degraded,
    /// Cannot be reached (refused, timed out, silent).
    Unreachable,
}

/// Where undelivered events are held while the group is in a given state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventsWaitIn {
    /// Nowhere: the active member processes them as they arrive.
    Nowhere,
    /// In the inbox of the active (degraded) member's server, by index.
    ServerInbox(usize),
    /// In safd's own durable queue: no member is reachable.
    SafdQueue,
}

/// The active member for `members` listed in priority order (primary
/// first), or `None` when no member is reachable.
pub fn choose_active(members: &[MemberHealth]) -> Option<usize> {
    members
        .iter()
        .position(|m| *m == MemberHealth::Ready)
        .or_else(|| members.iter().position(|m| *m == MemberHealth::Degraded))
}

/// Where events wait while the group is in this state.
pub fn events_wait_in(members: &[MemberHealth]) -> EventsWaitIn {
    match choose_active(members) {
        None => EventsWaitIn::SafdQueue,
        Some(i) if members[i] == MemberHealth::Degraded => EventsWaitIn::ServerInbox(i),
        Some(_) => EventsWaitIn::Nowhere,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MATRIX: &str = include_str!("../../../docs/design/failover-matrix.csv");

    fn health(service: &str, link: &str) -> MemberHealth {
        match (service, link) {
            (_, "down") => MemberHealth::Unreachable,
            ("up", "up") => MemberHealth::Ready,
            ("down", "up") => MemberHealth::Degraded,
            other => panic!("unexpected state {other:?}"),
        }
    }

    /// Every row of the design's state table: the active member and where
    /// events wait. (Catch-up by the first registrant is the engine's part.)
    #[test]
    fn every_row_of_the_failover_matrix() {
        let mut rows = 0;
        for line in MATRIX.lines().filter(|l| !l.starts_with('#')).skip(1) {
            let cols: Vec<&str> = line.split(',').collect();
            let (p_service, p_link, b_service, b_link) = (cols[0], cols[1], cols[2], cols[3]);
            let (expected_active, waits, catchup) = (cols[5], cols[6], cols[7]);
            let members = [health(p_service, p_link), health(b_service, b_link)];
            let active = match choose_active(&members) {
                Some(0) => "primary",
                Some(1) => "backup",
                None => "none",
                Some(other) => panic!("member {other} of 2"),
            };
            assert_eq!(active, expected_active, "row: {line}");
            let expected_wait = match waits {
                "-" => EventsWaitIn::Nowhere,
                "safd-queue" => EventsWaitIn::SafdQueue,
                "primary-server-inbox" => EventsWaitIn::ServerInbox(0),
                "backup-server-inbox" => EventsWaitIn::ServerInbox(1),
                other => panic!("unknown events_wait_in {other}"),
            };
            assert_eq!(events_wait_in(&members), expected_wait, "row: {line}");
            // Catch-up by the first registrant exactly when nobody is active.
            assert_eq!(
                catchup == "first-registrant",
                active == "none",
                "row: {line}"
            );
            rows += 1;
        }
        assert_eq!(rows, 16);
    }

    #[test]
    fn more_than_two_members_follow_priority() {
        use MemberHealth::*;
        assert_eq!(choose_active(&[Unreachable, Degraded, Ready]), Some(2));
        assert_eq!(choose_active(&[Degraded, Unreachable, Degraded]), Some(0));
        assert_eq!(
            choose_active(&[Unreachable, Unreachable, Unreachable]),
            None
        );
        assert_eq!(choose_active(&[]), None);
    }
}
