//! Tailing real directories written by the simulator: everything once, in
//! order, across rotation; purge and truncation reported as gaps; seek.

use ems_sim::{Generator, LogWriter, SimConfig};
use safd_ems::tail::{GapKind, Item, Position, Tail, file_name};
use safd_ems::{Format, Zone};
use std::io::Write;
use std::path::Path;

fn writer(dir: &Path, format: Format, rotate: u64, keep: usize) -> LogWriter {
    LogWriter::create(dir, format, Zone::utc(), rotate, keep).unwrap()
}

/// Everything readable now, in reads of at most `max` records.
fn drain(tail: &mut Tail, max: usize) -> Vec<Item> {
    let mut out = Vec::new();
    loop {
        let read = tail.read(max, 1 << 20).unwrap();
        let empty = read.items.is_empty();
        out.extend(read.items);
        if !read.more && empty {
            return out;
        }
    }
}

fn records(items: &[Item]) -> Vec<(u32, u64, String)> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Record(r) => Some((r.file, r.start, r.text.clone())),
            Item::Gap(_) => None,
        })
        .collect()
}

#[test]
fn every_record_once_in_order_across_rotation_and_growth() {
    for format in [Format::A, Format::B] {
        let dir = tempfile::tempdir().unwrap();
        let mut generator = Generator::new(SimConfig::default());
        let mut log = writer(dir.path(), format, 16 << 10, 0);
        let mut tail = Tail::new(dir.path(), format, Position::default());
        let mut seen = Vec::new();
        let mut written = 0;
        for round in 0..20 {
            for _ in 0..(37 + round * 11) {
                log.write(&generator.next_event()).unwrap();
                written += 1;
            }
            log.flush().unwrap();
            seen.extend(records(&drain(&mut tail, 13)));
        }
        // Format A holds the newest file's last record until the next one
        // begins: write one more to release it.
        log.write(&generator.next_event()).unwrap();
        log.flush().unwrap();
        seen.extend(records(&drain(&mut tail, 13)));
        let expected = if format == Format::A {
            written
        } else {
            written + 1
        };
        assert_eq!(seen.len(), expected, "{format:?}");
        let mut positions: Vec<_> = seen.iter().map(|(f, s, _)| (*f, *s)).collect();
        let sorted = {
            let mut p = positions.clone();
            p.sort_unstable();
            p.dedup();
            p
        };
        assert_eq!(positions, sorted, "in order, no duplicates");
        positions.clear();
    }
}

#[test]
fn a_partial_line_waits_until_it_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file_name(0));
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(b"{\"a\":1}\n{\"b\":").unwrap();
    let mut tail = Tail::new(dir.path(), Format::B, Position::default());
    let first = records(&drain(&mut tail, 100));
    assert_eq!(first.len(), 1);
    file.write_all(b"2}\n").unwrap();
    let second = records(&drain(&mut tail, 100));
    assert_eq!(second, [(0, 8, "{\"b\":2}".to_owned())]);
}

#[test]
fn a_file_purged_before_it_was_read_is_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut generator = Generator::new(SimConfig::default());
    let mut log = writer(dir.path(), Format::B, 8 << 10, 0);
    for _ in 0..300 {
        log.write(&generator.next_event()).unwrap();
    }
    log.flush().unwrap();
    let mut tail = Tail::new(dir.path(), Format::B, Position::default());
    // Read a little of the first file, then the collector purges files 0..=2.
    let read = tail.read(5, 1 << 20).unwrap();
    assert_eq!(records(&read.items).len(), 5);
    let at = tail.position();
    for n in 0..=2 {
        std::fs::remove_file(dir.path().join(file_name(n))).unwrap();
    }
    let items = drain(&mut tail, 50);
    let Item::Gap(gap) = &items[0] else {
        panic!("expected a gap first: {:?}", items[0])
    };
    assert_eq!((gap.file, gap.offset), (0, at.offset));
    assert_eq!(gap.kind, GapKind::Purged { last_file: 2 });
    assert_eq!(
        records(&items)[0].0,
        3,
        "continues with the oldest file left"
    );
}

#[test]
fn a_truncated_file_is_a_gap_and_reading_restarts_at_its_beginning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file_name(0));
    std::fs::write(&path, b"{\"a\":1}\n{\"a\":2}\n").unwrap();
    let mut tail = Tail::new(dir.path(), Format::B, Position::default());
    assert_eq!(records(&drain(&mut tail, 100)).len(), 2);
    std::fs::write(&path, b"{\"c\":3}\n").unwrap();
    let items = drain(&mut tail, 100);
    assert!(matches!(items[0], Item::Gap(g) if g.kind == GapKind::Truncated { size: 8 }));
    assert_eq!(records(&items), [(0, 0, "{\"c\":3}".to_owned())]);
}

