//! Every row of `failover-matrix.csv` with in-process fake servers: the
//! active member, where events wait, who catches up after a total outage
//! (and the refusal of the other), and in the end every event delivered,
//! once per server after its dedup, in order per stream.

use crate::common::fakes::{
    FakeDestination, FakeServer, FakeSource, acked, active, eventually, fast_tuning, notice_ids,
};
use safd_connector::event_ids::{
    ALL_MEMBERS_DOWN, CATCH_UP_REFUSED, CATCH_UP_STARTED, DELIVERY_RESUMED, FAILED_BACK,
    FAILED_OVER, MEMBER_NOT_GRANTED, MEMBER_UNAUTHORIZED,
};
use safd_engine::failover::MemberHealth;
use safd_engine::{Engine, GroupConfig, GroupMode, MemberConfig, PumpTuning, QueueOptions};
use std::sync::Arc;
use std::time::Duration;

const MATRIX: &str = include_str!("../../../../docs/design/failover-matrix.csv");
const WAIT: Duration = Duration::from_secs(10);

struct Pair {
    engine: Engine,
    source: FakeSource,
    primary: FakeServer,
    backup: FakeServer,
    _dir: tempfile::TempDir,
}

async fn pair() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) =
        crate::common::fakes::open_engine(dir.path().to_owned(), QueueOptions::default());
    let source = FakeSource::default();
    engine
        .add_source(
            "ems",
            Arc::new(source.clone()),
            PumpTuning {
                idle_wait: Duration::from_millis(5),
                ..PumpTuning::default()
            },
        )
        .unwrap();
    let destination = FakeDestination::default();
    let primary = destination.server("primary");
    let backup = destination.server("backup");
    let member = |name: &str| MemberConfig {
        name: name.into(),
        address: format!("fake://{name}"),
        connector: Arc::new(destination.clone()),
    };
    engine
        .add_group(GroupConfig {
            name: "mgmt".into(),
            mode: GroupMode::Failover,
            members: vec![member("primary"), member("backup")],
            tuning: fast_tuning(),
            streams: safd_engine::Routes::all(),
            min_severity: None,
        })
        .unwrap();
    Pair {
        engine,
        source,
        primary,
        backup,
        _dir: dir,
    }
}

fn health(service: &str, link: &str) -> MemberHealth {
    match (service, link) {
        (_, "down") => MemberHealth::Unreachable,
        ("up", _) => MemberHealth::Ready,
        _ => MemberHealth::Degraded,
    }
}

fn member_health(engine: &Engine) -> Vec<MemberHealth> {
    engine.groups()[0].lanes[0]
        .members
        .iter()
        .map(|m| m.health)
        .collect()
}

/// Every event of the source is held by at least one server under its own
/// id, no server stored one twice (their maps are keyed by seq, so count
/// the duplicate deliveries they dropped separately), and each server got
/// the stream in seq order.
fn assert_complete(pair: &Pair, row: &str) {
    let log = pair.source.log.lock().unwrap().clone();
    for server in [&pair.primary, &pair.backup] {
        server.with(|s| {
            let seqs: Vec<u64> = s
                .arrivals
                .iter()
                .filter(|(stream, _)| stream == "ems")
                .map(|(_, seq)| *seq)
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "row {row}: out of order: {seqs:?}"
            );
        });
    }
    for (index, event) in log.iter().enumerate() {
        let key = ("ems".to_owned(), index as u64 + 1);
        let held: Vec<String> = [&pair.primary, &pair.backup]
            .iter()
            .filter_map(|s| s.with(|s| s.events.get(&key).cloned()))
            .collect();
        assert!(!held.is_empty(), "row {row}: seq {} lost", index + 1);
        assert!(
            held.iter().all(|id| *id == event.id),
            "row {row}: seq {} holds {held:?}, expected {}",
            index + 1,
            event.id
        );
    }
}

/// The server holds every seq of `seqs` of stream `ems`.
fn holds(server: &FakeServer, mut seqs: std::ops::RangeInclusive<u64>) -> bool {
    server.with(|s| seqs.all(|seq| s.events.contains_key(&("ems".to_owned(), seq))))
}

fn server<'a>(pair: &'a Pair, name: &str) -> &'a FakeServer {
    if name == "primary" {
        &pair.primary
    } else {
        &pair.backup
    }
}

fn notices_for(engine: &Engine, id: u32, member: &str) -> usize {
    engine
        .notices()
        .recent()
        .iter()
        .filter(|n| n.id == id && n.field("member") == Some(member))
        .count()
}

