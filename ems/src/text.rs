//! Format A: the printing distributor's text.
//!
//! ```text
//! <yy-mm-dd> <hh:mm:ss> \<SYSTEM>.<$PROCESS|cpu,pin> [*] <OWNER>.<SUBSYSTEM>.<VERSION> <NNNNNN> <text>
//!     continuation lines, indented
//! ```
//!
//! Times are the node's local time; `*` marks emphasis (a critical event).
//! BEL characters (which some subsystems put in their text to ring the
//! operator's terminal) are removed.

use crate::{EmsEvent, ParseError, Process, Ssid, Zone};
use std::borrow::Cow;

const BEL: char = '\u{7}';

/// Parse one record (its header line and any continuation lines, without
/// the final newline).
pub fn parse(record: &str, zone: &Zone) -> Result<EmsEvent, ParseError> {
    TextParser::new(zone.clone())
        .parse(record)
        .map(|event| event.to_event())
}

/// A format A record's fields, borrowed from the record's text (the text
/// itself too, unless continuation lines or BEL characters had to be
/// joined or removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextEvent<'a> {
    /// The printed local time, in microseconds since the Unix epoch (UTC).
    pub gentime: i64,
    /// The node, e.g. `\PROD1`.
    pub system: &'a str,
    pub process: ProcessRef<'a>,
    pub owner: &'a str,
    /// The subsystem name as printed, e.g. `EXPAND`.
    pub subsystem: &'a str,
    pub version: &'a str,
    pub event_number: u32,
    pub emphasis: bool,
    pub text: Cow<'a, str>,
}

/// The originating process as format A prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessRef<'a> {
    Name(&'a str),
    CpuPin { cpu: u16, pin: u16 },
}

impl TextEvent<'_> {
    /// The owned form every format shares.
    pub fn to_event(&self) -> EmsEvent {
        let process = match self.process {
            ProcessRef::Name(name) => Process {
                name: Some(name.to_owned()),
                cpu: None,
                pin: None,
            },
            ProcessRef::CpuPin { cpu, pin } => Process {
                name: None,
                cpu: Some(cpu),
                pin: Some(pin),
            },
        };
        EmsEvent {
            ssid: Ssid {
                owner: self.owner.to_owned(),
                number: None,
                version: self.version.to_owned(),
                name: self.subsystem.to_owned(),
            },
            event_number: self.event_number,
            gentime: self.gentime,
            logtime: self.gentime,
            system: self.system.to_owned(),
            process,
            emphasis: self.emphasis,
            action_needed: false,
            subjects: Vec::new(),
            text: self.text.clone().into_owned(),
        }
    }
}

/// Parses format A records in one time zone. A reader keeps one: it
/// remembers the last minute it placed in the zone, because consecutive
/// events nearly always share it and the zone lookup costs more than the
/// rest of the parse.
#[derive(Clone, Debug)]
pub struct TextParser {
    zone: Zone,
    /// (year, month, day, hour, minute) → that minute's first second in
    /// microseconds since the Unix epoch.
    minute: Option<([i32; 5], i64)>,
}

impl TextParser {
    pub fn new(zone: Zone) -> Self {
        Self { zone, minute: None }
    }

