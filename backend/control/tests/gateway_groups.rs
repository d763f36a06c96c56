//! Gateway groups (tenant → group assignment, per-group bundle sets), worker status reports and
//! what each tenant sees of them, and signing-key rotation; on SQLite and on PostgreSQL.

use gatehouse_bundle::{KeyRing, SignedBundle, SigningKey};
use gatehouse_control::{Actor, ControlPlane, gateways};
use gatehouse_core::ErrorCode;
use gatehouse_core::gateways::MAX_REPORT_TENANTS;
use gatehouse_store::testing::TestDb;
use gatehouse_store::{Store, WorkerReport};
use serde_json::{Value, json};

mod common;
use common::{config, serve};

async fn plane(store: Store, key: &SigningKey) -> (ControlPlane, Actor) {
    let cp = ControlPlane::new(config(), store, key.clone()).await.unwrap();
    cp.services().ensure_bootstrap_admin("root@example.com", Some("a-long-enough-password")).await.unwrap();
    let admin = cp.services().sign_in("root@example.com", "a-long-enough-password").await.unwrap();
    (cp, admin)
}

/// The tenants (slug, group, sequence) a group's bundle set holds, verified with `key`.
async fn set_of(
    http: &reqwest::Client,
    base: &str,
    group: &str,
    key: &SigningKey,
) -> (u16, Vec<(String, String, u64)>) {
    let resp = http.get(format!("{base}/v1/bundles/{group}")).bearer_auth("worker-secret").send().await.unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, vec![]);
    }
    let body: Value = resp.json().await.unwrap();
    let mut ring = KeyRing::default();
    ring.add_base64(&key.public_base64()).unwrap();
    let mut out = Vec::new();
    for b in body["bundles"].as_array().unwrap() {
        let signed: SignedBundle = serde_json::from_value(b.clone()).unwrap();
        let bundle = ring.verify(&signed).unwrap();
        // The bootstrap administrator's own tenant is there too; these tests look at theirs.
        if bundle.manifest.tenant == "platform" {
            continue;
        }
        out.push((bundle.manifest.tenant, bundle.manifest.group, bundle.manifest.sequence));
    }
    out.sort();
    (status, out)
}

