//! The worker API's delta endpoint (`POST /v1/bundles/{group}/delta`,
//! `docs/decisions/0017-bundle-delta-and-compression.md`): only the tenants whose newest bundle the
//! worker does not hold travel, gzip-compressed, with the group's complete tenant list; the ETag and
//! long poll work as on `GET /v1/bundles/{group}`, which old workers keep using. On SQLite and on
//! PostgreSQL.

use std::time::{Duration, Instant};

use gatehouse_bundle::wire::{self, DeltaAnswer, Held};
use gatehouse_bundle::{KeyRing, SigningKey};
use gatehouse_control::{Actor, ControlPlane, gateways};
use gatehouse_store::testing::TestDb;
use serde_json::{Value, json};

mod common;
use common::{config, serve};

async fn plane(db: &TestDb, key: &SigningKey) -> (ControlPlane, Actor) {
    let cp = ControlPlane::new(config(), db.store.clone(), key.clone()).await.unwrap();
    cp.services().ensure_bootstrap_admin("root@example.com", Some("a-long-enough-password")).await.unwrap();
    let admin = cp.services().sign_in("root@example.com", "a-long-enough-password").await.unwrap();
    (cp, admin)
}

/// One delta poll as a worker makes it: what came back.
struct Polled {
    status: u16,
    etag: Option<String>,
    /// Bytes on the wire (the body as sent, compressed when `gzip`).
    wire_bytes: usize,
    gzip: bool,
    answer: Option<DeltaAnswer>,
    /// The tenants whose bundles came, verified with the key, in order.
    sent: Vec<String>,
    error: Value,
}

