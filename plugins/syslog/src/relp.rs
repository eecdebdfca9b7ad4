//! A RELP client (rsyslog's Reliable Event Logging Protocol, as spoken by
//! librelp): `TXNR SP COMMAND SP DATALEN [SP DATA] LF` frames, one `syslog`
//! command per message, each answered by `rsp` with `200 OK` once the
//! server has taken the message.

use safd_plugin_sdk::tcp::Connection;
use safd_plugin_sdk::types::ConnectorError;

/// What the server answered to one transaction.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) txnr: u32,
    pub(crate) ok: bool,
    /// The status text (`200 OK`, `500 …`).
    pub(crate) text: String,
}

/// An open RELP session.
#[derive(Debug)]
pub(crate) struct Session {
    connection: Connection,
    next_txnr: u32,
    /// Received, not yet parsed.
    input: Vec<u8>,
}

const OFFER: &str = "relp_version=0\nrelp_software=safd-syslog\ncommands=syslog";

impl Session {
    /// Send `open` and wait for the server's `200`.
    pub(crate) fn open(connection: Connection) -> Result<Self, ConnectorError> {
        let mut session = Self {
            connection,
            next_txnr: 1,
            input: Vec::with_capacity(4096),
        };
        let txnr = session.send_frame("open", OFFER.as_bytes())?;
        let response = session.read_response()?;
        if response.txnr != txnr || !response.ok {
            return Err(ConnectorError::Unavailable(format!(
                "{} refused the RELP session: {}",
                session.connection.address(),
                response.text
            )));
        }
        if !response.text.contains("syslog") {
            return Err(ConnectorError::Fatal(format!(
                "{} does not offer the RELP `syslog` command ({}); is it a RELP server?",
                session.connection.address(),
                response.text.replace('\n', " ")
            )));
        }
        Ok(session)
    }

    pub(crate) fn connection(&mut self) -> &mut Connection {
        &mut self.connection
    }

    /// Append a `syslog` frame for `message` to `out`; returns its txnr.
    pub(crate) fn frame_syslog(&mut self, out: &mut Vec<u8>, message: &[u8]) -> u32 {
        let txnr = self.take_txnr();
        frame(out, txnr, "syslog", message);
        txnr
    }

    fn take_txnr(&mut self) -> u32 {
        let txnr = self.next_txnr;
        // librelp wraps after 999 999 999 to 1.
        self.next_txnr = if txnr >= 999_999_999 { 1 } else { txnr + 1 };
        txnr
    }

    fn send_frame(&mut self, command: &str, data: &[u8]) -> Result<u32, ConnectorError> {
        let txnr = self.take_txnr();
        let mut out = Vec::with_capacity(data.len() + 32);
        frame(&mut out, txnr, command, data);
        self.connection.write_all(&out)?;
        Ok(txnr)
    }

    /// Wait for the next response frame.
    pub(crate) fn read_response(&mut self) -> Result<Response, ConnectorError> {
        loop {
            match parse_frame(&self.input) {
                Ok(Some((frame, used))) => {
                    self.input.drain(..used);
                    match frame.command.as_str() {
                        "rsp" => {
                            let text = String::from_utf8_lossy(&frame.data).into_owned();
                            return Ok(Response {
                                txnr: frame.txnr,
                                ok: text.starts_with("200"),
                                text,
                            });
                        }
                        "serverclose" => {
                            return Err(ConnectorError::Unavailable(format!(
                                "{} is closing the RELP session (serverclose)",
                                self.connection.address()
                            )));
                        }
                        other => {
                            return Err(ConnectorError::Fatal(format!(
                                "{} sent an unexpected RELP command `{other}`",
                                self.connection.address()
                            )));
                        }
                    }
                }
                Ok(None) => {
                    let mut buf = [0u8; 4096];
                    let n = self.connection.read(&mut buf)?;
                    self.input.extend_from_slice(&buf[..n]);
                }
                Err(why) => {
                    return Err(ConnectorError::Fatal(format!(
                        "{} sent a malformed RELP frame: {why}",
                        self.connection.address()
                    )));
                }
            }
        }
    }
}

