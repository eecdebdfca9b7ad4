//! Format B: tokenized JSON Lines, one lossless event per line.
//!
//! ```json
//! {"ssid":{"owner":"TANDEM","number":24,"version":"H01","name":"EXPAND"},"evt":45,
//!  "gentime":"2024-03-11T01:17:10.002311Z","logtime":"2024-03-11T01:17:10.004870Z",
//!  "system":"\\PROD1","proc":{"name":"$LHNY1","cpu":3,"pin":41},"emphasis":true,
//!  "action_needed":false,"subjects":[{"token":"ZEMS-TKN-LDEVNAME","value":"$LHNY1"}],
//!  "text":"LDEV 123 $LHNY1: LINE NOT READY, ERROR 140"}
//! ```

mod scanner;
mod time;

use crate::{EmsEvent, ParseError, Process, Ssid, Subject};
use scanner::{ScanError, Scanner};
use serde::Serialize;
use std::borrow::Cow;

/// How format B is written (rendering; reading is [`parse_borrowed`]).
#[derive(Serialize)]
struct Line<'a> {
    ssid: &'a Ssid,
    evt: u32,
    gentime: String,
    logtime: String,
    system: &'a str,
    #[serde(rename = "proc")]
    process: &'a Process,
    emphasis: bool,
    action_needed: bool,
    subjects: &'a [Subject],
    text: &'a str,
}

/// A subject token of a format B line, borrowed where it has no escape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectRef<'a> {
    pub token: Cow<'a, str>,
    pub value: Cow<'a, str>,
}

/// A format B line read in place: strings are borrowed from the line
/// unless they hold an escape (or a BEL to remove).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonEvent<'a> {
    pub owner: Cow<'a, str>,
    pub subsystem_number: Option<u16>,
    pub version: Cow<'a, str>,
    pub subsystem: Cow<'a, str>,
    pub event_number: u32,
    pub gentime: i64,
    pub logtime: i64,
    /// The logtime as the line writes it, when that is exactly how safd
    /// writes times (so it need not be formatted again).
    pub logtime_text: Option<&'a str>,
    pub system: Cow<'a, str>,
    pub process_name: Option<Cow<'a, str>>,
    pub cpu: Option<u16>,
    pub pin: Option<u16>,
    pub emphasis: bool,
    pub action_needed: bool,
    pub subjects: Vec<SubjectRef<'a>>,
    pub text: Cow<'a, str>,
}

impl JsonEvent<'_> {
    /// The owned form every format shares.
    pub fn to_event(&self) -> EmsEvent {
        EmsEvent {
            ssid: Ssid {
                owner: self.owner.to_string(),
                number: self.subsystem_number,
                version: self.version.to_string(),
                name: self.subsystem.to_string(),
            },
            event_number: self.event_number,
            gentime: self.gentime,
            logtime: self.logtime,
            system: self.system.to_string(),
            process: Process {
                name: self.process_name.as_ref().map(|name| name.to_string()),
                cpu: self.cpu,
                pin: self.pin,
            },
            emphasis: self.emphasis,
            action_needed: self.action_needed,
            subjects: self
                .subjects
                .iter()
                .map(|subject| Subject {
                    token: subject.token.to_string(),
                    value: subject.value.to_string(),
                })
                .collect(),
            text: self.text.to_string(),
        }
    }
}

/// Parse one line (without its newline).
pub fn parse(line: &str) -> Result<EmsEvent, ParseError> {
    parse_borrowed(line).map(|event| event.to_event())
}