    /// Parse one record (its header line and any continuation lines,
    /// without the final newline).
    pub fn parse<'a>(&mut self, record: &'a str) -> Result<TextEvent<'a>, ParseError> {
        let record = without_cr(record);
        // One pass finds out whether the common case holds: a single line
        // without BEL characters, whose text is then borrowed.
        let plain = memchr::memchr2(b'\n', BEL as u8, record.as_bytes()).is_none();
        let (header, continuation) = if plain {
            (record, "")
        } else {
            record.split_once('\n').unwrap_or((record, ""))
        };
        let mut rest = header;
        let date = next_token(&mut rest).ok_or_else(|| fail("the line is empty"))?;
        let time = next_token(&mut rest).ok_or_else(|| fail("no time after the date"))?;
        let gentime = self.place(date, time)?;
        let origin = next_token(&mut rest).ok_or_else(|| fail("no \\SYSTEM.PROCESS"))?;
        let (system, process) = parse_origin(origin)?;
        let mut ssid_token = next_token(&mut rest).ok_or_else(|| fail("no subsystem id"))?;
        let emphasis = ssid_token == "*";
        if emphasis {
            ssid_token = next_token(&mut rest).ok_or_else(|| fail("no subsystem id after `*`"))?;
        }
        let (owner, subsystem, version) = parse_ssid(ssid_token)?;
        let number = next_token(&mut rest).ok_or_else(|| fail("no event number"))?;
        let event_number: u32 = number
            .parse()
            .map_err(|_| fail(format!("event number `{number}` is not a number")))?;
        let first = rest.trim_start();
        let text = if plain {
            Cow::Borrowed(first.trim_end())
        } else {
            let mut text = String::with_capacity(record.len() - (header.len() - rest.len()));
            push_without_bel(&mut text, first);
            for line in continuation.split('\n') {
                let line = without_cr(line);
                if line.trim().is_empty() {
                    continue;
                }
                text.push('\n');
                push_without_bel(&mut text, line.trim_start());
            }
            Cow::Owned(text.trim_end().to_owned())
        };
        Ok(TextEvent {
            gentime,
            system,
            process,
            owner,
            subsystem,
            version,
            event_number,
            emphasis,
            text,
        })
    }

    /// The printed local `date` `time` in microseconds since the Unix
    /// epoch. Zone offsets change only on whole minutes (every transition
    /// since 1970 is on a minute), so the minute is placed once and the
    /// seconds added.
    fn place(&mut self, date: &str, time: &str) -> Result<i64, ParseError> {
        let [yy, month, day] = numbers(date, '-', "date")?;
        let [hour, minute, second] = numbers(time, ':', "time")?;
        // Two-digit years: the EMS logs this reader meets are from 1970 on.
        let year = if yy < 70 { 2000 + yy } else { 1900 + yy };
        let key = [year, month, day, hour, minute];
        if !(0..60).contains(&second) {
            return Err(fail(format!("`{date} {time}` is not a valid time")));
        }
        let start = match self.minute {
            Some((cached, start)) if cached == key => start,
            _ => {
                let narrow = |v: i32| {
                    i8::try_from(v)
                        .map_err(|_| fail(format!("`{date} {time}` is not a valid time")))
                };
                let civil = jiff::civil::DateTime::new(
                    i16::try_from(year).map_err(|_| fail("year out of range"))?,
                    narrow(month)?,
                    narrow(day)?,
                    narrow(hour)?,
                    narrow(minute)?,
                    0,
                    0,
                )
                .map_err(|e| fail(format!("`{date} {time}` is not a valid time: {e}")))?;
                let start = self
                    .zone
                    .to_micros(civil)
                    .ok_or_else(|| fail("the time cannot be placed in the configured zone"))?;
                self.minute = Some((key, start));
                start
            }
        };
        Ok(start + i64::from(second) * 1_000_000)
    }
}

