//! Rate limits shared by several workers through Redis (`--rate-limit-store`): two real workers,
//! a real `redis-server` on 127.0.0.1, a fake control plane and tiny MCP upstreams.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse_bundle::SigningKey;
use gatehouse_bundle::format::{Content, RateLimit};
use gatehouse_core::limits::LimitScope;
use serde_json::json;
use support::*;

/// A throwaway `redis-server` (no persistence) on 127.0.0.1, killed on drop.
struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    /// On a free port (a few tries, in case another process takes the port meanwhile).
    fn start() -> Redis {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            if let Some(redis) = Redis::start_on(port) {
                return redis;
            }
        }
        panic!("redis-server did not start");
    }

    /// On `port`, waiting (at most 5 s) until it accepts connections; `None` if it exits first.
    fn start_on(port: u16) -> Option<Redis> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian redis-server; `scripts/setup.sh test` installs it)");
        let mut redis = Redis { port, child };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if redis.child.try_wait().unwrap().is_some() {
                return None;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The store URL; a generous timeout so a busy test machine never falls back by accident.
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0?timeout_ms=2000", self.port)
    }

    /// Kills the server (as a crash would) and waits until it is gone.
    fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tenant`'s bundle content: each user may call alpha's `echo` `per_user` times an hour.
fn limited(up: &Upstreams, tenant: &str, per_user: u32) -> Content {
    let mut content = content(up, ANALYST);
    content.tenant = tenant.to_owned();
    content.rate_limits = vec![RateLimit {
        id: "echo-per-user".into(),
        scope: LimitScope::User,
        role: None,
        user: None,
        server: Some("alpha".into()),
        tool: Some("echo".into()),
        requests: per_user,
        per_seconds: 3600,
        burst: None,
    }];
    content.normalize();
    content
}

/// Two workers sharing the Redis at `store`, both serving the published bundles.
async fn two_workers(cp: &FakeControlPlane, key: &SigningKey, store: &str) -> [(TestGateway, tempfile::TempDir); 2] {
    let mut workers = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let gw =
            TestGateway::start_configured(&cp.url, dir.path(), key, |c| c.rate_limit_store = Some(store.into())).await;
        gw.revision().await;
        workers.push((gw, dir));
    }
    workers.try_into().map_err(|_| ()).unwrap()
}

async fn client(gw: &TestGateway, tenant: &str, token: &str) -> McpClient {
    let mut c = McpClient::new(&format!("{}/mcp/{tenant}/dev", gw.url), Some(token));
    let init = c.initialize().await;
    assert_eq!(init.status, 200, "{init:?}");
    c
}

/// The value of an unlabelled metric on `gw`'s `/metrics`.
async fn metric(gw: &TestGateway, name: &str) -> Option<f64> {
    let reply = gw.get("/metrics").await;
    let text = reply.body.as_str().unwrap_or_default().to_owned();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn passed(reply: &Reply) -> bool {
    reply.status == 200 && text_of(reply) == "alpha/echo: {}"
}

/// A 429 naming the per-user limit, with a Retry-After of at most the time one token takes.
fn refused(reply: &Reply) -> bool {
    let retry: u64 = match reply.headers.get("retry-after") {
        Some(v) => v.to_str().unwrap().parse().unwrap(),
        None => return false,
    };
    reply.status == 429
        && reply.body["error"]["data"]["code"] == "RATE_LIMITED"
        && reply.body["error"]["data"]["rule"] == "echo-per-user"
        && (1..=3600 / 3).contains(&retry)
}

#[tokio::test]
async fn two_workers_enforce_one_limit_through_redis() {
    let redis = Redis::start();
    let key = SigningKey::generate();
    let up = Upstreams::start().await;
    let cp = FakeControlPlane::start().await;
    cp.publish(vec![
        key.sign("default", 1, 0, limited(&up, TENANT, 5)),
        key.sign("default", 1, 0, limited(&up, "globex", 5)),
    ]);
    let [(w1, _d1), (w2, _d2)] = two_workers(&cp, &key, &redis.url()).await;
    let mut alice = [client(&w1, TENANT, ALICE).await, client(&w2, TENANT, ALICE).await];

    // Alice alternates between the workers: five calls in all, not five on each.
    for i in 0..5 {
        let reply = alice[i % 2].call("echo", json!({})).await;
        assert!(passed(&reply), "call {i}: {reply:?}");
    }
    let sixth = alice[1].call("echo", json!({})).await;
    assert!(refused(&sixth), "{sixth:?}");
    let seventh = alice[0].call("echo", json!({})).await;
    assert!(refused(&seventh), "the other worker refuses too: {seventh:?}");
    assert_eq!(up.alpha.calls().len(), 5, "refused calls never reach the upstream");

    // Bob's bucket is his own, on either worker.
    let mut bob = client(&w2, TENANT, BOB).await;
    assert!(passed(&bob.call("echo", json!({})).await));
    // Another tenant with the same limit id and the same user ids shares nothing with acme.
    let mut globex_alice = [client(&w1, "globex", ALICE).await, client(&w2, "globex", ALICE).await];
    for i in 0..5 {
        let reply = globex_alice[i % 2].call("echo", json!({})).await;
        assert!(passed(&reply), "globex call {i}: {reply:?}");
    }
    assert!(refused(&globex_alice[0].call("echo", json!({})).await));

    for w in [&w1, &w2] {
        assert_eq!(metric(w, "gatehouse_rate_limit_store_up").await, Some(1.0));
        assert_eq!(metric(w, "gatehouse_rate_limit_store_fallbacks_total").await, Some(0.0));
    }
    w1.stop().await;
    w2.stop().await;
}

#[tokio::test]
async fn without_redis_calls_are_judged_by_each_worker_and_shared_again_when_it_is_back() {
    let redis = Redis::start();
    let key = SigningKey::generate();
    let up = Upstreams::start().await;
    let cp = FakeControlPlane::start().await;
    cp.publish(vec![key.sign("default", 1, 0, limited(&up, TENANT, 3))]);
    let [(w1, _d1), (w2, _d2)] = two_workers(&cp, &key, &redis.url()).await;
    let mut alice = [client(&w1, TENANT, ALICE).await, client(&w2, TENANT, ALICE).await];
    assert!(passed(&alice[0].call("echo", json!({})).await));
    assert!(passed(&alice[1].call("echo", json!({})).await));

    // Redis dies: no outage, and no free-for-all either. Each worker judges by its own buckets
    // (fresh, so three calls each), and counts every call it judged alone.
    let port = redis.kill();
    for (i, w) in alice.iter_mut().enumerate() {
        for n in 0..3 {
            let reply = w.call("echo", json!({})).await;
            assert!(passed(&reply), "worker {i}, local call {n}: {reply:?}");
        }
        let reply = w.call("echo", json!({})).await;
        assert!(refused(&reply), "worker {i} still limits: {reply:?}");
    }
    for w in [&w1, &w2] {
        assert_eq!(metric(w, "gatehouse_rate_limit_store_fallbacks_total").await, Some(4.0));
        assert_eq!(metric(w, "gatehouse_rate_limit_store_up").await, Some(0.0));
    }

    // Redis is back (empty, as after a restart without persistence): the workers reconnect by
    // themselves and the buckets are shared again.
    let _redis = Redis::start_on(port).expect("redis-server restarts on its port");
    for w in [&w1, &w2] {
        eventually("the worker reconnects", async || {
            (metric(w, "gatehouse_rate_limit_store_up").await == Some(1.0)).then_some(())
        })
        .await;
    }
    for i in 0..3 {
        let reply = alice[i % 2].call("echo", json!({})).await;
        assert!(passed(&reply), "shared call {i}: {reply:?}");
    }
    assert!(refused(&alice[1].call("echo", json!({})).await));
    assert!(refused(&alice[0].call("echo", json!({})).await));
    for w in [&w1, &w2] {
        assert_eq!(metric(w, "gatehouse_rate_limit_store_fallbacks_total").await, Some(4.0), "judged by Redis again");
    }
    w1.stop().await;
    w2.stop().await;
}

#[tokio::test]
async fn a_bad_store_url_stops_the_worker_from_starting() {
    let key = SigningKey::generate();
    let cp = FakeControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let started = gatehouse_gateway::Gateway::start(gatehouse_gateway::GatewayConfig {
        control_url: cp.url.clone(),
        worker_token: WORKER_TOKEN.into(),
        group: "default".into(),
        trusted_keys: vec![key.public_base64()],
        data_dir: dir.path().to_owned(),
        public_url: "http://127.0.0.1:1".into(),
        upstream_timeout: Duration::from_secs(5),
        poll_wait: Duration::from_secs(1),
        otlp_endpoint: None,
        metrics_token: None,
        stdio_commands: vec![],
        rate_limit_store: Some("rediss://:hunter2@redis:6380/0".into()),
    })
    .await;
    let e = format!("{:#}", started.err().expect("refused"));
    assert!(e.contains("rate-limit store URL") && e.contains("TLS"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}
