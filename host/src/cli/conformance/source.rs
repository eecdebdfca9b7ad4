//! A source's part of the suite: limits, ids, cursors, seek.

use super::Report;
use super::common::{case_of, unactionable};
use safd_connector::{
    ConnectorError, Cursor, PollLimits, SessionError, SourceConnector, SourceSession,
};
use safd_runtime::{Grants, Plugin};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Small limits, so that a read takes several polls and has cursors
/// between its events.
const LIMITS: PollLimits = PollLimits {
    max_events: 16,
    max_bytes: 16 * 1024,
};

/// A read ends after this long without events …
const QUIET: Duration = Duration::from_millis(500);
/// … or, while nothing came yet, this long (a live source's first events).
const FIRST_EVENTS: Duration = Duration::from_secs(5);
const IDLE_POLL: Duration = Duration::from_millis(20);

/// What one read of the source gave.
#[derive(Debug, Default)]
struct Read {
    ids: Vec<String>,
    /// After how many events of the read each committed cursor stands.
    cursors: Vec<(usize, Cursor)>,
    /// What went wrong in the contract's terms (limits, unusable errors).
    problems: Vec<String>,
}

pub(super) async fn run(
    plugin: &Arc<Plugin>,
    config: &str,
    grants: &Grants,
    max_events: usize,
    report: &mut Report,
) {
    let source = match plugin.source("conformance", config.to_owned(), grants) {
        Ok(source) => source,
        Err(err) => return report.fail("open", err.to_string()),
    };
    let first = match read_from(&source, None, max_events).await {
        Ok(read) => read,
        Err(err) => return report.fail("open", err),
    };
    report.expect(
        "poll: limits and answers",
        &format!(
            "{} events in batches within max-events {} and max-bytes {}",
            first.ids.len(),
            LIMITS.max_events,
            LIMITS.max_bytes
        ),
        &first.problems,
    );
    if first.ids.is_empty() {
        for check in ["ids", "re-read from the start", "cursor round-trip"] {
            report.not_applicable(
                check,
                "the source produced no events with this config; give it input",
            );
        }
    } else {
        let unique: HashSet<&String> = first.ids.iter().collect();
        if unique.len() == first.ids.len() {
            report.pass("ids", "unique within a read");
        } else {
            report.fail(
                "ids",
                format!(
                    "{} of {} events share an id with another: receivers deduplicate by id \
                     and would drop them",
                    first.ids.len() - unique.len(),
                    first.ids.len()
                ),
            );
        }
        let rereadable = reread(&source, &first, report).await;
        cursor_round_trip(&source, &first, rereadable, report).await;
    }
    seek(&source, &first, report).await;
    bad_cursors(&source, report).await;
}

/// Open from `cursor` and read up to `max_events`; `Err` when it cannot be
/// opened.
async fn read_from(
    source: &dyn SourceConnector,
    cursor: Option<Cursor>,
    max_events: usize,
) -> Result<Read, String> {
    let mut session = source
        .open(cursor)
        .await
        .map_err(|err| format!("the session could not be opened: {err}"))?;
    // Where events are expected, a live source may take a while to get its
    // first ones; after the last cursor nothing is expected.
    let first_wait = if max_events > 0 { FIRST_EVENTS } else { QUIET };
    Ok(read(session.as_mut(), max_events.max(1), first_wait).await)
}

