//! Reading one message's text: RFC 5424, RFC 3164 (BSD) or a raw line.
//! Whatever does not parse is kept whole, with the reason, never dropped.

use crate::config::Format;
use safd_plugin_sdk::time::{civil_from_days, days_from_civil, parse_rfc3339};

/// What one message says.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    /// `rfc5424`, `rfc3164` or `raw`.
    pub(crate) format: &'static str,
    /// Microseconds since the epoch, when the message carries its time.
    pub(crate) time: Option<i64>,
    pub(crate) facility: Option<u8>,
    /// The syslog severity, 0 (emergency) to 7 (debug).
    pub(crate) severity: Option<u8>,
    pub(crate) hostname: Option<&'a str>,
    pub(crate) app: Option<&'a str>,
    pub(crate) procid: Option<&'a str>,
    pub(crate) msgid: Option<&'a str>,
    pub(crate) structured: Params,
    /// The message text (MSG), or the whole message when it did not parse.
    pub(crate) text: &'a str,
    /// Why the message did not parse as its format.
    pub(crate) problem: Option<String>,
}

/// Read `text` as `format`; `now` (µs) gives RFC 3164 times their year.
pub(crate) fn parse(text: &str, format: Format, now: i64) -> Message<'_> {
    let pri = priority(text);
    let format = match format {
        Format::Auto => match pri {
            Some((_, rest)) if rest.starts_with("1 ") => Format::Rfc5424,
            Some(_) => Format::Rfc3164,
            None => Format::Raw,
        },
        other => other,
    };
    let raw = |format: &'static str, problem: Option<String>| Message {
        format,
        text,
        problem,
        facility: pri.map(|(p, _)| p >> 3),
        severity: pri.map(|(p, _)| p & 7),
        ..Message::default()
    };
    match (format, pri) {
        // EMS text is read by `crate::ems`, never here.
        (Format::Raw | Format::Auto | Format::Ems, _) => raw("raw", None),
        (Format::Rfc5424, None) | (Format::Rfc3164, None) => {
            let name = if format == Format::Rfc5424 {
                "rfc5424"
            } else {
                "rfc3164"
            };
            raw(name, Some("no <PRI> at the start".to_owned()))
        }
        (Format::Rfc5424, Some((pri, rest))) => {
            rfc5424(pri, rest).unwrap_or_else(|why| raw("rfc5424", Some(why)))
        }
        (Format::Rfc3164, Some((pri, rest))) => rfc3164(pri, rest, now),
    }
}

/// `<PRI>` (0 to 191) and what follows it.
fn priority(text: &str) -> Option<(u8, &str)> {
    let rest = text.strip_prefix('<')?;
    let end = rest.find('>')?;
    let digits = &rest[..end];
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pri: u8 = digits.parse().ok().filter(|p| *p <= 191)?;
    Some((pri, &rest[end + 1..]))
}

/// The next space-separated field, and the rest after its space.
fn field(text: &str) -> Result<(&str, &str), String> {
    match text.split_once(' ') {
        Some((field, rest)) if !field.is_empty() => Ok((field, rest)),
        _ => Err("a header field is missing".to_owned()),
    }
}

fn nil(value: &str) -> Option<&str> {
    (value != "-").then_some(value)
}

fn rfc5424(pri: u8, rest: &str) -> Result<Message<'_>, String> {
    let rest = rest.strip_prefix("1 ").ok_or("not version 1 after <PRI>")?;
    let (timestamp, rest) = field(rest)?;
    let time = match timestamp {
        "-" => None,
        t => Some(parse_rfc3339(t).ok_or_else(|| format!("bad TIMESTAMP `{t}`"))?),
    };
    let (hostname, rest) = field(rest)?;
    let (app, rest) = field(rest)?;
    let (procid, rest) = field(rest)?;
    // MSGID may end the message when SD is `-` and there is no MSG.
    let (msgid, rest) = field(rest)?;
    let (structured, rest) = structured_data(rest)?;
    let text = match rest {
        "" => "",
        r => r
            .strip_prefix(' ')
            .ok_or("no space after STRUCTURED-DATA")?,
    };
    Ok(Message {
        format: "rfc5424",
        time,
        facility: Some(pri >> 3),
        severity: Some(pri & 7),
        hostname: nil(hostname),
        app: nil(app),
        procid: nil(procid),
        msgid: nil(msgid),
        structured,
        text: text.strip_prefix('\u{feff}').unwrap_or(text),
        problem: None,
    })
}

