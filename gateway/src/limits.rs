//! Per-user limits that keep one user from degrading a node for everyone:
//! a send rate (token bucket, `SEND_RATE_PER_SECOND` with bursts of
//! `SEND_BURST`) and a cap on concurrent sessions (`MAX_SESSIONS_PER_USER`).
//!
//! Both are enforced per node. Behind a load balancer a user's sessions spread
//! over nodes, so the effective cluster-wide limits are these times the number
//! of nodes a user reaches — a deliberate trade: no Redis round trip on the hot
//! path, and a node protects itself whatever the others do.

use chat_shared::domain::UserId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::Duration;

/// The send-rate limiter.
pub struct SendLimiter {
    limiter: DefaultKeyedRateLimiter<UserId>,
    clock: DefaultClock,
}

impl SendLimiter {
    /// `per_second` sustained, `burst` at once.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one send from `user`'s budget, or says how long to wait.
    pub fn check(&self, user: &UserId) -> Result<(), Duration> {
        self.limiter
            .check_key(user)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets users whose budget is full again (bounds memory; call periodically).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_sends_wait() {
        let l = SendLimiter::new(NonZeroU32::new(1).unwrap(), NonZeroU32::new(3).unwrap());
        let u = UserId::parse("u").unwrap();
        for _ in 0..3 {
            assert!(l.check(&u).is_ok());
        }
        let wait = l.check(&u).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        // another user is not affected
        assert!(l.check(&UserId::parse("v").unwrap()).is_ok());
    }
}
