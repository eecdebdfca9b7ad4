//! The safd event an EMS record becomes, whichever way it came — read from
//! log files by ems-reader or received over the network by net-in — so
//! that an event looks the same either way: its attributes, in one order,
//! and its severity.

use crate::json::{JsonEvent, SubjectRef, iso_time};
use crate::text::{ProcessRef, TextEvent};
use safd_event_block::Severity;
use std::collections::HashMap;

/// The fields of a parsed record, from either format, borrowed.
#[derive(Debug)]
pub struct Fields<'a> {
    pub system: &'a str,
    pub process: ProcessRef<'a>,
    pub owner: &'a str,
    pub subsystem: &'a str,
    pub version: &'a str,
    pub event_number: u32,
    pub gentime: i64,
    pub logtime: i64,
    /// `logtime` already written as safd writes times, if the record
    /// carries it so.
    pub logtime_text: Option<&'a str>,
    pub emphasis: bool,
    pub action_needed: bool,
    pub subjects: &'a [SubjectRef<'a>],
    pub text: &'a str,
}

impl<'a> Fields<'a> {
    /// Format A: one time printed (it is both gentime and logtime), no
    /// subjects, no action-needed flag.
    pub fn from_text(ems: &'a TextEvent<'a>) -> Self {
        Self {
            system: ems.system,
            process: ems.process,
            owner: ems.owner,
            subsystem: ems.subsystem,
            version: ems.version,
            event_number: ems.event_number,
            gentime: ems.gentime,
            logtime: ems.gentime,
            logtime_text: None,
            emphasis: ems.emphasis,
            action_needed: false,
            subjects: &[],
            text: &ems.text,
        }
    }

    pub fn from_json(ems: &'a JsonEvent<'a>) -> Self {
        let process = match (&ems.process_name, ems.cpu, ems.pin) {
            (Some(name), _, _) => ProcessRef::Name(name),
            (None, Some(cpu), Some(pin)) => ProcessRef::CpuPin { cpu, pin },
            _ => ProcessRef::Name("?"),
        };
        Self {
            system: &ems.system,
            process,
            owner: &ems.owner,
            subsystem: &ems.subsystem,
            version: &ems.version,
            event_number: ems.event_number,
            gentime: ems.gentime,
            logtime: ems.logtime,
            logtime_text: ems.logtime_text,
            emphasis: ems.emphasis,
            action_needed: ems.action_needed,
            subjects: &ems.subjects,
            text: &ems.text,
        }
    }
}

/// Severity overrides: event number → (subsystem name in upper case,
/// severity).
pub type Overrides = HashMap<u32, Vec<(String, Severity)>>;

/// One entry of a source's `severity_overrides` as its configuration
/// writes it (ems-reader's and net-in's alike).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityOverride {
    pub subsystem: String,
    pub event: u32,
    pub severity: String,
}

/// The JSON schema of `severity_overrides`, for a plugin's config schema.
#[macro_export]
macro_rules! severity_overrides_schema {
    () => {
        r#""severity_overrides": {"type": "array", "description": "EMS events: the severity of (subsystem, event number), instead of emphasis → critical, action needed → major, else info", "items": {"type": "object", "additionalProperties": false,
      "required": ["subsystem", "event", "severity"],
      "properties": {"subsystem": {"type": "string"}, "event": {"type": "integer", "minimum": 0},
        "severity": {"enum": ["debug", "info", "warning", "minor", "major", "critical"]}}}}"#
    };
}

/// The overrides `entries` configure, a later entry for the same
/// subsystem and event replacing an earlier. `severity` reads entry
/// `i`'s severity name, or says what is wrong with it.
pub fn overrides<E>(
    entries: &[SeverityOverride],
    mut severity: impl FnMut(usize, &str) -> Result<Severity, E>,
) -> Result<Overrides, Vec<E>> {
    let mut overrides = Overrides::new();
    let mut problems = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match severity(i, &entry.severity) {
            Ok(severity) => {
                let subsystem = entry.subsystem.to_ascii_uppercase();
                let same_event = overrides.entry(entry.event).or_default();
                same_event.retain(|(name, _)| *name != subsystem);
                same_event.push((subsystem, severity));
            }
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(overrides)
    } else {
        Err(problems)
    }
}

