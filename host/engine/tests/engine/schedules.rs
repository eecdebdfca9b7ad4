//! Property test: random schedules of member failures and recoveries
//! (link and service), new events, operator catch-ups and engine restarts.
//! Whatever happens: no event is lost, every batch is in seq order, no
//! catch-up is honoured from a member that was not active at that epoch,
//! and at most one catch-up is honoured per epoch.

use crate::common::fakes::{FakeDestination, FakeSource, acked, catch_up_ems_from, eventually};
use proptest::prelude::*;
use safd_connector::event_ids::{CATCH_UP_STARTED, DELIVERY_RESUMED, FAILED_BACK, FAILED_OVER};
use safd_engine::failover::MemberHealth;
use safd_engine::{Engine, GroupConfig, GroupMode, Notice, PumpTuning, QueueOptions, Tuning};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
const MEMBERS: [&str; 2] = ["primary", "backup"];

#[derive(Clone, Debug)]
enum Step {
    Append(u64),
    Link(usize, bool),
    Service(usize, bool),
    OperatorCatchUp(u64),
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u64..25).prop_map(Step::Append),
        3 => (0usize..2, any::<bool>()).prop_map(|(m, up)| Step::Link(m, up)),
        2 => (0usize..2, any::<bool>()).prop_map(|(m, up)| Step::Service(m, up)),
        1 => (1u64..40).prop_map(Step::OperatorCatchUp),
        1 => Just(Step::Restart),
    ]
}

fn start(dir: &Path, source: &FakeSource, destination: &FakeDestination) -> Engine {
    let (engine, _) = crate::common::fakes::open_engine(dir.to_owned(), QueueOptions::default());
    engine
        .add_source(
            "ems",
            Arc::new(source.clone()),
            PumpTuning {
                idle_wait: Duration::from_millis(2),
                ..PumpTuning::default()
            },
        )
        .unwrap();
    engine
        .add_group(GroupConfig {
            name: "mgmt".into(),
            mode: GroupMode::Failover,
            members: crate::common::fakes::fake_members(&MEMBERS, destination),
            tuning: Tuning {
                batch_max_events: 8,
                request_timeout: Duration::from_millis(300),
                probe_interval: Duration::from_millis(10),
                failback_after: 2,
                retry_min: Duration::from_millis(5),
                retry_max: Duration::from_millis(20),
                ..Tuning::default()
            },
            streams: safd_engine::Routes::all(),
            min_severity: None,
        })
        .unwrap();
    engine
}

fn expected_health(destination: &FakeDestination) -> Vec<MemberHealth> {
    MEMBERS
        .iter()
        .map(|m| {
            destination
                .server(m)
                .with(|s| match (s.link_up, s.service_up) {
                    (false, _) => MemberHealth::Unreachable,
                    (true, true) => MemberHealth::Ready,
                    (true, false) => MemberHealth::Degraded,
                })
        })
        .collect()
}

async fn wait_until_seen(engine: &Engine, destination: &FakeDestination) {
    let expected = expected_health(destination);
    eventually("member states seen", WAIT, || {
        let seen: Vec<MemberHealth> = engine.groups()[0].lanes[0]
            .members
            .iter()
            .map(|m| m.health)
            .collect();
        seen == expected
    })
    .await;
}

/// Catch-ups started by a member's own request name the member and the
/// epoch; each must match an activation of that member at that epoch, and
/// no epoch may see two.
fn check_fencing(notices: &[Notice]) {
    let activations: Vec<(String, String)> = notices
        .iter()
        .filter(|n| [DELIVERY_RESUMED, FAILED_OVER, FAILED_BACK].contains(&n.id))
        .map(|n| {
            (
                n.field("member").unwrap().to_owned(),
                n.field("epoch").unwrap().to_owned(),
            )
        })
        .collect();
    let mut epochs = std::collections::BTreeSet::new();
    for started in notices.iter().filter(|n| n.id == CATCH_UP_STARTED) {
        if started.message.contains("requested by the operator") {
            continue;
        }
        let key = (
            started.field("member").unwrap().to_owned(),
            started.field("epoch").unwrap().to_owned(),
        );
        assert!(
            activations.contains(&key),
            "catch-up honoured for {key:?}, which was not active at that epoch"
        );
        assert!(
            epochs.insert(key.1.clone()),
            "two catch-ups in epoch {}",
            key.1
        );
    }
}

async fn run(steps: Vec<Step>) {
    let dir = tempfile::tempdir().unwrap();
    let (source, destination) = (FakeSource::default(), FakeDestination::default());
    let mut engine = start(dir.path(), &source, &destination);
    let mut notices = Vec::new();
    for step in steps {
        match step {
            Step::Append(n) => source.append(n, "e"),
            Step::Link(m, up) => {
                destination.server(MEMBERS[m]).with(|s| s.link_up = up);
                wait_until_seen(&engine, &destination).await;
            }
            Step::Service(m, up) => {
                destination.server(MEMBERS[m]).with(|s| s.service_up = up);
                wait_until_seen(&engine, &destination).await;
            }
            Step::OperatorCatchUp(seq) => {
                // Refused when nobody is active or one is running: fine.
                let _ = catch_up_ems_from(&engine, seq).await;
            }
            Step::Restart => {
                engine.shutdown().await.unwrap();
                notices.extend(engine.notices().recent());
                drop(engine);
                engine = start(dir.path(), &source, &destination);
            }
        }
    }
    // Everything recovers; everything must arrive.
    for member in MEMBERS {
        destination.server(member).set(true, true);
    }
    let total = source.len();
    eventually("all delivered", WAIT, || {
        acked(&engine, "mgmt", "ems") == total
    })
    .await;
    engine.shutdown().await.unwrap();
    notices.extend(engine.notices().recent());

    let servers: Vec<_> = MEMBERS.iter().map(|m| destination.server(m)).collect();
    for seq in 1..=total {
        let key = ("ems".to_owned(), seq);
        assert!(
            servers
                .iter()
                .any(|s| s.with(|s| s.events.contains_key(&key))),
            "seq {seq} of {total} lost"
        );
    }
    for server in &servers {
        assert_eq!(
            server.with(|s| s.disorder.clone()),
            None,
            "a batch out of order"
        );
    }
    check_fencing(&notices);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        // Each case runs real sled files and real timers.
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_failures_restarts_and_catch_ups_lose_nothing(
        steps in proptest::collection::vec(step(), 1..14)
    ) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(steps));
    }
}
