//! Publishing as a deliberate step, the draft's simulation, and rollback
//! (`docs/decisions/0015-publishing-and-rollback.md`), on SQLite and, when
//! `GATEHOUSE_TEST_DATABASE_URL` names a cluster, on PostgreSQL.

use std::future::Future;

use gatehouse_bundle::{Decision, DenyKind, SigningKey, TenantPolicy};
use gatehouse_control::{Actor, ControlConfig, ControlPlane};
use gatehouse_core::ErrorCode;
use gatehouse_core::rules::RuleInput;
use gatehouse_core::views::{GrantView, ToolRefView};
use gatehouse_store::testing::TestDb;
use gatehouse_store::{AuditRow, Server, Store};
use serde_json::json;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn now_ms() -> i64 {
    gatehouse_control::now_ms()
}

async fn on_both<F, Fut>(test: &str, case: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    TestDb::sqlite().await.run(&case).await;
    if let Some(db) = TestDb::postgres(test).await {
        db.run(&case).await;
    }
}

/// A control plane over `store`, a root admin, and tenant `acme` with server `tools` (echo, add,
/// delete), role `dev` granting `echo` to alice, and virtual server `dev` over `tools`.
async fn setup(store: Store) -> (ControlPlane, Actor) {
    let config = ControlConfig {
        gateway_public_url: "http://gw.test".into(),
        public_url: "http://cp.test".into(),
        worker_token: "w".into(),
        group: "default".into(),
        secure_cookies: false,
    };
    let cp = ControlPlane::new(config, store, SigningKey::generate()).await.unwrap();
    let s = cp.services();
    s.ensure_bootstrap_admin("root@example.com", Some("a-long-enough-password")).await.unwrap();
    let admin = s.sign_in("root@example.com", "a-long-enough-password").await.unwrap();
    for slug in ["acme", "beta"] {
        s.create_tenant(&admin, slug, slug).await.unwrap();
        let t = cp.store().tenant_by_slug(slug).await.unwrap().unwrap();
        let tools = json!([
            {"name": "echo"},
            {"name": "add"},
            {"name": "delete", "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}}},
        ]);
        cp.store()
            .create_server(&Server {
                tenant_id: t.id.clone(),
                id: format!("srv-{slug}"),
                slug: "tools".into(),
                name: "Tools".into(),
                url: "http://127.0.0.1:9/mcp".into(),
                tools_json: tools.to_string(),
                tools_fetched_at_ms: Some(now_ms()),
                labels_json: "[]".into(),
                created_at_ms: now_ms(),
                transport: "streamableHttp".into(),
                command_json: None,
            })
            .await
            .unwrap();
        s.create_user(&admin, slug, &format!("alice@{slug}.test"), "Alice", "member", None).await.unwrap();
        s.create_role(&admin, slug, "dev", "").await.unwrap();
        grants(&cp, &admin, slug, &["echo"]).await;
        s.bind_role(&admin, slug, "dev", &format!("alice@{slug}.test")).await.unwrap();
        s.create_virtual_server(&admin, slug, "dev", "Dev", &["tools".to_owned()]).await.unwrap();
    }
    (cp, admin)
}

async fn grants(cp: &ControlPlane, admin: &Actor, tenant: &str, tools: &[&str]) {
    let g: Vec<GrantView> = tools.iter().map(|t| GrantView { server: "tools".into(), tool: (*t).into() }).collect();
    cp.services().set_role_grants(admin, tenant, "dev", &g).await.unwrap();
}

/// The policy the workers get now for `tenant` (verified, as a worker builds it) and its sequence.
async fn running(cp: &ControlPlane, tenant: &str) -> (TenantPolicy, i64) {
    let t = cp.store().tenant_by_slug(tenant).await.unwrap().unwrap();
    let policy = cp.services().bundles().active_policy(&t.id).await.unwrap().unwrap();
    let seq = cp.services().bundles().latest(&t.id).await.unwrap().unwrap().sequence;
    (policy, seq)
}

async fn user_id(cp: &ControlPlane, tenant: &str, email: &str) -> String {
    let t = cp.store().tenant_by_slug(tenant).await.unwrap().unwrap();
    cp.store().user_by_email(&t.id, email).await.unwrap().unwrap().id
}

fn tool(t: &str) -> ToolRefView {
    ToolRefView { server: "tools".into(), tool: t.into() }
}

#[tokio::test]
async fn reviewed_mode_holds_changes_until_published_and_the_kill_switch_is_immediate() {
    on_both("reviewed_mode_holds_changes", |store| async move {
        let (cp, admin) = setup(store).await;
        let s = cp.services();
        let alice = user_id(&cp, "acme", "alice@acme.test").await;
        let (_, seq0) = running(&cp, "acme").await;

        assert_eq!(s.policy_draft(&admin, "acme").await.unwrap().mode, "automatic");
        assert_eq!(s.set_publishing_mode(&admin, "acme", "reviewed").await.unwrap(), "reviewed");
        let e = s.set_publishing_mode(&admin, "acme", "sometimes").await.unwrap_err();
        assert!(e.message.starts_with("mode:"), "{}", e.message);
        assert_eq!(running(&cp, "acme").await.1, seq0, "switching the mode alone changes no bundle");

        // A change waits in the draft: no new bundle, and `add` is still refused by what runs.
        grants(&cp, &admin, "acme", &["echo", "add"]).await;
        let (policy, seq) = running(&cp, "acme").await;
        assert_eq!(seq, seq0);
        assert!(!policy.authorize_tool(&alice, "tools", "add").is_allow());
        let draft = s.policy_draft(&admin, "acme").await.unwrap();
        assert!(draft.changed);
        assert_ne!(Some(draft.revision.clone()), draft.published_revision);
        assert_eq!(draft.access.len(), 1, "{:?}", draft.access);
        assert_eq!(draft.access[0].user, "alice@acme.test");
        assert_eq!(draft.access[0].virtual_server, "dev");
        assert_eq!(draft.access[0].gained, vec![tool("add")]);
        assert!(draft.access[0].lost.is_empty());

        // The kill switch does not wait, and does not let the draft through with it.
        s.suspend(&admin, "acme", None, Some("tools"), Some("echo"), "incident 42").await.unwrap();
        let (policy, seq1) = running(&cp, "acme").await;
        assert!(seq1 > seq0);
        assert!(matches!(
            policy.authorize_tool(&alice, "tools", "echo"),
            Decision::Deny { kind: DenyKind::Suspended, .. }
        ));
        assert!(!policy.authorize_tool(&alice, "tools", "add").is_allow());

        // Tokens are immediate too: a new one authenticates at once, a revoked one stops at once.
        let token = s.create_token(&admin, "acme", "alice@acme.test", "cli", None).await.unwrap();
        let (policy, _) = running(&cp, "acme").await;
        assert_eq!(policy.authenticate(&token.secret, now_ms()).unwrap().user_id, alice);
        s.revoke_token(&admin, "acme", &token.token.id).await.unwrap();
        let (policy, seq2) = running(&cp, "acme").await;
        assert!(policy.authenticate(&token.secret, now_ms()).is_err());

        // A new user exists at once but holds no role until the next publish.
        s.create_user(&admin, "acme", "bob@acme.test", "Bob", "member", None).await.unwrap();
        s.bind_role(&admin, "acme", "dev", "bob@acme.test").await.unwrap();
        let bob = user_id(&cp, "acme", "bob@acme.test").await;
        let (policy, seq3) = running(&cp, "acme").await;
        assert!(seq3 > seq2);
        assert!(!policy.authorize_tool(&bob, "tools", "delete").is_allow());
        assert!(!policy.authorize_tool(&bob, "tools", "add").is_allow());

        // Publishing releases the draft, with a higher sequence, recorded with who and why.
        let e = s.publish_policy(&admin, "acme", &"x".repeat(501)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidInput);
        assert!(e.message.starts_with("note:"), "{}", e.message);
        let previewed = s.policy_draft(&admin, "acme").await.unwrap().revision;
        let p = s.publish_policy(&admin, "acme", "  give alice add  ").await.unwrap();
        assert_eq!(p.kind, "publish");
        assert_eq!(p.note, "give alice add");
        assert_eq!(p.published_by.as_deref(), Some("root@example.com"));
        assert_eq!(p.revision, previewed, "what was previewed is what got published");
        let (policy, seq4) = running(&cp, "acme").await;
        assert!(seq4 > seq3);
        assert!(policy.authorize_tool(&alice, "tools", "add").is_allow());
        assert!(policy.authorize_tool(&bob, "tools", "add").is_allow());
        assert!(!policy.authorize_tool(&alice, "tools", "echo").is_allow(), "the suspension stays");
        let after = s.policy_draft(&admin, "acme").await.unwrap();
        assert!(!after.changed);
        assert!(after.access.is_empty());
        assert_eq!(after.published_number, Some(p.number));

        // Nothing left to publish.
        let e = s.publish_policy(&admin, "acme", "again").await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NothingToPublish);
        let history = s.list_publications(&admin, "acme", None).await.unwrap();
        assert_eq!(history[0], p);
        assert!(history.iter().skip(1).all(|h| h.kind == "automatic" && h.published_by.is_none()));

        // Back to automatic: changes go out at once again.
        grants(&cp, &admin, "acme", &["echo"]).await;
        assert!(running(&cp, "acme").await.0.authorize_tool(&alice, "tools", "add").is_allow());
        s.set_publishing_mode(&admin, "acme", "automatic").await.unwrap();
        assert!(!running(&cp, "acme").await.0.authorize_tool(&alice, "tools", "add").is_allow());
        let newest = &s.list_publications(&admin, "acme", Some(1)).await.unwrap()[0];
        assert_eq!((newest.kind.as_str(), newest.published_by.as_deref()), ("publish", Some("root@example.com")));
        grants(&cp, &admin, "acme", &["echo", "delete"]).await;
        assert!(running(&cp, "acme").await.0.authorize_tool(&alice, "tools", "delete").is_allow());
        let e = s.publish_policy(&admin, "acme", "").await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NothingToPublish);
    })
    .await;
}

