//! Rate-limit buckets shared by every worker of a deployment, kept in Redis (the worker option
//! `--rate-limit-store redis://…`; `docs/decisions/0011-rate-limits.md`).
//!
//! # One script, every limit of a call
//!
//! [`SCRIPT`] runs the same GCRA as `ratelimit.rs` over all the buckets of one call at once: it
//! reads every bucket's TAT, and only if each has room does it take a token from each, so a refused
//! call costs no limit anything (here without even a transient: the script is atomic). It answers
//! `{1, 0, 0}` or `{0, i, wait}`: nothing taken, `i` (1-based) the limit with the longest wait, the
//! wait in microseconds. The script is loaded once (`SCRIPT LOAD`) and called with `EVALSHA`; a
//! `NOSCRIPT` answer (Redis restarted, `SCRIPT FLUSH`, fail-over) loads it again and retries once.
//!
//! # Time
//!
//! The script reads Redis's clock (`TIME`), in microseconds, never a worker's: every worker then
//! judges a bucket against one clock, and skew between worker hosts cannot refill a bucket early or
//! late. Microseconds keep every number exact in Lua's doubles (2⁵³ µs is 285 years); `T` is rounded
//! up to a whole microsecond ([`Quota::micros`]). The worker's own clock is used only by the local
//! fallback, whose buckets are its own.
//!
//! # Keys
//!
//! `gatehouse:rl:{<tenant>}:<limit id>:<subject>` holding the TAT as a decimal string, where the
//! subject is `*` for a tenant-wide bucket and otherwise the first 128 bits of SHA-256(user id) in
//! hex (no user ids in Redis; the same on every worker). The tenant slug keeps tenants apart and,
//! as a hash tag, puts all of a call's keys in one Redis Cluster slot. Each write sets an expiry of
//! the time until the bucket is full again plus a second: an idle bucket disappears, and an absent
//! bucket is a full one, exactly as the local sweep forgets them.
//!
//! # When Redis cannot answer
//!
//! A call whose answer does not come within the timeout (default [`DEFAULT_TIMEOUT`], the URL's
//! `timeout_ms`), or finds no connection, or gets an error answer, is judged by the worker's local
//! buckets ([`RateLimiter`]): still limited, per worker, never an outage and never unlimited. Each
//! such call counts in [`SharedLimiter::fallbacks`] (`/metrics`:
//! `gatehouse_rate_limit_store_fallbacks_total`), and a warning is logged at most every
//! [`WARN_EVERY`]. A timeout drops the connection; reconnection is retried in the background
//! (`resp.rs`), and the calls go back to the shared buckets as soon as it is up. Access decisions
//! never depend on Redis: they are taken before, from the signed bundle, and fail closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use sha2::{Digest as _, Sha256};

use crate::ratelimit::{Applied, RateLimiter, Refusal};
use crate::resp::{self, Value};

/// How long a call waits for Redis before its local buckets judge it.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// The largest `timeout_ms` accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one "store unavailable" warning this often.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);
/// Prefix of every key.
pub(crate) const KEY_PREFIX: &str = "gatehouse:rl:";

/// GCRA over every bucket of one call, all or nothing (see the module docs). `KEYS[i]` is bucket
/// `i`, `ARGV[2i-1]` and `ARGV[2i]` its `T` and `τ` in microseconds.
pub(crate) const SCRIPT: &str = r"-- gatehouse shared rate limits (GCRA, all or nothing)
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
local worst, longest = 0, 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local wait = tat - tolerance - now
  if wait > longest then worst, longest = i, wait end
  tats[i] = tat + interval
end
if worst > 0 then return {0, worst, longest} end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', math.ceil((tats[i] - now) / 1000) + 1000)
end
return {1, 0, 0}
";

/// The Redis key of the bucket of `limit_id` for `subject` (a user id, or `""` for the tenant).
pub(crate) fn bucket_key(tenant: &str, limit_id: &str, subject: &str) -> String {
    let mut key = String::with_capacity(KEY_PREFIX.len() + tenant.len() + limit_id.len() + 40);
    key.push_str(KEY_PREFIX);
    key.push('{');
    key.push_str(tenant);
    key.push_str("}:");
    key.push_str(limit_id);
    key.push(':');
    if subject.is_empty() {
        key.push('*');
    } else {
        key.push_str(&hex::encode(&Sha256::digest(subject.as_bytes())[..16]));
    }
    key
}

