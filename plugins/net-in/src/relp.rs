//! RELP, the Reliable Event Logging Protocol (rsyslog's `omrelp` /
//! `imrelp`, librelp): the frame header and the server's answers.
//!
//! A frame is `TXNR SP COMMAND SP DATALEN [SP DATA] LF`: a transaction
//! number (1 to 999 999 999, one per frame of a session), a command
//! (`open`, `syslog`, `close`), the length of the data and the data. The
//! server answers each frame with `TXNR rsp DATALEN SP CODE SP TEXT LF`,
//! for `syslog` once the message is safe: here, once safd's queue has
//! stored it (the source's commit), so an acknowledged message is on disk.
//! A sender keeps what is not acknowledged and sends it again after a
//! reconnect (with new transaction numbers). See
//! <https://github.com/rsyslog/librelp/blob/master/doc/relp.html>.

/// The most digits a transaction number or a data length may have.
const MAX_DIGITS: usize = 9;
/// The longest command name (RFC-less, librelp's limit).
const MAX_COMMAND: usize = 32;

/// What a frame asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// Session start; the data holds the client's offers.
    Open,
    /// One syslog message.
    Syslog,
    /// The client ends the session.
    Close,
    /// Anything else (answered `500`).
    Other,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) txnr: u32,
    pub(crate) command: Command,
    pub(crate) data_len: u64,
    /// Bytes of the header, through the space before the data (or through
    /// the length when there is no data, the trailer then follows).
    pub(crate) len: usize,
}

/// Why bytes are not a RELP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadFrame(pub(crate) &'static str);

/// The header at the start of `bytes`: `Ok(None)` while it is still
/// arriving.
pub(crate) fn header(bytes: &[u8]) -> Result<Option<Header>, BadFrame> {
    let mut at = 0;
    let Some(txnr) = number(bytes, &mut at, "transaction number")? else {
        return Ok(None);
    };
    if txnr == 0 {
        return Err(BadFrame(
            "transaction number 0 (a client's frames start at 1)",
        ));
    }
    if !space(bytes, &mut at, "transaction number")? {
        return Ok(None);
    }
    let name_len = bytes[at..]
        .iter()
        .take(MAX_COMMAND + 1)
        .take_while(|b| b.is_ascii_alphabetic())
        .count();
    if at + name_len == bytes.len() && name_len <= MAX_COMMAND {
        return Ok(None);
    }
    if name_len == 0 || name_len > MAX_COMMAND {
        return Err(BadFrame("no command after the transaction number"));
    }
    let command = match &bytes[at..at + name_len] {
        b"open" => Command::Open,
        b"syslog" => Command::Syslog,
        b"close" => Command::Close,
        _ => Command::Other,
    };
    at += name_len;
    if !space(bytes, &mut at, "command")? {
        return Ok(None);
    }
    let Some(data_len) = number(bytes, &mut at, "data length")? else {
        return Ok(None);
    };
    let len = match bytes.get(at) {
        None => return Ok(None),
        Some(b' ') if data_len > 0 => at + 1,
        Some(b'\n') if data_len == 0 => at,
        Some(_) => return Err(BadFrame("no space or line feed after the data length")),
    };
    Ok(Some(Header {
        txnr: u32::try_from(txnr).map_err(|_| BadFrame("transaction number too large"))?,
        command,
        data_len,
        len,
    }))
}

/// Digits at `*at`: `Ok(None)` when they may still be arriving.
fn number(bytes: &[u8], at: &mut usize, what: &'static str) -> Result<Option<u64>, BadFrame> {
    let digits = bytes[*at..]
        .iter()
        .take(MAX_DIGITS + 1)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if *at + digits == bytes.len() && digits <= MAX_DIGITS {
        return Ok(None);
    }
    if digits == 0 {
        return Err(BadFrame(match what {
            "transaction number" => "does not start with a transaction number",
            _ => "no data length after the command",
        }));
    }
    if digits > MAX_DIGITS {
        return Err(BadFrame("a number of more than nine digits"));
    }
    let mut value = 0u64;
    for &digit in &bytes[*at..*at + digits] {
        value = value * 10 + u64::from(digit - b'0');
    }
    *at += digits;
    Ok(Some(value))
}