fn call(tenant_id: &str, n: usize, user: &str, tool: &str, outcome: &str, age_ms: i64) -> AuditRow {
    AuditRow {
        tenant_id: tenant_id.into(),
        id: format!("ev-{tenant_id}-{tool}-{outcome}-{age_ms}-{n}"),
        time_ms: now_ms() - age_ms,
        user_id: Some(user.into()),
        user_email: None,
        client_name: None,
        client_version: None,
        session_id: None,
        virtual_server: "dev".into(),
        upstream_server: Some("tools".into()),
        method: "tools/call".into(),
        tool: Some(tool.into()),
        exposed_tool: None,
        outcome: outcome.into(),
        reason: None,
        latency_us: 10,
        bundle_revision: None,
        rule_id: None,
        findings_json: None,
        received_at_ms: now_ms(),
    }
}

#[tokio::test]
async fn the_draft_is_replayed_against_recent_tool_calls() {
    on_both("draft_replay", |store| async move {
        let (cp, admin) = setup(store).await;
        let s = cp.services();
        let acme = cp.store().tenant_by_slug("acme").await.unwrap().unwrap();
        let beta = cp.store().tenant_by_slug("beta").await.unwrap().unwrap();
        let alice = user_id(&cp, "acme", "alice@acme.test").await;
        let mut events = Vec::new();
        for n in 0..3 {
            events.push(call(&acme.id, n, &alice, "echo", "allowed", 1000));
        }
        for n in 0..2 {
            events.push(call(&acme.id, n, &alice, "add", "denied", 2000));
        }
        events.push(call(&acme.id, 0, &alice, "delete", "denied", 3000));
        // Outside the 7-day window, another method, another tenant: not replayed.
        events.push(call(&acme.id, 0, &alice, "echo", "allowed", 8 * DAY_MS));
        let mut list = call(&acme.id, 1, &alice, "echo", "allowed", 1000);
        list.method = "tools/list".into();
        events.push(list);
        let beta_alice = user_id(&cp, "beta", "alice@beta.test").await;
        for n in 0..4 {
            events.push(call(&beta.id, n, &beta_alice, "echo", "allowed", 1000));
        }
        cp.store().insert_audit_events(&events).await.unwrap();

        s.set_publishing_mode(&admin, "acme", "reviewed").await.unwrap();
        // The draft: `add` instead of `echo`, and `delete` only with a parameter constraint.
        grants(&cp, &admin, "acme", &["add"]).await;
        let rule: RuleInput = serde_json::from_value(json!({
            "server": "tools", "effect": "allow", "tools": "delete",
            "params": [{"param": "path", "pattern": "/tmp/.*"}],
        }))
        .unwrap();
        s.add_rule(&admin, "acme", "dev", &rule).await.unwrap();

        let d = s.policy_draft(&admin, "acme").await.unwrap();
        assert!(d.changed);
        assert_eq!(d.access.len(), 1);
        assert_eq!(d.access[0].gained, vec![tool("add"), tool("delete")]);
        assert_eq!(d.access[0].lost, vec![tool("echo")]);
        let r = &d.replay;
        assert_eq!(r.events, 6, "three echo, two add, one delete in the window");
        assert!(!r.truncated);
        assert!(r.since_ms <= now_ms() - 7 * DAY_MS + 60_000);
        assert_eq!((r.now_denied, r.now_allowed, r.depends_on_arguments), (3, 2, 1));
        let by_tool = |t: &str| r.changes.iter().find(|c| c.tool == t).unwrap_or_else(|| panic!("{t}: {r:?}"));
        assert_eq!((by_tool("echo").calls, by_tool("echo").now_denied), (3, 3));
        assert_eq!((by_tool("add").calls, by_tool("add").now_allowed), (2, 2));
        assert_eq!(by_tool("delete").depends_on_arguments, 1);
        assert_eq!(by_tool("echo").user, "alice@acme.test");
        assert_eq!(r.changes.len(), 3);

        // Beta's draft is untouched by acme's.
        let b = s.policy_draft(&admin, "beta").await.unwrap();
        assert!(!b.changed);
        assert_eq!((b.replay.events, b.replay.changes.len()), (4, 0));
    })
    .await;
}

