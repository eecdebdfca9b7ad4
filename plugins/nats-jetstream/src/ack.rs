//! JetStream's answers to publishes, and the window of publishes waiting
//! for one.
//!
//! Each event is published with its own reply subject; JetStream answers
//! on it once the message is stored in the stream (on its replicas). The
//! answers can come in any order, and some can fail while later ones
//! succeed, so what safd may count as acknowledged is, per stream, the end
//! of the unbroken run of stored events from the oldest one still waiting.

use crate::protocol::{Message, ProtocolError};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// What one publish came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubOutcome {
    /// Stored in `stream` at `stream_seq`; `duplicate` when the message id
    /// was already there (sent before, e.g. before a reconnect): the event
    /// is in the stream once, which is what counts.
    Stored {
        stream: String,
        stream_seq: u64,
        duplicate: bool,
    },
    /// No stream takes the subject (status 503 from the server itself).
    NoResponders,
    /// JetStream refused it: `code` as HTTP-like status, `err_code` its own.
    Refused {
        code: u16,
        err_code: u32,
        description: String,
    },
}

#[derive(Deserialize)]
struct PubAckJson {
    #[serde(default)]
    stream: String,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    duplicate: bool,
    #[serde(default)]
    error: Option<ApiError>,
}

/// An error in a JetStream API answer (a publish's or a request's).
#[derive(Debug, Deserialize)]
pub(crate) struct ApiError {
    #[serde(default)]
    pub(crate) code: u16,
    #[serde(default)]
    pub(crate) err_code: u32,
    #[serde(default)]
    pub(crate) description: String,
}

/// Read the answer to a publish.
pub fn outcome(answer: &Message) -> Result<PubOutcome, ProtocolError> {
    if let Some(status) = answer.headers.as_ref().and_then(|h| h.status) {
        if status == 503 {
            return Ok(PubOutcome::NoResponders);
        }
        if answer.payload.is_empty() {
            let description = answer
                .headers
                .as_ref()
                .map(|h| h.description.clone())
                .unwrap_or_default();
            return Ok(PubOutcome::Refused {
                code: status,
                err_code: 0,
                description,
            });
        }
    }
    let ack: PubAckJson = serde_json::from_slice(&answer.payload).map_err(|e| {
        ProtocolError(format!(
            "a publish acknowledgement that does not parse ({e}): {}",
            String::from_utf8_lossy(&answer.payload[..answer.payload.len().min(200)])
        ))
    })?;
    if let Some(error) = ack.error {
        return Ok(PubOutcome::Refused {
            code: error.code,
            err_code: error.err_code,
            description: error.description,
        });
    }
    match ack.seq {
        Some(stream_seq) if !ack.stream.is_empty() => Ok(PubOutcome::Stored {
            stream: ack.stream,
            stream_seq,
            duplicate: ack.duplicate,
        }),
        _ => Err(ProtocolError(
            "a publish acknowledgement without stream and seq".to_owned(),
        )),
    }
}

/// Publishes waiting for their answer, per safd stream in the order they
/// were sent.
#[derive(Debug, Default)]
pub struct Window {
    streams: BTreeMap<String, VecDeque<Entry>>,
    /// Reply token → the stream whose entry it answers.
    tokens: HashMap<u64, String>,
    next_token: u64,
    unanswered: usize,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    token: u64,
    state: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Waiting,
    Stored,
    Failed(String),
}

/// A publish that failed: the run of its stream stops before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub stream: String,
    pub seq: u64,
    pub reason: String,
}

impl Window {
    /// Record a publish of `seq` of `stream`; returns the token its reply
    /// subject ends with.
    pub fn publish(&mut self, stream: &str, seq: u64) -> u64 {
        self.next_token += 1;
        let token = self.next_token;
        self.streams
            .entry(stream.to_owned())
            .or_default()
            .push_back(Entry {
                seq,
                token,
                state: State::Waiting,
            });
        self.tokens.insert(token, stream.to_owned());
        self.unanswered += 1;
        token
    }

    /// Record the answer for `token`: `Ok` when stored, else why not.
    /// False for a token that is not waiting (an answer to a publish of an
    /// earlier connection, or a repeat), which changes nothing.
    pub fn answer(&mut self, token: u64, result: Result<(), String>) -> bool {
        let Some(stream) = self.tokens.remove(&token) else {
            return false;
        };
        let Some(entry) = self
            .streams
            .get_mut(&stream)
            .and_then(|entries| entries.iter_mut().find(|e| e.token == token))
        else {
            return false;
        };
        entry.state = match result {
            Ok(()) => State::Stored,
            Err(reason) => State::Failed(reason),
        };
        self.unanswered -= 1;
        true
    }