async fn poll(
    http: &reqwest::Client,
    base: &str,
    group: &str,
    held: &[Held],
    etag: Option<&str>,
    wait: u64,
    key: &SigningKey,
) -> Polled {
    let mut req = http
        .post(format!("{base}/v1/bundles/{group}/delta?wait={wait}"))
        .bearer_auth("worker-secret")
        .header("accept-encoding", "gzip")
        .json(&json!({ "held": held }));
    if let Some(tag) = etag {
        req = req.header("if-none-match", tag);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let etag = resp.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
    let gzip = resp.headers().get("content-encoding").is_some_and(|v| v == "gzip");
    let body = resp.bytes().await.unwrap().to_vec();
    let mut polled =
        Polled { status, etag, wire_bytes: body.len(), gzip, answer: None, sent: vec![], error: Value::Null };
    if status != 200 {
        polled.error = serde_json::from_slice(&body).unwrap_or(Value::Null);
        return polled;
    }
    let text = if gzip { wire::gunzip_bounded(&body, 64 << 20).unwrap() } else { body };
    let answer: DeltaAnswer = serde_json::from_slice(&text).unwrap();
    let mut ring = KeyRing::default();
    ring.add_base64(&key.public_base64()).unwrap();
    for b in &answer.bundles {
        let bundle = ring.verify(&b.clone().into_signed()).expect("every bundle sent verifies");
        assert_eq!(bundle.manifest.group, group);
        let listed =
            answer.tenants.iter().find(|t| t.tenant == bundle.manifest.tenant).expect("a sent bundle is listed");
        assert_eq!(
            (listed.sequence, listed.revision.as_str()),
            (bundle.manifest.sequence, bundle.manifest.revision.as_str())
        );
        polled.sent.push(bundle.manifest.tenant);
    }
    polled.answer = Some(answer);
    polled
}

fn names(held: &[Held]) -> Vec<&str> {
    held.iter().map(|h| h.tenant.as_str()).collect()
}

async fn only_changed_tenants_travel(db: TestDb) {
    let key = SigningKey::generate();
    let (cp, admin) = plane(&db, &key).await;
    let s = cp.services();
    s.create_tenant(&admin, "acme", "Acme").await.unwrap();
    s.create_tenant(&admin, "beta", "Beta").await.unwrap();
    let base = serve(&cp).await;
    let http = reqwest::Client::new();

    // First poll, holding nothing: every tenant's bundle, gzip-compressed, and the complete list.
    let first = poll(&http, &base, "default", &[], None, 0, &key).await;
    assert_eq!(first.status, 200);
    assert!(first.gzip, "the worker accepts gzip, so the answer is compressed");
    let listed = first.answer.as_ref().unwrap().tenants.clone();
    assert_eq!(names(&listed), ["acme", "beta", "platform"]);
    assert_eq!(first.sent, ["acme", "beta", "platform"]);
    let etag = first.etag.clone().unwrap();
    // The whole-set GET (old workers) still answers, with the same ETag.
    let old = http.get(format!("{base}/v1/bundles/default")).bearer_auth("worker-secret").send().await.unwrap();
    assert_eq!(old.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(old.json::<Value>().await.unwrap()["bundles"].as_array().unwrap().len(), 3);

    // Holding everything with the ETag: nothing changed, 304 (after the wait).
    let same = poll(&http, &base, "default", &listed, Some(&etag), 0, &key).await;
    assert_eq!((same.status, same.etag.as_deref()), (304, Some(etag.as_str())));
    // Holding everything without the ETag (a restarted worker with its disk copy): the list, no bundle.
    let restarted = poll(&http, &base, "default", &listed, None, 0, &key).await;
    assert_eq!(restarted.status, 200);
    assert!(restarted.sent.is_empty(), "{:?}", restarted.sent);
    assert_eq!(restarted.answer.unwrap().tenants, listed);

    // A change of beta, while the worker long-polls: only beta's bundle travels, not acme's.
    let waiting = {
        let (http, base, listed, etag, key) = (http.clone(), base.clone(), listed.clone(), etag.clone(), key.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let p = poll(&http, &base, "default", &listed, Some(&etag), 20, &key).await;
            (p, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.create_role(&admin, "beta", "ops", "").await.unwrap();
    let (changed, took) = waiting.await.unwrap();
    assert!(took < Duration::from_secs(15), "the long poll woke on the change ({took:?})");
    assert_eq!(changed.status, 200);
    assert_eq!(changed.sent, ["beta"], "acme and platform did not change and are not re-sent");
    let now = changed.answer.unwrap().tenants;
    assert_eq!(names(&now), ["acme", "beta", "platform"]);
    assert_eq!(now[0], listed[0]);
    assert!(now[1].sequence > listed[1].sequence);
    assert_ne!(changed.etag.as_deref(), Some(etag.as_str()));
    // A worker that still holds the old beta and a stale acme gets both; one that claims a tenant of
    // another group or an unknown one is not sent anything for it.
    let mut stale = listed.clone();
    stale[0].sequence = 0;
    stale.push(Held { tenant: "zeta".into(), sequence: 1, revision: "00".into() });
    let p = poll(&http, &base, "default", &stale, None, 0, &key).await;
    assert_eq!(p.sent, ["acme", "beta"]);

    // beta leaves the group: default's list no longer names it (the worker drops it), and the new
    // group's workers get its bundle; acme's does not travel again.
    gateways::create_group(cp.store(), "eu").await.unwrap();
    gateways::assign(cp.store(), s.bundles(), "beta", "eu").await.unwrap();
    let p = poll(&http, &base, "default", &now, changed.etag.as_deref(), 0, &key).await;
    assert_eq!(p.status, 200);
    assert_eq!(names(&p.answer.unwrap().tenants), ["acme", "platform"]);
    assert!(p.sent.is_empty(), "{:?}", p.sent);
    let eu = poll(&http, &base, "eu", &now, None, 0, &key).await;
    assert_eq!(eu.sent, ["beta"], "beta's bundle for eu is newer than the default one held");
    assert_eq!(names(&eu.answer.unwrap().tenants), ["beta"]);

    // Without Accept-Encoding the answer is plain JSON.
    let plain = http
        .post(format!("{base}/v1/bundles/default/delta"))
        .bearer_auth("worker-secret")
        .json(&json!({ "held": [] }))
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain_len = plain.bytes().await.unwrap().len();
    let gz = poll(&http, &base, "default", &[], None, 0, &key).await;
    assert!(gz.gzip && gz.wire_bytes < plain_len, "{} < {plain_len}", gz.wire_bytes);
    assert_eq!(gz.sent, ["acme", "platform"]);
    db.finish().await;
}

async fn delta_requests_are_validated(db: TestDb) {
    let key = SigningKey::generate();
    let (cp, _admin) = plane(&db, &key).await;
    let base = serve(&cp).await;
    let http = reqwest::Client::new();
    let post = |group: &str, body: Value, token: &str| {
        http.post(format!("{base}/v1/bundles/{group}/delta")).bearer_auth(token).json(&body).send()
    };
    let answer = |r: reqwest::Response| async move { (r.status().as_u16(), r.json::<Value>().await.unwrap()) };

    let (status, body) = answer(post("default", json!({ "held": [] }), "wrong").await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("UNAUTHENTICATED")));
    let (status, body) = answer(post("nowhere", json!({ "held": [] }), "worker-secret").await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("NOT_FOUND")));
    assert!(body["error"]["message"].as_str().unwrap().contains("gateway group 'nowhere'"), "{body}");
    let cases = [
        (json!({ "held": "all" }), "body:"),
        (json!({ "held": [{ "tenant": "", "sequence": 1, "revision": "ab" }] }), "held[0].tenant:"),
        (json!({ "held": [{ "tenant": "acme", "sequence": 1, "revision": "a".repeat(65) }] }), "held[0].revision:"),
        (json!({ "held": vec![json!({ "tenant": "t", "sequence": 1, "revision": "r" }); 10_001] }), "held:"),
    ];
    for (body, field) in cases {
        let (status, answer) = answer(post("default", body, "worker-secret").await.unwrap()).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "INVALID_INPUT");
        assert!(answer["error"]["message"].as_str().unwrap().starts_with(field), "{field}: {answer}");
    }
    // An empty body asks for everything.
    let r = http.post(format!("{base}/v1/bundles/default/delta")).bearer_auth("worker-secret").json(&json!({})).send();
    assert_eq!(r.await.unwrap().status().as_u16(), 200);
    db.finish().await;
}

#[tokio::test]
async fn only_changed_tenants_travel_sqlite() {
    only_changed_tenants_travel(TestDb::sqlite().await).await;
}

#[tokio::test]
async fn only_changed_tenants_travel_postgres() {
    let Some(db) = TestDb::postgres("only_changed_tenants_travel_postgres").await else { return };
    only_changed_tenants_travel(db).await;
}

#[tokio::test]
async fn delta_requests_are_validated_sqlite() {
    delta_requests_are_validated(TestDb::sqlite().await).await;
}

#[tokio::test]
async fn delta_requests_are_validated_postgres() {
    let Some(db) = TestDb::postgres("delta_requests_are_validated_postgres").await else { return };
    delta_requests_are_validated(db).await;
}