struct Warned {
    at: Option<Instant>,
    /// [`SharedLimiter::fallbacks`] when the last warning was logged.
    count: u64,
}

/// The shared buckets, with the worker's own as the fallback.
pub(crate) struct SharedLimiter {
    client: resp::Client,
    timeout: Duration,
    /// The script's SHA-1, once loaded.
    sha: Mutex<Option<Arc<str>>>,
    fallbacks: AtomicU64,
    warned: Mutex<Warned>,
}

impl std::fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimiter")
            .field("redis", self.client.target())
            .field("timeout", &self.timeout)
            .field("fallbacks", &self.fallbacks())
            .finish_non_exhaustive()
    }
}

impl SharedLimiter {
    /// A limiter on the Redis at `url`: `redis://[[user]:password@]host[:port][/db][?timeout_ms=N]`.
    /// Connects in the background: a Redis that is down at start only means local limits until it
    /// is up.
    pub(crate) fn connect(url: &str) -> anyhow::Result<SharedLimiter> {
        let parsed = reqwest::Url::parse(url.trim()).map_err(|e| anyhow!("rate-limit store URL: {e}"))?;
        let target = resp::Target::parse(&parsed).map_err(|e| anyhow!("rate-limit store URL: {e}"))?;
        let mut timeout = DEFAULT_TIMEOUT;
        for (name, value) in parsed.query_pairs() {
            match &*name {
                "timeout_ms" => {
                    let ms: u64 = value.parse().map_err(|_| anyhow!("rate-limit store URL: timeout_ms {value:?}"))?;
                    timeout = Duration::from_millis(ms);
                    if timeout.is_zero() || timeout > MAX_TIMEOUT {
                        bail!("rate-limit store URL: timeout_ms must be between 1 and {}", MAX_TIMEOUT.as_millis());
                    }
                }
                other => bail!("rate-limit store URL: unknown parameter {other:?} (only timeout_ms)"),
            }
        }
        Ok(SharedLimiter {
            client: resp::Client::new(target),
            timeout,
            sha: Mutex::new(None),
            fallbacks: AtomicU64::new(0),
            warned: Mutex::new(Warned { at: None, count: 0 }),
        })
    }

    /// Calls judged by the local buckets because the store could not answer.
    pub(crate) fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// True while a connection to the store is live.
    pub(crate) fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// [`RateLimiter::check_all`] on the shared buckets of `tenant`; on the worker's `local`
    /// buckets when the store does not answer in time.
    pub(crate) async fn check_all<'a>(
        &self,
        tenant: &str,
        limits: &[Applied<'a>],
        local: &RateLimiter,
    ) -> Result<(), Refusal<'a>> {
        if limits.is_empty() {
            return Ok(());
        }
        let why = match tokio::time::timeout(self.timeout, self.shared(tenant, limits)).await {
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some((i, wait)))) => return Err(Refusal { limit_id: limits[i].limit_id, retry_after: wait }),
            Ok(Err(why)) => why,
            Err(_) => {
                let why = format!("no answer within {} ms", self.timeout.as_millis());
                self.client.trip(&why);
                why
            }
        };
        self.fell_back(&why);
        local.check_all(limits, Instant::now())
    }

    /// The script's verdict: `None` (taken), or the refusing limit's index and its wait.
    async fn shared(&self, tenant: &str, limits: &[Applied<'_>]) -> Result<Option<(usize, Duration)>, String> {
        let keys: Vec<String> = limits.iter().map(|l| bucket_key(tenant, l.limit_id, l.subject)).collect();
        let numbers: Vec<String> = limits
            .iter()
            .flat_map(|l| {
                let (interval, tolerance) = l.quota.micros();
                [interval.to_string(), tolerance.to_string()]
            })
            .collect();
        let count = limits.len().to_string();
        for _ in 0..2 {
            let loaded = self.sha.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let sha = match loaded {
                Some(sha) => sha,
                None => self.load().await?,
            };
            let mut parts: Vec<&[u8]> = Vec::with_capacity(3 + keys.len() + numbers.len());
            parts.extend([b"EVALSHA".as_slice(), sha.as_bytes(), count.as_bytes()]);
            parts.extend(keys.iter().map(|k| k.as_bytes()));
            parts.extend(numbers.iter().map(|n| n.as_bytes()));
            match self.client.request(&parts).await.map_err(|e| e.to_string())? {
                Value::Error(e) if e.starts_with("NOSCRIPT") => {
                    *self.sha.lock().unwrap_or_else(PoisonError::into_inner) = None;
                }
                Value::Error(e) => return Err(format!("the script failed: {e}")),
                Value::Array(Some(items)) => return verdict(&items, limits.len()),
                other => return Err(format!("unexpected answer {other:?}")),
            }
        }
        Err("the script is not loaded".into())
    }

    async fn load(&self) -> Result<Arc<str>, String> {
        match self.client.request(&[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()]).await.map_err(|e| e.to_string())? {
            Value::Bulk(Some(sha)) => {
                let sha: Arc<str> = String::from_utf8(sha).map_err(|_| "bad script hash")?.into();
                *self.sha.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&sha));
                Ok(sha)
            }
            Value::Error(e) => Err(format!("SCRIPT LOAD failed: {e}")),
            other => Err(format!("unexpected answer to SCRIPT LOAD {other:?}")),
        }
    }

    fn fell_back(&self, why: &str) {
        let n = self.fallbacks.fetch_add(1, Ordering::Relaxed) + 1;
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if warned.at.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
            tracing::warn!(
                redis = %self.client.target(),
                error = why,
                calls = n - warned.count,
                "shared rate-limit store unavailable: calls are judged by this worker's own buckets"
            );
            *warned = Warned { at: Some(now), count: n };
        }
    }
}

