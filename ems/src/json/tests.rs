//! Format B's reader against serde_json, the reference it replaced: lines
//! generated with every field present, missing, repeated, of the wrong
//! type, escaped, reordered, padded with whitespace and unknown keys, and
//! then cut or given a stray character, must read the same (or be refused
//! by both).

use super::*;

const SAMPLE: &str = r#"{"ssid":{"owner":"TANDEM","number":24,"version":"H01","name":"EXPAND"},"evt":45,"gentime":"2024-03-11T01:17:10.002311Z","logtime":"2024-03-11T01:17:10.004870Z","system":"\\PROD1","proc":{"name":"$LHNY1","cpu":3,"pin":41},"emphasis":true,"action_needed":false,"subjects":[{"token":"ZEMS-TKN-LDEVNAME","value":"$LHNY1"}],"text":"LDEV 123 $LHNY1: LINE NOT READY, ERROR 140"}"#;

#[test]
fn the_sample_of_ems_md_parses_losslessly() {
    let event = parse(SAMPLE).unwrap();
    assert_eq!(event.ssid.number, Some(24));
    assert_eq!(event.ssid.name, "EXPAND");
    assert_eq!(event.event_number, 45);
    assert_eq!(event.system, "\\PROD1");
    assert_eq!(event.process.name.as_deref(), Some("$LHNY1"));
    assert_eq!((event.process.cpu, event.process.pin), (Some(3), Some(41)));
    assert!(event.emphasis && !event.action_needed);
    assert_eq!(event.subjects[0].token, "ZEMS-TKN-LDEVNAME");
    assert_eq!(event.logtime - event.gentime, 2559);
    let rendered = render(&event);
    assert_eq!(parse(rendered.trim_end()).unwrap(), event);
}

#[test]
fn bad_lines_say_what_is_wrong() {
    assert!(parse("{").unwrap_err().0.contains("not an EMS JSON event"));
    let bad_time = SAMPLE.replace("2024-03-11T01:17:10.002311Z", "yesterday");
    let err = parse(&bad_time).unwrap_err();
    assert!(err.0.contains("gentime"), "{err}");
    let missing = SAMPLE.replace("\"evt\":45,", "");
    assert!(parse(&missing).unwrap_err().0.contains("evt"));
}

#[test]
fn strings_without_escapes_are_borrowed_from_the_line() {
    let event = parse_borrowed(SAMPLE).unwrap();
    assert!(matches!(event.owner, Cow::Borrowed("TANDEM")));
    assert!(matches!(event.text, Cow::Borrowed(_)));
    // `\\PROD1` holds an escape.
    assert!(matches!(event.system, Cow::Owned(_)));
    assert_eq!(event.logtime_text, Some("2024-03-11T01:17:10.004870Z"));
    let other_form = SAMPLE.replace("01:17:10.004870Z", "02:17:10.00487+01:00");
    let event = parse_borrowed(&other_form).unwrap();
    assert_eq!(event.logtime_text, None);
    assert_eq!(event.logtime - event.gentime, 2559);
}

#[test]
fn hostile_nesting_is_refused_not_recursed_into() {
    let deep = format!(
        "{{\"x\":{}{}, {}",
        "[".repeat(100_000),
        "]".repeat(100_000),
        &SAMPLE[1..]
    );
    let err = parse(&deep).unwrap_err();
    assert!(err.0.contains("nested too deeply"), "{err}");
}

/// The parser this one replaced: serde_json into owned strings.
fn reference(line: &str) -> Option<EmsEvent> {
    #[derive(serde::Deserialize)]
    struct Reference {
        ssid: Ssid,
        evt: u32,
        gentime: String,
        logtime: String,
        system: String,
        #[serde(rename = "proc", default)]
        process: Process,
        #[serde(default)]
        emphasis: bool,
        #[serde(default)]
        action_needed: bool,
        #[serde(default)]
        subjects: Vec<Subject>,
        #[serde(default)]
        text: String,
    }
    let line: Reference = serde_json::from_str(line.trim_end_matches('\r')).ok()?;
    let time = |text: &str| {
        text.parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.as_microsecond())
    };
    Some(EmsEvent {
        gentime: time(&line.gentime)?,
        logtime: time(&line.logtime)?,
        ssid: line.ssid,
        event_number: line.evt,
        system: line.system,
        process: line.process,
        emphasis: line.emphasis,
        action_needed: line.action_needed,
        subjects: line.subjects,
        text: line.text.replace('\u{7}', ""),
    })
}