/// Parse one line (without its newline), borrowing from it.
pub fn parse_borrowed(line: &str) -> Result<JsonEvent<'_>, ParseError> {
    let line = line.trim_end_matches('\r');
    let mut scanner = Scanner::new(line);
    let read = read_line(&mut scanner).and_then(|read| scanner.end().map(|()| read));
    let read = read.map_err(|e| ParseError(format!("not an EMS JSON event: {e}")))?;
    let missing =
        |field: &str| ParseError(format!("not an EMS JSON event: missing field `{field}`"));
    let ssid = read.ssid.ok_or_else(|| missing("ssid"))?;
    let gentime = read.gentime.ok_or_else(|| missing("gentime"))?;
    let logtime = read.logtime.ok_or_else(|| missing("logtime"))?;
    let process = read.process.unwrap_or_default();
    // Written as safd writes times: read once, and kept as the attribute.
    let canonical_logtime = match &logtime {
        Cow::Borrowed(text) => time::canonical_micros(text).map(|micros| (micros, *text)),
        Cow::Owned(_) => None,
    };
    Ok(JsonEvent {
        owner: ssid.owner,
        subsystem_number: ssid.number,
        version: ssid.version,
        subsystem: ssid.name,
        event_number: read.evt.ok_or_else(|| missing("evt"))?,
        gentime: time("gentime", &gentime)?,
        logtime: match canonical_logtime {
            Some((micros, _)) => micros,
            None => time("logtime", &logtime)?,
        },
        logtime_text: canonical_logtime.map(|(_, text)| text),
        system: read.system.ok_or_else(|| missing("system"))?,
        process_name: process.name,
        cpu: process.cpu,
        pin: process.pin,
        emphasis: read.emphasis.unwrap_or(false),
        action_needed: read.action_needed.unwrap_or(false),
        subjects: read.subjects.unwrap_or_default(),
        text: match read.text {
            Some(text) if text.contains('\u{7}') => Cow::Owned(text.replace('\u{7}', "")),
            Some(text) => text,
            None => Cow::Borrowed(""),
        },
    })
}

fn time(field: &str, text: &str) -> Result<i64, ParseError> {
    if let Some(micros) = time::canonical_micros(text) {
        return Ok(micros);
    }
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_microsecond())
        .map_err(|e| {
            ParseError(format!(
                "`{field}` `{text}` is not an ISO-8601 UTC time: {e}"
            ))
        })
}

/// The fields of a line as read, each once at most.
#[derive(Default)]
struct Read<'a> {
    ssid: Option<SsidRead<'a>>,
    evt: Option<u32>,
    gentime: Option<Cow<'a, str>>,
    logtime: Option<Cow<'a, str>>,
    system: Option<Cow<'a, str>>,
    process: Option<ProcessRead<'a>>,
    emphasis: Option<bool>,
    action_needed: Option<bool>,
    subjects: Option<Vec<SubjectRef<'a>>>,
    text: Option<Cow<'a, str>>,
}

struct SsidRead<'a> {
    owner: Cow<'a, str>,
    number: Option<u16>,
    version: Cow<'a, str>,
    name: Cow<'a, str>,
}

#[derive(Default)]
struct ProcessRead<'a> {
    name: Option<Cow<'a, str>>,
    cpu: Option<u16>,
    pin: Option<u16>,
}

/// `slot` set from `value`, refused if the key came before (as serde
/// refuses a duplicate field).
fn once<T>(
    scanner: &Scanner<'_>,
    slot: &mut Option<T>,
    key: &str,
    value: T,
) -> Result<(), ScanError> {
    if slot.is_some() {
        return scanner.fail(format!("duplicate field `{key}`"));
    }
    *slot = Some(value);
    Ok(())
}

fn read_line<'a>(scanner: &mut Scanner<'a>) -> Result<Read<'a>, ScanError> {
    let mut read = Read::default();
    scanner.object(|scanner, key| match key {
        "ssid" => {
            let ssid = read_ssid(scanner)?;
            once(scanner, &mut read.ssid, key, ssid)
        }
        "evt" => {
            let evt = scanner.unsigned(u32::MAX)?;
            once(scanner, &mut read.evt, key, evt)
        }
        "gentime" | "logtime" | "system" | "text" => {
            let value = scanner.string()?;
            let slot = match key {
                "gentime" => &mut read.gentime,
                "logtime" => &mut read.logtime,
                "system" => &mut read.system,
                _ => &mut read.text,
            };
            once(scanner, slot, key, value)
        }
        "proc" => {
            let process = read_process(scanner)?;
            once(scanner, &mut read.process, key, process)
        }
        "emphasis" | "action_needed" => {
            let value = scanner.bool()?;
            let slot = if key == "emphasis" {
                &mut read.emphasis
            } else {
                &mut read.action_needed
            };
            once(scanner, slot, key, value)
        }
        "subjects" => {
            let mut subjects = Vec::new();
            scanner.array(|scanner| {
                subjects.push(read_subject(scanner)?);
                Ok(())
            })?;
            once(scanner, &mut read.subjects, key, subjects)
        }
        _ => scanner.skip_value(),
    })?;
    Ok(read)
}

