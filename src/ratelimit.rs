//! Token buckets: the one rate limiter every listener uses (relay frames and publishes,
//! SMTP authentication failures, and later IMAP's).

use std::time::Instant;

/// Allows `burst` events at once and `rate` per second after that.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self) -> bool {
        self.try_take_at(Instant::now())
    }

    /// Whether a token is there, without taking it.
    pub fn peek(&mut self) -> bool {
        self.refill(Instant::now());
        self.tokens >= 1.0
    }

    /// Returns one token taken earlier (never above the burst).
    pub fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }

    /// Whether the bucket is back to its full burst (nothing to remember).
    pub fn is_full(&mut self) -> bool {
        self.refill(Instant::now());
        self.tokens >= self.burst
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    fn try_take_at(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3);
        b.last = t0;
        assert!((0..3).all(|_| b.try_take_at(t0)));
        assert!(!b.try_take_at(t0));
        assert!(b.try_take_at(t0 + Duration::from_millis(500)));
        assert!(!b.try_take_at(t0 + Duration::from_millis(600)));
        // Idle time refills no more than the burst.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.try_take_at(later)));
        assert!(!b.try_take_at(later));
    }
}
