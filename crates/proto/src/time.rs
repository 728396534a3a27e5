//! Wall-clock timestamps as the seeds' clients expect them: ISO-8601, UTC, milliseconds, `Z`.

use std::time::SystemTime;

/// The current time as `2023-09-13T18:30:45.123Z`.
pub fn now_iso() -> String {
    iso(SystemTime::now())
}

/// `t` as `2023-09-13T18:30:45.123Z`.
pub fn iso(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Nanoseconds since the Unix epoch; used by the benchmark to measure publish-to-receipt latency
/// between processes on one machine.
pub fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_millis_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_694_629_845_123);
        assert_eq!(iso(t), "2023-09-13T18:30:45.123Z");
    }
}
