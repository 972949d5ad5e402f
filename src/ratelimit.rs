//! Token buckets: the one rate limiter every listener uses (relay frames and publishes,
//! SMTP authentication failures, and later IMAP's).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

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

/// Authentication attempts (SMTP AUTH, IMAP LOGIN and AUTHENTICATE), limited per client network and per (user, client network): each
/// attempt takes a token from both before the password is checked (so parallel
/// connections cannot outrun the limit), and a success gives them back, so only
/// failures count. Keying the user's bucket by network too means a stranger guessing
/// alice's password locks out only their own network, never alice.
pub struct AuthLimiter {
    per_net: HashMap<IpAddr, TokenBucket>,
    per_user: HashMap<(String, IpAddr), TokenBucket>,
    net_burst: u32,
    user_burst: u32,
    window: Duration,
}

impl AuthLimiter {
    /// `net_burst` failures per client network and `user_burst` per (user, network)
    /// within `window`.
    pub fn new(net_burst: u32, user_burst: u32, window: Duration) -> AuthLimiter {
        AuthLimiter {
            per_net: HashMap::new(),
            per_user: HashMap::new(),
            net_burst,
            user_burst,
            window,
        }
    }

    fn bucket(burst: u32, window: Duration) -> TokenBucket {
        TokenBucket::new(f64::from(burst.max(1)) / window.as_secs_f64(), burst.max(1))
    }

    /// Takes a token for an attempt by `user` from `ip`; false if either budget is spent.
    pub fn begin(&mut self, ip: IpAddr, user: &str) -> bool {
        let (nb, ub, w) = (self.net_burst, self.user_burst, self.window);
        let net = crate::net::client_net(ip);
        // Keep memory bounded under a spray of addresses or names: forget buckets that
        // have refilled, and only when the map has doubled since the last sweep.
        if self.per_net.len() >= 100_000 {
            self.per_net.retain(|_, b| !b.is_full());
        }
        if self.per_user.len() >= 100_000 {
            self.per_user.retain(|_, b| !b.is_full());
        }
        let net_bucket = self
            .per_net
            .entry(net)
            .or_insert_with(|| Self::bucket(nb, w));
        if !net_bucket.peek() {
            return false;
        }
        let user_bucket = self
            .per_user
            .entry((user.to_owned(), net))
            .or_insert_with(|| Self::bucket(ub, w));
        if !user_bucket.try_take() {
            return false;
        }
        self.per_net.get_mut(&net).is_some_and(|b| b.try_take())
    }

    /// Gives back the tokens of an attempt that succeeded.
    pub fn succeeded(&mut self, ip: IpAddr, user: &str) {
        let net = crate::net::client_net(ip);
        if let Some(b) = self.per_net.get_mut(&net) {
            b.give_back();
        }
        if let Some(b) = self.per_user.get_mut(&(user.to_owned(), net)) {
            b.give_back();
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
