//! JSON written by hand where it is on the hot path: events borrowed from
//! the host's block go straight into a request body, in the shape of the
//! management protocol (`docs/protocol.md`), without building a value
//! first. Used by mgmt-http and nats-jetstream; answers are read with serde.

use crate::events::{self, EventRef};

/// Append `s` as a JSON string.
pub fn string(out: &mut String, s: &str) {
    out.push('"');
    let mut rest = s;
    while let Some(i) = first_to_escape(rest.as_bytes()) {
        // `i` is an ASCII byte, so both slices are on char boundaries.
        out.push_str(rest.get(..i).unwrap_or_default());
        let byte = rest.as_bytes()[i];
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
        }
        rest = rest.get(i + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    out.push('"');
}

fn must_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// Where the first byte JSON must escape is. Event text rarely has one, so
/// this checks eight bytes per step (the classic "has a byte below n /
/// equal to c" word tricks); the string encoder dominated a delivery's
/// guest time when it went byte by byte.
fn first_to_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut words = bytes.chunks_exact(8);
    let mut checked = 0;
    for word in words.by_ref() {
        let mut le = [0u8; 8];
        le.copy_from_slice(word);
        let x = u64::from_le_bytes(le);
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
        let quote = has_zero(x ^ (ONES * u64::from(b'"')));
        let backslash = has_zero(x ^ (ONES * u64::from(b'\\')));
        if control | quote | backslash != 0 {
            break;
        }
        checked += 8;
    }
    bytes
        .get(checked..)?
        .iter()
        .position(|&b| must_escape(b))
        .map(|i| checked + i)
}

/// Append a decimal number without going through `fmt`.
pub fn number(out: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    for &d in decimal(n, &mut digits) {
        out.push(char::from(d));
    }
}

/// `n`'s decimal ASCII digits, written into the end of `digits` (20 is
/// room for any `u64`): for writers of bytes as well as of strings.
pub fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[start..]
}

/// One event object of protocol v1's deliver request: `seq`, `id`,
/// `time` (RFC 3339), `severity`, `attributes` (pairs) and `body`.
pub fn event(out: &mut String, seq: u64, event: &EventRef<'_>) {
    out.push_str("{\"seq\":");
    number(out, seq);
    out.push_str(",\"id\":");
    string(out, event.id);
    out.push_str(",\"time\":\"");
    crate::time::rfc3339(out, event.time);
    out.push_str("\",\"severity\":\"");
    out.push_str(events::severity(event).as_str());
    out.push_str("\",\"attributes\":[");
    for (i, (key, value)) in event.attributes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        string(out, key);
        out.push(',');
        string(out, value);
        out.push(']');
    }
    out.push_str("],\"body\":");
    string(out, event.body);
    out.push('}');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::time::parse_rfc3339;
    use proptest::prelude::*;

    /// Strings weighted towards what JSON must escape and towards the
    /// 8-byte word boundaries the fast path checks at.
    fn tricky_string() -> impl Strategy<Value = String> {
        const SPECIAL: [char; 10] = ['"', '\\', '\n', '\r', '\t', '\0', '\u{1f}', 'é', '€', '😀'];
        let one = prop_oneof![
            2 => proptest::sample::select(&SPECIAL[..]),
            2 => (0u8..0x80).prop_map(char::from),
            1 => any::<char>(),
        ];
        proptest::collection::vec(one, 0..40).prop_map(|chars| chars.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn strings_read_back_with_serde_json(s in tricky_string()) {
            let mut out = String::new();
            string(&mut out, &s);
            let back: String = serde_json::from_str(&out).unwrap();
            prop_assert_eq!(back, s, "{}", out);
        }

        #[test]
        fn events_read_back_with_serde_json(
            seq in any::<u64>(),
            time in 0i64..4_102_444_800_000_000,
            severity in 0u8..6,
            id in tricky_string(),
            attributes in proptest::collection::vec((tricky_string(), tricky_string()), 0..4),
            body in tricky_string(),
        ) {
            let mut block = safd_event_block::BlockWriter::new();
            block.push_sequenced(seq, &id, time, severity, attributes.iter().map(|(k, v)| (k, v)), &body);
            let (count, bytes) = block.finish();
            let (seq, read) = safd_event_block::sequenced(&bytes, count).next().unwrap().unwrap();
            let mut out = String::new();
            event(&mut out, seq, &read);
            let json: serde_json::Value = serde_json::from_str(&out).unwrap();
            let severity = safd_event_block::Severity::from_code(severity).unwrap();
            prop_assert_eq!(&json["seq"], &serde_json::json!(seq));
            prop_assert_eq!(&json["id"], &serde_json::json!(id));
            prop_assert_eq!(json["time"].as_str().and_then(parse_rfc3339), Some(time));
            prop_assert_eq!(&json["severity"], &serde_json::json!(severity.as_str()));
            prop_assert_eq!(&json["attributes"], &serde_json::json!(attributes));
            prop_assert_eq!(&json["body"], &serde_json::json!(body));
        }
    }

    #[test]
    fn every_character_of_the_basic_plane_reads_back_with_serde_json() {
        for s in (0..=0xFFFFu32).filter_map(char::from_u32).map(String::from) {
            let mut out = String::new();
            string(&mut out, &s);
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s, "{out}");
        }
    }

    #[test]
    fn numbers_are_json() {
        for n in [0, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut out = String::new();
            number(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }
}
