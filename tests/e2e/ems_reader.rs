//! The ems-reader plugin through the real runtime on real directories
//! written by the simulator: complete reading with stable ids, restart from
//! the cursor, purge → gap event, unparsable lines flagged, seek.

use crate::support::plugins::{plugin_dir, runtime};

use ems_sim::{Generator, LogWriter, SimConfig};
use safd_connector::{Event, PollLimits, Severity, SourceConnector, SourceSession};
use safd_ems::{Format, Zone};
use safd_runtime::{Grants, Runtime};
use std::collections::HashSet;
use std::path::Path;

fn reader(runtime: &Runtime, dir: &Path, format: &str) -> safd_runtime::WasmSource {
    let plugin = runtime.load(&plugin_dir().join("ems-reader.wasm")).unwrap();
    let config = serde_json::json!({
        "directory": dir,
        "format": format,
        "time_zone": "Europe/Berlin",
        "system": "\\PROD1",
        "severity_overrides": [{"subsystem": "DSK", "event": 5016, "severity": "minor"}],
    });
    plugin
        .source(
            "ems",
            config.to_string(),
            &Grants {
                dirs: vec![dir.to_owned()],
                ..Grants::default()
            },
        )
        .unwrap()
}

fn simulate(dir: &Path, format: Format, events: u64, seed: u64) {
    let mut generator = Generator::new(SimConfig {
        seed,
        ..SimConfig::default()
    });
    let mut log = LogWriter::create(
        dir,
        format,
        Zone::parse("Europe/Berlin").unwrap(),
        64 << 10,
        0,
    )
    .unwrap();
    for _ in 0..events {
        log.write(&generator.next_event()).unwrap();
    }
    log.flush().unwrap();
}

/// Poll until nothing more is ready; returns the events and the last cursor.
async fn drain(
    session: &mut Box<dyn SourceSession>,
    cursor: &mut Option<Vec<u8>>,
    stop_after: Option<usize>,
) -> Vec<Event> {
    let limits = PollLimits {
        max_events: stop_after.map_or(500, |n| n.min(500) as u32),
        max_bytes: 1 << 20,
    };
    let mut out = Vec::new();
    loop {
        let batch = session.poll(limits).await.unwrap();
        let done = batch.events.is_empty() && !batch.more;
        out.extend(batch.events.to_events());
        if let Some(c) = batch.cursor {
            session.commit(&c).await.unwrap();
            *cursor = Some(c);
        }
        if done || stop_after.is_some_and(|n| out.len() >= n) {
            return out;
        }
    }
}

fn attribute<'a>(event: &'a Event, key: &str) -> Option<&'a str> {
    event
        .attributes
        .iter()
        .find(|a| a.key == key)
        .map(|a| a.value.as_str())
}

#[tokio::test]
async fn reads_everything_once_with_stable_ids_in_both_formats() {
    let runtime = runtime();
    for (format, name) in [(Format::A, "a"), (Format::B, "b")] {
        let dir = tempfile::tempdir().unwrap();
        simulate(dir.path(), format, 5_000, 7);
        let source = reader(&runtime, dir.path(), name);
        let mut session = source.open(None).await.unwrap();
        let mut cursor = None;
        let events = drain(&mut session, &mut cursor, None).await;
        // Format A holds the newest file's last record until the next one.
        let expected = if format == Format::A { 4_999 } else { 5_000 };
        assert_eq!(events.len(), expected, "format {name}");
        let ids: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), events.len(), "ids are unique");
        assert!(
            events[0].id.starts_with("\\PROD1:$0:ZZEV0000:0"),
            "{}",
            events[0].id
        );
        for key in [
            "system",
            "process",
            "subsystem_owner",
            "subsystem",
            "subsystem_version",
            "event_number",
            "collector",
            "log_file",
            "logtime",
        ] {
            assert!(attribute(&events[0], key).is_some(), "{key} missing");
        }
        let expand_45 = events
            .iter()
            .find(|e| {
                attribute(e, "subsystem") == Some("EXPAND")
                    && attribute(e, "event_number") == Some("45")
            })
            .unwrap();
        assert_eq!(expand_45.severity, Severity::Critical, "emphasis");
        let dsk_5016 = events
            .iter()
            .find(|e| {
                attribute(e, "subsystem") == Some("DSK")
                    && attribute(e, "event_number") == Some("5016")
            })
            .unwrap();
        assert_eq!(dsk_5016.severity, Severity::Minor, "override");
        assert!(
            events.iter().all(|e| !e.body.contains('\u{7}')),
            "BEL stripped"
        );
        // Reading again from scratch gives the same ids.
        let mut again = source.open(None).await.unwrap();
        let second = drain(&mut again, &mut None, Some(10)).await;
        assert_eq!(second[0].id, events[0].id);
        assert_eq!(second[9].id, events[9].id);
    }
}

