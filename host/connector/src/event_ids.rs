//! Stable numeric ids of safd's own events (the catalog in `docs/events.md`).
//!
//! Each id is logged as the `event_id` field of a tracing record and carried
//! as the `event_id` attribute of the event safd injects into its own `safd`
//! stream. The ids never change meaning; retired ids are not reused.
//!
//! Ranges: 1xxx delivery and failover, 2xxx queue, 3xxx plugins, 4xxx
//! sources and catch-up, 5xxx the daemon's configuration.

/// A group member cannot be reached (refused, timed out, silent); like
/// SCOM's 21006.
pub const MEMBER_UNREACHABLE: u32 = 1001;
/// The active member changed to a lower-priority member; like SCOM's 21015.
pub const FAILED_OVER: u32 = 1002;
/// The active member changed back to a higher-priority member after it
/// passed the configured number of consecutive healthy probes.
pub const FAILED_BACK: u32 = 1003;
/// No member of a group is reachable: events are spooled in safd's queue.
pub const ALL_MEMBERS_DOWN: u32 = 1004;
/// A group delivers again after every member was down; like SCOM's 21019.
pub const DELIVERY_RESUMED: u32 = 1005;
/// A member is reachable but its event service is not ready (its server
/// keeps events in its own durable inbox).
pub const MEMBER_DEGRADED: u32 = 1006;
/// A member that was unreachable or degraded is reachable and ready again.
pub const MEMBER_RECOVERED: u32 = 1007;
/// A receiver permanently rejected an event; it was moved to the
/// dead-letter queue.
pub const DEAD_LETTERED: u32 = 1008;
/// Dead letters were replayed on an operator's request.
pub const DEAD_LETTERS_REPLAYED: u32 = 1009;
/// A receiver refused the credentials of a member (401); delivery to that
/// member stops until the configuration is fixed.
pub const MEMBER_UNAUTHORIZED: u32 = 1010;
/// An event made the destination plugin trap or fail fatally twice when
/// sent alone; it was kept as a dead letter and delivery went on.
pub const POISON_EVENT: u32 = 1011;
/// safd's sandbox refused a member's address (it is not in the group's
/// grants); delivery to that member stops until the grant is added.
pub const MEMBER_NOT_GRANTED: u32 = 1012;
/// A destination is sending events older than its receiver's duplicate
/// window (the plugin said so through `receiver-notice`): one that had
/// reached the receiver before could be stored twice.
pub const OUTSIDE_DEDUP_WINDOW: u32 = 1013;

/// The queue passed its high-water mark (80 % of capacity by default).
pub const QUEUE_HIGH_WATER: u32 = 2001;
/// The queue is full: sources are blocked (`when_full = "block"`).
pub const QUEUE_FULL: u32 = 2002;
/// The queue is full and the oldest undelivered events were dropped
/// (`when_full = "drop_oldest"`).
pub const QUEUE_EVENTS_DROPPED: u32 = 2003;
/// The queue fell back below its high-water mark.
pub const QUEUE_BELOW_HIGH_WATER: u32 = 2004;
/// A damaged queue record (failed its version or checksum check) was moved
/// aside instead of being read; the events in it are not delivered.
pub const QUEUE_RECORD_QUARANTINED: u32 = 2005;
/// Writing to the queue failed (disk full, unwritable): the source is held
/// back and retried; nothing it handed over is lost.
pub const QUEUE_WRITE_FAILED: u32 = 2006;
/// The queue's store failed (an I/O error: disk full, directory
/// unwritable); sources are held back until it is reopened.
pub const QUEUE_STORE_FAILED: u32 = 2007;
/// The queue's store was reopened after 2007; writes resume.
pub const QUEUE_STORE_REOPENED: u32 = 2008;
/// The queue's index (sled) was missing or unreadable and was rebuilt from
/// the segment files; groups re-deliver what they had acknowledged
/// (servers deduplicate), and an unreadable index is kept aside.
pub const QUEUE_INDEX_REBUILT: u32 = 2009;
/// More of safd's own events waited for a failed store than safd keeps in
/// memory; the rest were only logged.
pub const OWN_EVENTS_LEFT_OUT: u32 = 2010;

/// A plugin instance trapped (crashed); it will be rebuilt.
pub const PLUGIN_TRAPPED: u32 = 3001;
/// A plugin call ran past its wall-clock limit and was interrupted.
pub const PLUGIN_TIMED_OUT: u32 = 3002;
/// A plugin instance was rebuilt after a failure.
pub const PLUGIN_RESTARTED: u32 = 3003;
/// A plugin instance failed too often and was disabled.
pub const PLUGIN_DISABLED: u32 = 3004;
/// A plugin file was refused at load (bad manifest, API, kind or component).
pub const PLUGIN_REFUSED: u32 = 3005;
/// A capability the operator granted was not requested by the plugin's
/// manifest (or the reverse) and is therefore not in effect.
pub const PLUGIN_GRANT_IGNORED: u32 = 3006;
/// A plugin tried to reach something it was not granted (HTTP authority or
/// socket address).
pub const PLUGIN_ACCESS_DENIED: u32 = 3007;
/// A plugin reported a fatal error; its instance will be rebuilt.
pub const PLUGIN_FATAL: u32 = 3008;
/// A plugin instance whose memory neared its limit was rebuilt between
/// calls, before it could run out mid-call.
pub const PLUGIN_RECYCLED: u32 = 3009;

