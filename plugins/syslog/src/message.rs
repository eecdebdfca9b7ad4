//! One event as an RFC 5424 syslog message.
//!
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID id=… stream=…
//! seq=… key=value…] BODY`: the event's identity and every attribute go
//! into one structured-data element, so a SIEM can deduplicate on `id` and
//! filter on `subsystem` or `event_number` without parsing the text.

use crate::config::Config;
use safd_plugin_sdk::events::EventRef;

/// What every message of a session shares.
pub(crate) struct Header<'a> {
    pub(crate) config: &'a Config,
    /// HOSTNAME when neither the config nor the event names one.
    pub(crate) agent_id: &'a str,
    /// Newline framing: line breaks in the body and in structured-data
    /// values become `#012` / `#015` (rsyslog's own escapes), since a line
    /// break ends the frame: a file name or attribute holding one would
    /// otherwise start a forged message. (Header fields never hold one:
    /// they are printable ASCII only.)
    pub(crate) escape_line_breaks: bool,
}

/// safd severity (debug … critical) → syslog severity (7 debug … 1 alert).
fn syslog_severity(severity: u8) -> u8 {
    match severity {
        0 => 7,
        1 => 6,
        2 => 4,
        3 => 3,
        4 => 2,
        _ => 1,
    }
}

/// Append the message for `(stream, seq, event)` to `out` (without framing).
///
/// `text` is a buffer reused from message to message (its content does
/// not matter): formatting allocates nothing per event.
pub(crate) fn write(
    out: &mut Vec<u8>,
    text: &mut String,
    header: &Header<'_>,
    stream: &str,
    seq: u64,
    event: &EventRef<'_>,
) {
    let config = header.config;
    let start = out.len();
    text.clear();
    let pri = u16::from(config.facility) * 8 + u16::from(syslog_severity(event.severity));
    text.push('<');
    text.push_str(itoa::Buffer::new().format(pri));
    text.push_str(">1 ");
    safd_plugin_sdk::time::rfc3339(text, event.time);
    text.push(' ');
    let attribute = |key: &str| {
        event
            .attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    };
    let hostname = config
        .hostname
        .as_deref()
        .or_else(|| attribute("system"))
        .unwrap_or(header.agent_id);
    field(text, hostname, 255);
    text.push(' ');
    field(text, &config.app_name, 48);
    text.push(' ');
    field(text, attribute("process").unwrap_or("-"), 128);
    text.push(' ');
    match (attribute("subsystem"), attribute("event_number")) {
        (Some(subsystem), Some(number)) => {
            let before = text.len();
            field(text, subsystem, 32);
            text.push('-');
            field(text, number, 32);
            // Fields write ASCII only: any cut is at a character boundary.
            text.truncate(before + 32.min(text.len() - before));
        }
        _ => text.push('-'),
    }
    text.push_str(" [");
    text.push_str(&config.sd_id);
    let escape = header.escape_line_breaks;
    param(text, "id", event.id, escape);
    param(text, "stream", stream, escape);
    text.push_str(" seq=\"");
    text.push_str(itoa::Buffer::new().format(seq));
    text.push('"');
    for (key, value) in event.attributes.iter() {
        param(text, key, value, escape);
    }
    let body = body_text(event.body, header.escape_line_breaks);
    let room = config
        .max_message_bytes
        .saturating_sub(text.len() + 2 + "truncated=\"\" ".len() + 20);
    if body.len() + text.len() + 2 > config.max_message_bytes {
        // Cut the text, never the structured data: the identity and the
        // attributes are what a receiver matches on.
        let mut cut = room.min(body.len());
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        text.push_str(" truncated=\"");
        text.push_str(itoa::Buffer::new().format(event.body.len()));
        text.push('"');
        text.push_str("] ");
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(&body.as_bytes()[..cut]);
    } else {
        text.push_str("] ");
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(body.as_bytes());
    }
    debug_assert!(out.len() > start);
}

fn body_text(body: &str, escape_line_breaks: bool) -> std::borrow::Cow<'_, str> {
    if escape_line_breaks && memchr::memchr2(b'\n', b'\r', body.as_bytes()).is_some() {
        std::borrow::Cow::Owned(body.replace('\n', "#012").replace('\r', "#015"))
    } else {
        std::borrow::Cow::Borrowed(body)
    }
}

/// A header field: printable ASCII without spaces, `-` when empty.
fn field(out: &mut String, value: &str, max: usize) {
    // Nearly every value is already printable ASCII: copy it whole.
    if !value.is_empty() && value.len() <= max && value.bytes().all(|b| b.is_ascii_graphic()) {
        out.push_str(value);
        return;
    }
    let before = out.len();
    for c in value.chars().take(max) {
        out.push(if matches!(c, '!'..='~') { c } else { '_' });
    }
    if out.len() == before {
        out.push('-');
    }
}

