//! Each sandbox property, proven against the fixture plugins.

use crate::common::*;
use safd_connector::{ConnectorError, PollLimits, SessionError, SourceSession};
use safd_runtime::Grants;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

async fn open(script: &[&str], grants: &Grants) -> Box<dyn SourceSession> {
    let runtime = runtime();
    let plugin = fixture(&runtime, "fixture-source");
    let source = plugin
        .source("fixture", source_config(script), grants)
        .unwrap();
    safd_connector::SourceConnector::open(&source, None)
        .await
        .unwrap()
}

fn ids(batch: &safd_connector::SourceBatch) -> Vec<String> {
    batch.events.iter().map(|e| e.id.to_owned()).collect()
}

#[tokio::test]
async fn trap_rebuilds_the_instance_and_the_next_call_works() {
    let mut session = open(&["ok", "trap"], &no_grants()).await;
    let first = session.poll(PollLimits::default()).await.unwrap();
    assert_eq!(ids(&first), ["fx-0", "fx-1", "fx-2", "fx-3"]);
    session
        .commit(first.cursor.as_ref().unwrap())
        .await
        .unwrap();

    let err = session.poll(PollLimits::default()).await.unwrap_err();
    assert!(matches!(err, SessionError::Trapped(_)), "{err:?}");
    assert!(err.instance_was_reset());

    // The rebuilt instance resumes from the committed cursor: nothing lost,
    // nothing repeated.
    let next = session.poll(PollLimits::default()).await.unwrap();
    assert_eq!(ids(&next), ["fx-4", "fx-5", "fx-6", "fx-7"]);
}

#[tokio::test(flavor = "current_thread")]
async fn endless_loop_is_interrupted_and_other_instances_keep_running() {
    // A single-threaded executor: the healthy instance can only make
    // progress if the looping guest yields while it spins.
    // The script restarts with each instance: "ok" first, so the rebuilt
    // instance's first call succeeds.
    let mut looping = open(&["ok", "loop"], &no_grants()).await;
    looping.poll(PollLimits::default()).await.unwrap();
    let mut healthy = open(&[], &no_grants()).await;
    let healthy_calls = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let counter = healthy_calls.clone();
    let stop_flag = stop.clone();
    let healthy_task = tokio::spawn(async move {
        while !stop_flag.load(Ordering::Relaxed) {
            healthy.poll(PollLimits::default()).await.unwrap();
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
    });

    let started = Instant::now();
    let err = looping.poll(PollLimits::default()).await.unwrap_err();
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    healthy_task.await.unwrap();

    assert_eq!(err, SessionError::TimedOut(test_limits().call_timeout));
    assert!(elapsed >= test_limits().call_timeout, "{elapsed:?}");
    // Generous bound: interrupted at the limit, not "eventually".
    assert!(elapsed < test_limits().call_timeout * 6, "{elapsed:?}");
    assert!(
        healthy_calls.load(Ordering::Relaxed) > 5,
        "healthy instance starved: {} calls",
        healthy_calls.load(Ordering::Relaxed)
    );
    // And the looping session works again afterwards.
    looping.poll(PollLimits::default()).await.unwrap();
}

#[tokio::test]
async fn unbounded_allocation_is_refused_and_the_host_lives_on() {
    let mut session = open(&["ok", "alloc"], &no_grants()).await;
    session.poll(PollLimits::default()).await.unwrap();
    let err = session.poll(PollLimits::default()).await.unwrap_err();
    let SessionError::Trapped(reason) = &err else {
        panic!("expected a trap, got {err:?}");
    };
    assert!(
        reason.starts_with("memory limit of 32 MiB reached"),
        "{reason}"
    );
    assert!(
        !reason.contains('\n'),
        "one line for the operator: {reason}"
    );
    // Rebuilt and serving again.
    let batch = session.poll(PollLimits::default()).await.unwrap();
    assert_eq!(batch.events.len(), 4);
}

#[tokio::test]
async fn a_malformed_event_block_is_refused_and_the_plugin_rebuilt() {
    let mut session = open(&["ok", "malformed-block"], &no_grants()).await;
    session.poll(PollLimits::default()).await.unwrap();
    let err = session.poll(PollLimits::default()).await.unwrap_err();
    let SessionError::Connector(ConnectorError::Fatal(message)) = &err else {
        panic!("expected a fatal error, got {err:?}");
    };
    assert!(
        message.contains("event block that does not decode")
            && message.contains("event block, byte 10: malformed length"),
        "{message}"
    );
    assert!(err.instance_was_reset());
    // Rebuilt: the fresh instance serves again.
    let batch = session.poll(PollLimits::default()).await.unwrap();
    assert_eq!(batch.events.len(), 4);
}

/// Host resources (here stdout handles, each a host object) count against
/// a per-instance capacity: a plugin that hoards them is stopped at it
/// (trapped, rebuilt), not allowed to grow the host's memory.
#[tokio::test]
async fn hoarded_host_resources_are_refused_at_the_limit() {
    let mut session = open(&["hoard:100", "hoard:1000000"], &no_grants()).await;
    assert_eq!(report(&mut session).await, "ok: holding 100 resources");
    let err = session.poll(PollLimits::default()).await.unwrap_err();
    let SessionError::Trapped(message) = &err else {
        panic!("expected a trap, got {err:?}");
    };
    assert!(message.contains("resource table"), "{message}");
    // Rebuilt (its script starts again): the fresh instance serves again.
    assert_eq!(report(&mut session).await, "ok: holding 100 resources");
}

/// A block declaring 2^32 - 1 events in ten bytes is refused by its count
/// before anything is sized by it (a vector of that many offsets would be
/// 16 GiB).
#[tokio::test]
async fn a_block_count_beyond_its_bytes_is_refused() {
    let mut session = open(&["huge-count"], &no_grants()).await;
    let err = session.poll(PollLimits::default()).await.unwrap_err();
    let SessionError::Connector(ConnectorError::Fatal(message)) = &err else {
        panic!("expected a fatal error, got {err:?}");
    };
    assert!(
        message.contains("declares 4294967295 events, but 10 bytes hold at most 2"),
        "{message}"
    );
}

async fn report(session: &mut Box<dyn SourceSession>) -> String {
    let batch = session.poll(PollLimits::default()).await.unwrap();
    assert_eq!(batch.events.len(), 1, "expected one report event");
    batch.events.to_events()[0].body.clone()
}

#[tokio::test]
async fn files_outside_the_granted_directory_are_denied() {
    let granted = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("inside.txt"), "visible").unwrap();
    std::fs::write(other.path().join("secret.txt"), "hidden").unwrap();
    let inside = granted.path().join("inside.txt");
    let outside = other.path().join("secret.txt");
    let escape = granted.path().join("../").join(
        other
            .path()
            .strip_prefix(granted.path().parent().unwrap())
            .unwrap()
            .join("secret.txt"),
    );
    let script = [
        format!("read:{}", inside.display()),
        format!("read:{}", outside.display()),
        format!("read:{}", escape.display()),
        "read:/etc/passwd".to_owned(),
    ];
    let script: Vec<&str> = script.iter().map(String::as_str).collect();
    let grants = Grants {
        dirs: vec![granted.path().to_owned()],
        ..Grants::default()
    };
    let mut session = open(&script, &grants).await;
    assert_eq!(report(&mut session).await, "ok: visible");
    for _ in 0..3 {
        let outcome = report(&mut session).await;
        assert!(outcome.starts_with("error:"), "{outcome}");
        assert!(!outcome.contains("hidden"));
    }
}