/// Reads the script's `{allowed, index, wait}`.
fn verdict(items: &[Value], limits: usize) -> Result<Option<(usize, Duration)>, String> {
    match items {
        [Value::Int(1), _, _] => Ok(None),
        [Value::Int(0), Value::Int(i), Value::Int(wait)] if (1..=limits as i64).contains(i) && *wait > 0 => {
            Ok(Some((*i as usize - 1, Duration::from_micros(*wait as u64))))
        }
        other => Err(format!("unexpected script answer {other:?}")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ratelimit::Quota;

    /// A throwaway `redis-server` on a free port of 127.0.0.1, killed on drop.
    pub(crate) struct TestRedis {
        pub(crate) port: u16,
        child: std::process::Child,
    }

    impl TestRedis {
        pub(crate) fn start() -> TestRedis {
            for _ in 0..5 {
                let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
                let child = std::process::Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .expect("redis-server (Debian redis-server; `scripts/setup.sh test` installs it)");
                let mut redis = TestRedis { port, child };
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if redis.child.try_wait().unwrap().is_some() {
                        break; // the port was taken meanwhile: try another
                    }
                    if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                        return redis;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = redis.child.kill();
            }
            panic!("redis-server did not start");
        }

        pub(crate) fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/0", self.port)
        }
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Waits until `limiter` has a connection.
    pub(crate) async fn connected(limiter: &SharedLimiter) {
        let deadline = Instant::now() + Duration::from_secs(5);
        // A request is what starts a reconnection attempt.
        while !limiter.is_connected() {
            let _ = limiter.client.request(&[b"PING"]).await;
            assert!(Instant::now() < deadline, "never connected to {:?}", limiter.client.target());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn raw(limiter: &SharedLimiter, parts: &[&[u8]]) -> Value {
        limiter.client.request(parts).await.unwrap()
    }

    fn applied<'a>(limit_id: &'a str, subject: &'a str, quota: Quota) -> Applied<'a> {
        Applied { limit_id, subject, quota }
    }

    #[test]
    fn keys_keep_tenants_limits_and_users_apart_without_user_ids() {
        let k = bucket_key("acme", "lim-1", "user-42");
        assert!(k.starts_with("gatehouse:rl:{acme}:lim-1:"), "{k}");
        assert!(!k.contains("user-42"));
        assert_eq!(k.len(), "gatehouse:rl:{acme}:lim-1:".len() + 32);
        assert_eq!(bucket_key("acme", "lim-1", ""), "gatehouse:rl:{acme}:lim-1:*");
        let all = [k.clone(), bucket_key("other", "lim-1", "user-42"), bucket_key("acme", "lim-2", "user-42")];
        assert!(all.iter().collect::<std::collections::HashSet<_>>().len() == 3);
        assert_eq!(bucket_key("acme", "lim-1", "user-42"), k, "the same on every worker");
    }

    #[test]
    fn urls_are_checked_and_take_a_timeout() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _guard = rt.enter();
        assert_eq!(SharedLimiter::connect("redis://127.0.0.1:1/0").unwrap().timeout, DEFAULT_TIMEOUT);
        let l = SharedLimiter::connect("redis://127.0.0.1:1/0?timeout_ms=20").unwrap();
        assert_eq!(l.timeout, Duration::from_millis(20));
        for (bad, says) in [
            ("127.0.0.1:6379", "URL"),
            ("http://h", "redis://"),
            ("redis://h?timeout_ms=0", "between"),
            ("redis://h?timeout_ms=9000", "between"),
            ("redis://h?pool=3", "unknown parameter"),
        ] {
            let e = SharedLimiter::connect(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn verdicts_are_read_strictly() {
        assert_eq!(verdict(&[Value::Int(1), Value::Int(0), Value::Int(0)], 2), Ok(None));
        assert_eq!(
            verdict(&[Value::Int(0), Value::Int(2), Value::Int(1_500_000)], 2),
            Ok(Some((1, Duration::from_millis(1500))))
        );
        assert!(verdict(&[Value::Int(0), Value::Int(3), Value::Int(1)], 2).is_err(), "no such limit");
        assert!(verdict(&[Value::Int(0), Value::Int(1), Value::Int(0)], 2).is_err());
        assert!(verdict(&[Value::Int(1)], 2).is_err());
    }

    #[test]
    fn micros_keep_the_burst() {
        let q = Quota::per_seconds(3, 10, Some(5));
        assert_eq!(q.micros(), (3_333_334, 4 * 3_333_334));
        assert_eq!(Quota::per_seconds(10, 10, None).micros(), (1_000_000, 9_000_000));
        assert_eq!(Quota::new(1_000_000_000, Duration::from_secs(1), 1).micros(), (1, 0), "at least 1 µs");
    }

    #[tokio::test]
    async fn the_script_limits_all_or_nothing_on_redis_time() {
        let redis = TestRedis::start();
        let shared = SharedLimiter::connect(&format!("{}?timeout_ms=2000", redis.url())).unwrap();
        connected(&shared).await;
        let local = RateLimiter::new(100);
        let user = applied("per-user", "u1", Quota::per_seconds(2, 3600, None));
        let tenant = applied("tenant", "", Quota::per_seconds(5, 3600, None));
        let both = [tenant, user];
        for _ in 0..2 {
            assert_eq!(shared.check_all("acme", &both, &local).await, Ok(()));
        }
        let refusal = shared.check_all("acme", &both, &local).await.unwrap_err();
        assert_eq!(refusal.limit_id, "per-user");
        let wait = refusal.retry_after;
        assert!(wait > Duration::from_secs(1790) && wait <= Duration::from_secs(1800), "{wait:?}");
        // Refused calls took nothing from the tenant bucket: 3 of 5 are left for other users.
        for _ in 0..5 {
            assert!(shared.check_all("acme", &both, &local).await.is_err());
        }
        for u in ["u2", "u3", "u4"] {
            assert_eq!(shared.check_all("acme", &[tenant, applied("per-user", u, user.quota)], &local).await, Ok(()));
        }
        let refusal = shared.check_all("acme", &[tenant, applied("per-user", "u5", user.quota)], &local).await;
        assert_eq!(refusal.unwrap_err().limit_id, "tenant");
        // Another tenant has buckets of its own.
        assert_eq!(shared.check_all("globex", &both, &local).await, Ok(()));
        // The buckets are in Redis under the documented keys, with an expiry; nothing local.
        let key = bucket_key("acme", "tenant", "");
        let Value::Int(ttl) = raw(&shared, &[b"PTTL", key.as_bytes()]).await else { panic!() };
        // Five tokens of 720 s each were taken: full again in an hour, plus the second of margin.
        assert!((3_590_000..=3_601_000).contains(&ttl), "{ttl}");
        let Value::Array(Some(keys)) = raw(&shared, &[b"KEYS", b"gatehouse:rl:*"]).await else { panic!() };
        // acme's tenant bucket and u1..u4 (u5 was refused: nothing was written), globex's two.
        assert_eq!(keys.len(), 1 + 4 + 2, "{keys:?}");
        assert_eq!(local.len(), 0, "the local buckets are only the fallback");
        assert_eq!(shared.fallbacks(), 0);
    }

    #[tokio::test]
    async fn a_flushed_script_is_loaded_again() {
        let redis = TestRedis::start();
        let shared = SharedLimiter::connect(&format!("{}?timeout_ms=2000", redis.url())).unwrap();
        connected(&shared).await;
        let local = RateLimiter::new(100);
        let one = [applied("lim", "u1", Quota::per_seconds(2, 60, None))];
        assert_eq!(shared.check_all("acme", &one, &local).await, Ok(()));
        assert_eq!(raw(&shared, &[b"SCRIPT", b"FLUSH"]).await, Value::Simple("OK".into()));
        assert_eq!(shared.check_all("acme", &one, &local).await, Ok(()), "NOSCRIPT, loaded, retried");
        assert!(shared.check_all("acme", &one, &local).await.is_err(), "and it still counts");
        assert_eq!(shared.fallbacks(), 0);
    }

    #[tokio::test]
    async fn a_silent_store_falls_back_to_local_buckets_within_the_timeout() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let shared = SharedLimiter::connect(&format!("redis://127.0.0.1:{port}/0?timeout_ms=30")).unwrap();
        connected(&shared).await;
        let local = RateLimiter::new(100);
        let one = [applied("lim", "u1", Quota::per_seconds(2, 3600, None))];
        let started = Instant::now();
        assert_eq!(shared.check_all("acme", &one, &local).await, Ok(()));
        assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
        assert_eq!(shared.fallbacks(), 1);
        assert!(!shared.is_connected(), "a timeout drops the connection");
        // Still limited, by this worker's buckets, and without waiting for the silent store.
        let started = Instant::now();
        assert_eq!(shared.check_all("acme", &one, &local).await, Ok(()));
        assert_eq!(shared.check_all("acme", &one, &local).await.unwrap_err().limit_id, "lim");
        // (Even if the worker reconnected meanwhile, a call waits at most the 30 ms timeout.)
        assert!(started.elapsed() < Duration::from_millis(250), "{:?}", started.elapsed());
        assert_eq!(shared.fallbacks(), 3);
        held.abort();
    }

    /// `cargo test -p gatehouse-gateway --release --lib shared_limits::tests::bench -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark: run by hand in release mode"]
    fn bench() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let redis = TestRedis::start();
            let shared = Arc::new(SharedLimiter::connect(&format!("{}?timeout_ms=1000", redis.url())).unwrap());
            connected(&shared).await;
            let local = Arc::new(RateLimiter::new(100));
            let q = Quota::per_seconds(1_000_000, 1, Some(10_000_000));
            let users: Vec<String> = (0..10_000).map(|i| format!("0190d3c2-7f3a-7cc1-9a8e-{i:012}")).collect();
            let n = 20_000usize;
            let start = Instant::now();
            for i in 0..n {
                let one = [applied("0190d3c2-7f3a-7cc1-9a8e-3c1f0b4e2a11", "", q)];
                shared.check_all("acme", &one, &local).await.unwrap();
                std::hint::black_box(i);
            }
            let per = start.elapsed() / n as u32;
            println!("{:<52} {:>8.1} µs/call", "shared, one limit, sequential", per.as_nanos() as f64 / 1e3);
            let start = Instant::now();
            for i in 0..n {
                let u = &users[i % users.len()];
                let three = [applied("tenant-limit", "", q), applied("role-limit", u, q), applied("user-limit", u, q)];
                shared.check_all("acme", &three, &local).await.unwrap();
            }
            let per = start.elapsed() / n as u32;
            println!(
                "{:<52} {:>8.1} µs/call",
                "shared, 3 limits, 10,000 users, sequential",
                per.as_nanos() as f64 / 1e3
            );
            let tasks = 64;
            let start = Instant::now();
            let handles: Vec<_> = (0..tasks)
                .map(|t| {
                    let (shared, local, users) = (Arc::clone(&shared), Arc::clone(&local), users.clone());
                    tokio::spawn(async move {
                        for i in 0..n / tasks {
                            let u = &users[(i * 7 + t * 1013) % users.len()];
                            let three = [
                                applied("tenant-limit", "", q),
                                applied("role-limit", u, q),
                                applied("user-limit", u, q),
                            ];
                            shared.check_all("acme", &three, &local).await.unwrap();
                        }
                    })
                })
                .collect();
            for h in handles {
                h.await.unwrap();
            }
            let elapsed = start.elapsed();
            println!(
                "{:<52} {:>8.0} calls/s (pipelined on one connection)",
                format!("shared, 3 limits, {tasks} concurrent callers"),
                n as f64 / elapsed.as_secs_f64()
            );
            println!("fallbacks: {}", shared.fallbacks());
        });
    }
}