#[tokio::test]
async fn the_replay_judges_conditions_with_each_calls_client_application() {
    on_both("draft_replay_conditions", |store| async move {
        let (cp, admin) = setup(store).await;
        let s = cp.services();
        let acme = cp.store().tenant_by_slug("acme").await.unwrap().unwrap();
        let alice = user_id(&cp, "acme", "alice@acme.test").await;
        let mut events = Vec::new();
        for (n, client) in ["cursor", "cursor", "other"].into_iter().enumerate() {
            let mut e = call(&acme.id, n, &alice, "add", "denied", 1000);
            e.client_name = Some(client.into());
            events.push(e);
        }
        cp.store().insert_audit_events(&events).await.unwrap();
        s.set_publishing_mode(&admin, "acme", "reviewed").await.unwrap();
        // The draft allows `add` only from Cursor.
        let rule: RuleInput = serde_json::from_value(json!({
            "server": "tools", "effect": "allow", "tools": "add", "condition": "client.app == 'cursor'",
        }))
        .unwrap();
        s.add_rule(&admin, "acme", "dev", &rule).await.unwrap();
        let r = s.policy_draft(&admin, "acme").await.unwrap().replay;
        assert_eq!(r.events, 3);
        assert_eq!((r.now_allowed, r.now_denied), (2, 0), "the two Cursor calls would now pass, the other not: {r:?}");
    })
    .await;
}

