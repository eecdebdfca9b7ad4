//! The fencing rule for catch-up requests.
//!
//! A receiver that (re)registers may ask to be sent what it missed. In a
//! primary/backup pair only one of the two may catch up after an outage
//! (OVNM: "from the primary or the backup, never both"), otherwise both
//! servers would receive — and forward — the same backlog. safd honours a
//! request only when all of these hold:
//!
//! 1. the requester is the group's active member;
//! 2. the request carries the group's current epoch (the one safd told the
//!    receiver when it registered as active), so a request that was in
//!    flight across a change of active member is refused;
//! 3. the catch-up window is open: the active member took over from a
//!    state where no member was active (a total outage, or safd's own
//!    start), and no catch-up has been honoured since. A failover or
//!    failback between two live members does not open it: the other
//!    member received the events in the meantime.
//!
//! Operator-triggered catch-ups bypass rule 3 (the operator decides).

/// Why a catch-up request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// The requester is not the active member.
    NotActive { active: Option<String> },
    /// The request carries an epoch other than the current one.
    StaleEpoch { requested: u64, current: u64 },
    /// No outage preceded this member becoming active, or a catch-up was
    /// already honoured since.
    WindowClosed,
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotActive {
                active: Some(active),
            } => {
                write!(f, "not the active member (`{active}` is)")
            }
            Self::NotActive { active: None } => write!(f, "not the active member"),
            Self::StaleEpoch { requested, current } => {
                write!(f, "stale epoch {requested} (current epoch is {current})")
            }
            Self::WindowClosed => write!(
                f,
                "no outage to catch up from: the other member of the group received the \
                 events, or a catch-up was already honoured"
            ),
        }
    }
}

/// The outcome of the fencing rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatchUpDecision {
    Honour,
    Refuse(RefusalReason),
}

/// Apply the fencing rule (see the module documentation).
pub(crate) fn decide(
    requester: &str,
    active: Option<&str>,
    requested_epoch: u64,
    current_epoch: u64,
    window_open: bool,
) -> CatchUpDecision {
    if active != Some(requester) {
        return CatchUpDecision::Refuse(RefusalReason::NotActive {
            active: active.map(str::to_owned),
        });
    }
    if requested_epoch != current_epoch {
        return CatchUpDecision::Refuse(RefusalReason::StaleEpoch {
            requested: requested_epoch,
            current: current_epoch,
        });
    }
    if !window_open {
        return CatchUpDecision::Refuse(RefusalReason::WindowClosed);
    }
    CatchUpDecision::Honour
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_active_member_at_the_current_epoch_in_an_open_window() {
        assert_eq!(
            decide("primary", Some("primary"), 4, 4, true),
            CatchUpDecision::Honour
        );
        assert_eq!(
            decide("backup", Some("primary"), 4, 4, true),
            CatchUpDecision::Refuse(RefusalReason::NotActive {
                active: Some("primary".into())
            })
        );
        assert_eq!(
            decide("backup", None, 4, 4, true),
            CatchUpDecision::Refuse(RefusalReason::NotActive { active: None })
        );
        assert_eq!(
            decide("primary", Some("primary"), 3, 4, true),
            CatchUpDecision::Refuse(RefusalReason::StaleEpoch {
                requested: 3,
                current: 4
            })
        );
        assert_eq!(
            decide("primary", Some("primary"), 4, 4, false),
            CatchUpDecision::Refuse(RefusalReason::WindowClosed)
        );
    }
}