/// Run one row; `primary_first` says which member comes back first when
/// the row's outage ends (catch-up rows).
async fn run_row(primary_first: bool, line: &str) {
    let cols: Vec<&str> = line.split(',').collect();
    let (p_service, p_link, b_service, b_link) = (cols[0], cols[1], cols[2], cols[3]);
    let (expected_active, waits, catchup) = (cols[5], cols[6], cols[7]);
    let pair = pair().await;
    let engine = &pair.engine;

    // Normal operation first: everything reaches the primary.
    pair.source.append(20, "a");
    eventually("primary active with the first events", WAIT, || {
        active(engine, "mgmt").as_deref() == Some("primary") && acked(engine, "mgmt", "ems") == 20
    })
    .await;

    // Enter the row's state and wait until safd has seen it.
    pair.primary.set(p_service == "up", p_link == "up");
    pair.backup.set(b_service == "up", b_link == "up");
    let expected_health = [health(p_service, p_link), health(b_service, b_link)];
    let expected = (expected_active != "none").then(|| expected_active.to_owned());
    eventually(&format!("row {line}: state seen"), WAIT, || {
        member_health(engine) == expected_health && active(engine, "mgmt") == expected
    })
    .await;

    // New events arrive; where do they wait?
    pair.source.append(30, "b");
    match waits {
        "-" => {
            let target = server(&pair, expected_active);
            eventually(
                &format!("row {line}: delivered to {expected_active}"),
                WAIT,
                || holds(target, 21..=50),
            )
            .await;
            assert_none_elsewhere(&pair, expected_active, line);
        }
        "safd-queue" => {
            eventually(&format!("row {line}: stored in safd's queue"), WAIT, || {
                stored(engine) == 50
            })
            .await;
            assert_eq!(acked(engine, "mgmt", "ems"), 20, "row {line}");
            for s in [&pair.primary, &pair.backup] {
                assert!(s.with(|s| s.count("ems")) <= 20, "row {line}");
            }
        }
        inbox => {
            let holder = inbox.trim_end_matches("-server-inbox");
            assert_eq!(holder, expected_active, "row {line}");
            let target = server(&pair, holder);
            eventually(
                &format!("row {line}: spooled in the {holder}'s inbox"),
                WAIT,
                || holds(target, 21..=50),
            )
            .await;
            // Stored durably in the inbox counts as delivered for safd.
            eventually(&format!("row {line}: acknowledged"), WAIT, || {
                acked(engine, "mgmt", "ems") == 50
            })
            .await;
            assert_none_elsewhere(&pair, holder, line);
        }
    }

    // The state ends.
    if catchup == "first-registrant" {
        // Alternate who comes back first; the other one's catch-up request
        // must be refused.
        let (first, second) = if primary_first {
            ("primary", "backup")
        } else {
            ("backup", "primary")
        };
        let started_before = [
            notices_for(engine, CATCH_UP_STARTED, "primary"),
            notices_for(engine, CATCH_UP_STARTED, "backup"),
        ];
        let started_since = |member: &str| {
            let index = usize::from(member == "backup");
            notices_for(engine, CATCH_UP_STARTED, member) - started_before[index]
        };
        server(&pair, first).set(true, true);
        eventually(
            &format!("row {line}: {first} registers first"),
            WAIT,
            || active(engine, "mgmt").as_deref() == Some(first),
        )
        .await;
        eventually(&format!("row {line}: {first} caught up"), WAIT, || {
            started_since(first) == 1 && holds(server(&pair, first), 21..=50)
        })
        .await;
        server(&pair, second).set(true, true);
        eventually(&format!("row {line}: {second} refused"), WAIT, || {
            notices_for(engine, CATCH_UP_REFUSED, second) >= 1
        })
        .await;
        pair.source.append(10, "c");
        wait_back_on_primary(engine, line).await;
        assert_eq!(
            started_since(second),
            0,
            "row {line}: both members caught up"
        );
    } else {
        pair.primary.set(true, true);
        pair.backup.set(true, true);
        pair.source.append(10, "c");
        wait_back_on_primary(engine, line).await;
    }
    assert_complete(&pair, line);
    let ids = notice_ids(engine);
    if expected_active == "backup" {
        assert!(ids.contains(&FAILED_OVER), "row {line}: {ids:?}");
        assert!(ids.contains(&FAILED_BACK), "row {line}: {ids:?}");
    }
    engine.shutdown().await.unwrap();
}

