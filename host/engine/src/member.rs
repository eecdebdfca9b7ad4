//! What the dispatcher knows about one member: its session, its health as
//! judged from registrations, deliveries and probes, and when to try it
//! next.

use crate::failover::MemberHealth;
use crate::group::Tuning;
use safd_connector::{
    Acknowledgement, DestinationConnector, DestinationSession, Endpoint, MemberRole,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) connector: Arc<dyn DestinationConnector>,
    /// Its answers only say "written to the connection" (plain TCP): what
    /// it took counts as delivered only after the group's linger.
    pub(crate) transport_write: bool,
    /// `None` before the first open, after a failure discarded it, and
    /// while a call owns it.
    pub(crate) session: Option<Box<dyn DestinationSession>>,
    /// A call to this member is in flight.
    pub(crate) busy: bool,
    /// That call is a registration.
    pub(crate) registering: bool,
    pub(crate) health: MemberHealth,
    /// The epoch this member last registered at; `None` until it has
    /// registered since it was last found unreachable.
    pub(crate) registered_epoch: Option<u64>,
    /// Its last registration said it was the active member: once it is
    /// not, it is told so (registered again), so that its server stops
    /// showing it active.
    pub(crate) told_active: bool,
    /// Consecutive successful probes or registrations (failback damping).
    pub(crate) healthy_probes: u32,
    /// Consecutive failed calls (retry backoff).
    pub(crate) failures: u32,
    /// Consecutive transient delivery errors.
    pub(crate) transient: u32,
    /// Since when every delivery got backpressure (none taken since).
    pub(crate) backpressured_since: Option<Instant>,
    /// No call before this instant (retry backoff, retry-after).
    pub(crate) hold_until: Instant,
    /// When the next probe is due.
    pub(crate) probe_due: Instant,
    pub(crate) last_error: Option<String>,
}

impl Member {
    pub(crate) fn new(
        name: String,
        address: String,
        role: MemberRole,
        connector: Arc<dyn DestinationConnector>,
    ) -> Self {
        Self {
            endpoint: Endpoint {
                member: name.clone(),
                address,
                role,
            },
            name,
            transport_write: connector.acknowledgement() == Acknowledgement::TransportWrite,
            connector,
            session: None,
            busy: false,
            registering: false,
            // Unknown until the first registration answers.
            health: MemberHealth::Unreachable,
            registered_epoch: None,
            told_active: false,
            healthy_probes: 0,
            failures: 0,
            transient: 0,
            backpressured_since: None,
            hold_until: Instant::now(),
            probe_due: Instant::now(),
            last_error: None,
        }
    }

    pub(crate) fn reachable(&self) -> bool {
        self.health != MemberHealth::Unreachable
    }

    /// A registration or probe answered: the member is reachable.
    /// Returns the previous health.
    pub(crate) fn answered(&mut self, service_ready: bool, tuning: &Tuning) -> MemberHealth {
        let previous = self.health;
        self.health = if service_ready {
            MemberHealth::Ready
        } else {
            MemberHealth::Degraded
        };
        if previous == self.health {
            self.healthy_probes = self.healthy_probes.saturating_add(1);
        } else {
            self.healthy_probes = 1;
        }
        self.failures = 0;
        self.last_error = None;
        self.probe_due = Instant::now() + tuning.probe_interval;
        previous
    }

    /// A call failed in a way that makes the member unreachable. The
    /// session is discarded (the next attempt opens and registers a fresh
    /// one). Returns the previous health.
    pub(crate) fn failed(&mut self, error: String, tuning: &Tuning) -> MemberHealth {
        let previous = self.health;
        self.health = MemberHealth::Unreachable;
        self.session = None;
        self.registered_epoch = None;
        self.healthy_probes = 0;
        self.transient = 0;
        self.backpressured_since = None;
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(error);
        self.hold_until = Instant::now() + backoff(self.failures, tuning);
        previous
    }

    /// Hold calls for `wait` (backpressure, transient retry).
    pub(crate) fn hold(&mut self, wait: Duration) {
        self.hold_until = Instant::now() + wait;
    }
}

/// Exponential backoff from `retry_min`, capped at `retry_max`. The first
/// retry comes quickly: a member that refused once is often back at once
/// (a restarting server).
pub(crate) fn backoff(failures: u32, tuning: &Tuning) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    tuning
        .retry_min
        .saturating_mul(1 << exponent)
        .min(tuning.retry_max)
}