#[tokio::test]
async fn files_are_denied_without_a_grant_and_grants_are_read_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.txt"), "x").unwrap();
    let script = format!("read:{}", dir.path().join("f.txt").display());
    let mut session = open(&[script.as_str()], &no_grants()).await;
    assert!(report(&mut session).await.starts_with("error:"));
}

/// A minimal real HTTP server on loopback that counts its connections.
fn http_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 204 No Content\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            );
        }
    });
    (authority, hits)
}

#[tokio::test]
async fn http_goes_only_to_granted_authorities() {
    let (granted, granted_hits) = http_server();
    let (other, other_hits) = http_server();
    let script = [
        format!("http:http://{granted}/probe"),
        format!("http:http://{other}/probe"),
        "http:http://localhost:9/".to_owned(),
    ];
    let script: Vec<&str> = script.iter().map(String::as_str).collect();
    let grants = Grants {
        http: vec![granted.clone()],
        ..Grants::default()
    };
    let mut session = open(&script, &grants).await;
    assert_eq!(report(&mut session).await, "ok: status 204");
    for _ in 0..2 {
        let outcome = report(&mut session).await;
        assert!(outcome.contains("HttpRequestDenied"), "{outcome}");
    }
    assert_eq!(granted_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "denied request reached the server"
    );
}