#[tokio::test]
async fn rollback_republishes_an_earlier_revision_with_a_higher_sequence_and_keeps_the_draft() {
    on_both("rollback", |store| async move {
        let (cp, admin) = setup(store).await;
        let s = cp.services();
        let alice = user_id(&cp, "acme", "alice@acme.test").await;
        // Automatic mode records every change as a publication.
        let only_echo = s.list_publications(&admin, "acme", Some(1)).await.unwrap().remove(0);
        assert_eq!(only_echo.kind, "automatic");
        grants(&cp, &admin, "acme", &["echo", "add"]).await;
        let (policy, seq_before) = running(&cp, "acme").await;
        assert!(policy.authorize_tool(&alice, "tools", "add").is_allow());

        let e = s.rollback_policy(&admin, "acme", "not-a-revision", "").await.unwrap_err();
        assert!(e.message.starts_with("revision:"), "{}", e.message);
        let e = s.rollback_policy(&admin, "acme", &"0".repeat(64), "").await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        let current = s.list_publications(&admin, "acme", Some(1)).await.unwrap().remove(0);
        let e = s.rollback_policy(&admin, "acme", &current.revision, "").await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NothingToPublish);

        let rb = s.rollback_policy(&admin, "acme", &only_echo.revision, "add broke prod").await.unwrap();
        assert_eq!(rb.kind, "rollback");
        assert_eq!(rb.restores_number, Some(only_echo.number));
        assert_eq!(rb.revision, only_echo.revision);
        assert_eq!(rb.published_by.as_deref(), Some("root@example.com"));
        assert!(rb.number > current.number);
        let (policy, seq_after) = running(&cp, "acme").await;
        assert!(seq_after > seq_before, "a rollback is a new bundle with a higher sequence");
        assert!(!policy.authorize_tool(&alice, "tools", "add").is_allow());
        assert!(policy.authorize_tool(&alice, "tools", "echo").is_allow());

        // The admin's state is kept: the draft still grants add, and says it differs.
        let d = s.policy_draft(&admin, "acme").await.unwrap();
        assert_eq!(d.mode, "reviewed", "a rollback switches an automatic tenant to reviewed");
        assert!(d.rolled_back && d.changed);
        assert_eq!(d.access[0].gained, vec![tool("add")]);
        let role = s.list_roles(&admin, "acme").await.unwrap().into_iter().find(|r| r.slug == "dev").unwrap();
        assert_eq!(role.grants.len(), 2);
        // An edit now stays in the draft instead of undoing the rollback.
        grants(&cp, &admin, "acme", &["echo", "add", "delete"]).await;
        assert!(!running(&cp, "acme").await.0.authorize_tool(&alice, "tools", "add").is_allow());
        // Publishing the draft undoes it.
        s.publish_policy(&admin, "acme", "fixed").await.unwrap();
        assert!(running(&cp, "acme").await.0.authorize_tool(&alice, "tools", "delete").is_allow());
    })
    .await;
}

