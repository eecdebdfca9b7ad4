//! EMS records and gaps → safd events.

use crate::config::Config;
use safd_ems::ParseError;
use safd_ems::safd_event;
use safd_ems::tail::{Gap, GapKind, RecordRef, file_name};
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

pub(crate) use safd_ems::safd_event::Fields;

/// Buffers reused from event to event: converting a record allocates
/// nothing once they have grown, and the parts that repeat (the log file's
/// name and the id's prefix) are formatted once.
#[derive(Default)]
pub(crate) struct Scratch {
    /// The file `log_file` and `id_prefix` are for.
    file: Option<u32>,
    log_file: String,
    /// `system:collector:log_file:`
    id_prefix: String,
    id: String,
    /// The attributes' own buffers.
    attributes: safd_event::Scratch,
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

/// Append the event of a record that parsed.
pub(crate) fn push_event(
    events: &mut EventWriter,
    config: &Config,
    scratch: &mut Scratch,
    record: &RecordRef<'_>,
    fields: &Fields<'_>,
) {
    scratch.for_file(config, record.file);
    scratch.id.clear();
    scratch.id.push_str(&scratch.id_prefix);
    scratch
        .id
        .push_str(itoa::Buffer::new().format(record.start));
    let severity = safd_event::severity(&config.overrides, fields);
    let origin = [
        ("collector", config.collector.as_str()),
        ("log_file", scratch.log_file.as_str()),
    ];
    safd_event::with_attributes(fields, &origin, &mut scratch.attributes, |attributes| {
        events.push_fields(
            &scratch.id,
            fields.gentime,
            severity,
            attributes.iter().copied(),
            fields.text,
        );
    });
}

/// A record that did not parse: emitted with its raw text, never dropped.
pub(crate) fn unparsed(
    config: &Config,
    record: &RecordRef<'_>,
    error: &ParseError,
    time: i64,
) -> Event {
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
        body: record.text.to_string(),
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