mod generated {
    use super::*;
    use proptest::prelude::*;

    /// A JSON string literal: mostly valid (escaped as serde_json escapes,
    /// or with `\uXXXX`, `\/` and surrogate pairs), sometimes not.
    fn string() -> impl Strategy<Value = String> {
        let text = proptest::collection::vec(
            prop_oneof![
                Just('a'),
                Just('Z'),
                Just(' '),
                Just('"'),
                Just('\\'),
                Just('/'),
                Just('\u{7}'),
                Just('\n'),
                Just('\u{1}'),
                Just('é'),
                Just('😀'),
            ],
            0..12,
        )
        .prop_map(|chars| chars.into_iter().collect::<String>());
        (text, 0..30u8).prop_map(|(text, form)| {
            let json = serde_json::to_string(&text).unwrap_or_default();
            match form {
                0 => json.replace('a', "\\u0061").replace('😀', "\\ud83d\\ude00"),
                1 => json.replace('/', "\\/"),
                2 => json.replace("\\n", "\n"),
                3 => json.replace('a', "\\ud800"),
                4 => json.replace('a', "\\x"),
                5 => json.replace('Z', "\\udc00"),
                _ => json,
            }
        })
    }

    fn time() -> impl Strategy<Value = String> {
        prop_oneof![
            20 => (0i64..4_000_000_000_000_000).prop_map(|micros| format!("\"{}\"", iso_time(micros))),
            1 => Just("\"2024-03-11T01:17:10Z\"".to_owned()),
            1 => Just("\"2024-03-11T02:17:10.5+01:00\"".to_owned()),
            1 => Just("\"2024-03-11T01:17:10.004870\\u005A\"".to_owned()),
            1 => Just("\"2023-02-29T00:00:00.000000Z\"".to_owned()),
            1 => Just("\"yesterday\"".to_owned()),
            1 => Just("17".to_owned()),
        ]
    }

    fn integer(max: u64) -> impl Strategy<Value = String> {
        prop_oneof![
            30 => (0..=max).prop_map(|n| n.to_string()),
            1 => Just((max + 1).to_string()),
            1 => Just("1.5".to_owned()),
            1 => Just("2e3".to_owned()),
            1 => Just("007".to_owned()),
            1 => Just("-3".to_owned()),
            1 => Just("\"45\"".to_owned()),
        ]
    }

    fn optional(value: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
        prop_oneof![4 => value, 1 => Just("null".to_owned())]
    }

