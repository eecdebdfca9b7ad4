//! Time stamps as text.

use std::fmt::Write as _;

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

/// Append `n` zero-padded to `width` digits (`n` must fit).
fn padded(out: &mut String, n: u64, width: u32) {
    let mut divisor = 10u64.pow(width.saturating_sub(1));
    while divisor > 0 {
        out.push(char::from(b'0' + (n / divisor % 10) as u8));
        divisor /= 10;
    }
}