#[test]
fn seek_finds_the_first_record_at_or_after_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut generator = Generator::new(SimConfig::default());
    let mut log = writer(dir.path(), Format::B, 8 << 10, 0);
    let events: Vec<_> = (0..500).map(|_| generator.next_event()).collect();
    for event in &events {
        log.write(event).unwrap();
    }
    log.flush().unwrap();
    let time_of = |text: &str| safd_ems::json::parse(text).ok().map(|e| e.logtime);
    let mut tail = Tail::new(dir.path(), Format::B, Position::default());
    let target = events[321].logtime;
    tail.seek(target, time_of).unwrap();
    let first = records(&drain(&mut tail, 1000));
    let parsed = safd_ems::json::parse(&first[0].2).unwrap();
    assert!(parsed.logtime >= target);
    let expected = events.iter().position(|e| e.logtime >= target).unwrap();
    assert_eq!(first.len(), 500 - expected);
    // A time after everything: positioned at the end.
    tail.seek(i64::MAX, time_of).unwrap();
    assert!(records(&drain(&mut tail, 1000)).is_empty());
}

/// The writer finishes a file and starts the next while the reader is in
/// the middle of a read: the reader must take the file's final size, not
/// the one it saw before it noticed the newer file (a race that skipped a
/// file's last records under a live writer).
#[test]
fn a_file_finished_during_a_read_is_read_to_its_real_end() {
    let dir = tempfile::tempdir().unwrap();
    let writer_dir = dir.path().to_owned();
    const EVENTS: usize = 60_000;
    let writing = std::thread::spawn(move || {
        let mut generator = Generator::new(SimConfig::default());
        let mut log = writer(&writer_dir, Format::B, 8 << 10, 0);
        for n in 0..EVENTS {
            log.write(&generator.next_event()).unwrap();
            if n % 7 == 0 {
                log.flush().unwrap();
            }
        }
        log.flush().unwrap();
    });
    let mut tail = Tail::new(dir.path(), Format::B, Position::default());
    let mut seen = Vec::new();
    while !writing.is_finished() {
        seen.extend(records(&drain(&mut tail, 50)));
    }
    writing.join().unwrap();
    seen.extend(records(&drain(&mut tail, 50)));
    let mut positions: Vec<(u32, u64)> = seen.iter().map(|(f, s, _)| (*f, *s)).collect();
    positions.dedup();
    assert_eq!(positions.len(), seen.len(), "a record was read twice");
    assert_eq!(seen.len(), EVENTS, "records were skipped");
}

/// A "record" of 3 MiB with no line break (a damaged file): it is cut into
/// pieces of at most `MAX_RECORD_BYTES`, emitted (never dropped, never read
/// whole), and the records after it are read as usual; seeking steps over
/// it in bounded pieces too.
#[test]
fn an_oversized_record_is_cut_and_reading_goes_on() {
    use safd_ems::tail::MAX_RECORD_BYTES;
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = vec![b'x'; 3 << 20];
    bytes.extend_from_slice(b"\n{1}\n{2}\n");
    std::fs::write(dir.path().join(file_name(1)), &bytes).unwrap();
    std::fs::write(dir.path().join(file_name(2)), b"{3}\n").unwrap();
    let mut tail = Tail::new(dir.path(), Format::B, Position::default());
    let read = records(&drain(&mut tail, 100));
    let texts: Vec<&str> = read.iter().map(|(_, _, t)| t.as_str()).collect();
    assert!(texts.len() >= 6, "{}", texts.len());
    assert_eq!(texts[texts.len() - 3..], ["{1}", "{2}", "{3}"]);
    let junk: usize = texts[..texts.len() - 3].iter().map(|t| t.len()).sum();
    assert_eq!(junk, 3 << 20, "every junk byte emitted once");
    assert!(read.iter().all(|(_, _, t)| t.len() <= MAX_RECORD_BYTES));

    let mut tail = Tail::new(dir.path(), Format::B, Position::default());
    tail.seek(2, |text| match text {
        "{1}" => Some(1),
        "{2}" => Some(2),
        _ => None,
    })
    .unwrap();
    let at = tail.position();
    assert_eq!((at.file, at.offset), (1, (3 << 20) + 5));
}