#[tokio::test]
async fn http_is_denied_when_the_grant_is_for_another_connector_kind() {
    // No grant at all: every request is refused before any connection.
    let (authority, hits) = http_server();
    let script = format!("http:http://{authority}/");
    let mut session = open(&[script.as_str()], &no_grants()).await;
    assert!(report(&mut session).await.contains("HttpRequestDenied"));
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn tcp_connects_only_to_granted_addresses() {
    let granted = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let granted_addr = granted.local_addr().unwrap().to_string();
    let other_addr = other.local_addr().unwrap().to_string();
    let script = [format!("tcp:{granted_addr}"), format!("tcp:{other_addr}")];
    let script: Vec<&str> = script.iter().map(String::as_str).collect();
    let grants = Grants {
        tcp: vec![granted_addr.clone()],
        ..Grants::default()
    };
    let mut session = open(&script, &grants).await;
    assert_eq!(report(&mut session).await, "ok: connected");
    assert!(report(&mut session).await.starts_with("error:"));
    // The denied connect never reached the listener.
    assert!(other.accept().is_err());

    // Without any tcp grant, even the first address is refused.
    let script = format!("tcp:{granted_addr}");
    let mut session = open(&[script.as_str()], &no_grants()).await;
    assert!(report(&mut session).await.starts_with("error:"));
}

#[tokio::test]
async fn blocking_in_a_host_call_is_cut_by_the_outer_timeout() {
    let mut session = open(&["ok", "sleep:5000"], &no_grants()).await;
    session.poll(PollLimits::default()).await.unwrap();
    let started = Instant::now();
    let err = session.poll(PollLimits::default()).await.unwrap_err();
    assert_eq!(err, SessionError::TimedOut(test_limits().call_timeout));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    session.poll(PollLimits::default()).await.unwrap();
}

#[tokio::test]
async fn each_error_variant_reaches_the_host_typed() {
    let kinds = [
        "transient",
        "unavailable",
        "backpressure",
        "rejected",
        "unauthorized",
        "bad-cursor",
        "fatal",
    ];
    let script: Vec<String> = kinds.iter().map(|k| format!("error:{k}")).collect();
    let script: Vec<&str> = script.iter().map(String::as_str).collect();
    let mut session = open(&script, &no_grants()).await;
    let mut seen = Vec::new();
    for _ in kinds {
        let err = session.poll(PollLimits::default()).await.unwrap_err();
        let SessionError::Connector(err) = err else {
            panic!("expected a connector error, got {err:?}");
        };
        seen.push(err);
    }
    assert!(matches!(seen[0], ConnectorError::Transient(_)));
    assert!(matches!(seen[1], ConnectorError::Unavailable(_)));
    assert!(matches!(
        seen[2],
        ConnectorError::Backpressure { retry_after, .. } if retry_after == Duration::from_millis(250)
    ));
    assert!(matches!(seen[3], ConnectorError::Rejected(_)));
    assert!(matches!(seen[4], ConnectorError::Unauthorized(_)));
    assert!(matches!(seen[5], ConnectorError::BadCursor(_)));
    assert!(matches!(seen[6], ConnectorError::Fatal(_)));
}

#[tokio::test]
async fn an_instance_that_keeps_failing_is_disabled() {
    let runtime = runtime();
    let plugin = fixture(&runtime, "fixture-source");
    // Every instance traps on its first poll.
    let source = plugin
        .source("crasher", source_config(&["trap"]), &no_grants())
        .unwrap();
    let mut session = safd_connector::SourceConnector::open(&source, None)
        .await
        .unwrap();
    let max = test_limits().restart.max_restarts;
    for _ in 0..max {
        let err = session.poll(PollLimits::default()).await.unwrap_err();
        assert!(matches!(err, SessionError::Trapped(_)), "{err:?}");
    }
    let err = session.poll(PollLimits::default()).await.unwrap_err();
    assert!(matches!(err, SessionError::Disabled { .. }), "{err:?}");
    let err = session.poll(PollLimits::default()).await.unwrap_err();
    assert!(matches!(err, SessionError::Disabled { .. }), "{err:?}");
}

/// The engine opens a new session after every failure: the instance's
/// failures are counted across its sessions, so it is still disabled.
#[tokio::test]
async fn failures_count_across_sessions_of_one_instance() {
    let runtime = runtime();
    let plugin = fixture(&runtime, "fixture-source");
    let source = plugin
        .source("crasher", source_config(&["ok", "trap"]), &no_grants())
        .unwrap();
    let max = test_limits().restart.max_restarts;
    for _ in 0..max {
        let mut session = safd_connector::SourceConnector::open(&source, None)
            .await
            .unwrap();
        session.poll(PollLimits::default()).await.unwrap();
        let err = session.poll(PollLimits::default()).await.unwrap_err();
        assert!(matches!(err, SessionError::Trapped(_)), "{err:?}");
    }
    let mut session = safd_connector::SourceConnector::open(&source, None)
        .await
        .unwrap();
    session.poll(PollLimits::default()).await.unwrap();
    let err = session.poll(PollLimits::default()).await.unwrap_err();
    assert!(matches!(err, SessionError::Disabled { .. }), "{err:?}");
    let err = safd_connector::SourceConnector::open(&source, None)
        .await
        .map(drop)
        .unwrap_err();
    assert!(matches!(err, SessionError::Disabled { .. }), "{err:?}");
}

#[tokio::test]
async fn a_bad_cursor_is_reported_by_open() {
    let runtime = runtime();
    let plugin = fixture(&runtime, "fixture-source");
    let source = plugin
        .source("fixture", source_config(&[]), &no_grants())
        .unwrap();
    let err = safd_connector::SourceConnector::open(&source, Some(vec![1, 2, 3]))
        .await
        .map(drop)
        .unwrap_err();
    assert!(
        matches!(err, SessionError::Connector(ConnectorError::BadCursor(_))),
        "{err:?}"
    );
}
