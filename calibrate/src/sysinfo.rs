//! Facts for a profile's provenance that come from the host: today's date and the driver's version.

use std::time::{SystemTime, UNIX_EPOCH};

/// Civil date (y, m, d) of a day count since 1970-01-01 (Howard Hinnant's algorithm), so no date crate is
/// needed for one ISO string.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Today's date in UTC, ISO 8601 (YYYY-MM-DD).
pub fn today_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The kernel-module version from the text of /proc/driver/nvidia/version, e.g. "550.54.15": the CUDA driver
/// API only reports the CUDA version the driver supports, not the driver package.
pub fn parse_nvidia_proc_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    line.split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.contains('.'))
        .map(str::to_string)
}

pub fn nvidia_driver_version() -> Option<String> {
    std::fs::read_to_string("/proc/driver/nvidia/version")
        .ok()
        .as_deref()
        .and_then(parse_nvidia_proc_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_of_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let t = today_utc();
        assert_eq!(t.len(), 10);
        assert!(t.starts_with("20"), "{t}");
    }

    #[test]
    fn driver_version_from_proc_text() {
        let text = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n\
                    GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n";
        assert_eq!(
            parse_nvidia_proc_version(text).as_deref(),
            Some("550.54.15")
        );
        let open =
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build\n";
        assert_eq!(
            parse_nvidia_proc_version(open).as_deref(),
            Some("570.86.15")
        );
        assert_eq!(parse_nvidia_proc_version("garbage"), None);
    }
}
