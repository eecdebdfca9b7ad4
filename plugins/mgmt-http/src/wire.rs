//! Protocol v1 bodies: requests written by hand (events are borrowed from
//! the host's block and written straight into the body), answers read with
//! serde.

use safd_plugin_sdk::destination::{
    CatchUpFrom, CatchUpRequest, DeliveryReport, Health, Rejection,
};
use safd_plugin_sdk::events::{self, EventRef};
use safd_plugin_sdk::time::parse_rfc3339;
use safd_plugin_sdk::types::StreamPosition;
use serde::Deserialize;
use std::collections::BTreeMap;

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
pub fn number(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[start..] {
        out.push(char::from(d));
    }
}

/// `{"stream": seq, …}`.
pub fn positions(out: &mut String, positions: &[StreamPosition]) {
    out.push('{');
    for (i, p) in positions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, &p.stream);
        out.push(':');
        number(out, p.seq);
    }
    out.push('}');
}

/// One event object of a deliver request.
pub fn event(out: &mut String, seq: u64, event: &EventRef<'_>) {
    out.push_str("{\"seq\":");
    number(out, seq);
    out.push_str(",\"id\":");
    string(out, event.id);
    out.push_str(",\"time\":\"");
    safd_plugin_sdk::time::rfc3339(out, event.time);
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

fn to_positions(map: BTreeMap<String, u64>) -> Vec<StreamPosition> {
    map.into_iter()
        .map(|(stream, seq)| StreamPosition { stream, seq })
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct RegisterAnswer {
    #[serde(default)]
    high_water: BTreeMap<String, u64>,
    service_ready: bool,
    #[serde(default)]
    catch_up: Option<CatchUpAnswer>,
}

#[derive(Debug, Deserialize)]
struct CatchUpAnswer {
    epoch: u64,
    from: FromAnswer,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FromAnswer {
    Positions(BTreeMap<String, u64>),
    Time(String),
}

impl RegisterAnswer {
    pub fn into_parts(self) -> Result<(Vec<StreamPosition>, bool, Option<CatchUpRequest>), String> {
        let catch_up = match self.catch_up {
            None => None,
            Some(c) => Some(CatchUpRequest {
                epoch: c.epoch,
                start: match c.from {
                    FromAnswer::Positions(p) => CatchUpFrom::Positions(to_positions(p)),
                    FromAnswer::Time(t) => {
                        CatchUpFrom::Time(parse_rfc3339(&t).ok_or_else(|| {
                            format!("catch-up time `{t}` is not an RFC 3339 UTC time")
                        })?)
                    }
                },
            }),
        };
        Ok((to_positions(self.high_water), self.service_ready, catch_up))
    }
}

#[derive(Debug, Deserialize)]
pub struct DeliverAnswer {
    #[serde(default)]
    acknowledged: BTreeMap<String, u64>,
    #[serde(default)]
    rejected: Vec<RejectionAnswer>,
}

#[derive(Debug, Deserialize)]
struct RejectionAnswer {
    stream: String,
    seq: u64,
    reason: String,
}

impl From<DeliverAnswer> for DeliveryReport {
    fn from(answer: DeliverAnswer) -> Self {
        DeliveryReport {
            acknowledged: to_positions(answer.acknowledged),
            rejected: answer
                .rejected
                .into_iter()
                .map(|r| Rejection {
                    stream: r.stream,
                    seq: r.seq,
                    reason: r.reason,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct HealthAnswer {
    service_ready: bool,
    #[serde(default)]
    detail: String,
}

impl From<HealthAnswer> for Health {
    fn from(answer: HealthAnswer) -> Self {
        Health {
            service_ready: answer.service_ready,
            detail: answer.detail,
        }
    }
}

/// `{"error": "..."}` of an error answer.
#[derive(Debug, Deserialize)]
pub struct ErrorAnswer {
    pub error: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
    fn numbers_and_positions_are_json() {
        for n in [0, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut out = String::new();
            number(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        let mut out = String::new();
        positions(
            &mut out,
            &[
                StreamPosition {
                    stream: "ems \"a\"".into(),
                    seq: 3,
                },
                StreamPosition {
                    stream: "safd".into(),
                    seq: u64::MAX,
                },
            ],
        );
        let back: BTreeMap<String, u64> = serde_json::from_str(&out).unwrap();
        assert_eq!(back["ems \"a\""], 3);
        assert_eq!(back["safd"], u64::MAX);
    }

    #[test]
    fn an_event_is_the_object_of_docs_protocol_md() {
        let mut block = safd_event_block::BlockWriter::new();
        block.push_sequenced(
            48214,
            "\\PROD1:$0:ZZEV0012:48213",
            1_710_119_830_002_311,
            5,
            [("system", "\\PROD1"), ("note", "a \"quoted\"\nline")],
            "LDEV 123 $LHNY1: LINE NOT READY",
        );
        let (count, bytes) = block.finish();
        let (seq, read) = safd_event_block::sequenced(&bytes, count)
            .next()
            .unwrap()
            .unwrap();
        let mut out = String::new();
        event(&mut out, seq, &read);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "seq": 48214,
                "id": "\\PROD1:$0:ZZEV0012:48213",
                "time": "2024-03-11T01:17:10.002311Z",
                "severity": "critical",
                "attributes": [["system", "\\PROD1"], ["note", "a \"quoted\"\nline"]],
                "body": "LDEV 123 $LHNY1: LINE NOT READY"
            })
        );
        assert_eq!(
            parse_rfc3339("2024-03-11T01:17:10.002311Z"),
            Some(1_710_119_830_002_311)
        );
    }

    #[test]
    fn rfc3339_times_parse_and_bad_ones_do_not() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2000-02-29T23:59:59.5+00:00"),
            Some(951_868_799_500_000)
        );
        for bad in [
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01",
            "x",
            "",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