/// A catch-up started: events are replayed to a member from the queue.
pub const CATCH_UP_STARTED: u32 = 4001;
/// A catch-up finished: the member has everything it asked for.
pub const CATCH_UP_COMPLETED: u32 = 4002;
/// A catch-up request was refused (standby member, stale epoch, or the
/// other member of the pair already caught up).
pub const CATCH_UP_REFUSED: u32 = 4003;
/// A catch-up reaches before the retention window: the source was asked to
/// seek back (deep catch-up).
pub const DEEP_CATCH_UP: u32 = 4004;
/// Events a catch-up asked for are gone and no source could re-read them.
pub const CATCH_UP_GAP: u32 = 4005;
/// A source session failed; it is reopened from its last durable cursor.
pub const SOURCE_FAILED: u32 = 4006;

/// The configuration was reloaded (SIGHUP or `safd reload`): sources and
/// groups added, restarted or removed; what needs a restart is listed.
pub const CONFIG_RELOADED: u32 = 5001;
/// A reload was refused because the file has problems; the running
/// configuration stays as it was.
pub const CONFIG_RELOAD_REFUSED: u32 = 5002;

use crate::Severity;

/// The severity the catalog gives `id` (`docs/events.md`, checked against
/// this table by a test); ids outside the catalog are major.
pub fn severity(id: u32) -> Severity {
    match id {
        DELIVERY_RESUMED
        | MEMBER_RECOVERED
        | DEAD_LETTERS_REPLAYED
        | QUEUE_BELOW_HIGH_WATER
        | QUEUE_STORE_REOPENED
        | PLUGIN_RESTARTED
        | PLUGIN_RECYCLED
        | CATCH_UP_STARTED
        | CATCH_UP_COMPLETED
        | CATCH_UP_REFUSED
        | CONFIG_RELOADED => Severity::Info,
        FAILED_OVER | FAILED_BACK | MEMBER_DEGRADED | PLUGIN_TRAPPED | PLUGIN_TIMED_OUT
        | PLUGIN_REFUSED | PLUGIN_GRANT_IGNORED | PLUGIN_ACCESS_DENIED | PLUGIN_FATAL
        | DEEP_CATCH_UP | OUTSIDE_DEDUP_WINDOW => Severity::Warning,
        ALL_MEMBERS_DOWN | MEMBER_UNAUTHORIZED | MEMBER_NOT_GRANTED | QUEUE_FULL
        | QUEUE_EVENTS_DROPPED | QUEUE_WRITE_FAILED | QUEUE_STORE_FAILED | QUEUE_INDEX_REBUILT
        | CATCH_UP_GAP => Severity::Critical,
        _ => Severity::Major,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// `NAME → id` of every constant above, read from this file's source.
    fn defined() -> BTreeMap<String, u32> {
        include_str!("event_ids.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("pub const "))
            .map(|rest| {
                let (name, value) = rest.split_once(": u32 = ").unwrap();
                (
                    name.to_owned(),
                    value.trim_end_matches(';').parse().unwrap(),
                )
            })
            .collect()
    }

    /// The ids the catalog's tables list, each as often as it is listed.
    fn documented() -> Vec<u32> {
        include_str!("../../../docs/events.md")
            .lines()
            .filter_map(|line| line.strip_prefix("| "))
            .filter_map(|rest| rest.split(' ').next()?.parse().ok())
            .collect()
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_id_is_documented_once_and_every_documented_id_exists() {
        let defined = defined();
        let ids: BTreeSet<u32> = defined.values().copied().collect();
        assert_eq!(ids.len(), defined.len(), "two constants share an id");
        let documented = documented();
        let listed: BTreeSet<u32> = documented.iter().copied().collect();
        assert_eq!(
            documented.len(),
            listed.len(),
            "an id is listed twice in docs/events.md"
        );
        assert_eq!(listed, ids, "docs/events.md and event_ids.rs disagree");
    }

    /// The catalog's severity column (its first word) is what notices of
    /// the id carry.
    #[test]
    fn every_documented_severity_is_the_one_notices_carry() {
        for line in include_str!("../../../docs/events.md").lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let Some(id) = cells.get(1).and_then(|c| c.parse::<u32>().ok()) else {
                continue;
            };
            let word = cells[2].split_whitespace().next().unwrap();
            let documented = match word {
                "debug" => crate::Severity::Debug,
                "info" => crate::Severity::Info,
                "warning" => crate::Severity::Warning,
                "minor" => crate::Severity::Minor,
                "major" => crate::Severity::Major,
                "critical" => crate::Severity::Critical,
                other => panic!("{id}: `{other}` is not a severity"),
            };
            assert_eq!(super::severity(id), documented, "{id}");
        }
    }

    /// An id that nothing emits is a catalog entry an operator waits for
    /// in vain.
    #[test]
    fn every_id_is_emitted_somewhere() {
        let host = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        for dir in ["engine/src", "runtime/src", "src"] {
            rust_files(&host.join(dir), &mut files);
        }
        let sources: Vec<String> = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        for name in defined().keys() {
            assert!(
                sources.iter().any(|s| s.contains(name.as_str())),
                "{name} is defined and documented but nothing in the host emits it"
            );
        }
    }
}