    /// The publish `token` stands for, while it waits.
    pub fn publish_of(&self, token: u64) -> Option<(&str, u64)> {
        let stream = self.tokens.get(&token)?;
        let entry = self
            .streams
            .get(stream)?
            .iter()
            .find(|e| e.token == token)?;
        Some((stream.as_str(), entry.seq))
    }

    /// Publishes not answered yet.
    pub fn unanswered(&self) -> usize {
        self.unanswered
    }

    /// Per stream, the last seq of the unbroken run of stored publishes
    /// from the front; those entries leave the window.
    pub fn take_settled(&mut self) -> Vec<(String, u64)> {
        let mut settled = Vec::new();
        for (stream, entries) in &mut self.streams {
            let mut last = None;
            while entries.front().is_some_and(|e| e.state == State::Stored) {
                last = entries.pop_front().map(|e| e.seq);
            }
            if let Some(seq) = last {
                settled.push((stream.clone(), seq));
            }
        }
        self.streams.retain(|_, entries| !entries.is_empty());
        settled
    }

    /// The oldest failed publish at the front of a stream's run, if any:
    /// nothing of that stream after it can count until it is sent again.
    pub fn first_failure(&self) -> Option<Failure> {
        self.streams.iter().find_map(|(stream, entries)| {
            entries.iter().find_map(|e| match &e.state {
                State::Failed(reason) => Some(Failure {
                    stream: stream.clone(),
                    seq: e.seq,
                    reason: reason.clone(),
                }),
                _ => None,
            })
        })
    }

    /// Forget everything (the connection is gone: answers to its publishes
    /// can no longer come).
    pub fn clear(&mut self) {
        self.streams.clear();
        self.tokens.clear();
        self.unanswered = 0;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::protocol::parse_headers;

    fn message(headers: Option<&[u8]>, payload: &[u8]) -> Message {
        Message {
            subject: "_INBOX.x.1".into(),
            sid: 1,
            reply_to: None,
            headers: headers.map(|h| parse_headers(h).unwrap()),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn answers_are_read_as_stored_duplicate_refused_or_no_responders() {
        assert_eq!(
            outcome(&message(None, br#"{"stream":"EMS","seq":12}"#)).unwrap(),
            PubOutcome::Stored {
                stream: "EMS".into(),
                stream_seq: 12,
                duplicate: false
            }
        );
        assert_eq!(
            outcome(&message(
                None,
                br#"{"stream":"EMS","seq":12,"duplicate":true,"domain":"d"}"#
            ))
            .unwrap(),
            PubOutcome::Stored {
                stream: "EMS".into(),
                stream_seq: 12,
                duplicate: true
            }
        );
        assert_eq!(
            outcome(&message(
                None,
                br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#
            ))
            .unwrap(),
            PubOutcome::Refused {
                code: 503,
                err_code: 10077,
                description: "maximum messages exceeded".into()
            }
        );
        assert_eq!(
            outcome(&message(Some(b"NATS/1.0 503\r\n\r\n"), b"")).unwrap(),
            PubOutcome::NoResponders
        );
        assert!(outcome(&message(None, b"not json")).is_err());
        assert!(outcome(&message(None, b"{}")).is_err());
    }

    #[test]
    fn what_counts_is_each_streams_unbroken_run_of_stored_publishes() {
        let mut window = Window::default();
        let a: Vec<u64> = (1..=4).map(|seq| window.publish("a", seq)).collect();
        let b: Vec<u64> = (7..=8).map(|seq| window.publish("b", seq)).collect();
        assert_eq!(window.unanswered(), 6);
        // Out of order: 2 before 1, and 3 fails.
        assert!(window.answer(a[1], Ok(())));
        assert!(window.take_settled().is_empty());
        assert!(window.answer(a[0], Ok(())));
        assert!(window.answer(a[2], Err("stream full".into())));
        assert!(window.answer(a[3], Ok(())));
        assert!(window.answer(b[1], Ok(())));
        assert!(window.answer(b[0], Ok(())));
        assert_eq!(
            window.take_settled(),
            [("a".to_owned(), 2), ("b".to_owned(), 8)]
        );
        assert_eq!(
            window.first_failure(),
            Some(Failure {
                stream: "a".into(),
                seq: 3,
                reason: "stream full".into()
            })
        );
        assert_eq!(window.unanswered(), 0);
        // A repeated or unknown answer changes nothing.
        assert!(!window.answer(a[0], Ok(())));
        assert!(!window.answer(999, Ok(())));
        window.clear();
        assert!(window.first_failure().is_none() && window.take_settled().is_empty());
    }
}
