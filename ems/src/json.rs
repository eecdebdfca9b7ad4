//! Format B: tokenized JSON Lines, one lossless event per line.
//!
//! ```json
//! {"ssid":{"owner":"TANDEM","number":24,"version":"H01","name":"EXPAND"},"evt":45,
//!  "gentime":"2024-03-11T01:17:10.002311Z","logtime":"2024-03-11T01:17:10.004870Z",
//!  "system":"\\PROD1","proc":{"name":"$LHNY1","cpu":3,"pin":41},"emphasis":true,
//!  "action_needed":false,"subjects":[{"token":"ZEMS-TKN-LDEVNAME","value":"$LHNY1"}],
//!  "text":"LDEV 123 $LHNY1: LINE NOT READY, ERROR 140"}
//! ```

use crate::{EmsEvent, ParseError, Process, Ssid, Subject};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Line {
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

/// Parse one line (without its newline).
pub fn parse(line: &str) -> Result<EmsEvent, ParseError> {
    let line: Line = serde_json::from_str(line.trim_end_matches('\r'))
        .map_err(|e| ParseError(format!("not an EMS JSON event: {e}")))?;
    let time = |field: &str, text: &str| -> Result<i64, ParseError> {
        text.parse::<jiff::Timestamp>()
            .map(|t| t.as_microsecond())
            .map_err(|e| {
                ParseError(format!(
                    "`{field}` `{text}` is not an ISO-8601 UTC time: {e}"
                ))
            })
    };
    Ok(EmsEvent {
        gentime: time("gentime", &line.gentime)?,
        logtime: time("logtime", &line.logtime)?,
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

/// `micros` since the Unix epoch as ISO-8601 UTC with microseconds, as
/// format B writes times.
pub fn iso_time(micros: i64) -> String {
    jiff::Timestamp::from_microsecond(micros)
        .map(|t| format!("{t:.6}"))
        .unwrap_or_default()
}

/// Render `event` as one JSON line, ending with a newline.
pub fn render(event: &EmsEvent) -> String {
    let time = iso_time;
    let line = Line {
        ssid: event.ssid.clone(),
        evt: event.event_number,
        gentime: time(event.gentime),
        logtime: time(event.logtime),
        system: event.system.clone(),
        process: event.process.clone(),
        emphasis: event.emphasis,
        action_needed: event.action_needed,
        subjects: event.subjects.clone(),
        text: event.text.clone(),
    };
    let mut out = serde_json::to_string(&line).unwrap_or_default();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
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
}
