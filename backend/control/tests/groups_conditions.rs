//! Local groups, user attributes and CEL conditions on access rules through the services
//! (`docs/decisions/0012-groups-and-conditions.md`), on SQLite and PostgreSQL.

use gatehouse_bundle::SigningKey;
use gatehouse_control::services::CallContext;
use gatehouse_control::{ControlConfig, ControlPlane, bundles};
use gatehouse_core::ErrorCode;
use gatehouse_core::groups::UserAttribute;
use gatehouse_core::rules::{Effect, RuleInput};
use gatehouse_core::views::GrantView;
use gatehouse_store::Store;
use gatehouse_store::testing::TestDb;

async fn case(store: Store) {
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
    s.create_tenant(&admin, "acme", "Acme").await.unwrap();
    s.create_tenant(&admin, "beta", "Beta").await.unwrap();
    s.create_user(&admin, "acme", "alice@acme.test", "Alice", "member", None).await.unwrap();
    s.create_user(&admin, "acme", "bob@acme.test", "Bob", "member", None).await.unwrap();
    // The server row directly: registering through the services would fetch its tools.
    let acme = cp.store().tenant_by_slug("acme").await.unwrap().unwrap();
    cp.store()
        .create_server(&gatehouse_store::Server {
            tenant_id: acme.id.clone(),
            id: "srv-fs".into(),
            slug: "fs".into(),
            name: "Files".into(),
            url: "http://127.0.0.1:9/mcp".into(),
            tools_json: r#"[{"name":"restart","inputSchema":{"type":"object"}},{"name":"read_log","inputSchema":{"type":"object"}}]"#.into(),
            tools_fetched_at_ms: Some(1),
            labels_json: "[]".into(),
            created_at_ms: 1,
            transport: "streamableHttp".into(),
            command_json: None,
        })
        .await
        .unwrap();
    s.create_role(&admin, "acme", "oncall-tools", "").await.unwrap();
    s.set_role_grants(&admin, "acme", "oncall-tools", &[GrantView { server: "fs".into(), tool: "restart".into() }])
        .await
        .unwrap();

    // Groups: a role bound to a group reaches its members through the compiler.
    let e = s.create_group(&admin, "acme", "On Call", "On call").await.unwrap_err();
    assert_eq!(e.message, "slug: must start with a lowercase letter (a-z)");
    let e = s.create_group(&admin, "acme", "oncall", " ").await.unwrap_err();
    assert_eq!(e.message, "name: must be 1 to 100 characters long");
    s.create_group(&admin, "acme", "oncall", "On call").await.unwrap();
    assert_eq!(s.create_group(&admin, "acme", "oncall", "Again").await.unwrap_err().code, ErrorCode::Conflict);
    s.set_group_member(&admin, "acme", "oncall", "Alice@acme.test", true).await.unwrap();
    let g = s.set_group_role(&admin, "acme", "oncall", "oncall-tools", true).await.unwrap();
    assert_eq!((g.members, g.roles), (vec!["alice@acme.test".to_owned()], vec!["oncall-tools".to_owned()]));
    let attrs = vec![UserAttribute { key: "department".into(), value: "payments".into() }];
    s.set_user_attributes(&admin, "acme", "alice@acme.test", &attrs).await.unwrap();
    let bad = vec![UserAttribute { key: "Department".into(), value: "x".into() }];
    let e = s.set_user_attributes(&admin, "acme", "alice@acme.test", &bad).await.unwrap_err();
    assert!(e.message.starts_with("attributes[0].key: 'Department' is not a valid key"), "{}", e.message);
    assert_eq!(
        s.user_attributes(&admin, "acme", "alice@acme.test").await.unwrap(),
        attrs,
        "the bad set stored nothing"
    );

    let tenant = cp.store().tenant_by_slug("acme").await.unwrap().unwrap();
    let content = bundles::compile(cp.store(), &tenant).await.unwrap();
    let alice = content.users.iter().find(|u| u.email == "alice@acme.test").unwrap();
    let bob = content.users.iter().find(|u| u.email == "bob@acme.test").unwrap();
    assert_eq!(alice.roles, ["oncall-tools"], "the role comes through the group");
    assert_eq!(alice.groups, ["oncall"]);
    assert_eq!(alice.attributes.get("department").map(String::as_str), Some("payments"));
    assert!(bob.roles.is_empty() && bob.groups.is_empty() && bob.attributes.is_empty());

    // A condition is validated when saved, and the error names the field and the place.
    let rule = |condition: &str| RuleInput {
        server: "fs".into(),
        effect: Effect::Allow,
        tools: "read_*".into(),
        annotation: None,
        params: vec![],
        description: String::new(),
        condition: Some(condition.into()),
    };
    let e = s.add_rule(&admin, "acme", "oncall-tools", &rule("inCidr(client.ip, '10.0.0.0/33')")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert_eq!(
        e.message,
        "condition: line 1, column 19: '10.0.0.0/33': the prefix length must be a number from 0 to 32"
    );
    let e = s.add_rule(&admin, "acme", "oncall-tools", &rule("user.department == 'x'")).await.unwrap_err();
    assert_eq!(
        e.message,
        "condition: line 1, column 5: 'user' has no field 'department'; its fields are id, email, groups, attributes"
    );
    let saved = s
        .add_rule(
            &admin,
            "acme",
            "oncall-tools",
            &rule("inCidr(client.ip, '10.0.0.0/8') && request.time.getHours('Europe/Berlin') < 22"),
        )
        .await
        .unwrap();
    assert!(saved.condition.as_deref().is_some_and(|c| c.starts_with("inCidr")));
    let roles = s.list_roles(&admin, "acme").await.unwrap();
    let listed = &roles.iter().find(|r| r.slug == "oncall-tools").unwrap().rules[0];
    assert_eq!(listed.condition, saved.condition, "the condition is stored and read back");

    // "Explain" with a context: from 10/8 at 13:30 Berlin time it is allowed by the rule, from
    // another network or at 22:30 it is not, and without an address the condition fails closed.
    let (s2, admin2) = (s.clone(), admin.clone());
    let explain = move |ip: Option<&str>, at: Option<&str>| {
        let context = CallContext { ip: ip.map(Into::into), app: None, at: at.map(Into::into) };
        let (s, admin) = (s2.clone(), admin2.clone());
        async move { s.explain_call(&admin, "acme", "alice@acme.test", "fs", "read_log", None, &context).await }
    };
    let noon = Some("2026-11-27T13:30:00+01:00");
    let d = explain(Some("10.1.2.3"), noon).await.unwrap();
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.rule_id.as_deref(), Some(saved.id.as_str()));
    assert!(!explain(Some("192.168.1.9"), noon).await.unwrap().allowed);
    assert!(!explain(Some("10.1.2.3"), Some("2026-11-27T22:30:00+01:00")).await.unwrap().allowed);
    assert!(!explain(None, noon).await.unwrap().allowed);
    assert_eq!(
        explain(Some("10.1.2"), noon).await.unwrap_err().message,
        "clientIp: '10.1.2' is not an IP address such as 10.1.2.3"
    );
    assert!(
        explain(Some("10.1.2.3"), Some("22:00"))
            .await
            .unwrap_err()
            .message
            .starts_with("at: '22:00' is not an RFC 3339 time")
    );

    // Tenant beta's admin reaches none of it.
    s.create_user(&admin, "beta", "eve@beta.test", "Eve", "admin", Some("eves-long-password")).await.unwrap();
    let eve = s.sign_in("eve@beta.test", "eves-long-password").await.unwrap();
    assert_eq!(s.list_groups(&eve, "acme").await.unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(
        s.set_group_member(&eve, "acme", "oncall", "eve@beta.test", true).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(s.user_attributes(&eve, "acme", "alice@acme.test").await.unwrap_err().code, ErrorCode::NotFound);
    s.create_group(&eve, "beta", "oncall", "On call").await.unwrap();
    assert_eq!(
        s.set_group_member(&eve, "beta", "oncall", "alice@acme.test", true).await.unwrap_err().code,
        ErrorCode::NotFound,
        "acme's user cannot join beta's group"
    );
    assert_eq!(s.list_groups(&admin, "acme").await.unwrap().len(), 1);

    // Deleting the group takes the role away.
    s.delete_group(&admin, "acme", "oncall").await.unwrap();
    let content = bundles::compile(cp.store(), &tenant).await.unwrap();
    let alice = content.users.iter().find(|u| u.email == "alice@acme.test").unwrap();
    assert!(alice.roles.is_empty() && alice.groups.is_empty());
}

#[tokio::test]
async fn sqlite_groups_attributes_and_conditions() {
    TestDb::sqlite().await.run(case).await;
}

#[tokio::test]
async fn postgres_groups_attributes_and_conditions() {
    if let Some(db) = TestDb::postgres("postgres_groups_attributes_and_conditions").await {
        db.run(case).await;
    }
}
