//! Capped exponential backoff with ±25 % jitter, so that many failed items (Services, sweeps,
//! writes) do not retry in step. One policy for both discovery loops, each with its own bounds.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The delay after the first failure (before jitter).
    pub base: Duration,
    /// The longest delay (before jitter).
    pub cap: Duration,
}

impl Backoff {
    /// The delay after `attempt` failures in a row (1 for the first).
    pub fn after(&self, attempt: u32) -> Duration {
        self.nominal(attempt)
            .mul_f64(rand::random_range(0.75..1.25))
    }

    fn nominal(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(16);
        self.base.saturating_mul(1u32 << exponent).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
        };
        for attempt in 1..40 {
            let delay = policy.after(attempt);
            let nominal = Duration::from_millis(500)
                .saturating_mul(1u32 << (attempt - 1).min(16))
                .min(Duration::from_secs(60));
            assert!(
                delay >= nominal.mul_f64(0.75) && delay <= nominal.mul_f64(1.25),
                "{attempt}: {delay:?}"
            );
        }
        assert!(policy.after(30) <= Duration::from_secs(75));
        assert!(policy.after(1) >= Duration::from_millis(375));
    }
}
