//! Property: whatever bytes a log file holds and however its growth is cut
//! into reads, framing never panics, and every complete non-blank line ends
//! up in exactly one record, in order.

use proptest::prelude::*;
use safd_ems::Format;
use safd_ems::framing::records;

/// Read `file` as a tailing reader would: the file grows by `cuts`, each
/// read starts where the previous one resumed; at the end it is finished.
fn tail(file: &[u8], cuts: &[usize], format: Format) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut visible = 0;
    for cut in cuts.iter().chain(std::iter::once(&file.len())) {
        visible = (*cut).clamp(visible, file.len());
        let (found, resume) = records(&file[offset..visible], format, false);
        out.extend(found.into_iter().map(|r| r.text.into_owned()));
        offset += resume;
    }
    let (found, resume) = records(&file[offset..], format, true);
    out.extend(found.into_iter().map(|r| r.text.into_owned()));
    offset += resume;
    // Only an unterminated tail may remain unread.
    assert!(!file[offset..].contains(&b'\n'));
    out
}

/// The complete, non-blank lines of `file`.
fn complete_lines(file: &[u8]) -> Vec<String> {
    let mut lines: Vec<&[u8]> = file.split(|b| *b == b'\n').collect();
    lines.pop(); // after the last newline: incomplete (or empty)
    lines
        .into_iter()
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Header-like, continuation-like, blank, and arbitrary bytes.
        "[0-9]{2}-[0-9]{2}-[0-9]{2} [ -~]{0,30}".prop_map(String::into_bytes),
        "[ \t][ -~]{0,20}".prop_map(String::into_bytes),
        "[ \t]{0,3}".prop_map(String::into_bytes),
        proptest::collection::vec(
            any::<u8>().prop_filter("no newline", |b| *b != b'\n' && *b != b'\r'),
            0..20
        ),
    ]
}

fn file() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    (
        proptest::collection::vec(line(), 0..30),
        any::<bool>(),
        proptest::collection::vec(0usize..2000, 0..8),
    )
        .prop_map(|(lines, trailing_newline, mut cuts)| {
            let mut file = lines.join(&b'\n');
            if trailing_newline {
                file.push(b'\n');
            }
            cuts.sort_unstable();
            (file, cuts)
        })
}

proptest! {
    #[test]
    fn format_b_every_complete_line_once((file, cuts) in file()) {
        prop_assert_eq!(tail(&file, &cuts, Format::B), complete_lines(&file));
    }

    #[test]
    fn format_a_every_complete_line_once_in_one_record((file, cuts) in file()) {
        let records = tail(&file, &cuts, Format::A);
        let flattened: Vec<String> = records
            .iter()
            .flat_map(|r| r.split('\n'))
            .filter(|l| !l.bytes().all(|b| b.is_ascii_whitespace()))
            .map(str::to_owned)
            .collect();
        prop_assert_eq!(flattened, complete_lines(&file));
        // Every record but a leading orphan starts with a header line.
        for record in records.iter().skip(1) {
            prop_assert!(!safd_ems::text::is_continuation(record.as_bytes()), "{:?}", record);
        }
    }

    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = safd_ems::text::parse(&text, &safd_ems::Zone::utc());
        let _ = safd_ems::json::parse(&text);
    }
}