async fn read(session: &mut dyn SourceSession, max_events: usize, first_wait: Duration) -> Read {
    let mut read = Read::default();
    let started = Instant::now();
    let mut last_event = started;
    while read.ids.len() < max_events {
        let batch = match session.poll(LIMITS).await {
            Ok(batch) => batch,
            Err(SessionError::Connector(
                ConnectorError::Transient(_) | ConnectorError::Backpressure { .. },
            )) => {
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
            Err(err) => {
                read.problems.push(match unactionable(&err) {
                    Some(why) => format!("poll: {why}"),
                    None => format!("poll failed with {}: {err}", case_of(&err)),
                });
                break;
            }
        };
        let events = batch.events.to_events();
        if events.len() > LIMITS.max_events as usize {
            read.problems.push(format!(
                "a poll returned {} events, over max-events {}",
                events.len(),
                LIMITS.max_events
            ));
        }
        let bytes: usize = events.iter().map(|e| e.byte_size()).sum();
        if events.len() > 1 && bytes > LIMITS.max_bytes as usize {
            read.problems.push(format!(
                "a poll returned {} events of {bytes} bytes, over max-bytes {} (only a \
                 single event may be larger)",
                events.len(),
                LIMITS.max_bytes
            ));
        }
        if !events.is_empty() {
            last_event = Instant::now();
        }
        read.ids.extend(events.into_iter().map(|e| e.id));
        if let Some(cursor) = batch.cursor {
            // safd commits once the batch is on disk.
            if let Err(err) = session.commit(&cursor).await
                && let Some(why) = unactionable(&err)
            {
                read.problems.push(format!("commit: {why}"));
            }
            read.cursors.push((read.ids.len(), cursor));
        }
        if !batch.more {
            let waited = if read.ids.is_empty() {
                started.elapsed() >= first_wait
            } else {
                last_event.elapsed() >= QUIET
            };
            if waited {
                break;
            }
            tokio::time::sleep(IDLE_POLL).await;
        }
        if read.problems.len() > 5 {
            break;
        }
    }
    read
}

/// Read again from the start: the same ids in the same order. Returns
/// whether the source reads again at all (a live source does not).
async fn reread(source: &dyn SourceConnector, first: &Read, report: &mut Report) -> bool {
    let check = "re-read from the start";
    let again = match read_from(source, None, first.ids.len()).await {
        Ok(read) => read,
        Err(err) => {
            report.fail(check, err);
            return false;
        }
    };
    if again.ids.is_empty() {
        report.not_applicable(
            check,
            "opened without a cursor again, the source read nothing: a live source",
        );
        return false;
    }
    match first.ids.iter().zip(&again.ids).position(|(a, b)| a != b) {
        Some(at) => report.fail(
            check,
            format!(
                "event {} was `{}` on the first read and `{}` on the second: an event read \
                 twice must keep its id",
                at + 1,
                first.ids[at],
                again.ids[at]
            ),
        ),
        None => report.pass(
            check,
            format!("the same {} ids in the same order", again.ids.len()),
        ),
    }
    true
}

/// Open from a cursor in the middle of the first read and from its last
/// cursor: the reads continue exactly after them.
async fn cursor_round_trip(
    source: &dyn SourceConnector,
    first: &Read,
    rereadable: bool,
    report: &mut Report,
) {
    let check = "cursor round-trip";
    let middle = first
        .cursors
        .iter()
        .find(|(after, _)| *after >= first.ids.len() / 2 && *after < first.ids.len())
        .or_else(|| first.cursors.first());
    let Some((after, cursor)) = middle.cloned() else {
        return report.not_applicable(check, "the source returned no cursor");
    };
    let mut problems = Vec::new();
    let before: HashSet<&String> = first.ids[..after].iter().collect();
    let rest = &first.ids[after..];
    match read_from(source, Some(cursor), rest.len()).await {
        Err(err) => problems.push(format!("from the cursor after event {after}: {err}")),
        Ok(resumed) => {
            let repeated = resumed.ids.iter().filter(|id| before.contains(id)).count();
            if repeated > 0 {
                problems.push(format!(
                    "opened from the cursor after event {after}, it read {repeated} events \
                     again (first: `{}`)",
                    resumed
                        .ids
                        .iter()
                        .find(|id| before.contains(id))
                        .map_or("", String::as_str)
                ));
            } else if rereadable && !resumed.ids.starts_with(rest) {
                let skipped = rest
                    .iter()
                    .position(|id| resumed.ids.first() == Some(id))
                    .map_or_else(
                        || format!("it read `{:?}` first", resumed.ids.first()),
                        |n| format!("it skipped {n} events (`{}` first)", rest[0]),
                    );
                problems.push(format!(
                    "opened from the cursor after event {after}, the read does not go on \
                     with event {}: {skipped}",
                    after + 1
                ));
            }
            problems.extend(resumed.problems);
        }
    }
    if let Some((after, last)) = first.cursors.last().cloned() {
        let seen: HashSet<&String> = first.ids.iter().collect();
        // Nothing is expected, so no events are waited for: any that come
        // within the quiet period are judged.
        match read_from(source, Some(last), 0).await {
            Err(err) => problems.push(format!("from the last cursor: {err}")),
            Ok(resumed) => {
                let repeated = resumed.ids.iter().filter(|id| seen.contains(id)).count();
                if repeated > 0 {
                    problems.push(format!(
                        "opened from its last cursor (after event {after}), it read \
                         {repeated} events again"
                    ));
                }
            }
        }
    }
    report.expect(
        check,
        &format!(
            "from the cursor after event {after} the read goes on exactly after it{}; from \
             the last cursor nothing is read again",
            if rereadable {
                ""
            } else {
                " (nothing read again; a live source, so skips are not judged)"
            }
        ),
        &problems,
    );
}

/// A deep catch-up from the start of time (the epoch), asked of a session
/// opened after everything was read: the events read again with their ids,
/// or `rejected` (no history: safd announces a gap and reads on). `ok`
/// without a re-read would leave safd waiting for events that never come.
async fn seek(source: &dyn SourceConnector, first: &Read, report: &mut Report) {
    let check = "seek";
    let end = first.cursors.last().map(|(_, cursor)| cursor.clone());
    let mut session = match source.open(end).await {
        Ok(session) => session,
        Err(err) => return report.fail(check, format!("the session could not be opened: {err}")),
    };
    match session.seek(0).await {
        Ok(()) => {}
        Err(SessionError::Connector(ConnectorError::Rejected(why))) => {
            return report.pass(
                check,
                format!("rejected ({why}): safd announces what a catch-up asks for as a gap"),
            );
        }
        Err(err) => {
            return report.fail(
                check,
                format!(
                    "seek answered {} ({err}); a source that cannot read its events again \
                     answers `rejected`, and safd announces the gap and reads on",
                    case_of(&err)
                ),
            );
        }
    }
    if first.ids.is_empty() {
        return report.not_applicable(
            check,
            "seek answered ok; the source produced no events with this config to read again",
        );
    }
    let again = read(session.as_mut(), first.ids.len(), FIRST_EVENTS).await;
    let mut problems = again.problems;
    if again.ids.is_empty() {
        problems.push(
            "seek answered ok but nothing was read again: a source that cannot read its \
             events again answers `rejected`, so safd announces the gap instead of waiting \
             for a re-read that never comes"
                .to_owned(),
        );
    } else if let Some(at) = first.ids.iter().zip(&again.ids).position(|(a, b)| a != b) {
        problems.push(format!(
            "after the seek, event {} was `{}` where the first read had `{}`: events read \
             again must keep their ids",
            at + 1,
            again.ids[at],
            first.ids[at]
        ));
    }
    report.expect(
        check,
        &format!(
            "from the end, a seek to the epoch read the {} events again with their ids",
            again.ids.len()
        ),
        &problems,
    );
}

/// Cursors the source never returned: `bad-cursor` (or accepted), never a
/// trap or another case.
async fn bad_cursors(source: &dyn SourceConnector, report: &mut Report) {
    let mut noise = vec![0u8; 1000];
    fastrand::fill(&mut noise);
    let mut problems = Vec::new();
    for (cursor, what) in [
        (Vec::new(), "an empty cursor"),
        (vec![0xff; 3], "three 0xff bytes"),
        (noise, "1 000 random bytes"),
    ] {
        match source.open(Some(cursor)).await {
            Ok(mut session) => {
                // Accepted: it must still poll without a trap.
                if let Err(err) = session.poll(LIMITS).await
                    && let Some(why) = unactionable(&err)
                {
                    problems.push(format!("opened from {what}, a poll: {why}"));
                }
            }
            Err(SessionError::Connector(ConnectorError::BadCursor(_))) => {}
            Err(err) => problems.push(format!(
                "{what}: {} instead of bad-cursor ({err}); bad-cursor lets safd report a \
                 gap and reopen without a cursor",
                case_of(&err)
            )),
        }
    }
    report.expect(
        "unusable cursors",
        "refused with bad-cursor, or accepted",
        &problems,
    );
}
