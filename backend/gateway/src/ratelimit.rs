//! Rate limiting on the request path: one token bucket per (limit, subject), checked on every
//! `tools/call` (`gatehouse_core::limits` says what the limits mean to an administrator).
//!
//! # Algorithm
//!
//! Each bucket is kept as GCRA (the "virtual scheduling" form of a token bucket): a single `u64`,
//! the theoretical arrival time (TAT) of the next call, in nanoseconds since the limiter was
//! created. With `T` = window / requests (the time one token takes to refill) and
//! `τ = (burst − 1) · T`, a call at `now` is allowed iff `TAT − τ ≤ now`, and then
//! `TAT = max(TAT, now) + T`. That admits exactly `burst` calls back to back and one more every `T`,
//! like a bucket of `burst` tokens refilled at one per `T`, without floating point. A refused call
//! may retry after `TAT − τ − now`. A bucket is full again (idle) when `TAT ≤ now`; a full bucket
//! and an absent one behave the same, so forgetting idle buckets loses nothing.
//!
//! # Keys
//!
//! A bucket's key is a 64-bit SipHash of (limit id, subject) under random keys drawn once per
//! limiter, so the hot path hashes two borrowed strings and allocates nothing for a known key.
//! The subject is the user id, or `""` for a tenant-wide bucket. Distinct pairs can collide: with
//! `n` live buckets the chance that any two share a hash is about `n² / 2⁶⁵` (3·10⁻⁸ at a
//! million), the keys are unpredictable (random per worker), and limit and user ids are chosen by
//! the control plane, not by callers. A collision can only make limiting stricter, never looser:
//! other calls on a shared TAT only move it forward. We accept that rather than store and compare
//! the strings.
//!
//! # Memory
//!
//! Buckets live in [`DEFAULT_SHARDS`] `Mutex<HashMap<u64, u64>>` shards (16 bytes an entry plus
//! the table's overhead: about 36 MB at [`DEFAULT_MAX_KEYS`]). Idle buckets are dropped by
//! [`RateLimiter::sweep`] (every [`SWEEP_EVERY`] from [`sweep`]), and a full shard sweeps itself
//! before refusing a new key (at most once per [`SHARD_SWEEP_GAP`]).
//!
//! When a shard is full of buckets that are all still refilling, a **new** key is not tracked and
//! its call is **let through** (fail open), and [`RateLimiter::overflowed`] counts it; every bucket
//! already tracked keeps being enforced. Keys are (limit, authenticated user) pairs, so their
//! number is bounded by the tenants' configuration, not by what callers send: reaching the cap
//! means the cap is too small for the deployment, and refusing every call of users who happen to be
//! new would turn a memory guard into an outage. The overflow counter is what an operator watches.
//!
//! Buckets are per worker: a user whose calls are spread over `n` workers can get up to `n` times
//! a limit's allowance, unless the worker has a shared store (`--rate-limit-store`, see
//! `shared_limits.rs`), whose buckets live in Redis and which uses these only when Redis cannot
//! answer. Time is passed in (`Instant`), so tests are deterministic.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use gatehouse_core::limits::LimitScope;

/// Most buckets a worker keeps by default.
pub(crate) const DEFAULT_MAX_KEYS: usize = 1_000_000;
/// Shards of the bucket table (a power of two).
pub(crate) const DEFAULT_SHARDS: usize = 64;
/// How often the background sweep drops idle buckets.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// A full shard sweeps itself at most this often (between sweeps, new keys overflow).
pub(crate) const SHARD_SWEEP_GAP: Duration = Duration::from_secs(1);

/// The subject whose bucket a limit of `scope` charges for a call by `user_id`: the user, or `""`
/// (the whole tenant).
pub(crate) fn subject(scope: LimitScope, user_id: &str) -> &str {
    if scope.per_user() { user_id } else { "" }
}

/// A limit's rate and burst, precomputed for the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quota {
    /// `T`: nanoseconds one token takes to refill (rounded up, so the long-run rate never exceeds
    /// `requests` per window).
    interval_ns: u64,
    /// `τ = (burst − 1) · T`.
    tolerance_ns: u64,
}

