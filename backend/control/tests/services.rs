//! Domain services and the bundle compiler against a real SQLite store.

use gatehouse_bundle::{KeyRing, SigningKey};
use gatehouse_control::{Actor, ControlConfig, ControlPlane, bundles};
use gatehouse_core::ErrorCode;
use gatehouse_core::views::GrantView;
use gatehouse_store::Store;

async fn plane() -> (ControlPlane, Actor, SigningKey, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/t.db?mode=rwc", dir.path().display())).await.unwrap();
    let key = SigningKey::generate();
    let config = ControlConfig {
        gateway_public_url: "http://gw.test".into(),
        public_url: "http://cp.test".into(),
        worker_token: "w".into(),
        group: "default".into(),
        secure_cookies: false,
    };
    let cp = ControlPlane::new(config, store, key.clone()).await.unwrap();
    let s = cp.services();
    s.ensure_bootstrap_admin("root@example.com", Some("a-long-enough-password")).await.unwrap();
    let admin = s.sign_in("root@example.com", "a-long-enough-password").await.unwrap();
    (cp, admin, key, dir)
}

#[tokio::test]
async fn bundles_change_only_when_policy_changes() {
    let (cp, admin, key, _dir) = plane().await;
    let s = cp.services();
    s.create_tenant(&admin, "acme", "Acme").await.unwrap();
    let tenant = cp.store().tenant_by_slug("acme").await.unwrap().unwrap();
    let first = s.bundle(&admin, "acme").await.unwrap().expect("a new tenant gets a bundle");

    // Compiling the same state again gives the same bytes and stores nothing new.
    let a = bundles::compile(cp.store(), &tenant).await.unwrap();
    let b = bundles::compile(cp.store(), &tenant).await.unwrap();
    assert_eq!(a.canonical_bytes(), b.canonical_bytes());
    s.bundles().recompile(&tenant).await.unwrap();
    assert_eq!(s.bundle(&admin, "acme").await.unwrap().unwrap(), first);

    // A policy change gives a new revision with the next sequence, signed by the platform key.
    s.create_user(&admin, "acme", "Alice@Acme.test", "Alice", "member", None).await.unwrap();
    let created = s.create_token(&admin, "acme", "alice@acme.test", "laptop", Some(30)).await.unwrap();
    let now = s.bundle(&admin, "acme").await.unwrap().unwrap();
    assert_ne!(now.revision, first.revision);
    assert!(now.sequence > first.sequence);

    let row = s.bundles().latest(&tenant.id).await.unwrap().unwrap();
    let signed = serde_json::from_str(&row.signed_json).unwrap();
    let mut ring = KeyRing::default();
    ring.add_base64(&key.public_base64()).unwrap();
    let bundle = ring.verify(&signed).unwrap();
    assert_eq!(bundle.manifest.revision, now.revision);
    assert_eq!(bundle.content.users[0].email, "alice@acme.test", "e-mails are normalised to lower case");
    // Only the token's hash travels to workers.
    assert!(!row.signed_json.contains(&created.secret));
    assert_eq!(bundle.content.tokens[0].sha256, gatehouse_control::services::sha256_hex(&created.secret));
}

