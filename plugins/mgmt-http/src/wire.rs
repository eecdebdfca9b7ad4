//! Protocol v1 bodies: requests written by hand (events are borrowed from
//! the host's block and written straight into the body), answers read with
//! serde.

use safd_plugin_sdk::destination::{
    CatchUpFrom, CatchUpRequest, DeliveryReport, Health, Rejection,
};
pub use safd_plugin_sdk::json::{event, number, string};
use safd_plugin_sdk::time::parse_rfc3339;
use safd_plugin_sdk::types::StreamPosition;
use serde::Deserialize;
use std::collections::BTreeMap;

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
    /// Media types the server reads a delivery in; none from servers that
    /// read only JSON.
    #[serde(default)]
    body_formats: Vec<String>,
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
    pub fn body_formats(&self) -> &[String] {
        &self.body_formats
    }

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