/// A quiet log does not hold its last format A event back for ever: once
/// the file has not grown for `settle_ms`, it is emitted.
#[tokio::test]
async fn the_last_event_of_a_quiet_log_is_emitted_after_the_settle_time() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    simulate(dir.path(), Format::A, 300, 5);
    let plugin = runtime.load(&plugin_dir().join("ems-reader.wasm")).unwrap();
    let config = serde_json::json!({
        "directory": dir.path(),
        "format": "a",
        "system": "\\PROD1",
        "settle_ms": 100,
    });
    let source = plugin
        .source(
            "ems",
            config.to_string(),
            &Grants {
                dirs: vec![dir.path().to_owned()],
                ..Grants::default()
            },
        )
        .unwrap();
    let mut session = source.open(None).await.unwrap();
    let mut cursor = None;
    let mut events = drain(&mut session, &mut cursor, None).await;
    assert_eq!(events.len(), 299, "the last one waits for the settle time");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while events.len() < 300 {
        assert!(std::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        events.extend(drain(&mut session, &mut cursor, None).await);
    }
    assert_eq!(events.len(), 300);
    // The settled record is not emitted twice: more events follow it, and
    // the reader reads in order, so a repeat would come before their end.
    simulate(dir.path(), Format::A, 5, 6);
    while events.len() < 305 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new events never came"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        events.extend(drain(&mut session, &mut cursor, None).await);
    }
    let ids: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!((events.len(), ids.len()), (305, 305));
}

#[tokio::test]
async fn a_restart_from_the_cursor_loses_and_repeats_nothing() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    simulate(dir.path(), Format::B, 6_000, 3);
    let source = reader(&runtime, dir.path(), "b");
    let mut cursor = None;
    let mut session = source.open(None).await.unwrap();
    let mut events = drain(&mut session, &mut cursor, Some(2_500)).await;
    drop(session);
    // More is written while "safd" is down.
    simulate(dir.path(), Format::B, 1_000, 4);
    let mut session = source.open(cursor.clone()).await.unwrap();
    events.extend(drain(&mut session, &mut cursor, None).await);
    assert_eq!(events.len(), 7_000);
    let ids: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 7_000);
}

#[tokio::test]
async fn purged_files_become_a_critical_gap_event_and_bad_lines_are_flagged() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    simulate(dir.path(), Format::B, 3_000, 5);
    let source = reader(&runtime, dir.path(), "b");
    let mut cursor = None;
    let mut session = source.open(None).await.unwrap();
    let first = drain(&mut session, &mut cursor, Some(100)).await;
    assert!(!first.is_empty());
    let files = ems_sim::existing_files(dir.path()).unwrap();
    for (_, path) in files.iter().take(2) {
        std::fs::remove_file(path).unwrap();
    }
    // And a line no parser understands, in the newest file.
    let newest = &files.last().unwrap().1;
    let mut bytes = std::fs::read(newest).unwrap();
    bytes.extend_from_slice(b"this is not an EMS event\n");
    std::fs::write(newest, bytes).unwrap();
    let rest = drain(&mut session, &mut cursor, None).await;
    let gap = rest.iter().find(|e| attribute(e, "gap").is_some()).unwrap();
    assert_eq!(gap.severity, Severity::Critical);
    assert_eq!(attribute(gap, "gap"), Some("purged"));
    assert_eq!(attribute(gap, "log_file"), Some("ZZEV0000"));
    assert_eq!(attribute(gap, "last_log_file"), Some("ZZEV0001"));
    let bad = rest.last().unwrap();
    assert_eq!(bad.severity, Severity::Warning);
    assert_eq!(bad.body, "this is not an EMS event");
    assert!(
        attribute(bad, "parse_error")
            .unwrap()
            .contains("not an EMS JSON event")
    );
}

