//! Time stamps as text.

use std::fmt::Write as _;

/// The current time, microseconds since the Unix epoch (0 if the clock is
/// before it).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Microseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn rfc3339(out: &mut String, micros: i64) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        // Outside what four digits hold: the general path, sign included.
        let _ = write!(out, "{year:04}");
    } else {
        padded(out, year as u64, 4);
    }
    out.push('-');
    padded(out, u64::from(month), 2);
    out.push('-');
    padded(out, u64::from(day), 2);
    out.push('T');
    // Both are in range by construction (rem_euclid).
    let (of_day, frac) = (of_day as u64, frac as u64);
    padded(out, of_day / 3600, 2);
    out.push(':');
    padded(out, of_day / 60 % 60, 2);
    out.push(':');
    padded(out, of_day % 60, 2);
    out.push('.');
    padded(out, frac, 6);
    out.push('Z');
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) in the proleptic Gregorian calendar → days since
/// 1970-01-01 (the inverse of [`civil_from_days`]).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parse an RFC 3339 time, `YYYY-MM-DDTHH:MM:SS[.f…](Z|±HH:MM)`, into
/// microseconds since the epoch (fractions beyond microseconds are cut);
/// `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let (text, offset_secs) = if let Some(text) = text.strip_suffix(['Z', 'z']) {
        (text, 0)
    } else {
        let at = text.len().checked_sub(6)?;
        let (text, offset) = (text.get(..at)?, text.get(at..)?);
        let sign = match offset.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return None,
        };
        let (hours, minutes) = offset[1..].split_once(':')?;
        let (hours, minutes): (i64, i64) = (number(hours)?, number(minutes)?);
        if hours > 23 || minutes > 59 {
            return None;
        }
        (text, sign * (hours * 3600 + minutes * 60))
    };
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut date = date.splitn(3, '-');
    let year: i64 = number(date.next()?)?;
    let month: u32 = number(date.next()?)?;
    let day: u32 = number(date.next()?)?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut hms = hms.splitn(3, ':');
    let hour: i64 = number(hms.next()?)?;
    let minute: i64 = number(hms.next()?)?;
    let second: i64 = number(hms.next()?)?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
        || (time.contains('.') && frac.is_empty())
    {
        return None;
    }
    let mut micros = 0i64;
    for (i, c) in frac.chars().enumerate() {
        let digit = i64::from(c.to_digit(10)?);
        if i < 6 {
            micros += digit * 10i64.pow(5 - i as u32);
        }
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_secs;
    Some(secs * 1_000_000 + micros)
}

/// Digits only (no sign, no spaces), as a number.
fn number<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Append `n` zero-padded to `width` digits (`n` must fit).
fn padded(out: &mut String, n: u64, width: u32) {
    let mut divisor = 10u64.pow(width.saturating_sub(1));
    while divisor > 0 {
        out.push(char::from(b'0' + (n / divisor % 10) as u8));
        divisor /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_offsets_fractions_and_refuses_the_rest() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-03-11T01:17:10.002311Z"),
            Some(1_710_119_830_002_311)
        );
        assert_eq!(
            parse_rfc3339("2024-03-11T03:17:10.002311987+02:00"),
            Some(1_710_119_830_002_311)
        );
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00-01:30"),
            Some(5_400_000_000)
        );
        for bad in [
            "",
            "2024-03-11",
            "2024-13-01T00:00:00Z",
            "2024-03-11T24:00:00Z",
            "2024-03-11T00:00:00",
            "2024-03-11T00:00:00.Z",
            "2024-03-11T00:00:00+2:00",
            "+2024-03-11T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        for days in [-800_000, -1, 0, 1, 19_793, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
