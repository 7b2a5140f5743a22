//! KooGallery time formats (spec §10 and decision D10).

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// `yyyyMMddHHmmss`, UTC: what koogate writes where the marketplace uses a time (D10).
pub fn format_compact(t: DateTime<Utc>) -> String {
    t.format("%Y%m%d%H%M%S").to_string()
}

/// `yyyyMMddHHmmssSSS`, UTC: V1 `timeStamp` and usage `statisticalTime`.
pub fn format_millis(t: DateTime<Utc>) -> String {
    t.format("%Y%m%d%H%M%S%3f").to_string()
}

/// Parses `yyyyMMddHHmmss` or `yyyyMMddHHmmssSSS` (D10: the V2 `refreshInstance`
/// example carries 17 digits where the table says 14), as UTC.
pub fn parse_compact(s: &str) -> Option<DateTime<Utc>> {
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (secs, millis) = match s.len() {
        14 => (s, 0),
        17 => (&s[..14], s[14..].parse::<i64>().ok()?),
        _ => return None,
    };
    let num = |r: std::ops::Range<usize>| secs[r].parse::<u32>().ok();
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(4..6)?, num(6..8)?)?;
    let naive: NaiveDateTime = date.and_hms_opt(num(8..10)?, num(10..12)?, num(12..14)?)?;
    Some(Utc.from_utc_datetime(&naive) + chrono::Duration::milliseconds(millis))
}

/// Parses a `getLicenseAsync` time (spec §6.2, D10): `2023-10-27 10:30:15 z` as
/// documented — a `T` for the space, milliseconds, and a trailing `z`, `Z` or `UTC` are
/// allowed — or either compact form; always UTC.
pub fn parse_license_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Some(t) = parse_compact(s) {
        return Some(t);
    }
    let bare = ["UTC", "utc", "z", "Z"]
        .iter()
        .find_map(|zone| s.strip_suffix(zone))
        .unwrap_or(s)
        .trim_end();
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(bare, format).ok())
        .map(|naive| Utc.from_utc_datetime(&naive))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_compact_forms_parse_as_utc() {
        let t = parse_compact("20221124023618").unwrap();
        assert_eq!(t.timestamp(), 1_669_257_378);
        let t = parse_compact("20221124023618256").unwrap();
        assert_eq!(t.timestamp_millis(), 1_669_257_378_256);
        assert_eq!(format_compact(t), "20221124023618");
        assert_eq!(format_millis(t), "20221124023618256");
    }

    #[test]
    fn license_times_parse_in_the_documented_and_compact_forms() {
        let t = 1_698_402_615;
        for ok in [
            "2023-10-27 10:30:15 z",
            "2023-10-27 10:30:15 Z",
            "2023-10-27 10:30:15Z",
            "2023-10-27T10:30:15 UTC",
            "2023-10-27 10:30:15",
            "20231027103015",
        ] {
            assert_eq!(
                parse_license_time(ok).map(|v| v.timestamp()),
                Some(t),
                "{ok}"
            );
        }
        assert_eq!(
            parse_license_time("2023-10-27 10:30:15.250 z").map(|v| v.timestamp_millis()),
            Some(t * 1000 + 250)
        );
        for bad in [
            "",
            "2023-10-27",
            "27/10/2023 10:30:15",
            "2023-10-27 10:30:15 +08:00",
            "tomorrow",
        ] {
            assert_eq!(parse_license_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn malformed_times_are_refused() {
        for bad in [
            "",
            "2022112402361",
            "202211240236189",
            "20221324023618",
            "20221124253618",
            "2022-11-24 02:36",
            "2022112402361８",
        ] {
            assert_eq!(parse_compact(bad), None, "{bad:?}");
        }
    }
}
