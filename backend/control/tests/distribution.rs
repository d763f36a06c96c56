//! The distribution test (issue 4): two control-plane replicas on one PostgreSQL database, three real
//! gateway workers long-polling them, a series of policy changes through one replica's API while
//! workers are killed and restarted. Every live worker converges on the newest bundle, no worker ever
//! goes back to an older one (a restarted worker starts from its disk copy, then catches up), and the
//! status reports in the store show each worker's revision. The propagation time of each change is
//! printed (not asserted: a timed assertion would fail on a loaded machine, not on a bug).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gatehouse_bundle::SigningKey;
use gatehouse_control::ControlPlane;
use gatehouse_gateway::{Gateway, GatewayConfig, WorkerOptions};
use gatehouse_store::Store;
use gatehouse_store::testing::TestDb;

mod common;
use common::{config, serve};

const TENANT: &str = "acme";
/// Upper bound for anything to converge; generous, a bounded wait rather than a timing claim.
const CONVERGE: Duration = Duration::from_secs(30);

struct Worker {
    id: String,
    control_url: String,
    dir: PathBuf,
    running: Option<Gateway>,
    /// The highest sequence this worker was ever seen to run (across restarts).
    highest_seen: u64,
}

impl Worker {
    async fn start(&mut self, key: &SigningKey) {
        let gw = Gateway::start_with(
            GatewayConfig {
                control_url: self.control_url.clone(),
                worker_token: "worker-secret".into(),
                group: "default".into(),
                trusted_keys: vec![key.public_base64()],
                data_dir: self.dir.clone(),
                public_url: "http://127.0.0.1:1".into(),
                upstream_timeout: Duration::from_secs(5),
                // A real long poll, short enough that a lost wake-up would still show as slow.
                poll_wait: Duration::from_secs(20),
                otlp_endpoint: None,
                metrics_token: None,
                stdio_commands: vec![],
                rate_limit_store: None,
            },
            WorkerOptions { worker_id: self.id.clone(), status_interval: Duration::from_secs(1) },
        )
        .await
        .expect("worker starts");
        // Before its first poll the worker runs its disk copy: never older than what it ran before.
        if let Some(seq) = gw.active_sequence(TENANT) {
            assert!(seq >= self.highest_seen, "{} restarted on sequence {seq}, had run {}", self.id, self.highest_seen);
            eprintln!("{} restarted from its disk copy at sequence {seq}", self.id);
        }
        self.running = Some(gw);
    }

    async fn kill(&mut self) {
        if let Some(gw) = self.running.take() {
            gw.shutdown().await;
        }
    }

    /// Samples the running sequence and checks it never went down.
    fn sample(&mut self) -> Option<u64> {
        let seq = self.running.as_ref()?.active_sequence(TENANT)?;
        assert!(seq >= self.highest_seen, "{} went back from sequence {} to {seq}", self.id, self.highest_seen);
        self.highest_seen = seq;
        Some(seq)
    }
}

