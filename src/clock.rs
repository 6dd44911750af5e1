//! Wall-clock timestamps in the one format the service writes: RFC 3339, UTC, milliseconds
//! (`2026-01-26T14:30:45.123Z`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds for a receipt's timestamp: now, but never earlier than one this process gave
/// before. When the wall clock is stepped back (an NTP correction, a VM resumed), receipts keep
/// the last time given until the clock passes it again, so the timestamps of a chain that one
/// process writes never run backwards as its `seq` runs forwards. Only receipts use it: a
/// token's expiry or an entitlement's is judged on the clock as it is.
pub fn receipt_ms() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    not_before(&LAST, now_ms())
}

/// `now`, or the latest value `last` has held if that is later; `last` keeps the later one.
pub fn not_before(last: &AtomicU64, now: u64) -> u64 {
    last.fetch_max(now, Ordering::Relaxed).max(now)
}

/// `ms` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_millis(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// Now, formatted as [`rfc3339_millis`].
pub fn now_rfc3339() -> String {
    rfc3339_millis(now_ms())
}

/// Validates an RFC 3339 UTC timestamp (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`) and returns it in
/// the service's own form (milliseconds), so that such strings compare in time order.
///
/// ```
/// use tai_autonomics::clock::normalize_rfc3339;
/// assert_eq!(normalize_rfc3339("2027-01-01T00:00:00Z").as_deref(), Some("2027-01-01T00:00:00.000Z"));
/// assert_eq!(normalize_rfc3339("2027-01-01T00:00:00.5Z").as_deref(), Some("2027-01-01T00:00:00.500Z"));
/// assert!(normalize_rfc3339("2027-13-01T00:00:00Z").is_none());
/// assert!(normalize_rfc3339("2027-02-29T00:00:00Z").is_none()); // not a leap year
/// assert!(normalize_rfc3339("2028-02-29T00:00:00Z").is_some());
/// assert!(normalize_rfc3339("2100-02-29T00:00:00Z").is_none());
/// assert!(normalize_rfc3339("2027-04-31T00:00:00Z").is_none());
/// assert!(normalize_rfc3339("tomorrow").is_none());
/// ```
pub fn normalize_rfc3339(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 30 || *b.last()? != b'Z' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        s.get(r)
            .filter(|d| d.bytes().all(|c| c.is_ascii_digit()))?
            .parse()
            .ok()
    };
    let (y, mo, d, h, mi, sec) = (
        digits(0..4)?,
        digits(5..7)?,
        digits(8..10)?,
        digits(11..13)?,
        digits(14..16)?,
        digits(17..19)?,
    );
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match mo {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(&mo) || !(1..=month_days).contains(&d) || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let frac = &s[19..s.len() - 1];
    let millis = match frac.strip_prefix('.') {
        None if frac.is_empty() => 0,
        Some(f) if !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()) => {
            format!("{f:0<3}")[..3].parse().ok()?
        }
        _ => return None,
    };
    Some(format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}.{millis:03}Z"
    ))
}

/// Milliseconds since the epoch of an RFC 3339 UTC timestamp ([`normalize_rfc3339`]'s forms);
/// `None` for anything else or a time before 1970.
///
/// ```
/// use tai_autonomics::clock::{millis_of, rfc3339_millis};
/// assert_eq!(millis_of("2026-01-26T14:30:45.123Z"), Some(1_769_437_845_123));
/// assert_eq!(millis_of(&rfc3339_millis(951_782_400_000)), Some(951_782_400_000));
/// assert_eq!(millis_of("1969-12-31T23:59:59Z"), None);
/// ```
pub fn millis_of(s: &str) -> Option<u64> {
    let n = normalize_rfc3339(s)?;
    let num = |r: std::ops::Range<usize>| n[r].parse::<i64>().ok();
    let days = days_from_civil(num(0..4)?, num(5..7)?, num(8..10)?);
    let secs = days * 86_400 + num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?;
    u64::try_from(secs * 1000 + num(20..23)?).ok()
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let day_of_year = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), counting in 400-year eras
/// that start on 1 March so that leap days fall at the end of an era-year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_times_hold_still_while_the_clock_is_behind_and_follow_it_again_after() {
        let last = AtomicU64::new(0);
        assert_eq!(not_before(&last, 1_000), 1_000);
        assert_eq!(not_before(&last, 1_005), 1_005);
        // Stepped back 3 s: the last time given is kept until the clock passes it.
        assert_eq!(not_before(&last, 5), 1_005);
        assert_eq!(not_before(&last, 1_004), 1_005);
        assert_eq!(not_before(&last, 1_006), 1_006);
        let a = receipt_ms();
        assert!(receipt_ms() >= a);
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_769_437_845_123),
            "2026-01-26T14:30:45.123Z"
        );
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(4_107_542_399_999),
            "2100-02-28T23:59:59.999Z"
        );
    }

    #[test]
    fn every_day_boundary_over_four_centuries_is_consistent() {
        let mut prev = civil_from_days(-1);
        for d in 0..146_097 {
            let cur = civil_from_days(d);
            assert!(cur > prev, "day {d}: {cur:?} after {prev:?}");
            assert!((1..=12).contains(&cur.1) && (1..=31).contains(&cur.2));
            assert_eq!(days_from_civil(cur.0, cur.1.into(), cur.2.into()), d);
            prev = cur;
        }
    }
}