async fn report(http: &reqwest::Client, base: &str, body: Value) -> (u16, Value) {
    let resp =
        http.post(format!("{base}/v1/workers/status")).bearer_auth("worker-secret").json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn groups_move_tenants_between_bundle_sets(db: TestDb) {
    let key = SigningKey::generate();
    let (cp, admin) = plane(db.store.clone(), &key).await;
    let s = cp.services();
    s.create_tenant(&admin, "acme", "Acme").await.unwrap();
    s.create_tenant(&admin, "beta", "Beta").await.unwrap();
    let base = serve(&cp).await;
    let http = reqwest::Client::new();

    // New and existing tenants are in the configured group.
    let (status, default_set) = set_of(&http, &base, "default", &key).await;
    assert_eq!(status, 200);
    assert_eq!(default_set.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(), ["acme", "beta"]);
    let acme_seq = default_set[0].2;
    // A group nobody created does not exist.
    assert_eq!(set_of(&http, &base, "eu", &key).await.0, 404);

    // Operator actions: bad slugs and unknown names are refused, naming the field or object.
    let e = gateways::create_group(cp.store(), "EU!").await.unwrap_err();
    assert!(e.to_string().starts_with("group:"), "{e}");
    let e = gateways::assign(cp.store(), s.bundles(), "acme", "eu").await.unwrap_err();
    assert!(e.to_string().contains("gateway group 'eu'"), "{e}");
    let e = gateways::assign(cp.store(), s.bundles(), "nope", "default").await.unwrap_err();
    assert!(e.to_string().contains("tenant 'nope'"), "{e}");
    gateways::create_group(cp.store(), "eu").await.unwrap();
    assert!(gateways::create_group(cp.store(), "eu").await.unwrap_err().to_string().contains("already exists"));

    // Moving acme to eu: its bundle leaves default's set and joins eu's, for group eu, with a higher
    // sequence (a worker never sees it go back).
    gateways::assign(cp.store(), s.bundles(), "acme", "eu").await.unwrap();
    let (_, default_set) = set_of(&http, &base, "default", &key).await;
    assert_eq!(default_set.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(), ["beta"]);
    let (status, eu_set) = set_of(&http, &base, "eu", &key).await;
    assert_eq!(status, 200);
    assert_eq!(eu_set.len(), 1);
    assert_eq!((eu_set[0].0.as_str(), eu_set[0].1.as_str()), ("acme", "eu"));
    assert!(eu_set[0].2 > acme_seq, "{} > {acme_seq}", eu_set[0].2);
    // A change in acme goes to eu only.
    s.create_role(&admin, "acme", "ops", "").await.unwrap();
    let (_, eu_after) = set_of(&http, &base, "eu", &key).await;
    assert!(eu_after[0].2 > eu_set[0].2);
    assert_eq!(set_of(&http, &base, "default", &key).await.1, default_set);
    let listing = gateways::list_groups(cp.store(), "default").await.unwrap();
    let names: Vec<(String, Vec<String>)> = listing.into_iter().map(|g| (g.slug, g.tenants)).collect();
    assert_eq!(
        names,
        vec![("default".into(), vec!["beta".into(), "platform".into()]), ("eu".into(), vec!["acme".into()])]
    );
    // And back: default's set has it again, with a still higher sequence.
    gateways::assign(cp.store(), s.bundles(), "acme", "default").await.unwrap();
    let (_, default_set) = set_of(&http, &base, "default", &key).await;
    assert_eq!(default_set.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(), ["acme", "beta"]);
    assert!(default_set[0].2 > eu_after[0].2);
    assert!(set_of(&http, &base, "eu", &key).await.1.is_empty());
    assert_eq!(s.gateway_status(&admin, "acme").await.unwrap().group, "default");
    drop(cp);
    db.finish().await;
}

async fn status_reports_are_shown_per_tenant_only(db: TestDb) {
    let key = SigningKey::generate();
    let (cp, admin) = plane(db.store.clone(), &key).await;
    let s = cp.services();
    s.create_tenant(&admin, "acme", "Acme").await.unwrap();
    s.create_tenant(&admin, "beta", "Beta").await.unwrap();
    s.create_user(&admin, "acme", "ann@acme.test", "Ann", "admin", Some("anns-long-password")).await.unwrap();
    s.create_user(&admin, "beta", "bob@beta.test", "Bob", "admin", Some("bobs-long-password")).await.unwrap();
    let ann = s.sign_in("ann@acme.test", "anns-long-password").await.unwrap();
    let bob = s.sign_in("bob@beta.test", "bobs-long-password").await.unwrap();
    let acme = s.bundle(&admin, "acme").await.unwrap().unwrap();
    let beta = s.bundle(&admin, "beta").await.unwrap().unwrap();
    let base = serve(&cp).await;
    let http = reqwest::Client::new();

    // A worker runs beta's newest bundle and refused acme's; its report names both tenants.
    let (status, body) = report(
        &http,
        &base,
        json!({
            "workerId": "gw-1", "group": "default", "version": "1.2.3", "contactError": null,
            "tenants": [
                {"tenant": "acme", "revision": null, "sequence": null, "error": "ACME-SECRET refusal: bad signature"},
                {"tenant": "beta", "revision": beta.revision, "sequence": beta.sequence, "error": null},
                {"tenant": "ghost", "revision": "00", "sequence": 1, "error": null}
            ]
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unknownTenant"], 1);
    // A second worker is behind on acme.
    let (status, _) = report(
        &http,
        &base,
        json!({"workerId": "gw-2", "group": "default", "version": "1.2.3", "contactError": "cannot reach the control plane",
               "tenants": [{"tenant": "acme", "revision": "0123", "sequence": 1, "error": null},
                           {"tenant": "beta", "revision": "BETA-OLD-REVISION", "sequence": 1, "error": "BETA-SECRET"}]}),
    )
    .await;
    assert_eq!(status, 200);

    // Ann (acme) sees both workers, acme's revision and error only.
    let view = s.gateway_status(&ann, "acme").await.unwrap();
    assert_eq!(view.group, "default");
    assert_eq!(view.latest_revision.as_deref(), Some(acme.revision.as_str()));
    assert_eq!(view.workers.iter().map(|w| w.worker_id.as_str()).collect::<Vec<_>>(), ["gw-1", "gw-2"]);
    let (w1, w2) = (&view.workers[0], &view.workers[1]);
    assert_eq!(w1.revision, None);
    assert!(!w1.latest && w1.online);
    assert_eq!(w1.error.as_deref(), Some("ACME-SECRET refusal: bad signature"));
    assert_eq!(w2.revision.as_deref(), Some("0123"));
    assert!(!w2.latest);
    assert_eq!(w2.error, None);
    assert_eq!(w2.contact_error.as_deref(), Some("cannot reach the control plane"));
    let text = format!("{view:?}");
    assert!(!text.contains("BETA") && !text.contains(&beta.revision), "acme sees nothing of beta: {text}");

    // Bob (beta) sees beta's rows only, and cannot ask about acme.
    let view = s.gateway_status(&bob, "beta").await.unwrap();
    assert!(view.workers[0].latest, "gw-1 runs beta's newest bundle");
    assert_eq!(view.workers[0].error, None);
    assert_eq!(view.workers[1].error.as_deref(), Some("BETA-SECRET"));
    let text = format!("{view:?}");
    assert!(!text.contains("ACME") && !text.contains(&acme.revision) && !text.contains("0123"), "{text}");
    assert_eq!(s.gateway_status(&bob, "acme").await.unwrap_err().code, ErrorCode::NotFound);

    // A worker of another group that never reported about acme is not shown to acme.
    gateways::create_group(cp.store(), "eu").await.unwrap();
    let (status, _) = report(
        &http,
        &base,
        json!({"workerId": "gw-eu", "group": "eu", "version": "1", "contactError": null, "tenants": []}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(s.gateway_status(&ann, "acme").await.unwrap().workers.len(), 2);

    // A report replaces the previous one whole: gw-1 catches up on acme, its error is gone.
    let (status, _) = report(
        &http,
        &base,
        json!({"workerId": "gw-1", "group": "default", "version": "1.2.4", "contactError": null,
               "tenants": [{"tenant": "acme", "revision": acme.revision, "sequence": acme.sequence, "error": null}]}),
    )
    .await;
    assert_eq!(status, 200);
    let w1 = s.gateway_status(&ann, "acme").await.unwrap().workers.remove(0);
    assert!(w1.latest && w1.error.is_none() && w1.version == "1.2.4", "{w1:?}");
    assert_eq!(s.gateway_status(&bob, "beta").await.unwrap().workers[0].revision, None);

    // Stale reports show the worker offline.
    cp.store()
        .put_worker_report(
            &WorkerReport {
                worker_id: "gw-old".into(),
                group_slug: "default".into(),
                version: "1".into(),
                contact_error: None,
                reported_at_ms: gatehouse_control::now_ms() - 10 * 60_000,
            },
            &[],
        )
        .await
        .unwrap();
    let view = s.gateway_status(&ann, "acme").await.unwrap();
    let old = view.workers.iter().find(|w| w.worker_id == "gw-old").unwrap();
    assert!(!old.online);
    // Reports silent for a day are deleted at the next report.
    cp.store()
        .put_worker_report(
            &WorkerReport {
                worker_id: "gw-gone".into(),
                group_slug: "default".into(),
                version: "1".into(),
                contact_error: None,
                reported_at_ms: gatehouse_control::now_ms() - 25 * 3_600_000,
            },
            &[],
        )
        .await
        .unwrap();
    let (status, _) = report(
        &http,
        &base,
        json!({"workerId": "gw-2", "group": "default", "version": "1.2.3", "contactError": null, "tenants": []}),
    )
    .await;
    assert_eq!(status, 200);
    let ids: Vec<String> = cp.store().list_worker_reports().await.unwrap().into_iter().map(|w| w.worker_id).collect();
    assert!(ids.contains(&"gw-old".to_owned()) && !ids.contains(&"gw-gone".to_owned()), "{ids:?}");

    // Bounds and authentication, each refusal naming the field.
    let big: Vec<Value> = (0..=MAX_REPORT_TENANTS)
        .map(|i| json!({"tenant": format!("t{i}"), "revision": null, "sequence": null, "error": null}))
        .collect();
    let (status, body) = report(
        &http,
        &base,
        json!({"workerId": "gw-1", "group": "default", "version": "1", "contactError": null, "tenants": big}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().starts_with("tenants:"), "{body}");
    let (status, body) = report(
        &http,
        &base,
        json!({"workerId": "gw 1", "group": "default", "version": "1", "contactError": null, "tenants": []}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().starts_with("workerId:"), "{body}");
    let (status, body) = report(
        &http,
        &base,
        json!({"workerId": "gw-1", "group": "default", "version": "1", "contactError": null,
               "tenants": [{"tenant": "acme", "revision": null, "sequence": null, "error": "x".repeat(1001)}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().starts_with("tenants[0].error:"), "{body}");
    let resp = http
        .post(format!("{base}/v1/workers/status"))
        .bearer_auth("wrong")
        .json(&json!({"workerId": "gw-x", "group": "default", "version": "1", "contactError": null, "tenants": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(cp.store().list_worker_reports().await.unwrap().iter().all(|w| w.worker_id != "gw-x"));
    drop(cp);
    db.finish().await;
}

async fn a_new_signing_key_re_signs_every_tenant(db: TestDb) {
    let old = SigningKey::generate();
    let (cp, admin) = plane(db.store.clone(), &old).await;
    cp.services().create_tenant(&admin, "acme", "Acme").await.unwrap();
    let before = cp.services().bundle(&admin, "acme").await.unwrap().unwrap();
    drop(cp);
    // The control plane restarts with the new key (the switch step of a rotation).
    let new = SigningKey::generate();
    let (cp, admin) = plane(db.store.clone(), &new).await;
    let after = cp.services().bundle(&admin, "acme").await.unwrap().unwrap();
    assert_eq!(after.revision, before.revision, "same policy");
    assert!(after.sequence > before.sequence, "re-issued with a higher sequence");
    let t = cp.store().tenant_by_slug("acme").await.unwrap().unwrap();
    let row = cp.services().bundles().latest(&t.id).await.unwrap().unwrap();
    let signed: SignedBundle = serde_json::from_str(&row.signed_json).unwrap();
    assert_eq!(signed.key_id, new.key_id());
    let mut only_old = KeyRing::default();
    only_old.add_base64(&old.public_base64()).unwrap();
    assert!(only_old.verify(&signed).is_err(), "a worker that trusts only the old key refuses it");
    // Restarting again with the same key issues nothing new.
    drop(cp);
    let (cp, admin) = plane(db.store.clone(), &new).await;
    assert_eq!(cp.services().bundle(&admin, "acme").await.unwrap().unwrap(), after);
    drop(cp);
    db.finish().await;
}

#[tokio::test]
async fn groups_move_tenants_between_bundle_sets_sqlite() {
    groups_move_tenants_between_bundle_sets(TestDb::sqlite().await).await;
}

#[tokio::test]
async fn groups_move_tenants_between_bundle_sets_postgres() {
    let Some(db) = TestDb::postgres("groups_move_tenants_between_bundle_sets_postgres").await else { return };
    groups_move_tenants_between_bundle_sets(db).await;
}

#[tokio::test]
async fn status_reports_are_shown_per_tenant_only_sqlite() {
    status_reports_are_shown_per_tenant_only(TestDb::sqlite().await).await;
}

#[tokio::test]
async fn status_reports_are_shown_per_tenant_only_postgres() {
    let Some(db) = TestDb::postgres("status_reports_are_shown_per_tenant_only_postgres").await else { return };
    status_reports_are_shown_per_tenant_only(db).await;
}

#[tokio::test]
async fn a_new_signing_key_re_signs_every_tenant_sqlite() {
    a_new_signing_key_re_signs_every_tenant(TestDb::sqlite().await).await;
}

#[tokio::test]
async fn a_new_signing_key_re_signs_every_tenant_postgres() {
    let Some(db) = TestDb::postgres("a_new_signing_key_re_signs_every_tenant_postgres").await else { return };
    a_new_signing_key_re_signs_every_tenant(db).await;
}