impl Quota {
    /// `requests` calls per `per`, in bursts of at most `burst`. Zeros count as one (validation
    /// never lets them through; this keeps a bad bundle from dividing by zero).
    pub(crate) fn new(requests: u32, per: Duration, burst: u32) -> Quota {
        let interval = per.as_nanos().div_ceil(u128::from(requests.max(1))).max(1);
        let interval_ns = u64::try_from(interval).unwrap_or(u64::MAX);
        Quota { interval_ns, tolerance_ns: interval_ns.saturating_mul(u64::from(burst.max(1) - 1)) }
    }

    /// A limit as `gatehouse_core::limits` states it: `requests` per `per_seconds`, `burst`
    /// defaulting to `requests`.
    pub(crate) fn per_seconds(requests: u32, per_seconds: u32, burst: Option<u32>) -> Quota {
        Quota::new(requests, Duration::from_secs(u64::from(per_seconds)), burst.unwrap_or(requests))
    }

    /// `(T, τ)` in whole microseconds, as the shared store keeps them (`shared_limits.rs`): `T`
    /// rounded up, `τ` the same number of tokens, so the burst is exactly the same.
    pub(crate) fn micros(self) -> (u64, u64) {
        let interval_us = self.interval_ns.div_ceil(1_000).max(1);
        (interval_us, interval_us.saturating_mul(self.tolerance_ns / self.interval_ns))
    }

    /// The time one token takes to refill.
    #[cfg(test)]
    pub(crate) fn interval(self) -> Duration {
        Duration::from_nanos(self.interval_ns)
    }
}

/// The bucket of one (limit, subject) pair ([`RateLimiter::key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct BucketKey(u64);

/// One limit that applies to a call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Applied<'a> {
    /// The limit's id, named by a refusal.
    pub(crate) limit_id: &'a str,
    /// The user id, or `""` for a tenant-wide bucket ([`subject`]).
    pub(crate) subject: &'a str,
    /// Its rate and burst.
    pub(crate) quota: Quota,
}

/// Why a call was refused: the limit that binds longest, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal<'a> {
    /// The id of the refusing limit (the one whose wait is longest when several refuse).
    pub(crate) limit_id: &'a str,
    /// How long until every refusing limit has a token again.
    pub(crate) retry_after: Duration,
}

impl Refusal<'_> {
    /// [`Refusal::retry_after`] in whole seconds, rounded up, as HTTP `Retry-After` wants it.
    pub(crate) fn retry_after_secs(&self) -> u64 {
        retry_after_secs(self.retry_after)
    }
}

/// A wait in whole seconds, rounded up and at least 1 (a client told `0` would retry at once).
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_nanos().div_ceil(1_000_000_000).max(1);
    u64::try_from(secs).unwrap_or(u64::MAX)
}

/// What taking a token did.
enum Take {
    Taken,
    /// The key was new and its shard full: let through, not tracked.
    Untracked,
    /// Refused: nanoseconds until a token is available.
    Refused(u64),
}

/// Passes a `u64` that is already a keyed hash through unchanged.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in rather than lose it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One shard: key → TAT, on its own cache lines.
#[repr(align(128))]
struct Shard(Mutex<Buckets>);

struct Buckets {
    tat: HashMap<u64, u64, BuildHasherDefault<PassThrough>>,
    /// A full shard may sweep itself again from this time on (ns since the epoch).
    next_sweep_ns: u64,
}

impl Buckets {
    /// Drops the buckets that are full again; returns how many.
    fn sweep(&mut self, now_ns: u64) -> usize {
        let before = self.tat.len();
        self.tat.retain(|_, tat| *tat > now_ns);
        // Give memory back after a spike, keeping room to grow.
        if self.tat.capacity() > 1024 && self.tat.len() * 4 < self.tat.capacity() {
            self.tat.shrink_to(self.tat.len() * 2);
        }
        before - self.tat.len()
    }
}

/// The worker's token buckets: keyed, sharded, bounded.
pub(crate) struct RateLimiter {
    shards: Box<[Shard]>,
    /// `shards.len() - 1`.
    shard_mask: usize,
    /// Most buckets one shard holds.
    per_shard: usize,
    hasher: RandomState,
    epoch: Instant,
    overflowed: AtomicU64,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("shards", &self.shards.len())
            .field("per_shard", &self.per_shard)
            .field("overflowed", &self.overflowed())
            .finish_non_exhaustive()
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new(DEFAULT_MAX_KEYS)
    }
}

