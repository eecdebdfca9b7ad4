//! The time zone format A's local times are printed in.

use jiff::tz::TimeZone;

/// A configured time zone: an IANA name (`Europe/Berlin`), `UTC`, or a
/// fixed offset (`+05:30`).
#[derive(Clone, Debug)]
pub struct Zone(TimeZone);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown time zone `{0}`: use an IANA name such as `Europe/Berlin`, `UTC`, or a fixed \
     offset such as `+05:30`"
)]
pub struct ZoneError(pub String);

impl Zone {
    pub fn utc() -> Self {
        Self(TimeZone::UTC)
    }

    pub fn parse(name: &str) -> Result<Self, ZoneError> {
        let name = name.trim();
        if let Some(offset) = parse_offset(name) {
            return Ok(Self(TimeZone::fixed(offset)));
        }
        TimeZone::get(name)
            .map(Self)
            .map_err(|_| ZoneError(name.to_owned()))
    }

    /// Local civil time → microseconds since the Unix epoch. A time that
    /// falls in a DST gap or fold resolves like most systems do (the
    /// earlier instant of a fold, shifted forward out of a gap).
    pub(crate) fn to_micros(&self, civil: jiff::civil::DateTime) -> Option<i64> {
        let zoned = self.0.to_ambiguous_zoned(civil).compatible().ok()?;
        Some(zoned.timestamp().as_microsecond())
    }

    /// Microseconds since the Unix epoch → local civil time.
    pub(crate) fn to_civil(&self, micros: i64) -> Option<jiff::civil::DateTime> {
        let ts = jiff::Timestamp::from_microsecond(micros).ok()?;
        Some(self.0.to_datetime(ts))
    }
}

fn parse_offset(text: &str) -> Option<jiff::tz::Offset> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (hours, minutes) = rest.split_once(':').unwrap_or((rest, "0"));
    let hours: i32 = hours.parse().ok()?;
    let minutes: i32 = minutes.parse().ok()?;
    if hours > 14 || minutes > 59 {
        return None;
    }
    jiff::tz::Offset::from_seconds(sign * (hours * 3600 + minutes * 60)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_offsets_and_refusals() {
        assert!(Zone::parse("UTC").is_ok());
        assert!(Zone::parse("Europe/Berlin").is_ok());
        assert!(Zone::parse("+05:30").is_ok());
        assert!(Zone::parse("-08").is_ok());
        let err = Zone::parse("Mars/Olympus").unwrap_err();
        assert!(err.to_string().contains("IANA"), "{err}");
        assert!(Zone::parse("+25:00").is_err());
    }
}