/// Structured-data parameters, (`SD-ID.PARAM-NAME`, value).
type Params = Vec<(String, String)>;

/// `-` or `[ID PARAM="VALUE" …]…`; the parameters and what follows.
fn structured_data(text: &str) -> Result<(Params, &str), String> {
    if let Some(rest) = text.strip_prefix('-') {
        return Ok((Vec::new(), rest));
    }
    let mut params = Vec::new();
    let mut rest = text;
    if !rest.starts_with('[') {
        return Err("STRUCTURED-DATA is neither `-` nor `[…]`".to_owned());
    }
    while let Some(element) = rest.strip_prefix('[') {
        let id_end = element
            .find([' ', ']'])
            .ok_or("an SD-ELEMENT is not closed")?;
        let id = &element[..id_end];
        if id.is_empty() {
            return Err("an SD-ELEMENT has no SD-ID".to_owned());
        }
        let mut inside = &element[id_end..];
        loop {
            if let Some(after) = inside.strip_prefix(']') {
                rest = after;
                break;
            }
            let param = inside.strip_prefix(' ').ok_or("a malformed SD-PARAM")?;
            let (name, value) = param
                .split_once("=\"")
                .ok_or("an SD-PARAM without =\"…\"")?;
            let (value, after) = quoted(value)?;
            params.push((format!("{id}.{name}"), value));
            inside = after;
        }
    }
    Ok((params, rest))
}