/// Render `event` as format A, in `zone`, with continuation lines for a
/// text that spans lines. Ends with a newline.
pub fn render(event: &EmsEvent, zone: &Zone) -> String {
    let civil = zone
        .to_civil(event.gentime)
        .unwrap_or(jiff::civil::DateTime::ZERO);
    let origin = format!("{}.{}", event.system, event.process);
    let ssid = format!(
        "{}.{}.{}",
        event.ssid.owner, event.ssid.name, event.ssid.version
    );
    let mut lines = event.text.split('\n');
    let first = lines.next().unwrap_or_default();
    let mut out = format!(
        "{:02}-{:02}-{:02} {:02}:{:02}:{:02} {origin:<15} {} {ssid:<19} {:06} {first}\n",
        civil.year().rem_euclid(100),
        civil.month(),
        civil.day(),
        civil.hour(),
        civil.minute(),
        civil.second(),
        if event.emphasis { '*' } else { ' ' },
        event.event_number,
    );
    for line in lines {
        out.push_str("    ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A header line starts with a digit (the date); continuation lines with
/// whitespace.
pub fn is_continuation(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

/// Append `text` without its BEL characters (most texts have none: copy
/// them whole).
fn push_without_bel(out: &mut String, text: &str) {
    if text.contains(BEL) {
        out.extend(text.chars().filter(|c| *c != BEL));
    } else {
        out.push_str(text);
    }
}

fn next_token<'a>(rest: &mut &'a str) -> Option<&'a str> {
    // Byte search: both separators are ASCII, so every split is on a char
    // boundary.
    let bytes = rest.as_bytes();
    let start = bytes.iter().position(|b| !is_separator(*b))?;
    let end = bytes[start..]
        .iter()
        .position(|b| is_separator(*b))
        .map_or(bytes.len(), |n| start + n);
    let token = &rest[start..end];
    *rest = &rest[end..];
    Some(token)
}

/// Split at the first `separator` (ASCII, so the split is on a char
/// boundary); tokens are short, a byte loop beats a searcher here.
fn split_at_byte(text: &str, separator: u8) -> Option<(&str, &str)> {
    let at = text.bytes().position(|b| b == separator)?;
    Some((&text[..at], &text[at + 1..]))
}

fn without_cr(line: &str) -> &str {
    match line.as_bytes().last() {
        // ASCII: the cut is on a char boundary.
        Some(b'\r') => &line[..line.len() - 1],
        _ => line,
    }
}

fn is_separator(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

fn fail(reason: impl Into<String>) -> ParseError {
    ParseError(reason.into())
}

/// `a<separator>b<separator>c`, three decimal numbers.
fn numbers(text: &str, separator: char, what: &str) -> Result<[i32; 3], ParseError> {
    // The printed form is always two digits each: read those directly.
    if let [a1, a2, s1, b1, b2, s2, c1, c2] = *text.as_bytes()
        && s1 == separator as u8
        && s2 == separator as u8
        && [a1, a2, b1, b2, c1, c2].iter().all(u8::is_ascii_digit)
    {
        let two = |high: u8, low: u8| i32::from(high - b'0') * 10 + i32::from(low - b'0');
        return Ok([two(a1, a2), two(b1, b2), two(c1, c2)]);
    }
    let mut parts = text.split(separator).map(|p| p.parse::<i32>().ok());
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Some(a)), Some(Some(b)), Some(Some(c)), None) => Ok([a, b, c]),
        _ => Err(fail(format!("`{text}` is not a {what}"))),
    }
}

fn parse_origin(origin: &str) -> Result<(&str, ProcessRef<'_>), ParseError> {
    if !origin.starts_with('\\') {
        return Err(fail(format!("`{origin}` is not \\SYSTEM.PROCESS")));
    }
    let (system, process) =
        split_at_byte(origin, b'.').ok_or_else(|| fail(format!("`{origin}` has no `.PROCESS`")))?;
    if system.len() < 2 || process.is_empty() {
        return Err(fail(format!("`{origin}` is not \\SYSTEM.PROCESS")));
    }
    let process = match split_at_byte(process, b',') {
        Some((cpu, pin)) => match (cpu.parse(), pin.parse()) {
            (Ok(cpu), Ok(pin)) => ProcessRef::CpuPin { cpu, pin },
            _ => return Err(fail(format!("`{process}` is not cpu,pin"))),
        },
        None => ProcessRef::Name(process),
    };
    Ok((system, process))
}

