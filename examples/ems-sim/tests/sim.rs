//! The simulator writes what the reader's parser reads back, rotates and
//! purges files, and is deterministic for a seed.
#![allow(clippy::unwrap_used)]

use ems_sim::{Generator, LogWriter, SimConfig, existing_files};
use safd_ems::framing::records;
use safd_ems::{EmsEvent, Format, Zone};
use std::path::Path;

fn write(
    dir: &Path,
    format: Format,
    config: SimConfig,
    events: u64,
    rotate: u64,
    keep: usize,
) -> Vec<EmsEvent> {
    let mut generator = Generator::new(config);
    let mut writer = LogWriter::create(
        dir,
        format,
        Zone::parse("Europe/Berlin").unwrap(),
        rotate,
        keep,
    )
    .unwrap();
    let mut all = Vec::new();
    for _ in 0..events {
        let event = generator.next_event();
        writer.write(&event).unwrap();
        all.push(event);
    }
    writer.flush().unwrap();
    all
}

fn read_back(dir: &Path, format: Format) -> Vec<EmsEvent> {
    let zone = Zone::parse("Europe/Berlin").unwrap();
    let mut out = Vec::new();
    for (_, path) in existing_files(dir).unwrap() {
        let bytes = std::fs::read(path).unwrap();
        let (found, resume) = records(&bytes, format, true);
        assert_eq!(resume, bytes.len());
        for record in found {
            out.push(match format {
                Format::A => safd_ems::text::parse(&record.text, &zone).unwrap(),
                Format::B => safd_ems::json::parse(&record.text).unwrap(),
            });
        }
    }
    out
}

#[test]
fn every_written_event_parses_back_in_both_formats() {
    for format in [Format::A, Format::B] {
        let dir = tempfile::tempdir().unwrap();
        let written = write(dir.path(), format, SimConfig::default(), 3_000, 64 << 10, 0);
        let read = read_back(dir.path(), format);
        assert_eq!(read.len(), written.len());
        for (w, r) in written.iter().zip(&read) {
            assert_eq!(r.event_number, w.event_number);
            assert_eq!(r.ssid.name, w.ssid.name);
            assert_eq!(r.emphasis, w.emphasis);
            assert_eq!(r.text, w.text.replace('\u{7}', ""));
            match format {
                // Format A prints whole seconds of GENTIME.
                Format::A => assert_eq!(r.gentime, w.gentime - w.gentime.rem_euclid(1_000_000)),
                // BEL characters are stripped by the reader.
                Format::B => assert_eq!(
                    *r,
                    EmsEvent {
                        text: w.text.replace('\u{7}', ""),
                        ..w.clone()
                    }
                ),
            }
        }
        // Continuation lines and several subsystems occur.
        assert!(written.iter().any(|e| e.text.contains('\n')));
        let subsystems: std::collections::BTreeSet<_> =
            written.iter().map(|e| e.ssid.name.as_str()).collect();
        for name in ["EMS", "TMF", "PATHWAY", "EXPAND", "DSK", "SAFEGARD"] {
            assert!(subsystems.contains(name), "{name} missing");
        }
        assert!(
            existing_files(dir.path()).unwrap().len() > 3,
            "rotated by size"
        );
    }
}

#[test]
fn the_same_seed_writes_the_same_files() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(
        a.path(),
        Format::A,
        SimConfig::default(),
        2_000,
        32 << 10,
        0,
    );
    write(
        b.path(),
        Format::A,
        SimConfig::default(),
        2_000,
        32 << 10,
        0,
    );
    let files_a = existing_files(a.path()).unwrap();
    let files_b = existing_files(b.path()).unwrap();
    assert_eq!(files_a.len(), files_b.len());
    for ((_, pa), (_, pb)) in files_a.iter().zip(&files_b) {
        assert_eq!(std::fs::read(pa).unwrap(), std::fs::read(pb).unwrap());
    }
    let c = tempfile::tempdir().unwrap();
    write(
        c.path(),
        Format::A,
        SimConfig {
            seed: 2,
            ..SimConfig::default()
        },
        2_000,
        32 << 10,
        0,
    );
    let first_c = std::fs::read(&existing_files(c.path()).unwrap()[0].1).unwrap();
    assert_ne!(first_c, std::fs::read(&files_a[0].1).unwrap());
}

#[test]
fn old_files_are_purged_and_writing_continues_after_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        Format::B,
        SimConfig::default(),
        3_000,
        32 << 10,
        3,
    );
    let files = existing_files(dir.path()).unwrap();
    assert_eq!(files.len(), 3);
    let newest = files.last().unwrap().0;
    assert!(files[0].0 > 0, "the oldest were purged");
    write(dir.path(), Format::B, SimConfig::default(), 10, 32 << 10, 3);
    assert_eq!(
        existing_files(dir.path()).unwrap().last().unwrap().0,
        newest + 1
    );
}

#[test]
fn a_clock_set_back_is_logged_as_event_524() {
    let dir = tempfile::tempdir().unwrap();
    let config = SimConfig {
        setback_every: 500,
        setback_secs: 30,
        ..SimConfig::default()
    };
    let written = write(dir.path(), Format::B, config, 1_000, 1 << 20, 0);
    let setbacks: Vec<_> = written
        .iter()
        .enumerate()
        .filter(|(_, e)| e.event_number == 524)
        .collect();
    assert_eq!(setbacks.len(), 2);
    let (at, event) = setbacks[0];
    assert!(event.emphasis);
    assert!(event.logtime < written[at - 1].logtime, "logtime went back");
}

#[test]
fn bursts_log_many_events_within_milliseconds() {
    let config = SimConfig {
        burst_every: 100,
        burst_size: 50,
        ..SimConfig::default()
    };
    let mut generator = Generator::new(config);
    let events: Vec<_> = (0..160).map(|_| generator.next_event()).collect();
    let burst = &events[99..149];
    let span = burst.last().unwrap().logtime - burst[0].logtime;
    assert!(span < 50_000, "burst spans {span} µs");
}
