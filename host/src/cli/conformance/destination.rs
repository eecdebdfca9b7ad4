//! A destination's part of the suite: acknowledged-through, rejections,
//! odd events, an unreachable member.

use super::Report;
use super::common::{case_of, unactionable};
use crate::cli::plugin_try::generated;
use safd_connector::{
    ConnectorError, DeliveryReport, DestinationConnector, DestinationSession, Endpoint, Event,
    MemberRole, SequencedEvent, SessionError, SessionInfo, StreamBatch, StreamPosition,
};
use safd_runtime::{Grants, Plugin};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What the destination part needs from the command line.
#[derive(Debug)]
pub(super) struct Setup<'a> {
    pub config: &'a str,
    pub grants: &'a Grants,
    pub address: Option<&'a str>,
    pub odd_events: usize,
    pub seed: u64,
}

/// Ordinary deliveries: this many batches of this many events.
const BATCHES: u64 = 3;
const BATCH_EVENTS: u64 = 50;
/// Odd events go in batches of at most this many events and bytes (a
/// group's default `batch_max_bytes`).
const ODD_BATCH: usize = 20;
const BATCH_MAX_BYTES: usize = 1 << 20;
/// A `transient` or `backpressure` answer is retried this often, as safd
/// would, before the check gives up.
const RETRIES: u32 = 3;

pub(super) async fn run(plugin: &Arc<Plugin>, setup: Setup<'_>, report: &mut Report) {
    let Some(address) = setup.address else {
        for check in ["register", "deliver", "probe", "an unreachable member"] {
            report.not_applicable(check, "give --address: a working receiver to deliver to");
        }
        return;
    };
    unreachable_member(plugin, &setup, address, report).await;
    let destination = match plugin
        .destination("conformance", setup.config.to_owned(), setup.grants)
        .await
    {
        Ok(destination) => destination,
        Err(err) => return report.fail("open", err.to_string()),
    };
    let mut session = match destination.open(endpoint(address)).await {
        Ok(session) => session,
        Err(err) => return report.fail("open", err.to_string()),
    };
    let stream = format!("conformance-{}", setup.seed % 1_000_000_007);
    let mut run = Run {
        session: session.as_mut(),
        stream,
        acknowledged: HashMap::new(),
        trapped: false,
    };
    if !run.register(report).await {
        return;
    }
    run.ordinary(report).await;
    run.resend(report).await;
    run.own_stream(report).await;
    run.left_out(report).await;
    run.odd(setup.seed, setup.odd_events, report).await;
    run.probe(report).await;
}

fn endpoint(address: &str) -> Endpoint {
    Endpoint {
        member: "conformance".to_owned(),
        address: address.to_owned(),
        role: MemberRole::Primary,
    }
}

/// One session through the checks, with what it acknowledged so far.
struct Run<'a> {
    session: &'a mut dyn DestinationSession,
    stream: String,
    /// Per stream, the highest seq acknowledged.
    acknowledged: HashMap<String, u64>,
    /// The instance trapped: the checks after it are not run.
    trapped: bool,
}

