//! A real crash at every step of dispatch and ack: a child process runs the
//! engine against a fake server and aborts (SIGABRT, no shutdown, no
//! flush) while registering, before the server stores a batch, after it
//! stored it but before safd heard the ack, and after safd recorded the ack
//! but before it was flushed. The parent keeps what the server stored (the
//! child prints it as it stores), restarts the child, and checks that in
//! the end the server holds every event — nothing lost — and that the
//! stored source cursor never ran ahead of the stored events.

use crate::common::fakes::{FakeDestination, FakeSource, acked, event};
use safd_engine::{GroupConfig, GroupMode, MemberConfig, PumpTuning, QueueOptions, Tuning};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHILD_DIR: &str = "SAFD_DISPATCH_CRASH_DIR";
const CHILD_STEP: &str = "SAFD_DISPATCH_CRASH_STEP";
const TOTAL: u64 = 120;

fn server_file(dir: &Path) -> std::path::PathBuf {
    dir.join("server.txt")
}

/// The child: deliver the source's `TOTAL` events to one member, printing
/// what the member stores, aborting at the requested step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return; // Only runs as the child of `a_crash_at_any_dispatch_step_loses_nothing`.
    };
    let dir = Path::new(&dir);
    // The harness printed "test … " without a newline: start a fresh line.
    println!();
    let destination = FakeDestination::default();
    let server = destination.server("primary");
    let previously = std::fs::read_to_string(server_file(dir)).unwrap_or_default();
    server.with(|s| {
        for line in previously.lines() {
            let (seq, id) = line.split_once(' ').unwrap();
            s.events
                .insert(("ems".to_owned(), seq.parse().unwrap()), id.to_owned());
        }
        s.print_stored = true;
        s.crash_at = std::env::var(CHILD_STEP)
            .ok()
            .filter(|step| !step.is_empty())
            .map(|step| {
                let (kind, n) = step.split_once(':').unwrap();
                (kind.to_owned(), n.parse().unwrap())
            });
    });
    let source = FakeSource::default();
    source.append(TOTAL, "a");
    let (engine, report) =
        crate::common::fakes::open_engine(dir.join("data"), QueueOptions::default());
    if let Some(ems) = report.streams.iter().find(|s| s.name == "ems") {
        let cursor = ems
            .cursor
            .as_ref()
            .map_or(0, |c| u64::from_be_bytes(c.clone().try_into().unwrap()));
        println!("resume cursor={cursor} stored={}", ems.next_seq - 1);
    }
    engine
        .add_source(
            "ems",
            Arc::new(source.clone()),
            PumpTuning {
                limits: safd_connector::PollLimits {
                    max_events: 7,
                    max_bytes: 1 << 20,
                },
                idle_wait: Duration::from_millis(5),
                ..PumpTuning::default()
            },
        )
        .unwrap();
    engine
        .add_group(GroupConfig {
            name: "mgmt".into(),
            mode: GroupMode::Failover,
            members: vec![MemberConfig {
                name: "primary".into(),
                address: "fake://primary".into(),
                connector: Arc::new(destination.clone()),
            }],
            tuning: Tuning {
                batch_max_events: 10,
                probe_interval: Duration::from_millis(20),
                retry_min: Duration::from_millis(10),
                retry_max: Duration::from_millis(50),
                ..Tuning::default()
            },
            streams: safd_engine::Routes::all(),
            min_severity: None,
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked(&engine, "mgmt", "ems") < TOTAL {
        assert!(Instant::now() < deadline, "child: delivery stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    engine.shutdown().await.unwrap();
    println!("done");
}

/// Run the child once; returns its stdout and whether it finished.
fn run_child(dir: &Path, step: &str) -> (String, bool) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "dispatch_crash::dispatch_crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_STEP, step)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let finished = stdout.lines().any(|l| l == "done");
    (stdout, finished)
}

#[test]
fn a_crash_at_any_dispatch_step_loses_nothing() {
    // A single member registers twice: once at start, once more as the
    // active member at the new epoch.
    let steps = [
        ("register", &[1u64, 2][..]),
        ("before-store", &[1, 3, 8]),
        ("after-store", &[1, 3, 8]),
        ("after-ack", &[1, 3, 8]),
    ];
    for (kind, calls) in steps {
        for &call in calls {
            let dir = tempfile::tempdir().unwrap();
            let step = format!("{kind}:{call}");
            let mut server: BTreeMap<u64, String> = BTreeMap::new();
            let mut crashed = false;
            for attempt in 0..2 {
                let (stdout, finished) =
                    run_child(dir.path(), if attempt == 0 { &step } else { "" });
                if attempt == 0 {
                    crashed = !finished;
                } else {
                    assert!(
                        finished,
                        "{step}: the restarted child did not finish:\n{stdout}"
                    );
                }
                for line in stdout.lines() {
                    let words: Vec<&str> = line.split(' ').collect();
                    match words.as_slice() {
                        ["stored", "ems", seq, id] => {
                            server.insert(seq.parse().unwrap(), (*id).to_owned());
                        }
                        ["resume", cursor, stored] => {
                            // The fake source's cursor counts events handed
                            // over, so it must equal the stored count.
                            assert_eq!(
                                cursor.trim_start_matches("cursor="),
                                stored.trim_start_matches("stored="),
                                "{step}: cursor and stored events disagree"
                            );
                        }
                        _ => {}
                    }
                }
                let file: String = server
                    .iter()
                    .map(|(seq, id)| format!("{seq} {id}\n"))
                    .collect();
                std::fs::write(server_file(dir.path()), file).unwrap();
            }
            assert!(crashed, "{step}: the crash step was never reached");
            let expected: BTreeMap<u64, String> =
                (0..TOTAL).map(|n| (n + 1, event("a", n).id)).collect();
            assert_eq!(server, expected, "{step}: events lost or misplaced");
        }
    }
}