/// An optional `u16`: absent, `null` or an integer.
fn optional_u16(scanner: &mut Scanner<'_>) -> Result<Option<u16>, ScanError> {
    if scanner.null() {
        return Ok(None);
    }
    let value = scanner.unsigned(u16::MAX.into())?;
    Ok(u16::try_from(value).ok())
}

fn read_ssid<'a>(scanner: &mut Scanner<'a>) -> Result<SsidRead<'a>, ScanError> {
    let (mut owner, mut number, mut version, mut name) = (None, None, None, None);
    scanner.object(|scanner, key| match key {
        "owner" | "version" | "name" => {
            let value = scanner.string()?;
            let slot = match key {
                "owner" => &mut owner,
                "version" => &mut version,
                _ => &mut name,
            };
            once(scanner, slot, key, value)
        }
        "number" => {
            let value = optional_u16(scanner)?;
            once(scanner, &mut number, key, value)
        }
        _ => scanner.skip_value(),
    })?;
    let missing = |field: &str| scanner.fail(format!("missing field `ssid.{field}`"));
    Ok(SsidRead {
        owner: owner.map_or_else(|| missing("owner"), Ok)?,
        number: number.flatten(),
        version: version.map_or_else(|| missing("version"), Ok)?,
        name: name.map_or_else(|| missing("name"), Ok)?,
    })
}

fn read_process<'a>(scanner: &mut Scanner<'a>) -> Result<ProcessRead<'a>, ScanError> {
    let (mut name, mut cpu, mut pin) = (None, None, None);
    scanner.object(|scanner, key| match key {
        "name" => {
            let value = if scanner.null() {
                None
            } else {
                Some(scanner.string()?)
            };
            once(scanner, &mut name, key, value)
        }
        "cpu" | "pin" => {
            let value = optional_u16(scanner)?;
            let slot = if key == "cpu" { &mut cpu } else { &mut pin };
            once(scanner, slot, key, value)
        }
        _ => scanner.skip_value(),
    })?;
    Ok(ProcessRead {
        name: name.flatten(),
        cpu: cpu.flatten(),
        pin: pin.flatten(),
    })
}

fn read_subject<'a>(scanner: &mut Scanner<'a>) -> Result<SubjectRef<'a>, ScanError> {
    let (mut token, mut value) = (None, None);
    scanner.object(|scanner, key| match key {
        "token" | "value" => {
            let text = scanner.string()?;
            let slot = if key == "token" {
                &mut token
            } else {
                &mut value
            };
            once(scanner, slot, key, text)
        }
        _ => scanner.skip_value(),
    })?;
    let missing = |field: &str| scanner.fail(format!("missing field `subjects[].{field}`"));
    Ok(SubjectRef {
        token: token.map_or_else(|| missing("token"), Ok)?,
        value: value.map_or_else(|| missing("value"), Ok)?,
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
    let line = Line {
        ssid: &event.ssid,
        evt: event.event_number,
        gentime: iso_time(event.gentime),
        logtime: iso_time(event.logtime),
        system: &event.system,
        process: &event.process,
        emphasis: event.emphasis,
        action_needed: event.action_needed,
        subjects: &event.subjects,
        text: &event.text,
    };
    let mut out = serde_json::to_string(&line).unwrap_or_default();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests;