impl Run<'_> {
    fn info(&self, stored: u64) -> SessionInfo {
        SessionInfo {
            agent_id: "safd-conformance".to_owned(),
            group: "conformance".to_owned(),
            epoch: 1,
            active: true,
            stored: vec![StreamPosition {
                stream: self.stream.clone(),
                seq: stored,
            }],
            acknowledged: Vec::new(),
        }
    }

    async fn register(&mut self, report: &mut Report) -> bool {
        let check = "register";
        let stored = BATCHES * BATCH_EVENTS;
        match self.session.register(&self.info(stored)).await {
            Ok(registration) => {
                let beyond: Vec<String> = registration
                    .high_water
                    .iter()
                    .filter(|p| p.stream == self.stream && p.seq > stored)
                    .map(|p| {
                        format!(
                            "high-water {} of a stream safd stored only {stored} of",
                            p.seq
                        )
                    })
                    .collect();
                report.expect(
                    check,
                    &format!(
                        "service ready {}, high-water of the new stream {}",
                        registration.service_ready,
                        registration
                            .high_water
                            .iter()
                            .find(|p| p.stream == self.stream)
                            .map_or("absent".to_owned(), |p| p.seq.to_string())
                    ),
                    &beyond,
                );
                true
            }
            Err(err) => {
                report.fail(
                    check,
                    format!(
                        "a working receiver refused it with {}: {err}",
                        case_of(&err)
                    ),
                );
                false
            }
        }
    }

    /// Deliver, retrying passing faults as safd does.
    async fn deliver(&mut self, batches: &[StreamBatch]) -> Result<DeliveryReport, SessionError> {
        let mut attempt = 0;
        loop {
            match self.session.deliver(batches).await {
                Err(SessionError::Connector(ConnectorError::Transient(_))) if attempt < RETRIES => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(SessionError::Connector(ConnectorError::Backpressure {
                    retry_after, ..
                })) if attempt < RETRIES => {
                    tokio::time::sleep(retry_after.min(Duration::from_secs(2))).await;
                }
                outcome => {
                    if matches!(outcome, Err(SessionError::Trapped(_))) {
                        self.trapped = true;
                    }
                    return outcome;
                }
            }
            attempt += 1;
        }
    }

    /// What is wrong with `delivered` for `batches`; `forward` when the
    /// batches follow everything delivered before (so acknowledged-through
    /// may not fall).
    fn judge(
        &mut self,
        batches: &[StreamBatch],
        delivered: &DeliveryReport,
        forward: bool,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        for position in &delivered.acknowledged {
            let Some(batch) = batches.iter().find(|b| b.stream == position.stream) else {
                problems.push(format!(
                    "acknowledged stream `{}`, which it was not given",
                    position.stream
                ));
                continue;
            };
            let last = batch.span().map_or(0, |(_, last)| last);
            if position.seq > last {
                problems.push(format!(
                    "acknowledged `{}` through {}, past the last seq it was given ({last}): \
                     safd would count events as delivered that were never sent",
                    position.stream, position.seq
                ));
            }
            let before = self
                .acknowledged
                .get(&position.stream)
                .copied()
                .unwrap_or(0);
            if forward && position.seq < before {
                problems.push(format!(
                    "acknowledged-through of `{}` went backwards, from {before} to {}",
                    position.stream, position.seq
                ));
            }
            let entry = self
                .acknowledged
                .entry(position.stream.clone())
                .or_default();
            *entry = (*entry).max(position.seq.min(last));
        }
        for rejection in &delivered.rejected {
            let given = batches
                .iter()
                .any(|b| b.stream == rejection.stream && b.events.seqs().contains(&rejection.seq));
            if !given {
                problems.push(format!(
                    "rejected `{}` seq {}, which it was not given",
                    rejection.stream, rejection.seq
                ));
            }
            if rejection.reason.trim().is_empty() {
                problems.push(format!(
                    "rejected `{}` seq {} without a reason (the dead letter keeps it for the \
                     operator)",
                    rejection.stream, rejection.seq
                ));
            }
        }
        problems
    }

    fn batch(&self, stream: &str, first_seq: u64, events: Vec<Event>) -> StreamBatch {
        StreamBatch::new(
            stream,
            events
                .into_iter()
                .zip(first_seq..)
                .map(|(event, seq)| SequencedEvent { seq, event })
                .collect::<Vec<_>>()
                .into(),
        )
    }

    async fn ordinary(&mut self, report: &mut Report) {
        let check = "deliver: acknowledged-through";
        let mut problems = Vec::new();
        let mut rejected = 0;
        for n in 0..BATCHES {
            let batch = self.batch(
                &self.stream.clone(),
                n * BATCH_EVENTS + 1,
                generated(BATCH_EVENTS),
            );
            match self.deliver(std::slice::from_ref(&batch)).await {
                Ok(delivered) => {
                    rejected += delivered.rejected.len();
                    problems.extend(self.judge(std::slice::from_ref(&batch), &delivered, true));
                }
                Err(err) => {
                    problems.push(format!(
                        "batch {} of {BATCHES} to a working receiver failed with {}: {err}",
                        n + 1,
                        case_of(&err)
                    ));
                    break;
                }
            }
        }
        let total = BATCHES * BATCH_EVENTS;
        let through = self.acknowledged.get(&self.stream).copied().unwrap_or(0);
        if problems.is_empty() && through < total && rejected == 0 {
            problems.push(format!(
                "a working receiver acknowledged through {through} of the {total} seqs it was \
                 given: safd would send the rest again and again"
            ));
        }
        report.expect(
            check,
            &format!(
                "{BATCHES} batches of {BATCH_EVENTS}: acknowledged through {through}, never \
                 backwards, never past what was given{}",
                if rejected > 0 {
                    format!(" ({rejected} rejected)")
                } else {
                    String::new()
                }
            ),
            &problems,
        );
    }

    async fn resend(&mut self, report: &mut Report) {
        let check = "deliver: a batch sent again";
        let batch = self.batch(&self.stream.clone(), 1, generated(BATCH_EVENTS));
        match self.deliver(std::slice::from_ref(&batch)).await {
            Ok(delivered) => {
                let problems = self.judge(std::slice::from_ref(&batch), &delivered, false);
                report.expect(
                    check,
                    "seqs 1–50 sent again (as after a reconnect): answered within what was given",
                    &problems,
                );
            }
            Err(err) => report.fail(
                check,
                format!(
                    "seqs it had acknowledged, sent again as safd does after a reconnect, \
                     failed with {}: {err}",
                    case_of(&err)
                ),
            ),
        }
    }

    async fn own_stream(&mut self, report: &mut Report) {
        let check = "deliver: safd's own stream";
        let batch = self.batch("safd", 1, generated(3));
        let outcome = self.deliver(std::slice::from_ref(&batch)).await;
        self.expect_answer(
            check,
            "three events of stream `safd`",
            &[batch],
            outcome,
            report,
        );
    }

    async fn left_out(&mut self, report: &mut Report) {
        let check = "deliver: left-out ranges";
        let start = BATCHES * BATCH_EVENTS + 1;
        let mut with_events = self.batch(&self.stream.clone(), start, generated(10));
        with_events.left_out = vec![(start + 10, start + 19)];
        let outcome = self.deliver(std::slice::from_ref(&with_events)).await;
        self.expect_answer(
            check,
            "ten events followed by a left-out range",
            &[with_events],
            outcome,
            report,
        );
        let mut only_ranges = StreamBatch::new(self.stream.clone(), Vec::new().into());
        only_ranges.left_out = vec![(start + 20, start + 29)];
        let outcome = self.deliver(std::slice::from_ref(&only_ranges)).await;
        self.expect_answer(
            check,
            "a batch of only a left-out range",
            &[only_ranges],
            outcome,
            report,
        );
    }

    fn expect_answer(
        &mut self,
        check: &str,
        what: &str,
        batches: &[StreamBatch],
        outcome: Result<DeliveryReport, SessionError>,
        report: &mut Report,
    ) {
        match outcome {
            Ok(delivered) => {
                let problems = self.judge(batches, &delivered, true);
                report.expect(check, &format!("{what}: answered"), &problems);
            }
            Err(err) => match unactionable(&err) {
                Some(why) => report.fail(check, format!("{what}: {why}")),
                None => report.fail(
                    check,
                    format!("{what}, to a working receiver: {} ({err})", case_of(&err)),
                ),
            },
        }
    }

    async fn odd(&mut self, seed: u64, count: usize, report: &mut Report) {
        let check = "deliver: odd events";
        if self.trapped {
            return report.not_applicable(check, "the instance trapped before");
        }
        let events = safd_event_block::odd::odd_events(seed, count);
        let mut next_seq = BATCHES * BATCH_EVENTS + 31;
        let mut problems = Vec::new();
        let (mut acknowledged, mut rejected, mut batches_rejected) = (0, 0, 0);
        for chunk in batches_as_safd_makes_them(&events) {
            let batch = self.batch(&self.stream.clone(), next_seq, chunk.to_vec());
            next_seq += chunk.len() as u64;
            match self.deliver(std::slice::from_ref(&batch)).await {
                Ok(delivered) => {
                    rejected += delivered.rejected.len();
                    let before = self.acknowledged.get(&self.stream).copied().unwrap_or(0);
                    problems.extend(self.judge(std::slice::from_ref(&batch), &delivered, true));
                    let after = self.acknowledged.get(&self.stream).copied().unwrap_or(0);
                    let first = batch.events.first_seq().unwrap_or(0);
                    acknowledged += after.saturating_sub(before.max(first.saturating_sub(1)));
                }
                Err(SessionError::Connector(ConnectorError::Rejected(_))) => batches_rejected += 1,
                Err(err) => {
                    let why = unactionable(&err).unwrap_or_else(|| match &err {
                        SessionError::Connector(ConnectorError::Fatal(_)) => format!(
                            "fatal ({err}): safd would rebuild the instance and send the same \
                             batch again, forever; reject the event (delivery-report.rejected) \
                             or the batch (rejected)"
                        ),
                        SessionError::Connector(
                            ConnectorError::Transient(_) | ConnectorError::Backpressure { .. },
                        ) => format!(
                            "{} {} times in a row ({err}): safd would retry this batch forever",
                            case_of(&err),
                            RETRIES + 1
                        ),
                        _ => format!(
                            "{} ({err}): the receiver is up, so an event it cannot take is \
                             rejected, not reported as {}",
                            case_of(&err),
                            case_of(&err)
                        ),
                    });
                    let first = batch.events.first_seq().unwrap_or(0);
                    problems.push(format!(
                        "the batch of seqs {first}–{}: {why}",
                        first + chunk.len() as u64 - 1
                    ));
                    if self.trapped {
                        problems.push(format!("replay with --seed {seed}"));
                        break;
                    }
                }
            }
        }
        report.expect(
            check,
            &format!(
                "{count} events of empty, huge, control and multi-byte text, extreme times, many \
                 attributes: {acknowledged} acknowledged, {rejected} rejected one by one, \
                 {batches_rejected} batches rejected whole, no trap"
            ),
            &problems,
        );
    }

    async fn probe(&mut self, report: &mut Report) {
        let check = "probe";
        if self.trapped {
            return report.not_applicable(check, "the instance trapped before");
        }
        match self.session.probe().await {
            Ok(health) => report.pass(
                check,
                format!(
                    "service ready {}{}",
                    health.service_ready,
                    if health.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", health.detail)
                    }
                ),
            ),
            Err(err) => report.fail(
                check,
                format!("a working receiver: {} ({err})", case_of(&err)),
            ),
        }
    }
}

