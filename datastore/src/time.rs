//! RFC 3339 times as the status documents carry them (`2006-01-02T15:04:05Z`,
//! what Felix writes), on top of `jiff`.
//!
//! Why `jiff` (built without default features: no time zone database): it
//! formats and parses RFC 3339 with offsets and fractions, and adds one
//! crate (`jiff-core`) to the tree. `humantime` parses only UTC (`Z`)
//! times, so `+02:00` reports would stop parsing; `time` needs the
//! formatting and parsing features and four helper crates.

use std::time::{SystemTime, UNIX_EPOCH};

use jiff::tz::Offset;
use jiff::Timestamp;

/// `2006-01-02T15:04:05Z` for a UTC time, in whole seconds; times before
/// 1970 (a clock that is badly off) as the epoch.
pub fn format_rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let stamp = i64::try_from(secs)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or(Timestamp::MAX);
    // Precision 0: whole seconds, no fraction.
    format!("{stamp:.0}")
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` (also with `t`, `z` or a
/// space between date and time) to Unix seconds; the fraction is dropped.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    text.parse::<Timestamp>().ok().map(Timestamp::as_second)
}

/// Unix seconds of a UTC calendar date and time; `None` when it is not a
/// valid one.
pub fn unix_seconds(
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
) -> Option<i64> {
    let small = |v: i64| i8::try_from(v).ok();
    let date_time = jiff::civil::DateTime::new(
        i16::try_from(year).ok()?,
        small(month)?,
        small(day)?,
        small(hour)?,
        small(minute)?,
        small(second)?,
        0,
    )
    .ok()?;
    Offset::UTC
        .to_timestamp(date_time)
        .ok()
        .map(Timestamp::as_second)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn formats_utc_in_whole_seconds() {
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723); // 2000-02-29 01:02:03
        assert_eq!(format_rfc3339(t), "2000-02-29T01:02:03Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799); // 2099-12-31 23:59:59
        assert_eq!(format_rfc3339(t), "2099-12-31T23:59:59Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(format_rfc3339(t), "1970-01-01T00:00:01Z", "no fraction");
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(format_rfc3339(before), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn parses_what_felix_and_margay_write() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-05-01T10:00:00Z"), Some(1_714_557_600));
        assert_eq!(
            parse_rfc3339("2024-05-01T10:00:00.123456Z"),
            Some(1_714_557_600)
        );
        assert_eq!(
            parse_rfc3339("2024-05-01T12:00:00+02:00"),
            Some(1_714_557_600)
        );
        assert_eq!(parse_rfc3339("2024-05-01t10:00:00z"), Some(1_714_557_600));
        assert_eq!(parse_rfc3339("2024-05-01 10:00:00Z"), Some(1_714_557_600));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2024-05-01T10:00:00"), None, "no offset");
    }

    #[test]
    fn calendar_dates_convert() {
        assert_eq!(unix_seconds(1970, 1, 1, 0, 0, 0), Some(0));
        assert_eq!(unix_seconds(2020, 1, 2, 0, 0, 0), Some(18_263 * 86_400));
        assert_eq!(unix_seconds(2020, 2, 30, 0, 0, 0), None);
    }
}
