//! The engine's clock: the time this process stamps on outcomes, ids and
//! its own timers, in microseconds since the epoch.
//!
//! It is the system clock, moved by `TASKITO_TEST_CLOCK_SKEW` seconds
//! (read once, may be negative or fractional) when that variable is set.
//! The variable exists for tests: a worker process started with it stands
//! for a machine whose clock is wrong, which a backend shared by many
//! machines (PostgreSQL) must not trust for leases and due times. SQLite
//! serves one machine, so its storage reads this clock too.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::job::Micros;

/// Seconds to add to the system clock, for tests of skewed machines.
pub const SKEW_ENV: &str = "TASKITO_TEST_CLOCK_SKEW";

static SKEW: OnceLock<Micros> = OnceLock::new();

/// This process's idea of now.
pub fn now_micros() -> Micros {
    system_micros().saturating_add(skew())
}

fn system_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as Micros)
        .unwrap_or(0)
}

fn skew() -> Micros {
    *SKEW.get_or_init(|| {
        std::env::var(SKEW_ENV)
            .ok()
            .and_then(|text| parse_skew(&text))
            .unwrap_or(0)
    })
}

/// Seconds as text to microseconds; `None` for anything that is not a
/// finite number.
fn parse_skew(text: &str) -> Option<Micros> {
    let seconds: f64 = text.trim().parse().ok()?;
    seconds
        .is_finite()
        .then(|| (seconds * 1e6).clamp(i64::MIN as f64, i64::MAX as f64) as Micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skews_read_as_seconds() {
        assert_eq!(parse_skew("600"), Some(600_000_000));
        assert_eq!(parse_skew(" -1.5 "), Some(-1_500_000));
        assert_eq!(parse_skew("soon"), None);
        assert_eq!(parse_skew("inf"), None);
    }
}