/// `events` cut into batches as a group with the default limits cuts
/// them: at most [`ODD_BATCH`] events and [`BATCH_MAX_BYTES`] bytes, an
/// event larger than that alone.
fn batches_as_safd_makes_them(events: &[Event]) -> Vec<&[Event]> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (at, event) in events.iter().enumerate() {
        let size = event.byte_size();
        if at > start && (at - start == ODD_BATCH || bytes + size > BATCH_MAX_BYTES) {
            batches.push(&events[start..at]);
            (start, bytes) = (at, 0);
        }
        bytes += size;
    }
    if start < events.len() {
        batches.push(&events[start..]);
    }
    batches
}

/// A member nobody listens on: `unavailable` (the group fails over) or
/// `transient`, never success, a trap or a case that stops the endpoint.
async fn unreachable_member(
    plugin: &Arc<Plugin>,
    setup: &Setup<'_>,
    address: &str,
    report: &mut Report,
) {
    let check = "an unreachable member";
    let capabilities = &plugin.manifest.capabilities;
    if !capabilities.http && !capabilities.tcp {
        return report.not_applicable(
            check,
            "the plugin reaches no network (its manifest requests neither http nor tcp)",
        );
    }
    let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(free) => free.port(),
        Err(err) => return report.not_applicable(check, format!("no free port: {err}")),
    };
    let refused = refused_address(address, port);
    let mut grants = setup.grants.clone();
    let authority = format!("127.0.0.1:{port}");
    if capabilities.http {
        grants.http.push(authority.clone());
    }
    if capabilities.tcp {
        grants.tcp.push(authority);
    }
    let destination = match plugin
        .destination("conformance-unreachable", setup.config.to_owned(), &grants)
        .await
    {
        Ok(destination) => destination,
        Err(err) => return report.fail(check, err.to_string()),
    };
    let outcome = async {
        let mut session = destination.open(endpoint(&refused)).await?;
        let info = SessionInfo {
            agent_id: "safd-conformance".to_owned(),
            group: "conformance".to_owned(),
            epoch: 1,
            active: true,
            stored: Vec::new(),
            acknowledged: Vec::new(),
        };
        session.register(&info).await?;
        // Some receivers are only reached by the first delivery.
        let batch = StreamBatch::new(
            "conformance",
            vec![SequencedEvent {
                seq: 1,
                event: generated(1).remove(0),
            }]
            .into(),
        );
        session.deliver(&[batch]).await
    }
    .await;
    match outcome {
        Ok(_) => report.fail(
            check,
            format!("delivering to {refused}, where nothing listens, was reported as success"),
        ),
        Err(
            err @ SessionError::Connector(
                ConnectorError::Unavailable(_) | ConnectorError::Transient(_),
            ),
        ) => report.pass(check, format!("{refused}: {}: {err}", case_of(&err))),
        Err(err) => report.fail(
            check,
            format!(
                "{refused}, where nothing listens: {} ({err}); an endpoint that refuses \
                 connections is `unavailable`, so the group fails over",
                case_of(&err)
            ),
        ),
    }
}