#[tokio::test]
async fn tenants_cannot_see_or_publish_each_others_drafts() {
    on_both("publishing_isolation", |store| async move {
        let (cp, admin) = setup(store).await;
        let s = cp.services();
        s.create_user(&admin, "beta", "bob@beta.test", "Bob", "admin", Some("bobs-long-password")).await.unwrap();
        let bob = s.sign_in("bob@beta.test", "bobs-long-password").await.unwrap();
        s.create_user(&admin, "acme", "carol@acme.test", "Carol", "member", Some("carols-long-password"))
            .await
            .unwrap();
        let carol = s.sign_in("carol@acme.test", "carols-long-password").await.unwrap();
        s.set_publishing_mode(&admin, "acme", "reviewed").await.unwrap();
        grants(&cp, &admin, "acme", &["echo", "add"]).await;
        let acme_rev = s.list_publications(&admin, "acme", None).await.unwrap()[0].revision.clone();

        let nf = |e: gatehouse_core::GatehouseError| assert_eq!(e.code, ErrorCode::NotFound, "{}", e.message);
        nf(s.policy_draft(&bob, "acme").await.unwrap_err());
        nf(s.list_publications(&bob, "acme", None).await.unwrap_err());
        nf(s.publish_policy(&bob, "acme", "").await.unwrap_err());
        nf(s.rollback_policy(&bob, "acme", &acme_rev, "").await.unwrap_err());
        nf(s.set_publishing_mode(&bob, "acme", "automatic").await.unwrap_err());
        // Another tenant's revision is not one of beta's publications.
        nf(s.rollback_policy(&bob, "beta", &acme_rev, "").await.unwrap_err());
        assert!(s.policy_draft(&admin, "acme").await.unwrap().changed, "nothing of bob's reached acme");

        // A member may look, not publish.
        assert!(s.policy_draft(&carol, "acme").await.unwrap().changed);
        assert_eq!(s.publish_policy(&carol, "acme", "").await.unwrap_err().code, ErrorCode::Forbidden);
        assert_eq!(s.rollback_policy(&carol, "acme", &acme_rev, "").await.unwrap_err().code, ErrorCode::Forbidden);
        assert_eq!(s.set_publishing_mode(&carol, "acme", "automatic").await.unwrap_err().code, ErrorCode::Forbidden);
    })
    .await;
}