/// Waits until every running worker runs `sequence`; returns how long it took.
async fn converge(workers: &mut [Worker], sequence: u64) -> Duration {
    let started = Instant::now();
    loop {
        let mut all = true;
        for w in workers.iter_mut() {
            if w.running.is_some() && w.sample() != Some(sequence) {
                all = false;
            }
        }
        if all {
            return started.elapsed();
        }
        let lagging: Vec<_> = workers
            .iter()
            .filter(|w| w.running.is_some())
            .map(|w| (w.id.clone(), w.running.as_ref().unwrap().active_sequence(TENANT)))
            .collect();
        assert!(started.elapsed() < CONVERGE, "workers did not reach sequence {sequence}: {lagging:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_every_worker_through_two_replicas_while_workers_restart() {
    let Some(db) = TestDb::postgres("changes_reach_every_worker_through_two_replicas_while_workers_restart").await
    else {
        return;
    };
    let url = db.postgres_url().unwrap();
    let key = SigningKey::generate();
    let a = ControlPlane::new(config(), db.store.clone(), key.clone()).await.unwrap();
    let b = ControlPlane::new(config(), Store::connect(&url).await.unwrap(), key.clone()).await.unwrap();
    a.services().ensure_bootstrap_admin("root@example.com", Some("a-long-enough-password")).await.unwrap();
    let admin = a.services().sign_in("root@example.com", "a-long-enough-password").await.unwrap();
    a.services().create_tenant(&admin, TENANT, "Acme").await.unwrap();
    let (url_a, url_b) = (serve(&a).await, serve(&b).await);

    // Three workers: one polls replica A, two poll replica B (which learns of A's changes by NOTIFY).
    let dirs = tempfile::tempdir().unwrap();
    let mut workers: Vec<Worker> = ["w0", "w1", "w2"]
        .iter()
        .enumerate()
        .map(|(i, id)| Worker {
            id: (*id).to_owned(),
            control_url: if i == 0 { url_a.clone() } else { url_b.clone() },
            dir: dirs.path().join(id),
            running: None,
            highest_seen: 0,
        })
        .collect();
    for w in &mut workers {
        w.start(&key).await;
    }
    let first = a.services().bundle(&admin, TENANT).await.unwrap().unwrap();
    converge(&mut workers, first.sequence as u64).await;

    // Changes through replica A; workers are killed and restarted in between.
    let mut timings = Vec::new();
    for i in 0..12 {
        match i {
            3 => workers[1].kill().await,
            5 => workers[1].start(&key).await,
            7 => {
                workers[0].kill().await;
                workers[2].kill().await;
            }
            9 => {
                workers[2].start(&key).await;
                workers[0].start(&key).await;
            }
            _ => {}
        }
        let changed_at = Instant::now();
        a.services().create_role(&admin, TENANT, &format!("role-{i}"), "").await.unwrap();
        let api = changed_at.elapsed();
        let latest = a.services().bundle(&admin, TENANT).await.unwrap().unwrap();
        converge(&mut workers, latest.sequence as u64).await;
        let total = changed_at.elapsed();
        let live = workers.iter().filter(|w| w.running.is_some()).count();
        eprintln!(
            "change {i}: sequence {} ran on all {live} live workers {total:?} after the change began \
             (the API call, compile included, took {api:?})",
            latest.sequence
        );
        timings.push(total);
    }
    timings.sort();
    eprintln!(
        "propagation over {} changes: median {:?}, max {:?}",
        timings.len(),
        timings[timings.len() / 2],
        timings[timings.len() - 1]
    );

    // Every worker is running again; each one's status report in the store shows the newest revision.
    let latest = a.services().bundle(&admin, TENANT).await.unwrap().unwrap();
    let tenant = a.store().tenant_by_slug(TENANT).await.unwrap().unwrap();
    let started = Instant::now();
    loop {
        let rows = b.store().worker_status_for_tenant(&tenant.id, "default").await.unwrap();
        let by_id: HashMap<_, _> = rows.iter().map(|r| (r.worker_id.as_str(), r)).collect();
        let done = workers.iter().all(|w| {
            by_id.get(w.id.as_str()).is_some_and(|r| {
                r.revision.as_deref() == Some(latest.revision.as_str()) && r.sequence == Some(latest.sequence)
            })
        });
        if done {
            assert!(rows.iter().all(|r| r.error.is_none() && r.contact_error.is_none()), "{rows:?}");
            break;
        }
        assert!(started.elapsed() < CONVERGE, "status reports did not catch up: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What a tenant admin sees through either replica.
    let view = b.services().gateway_status(&admin, TENANT).await.unwrap();
    assert_eq!(view.workers.iter().map(|w| w.worker_id.as_str()).collect::<Vec<_>>(), ["w0", "w1", "w2"]);
    assert!(view.workers.iter().all(|w| w.latest && w.online), "{view:?}");

    for w in &mut workers {
        w.kill().await;
    }
    drop((a, b));
    db.finish().await;
}

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < CONVERGE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Real workers on SQLite: moving a tenant between groups moves it between workers, and a worker that
/// refuses a tenant's bundles reports why, to that tenant only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_workers_follow_group_moves_and_report_refusals() {
    let db = TestDb::sqlite().await;
    let key = SigningKey::generate();
    let cp = ControlPlane::new(config(), db.store.clone(), key.clone()).await.unwrap();
    let s = cp.services();
    s.ensure_bootstrap_admin("root@example.com", Some("a-long-enough-password")).await.unwrap();
    let admin = s.sign_in("root@example.com", "a-long-enough-password").await.unwrap();
    s.create_tenant(&admin, "acme", "Acme").await.unwrap();
    s.create_tenant(&admin, "beta", "Beta").await.unwrap();
    gatehouse_control::gateways::create_group(cp.store(), "eu").await.unwrap();
    let base = serve(&cp).await;
    let dirs = tempfile::tempdir().unwrap();
    let start = async |id: &str, group: &str, trusted: &SigningKey| {
        Gateway::start_with(
            GatewayConfig {
                control_url: base.clone(),
                worker_token: "worker-secret".into(),
                group: group.into(),
                trusted_keys: vec![trusted.public_base64()],
                data_dir: dirs.path().join(id),
                public_url: "http://127.0.0.1:1".into(),
                upstream_timeout: Duration::from_secs(5),
                poll_wait: Duration::from_secs(20),
                otlp_endpoint: None,
                metrics_token: None,
                stdio_commands: vec![],
                rate_limit_store: None,
            },
            WorkerOptions { worker_id: id.into(), status_interval: Duration::from_secs(1) },
        )
        .await
        .unwrap()
    };
    let default_worker = start("gw-default", "default", &key).await;
    let eu_worker = start("gw-eu", "eu", &key).await;
    // A worker misconfigured with another key refuses every bundle.
    let stranger = start("gw-wrong-key", "default", &SigningKey::generate()).await;

    eventually("acme on the default worker", async || default_worker.active_revision("acme").is_some()).await;
    assert!(eu_worker.active_revision("acme").is_none());
    eventually("the refusal", async || stranger.tenant_error("acme").is_some()).await;

    gatehouse_control::gateways::assign(cp.store(), s.bundles(), "acme", "eu").await.unwrap();
    eventually("acme on the eu worker", async || eu_worker.active_revision("acme").is_some()).await;
    eventually("acme gone from the default worker", async || default_worker.active_revision("acme").is_none()).await;
    assert!(default_worker.active_revision("beta").is_some(), "beta stays");
    assert!(eu_worker.active_revision("beta").is_none());

    // Acme's admin view: its group is eu, the eu worker runs the newest revision.
    let latest = s.bundle(&admin, "acme").await.unwrap().unwrap();
    eventually("the eu worker's report", async || {
        let view = s.gateway_status(&admin, "acme").await.unwrap();
        view.group == "eu" && view.workers.iter().any(|w| w.worker_id == "gw-eu" && w.latest)
    })
    .await;
    assert_eq!(eu_worker.active_sequence("acme"), Some(latest.sequence as u64));
    // Beta's view shows the misconfigured worker's refusal of beta's bundle, naming the key, and
    // nothing of acme.
    eventually("the refusal report", async || {
        let view = s.gateway_status(&admin, "beta").await.unwrap();
        view.workers.iter().any(|w| w.worker_id == "gw-wrong-key" && w.error.is_some())
    })
    .await;
    let view = s.gateway_status(&admin, "beta").await.unwrap();
    let wrong = view.workers.iter().find(|w| w.worker_id == "gw-wrong-key").unwrap();
    let error = wrong.error.as_deref().unwrap();
    assert!(error.contains("'beta'") && error.contains("key"), "{error}");
    assert!(!error.contains("acme"), "{error}");
    assert!(wrong.revision.is_none() && !wrong.latest);
    assert!(view.workers.iter().all(|w| w.worker_id != "gw-eu"), "the eu worker never served beta: {view:?}");

    for w in [default_worker, eu_worker, stranger] {
        w.shutdown().await;
    }
    drop(cp);
    db.finish().await;
}