/// An override for (subsystem, event number) if one is configured, else
/// emphasis → critical, action needed → major, anything else → info.
pub fn severity(overrides: &Overrides, fields: &Fields<'_>) -> Severity {
    let overridden = overrides.get(&fields.event_number).and_then(|entries| {
        entries
            .iter()
            .find(|(subsystem, _)| subsystem.eq_ignore_ascii_case(fields.subsystem))
            .map(|(_, severity)| *severity)
    });
    overridden.unwrap_or(if fields.emphasis {
        Severity::Critical
    } else if fields.action_needed {
        Severity::Major
    } else {
        Severity::Info
    })
}

/// Buffers reused from event to event: building the attributes allocates
/// nothing once they have grown, and the logtime is formatted once for a
/// run of records with the same one.
#[derive(Debug, Default)]
pub struct Scratch {
    /// The logtime `logtime_text` shows.
    logtime: Option<i64>,
    logtime_text: String,
    process: String,
    event_number: String,
    /// `subject.<token>` keys, one after the other.
    subject_keys: String,
}

/// The most attributes before the subjects: seven of the event's own, up
/// to two saying where it came from, `logtime`, `action_needed`.
const FIXED: usize = 11;

/// Call `write` with the event's attributes: `system`, `process`,
/// `subsystem_owner`, `subsystem`, `subsystem_version`, `event_number`,
/// then `origin` (where the record came from: `collector` and `log_file`
/// for ems-reader, `collector` and `sender` for net-in; at most two),
/// `logtime`, `action_needed` when set, and `subject.<token>` for each
/// subject.
pub fn with_attributes<R>(
    fields: &Fields<'_>,
    origin: &[(&str, &str)],
    scratch: &mut Scratch,
    write: impl FnOnce(&[(&str, &str)]) -> R,
) -> R {
    if fields.logtime_text.is_none() && scratch.logtime != Some(fields.logtime) {
        scratch.logtime = Some(fields.logtime);
        scratch.logtime_text = iso_time(fields.logtime);
    }
    let logtime = fields.logtime_text.unwrap_or(&scratch.logtime_text);
    scratch.process.clear();
    match fields.process {
        ProcessRef::Name(name) => scratch.process.push_str(name),
        ProcessRef::CpuPin { cpu, pin } => {
            scratch.process.push_str(itoa::Buffer::new().format(cpu));
            scratch.process.push(',');
            scratch.process.push_str(itoa::Buffer::new().format(pin));
        }
    }
    scratch.event_number.clear();
    scratch
        .event_number
        .push_str(itoa::Buffer::new().format(fields.event_number));
    scratch.subject_keys.clear();
    for subject in fields.subjects {
        scratch.subject_keys.push_str("subject.");
        scratch.subject_keys.push_str(&subject.token);
    }
    let mut fixed = [("", ""); FIXED];
    let mut len = 0;
    let own = [
        ("system", fields.system),
        ("process", scratch.process.as_str()),
        ("subsystem_owner", fields.owner),
        ("subsystem", fields.subsystem),
        ("subsystem_version", fields.version),
        ("event_number", scratch.event_number.as_str()),
    ];
    for pair in own
        .iter()
        .chain(origin.iter().take(2))
        .chain([("logtime", logtime)].iter())
        .chain(
            [("action_needed", "true")]
                .iter()
                .filter(|_| fields.action_needed),
        )
    {
        fixed[len] = *pair;
        len += 1;
    }
    if fields.subjects.is_empty() {
        // Format A never has subjects: no list to build.
        return write(&fixed[..len]);
    }
    let mut all = fixed[..len].to_vec();
    let mut keys = scratch.subject_keys.as_str();
    for subject in fields.subjects {
        let (key, rest) = keys.split_at("subject.".len() + subject.token.len());
        keys = rest;
        all.push((key, &*subject.value));
    }
    write(&all)
}
