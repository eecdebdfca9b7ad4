//! Format B's times. Nearly every time in a log is written the way safd
//! writes times itself (`2024-03-11T01:17:10.004870Z`); that shape is read
//! here directly (jiff's general parser was ~5 % of format B's cost in the
//! plugin) and any other ISO-8601 form is left to jiff.

/// Microseconds since the Unix epoch of `text`, if it is exactly
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` with a valid date, a year from 1000 on and
/// no leap second — then [`super::iso_time`] of the result is `text` again.
pub(crate) fn canonical_micros(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 27
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[26] != b'Z'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        b[range].iter().try_fold(0i64, |value, digit| {
            digit
                .is_ascii_digit()
                .then(|| value * 10 + i64::from(digit - b'0'))
        })
    };
    let year = number(0..4)?;
    let month = number(5..7)?;
    let day = number(8..10)?;
    let hour = number(11..13)?;
    let minute = number(14..16)?;
    let second = number(17..19)?;
    let micros = number(20..26)?;
    let valid = year >= 1000
        && (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60;
    if !valid {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(seconds * 1_000_000 + micros)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`, for years ≥ 0).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn jiff_micros(text: &str) -> Option<i64> {
        text.parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.as_microsecond())
    }

    #[test]
    fn the_canonical_shape_is_read_and_others_are_left_to_jiff() {
        let text = "2024-03-11T01:17:10.004870Z";
        assert_eq!(canonical_micros(text), jiff_micros(text));
        assert_eq!(
            canonical_micros("2024-02-29T00:00:00.000000Z").map(|_| ()),
            Some(())
        );
        for other in [
            "2023-02-29T00:00:00.000000Z", // no such day
            "2024-03-11T01:17:60.000000Z", // a leap second: jiff's rules
            "2024-03-11T01:17:10.00487Z",
            "2024-03-11T01:17:10Z",
            "2024-03-11T01:17:10.004870+00:00",
            "0999-03-11T01:17:10.004870Z",
            "2024-13-11T01:17:10.004870Z",
            "2024-03-11 01:17:10.004870Z",
        ] {
            assert_eq!(canonical_micros(other), None, "{other}");
        }
    }

    proptest! {
        /// Any instant safd writes reads back to itself, as jiff reads it.
        #[test]
        fn safd_times_read_back_as_jiff_reads_them(
            micros in -30_610_224_000_000_000i64..253_402_300_799_999_999,
        ) {
            let text = super::super::iso_time(micros);
            let read = canonical_micros(&text);
            prop_assert!(read.is_none() || read == Some(micros), "{text}");
            prop_assert_eq!(jiff_micros(&text), Some(micros));
            if micros >= 0 {
                prop_assert_eq!(read, Some(micros), "{}", text);
            }
        }

        /// Any 27 characters of the canonical shape: read as jiff reads them, or left to jiff.
        #[test]
        fn the_shape_with_any_digits_agrees_with_jiff(
            digits in proptest::collection::vec(0u8..10, 20),
        ) {
            let d = |range: std::ops::Range<usize>| digits[range].iter().map(|d| char::from(b'0' + d)).collect::<String>();
            let text = format!("{}-{}-{}T{}:{}:{}.{}Z", d(0..4), d(4..6), d(6..8), d(8..10), d(10..12), d(12..14), d(14..20));
            if let Some(read) = canonical_micros(&text) {
                prop_assert_eq!(Some(read), jiff_micros(&text), "{}", text);
            }
        }
    }
}