/// ` name="value"` with the name cut to SD-NAME's alphabet and the value
/// escaped (`"`, `\` and `]` take a backslash; with `escape_line_breaks`,
/// LF and CR become `#012` and `#015`).
fn param(out: &mut String, name: &str, value: &str, escape_line_breaks: bool) {
    out.push(' ');
    // Fast paths for the usual case, a name of SD-NAME's alphabet and a
    // value with nothing to escape: copied whole.
    if !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'=' | b']' | b'"'))
        && memchr::memchr3(b'"', b'\\', b']', value.as_bytes()).is_none()
        && !(escape_line_breaks && memchr::memchr2(b'\n', b'\r', value.as_bytes()).is_some())
    {
        out.push_str(name);
        out.push_str("=\"");
        out.push_str(value);
        out.push('"');
        return;
    }
    let before = out.len();
    for c in name.chars().take(32) {
        out.push(if matches!(c, '!'..='~') && !matches!(c, '=' | ']' | '"') {
            c
        } else {
            '_'
        });
    }
    if out.len() == before {
        out.push('_');
    }
    out.push_str("=\"");
    // Runs between the characters to escape are copied whole: EMS values
    // hold a `\` in every event (`\SYSTEM.$PROCESS`), and a push per
    // character made this function 12 % of safd's CPU in `bench-net-in`.
    // Every character escaped is ASCII, so the cuts fall on char bounds.
    let mut run_start = 0;
    for (at, byte) in value.bytes().enumerate() {
        let escaped = match byte {
            b'\n' if escape_line_breaks => "#012",
            b'\r' if escape_line_breaks => "#015",
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b']' => "\\]",
            _ => continue,
        };
        out.push_str(&value[run_start..at]);
        out.push_str(escaped);
        run_start = at + 1;
    }
    out.push_str(&value[run_start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The message of one event, as the plugin writes it.
    fn message(
        config: &str,
        escape_line_breaks: bool,
        attributes: &[(&str, &str)],
        body: &str,
    ) -> String {
        let config = crate::config::parse(config).unwrap();
        let mut block = safd_event_block::BlockWriter::new();
        block.push_sequenced(
            42,
            "\\PROD1:$0:ZZEV0001:42",
            1_710_119_830_002_311,
            5,
            attributes.iter().copied(),
            body,
        );
        let (count, bytes) = block.finish();
        let (seq, event) = safd_event_block::sequenced(&bytes, count)
            .next()
            .unwrap()
            .unwrap();
        let header = Header {
            config: &config,
            agent_id: "prod1-safd",
            escape_line_breaks,
        };
        let mut out = Vec::new();
        write(&mut out, &mut String::new(), &header, "ems", seq, &event);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn an_ems_event_is_an_rfc_5424_message_with_its_identity_in_structured_data() {
        let text = message(
            "{}",
            false,
            &[
                ("system", "\\PROD1"),
                ("process", "$LHNY1"),
                ("subsystem", "EXPAND"),
                ("event_number", "45"),
            ],
            "LDEV 123 $LHNY1: LINE NOT READY",
        );
        // local0 (16) * 8 + critical → alert (1).
        assert_eq!(
            text,
            "<129>1 2024-03-11T01:17:10.002311Z \\PROD1 safd $LHNY1 EXPAND-45 \
             [safd@32473 id=\"\\\\PROD1:$0:ZZEV0001:42\" stream=\"ems\" seq=\"42\" \
             system=\"\\\\PROD1\" process=\"$LHNY1\" subsystem=\"EXPAND\" event_number=\"45\"] \
             LDEV 123 $LHNY1: LINE NOT READY"
        );
    }

    #[test]
    fn values_are_escaped_and_line_breaks_cannot_forge_a_message() {
        let attributes = [("file", "a]b\"c\\d\ne"), ("bad name=x", "v")];
        let framed = message("{}", true, &attributes, "one\ntwo\rthree");
        assert!(!framed.contains(['\n', '\r']), "{framed}");
        assert!(
            framed.contains(" file=\"a\\]b\\\"c\\\\d#012e\""),
            "{framed}"
        );
        assert!(framed.contains(" bad_name_x=\"v\""), "{framed}");
        assert!(framed.ends_with("] one#012two#015three"), "{framed}");
        // Octet counting frames by length: line breaks stay as they are.
        let counted = message("{}", false, &attributes, "one\ntwo");
        assert!(counted.ends_with("] one\ntwo"), "{counted}");
    }

    #[test]
    fn a_long_body_is_cut_and_marked_never_the_structured_data() {
        let body = "é".repeat(1_000);
        let text = message(
            r#"{"max_message_bytes": 480}"#,
            false,
            &[("subsystem", "TMF")],
            &body,
        );
        assert!(text.len() <= 480, "{} bytes", text.len());
        assert!(text.contains(" truncated=\"2000\"]"), "{text}");
        assert!(text.contains(" subsystem=\"TMF\""), "{text}");
    }

    #[test]
    fn header_fields_are_printable_ascii_or_a_dash() {
        // The host name comes from the event's `system` attribute here.
        let text = message(
            "{}",
            false,
            &[("system", "host name\u{7}"), ("process", "")],
            "b",
        );
        assert!(text.starts_with("<"), "{text}");
        let fields: Vec<&str> = text.splitn(7, ' ').collect();
        assert_eq!(fields[2], "host_name_");
        assert_eq!(fields[4], "-", "an empty process: {text}");
    }
}