async fn wait_back_on_primary(engine: &Engine, line: &str) {
    eventually(&format!("row {line}: back on the primary"), WAIT, || {
        active(engine, "mgmt").as_deref() == Some("primary") && acked(engine, "mgmt", "ems") == 60
    })
    .await;
}

/// Events of `ems` stored in the queue.
fn stored(engine: &Engine) -> u64 {
    let queue = engine.queue().clone();
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async move { queue.stored_through("ems").await })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_of_the_failover_matrix() {
    let rows: Vec<&str> = MATRIX
        .lines()
        .filter(|l| !l.starts_with('#'))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 16);
    // Catch-up rows alternate which member comes back first, so each
    // order is tested (the rows' own parity would give the backup every
    // time).
    let mut first_registrants = Vec::new();
    for row in &rows {
        let primary_first = first_registrants.len() % 2 == 0;
        if row.ends_with("first-registrant") {
            first_registrants.push(if primary_first { "primary" } else { "backup" });
        }
        run_row(primary_first, row).await;
    }
    assert_eq!(
        first_registrants,
        ["primary", "backup", "primary", "backup"]
    );
}

/// The events of the row (21..=50) reached no member but `holder`.
fn assert_none_elsewhere(pair: &Pair, holder: &str, line: &str) {
    let other = if holder == "primary" {
        "backup"
    } else {
        "primary"
    };
    let stray = server(pair, other).with(|s| {
        (21..=50u64)
            .filter(|&seq| s.events.contains_key(&("ems".to_owned(), seq)))
            .count()
    });
    assert_eq!(stray, 0, "row {line}: {other} received events of the row");
}

/// At start, with both members refusing safd's token: 1004 comes once
/// every member has failed (it used to come only after a member had been
/// active), and 1010 is said on the first refusal of each member and then
/// ever more rarely, not on every retry. Once a member takes the token,
/// delivery resumes.
#[tokio::test]
async fn a_wrong_token_on_every_member_is_an_outage_said_once_not_a_stream_of_refusals() {
    let pair = pair().await;
    pair.primary.with(|s| s.refuses_token = true);
    pair.backup.with(|s| s.refuses_token = true);
    pair.source.append(10, "e");
    let count = |id: u32| {
        notice_ids(&pair.engine)
            .iter()
            .filter(|&&n| n == id)
            .count()
    };
    eventually("1004 with every member refusing", WAIT, || {
        count(ALL_MEMBERS_DOWN) == 1
    })
    .await;
    let refused = |server: &FakeServer| server.with(|s| s.token_refusals);
    eventually("twenty refusals of each", WAIT, || {
        refused(&pair.primary) >= 20 && refused(&pair.backup) >= 20
    })
    .await;
    let refusals = refused(&pair.primary) + refused(&pair.backup);
    let said = count(MEMBER_UNAUTHORIZED);
    // First, 2nd, 4th, 8th, 16th… of each: a handful, not one per retry.
    assert!(
        (2..=12).contains(&said),
        "1010 said {said} times for {refusals} refusals"
    );
    assert_eq!(count(ALL_MEMBERS_DOWN), 1);

    pair.backup.with(|s| s.refuses_token = false);
    eventually("delivery to the backup", WAIT, || {
        active(&pair.engine, "mgmt").as_deref() == Some("backup")
            && pair.backup.with(|s| s.count("ems")) == 10
    })
    .await;
    assert!(notice_ids(&pair.engine).contains(&DELIVERY_RESUMED));
}

/// A member the sandbox keeps the plugin from (a missing grant) gets its
/// own event, 1012, naming the grant — not 1010's "fix the member's
/// token" — and the group fails over.
#[tokio::test]
async fn a_member_kept_out_by_the_sandbox_is_said_as_a_missing_grant_not_a_wrong_token() {
    let pair = pair().await;
    pair.primary.with(|s| s.not_granted = true);
    pair.source.append(5, "g");
    eventually("delivery to the backup", WAIT, || {
        active(&pair.engine, "mgmt").as_deref() == Some("backup")
            && pair.backup.with(|s| s.count("ems")) == 5
    })
    .await;
    let ids = notice_ids(&pair.engine);
    assert!(ids.contains(&MEMBER_NOT_GRANTED), "{ids:?}");
    assert!(!ids.contains(&MEMBER_UNAUTHORIZED), "{ids:?}");
}
