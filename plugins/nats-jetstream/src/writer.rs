//! One member (a NATS server of the cluster): the connection, the stream
//! check at register, and deliveries as publishes whose answers decide
//! what safd may count as acknowledged.

use crate::client::{Client, Refusal};
use crate::config::{Config, Payload};
use crate::protocol;
use crate::subject::Values;
use safd_event_block::BlockWriter;
use safd_plugin_sdk::destination::{DeliveryReport, Rejection};
use safd_plugin_sdk::events::{self, EventRef};
use safd_plugin_sdk::tcp::Connection;
use safd_plugin_sdk::types::{ConnectorError, StreamBatch, StreamPosition};
use safd_plugin_sdk::{json, log, notice};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The stream as found at register.
#[derive(Debug, Clone)]
pub struct StreamFound {
    pub subjects: Vec<String>,
    pub duplicate_window: Duration,
    pub replicas: u32,
}

#[derive(Debug)]
pub struct Member {
    config: Config,
    address: String,
    client_name: String,
    client: Option<Client<Connection>>,
    connections: u64,
    /// The stream's duplicate window, once `open_stream` read it.
    duplicate_window: Option<Duration>,
}

impl Member {
    pub fn new(config: Config, address: String, member: &str) -> Self {
        Self {
            config,
            address,
            client_name: format!("safd {member}"),
            client: None,
            connections: 0,
            duplicate_window: None,
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The live connection, made (and the stream checked) when needed.
    fn client(&mut self) -> Result<&mut Client<Connection>, ConnectorError> {
        if self.client.is_none() {
            let connection = Connection::open(
                &self.address,
                false,
                self.config.connect_timeout,
                self.config.timeout,
            )?;
            self.connections += 1;
            // Unique among the server's clients: this instance's start time
            // and its connection count.
            let inbox_id = format!("safd{:x}x{}", started_nanos(), self.connections);
            let client = Client::connect(
                connection,
                &self.address,
                &self.client_name,
                &self.config.credentials,
                &inbox_id,
                self.config.timeout,
            )?;
            log::info(&format!(
                "connected to NATS server {} ({} {})",
                self.address,
                client.info().server_name,
                client.info().version
            ));
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| {
            ConnectorError::Unavailable(format!("NATS server {}: not connected", self.address))
        })
    }

    /// Connect and make sure the stream is there (creating it when the
    /// configuration says so).
    pub fn open_stream(&mut self) -> Result<StreamFound, ConnectorError> {
        let timeout = self.config.timeout;
        let name = self.config.stream.clone();
        let create = self.config.create_stream.clone();
        let address = self.address.clone();
        let result = (|| {
            let client = self.client()?;
            let info = match client.stream_info(&name, timeout)? {
                Some(info) => info,
                None => match &create {
                    Some(create) => {
                        let created =
                            client.create_stream(&create.request(&name), &name, timeout)?;
                        log::info(&format!(
                            "created JetStream stream `{name}` on {address} (subjects {:?}, {} \
                             replicas, {} storage)",
                            created.config.subjects,
                            created.config.num_replicas,
                            created.config.storage
                        ));
                        created
                    }
                    None => {
                        return Err(ConnectorError::Unavailable(format!(
                            "JetStream stream `{name}` does not exist on NATS server {address}: \
                             create it (e.g. `nats stream add {name} --subjects 'safd.>' \
                             --storage file --replicas 3`) or set `create_stream` in this \
                             group's config"
                        )));
                    }
                },
            };
            Ok(StreamFound {
                subjects: info.config.subjects,
                duplicate_window: Duration::from_nanos(info.config.duplicate_window),
                replicas: info.config.num_replicas,
            })
        })();
        if let Ok(found) = &result {
            self.duplicate_window = Some(found.duplicate_window);
        }
        self.forget_on_error(result)
    }

    /// Tell safd (event 1013) when a batch's oldest event is older than the
    /// stream's duplicate window: sent again after its first copy was
    /// stored, it would be stored twice.
    fn check_duplicate_window(&self, batch: &StreamBatch) -> Result<(), ConnectorError> {
        let Some(window) = self.duplicate_window else {
            return Ok(());
        };
        let Some(first) = batch.events().next() else {
            return Ok(());
        };
        let (seq, event) = first?;
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        if notice::older_than(event.time, window_ms, safd_plugin_sdk::time::now_micros()) {
            notice::outside_dedup_window(&batch.stream, seq, event.time, window_ms);
        }
        Ok(())
    }

    /// Publish every event of `batches`, at most `window` waiting at once,
    /// and report the unbroken run of stored events per stream.
    pub fn deliver(
        &mut self,
        agent: &str,
        batches: &[StreamBatch],
    ) -> Result<DeliveryReport, ConnectorError> {
        let result = self.deliver_on(agent, batches);
        self.forget_on_error(result)
    }

    fn deliver_on(
        &mut self,
        agent: &str,
        batches: &[StreamBatch],
    ) -> Result<DeliveryReport, ConnectorError> {
        let window = self.config.window;
        let timeout = self.config.timeout;
        let payload_kind = self.config.payload;
        let mut rejected = Vec::new();
        let mut refusals = Vec::new();
        // Events that never went out (too large) still settle their place.
        let mut settled_unsent: Vec<(String, u64)> = Vec::new();
        let mut payload = String::new();
        let mut block_bytes = Vec::new();
        // Buffers reused for every event: at hundreds of thousands of
        // events a second an allocation per field shows in the profile.
        let mut headers = Vec::new();
        let mut subject = String::new();
        let mut msg_id = String::new();
        let mut seq_text = String::new();
        let mut time = String::new();
        let per_event_subject = self.config.subject.varies_per_event();
        for batch in batches {
            self.check_duplicate_window(batch)?;
            let mut attributes = Vec::new();
            if !per_event_subject {
                subject = self.config.subject.render(&Values {
                    agent,
                    stream: &batch.stream,
                    severity: "",
                    attributes: &[],
                });
            }
            for event in batch.events() {
                let (seq, event) = event?;
                let severity = events::severity(&event).as_str();
                if per_event_subject {
                    attributes.clear();
                    attributes.extend(event.attributes.iter());
                    subject = self.config.subject.render(&Values {
                        agent,
                        stream: &batch.stream,
                        severity,
                        attributes: &attributes,
                    });
                }
                msg_id.clear();
                let _ = write!(msg_id, "{agent}:{}:{seq}", batch.stream);
                seq_text.clear();
                let _ = write!(seq_text, "{seq}");
                time.clear();
                safd_plugin_sdk::time::rfc3339(&mut time, event.time);
                protocol::write_header_block(
                    &mut headers,
                    &[
                        ("Nats-Msg-Id", &msg_id),
                        ("Safd-Agent", agent),
                        ("Safd-Stream", &batch.stream),
                        ("Safd-Seq", &seq_text),
                        ("Safd-Event-Id", event.id),
                        ("Safd-Severity", severity),
                        ("Safd-Time", &time),
                    ],
                );
                let body: &[u8] = match payload_kind {
                    Payload::Json => {
                        payload.clear();
                        json::event(&mut payload, seq, &event);
                        payload.as_bytes()
                    }
                    Payload::EventBlock => {
                        let mut block = BlockWriter::with_capacity(block_bytes.capacity());
                        push_one(&mut block, seq, &event);
                        block_bytes = block.finish().1;
                        &block_bytes
                    }
                };
                let client = self.client()?;
                let max = client.max_payload();
                if headers.len() + body.len() > max {
                    rejected.push(Rejection {
                        stream: batch.stream.clone(),
                        seq,
                        reason: format!(
                            "the message ({} bytes with its headers) is larger than the NATS \
                             server's max_payload ({max} bytes); raise max_payload on the \
                             servers or keep such events out of this group",
                            headers.len() + body.len()
                        ),
                    });
                    settled_unsent.push((batch.stream.clone(), seq));
                    continue;
                }
                client.publish(&batch.stream, seq, &subject, &headers, body)?;
                if client.window().unanswered() >= window {
                    let deadline = Instant::now() + timeout;
                    refusals.extend(client.wait_answers(window / 2, deadline)?);
                    // Nothing of this stream after a failed publish can be
                    // acknowledged in this delivery, and what JetStream
                    // stored of it would land ahead of the re-sent event:
                    // stop here (with `window = 1` this keeps strict order).
                    if client.window().failed(&batch.stream) {
                        break;
                    }
                }
            }
        }
        let client = self.client()?;
        refusals.extend(client.wait_answers(0, Instant::now() + timeout)?);
        let settled = client.window().take_settled();
        let failure = client.window().first_failure();
        let out_of_order = client.window().stored_after_failure();
        client.window().clear();
        if let Some(refusal) = refusals.iter().find(|r| r.no_stream) {
            return Err(ConnectorError::Unavailable(format!(
                "NATS server {}: stream `{}` does not take the subject of {}:{} — {}",
                self.address, self.config.stream, refusal.stream, refusal.seq, refusal.reason
            )));
        }
        rejected.extend(refusals.iter().filter(|r| r.permanent).map(rejection));
        let acknowledged = acknowledged(batches, &settled, &settled_unsent, failure.as_ref());
        if let Some(failure) = failure {
            log::warn(&format!(
                "NATS server {}: event {}:{} not stored, sent again later: {}",
                self.address, failure.stream, failure.seq, failure.reason
            ));
        }
        for (stream, stored) in out_of_order {
            // JetStream took later publishes while an earlier one failed
            // (a leader election, a lost quorum): the re-sent events land
            // after them. Each is stored once; only `window = 1` (one
            // publish answered before the next) keeps strict seq order.
            log::warn(&format!(
                "NATS server {}: {stored} later event(s) of stream `{stream}` were stored before \
                 the failed one; the stream will hold the re-sent events after them (each once, \
                 Safd-Seq gives safd's order; `window = 1` keeps strict order)",
                self.address
            ));
        }
        Ok(DeliveryReport {
            acknowledged,
            rejected,
        })
    }

    /// A round trip to the server.
    pub fn probe(&mut self) -> Result<String, ConnectorError> {
        let timeout = self.config.timeout;
        let result = self.client().and_then(|client| client.ping(timeout));
        self.forget_on_error(result)?;
        Ok(format!("connected to NATS server {}", self.address))
    }

    /// A connection that failed is not used again.
    fn forget_on_error<T>(
        &mut self,
        result: Result<T, ConnectorError>,
    ) -> Result<T, ConnectorError> {
        if result.is_err() {
            self.client = None;
        }
        result
    }
}

fn push_one(block: &mut BlockWriter, seq: u64, event: &EventRef<'_>) {
    block.push_sequenced(
        seq,
        event.id,
        event.time,
        event.severity,
        event.attributes,
        event.body,
    );
}

fn rejection(refusal: &Refusal) -> Rejection {
    Rejection {
        stream: refusal.stream.clone(),
        seq: refusal.seq,
        reason: refusal.reason.clone(),
    }
}

/// Per stream, how far safd may count the batch as delivered: the run the
/// window settled, extended over events that were rejected before being
/// sent — up to the first event that failed.
fn acknowledged(
    batches: &[StreamBatch],
    settled: &[(String, u64)],
    unsent: &[(String, u64)],
    failure: Option<&crate::ack::Failure>,
) -> Vec<StreamPosition> {
    let mut out = Vec::new();
    for batch in batches {
        let stopped_at = failure.filter(|f| f.stream == batch.stream).map(|f| f.seq);
        let settled_to = settled
            .iter()
            .find(|(s, _)| *s == batch.stream)
            .map(|(_, seq)| *seq);
        let mut through = None;
        for event in batch.events() {
            let Ok((seq, _)) = event else { break };
            if stopped_at.is_some_and(|stop| seq >= stop) {
                break;
            }
            let stored = settled_to.is_some_and(|to| seq <= to);
            let rejected_unsent = unsent.iter().any(|(s, q)| *s == batch.stream && *q == seq);
            if !stored && !rejected_unsent {
                break;
            }
            through = Some(seq);
        }
        if let Some(seq) = through {
            out.push(StreamPosition {
                stream: batch.stream.clone(),
                seq,
            });
        }
    }
    out
}

fn started_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ack::Failure;
    use safd_plugin_sdk::types::Event;

    fn batch(stream: &str, first: u64, count: u64) -> StreamBatch {
        let events: Vec<Event> = (0..count)
            .map(|n| Event {
                id: format!("e{n}"),
                time: 1_700_000_000_000_000,
                severity: safd_plugin_sdk::types::Severity::Info,
                attributes: Vec::new(),
                body: "b".into(),
            })
            .collect();
        StreamBatch::sequenced(stream, first, &events)
    }

    #[test]
    fn acknowledged_is_the_run_of_stored_and_unsent_rejected_events_before_a_failure() {
        let batches = [batch("a", 1, 5), batch("b", 10, 3)];
        // a: 1–2 stored, 3 too large (never sent), 4 stored, 5 failed;
        // the window settled a through 4 (3 was never in it).
        let failure = Failure {
            stream: "a".into(),
            seq: 5,
            reason: "x".into(),
        };
        let acked = acknowledged(
            &batches,
            &[("a".into(), 4), ("b".into(), 12)],
            &[("a".into(), 3)],
            Some(&failure),
        );
        let pairs: Vec<(&str, u64)> = acked.iter().map(|p| (p.stream.as_str(), p.seq)).collect();
        assert_eq!(pairs, [("a", 4), ("b", 12)]);
        // Nothing stored: nothing acknowledged, even past an unsent one.
        assert!(acknowledged(&batches[..1], &[], &[("a".into(), 1)], None).len() == 1);
        assert!(acknowledged(&batches[..1], &[], &[], None).is_empty());
    }
}
