//! EMS records and gaps → safd events.

use crate::config::Config;
use safd_ems::json::iso_time as iso;
use safd_ems::tail::{Gap, GapKind, Record, file_name};
use safd_ems::text::{ProcessRef, TextEvent};
use safd_ems::{EmsEvent, ParseError, Subject};
use safd_plugin_sdk::events::EventWriter;
use safd_plugin_sdk::types::{Attribute, Event, Severity};

/// A stable id: the same record read twice (after a restart, a seek) gets
/// the same id, so receivers deduplicate it.
fn record_id(config: &Config, file: u32, offset: u64) -> String {
    let mut id = record_id_prefix(config, &file_name(file));
    id.push_str(itoa::Buffer::new().format(offset));
    id
}

/// Everything of a record's id but its offset: `system:collector:file:`.
fn record_id_prefix(config: &Config, log_file: &str) -> String {
    format!("{}:{}:{log_file}:", config.system, config.collector)
}

/// The fields of a parsed record, from either format, borrowed.
pub(crate) struct Fields<'a> {
    pub(crate) system: &'a str,
    pub(crate) process: ProcessRef<'a>,
    pub(crate) owner: &'a str,
    pub(crate) subsystem: &'a str,
    pub(crate) version: &'a str,
    pub(crate) event_number: u32,
    pub(crate) gentime: i64,
    pub(crate) logtime: i64,
    pub(crate) emphasis: bool,
    pub(crate) action_needed: bool,
    pub(crate) subjects: &'a [Subject],
    pub(crate) text: &'a str,
}

impl<'a> Fields<'a> {
    pub(crate) fn from_text(ems: &'a TextEvent<'a>) -> Self {
        Self {
            system: ems.system,
            process: ems.process,
            owner: ems.owner,
            subsystem: ems.subsystem,
            version: ems.version,
            event_number: ems.event_number,
            gentime: ems.gentime,
            logtime: ems.gentime,
            emphasis: ems.emphasis,
            action_needed: false,
            subjects: &[],
            text: &ems.text,
        }
    }

    pub(crate) fn from_event(ems: &'a EmsEvent) -> Self {
        let process = match (&ems.process.name, ems.process.cpu, ems.process.pin) {
            (Some(name), _, _) => ProcessRef::Name(name),
            (None, Some(cpu), Some(pin)) => ProcessRef::CpuPin { cpu, pin },
            _ => ProcessRef::Name("?"),
        };
        Self {
            system: &ems.system,
            process,
            owner: &ems.ssid.owner,
            subsystem: &ems.ssid.name,
            version: &ems.ssid.version,
            event_number: ems.event_number,
            gentime: ems.gentime,
            logtime: ems.logtime,
            emphasis: ems.emphasis,
            action_needed: ems.action_needed,
            subjects: &ems.subjects,
            text: &ems.text,
        }
    }
}

/// Buffers reused from event to event: converting a record allocates
/// nothing once they have grown, and the parts that repeat (the log file's
/// name and the id's prefix, the formatted logtime) are formatted once.
#[derive(Default)]
pub(crate) struct Scratch {
    /// The file `log_file` and `id_prefix` are for.
    file: Option<u32>,
    log_file: String,
    /// `system:collector:log_file:`
    id_prefix: String,
    id: String,
    /// The logtime `logtime_text` shows.
    logtime: Option<i64>,
    logtime_text: String,
    process: String,
    /// `subject.<token>` keys, one after the other.
    subject_keys: String,
}

impl Scratch {
    fn for_file(&mut self, config: &Config, file: u32) {
        if self.file != Some(file) {
            self.file = Some(file);
            self.log_file = file_name(file);
            self.id_prefix = record_id_prefix(config, &self.log_file);
        }
    }
}

