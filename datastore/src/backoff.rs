//! Reconnect timing for the etcd clients: jittered exponential backoff, so
//! many hosts losing etcd at once do not come back in lockstep.

use std::time::Duration;

/// Reconnect timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// Jittered exponential backoff: each delay is drawn from `[d/2, d]`, with
/// `d` doubling from `initial` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    next: Duration,
    rng: u64,
}

impl Backoff {
    /// A backoff seeded from the clock and the process id.
    pub fn new(config: BackoffConfig) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32);
        Self::with_seed(config, seed)
    }

    /// A backoff with a fixed seed (tests).
    pub fn with_seed(config: BackoffConfig, seed: u64) -> Self {
        Backoff {
            config,
            next: config.initial,
            rng: seed | 1,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next.min(self.config.max);
        self.next = (self.next * 2).min(self.config.max);
        let half = d / 2;
        let span = u64::try_from((d - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if span == 0 {
            0
        } else {
            self.random() % (span + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.config.initial;
    }

    /// xorshift64: plenty for spreading reconnects.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let cfg = BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        let mut b = Backoff::with_seed(cfg, 42);
        let mut ceiling = Duration::from_millis(100);
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} not in [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(cfg.max);
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
        // Different seeds spread out.
        let a: Vec<_> = (0..5)
            .map(|_| Backoff::with_seed(cfg, 1).next_delay())
            .collect();
        let mut other = Backoff::with_seed(cfg, 2);
        assert!(a.iter().all(|d| *d == a[0]));
        let _ = other.next_delay();
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_sleeps_advance_with_the_paused_clock() {
        let mut b = Backoff::with_seed(BackoffConfig::default(), 7);
        let start = tokio::time::Instant::now();
        let mut total = Duration::ZERO;
        for _ in 0..6 {
            let d = b.next_delay();
            total += d;
            tokio::time::sleep(d).await;
        }
        // The timer wheel rounds each sleep up to the next millisecond.
        assert!(start.elapsed() >= total && start.elapsed() <= total + Duration::from_millis(6));
        assert!(total <= Duration::from_millis(100 + 200 + 400 + 800 + 1600 + 3200));
    }
}
