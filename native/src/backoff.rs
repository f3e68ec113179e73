//! Retry delays: exponential in the attempt number, with jitter, capped.

use std::time::Duration;

/// No retry waits longer than this, however many attempts came before.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// The delay before the run after `attempt` (1-based) failed.
///
/// `base * 2^(attempt-1)`, capped at [`MAX_RETRY_DELAY`], then "equal jitter":
/// a uniformly random point in the upper half, so that many jobs failing
/// together (a dependency went down) do not all come back at the same instant,
/// while each still waits at least half the nominal delay.
pub fn retry_delay(base_seconds: f64, attempt: u32) -> Duration {
    if base_seconds <= 0.0 || !base_seconds.is_finite() {
        return Duration::ZERO;
    }
    let exponent = attempt.saturating_sub(1).min(62) as i32;
    let nominal = (base_seconds * 2f64.powi(exponent)).min(MAX_RETRY_DELAY.as_secs_f64());
    let jittered = nominal * (0.5 + 0.5 * fastrand::f64());
    Duration::from_secs_f64(jittered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_bounds() {
        for attempt in 1..=6 {
            let nominal = 2f64.powi(attempt as i32 - 1);
            for _ in 0..200 {
                let d = retry_delay(1.0, attempt).as_secs_f64();
                assert!(
                    d >= nominal * 0.5 - 1e-9 && d <= nominal + 1e-9,
                    "{attempt}: {d}"
                );
            }
        }
    }

    #[test]
    fn is_capped() {
        let d = retry_delay(10.0, 40);
        assert!(d <= MAX_RETRY_DELAY);
        assert!(d >= MAX_RETRY_DELAY / 2);
    }

    #[test]
    fn zero_base_means_retry_at_once() {
        assert_eq!(retry_delay(0.0, 5), Duration::ZERO);
    }
}