fn severity(config: &Config, fields: &Fields<'_>) -> Severity {
    let overridden = config
        .overrides
        .get(&fields.event_number)
        .and_then(|entries| {
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

/// Append the event of a record that parsed.
pub(crate) fn push_event(
    events: &mut EventWriter,
    config: &Config,
    scratch: &mut Scratch,
    record: &Record,
    fields: &Fields<'_>,
) {
    scratch.for_file(config, record.file);
    scratch.id.clear();
    scratch.id.push_str(&scratch.id_prefix);
    scratch
        .id
        .push_str(itoa::Buffer::new().format(record.start));
    if scratch.logtime != Some(fields.logtime) {
        scratch.logtime = Some(fields.logtime);
        scratch.logtime_text = iso(fields.logtime);
    }
    scratch.process.clear();
    match fields.process {
        ProcessRef::Name(name) => scratch.process.push_str(name),
        ProcessRef::CpuPin { cpu, pin } => {
            scratch.process.push_str(itoa::Buffer::new().format(cpu));
            scratch.process.push(',');
            scratch.process.push_str(itoa::Buffer::new().format(pin));
        }
    }
    let mut number = itoa::Buffer::new();
    let event_number = number.format(fields.event_number);
    scratch.subject_keys.clear();
    for subject in fields.subjects {
        scratch.subject_keys.push_str("subject.");
        scratch.subject_keys.push_str(&subject.token);
    }
    let attributes = [
        ("system", fields.system),
        ("process", scratch.process.as_str()),
        ("subsystem_owner", fields.owner),
        ("subsystem", fields.subsystem),
        ("subsystem_version", fields.version),
        ("event_number", event_number),
        ("collector", config.collector.as_str()),
        ("log_file", scratch.log_file.as_str()),
        ("logtime", scratch.logtime_text.as_str()),
        ("action_needed", "true"),
    ];
    let attributes = if fields.action_needed {
        &attributes[..]
    } else {
        &attributes[..attributes.len() - 1]
    };
    let severity = severity(config, fields);
    if fields.subjects.is_empty() {
        // Format A never has subjects: no list to build.
        events.push_fields(
            &scratch.id,
            fields.gentime,
            severity,
            attributes.iter().copied(),
            fields.text,
        );
        return;
    }
    let mut with_subjects = attributes.to_vec();
    let mut keys = scratch.subject_keys.as_str();
    for subject in fields.subjects {
        let (key, rest) = keys.split_at("subject.".len() + subject.token.len());
        keys = rest;
        with_subjects.push((key, subject.value.as_str()));
    }
    events.push_fields(
        &scratch.id,
        fields.gentime,
        severity,
        with_subjects.iter().copied(),
        fields.text,
    );
}

/// A record that did not parse: emitted with its raw text, never dropped.
pub(crate) fn unparsed(config: &Config, record: &Record, error: &ParseError, time: i64) -> Event {
    Event {
        id: record_id(config, record.file, record.start),
        time,
        severity: Severity::Warning,
        attributes: vec![
            Attribute::new("parse_error", error.0.clone()),
            Attribute::new("system", config.system.clone()),
            Attribute::new("collector", config.collector.clone()),
            Attribute::new("log_file", file_name(record.file)),
            Attribute::new("offset", record.start.to_string()),
        ],
        body: record.text.clone(),
    }
}

/// Events that vanished before they were read: a critical event, like EMS
/// event 1018 (FILES-LOST).
pub(crate) fn gap(config: &Config, gap: &Gap, time: i64) -> Event {
    let (kind, body) = match gap.kind {
        GapKind::Purged { last_file } => (
            "purged",
            if last_file == gap.file {
                format!(
                    "EMS log file {} was purged before it was read to its end (read up to byte \
                     {}); the events after that are lost",
                    file_name(gap.file),
                    gap.offset
                )
            } else {
                format!(
                    "EMS log files {} to {} were purged before they were read (reading had \
                     reached byte {} of the first); their events are lost",
                    file_name(gap.file),
                    file_name(last_file),
                    gap.offset
                )
            },
        ),
        GapKind::Truncated { size } => (
            "truncated",
            format!(
                "EMS log file {} shrank to {size} bytes below the read position {}; the events \
                 that were beyond it are lost and the file is read again from its start",
                file_name(gap.file),
                gap.offset
            ),
        ),
    };
    let mut attributes = vec![
        Attribute::new("gap", kind),
        Attribute::new("ems_equivalent", "1018"),
        Attribute::new("system", config.system.clone()),
        Attribute::new("collector", config.collector.clone()),
        Attribute::new("log_file", file_name(gap.file)),
        Attribute::new("offset", gap.offset.to_string()),
    ];
    if let GapKind::Purged { last_file } = gap.kind {
        attributes.push(Attribute::new("last_log_file", file_name(last_file)));
    }
    Event {
        id: format!(
            "{}:{}:gap:{}:{}",
            config.system,
            config.collector,
            file_name(gap.file),
            gap.offset
        ),
        time,
        severity: Severity::Critical,
        attributes,
        body,
    }
}
