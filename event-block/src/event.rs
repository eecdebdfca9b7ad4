//! The owned event: what a source produces and a destination receives,
//! decoded. The one definition the host (`safd-connector`) and the plugin
//! SDK (`safd-plugin-sdk`) both use, so the two can never disagree on a
//! field, a severity code or how an event's size is counted. The WIT
//! contract documents the same shape as its `event` record.

use crate::{BlockWriter, EventRef, SEVERITY_LEVELS};

/// Microseconds since the Unix epoch, UTC.
pub type Timestamp = i64;

/// How urgent an event is, from least to most. The order of the variants is
/// the code of the event-block encoding (the index in the WIT `severity`
/// enum).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum Severity {
    Debug,
    Info,
    Warning,
    Minor,
    Major,
    Critical,
}

impl Severity {
    /// Every severity, least urgent first.
    pub const ALL: [Severity; SEVERITY_LEVELS as usize] = [
        Self::Debug,
        Self::Info,
        Self::Warning,
        Self::Minor,
        Self::Major,
        Self::Critical,
    ];

    /// The severity with this code of the event-block encoding, if there is
    /// one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// This severity's code in the event-block encoding.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The lowercase name used in configs, logs and the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Minor => "minor",
            Self::Major => "major",
            Self::Critical => "critical",
        }
    }

    /// The severity named `name` (`debug`, `info`, `warning`, `minor`,
    /// `major`, `critical`), as operators write it in configs.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// One key/value attribute of an event, e.g. `("subsystem", "TMF")`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Attribute {
    pub key: String,
    pub value: String,
}

impl Attribute {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// An event as a source produces it, owned. Events cross the plugin
/// boundary in blocks; this is the form for code that keeps or builds one
/// event at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Event {
    /// Stable identity assigned by the source: the same event read twice
    /// gets the same id.
    pub id: String,
    /// When the event happened, microseconds since the Unix epoch (UTC).
    pub time: Timestamp,
    pub severity: Severity,
    pub attributes: Vec<Attribute>,
    /// The human-readable text.
    pub body: String,
}

impl Event {
    /// The bytes counted against batch byte limits ([`crate::byte_size`]).
    pub fn byte_size(&self) -> usize {
        crate::byte_size(
            &self.id,
            &self.body,
            self.attributes
                .iter()
                .map(|a| (a.key.as_str(), a.value.as_str())),
        )
    }

    /// Copy an event read from a block.
    pub fn from_ref(event: &EventRef<'_>) -> Self {
        Self {
            id: event.id.to_owned(),
            time: event.time,
            // The block reader refuses codes without a severity.
            severity: Severity::from_code(event.severity).unwrap_or(Severity::Critical),
            attributes: event
                .attributes
                .iter()
                .map(|(key, value)| Attribute::new(key, value))
                .collect(),
            body: event.body.to_owned(),
        }
    }

    /// Append this event to an event block.
    pub fn write_to(&self, block: &mut BlockWriter) {
        block.push(
            &self.id,
            self.time,
            self.severity.code(),
            self.attributes.iter().map(|a| (&a.key, &a.value)),
            &self.body,
        );
    }

    /// Append this event with its seq to a sequenced block.
    pub fn write_sequenced_to(&self, seq: u64, block: &mut BlockWriter) {
        block.push_sequenced(
            seq,
            &self.id,
            self.time,
            self.severity.code(),
            self.attributes.iter().map(|a| (&a.key, &a.value)),
            &self.body,
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn severity_codes_names_and_order_agree() {
        for (code, severity) in Severity::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(severity.code()), code);
            assert_eq!(Severity::from_code(severity.code()), Some(severity));
            assert_eq!(Severity::from_name(severity.as_str()), Some(severity));
        }
        assert_eq!(Severity::from_code(SEVERITY_LEVELS), None);
        assert_eq!(Severity::from_name("CRITICAL"), None);
        assert!(Severity::Debug < Severity::Critical);
    }

    #[test]
    fn an_event_survives_a_block_and_counts_as_its_ref_does() {
        let event = Event {
            id: "ems-1".into(),
            time: -3,
            severity: Severity::Major,
            attributes: vec![Attribute::new("subsystem", "TMF")],
            body: "LINE NOT READY".into(),
        };
        let mut block = BlockWriter::new();
        event.write_to(&mut block);
        let (count, bytes) = block.finish();
        let read: Vec<_> = crate::events(&bytes, count)
            .map(|e| e.map(|e| (Event::from_ref(&e), e.byte_size())))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read, vec![(event.clone(), event.byte_size())]);
    }
}
