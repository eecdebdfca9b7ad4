//! Collecting problems with their lines and keys, and the ranges the
//! numbers of a configuration must lie in.

use super::super::{Problem, line_of};
use safd_event_block::names;
use toml::Spanned;

/// Collects problems with their lines.
pub(super) struct Findings<'a> {
    pub(super) text: &'a str,
    pub(super) problems: Vec<Problem>,
}

impl Findings<'_> {
    pub(super) fn at<T>(
        &mut self,
        spanned: &Spanned<T>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let line = if spanned.span().is_empty() {
            0
        } else {
            line_of(self.text, spanned.span().start)
        };
        self.problems.push(Problem {
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn whole(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            line: 0,
            key: key.into(),
            message: message.into(),
        });
    }

    /// A number outside `range` is a problem naming the range and unit.
    pub(super) fn within<T: Copy + Into<u64>>(
        &mut self,
        value: &Spanned<T>,
        key: String,
        range: std::ops::RangeInclusive<u64>,
        unit: &str,
    ) {
        let number: u64 = (*value.get_ref()).into();
        if !range.contains(&number) {
            self.at(
                value,
                key,
                format!(
                    "is {number}; give {} to {} ({unit})",
                    range.start(),
                    range.end()
                ),
            );
        }
    }

    /// A name that breaks the rules (`safd_event_block::names`).
    pub(super) fn name<T>(&mut self, spanned: &Spanned<T>, key: String, what: &str, name: &str) {
        if let Err(err) = names::check(name) {
            self.at(
                spanned,
                key,
                format!(
                    "{what} `{}` {err}; names go to the servers and their consoles \
                     (see docs/configuration.md, Names)",
                    names::quote(name, names::QUOTE_CHARS)
                ),
            );
        }
    }
}

/// Allowed ranges of the numbers a configuration sets: what safd can work
/// with, not what is wise (docs/configuration.md lists the defaults).
pub(super) mod ranges {
    use std::ops::RangeInclusive;

    const MIB_MAX: u64 = 16 << 20; // 16 TiB
    pub const CAPACITY_MIB: RangeInclusive<u64> = 1..=MIB_MAX;
    pub const RETENTION_MIB: RangeInclusive<u64> = 0..=MIB_MAX;
    pub const RETENTION_HOURS: RangeInclusive<u64> = 0..=87_600; // 10 years
    pub const MIN_FREE_MIB: RangeInclusive<u64> = 0..=MIB_MAX;
    pub const HIGH_WATER_PERCENT: RangeInclusive<u64> = 1..=100;
    pub const EVENTS: RangeInclusive<u64> = 1..=65_536;
    pub const BYTES: RangeInclusive<u64> = 1_024..=(64 << 20);
    pub const TIMEOUT_MS: RangeInclusive<u64> = 10..=600_000;
    pub const PROBE_MS: RangeInclusive<u64> = 10..=3_600_000;
    pub const LINGER_MS: RangeInclusive<u64> = 0..=600_000;
    pub const COUNT: RangeInclusive<u64> = 1..=10_000;
}