/// The one space at `*at`: false when it has not arrived yet.
fn space(bytes: &[u8], at: &mut usize, after: &'static str) -> Result<bool, BadFrame> {
    match bytes.get(*at) {
        None => Ok(false),
        Some(b' ') => {
            *at += 1;
            Ok(true)
        }
        Some(_) => Err(BadFrame(match after {
            "transaction number" => "no space after the transaction number",
            _ => "no space after the command",
        })),
    }
}

/// `TXNR rsp LEN DATA LF`.
fn response(out: &mut Vec<u8>, txnr: u32, data: &str) {
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(number.format(txnr).as_bytes());
    out.extend_from_slice(b" rsp ");
    out.extend_from_slice(number.format(data.len()).as_bytes());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data.as_bytes());
    }
    out.push(b'\n');
}

/// `200 OK` for a frame.
pub(crate) fn ok(out: &mut Vec<u8>, txnr: u32) {
    response(out, txnr, "200 OK");
}

/// The answer to `open`: the offers this server makes (RELP version 0, the
/// `syslog` command). librelp checks that `commands` names `syslog`.
pub(crate) fn open_ok(out: &mut Vec<u8>, txnr: u32) {
    let data = format!(
        "200 OK\nrelp_version=0\nrelp_software=safd-net-in,{},https://github.com/safd\ncommands=syslog",
        env!("CARGO_PKG_VERSION")
    );
    response(out, txnr, &data);
}

/// The answer to `close` (no data), after which the server closes.
pub(crate) fn close_ok(out: &mut Vec<u8>, txnr: u32) {
    response(out, txnr, "");
}

/// A refusal with its reason.
pub(crate) fn error(out: &mut Vec<u8>, txnr: u32, reason: &str) {
    response(out, txnr, &format!("500 {reason}"));
}

/// The server ends the session (`0 serverclose 0`): the client reconnects
/// and sends again what was not acknowledged.
pub(crate) fn server_close(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0 serverclose 0\n");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn headers_whole_and_in_pieces() {
        let frame = b"12 syslog 5 hello\n";
        let whole = header(frame).unwrap().unwrap();
        assert_eq!(
            whole,
            Header {
                txnr: 12,
                command: Command::Syslog,
                data_len: 5,
                len: 12
            }
        );
        for cut in 0..whole.len {
            assert_eq!(header(&frame[..cut]), Ok(None), "cut at {cut}");
        }
        let close = header(b"3 close 0\n").unwrap().unwrap();
        assert_eq!(
            (close.command, close.data_len, close.len),
            (Command::Close, 0, 9)
        );
        assert_eq!(
            header(b"1 open 85 relp_version=0")
                .unwrap()
                .unwrap()
                .command,
            Command::Open
        );
        assert_eq!(
            header(b"4 starttls 0\n").unwrap().unwrap().command,
            Command::Other
        );
    }

    #[test]
    fn what_is_not_a_frame_says_why() {
        for (bytes, why) in [
            (&b"hello world\n"[..], "does not start"),
            (b"0 syslog 1 x\n", "transaction number 0"),
            (b"1syslog 1 x\n", "no space after the transaction"),
            (b"1 sys-log 1 x\n", "no space after the command"),
            (b"1 syslog x\n", "no data length"),
            (b"1 syslog 0 x\n", "no space or line feed"),
            (b"1 syslog 3\n", "no space or line feed"),
            (b"1234567890 syslog 1 x\n", "nine digits"),
        ] {
            let err = header(bytes).unwrap_err();
            assert!(
                err.0.contains(why),
                "{:?}: {err:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn answers_are_framed_as_librelp_reads_them() {
        let mut out = Vec::new();
        ok(&mut out, 7);
        close_ok(&mut out, 8);
        error(&mut out, 9, "no");
        server_close(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "7 rsp 6 200 OK\n8 rsp 0\n9 rsp 6 500 no\n0 serverclose 0\n"
        );
        let mut out = Vec::new();
        open_ok(&mut out, 1);
        let text = String::from_utf8(out).unwrap();
        // The answer is itself a frame (`rsp` as its command) that holds
        // exactly the data it announces.
        let parsed = header(text.as_bytes()).unwrap().unwrap();
        assert_eq!(parsed.command, Command::Other);
        assert_eq!(parsed.len as u64 + parsed.data_len + 1, text.len() as u64);
        assert!(text.ends_with("commands=syslog\n"));
    }
}