impl RateLimiter {
    /// A limiter holding at most about `max_keys` buckets, in [`DEFAULT_SHARDS`] shards.
    pub(crate) fn new(max_keys: usize) -> Self {
        Self::with_shards(max_keys, DEFAULT_SHARDS)
    }

    /// A limiter with `shards` shards (rounded up to a power of two). Each shard holds at most
    /// `max_keys / shards` (rounded up) buckets; keys spread evenly, so the first overflow comes at
    /// a little under `max_keys`.
    pub(crate) fn with_shards(max_keys: usize, shards: usize) -> Self {
        let shards = shards.max(1).next_power_of_two();
        let per_shard = max_keys.div_ceil(shards).max(1);
        let make = || Shard(Mutex::new(Buckets { tat: HashMap::default(), next_sweep_ns: 0 }));
        RateLimiter {
            shards: (0..shards).map(|_| make()).collect(),
            shard_mask: shards - 1,
            per_shard,
            hasher: RandomState::new(),
            epoch: Instant::now(),
            overflowed: AtomicU64::new(0),
        }
    }

    /// The bucket of `limit_id` for `subject` (a user id, or `""` for the whole tenant).
    pub(crate) fn key(&self, limit_id: &str, subject: &str) -> BucketKey {
        // `str` hashes its bytes then 0xff, which UTF-8 never contains: the pair is unambiguous.
        BucketKey(self.hasher.hash_one((limit_id, subject)))
    }

    /// Takes one token from `key`'s bucket, or says how long until one is available. A bucket
    /// never seen (or forgotten because it was full) starts full.
    #[cfg(test)]
    pub(crate) fn check(&self, key: BucketKey, quota: Quota, now: Instant) -> Result<(), Duration> {
        match self.take(key, quota, self.nanos(now)) {
            Take::Taken | Take::Untracked => Ok(()),
            Take::Refused(wait) => Err(Duration::from_nanos(wait)),
        }
    }