#[tokio::test]
async fn tenants_cannot_reach_each_other_through_the_services() {
    let (cp, admin, _key, _dir) = plane().await;
    let s = cp.services();
    s.create_tenant(&admin, "acme", "Acme").await.unwrap();
    s.create_tenant(&admin, "beta", "Beta").await.unwrap();
    s.create_user(&admin, "beta", "bob@beta.test", "Bob", "admin", Some("bobs-long-password")).await.unwrap();
    let bob = s.sign_in("bob@beta.test", "bobs-long-password").await.unwrap();

    assert_eq!(s.list_tenants(&bob).await.unwrap().iter().map(|t| t.slug.as_str()).collect::<Vec<_>>(), ["beta"]);
    assert_eq!(s.list_users(&bob, "acme").await.unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(s.create_role(&bob, "acme", "x", "").await.unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(s.list_audit(&bob, "acme", None, None).await.unwrap_err().code, ErrorCode::NotFound);
    // Bob administers his own tenant.
    s.create_role(&bob, "beta", "ops", "").await.unwrap();
    // A member cannot change policy.
    s.create_user(&bob, "beta", "carol@beta.test", "Carol", "member", Some("carols-long-password")).await.unwrap();
    let carol = s.sign_in("carol@beta.test", "carols-long-password").await.unwrap();
    assert_eq!(s.create_role(&carol, "beta", "x", "").await.unwrap_err().code, ErrorCode::Forbidden);
    assert_eq!(s.list_roles(&carol, "beta").await.unwrap().len(), 1);
}

#[tokio::test]
async fn invalid_input_is_refused_with_the_field_named_and_nothing_stored() {
    let (cp, admin, _key, _dir) = plane().await;
    let s = cp.services();
    let e = s.create_tenant(&admin, "Acme!", "Acme").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(e.message.starts_with("slug:"));
    s.create_tenant(&admin, "acme", "Acme").await.unwrap();
    assert_eq!(s.create_tenant(&admin, "acme", "Again").await.unwrap_err().code, ErrorCode::Conflict);
    let e = s.create_user(&admin, "acme", "not-an-email", "X", "member", None).await.unwrap_err();
    assert!(e.message.starts_with("email:"), "{}", e.message);
    let e = s.create_user(&admin, "acme", "x@acme.test", "X", "member", Some("short")).await.unwrap_err();
    assert!(e.message.starts_with("password:"), "{}", e.message);
    let e = s.create_user(&admin, "acme", "x@acme.test", "X", "root", None).await.unwrap_err();
    assert!(e.message.starts_with("consoleRole:"), "{}", e.message);
    s.create_role(&admin, "acme", "analyst", "").await.unwrap();
    let e = s
        .set_role_grants(&admin, "acme", "analyst", &[GrantView { server: "nope".into(), tool: "*".into() }])
        .await
        .unwrap_err();
    assert!(e.message.starts_with("grants[0].server:"), "{}", e.message);
    let e = s.create_virtual_server(&admin, "acme", "dev", "Dev", &[]).await.unwrap_err();
    assert!(e.message.starts_with("servers:"), "{}", e.message);
    let e = s.register_server(&admin, "acme", "x", "X", "ftp://example.com").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(s.list_servers(&admin, "acme").await.unwrap().is_empty());
    assert!(s.list_users(&admin, "acme").await.unwrap().is_empty());
    assert_eq!(s.sign_in("root@example.com", "wrong-password").await.unwrap_err().code, ErrorCode::InvalidCredentials);
    assert_eq!(s.sign_in("nobody@example.com", "whatever").await.unwrap_err().code, ErrorCode::InvalidCredentials);
}

#[tokio::test]
async fn bundles_carry_the_tenant_session_keys_and_rotation_keeps_the_old_one() {
    let (cp, admin, _key, _dir) = plane().await;
    let s = cp.services();
    s.create_tenant(&admin, "acme", "Acme").await.unwrap();
    s.create_tenant(&admin, "beta", "Beta").await.unwrap();
    let acme = cp.store().tenant_by_slug("acme").await.unwrap().unwrap();
    let beta = cp.store().tenant_by_slug("beta").await.unwrap().unwrap();

    // Every tenant gets its own random 256-bit key on its first compile.
    let first = s.bundles().active_policy(&acme.id).await.unwrap().unwrap();
    let other = s.bundles().active_policy(&beta.id).await.unwrap().unwrap();
    assert_eq!(first.session_keys().len(), 1);
    assert_eq!(other.session_keys().len(), 1);
    assert_ne!(first.session_keys()[0].key, other.session_keys()[0].key);
    assert_ne!(first.session_keys()[0].key, [0; 32]);
    let old = first.session_keys()[0].clone();
    assert_eq!(bundles::compile(cp.store(), &acme).await.unwrap().session_keys.len(), 1, "no second key");

    // Rotation: a newer key seals, the old one still opens; the bundle lists both, sorted by id.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let newer = bundles::add_session_key(cp.store(), &acme.id).await.unwrap();
    s.bundles().recompile(&acme).await.unwrap();
    let rotated = s.bundles().active_policy(&acme.id).await.unwrap().unwrap();
    let ids: Vec<&str> = rotated.session_keys().iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, [newer.id.as_str(), old.id.as_str()], "newest first");
    let content = bundles::compile(cp.store(), &acme).await.unwrap();
    let mut sorted: Vec<String> = content.session_keys.iter().map(|k| k.id.clone()).collect();
    sorted.sort();
    assert_eq!(content.session_keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>(), sorted);

    // The end of the overlap: the old key is deleted and leaves the next bundle.
    assert!(cp.store().delete_session_key(&acme.id, &old.id).await.unwrap());
    s.bundles().recompile(&acme).await.unwrap();
    let after = s.bundles().active_policy(&acme.id).await.unwrap().unwrap();
    assert_eq!(after.session_keys().iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), [newer.id.as_str()]);
}