/// `address` with its host and port replaced by 127.0.0.1:`port`, keeping
/// a scheme and a path.
fn refused_address(address: &str, port: u16) -> String {
    match address.split_once("://") {
        Some((scheme, rest)) => {
            let path = rest.find('/').map_or("", |at| &rest[at..]);
            format!("{scheme}://127.0.0.1:{port}{path}")
        }
        None => format!("127.0.0.1:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_events_are_batched_within_the_default_limits() {
        let events = safd_event_block::odd::odd_events(3, 300);
        let batches = batches_as_safd_makes_them(&events);
        assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 300);
        for batch in batches {
            let bytes: usize = batch.iter().map(Event::byte_size).sum();
            assert!(batch.len() <= ODD_BATCH);
            assert!(batch.len() == 1 || bytes <= BATCH_MAX_BYTES, "{bytes}");
        }
    }

    #[test]
    fn the_refused_address_keeps_the_scheme_and_path() {
        assert_eq!(
            refused_address("http://10.0.0.5:8080/hook", 9),
            "http://127.0.0.1:9/hook"
        );
        assert_eq!(
            refused_address("https://mgmt.example", 9),
            "https://127.0.0.1:9"
        );
        assert_eq!(refused_address("10.0.0.5:514", 9), "127.0.0.1:9");
    }
}