/// (owner, subsystem name, version).
fn parse_ssid(token: &str) -> Result<(&str, &str, &str), ParseError> {
    let parts = split_at_byte(token, b'.')
        .and_then(|(owner, rest)| split_at_byte(rest, b'.').map(|(name, v)| (owner, name, v)));
    match parts {
        Some((owner, name, version))
            if !owner.is_empty() && !name.is_empty() && !version.is_empty() =>
        {
            Ok((owner, name, version))
        }
        _ => Err(fail(format!(
            "`{token}` is not a subsystem id OWNER.SUBSYSTEM.VERSION"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r"24-03-11 02:14:07 \PROD1.$0        TANDEM.EMS.H01      000513 EMS: PRIMARY COLLECTOR $0, DISK EVENT LOGGING STARTED
24-03-11 02:15:30 \PROD1.$TMP    * TANDEM.TMF.H01      000121 TMF is started.
24-03-11 02:16:02 \PROD1.$PM01     TANDEM.PATHWAY.H01  001049 *1049* TERM TERM-0012, SUSPENDED : *3071* TERM TERM-0012, ERROR 201
24-03-11 02:16:45 \PROD1.$PM01   * TANDEM.PATHWAY.H01  001006 *1006* PATHMON, ABENDED
24-03-11 02:17:10 \PROD1.$LHNY1  * TANDEM.EXPAND.H01   000045 LDEV 123 $LHNY1: LINE NOT READY, ERROR 140
24-03-11 02:19:55 \PROD1.$LHNY1    TANDEM.EXPAND.H01   000044 LDEV 123 $LHNY1: LINE READY
24-03-11 02:20:31 \PROD1.$DATA01   TANDEM.DSK.H01      005015 LDEV 47 PATH: P DOWN
24-03-11 02:21:09 \PROD1.$ZSMP     TANDEM.SAFEGARD.H01 000042 $ZSMP: Audit file $AUDIT.SAFE.A0000123 has been closed; audits are now directed to $AUDIT.SAFE.A0000124.
24-03-11 02:23:48 \PROD1.$TMP    * TANDEM.TMF.H01      000187 The MAT Audit Trail is critically full. The TM/MP subsystem will shortly quit responding to most requests until the problem is corrected.
24-03-11 02:24:00 \PROD1.2,117     TANDEM.EMS.H01      000512 ORDERSVR: queue depth 9500 exceeds threshold 9000";

    fn micros(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>().unwrap().as_microsecond()
    }

    #[test]
    fn every_sample_line_of_ems_md_parses() {
        let zone = Zone::parse("Europe/Berlin").unwrap();
        let events: Vec<EmsEvent> = SAMPLE.lines().map(|l| parse(l, &zone).unwrap()).collect();
        assert_eq!(events.len(), 10);
        let first = &events[0];
        assert_eq!(first.system, "\\PROD1");
        assert_eq!(first.process.name.as_deref(), Some("$0"));
        assert_eq!(first.ssid.owner, "TANDEM");
        assert_eq!(first.ssid.name, "EMS");
        assert_eq!(first.ssid.version, "H01");
        assert_eq!(first.event_number, 513);
        assert!(!first.emphasis);
        assert_eq!(
            first.text,
            "EMS: PRIMARY COLLECTOR $0, DISK EVENT LOGGING STARTED"
        );
        // 02:14:07 in Berlin (CET, +01:00) is 01:14:07 UTC.
        assert_eq!(first.gentime, micros("2024-03-11T01:14:07Z"));
        assert_eq!(first.logtime, first.gentime);
        assert!(events[1].emphasis);
        assert_eq!(events[1].ssid.name, "TMF");
        assert_eq!(
            events[2].text.matches('*').count(),
            4,
            "text keeps its asterisks"
        );
        assert_eq!(events[6].event_number, 5015);
        // cpu,pin process names.
        let cpu_pin = &events[9];
        assert_eq!(cpu_pin.process.name, None);
        assert_eq!(
            (cpu_pin.process.cpu, cpu_pin.process.pin),
            (Some(2), Some(117))
        );
        assert_eq!(cpu_pin.process.to_string(), "2,117");
    }

    #[test]
    fn continuation_lines_bel_and_unusual_numbers() {
        let zone = Zone::utc();
        let record = "24-03-11 02:23:48 \\PROD1.$TMP    * TANDEM.TMF.H01      4294967295 First \u{7}line\n    second line\n\tthird\u{7} line";
        let event = parse(record, &zone).unwrap();
        assert_eq!(event.event_number, u32::MAX);
        assert_eq!(event.text, "First line\nsecond line\nthird line");
        let zero = parse("24-03-11 02:23:48 \\PROD1.$X TANDEM.TMF.H01 0 x", &zone).unwrap();
        assert_eq!(zero.event_number, 0);
        // An empty text is allowed.
        let empty = parse("24-03-11 02:23:48 \\PROD1.$X TANDEM.TMF.H01 000001", &zone).unwrap();
        assert_eq!(empty.text, "");
    }

    #[test]
    fn one_parser_places_times_like_the_zone_does_across_dst_changes() {
        // A parser reuses the minute it placed last; times on both sides of
        // Berlin's spring gap (02:00 → 03:00) and autumn fold (03:00 →
        // 02:00), in the same minute and across minutes, must come out as
        // the zone places each one on its own.
        let zone = Zone::parse("Europe/Berlin").unwrap();
        let mut parser = TextParser::new(zone.clone());
        let times = [
            "24-03-31 01:59:00",
            "24-03-31 01:59:59",
            "24-03-31 02:30:10",
            "24-03-31 02:30:11",
            "24-03-31 03:00:00",
            "24-10-27 01:59:59",
            "24-10-27 02:00:00",
            "24-10-27 02:59:59",
            "24-10-27 03:00:00",
            "24-12-31 23:59:59",
            "25-01-01 00:00:00",
        ];
        for time in times {
            let record = format!("{time} \\PROD1.$X TANDEM.TMF.H01 1 x");
            let (date, clock) = time.split_once(' ').unwrap();
            let civil: jiff::civil::DateTime = format!("20{date}T{clock}").parse().unwrap();
            let expected = zone.to_micros(civil).unwrap();
            assert_eq!(parser.parse(&record).unwrap().gentime, expected, "{time}");
        }
        let err = parser
            .parse("24-12-31 23:59:60 \\PROD1.$X TANDEM.TMF.H01 1 x")
            .unwrap_err();
        assert!(err.0.contains("not a valid time"), "{err}");
    }

    #[test]
    fn a_single_line_text_is_borrowed() {
        let mut parser = TextParser::new(Zone::utc());
        let event = parser
            .parse("24-03-11 02:23:48 \\PROD1.2,117 * TANDEM.TMF.H01 7 text  ")
            .unwrap();
        assert!(matches!(event.text, Cow::Borrowed("text")));
        assert_eq!(event.process, ProcessRef::CpuPin { cpu: 2, pin: 117 });
        assert!(event.emphasis);
        assert_eq!(
            (event.owner, event.subsystem, event.version),
            ("TANDEM", "TMF", "H01")
        );
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let zone = Zone::utc();
        let cases = [
            ("", "empty"),
            ("hello world", "not a date"),
            ("24-13-11 02:23:48 \\P.$X T.E.H 1 x", "not a valid time"),
            ("24-03-11 02:23:48 PROD1.$X T.E.H 1 x", "SYSTEM.PROCESS"),
            ("24-03-11 02:23:48 \\PROD1.$X TANDEM 1 x", "subsystem id"),
            ("24-03-11 02:23:48 \\PROD1.$X T.E.H 12a x", "not a number"),
            ("24-03-11 02:23:48 \\PROD1.x,y T.E.H 1 x", "cpu,pin"),
        ];
        for (line, expected) in cases {
            let err = parse(line, &zone).unwrap_err();
            assert!(err.0.contains(expected), "{line:?}: {err}");
        }
    }

    #[test]
    fn render_parses_back() {
        let zone = Zone::parse("America/New_York").unwrap();
        for line in SAMPLE.lines() {
            let event = parse(line, &zone).unwrap();
            let rendered = render(&event, &zone);
            assert!(rendered.ends_with('\n'));
            let again = parse(rendered.trim_end_matches('\n'), &zone).unwrap();
            assert_eq!(again, event);
        }
        let mut multi = parse(SAMPLE.lines().next().unwrap(), &zone).unwrap();
        multi.text = "one\ntwo".into();
        let rendered = render(&multi, &zone);
        assert_eq!(rendered.lines().count(), 2);
        assert!(is_continuation(rendered.lines().nth(1).unwrap().as_bytes()));
        assert_eq!(parse(rendered.trim_end(), &zone).unwrap(), multi);
    }
}
