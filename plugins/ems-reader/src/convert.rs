//! EMS records and gaps → safd events.

use crate::config::Config;
use safd_ems::tail::{Gap, GapKind, Record, file_name};
use safd_ems::{EmsEvent, ParseError};
use safd_plugin_sdk::types::{Attribute, Event, Severity};

/// A stable id: the same record read twice (after a restart, a seek) gets
/// the same id, so receivers deduplicate it.
fn record_id(config: &Config, file: u32, offset: u64) -> String {
    format!(
        "{}:{}:{}:{offset}",
        config.system,
        config.collector,
        file_name(file)
    )
}

fn iso(micros: i64) -> String {
    safd_ems::json::iso_time(micros)
}

pub(crate) fn event(config: &Config, record: &Record, ems: EmsEvent) -> Event {
    let subsystem = ems.ssid.name.to_ascii_uppercase();
    let severity = config
        .overrides
        .get(&(subsystem, ems.event_number))
        .copied()
        .unwrap_or(if ems.emphasis {
            Severity::Critical
        } else if ems.action_needed {
            Severity::Major
        } else {
            Severity::Info
        });
    let mut attributes = vec![
        Attribute::new("system", ems.system),
        Attribute::new("process", ems.process.to_string()),
        Attribute::new("subsystem_owner", ems.ssid.owner),
        Attribute::new("subsystem", ems.ssid.name),
        Attribute::new("subsystem_version", ems.ssid.version),
        Attribute::new("event_number", ems.event_number.to_string()),
        Attribute::new("collector", config.collector.clone()),
        Attribute::new("log_file", file_name(record.file)),
        Attribute::new("logtime", iso(ems.logtime)),
    ];
    if ems.action_needed {
        attributes.push(Attribute::new("action_needed", "true"));
    }
    for subject in ems.subjects {
        attributes.push(Attribute::new(
            format!("subject.{}", subject.token),
            subject.value,
        ));
    }
    Event {
        id: record_id(config, record.file, record.start),
        time: ems.gentime,
        severity,
        attributes,
        body: ems.text,
    }
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
