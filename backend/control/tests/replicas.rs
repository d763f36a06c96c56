//! Several control-plane replicas on one PostgreSQL database: a change made through one replica
//! wakes the workers long-polling another (`LISTEN/NOTIFY`), so it reaches them at once.

use std::time::{Duration, Instant};

use gatehouse_bundle::SigningKey;
use gatehouse_control::ControlPlane;
use gatehouse_store::Store;
use gatehouse_store::testing::TestDb;

mod common;
use common::{config, serve};

/// One long-poll as a worker makes it: returns the status, the ETag and the time it took.
async fn poll(http: &reqwest::Client, base: &str, etag: Option<&str>, wait: u64) -> (u16, String, Duration) {
    let started = Instant::now();
    let mut req = http.get(format!("{base}/v1/bundles/default?wait={wait}")).bearer_auth("worker-secret");
    if let Some(e) = etag {
        req = req.header("if-none-match", e);
    }
    let resp = req.send().await.unwrap();
    let etag = resp.headers().get("etag").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (resp.status().as_u16(), etag, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_replica_wakes_workers_polling_another() {
    let Some(db) = TestDb::postgres("a_change_on_one_replica_wakes_workers_polling_another").await else { return };
    let url = db.postgres_url().unwrap();
    let key = SigningKey::generate();
    // Two replicas, each with its own pool, as two processes would have.
    let a = ControlPlane::new(config(), db.store.clone(), key.clone()).await.unwrap();
    let b = ControlPlane::new(config(), Store::connect(&url).await.unwrap(), key.clone()).await.unwrap();
    a.services().ensure_bootstrap_admin("root@example.com", Some("a-long-enough-password")).await.unwrap();
    let admin = a.services().sign_in("root@example.com", "a-long-enough-password").await.unwrap();
    let base_b = serve(&b).await;
    let http = reqwest::Client::new();

    let (status, etag, _) = poll(&http, &base_b, None, 0).await;
    assert_eq!(status, 200);
    // Nothing changes: the long-poll waits its full time and answers 304.
    let (status, _, took) = poll(&http, &base_b, Some(&etag), 1).await;
    assert_eq!(status, 304);
    assert!(took >= Duration::from_millis(900), "a long-poll without changes waits ({took:?})");

    // A worker waits on replica B while an admin changes policy through replica A.
    let waiting = {
        let (http, base_b, etag) = (http.clone(), base_b.clone(), etag.clone());
        tokio::spawn(async move { poll(&http, &base_b, Some(&etag), 30).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let changed_at = Instant::now();
    a.services().create_tenant(&admin, "acme", "Acme").await.unwrap();
    let (status, new_etag, _) = waiting.await.unwrap();
    let latency = changed_at.elapsed();
    eprintln!("change through replica A reached a worker polling replica B after {latency:?}");
    assert_eq!(status, 200);
    assert_ne!(new_etag, etag);
    assert!(latency < Duration::from_secs(5), "the notice must wake the poll, not its timeout ({latency:?})");

    // Both replicas compiled the same state, so they agree on every revision.
    let from_a = a.services().bundle(&admin, "acme").await.unwrap().unwrap();
    let from_b = b.services().bundle(&admin, "acme").await.unwrap().unwrap();
    assert_eq!(from_a, from_b);
    drop((a, b));
    db.finish().await;
}