    /// Checks every limit that applies to one call and takes a token from each, or from none: when
    /// one refuses, the tokens already taken from the others are given back, so a refused call
    /// costs no limit anything. The refusal names the limit with the longest wait and that wait
    /// (the limits after the first refusing one are only looked at, not charged).
    ///
    /// Each bucket is locked on its own, not all at once: between a take and its give-back another
    /// call may find that bucket one token short and be refused. The give-back is exact, so that is
    /// a transient, never a lost token.
    pub(crate) fn check_all<'a>(&self, limits: &[Applied<'a>], now: Instant) -> Result<(), Refusal<'a>> {
        let now_ns = self.nanos(now);
        let Some((first, wait)) = limits.iter().enumerate().find_map(|(i, l)| {
            match self.take(self.key(l.limit_id, l.subject), l.quota, now_ns) {
                Take::Refused(wait) => Some((i, wait)),
                Take::Taken | Take::Untracked => None,
            }
        }) else {
            return Ok(());
        };
        let (mut worst, mut longest) = (first, wait);
        for (i, l) in limits.iter().enumerate().skip(first + 1) {
            if let Some(wait) = self.wait_ns(self.key(l.limit_id, l.subject), l.quota, now_ns)
                && wait > longest
            {
                (worst, longest) = (i, wait);
            }
        }
        for l in &limits[..first] {
            self.give_back(self.key(l.limit_id, l.subject), l.quota, now_ns);
        }
        Err(Refusal { limit_id: limits[worst].limit_id, retry_after: Duration::from_nanos(longest) })
    }

    /// Drops every bucket that is full again (forgetting it changes nothing); returns how many.
    pub(crate) fn sweep(&self, now: Instant) -> usize {
        let now_ns = self.nanos(now);
        self.shards.iter().map(|s| lock(s).sweep(now_ns)).sum()
    }

    /// Buckets held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).tat.len()).sum()
    }

    /// Calls let through untracked because their bucket could not be stored (the table was full).
    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    fn nanos(&self, now: Instant) -> u64 {
        // An instant from before the limiter existed counts as its creation.
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn shard(&self, key: BucketKey) -> MutexGuard<'_, Buckets> {
        // Bits 32.. pick the shard; the table uses the low bits and the top 7, so they stay independent.
        lock(&self.shards[(key.0 >> 32) as usize & self.shard_mask])
    }

    fn take(&self, key: BucketKey, quota: Quota, now_ns: u64) -> Take {
        let mut shard = self.shard(key);
        if let Some(tat) = shard.tat.get_mut(&key.0) {
            return match gcra(tat, quota, now_ns) {
                Ok(()) => Take::Taken,
                Err(wait) => Take::Refused(wait),
            };
        }
        if shard.tat.len() >= self.per_shard {
            if now_ns >= shard.next_sweep_ns {
                shard.sweep(now_ns);
                shard.next_sweep_ns = now_ns.saturating_add(duration_ns(SHARD_SWEEP_GAP));
            }
            if shard.tat.len() >= self.per_shard {
                drop(shard);
                self.overflowed.fetch_add(1, Ordering::Relaxed);
                return Take::Untracked;
            }
        }
        // A new bucket starts full; burst ≥ 1, so its first call always passes.
        let mut tat = now_ns;
        let taken = gcra(&mut tat, quota, now_ns);
        debug_assert!(taken.is_ok());
        shard.tat.insert(key.0, tat);
        Take::Taken
    }

    /// How long until `key` has a token, without taking one (`None`: it has one now).
    fn wait_ns(&self, key: BucketKey, quota: Quota, now_ns: u64) -> Option<u64> {
        let tat = *self.shard(key).tat.get(&key.0)?;
        let allowed_at = tat.saturating_sub(quota.tolerance_ns);
        (allowed_at > now_ns).then(|| allowed_at - now_ns)
    }

    /// Returns one token taken at `now_ns`. A bucket is never filled beyond full; a bucket that is
    /// gone (untracked, or swept) has nothing to give back to.
    fn give_back(&self, key: BucketKey, quota: Quota, now_ns: u64) {
        if let Some(tat) = self.shard(key).tat.get_mut(&key.0) {
            *tat = tat.saturating_sub(quota.interval_ns).max(now_ns);
        }
    }
}

/// One GCRA step: takes a token from the bucket whose TAT is `tat`, or returns the nanoseconds
/// until one is available.
fn gcra(tat: &mut u64, quota: Quota, now_ns: u64) -> Result<(), u64> {
    let allowed_at = tat.saturating_sub(quota.tolerance_ns);
    if allowed_at > now_ns {
        return Err(allowed_at - now_ns);
    }
    *tat = (*tat).max(now_ns).saturating_add(quota.interval_ns);
    Ok(())
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn lock(shard: &Shard) -> MutexGuard<'_, Buckets> {
    // Nothing panics while a shard is locked; should it, the map is still consistent.
    shard.0.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Checks the `limits` of one call of `tenant` ([`RateLimiter::check_all`]): on the buckets shared
/// by every worker when the worker has a store (`shared_limits.rs`, falling back to its own), else
/// on its own.
pub(crate) async fn check<'a>(inner: &crate::Inner, tenant: &str, limits: &[Applied<'a>]) -> Result<(), Refusal<'a>> {
    match &inner.shared_limits {
        Some(shared) => shared.check_all(tenant, limits, &inner.limiter).await,
        None => inner.limiter.check_all(limits, Instant::now()),
    }
}