/// An SD-PARAM value up to its closing quote, with `\"`, `\\` and `\]`
/// unescaped; and what follows the quote.
fn quoted(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\' | ']'))) => value.push(e),
                Some((_, other)) => {
                    value.push('\\');
                    value.push(other);
                }
                None => break,
            },
            c => value.push(c),
        }
    }
    Err("an SD-PARAM value is not closed".to_owned())
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Mmm dd hh:mm:ss HOSTNAME TAG[pid]: MSG`, read leniently: a message
/// without a readable timestamp keeps its text and says so.
fn rfc3164(pri: u8, rest: &str, now: i64) -> Message<'_> {
    let mut message = Message {
        format: "rfc3164",
        facility: Some(pri >> 3),
        severity: Some(pri & 7),
        text: rest,
        ..Message::default()
    };
    let Some((time, rest)) = bsd_time(rest, now) else {
        message.problem = Some("no `Mmm dd hh:mm:ss` timestamp after <PRI>".to_owned());
        return message;
    };
    message.time = Some(time);
    let Ok((hostname, rest)) = field(rest) else {
        message.text = rest;
        return message;
    };
    message.hostname = Some(hostname);
    // TAG: up to `[` or `:`, when it ends that way; else all is text.
    let tag_end = rest.find(['[', ':', ' ']).unwrap_or(rest.len());
    let tag = &rest[..tag_end];
    let after_tag = &rest[tag_end..];
    let (procid, after) = match after_tag.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((pid, after)) => (Some(pid), after),
        None => (None, after_tag),
    };
    match after.strip_prefix(':') {
        Some(text) if !tag.is_empty() => {
            message.app = Some(tag);
            message.procid = procid;
            message.text = text.strip_prefix(' ').unwrap_or(text);
        }
        _ => message.text = rest,
    }
    message
}

/// `Mmm dd hh:mm:ss ` (day space-padded): the time in the year that puts it
/// nearest `now` (UTC), and the rest.
fn bsd_time(text: &str, now: i64) -> Option<(i64, &str)> {
    let stamp = text.get(..15)?;
    let rest = text.get(15..)?.strip_prefix(' ')?;
    let month = MONTHS.iter().position(|m| *m == &stamp[..3])? as u32 + 1;
    let day: u32 = stamp[4..6].trim_start().parse().ok()?;
    let (h, m, s) = (&stamp[7..9], &stamp[10..12], &stamp[13..15]);
    if stamp.as_bytes()[3] != b' ' || &stamp[9..10] != ":" || &stamp[12..13] != ":" {
        return None;
    }
    let (h, m, s): (i64, i64, i64) = (h.parse().ok()?, m.parse().ok()?, s.parse().ok()?);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let (year, _, _) = civil_from_days(now.div_euclid(86_400_000_000));
    let at = |year: i64| {
        (days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s) * 1_000_000
    };
    // A December message read in January is last year's.
    let time = [year - 1, year, year + 1]
        .into_iter()
        .map(at)
        .min_by_key(|t| (t - now).abs())?;
    Some((time, rest))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const NOW: i64 = 1_710_119_830_000_000; // 2024-03-11T01:17:10Z

    #[test]
    fn an_rfc5424_message_with_structured_data() {
        let text = r#"<165>1 2024-03-11T01:17:10.002311Z prod1 ems 42 ZZEV [safd@32473 id="a\"b" subsystem="TMF\]"][x y="1"] LDEV 123: LINE NOT READY"#;
        let m = parse(text, Format::Auto, NOW);
        assert_eq!(m.problem, None);
        assert_eq!(m.format, "rfc5424");
        assert_eq!((m.facility, m.severity), (Some(20), Some(5)));
        assert_eq!(m.time, Some(1_710_119_830_002_311));
        assert_eq!(
            (m.hostname, m.app, m.procid, m.msgid),
            (Some("prod1"), Some("ems"), Some("42"), Some("ZZEV"))
        );
        assert_eq!(
            m.structured,
            [
                ("safd@32473.id".to_owned(), "a\"b".to_owned()),
                ("safd@32473.subsystem".to_owned(), "TMF]".to_owned()),
                ("x.y".to_owned(), "1".to_owned())
            ]
        );
        assert_eq!(m.text, "LDEV 123: LINE NOT READY");
        let bare = parse("<14>1 - - - - - -", Format::Auto, NOW);
        assert_eq!((bare.problem, bare.text, bare.time), (None, "", None));
    }

    #[test]
    fn an_rfc3164_message_gets_the_year_nearest_now() {
        let m = parse(
            "<34>Mar 11 01:17:09 prod1 su[123]: 'su root' failed",
            Format::Auto,
            NOW,
        );
        assert_eq!(m.problem, None);
        assert_eq!(m.format, "rfc3164");
        assert_eq!(m.time, Some(NOW - 1_000_000));
        assert_eq!(
            (m.hostname, m.app, m.procid),
            (Some("prod1"), Some("su"), Some("123"))
        );
        assert_eq!(m.text, "'su root' failed");
        let new_year = 1_704_067_200_000_000; // 2024-01-01T00:00:00Z
        let december = parse("<13>Dec 31 23:59:59 h app: x", Format::Auto, new_year);
        assert_eq!(december.time, Some(new_year - 1_000_000));
        let padded = parse("<13>Mar  1 00:00:00 h app: x", Format::Auto, NOW);
        assert!(padded.time.is_some(), "{padded:?}");
    }

    #[test]
    fn what_does_not_parse_is_kept_whole_with_the_reason() {
        let m = parse("<13>1 yesterday h a - - - text", Format::Auto, NOW);
        assert_eq!(m.format, "rfc5424");
        assert!(m.problem.unwrap().contains("TIMESTAMP"));
        assert_eq!(m.text, "<13>1 yesterday h a - - - text");
        let m = parse("<13>not a bsd time", Format::Auto, NOW);
        assert!(m.problem.unwrap().contains("timestamp"));
        let m = parse("plain words", Format::Rfc5424, NOW);
        assert!(m.problem.unwrap().contains("<PRI>"));
        let m = parse("<999>too high", Format::Auto, NOW);
        assert_eq!((m.format, m.problem), ("raw", None));
        for bad in [
            "<1>1 - - - - - [x",
            "<1>1 - - - - - [x a=\"b]",
            "<1>1 - - - - - [x a]",
        ] {
            assert!(parse(bad, Format::Auto, NOW).problem.is_some(), "{bad}");
        }
    }
}