fn frame(out: &mut Vec<u8>, txnr: u32, command: &str, data: &[u8]) {
    out.extend_from_slice(format!("{txnr} {command} {}", data.len()).as_bytes());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

#[derive(Debug)]
struct Frame {
    txnr: u32,
    command: String,
    data: Vec<u8>,
}

/// One complete frame at the start of `input` and the bytes it used;
/// `None` while it is incomplete.
fn parse_frame(input: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    let mut at = 0;
    let mut token = |max: usize| -> Result<Option<&[u8]>, String> {
        let rest = &input[at..];
        match rest
            .iter()
            .take(max + 1)
            .position(|&b| b == b' ' || b == b'\n')
        {
            Some(end) => {
                let token = &rest[..end];
                // A zero DATALEN is followed directly by the trailer.
                at += end + usize::from(rest[end] == b' ');
                Ok(Some(token))
            }
            None if rest.len() > max => Err(format!(
                "header field longer than {max} bytes: {:?}",
                String::from_utf8_lossy(&rest[..rest.len().min(40)])
            )),
            None => Ok(None),
        }
    };
    let Some(txnr) = token(9)? else {
        return Ok(None);
    };
    let txnr = number(txnr)?;
    let Some(command) = token(32)? else {
        return Ok(None);
    };
    let command = String::from_utf8_lossy(command).into_owned();
    let Some(len) = token(9)? else {
        return Ok(None);
    };
    let len = number(len)? as usize;
    let (data, trailer) = if len == 0 {
        // No data: the trailer follows DATALEN directly.
        let Some(&trailer) = input.get(at) else {
            return Ok(None);
        };
        at += 1;
        (Vec::new(), Some(trailer))
    } else {
        if input.len() < at + len + 1 {
            return Ok(None);
        }
        let data = input[at..at + len].to_vec();
        at += len + 1;
        (data, Some(input[at - 1]))
    };
    if trailer != Some(b'\n') {
        return Err(format!("txnr {txnr}: frame does not end with a line feed"));
    }
    Ok(Some((
        Frame {
            txnr: txnr as u32,
            command,
            data,
        },
        at,
    )))
}

fn number(token: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(token)
        .ok()
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("`{}` is not a number", String::from_utf8_lossy(token)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_written_are_read_back_whole_and_only_whole() {
        let mut out = Vec::new();
        frame(&mut out, 7, "syslog", b"<13>1 - - - - - - hi there");
        frame(&mut out, 8, "close", b"");
        let (first, used) = parse_frame(&out).unwrap().unwrap();
        assert_eq!(
            (first.txnr, first.command.as_str(), first.data.as_slice()),
            (7, "syslog", &b"<13>1 - - - - - - hi there"[..])
        );
        let (second, rest) = parse_frame(&out[used..]).unwrap().unwrap();
        assert_eq!((second.txnr, second.command.as_str()), (8, "close"));
        assert!(second.data.is_empty());
        assert_eq!(used + rest, out.len());
        // Every cut short of the end is "not yet", never an error.
        for end in 0..used {
            assert!(parse_frame(&out[..end]).unwrap().is_none(), "{end}");
        }
    }

    #[test]
    fn a_server_answer_is_parsed() {
        let (answer, used) = parse_frame(b"1 rsp 6 200 OK\n2 rsp").unwrap().unwrap();
        assert_eq!((answer.txnr, answer.command.as_str()), (1, "rsp"));
        assert_eq!(answer.data, b"200 OK");
        assert_eq!(used, 15);
    }

    #[test]
    fn malformed_frames_are_errors_naming_the_problem() {
        for (input, expected) in [
            (&b"x rsp 0\n"[..], "not a number"),
            (b"1 rsp 3 abcX", "line feed"),
            (b"1234567890123 rsp", "longer than 9 bytes"),
            (b"1 rsp -4 ", "not a number"),
        ] {
            let err = parse_frame(input).unwrap_err();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
    }
}