/// Drops idle buckets every [`SWEEP_EVERY`], for as long as the worker runs.
pub(crate) async fn sweep(limiter: Arc<RateLimiter>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let dropped = limiter.sweep(Instant::now());
        tracing::trace!(dropped, overflowed = limiter.overflowed(), "swept idle rate-limit buckets");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Takes tokens at `now` until refused; returns how many passed and the wait.
    fn drain(l: &RateLimiter, key: BucketKey, q: Quota, now: Instant) -> (u32, Duration) {
        let mut n = 0;
        loop {
            match l.check(key, q, now) {
                Ok(()) => n += 1,
                Err(wait) => return (n, wait),
            }
            assert!(n <= 10_000_000, "never refused");
        }
    }

    #[test]
    fn quota_arithmetic() {
        let q = Quota::per_seconds(10, 10, None);
        assert_eq!(q.interval(), SEC);
        assert_eq!(q.tolerance_ns, 9 * 1_000_000_000);
        // Rounded up: three per second is a token every 333,333,334 ns, never faster.
        assert_eq!(Quota::new(3, SEC, 3).interval_ns, 333_333_334);
        // Zeros from a bad bundle do not divide by zero and still admit one call.
        assert_eq!(Quota::new(0, Duration::ZERO, 0), Quota { interval_ns: 1, tolerance_ns: 0 });
        // The largest validated limit does not overflow.
        let widest = Quota::per_seconds(1, 86_400, Some(10));
        assert_eq!(widest.tolerance_ns, 9 * 86_400 * 1_000_000_000);
    }

    #[test]
    fn burst_then_refill_at_the_rate() {
        let l = RateLimiter::new(1000);
        let q = Quota::per_seconds(10, 10, None); // one token a second, bucket of 10
        let k = l.key("lim", "u1");
        let t0 = Instant::now();
        assert_eq!(drain(&l, k, q, t0), (10, SEC), "a full bucket admits its burst");
        assert_eq!(l.check(k, q, t0 + ms(999)), Err(ms(1)));
        assert_eq!(l.check(k, q, t0 + SEC), Ok(()), "one token a second");
        assert_eq!(l.check(k, q, t0 + SEC), Err(SEC));
        assert_eq!(drain(&l, k, q, t0 + 3 * SEC + ms(500)), (2, ms(500)), "2.5 s refill two tokens");
        // However long it rests, the bucket holds at most its burst.
        assert_eq!(drain(&l, k, q, t0 + 1000 * SEC).0, 10);
    }

    #[test]
    fn burst_sizes_the_bucket_independently_of_the_rate() {
        let l = RateLimiter::new(1000);
        let t0 = Instant::now();
        // 60 a minute with no bursting: one a second, evenly.
        let smooth = Quota::per_seconds(60, 60, Some(1));
        let k = l.key("smooth", "u1");
        assert_eq!(drain(&l, k, smooth, t0), (1, SEC));
        assert_eq!(drain(&l, k, smooth, t0 + SEC), (1, SEC));
        // 60 a minute with a burst of 120: twice the rate may come at once, then one a second.
        let bursty = Quota::per_seconds(60, 60, Some(120));
        let k = l.key("bursty", "u1");
        assert_eq!(drain(&l, k, bursty, t0), (120, SEC));
        assert_eq!(drain(&l, k, bursty, t0 + 5 * SEC), (5, SEC));
    }

    #[test]
    fn retry_after_is_exact_and_rounds_up_to_whole_seconds() {
        let l = RateLimiter::new(1000);
        let t0 = Instant::now();
        let hourly = Quota::per_seconds(1, 60, None);
        let k = l.key("lim", "u1");
        assert_eq!(l.check(k, hourly, t0), Ok(()));
        assert_eq!(l.check(k, hourly, t0), Err(60 * SEC));
        assert_eq!(l.check(k, hourly, t0 + ms(200)), Err(ms(59_800)));
        assert_eq!(retry_after_secs(ms(59_800)), 60);
        assert_eq!(l.check(k, hourly, t0 + ms(59_500)), Err(ms(500)));
        assert_eq!(retry_after_secs(ms(500)), 1);
        // 3 per 10 s: a token every 3.333… s, so Retry-After says 4.
        let k = l.key("thirds", "u1");
        let q = Quota::per_seconds(3, 10, Some(1));
        assert_eq!(l.check(k, q, t0), Ok(()));
        let wait = l.check(k, q, t0).unwrap_err();
        assert_eq!(wait, Duration::from_nanos(3_333_333_334));
        assert_eq!(retry_after_secs(wait), 4);
        for (wait, secs) in [(Duration::from_nanos(1), 1), (2 * SEC, 2), (2 * SEC + Duration::from_nanos(1), 3)] {
            assert_eq!(retry_after_secs(wait), secs, "{wait:?}");
        }
        assert_eq!(Refusal { limit_id: "x", retry_after: ms(1500) }.retry_after_secs(), 2);
    }

    #[test]
    fn subjects_and_limits_have_separate_buckets() {
        let l = RateLimiter::new(1000);
        let t0 = Instant::now();
        let q = Quota::per_seconds(2, 60, None);
        assert_eq!(subject(LimitScope::Tenant, "u1"), "");
        assert_eq!(subject(LimitScope::Role, "u1"), "u1");
        assert_eq!(subject(LimitScope::User, "u1"), "u1");
        let keys = [l.key("a", "u1"), l.key("a", "u2"), l.key("a", ""), l.key("b", "u1"), l.key("au", "1")];
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(drain(&l, *k, q, t0).0, 2, "bucket {i} is its own");
        }
        assert_eq!(l.len(), keys.len());
        assert_eq!(l.key("a", "u1"), keys[0], "the key is stable");
        assert_ne!(RateLimiter::new(10).key("a", "u1"), keys[0], "hash keys differ per limiter");
    }

    #[test]
    fn a_refused_call_takes_nothing_from_the_other_limits() {
        let l = RateLimiter::new(1000);
        let t0 = Instant::now();
        let tenant = Applied { limit_id: "tenant", subject: "", quota: Quota::per_seconds(5, 60, None) };
        let user = Applied { limit_id: "user", subject: "u1", quota: Quota::per_seconds(1, 60, None) };
        let both = [tenant, user];
        assert_eq!(l.check_all(&both, t0), Ok(()));
        let refusal = l.check_all(&both, t0).unwrap_err();
        assert_eq!(refusal, Refusal { limit_id: "user", retry_after: 60 * SEC });
        for _ in 0..10 {
            assert!(l.check_all(&both, t0).is_err());
        }
        // The tenant bucket lost only the one call that went through: 4 of 5 are left for others.
        let others = [tenant, Applied { subject: "u2", ..user }];
        assert_eq!(l.check_all(&others, t0), Ok(()));
        assert_eq!(drain(&l, l.key("tenant", ""), tenant.quota, t0).0, 3);
        assert_eq!(l.check_all(&[], t0), Ok(()), "no limit applies");
    }

    #[test]
    fn the_refusal_names_the_longest_wait() {
        let l = RateLimiter::new(1000);
        let t0 = Instant::now();
        let short = Applied { limit_id: "short", subject: "", quota: Quota::per_seconds(1, 10, None) };
        let long = Applied { limit_id: "long", subject: "u1", quota: Quota::per_seconds(1, 3600, None) };
        let open = Applied { limit_id: "open", subject: "u1", quota: Quota::per_seconds(100, 1, None) };
        assert_eq!(l.check_all(&[short, open, long], t0), Ok(()));
        // `short` refuses first, but `long` binds longer: retrying before it is free is pointless.
        let refusal = l.check_all(&[short, open, long], t0 + SEC).unwrap_err();
        assert_eq!(refusal, Refusal { limit_id: "long", retry_after: 3599 * SEC });
        assert_eq!(refusal.retry_after_secs(), 3599);
        // `long` was only looked at, never charged: it is free exactly an hour after its one call.
        assert_eq!(l.check(l.key("long", "u1"), long.quota, t0 + 3600 * SEC), Ok(()));
        // A limit before the refusing one is given its token back: `open` keeps 99 of 100.
        let l = RateLimiter::new(1000);
        assert_eq!(l.check_all(&[open, short], t0), Ok(()));
        assert!(l.check_all(&[open, short], t0).is_err());
        assert_eq!(drain(&l, l.key("open", "u1"), open.quota, t0).0, 99);
    }

    #[test]
    fn idle_buckets_are_evicted_and_a_full_table_fails_open() {
        let l = RateLimiter::with_shards(2, 1);
        let t0 = Instant::now();
        let q = Quota::per_seconds(1, 10, None);
        let (a, b, c) = (l.key("lim", "a"), l.key("lim", "b"), l.key("lim", "c"));
        assert_eq!(l.check(a, q, t0), Ok(()));
        assert_eq!(l.check(b, q, t0 + ms(5000)), Ok(()));
        assert_eq!(l.len(), 2);
        // Full of refilling buckets: a new key is let through untracked, the others still hold.
        assert_eq!(l.check(c, q, t0 + ms(6000)), Ok(()));
        assert_eq!(l.check(c, q, t0 + ms(6000)), Ok(()), "untracked: not limited");
        assert_eq!(l.overflowed(), 2);
        assert_eq!(l.len(), 2);
        assert!(l.check(a, q, t0 + ms(6000)).is_err(), "tracked buckets keep being enforced");
        // `a` is full again at 10 s: the shard sweeps itself to make room (once per SHARD_SWEEP_GAP).
        assert_eq!(l.check(c, q, t0 + ms(10_000)), Ok(()));
        assert_eq!(l.overflowed(), 2, "c is tracked now");
        assert_eq!(l.check(c, q, t0 + ms(10_000)), Err(10 * SEC));
        // A forgotten bucket comes back full, as it would have been.
        assert_eq!(l.check(a, q, t0 + ms(10_000)), Ok(()));
        assert_eq!(l.overflowed(), 3, "no room for a until the next sweep");
        // The periodic sweep drops exactly the idle buckets.
        assert_eq!(l.sweep(t0 + ms(15_000)), 1, "b (full at 15 s) goes, c stays");
        assert_eq!(l.len(), 1);
        assert_eq!(l.sweep(t0 + ms(20_000)), 1);
        assert_eq!(l.len(), 0);
        // Bounded by max_keys per shard, across shards.
        let many = RateLimiter::with_shards(64, 4);
        for i in 0..1000 {
            assert_eq!(many.check(many.key("lim", &i.to_string()), q, t0), Ok(()));
        }
        assert!(many.len() <= 64, "{} buckets", many.len());
        assert_eq!(many.overflowed(), 1000 - many.len() as u64);
    }

    #[test]
    fn sweeping_shrinks_the_table_after_a_spike() {
        let l = RateLimiter::with_shards(100_000, 1);
        let t0 = Instant::now();
        let q = Quota::per_seconds(1, 1, None);
        for i in 0..50_000 {
            l.check(l.key("lim", &i.to_string()), q, t0).unwrap();
        }
        let before = lock(&l.shards[0]).tat.capacity();
        assert_eq!(l.sweep(t0 + 2 * SEC), 50_000);
        assert!(lock(&l.shards[0]).tat.capacity() < before / 4);
    }

    #[test]
    fn instants_before_the_limiter_count_as_its_start() {
        let early = Instant::now();
        let l = RateLimiter::new(10);
        let q = Quota::per_seconds(1, 1, None);
        let k = l.key("lim", "u1");
        assert_eq!(l.check(k, q, early), Ok(()));
        assert!(l.check(k, q, early).is_err());
    }

    #[test]
    fn threads_hammering_one_key_never_exceed_the_allowance() {
        let l = Arc::new(RateLimiter::new(1000));
        let q = Quota::per_seconds(1000, 3600, None);
        let t0 = Instant::now();
        let allowed: u32 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let l = &l;
                    s.spawn(move || (0..500).filter(|_| l.check(l.key("lim", ""), q, t0).is_ok()).count() as u32)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(allowed, 1000, "exactly the burst, however the threads interleave");
    }

    #[test]
    fn threads_on_a_real_clock_stay_within_burst_plus_refill() {
        let l = RateLimiter::new(1000);
        let q = Quota::per_seconds(100, 1, Some(10)); // 100 a second, bursts of 10
        let k = l.key("lim", "");
        let start = Instant::now();
        let allowed: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let l = &l;
                    s.spawn(move || {
                        let mut n = 0;
                        while start.elapsed() < ms(300) {
                            n += u64::from(l.check(k, q, Instant::now()).is_ok());
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let elapsed = start.elapsed();
        let most = 10 + (elapsed.as_nanos() / q.interval().as_nanos()) as u64 + 1;
        assert!(allowed <= most, "{allowed} calls in {elapsed:?}, at most {most}");
        assert!(allowed >= 20, "the limiter does let calls through: {allowed}");
    }

    #[test]
    fn give_back_under_contention_loses_no_token() {
        // Eight users share a tenant bucket of 100 and each has a bucket of 30 of their own (240 in
        // all). Whatever the interleaving, at most 100 pass, and the tenant bucket holds exactly
        // what was not used: every token taken for a refused call came back.
        let l = RateLimiter::new(1000);
        let tenant = Quota::per_seconds(100, 3600, None);
        let user = Quota::per_seconds(30, 3600, None);
        let t0 = Instant::now();
        let users: Vec<String> = (0..8).map(|i| format!("u{i}")).collect();
        let per_user: Vec<u32> = std::thread::scope(|s| {
            let handles: Vec<_> = users
                .iter()
                .map(|u| {
                    let l = &l;
                    s.spawn(move || {
                        let limits = [
                            Applied { limit_id: "tenant", subject: "", quota: tenant },
                            Applied { limit_id: "user", subject: u, quota: user },
                        ];
                        (0..200).filter(|_| l.check_all(&limits, t0).is_ok()).count() as u32
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let allowed: u32 = per_user.iter().sum();
        assert!(allowed <= 100, "{allowed}");
        assert!(per_user.iter().all(|&n| n <= 30), "{per_user:?}");
        assert_eq!(drain(&l, l.key("tenant", ""), tenant, t0).0, 100 - allowed);
    }

    /// `cargo test -p gatehouse-gateway --release ratelimit::tests::bench -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark: run by hand in release mode"]
    fn bench() {
        use std::hint::black_box;
        let l = RateLimiter::new(DEFAULT_MAX_KEYS);
        let q = Quota::per_seconds(1_000_000, 1, Some(10_000_000));
        let now = Instant::now();
        let n = 5_000_000u32;
        let time = |label: &str, f: &mut dyn FnMut(u32)| {
            let start = Instant::now();
            for i in 0..n {
                f(i);
            }
            println!("{label:<44} {:>6.1} ns/call", start.elapsed().as_nanos() as f64 / f64::from(n));
        };
        let k = l.key("0190d3c2-7f3a-7cc1-9a8e-3c1f0b4e2a11", "0190d3c2-7f3a-7cc1-9a8e-3c1f0b4e2a12");
        time("check, one key (key precomputed)", &mut |_| {
            let _ = black_box(l.check(black_box(k), q, now));
        });
        time("key(limit id, user id): hashing two UUIDs", &mut |_| {
            black_box(l.key(black_box("0190d3c2-7f3a-7cc1-9a8e-3c1f0b4e2a11"), black_box("u")));
        });
        let one = [Applied { limit_id: "0190d3c2-7f3a-7cc1-9a8e-3c1f0b4e2a11", subject: "", quota: q }];
        time("check_all, one limit (hash + check)", &mut |_| {
            let _ = black_box(l.check_all(black_box(&one), now));
        });
        let users: Vec<String> = (0..10_000).map(|i| format!("0190d3c2-7f3a-7cc1-9a8e-{i:012}")).collect();
        let keys: Vec<BucketKey> = users.iter().map(|u| l.key("limit", u)).collect();
        time("check, 10,000 keys round robin", &mut |i| {
            let _ = black_box(l.check(keys[i as usize % keys.len()], q, now));
        });
        let three: Vec<[Applied<'_>; 3]> = users
            .iter()
            .map(|u| {
                [
                    Applied { limit_id: "tenant-limit", subject: "", quota: q },
                    Applied { limit_id: "role-limit", subject: u, quota: q },
                    Applied { limit_id: "user-limit", subject: u, quota: q },
                ]
            })
            .collect();
        time("check_all, 3 limits, 10,000 users", &mut |i| {
            let _ = black_box(l.check_all(&three[i as usize % three.len()], now));
        });
        time("Instant::now() (for scale)", &mut |_| {
            black_box(Instant::now());
        });
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let start = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let (l, keys) = (&l, &keys);
                s.spawn(move || {
                    for i in 0..n {
                        let _ = black_box(l.check(keys[(i as usize * 7 + t * 1013) % keys.len()], q, now));
                    }
                });
            }
        });
        let total = f64::from(n) * threads as f64;
        println!(
            "{:<44} {:>6.1} ns/call per thread, {:.1} M checks/s in all",
            format!("check, 10,000 keys, {threads} threads"),
            start.elapsed().as_nanos() as f64 * threads as f64 / total,
            total / start.elapsed().as_secs_f64() / 1e6
        );
        println!("{} buckets, {} overflowed", l.len(), l.overflowed());
    }
}