#[tokio::test]
async fn seek_rereads_from_a_time_without_repeating_the_go_back_window() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    simulate(dir.path(), Format::B, 2_000, 9);
    let source = reader(&runtime, dir.path(), "b");
    let mut cursor = None;
    let mut session = source.open(None).await.unwrap();
    let all = drain(&mut session, &mut cursor, None).await;
    assert_eq!(all.len(), 2_000);
    let logtime = |e: &Event| {
        attribute(e, "logtime")
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_microsecond()
    };
    let target = logtime(&all[1_500]);
    session.seek(target).await.unwrap();
    let again = drain(&mut session, &mut cursor, None).await;
    let expected: Vec<&str> = all
        .iter()
        .filter(|e| logtime(e) >= target)
        .map(|e| e.id.as_str())
        .collect();
    let got: Vec<&str> = again.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        got, expected,
        "from the target on, nothing of the go-back window"
    );
}

#[tokio::test]
async fn configuration_mistakes_are_named() {
    let runtime = runtime();
    let plugin = runtime.load(&plugin_dir().join("ems-reader.wasm")).unwrap();
    let problems = plugin
        .validate_config(
            &serde_json::json!({
                "directory": "/logs", "format": "a", "system": "\\P",
                "time_zone": "Mars/Olympus",
                "severity_overrides": [{"subsystem": "TMF", "event": 1, "severity": "loud"}],
            })
            .to_string(),
        )
        .await
        .unwrap();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["time_zone", "severity_overrides[0].severity"]);
    let missing = plugin
        .validate_config(r#"{"directory": "/logs", "format": "c", "system": "\\P"}"#)
        .await
        .unwrap();
    assert_eq!(missing[0].path, "format");
    // A directory that was not granted: one clear error naming the fix.
    let dir = tempfile::tempdir().unwrap();
    let source = plugin
        .source(
            "ems",
            serde_json::json!({"directory": dir.path(), "format": "b", "system": "\\P"})
                .to_string(),
            &Grants::default(),
        )
        .unwrap();
    let err = source.open(None).await.err().unwrap().to_string();
    assert!(err.contains("grants.dirs"), "{err}");
}

/// The acceptance run: a directory of 1 000 000 simulated events across
/// rotated files is read completely, each event exactly once, with a
/// restart (from the stored cursor) in the middle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_events_across_rotated_files_and_a_restart_each_exactly_once() {
    const TOTAL: u64 = 1_000_000;
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut generator = Generator::new(SimConfig::default());
    let mut log = LogWriter::create(
        dir.path(),
        Format::A,
        Zone::parse("Europe/Berlin").unwrap(),
        4 << 20,
        0,
    )
    .unwrap();
    for _ in 0..TOTAL {
        log.write(&generator.next_event()).unwrap();
    }
    log.flush().unwrap();
    let files = ems_sim::existing_files(dir.path()).unwrap().len();
    assert!(files > 20, "{files} files");
    let source = reader(&runtime, dir.path(), "a");
    let mut cursor = None;
    let mut ids: HashSet<String> = HashSet::with_capacity(TOTAL as usize);
    let mut count = 0u64;
    let mut session = source.open(None).await.unwrap();
    for event in drain(&mut session, &mut cursor, Some(TOTAL as usize / 2)).await {
        ids.insert(event.id);
        count += 1;
    }
    // safd restarts: a new session from the stored cursor.
    drop(session);
    // The collector logs one more event, which releases the last record of
    // the newest file (format A waits for the next header).
    log.write(&generator.next_event()).unwrap();
    log.flush().unwrap();
    let mut session = source.open(cursor.clone()).await.unwrap();
    for event in drain(&mut session, &mut cursor, None).await {
        ids.insert(event.id);
        count += 1;
    }
    assert_eq!(count, TOTAL, "every event read");
    assert_eq!(ids.len() as u64, TOTAL, "each exactly once");
}