    /// Any JSON value an unknown key may carry (and a few invalid ones).
    fn unknown_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("{\"a\":[1,2.5e3,-0.1,null,true,\"x\\n\",{}],\"b\":{\"c\":[]}}".to_owned()),
            Just("[]".to_owned()),
            Just("-12".to_owned()),
            Just("0.0E-0".to_owned()),
            Just("false".to_owned()),
            Just("01".to_owned()),
            Just("1.".to_owned()),
            Just("[1,]".to_owned()),
            Just("{\"a\"}".to_owned()),
            Just("nul".to_owned()),
            string(),
        ]
    }

    /// An object of `fields` (key text, value text), some left out, in any
    /// order, some repeated.
    fn object(fields: Vec<BoxedStrategy<(String, String)>>) -> impl Strategy<Value = String> {
        let present = fields
            .into_iter()
            .map(|field| proptest::option::weighted(0.97, field))
            .collect::<Vec<_>>();
        (
            present,
            proptest::option::weighted(0.1, (string(), unknown_value())),
            any::<bool>(),
            0..20usize,
        )
            .prop_flat_map(|(present, unknown, spaced, repeat)| {
                let mut fields: Vec<(String, String)> = present.into_iter().flatten().collect();
                fields.extend(unknown);
                if repeat < fields.len() && repeat % 4 == 0 {
                    fields.push(fields[repeat].clone());
                }
                Just(fields).prop_shuffle().prop_map(move |fields| {
                    let (colon, comma) = if spaced {
                        (" : ", " ,\n\t")
                    } else {
                        (":", ",")
                    };
                    let fields: Vec<String> = fields
                        .iter()
                        .map(|(key, value)| format!("{key}{colon}{value}"))
                        .collect();
                    format!("{{{}}}", fields.join(comma))
                })
            })
    }

    fn field(
        key: &'static str,
        value: impl Strategy<Value = String> + 'static,
    ) -> BoxedStrategy<(String, String)> {
        value
            .prop_map(move |value| (format!("\"{key}\""), value))
            .boxed()
    }

    fn boolean() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => Just("true".to_owned()),
            4 => Just("false".to_owned()),
            1 => Just("null".to_owned()),
            1 => Just("1".to_owned()),
        ]
    }

    fn subject() -> impl Strategy<Value = String> {
        object(vec![field("token", string()), field("value", string())])
    }

    fn line() -> impl Strategy<Value = String> {
        let ssid = object(vec![
            field("owner", string()),
            field("number", optional(integer(u16::MAX.into()))),
            field("version", string()),
            field("name", string()),
        ]);
        let process = object(vec![
            field("name", optional(string())),
            field("cpu", optional(integer(u16::MAX.into()))),
            field("pin", optional(integer(u16::MAX.into()))),
        ]);
        let subjects = proptest::collection::vec(subject(), 0..3)
            .prop_map(|subjects| format!("[{}]", subjects.join(",")));
        object(vec![
            field("ssid", ssid),
            field("evt", integer(u32::MAX.into())),
            field("gentime", time()),
            field("logtime", time()),
            field("system", string()),
            field("proc", process),
            field("emphasis", boolean()),
            field("action_needed", boolean()),
            field("subjects", subjects),
            field("text", string()),
        ])
    }

    /// A generated line, sometimes cut short or given a stray character,
    /// or wrapped in whitespace.
    fn damaged_line() -> impl Strategy<Value = String> {
        (
            line(),
            0..16u8,
            any::<proptest::sample::Index>(),
            prop_oneof![
                Just('{'),
                Just('}'),
                Just('['),
                Just(','),
                Just(':'),
                Just('"'),
                Just('\\'),
                Just('0'),
                Just(' ')
            ],
        )
            .prop_map(|(line, damage, at, stray)| {
                let boundaries: Vec<usize> = line.char_indices().map(|(i, _)| i).collect();
                let at = boundaries[at.index(boundaries.len())];
                match damage {
                    0 => line[..at].to_owned(),
                    1 => format!("{}{stray}{}", &line[..at], &line[at..]),
                    2 => format!(" \t{line} \r"),
                    3 => format!("{line}x"),
                    _ => line,
                }
            })
    }

    /// Any event (any text, including quotes, backslashes, control and
    /// non-BMP characters) as format B writes it.
    fn event() -> impl Strategy<Value = EmsEvent> {
        let text = || any::<String>().prop_map(|text| text.replace('\u{7}', ""));
        let time = || 0i64..4_000_000_000_000_000;
        (
            (text(), any::<Option<u16>>(), text(), text()),
            (any::<u32>(), time(), time(), text()),
            (
                any::<Option<String>>(),
                any::<Option<u16>>(),
                any::<Option<u16>>(),
            ),
            (any::<bool>(), any::<bool>()),
            proptest::collection::vec((text(), text()), 0..3),
            text(),
        )
            .prop_map(
                |(ssid, (evt, gentime, logtime, system), process, flags, subjects, text)| {
                    EmsEvent {
                        ssid: Ssid {
                            owner: ssid.0,
                            number: ssid.1,
                            version: ssid.2,
                            name: ssid.3,
                        },
                        event_number: evt,
                        gentime,
                        logtime,
                        system,
                        process: Process {
                            name: process.0,
                            cpu: process.1,
                            pin: process.2,
                        },
                        emphasis: flags.0,
                        action_needed: flags.1,
                        subjects: subjects
                            .into_iter()
                            .map(|(token, value)| Subject { token, value })
                            .collect(),
                        text,
                    }
                },
            )
    }

    proptest! {
        // Most damaged lines are refused by both: enough cases that a few
        // hundred read.
        #![proptest_config(ProptestConfig::with_cases(4_000))]

        #[test]
        fn what_is_written_reads_back(event in event()) {
            let line = render(&event);
            let line = line.trim_end_matches('\n');
            prop_assert_eq!(parse(line), Ok(event.clone()));
            prop_assert_eq!(reference(line), Some(event));
        }

        #[test]
        fn reads_as_serde_json_read(line in damaged_line()) {
            let read = parse(&line);
            let expected = reference(&line);
            prop_assert_eq!(read.as_ref().ok(), expected.as_ref(), "{} → {:?}", line, read);
            if let Ok(event) = parse_borrowed(&line)
                && let Some(text) = event.logtime_text
            {
                prop_assert_eq!(text, iso_time(event.logtime));
            }
        }
    }
}
