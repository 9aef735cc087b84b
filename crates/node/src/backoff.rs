//! The kubelet's restart back-off: a per-key delay that starts at the
//! initial period, doubles at every restart up to the maximum, and is
//! forgotten once the key has been quiet long enough (10 minutes in the
//! kubelet, whatever the maximum).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// The periods of a back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The first delay (the kubelet: 10 s).
    pub initial: Duration,
    /// The longest delay (the kubelet: 5 minutes).
    pub max: Duration,
    /// How long after the last restart an entry is forgotten (the
    /// kubelet: 10 minutes for containers, twice the maximum for images).
    pub reset_after: Duration,
}

impl BackoffPolicy {
    /// The kubelet's crash-loop back-off.
    pub const CRASH_LOOP: BackoffPolicy = BackoffPolicy {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(300),
        reset_after: Duration::from_secs(600),
    };
    /// The kubelet's image pull back-off.
    pub const IMAGE_PULL: BackoffPolicy = BackoffPolicy {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(300),
        reset_after: Duration::from_secs(600),
    };
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    delay: Duration,
    last_update: SystemTime,
}

/// Back-off entries by key.
#[derive(Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    entries: HashMap<String, Entry>,
}

impl Backoff {
    /// An empty back-off with these periods.
    pub fn new(policy: BackoffPolicy) -> Backoff {
        Backoff {
            policy,
            entries: HashMap::new(),
        }
    }

    fn expired(&self, event: SystemTime, entry: &Entry) -> bool {
        event
            .duration_since(entry.last_update)
            .is_ok_and(|quiet| quiet > self.policy.reset_after)
    }

    /// Whether `now` is still within the delay that follows `event` (a
    /// container's exit, a failed pull) for `key`; if so, the time left.
    pub fn in_backoff_since(
        &self,
        key: &str,
        event: SystemTime,
        now: SystemTime,
    ) -> Option<Duration> {
        let entry = self.entries.get(key)?;
        if self.expired(event, entry) {
            return None;
        }
        let since = now.duration_since(event).unwrap_or(Duration::ZERO);
        (since < entry.delay).then(|| entry.delay - since)
    }

    /// Whether `now` is within the delay that follows the key's last
    /// update (the image pull back-off); if so, the time left.
    pub fn in_backoff_since_update(&self, key: &str, now: SystemTime) -> Option<Duration> {
        let entry = self.entries.get(key)?;
        if self.expired(now, entry) {
            return None;
        }
        let since = now
            .duration_since(entry.last_update)
            .unwrap_or(Duration::ZERO);
        (since < entry.delay).then(|| entry.delay - since)
    }

    /// Records a restart at `now` after `event`: the first one (or the
    /// first after a quiet period) gets the initial delay, every later one
    /// twice the previous, up to the maximum.
    pub fn next(&mut self, key: &str, event: SystemTime, now: SystemTime) {
        let fresh = match self.entries.get(key) {
            None => true,
            Some(e) => self.expired(event, e),
        };
        let delay = if fresh {
            self.policy.initial
        } else {
            (self.entries[key].delay * 2).min(self.policy.max)
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                delay,
                last_update: now,
            },
        );
    }

    /// The current delay of `key`, if it has one.
    pub fn delay(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| e.delay)
    }

    /// Forgets `key`.
    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Forgets every entry that has been quiet for longer than the reset
    /// period.
    pub fn gc(&mut self, now: SystemTime) {
        let reset = self.policy.reset_after;
        self.entries.retain(|_, e| {
            now.duration_since(e.last_update)
                .map_or(true, |quiet| quiet <= reset)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    #[test]
    fn delays_double_up_to_the_maximum() {
        let mut b = Backoff::new(BackoffPolicy::CRASH_LOOP);
        // First exit: no entry yet, restart at once.
        assert_eq!(b.in_backoff_since("k", at(0), at(0)), None);
        b.next("k", at(0), at(0));
        assert_eq!(b.delay("k"), Some(Duration::from_secs(10)));
        // Second exit at 1 s: wait 10 s from the exit.
        assert_eq!(
            b.in_backoff_since("k", at(1), at(4)),
            Some(Duration::from_secs(7))
        );
        assert_eq!(b.in_backoff_since("k", at(1), at(11)), None);
        b.next("k", at(1), at(11));
        assert_eq!(b.delay("k"), Some(Duration::from_secs(20)));
        for _ in 0..10 {
            b.next("k", at(1), at(11));
        }
        assert_eq!(b.delay("k"), Some(Duration::from_secs(300)));
    }

    #[test]
    fn a_quiet_period_resets_the_delay() {
        let mut b = Backoff::new(BackoffPolicy::CRASH_LOOP);
        b.next("k", at(0), at(0));
        b.next("k", at(5), at(15));
        assert_eq!(b.delay("k"), Some(Duration::from_secs(20)));
        // Exited 10 min + 1 s after the last restart: a fresh start.
        assert_eq!(b.in_backoff_since("k", at(616), at(616)), None);
        b.next("k", at(616), at(616));
        assert_eq!(b.delay("k"), Some(Duration::from_secs(10)));
        b.gc(at(616 + 601));
        assert_eq!(b.delay("k"), None);
    }
}
