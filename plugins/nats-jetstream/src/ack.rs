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
use std::collections::{BTreeMap, VecDeque};

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

fn find_entry(entries: &mut VecDeque<Entry>, token: u64) -> Option<&mut Entry> {
    let at = entries.binary_search_by_key(&token, |e| e.token).ok()?;
    entries.get_mut(at)
}

/// Publishes waiting for their answer, per safd stream in the order they
/// were sent.
#[derive(Debug, Default)]
pub struct Window {
    /// Tokens grow with every publish, so each stream's entries are in
    /// token order and an answer's entry is found by binary search among
    /// the (few) streams of a delivery: no map entry per publish.
    streams: BTreeMap<String, VecDeque<Entry>>,
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
        let entry = Entry {
            seq,
            token,
            state: State::Waiting,
        };
        match self.streams.get_mut(stream) {
            Some(entries) => entries.push_back(entry),
            None => {
                self.streams
                    .insert(stream.to_owned(), VecDeque::from([entry]));
            }
        }
        self.unanswered += 1;
        token
    }

    /// Record the answer for `token`: `Ok` when stored, else why not.
    /// False for a token that is not waiting (an answer to a publish of an
    /// earlier connection, or a repeat), which changes nothing.
    pub fn answer(&mut self, token: u64, result: Result<(), String>) -> bool {
        let Some(entry) = self
            .streams
            .values_mut()
            .find_map(|entries| find_entry(entries, token))
            .filter(|entry| entry.state == State::Waiting)
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
        self.streams.iter().find_map(|(stream, entries)| {
            let at = entries.binary_search_by_key(&token, |e| e.token).ok()?;
            let entry = entries.get(at)?;
            (entry.state == State::Waiting).then_some((stream.as_str(), entry.seq))
        })
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

    /// Whether a publish of `stream` failed (not stored, to be sent again).
    pub fn failed(&self, stream: &str) -> bool {
        self.streams
            .get(stream)
            .is_some_and(|entries| entries.iter().any(|e| matches!(e.state, State::Failed(_))))
    }

    /// Per stream with a failed publish, how many publishes after the
    /// first failure were stored: they are in the stream ahead of the
    /// failed ones, which are sent again (stored once, but out of seq
    /// order).
    pub fn stored_after_failure(&self) -> Vec<(String, usize)> {
        self.streams
            .iter()
            .filter_map(|(stream, entries)| {
                let first = entries
                    .iter()
                    .position(|e| matches!(e.state, State::Failed(_)))?;
                let stored = entries
                    .iter()
                    .skip(first)
                    .filter(|e| e.state == State::Stored)
                    .count();
                (stored > 0).then(|| (stream.clone(), stored))
            })
            .collect()
    }

    /// Forget everything (the connection is gone: answers to its publishes
    /// can no longer come).
    pub fn clear(&mut self) {
        self.streams.clear();
        self.unanswered = 0;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::protocol::parse_headers;

    #[test]
    fn publishes_stored_after_a_failed_one_are_counted() {
        let mut window = Window::default();
        let tokens: Vec<u64> = (1..=5).map(|seq| window.publish("app", seq)).collect();
        window.answer(tokens[0], Ok(()));
        window.answer(tokens[1], Err("no responders".into()));
        window.answer(tokens[2], Err("no responders".into()));
        window.answer(tokens[3], Ok(()));
        window.answer(tokens[4], Ok(()));
        assert!(window.failed("app"));
        assert!(!window.failed("other"));
        assert_eq!(window.take_settled(), vec![("app".to_owned(), 1)]);
        assert_eq!(window.stored_after_failure(), vec![("app".to_owned(), 2)]);
        let mut clean = Window::default();
        let token = clean.publish("app", 1);
        clean.answer(token, Ok(()));
        assert!(clean.stored_after_failure().is_empty());
    }

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
