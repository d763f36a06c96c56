//! Virtual-server shaping through the services (`docs/decisions/0013-virtual-server-shaping.md`):
//! what is refused (with the field named) and what is saved, compiled into the bundle, and shown as
//! the effective tool list. Runs on SQLite and, when `GATEHOUSE_TEST_DATABASE_URL` is set, on
//! PostgreSQL.

use gatehouse_bundle::{SigningKey, TenantPolicy};
use gatehouse_control::{ControlConfig, ControlPlane, bundles};
use gatehouse_core::ErrorCode;
use gatehouse_core::shaping::{ConflictStrategy, FixedParam, NarrowedEnum, ToolOverride, UpstreamPrefix};
use gatehouse_store::testing::TestDb;
use gatehouse_store::{Server, Store};
use serde_json::{Value, json};

fn server(tenant_id: &str, id: &str, slug: &str, tools: Value) -> Server {
    Server {
        tenant_id: tenant_id.into(),
        id: id.into(),
        slug: slug.into(),
        name: slug.to_uppercase(),
        url: format!("https://{slug}.mcp.example/mcp"),
        tools_json: tools.to_string(),
        tools_fetched_at_ms: Some(1),
        labels_json: "[]".into(),
        created_at_ms: 1,
        transport: "streamableHttp".into(),
        command_json: None,
    }
}

fn alpha_tools() -> Value {
    json!([
        { "name": "echo", "inputSchema": { "type": "object", "properties": { "message": { "type": "string" } }, "required": ["message"] } },
        { "name": "search", "description": "Searches", "inputSchema": { "type": "object", "properties": {
            "query": { "type": "string" },
            "mode": { "type": "string", "enum": ["fast", "slow", "exact"] },
            "verbose": { "type": "boolean" },
        }, "required": ["query"] } },
    ])
}

fn beta_tools() -> Value {
    json!([
        { "name": "search", "inputSchema": { "type": "object", "properties": { "q": { "type": "string" } } } },
        { "name": "add", "inputSchema": { "type": "object", "properties": { "a": { "type": "number" }, "b": { "type": "number" } }, "required": ["a", "b"] } },
    ])
}

fn over(server: &str, tool: &str) -> ToolOverride {
    ToolOverride { server: server.into(), tool: tool.into(), ..Default::default() }
}

async fn exposed(s: &gatehouse_control::Services, a: &gatehouse_control::Actor) -> Vec<String> {
    s.virtual_server_tools(a, "acme", "dev").await.unwrap().into_iter().map(|t| t.exposed).collect()
}

async fn case(store: Store) {
    let key = SigningKey::generate();
    let config = ControlConfig {
        gateway_public_url: "http://gw.test".into(),
        public_url: "http://cp.test".into(),
        worker_token: "w".into(),
        group: "default".into(),
        secure_cookies: false,
    };
    let cp = ControlPlane::new(config, store.clone(), key).await.unwrap();
    let s = cp.services();
    s.ensure_bootstrap_admin("root@example.com", Some("a-long-enough-password")).await.unwrap();
    let admin = s.sign_in("root@example.com", "a-long-enough-password").await.unwrap();
    s.create_tenant(&admin, "acme", "Acme").await.unwrap();
    s.create_tenant(&admin, "beta", "Beta").await.unwrap();
    let acme = store.tenant_by_slug("acme").await.unwrap().unwrap();
    store.create_server(&server(&acme.id, "sv-alpha", "alpha", alpha_tools())).await.unwrap();
    store.create_server(&server(&acme.id, "sv-beta", "beta", beta_tools())).await.unwrap();
    s.create_virtual_server(&admin, "acme", "dev", "Dev", &["alpha".into(), "beta".into()]).await.unwrap();

    // Default: today's behaviour, a shared name prefixed for each upstream.
    let vs = &s.list_virtual_servers(&admin, "acme").await.unwrap()[0];
    assert_eq!(vs.conflict_strategy, ConflictStrategy::Auto);
    assert_eq!(exposed(s, &admin).await, ["echo", "alpha__search", "beta__search", "add"]);

    // Priority, with a prefix for beta: alpha keeps the bare name, beta's is still exposed.
    let prefixes = [UpstreamPrefix { server: "beta".into(), prefix: "b".into() }];
    let vs = s.set_conflict_strategy(&admin, "acme", "dev", ConflictStrategy::Priority, &prefixes).await.unwrap();
    assert_eq!(vs.conflict_strategy, ConflictStrategy::Priority);
    assert_eq!(vs.prefixes, prefixes);
    assert_eq!(exposed(s, &admin).await, ["echo", "search", "b__search", "add"]);

    // Prefix errors name the field.
    let clash = [UpstreamPrefix { server: "alpha".into(), prefix: "beta".into() }];
    let e = s.set_conflict_strategy(&admin, "acme", "dev", ConflictStrategy::Prefix, &clash).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert_eq!(e.message, "prefixes[0].prefix: 'beta' would be the prefix of both 'alpha' and 'beta'");
    let bad = [UpstreamPrefix { server: "gamma".into(), prefix: "g".into() }];
    let e = s.set_conflict_strategy(&admin, "acme", "dev", ConflictStrategy::Prefix, &bad).await.unwrap_err();
    assert_eq!(e.message, "prefixes[0].server: 'gamma' is not an upstream of virtual server 'dev'");
    let bad = [UpstreamPrefix { server: "beta".into(), prefix: "b b".into() }];
    let e = s.set_conflict_strategy(&admin, "acme", "dev", ConflictStrategy::Prefix, &bad).await.unwrap_err();
    assert!(e.message.starts_with("prefixes[0].prefix: may contain only"), "{}", e.message);

    // Explicit is refused while a conflict has no rename, naming the tools; nothing is stored.
    let e = s.set_conflict_strategy(&admin, "acme", "dev", ConflictStrategy::Explicit, &[]).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert_eq!(
        e.message,
        "strategy: the explicit strategy needs a rename for every conflict: 'alpha/search' and 'beta/search' would \
         all be exposed as 'search'"
    );
    assert_eq!(s.list_virtual_servers(&admin, "acme").await.unwrap()[0].conflict_strategy, ConflictStrategy::Priority);

    // Override validation, against the fetched input schema.
    let refused = |o: ToolOverride| {
        let s = s.clone();
        let admin = admin.clone();
        async move { s.set_tool_override(&admin, "acme", "dev", &o).await.unwrap_err().message }
    };
    assert_eq!(
        refused(over("gamma", "x")).await,
        "override.server: 'gamma' is not an upstream of virtual server 'dev' (its upstreams: alpha, beta)"
    );
    assert_eq!(
        refused(ToolOverride { rename: Some("x".into()), ..over("alpha", "nope") }).await,
        "override.tool: server 'alpha' has no tool 'nope' (as last fetched; refresh the server's tools if it is new)"
    );
    assert_eq!(
        refused(over("alpha", "search")).await,
        "override: set at least one of rename, description, fixed, hidden or enums (or delete the override)"
    );
    let fixed = |name: &str, value: Value| ToolOverride {
        fixed: vec![FixedParam { name: name.into(), value }],
        ..over("alpha", "search")
    };
    assert_eq!(
        refused(fixed("path", json!("/srv"))).await,
        "override.fixed.path: the tool has no parameter 'path' (its parameters: mode, query, verbose)"
    );
    assert_eq!(
        refused(fixed("verbose", json!("yes"))).await,
        "override.fixed.verbose: \"yes\" is not of the parameter's type \"boolean\""
    );
    assert_eq!(
        refused(ToolOverride { hidden: vec!["query".into()], ..over("alpha", "search") }).await,
        "override.hidden.query: 'query' is required by the tool: fix it to a value to hide it"
    );
    assert_eq!(
        refused(ToolOverride {
            enums: vec![NarrowedEnum { name: "mode".into(), values: vec![json!("fast"), json!("turbo")] }],
            ..over("alpha", "search")
        })
        .await,
        "override.enums.mode: \"turbo\" is not one of the tool's values [\"fast\",\"slow\",\"exact\"]"
    );
    // A rename onto another tool's bare name is fine outside explicit: that tool is prefixed.
    let renamed = ToolOverride { rename: Some("add".into()), ..over("alpha", "echo") };
    s.set_tool_override(&admin, "acme", "dev", &renamed).await.unwrap();
    assert_eq!(exposed(s, &admin).await, ["add", "search", "b__search", "b__add"]);
    s.delete_tool_override(&admin, "acme", "dev", "alpha", "echo").await.unwrap();

    // A valid override: rename, description, fixed, hidden and narrowed at once.
    let o = ToolOverride {
        rename: Some("find".into()),
        description: Some("Searches the docs".into()),
        fixed: vec![FixedParam { name: "verbose".into(), value: json!(false) }],
        hidden: vec![],
        enums: vec![NarrowedEnum { name: "mode".into(), values: vec![json!("fast")] }],
        ..over("alpha", "search")
    };
    let vs = s.set_tool_override(&admin, "acme", "dev", &o).await.unwrap();
    assert_eq!(vs.overrides, std::slice::from_ref(&o));
    let tools = s.virtual_server_tools(&admin, "acme", "dev").await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.exposed.as_str()).collect();
    // Renamed away, alpha's search leaves `search` to beta's.
    assert_eq!(names, ["echo", "find", "search", "add"]);
    let find = &tools[1];
    assert_eq!((find.server.as_str(), find.tool.as_str(), find.overridden), ("alpha", "search", true));
    assert_eq!(find.description.as_deref(), Some("Searches the docs"));
    let schema = find.input_schema.as_ref().unwrap();
    assert_eq!(schema["properties"].as_object().unwrap().keys().collect::<Vec<_>>(), ["mode", "query"]);
    assert_eq!(schema["properties"]["mode"]["enum"], json!(["fast"]));

    // Now explicit is accepted: the rename resolves the only conflict.
    s.set_conflict_strategy(&admin, "acme", "dev", ConflictStrategy::Explicit, &[]).await.unwrap();
    assert_eq!(exposed(s, &admin).await, ["echo", "find", "search", "add"]);
    // ... and deleting the rename would bring the conflict back, so it is refused.
    let e = s.delete_tool_override(&admin, "acme", "dev", "alpha", "search").await.unwrap_err();
    assert!(e.message.starts_with("tool: the explicit strategy needs a rename for every conflict"), "{}", e.message);
    // Two renames to one name are refused under every strategy.
    let e = s
        .set_tool_override(&admin, "acme", "dev", &ToolOverride { rename: Some("find".into()), ..over("beta", "add") })
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        "override.rename: 'alpha/search' and 'beta/add' would both be renamed to 'find'; choose another name"
    );

    // Carried in the bundle, and built into the worker's tables.
    let content = bundles::compile(&store, &acme).await.unwrap();
    let compiled = &content.virtual_servers[0];
    assert_eq!(compiled.conflict_strategy, ConflictStrategy::Explicit);
    assert!(compiled.prefixes.is_empty(), "explicit was saved without prefixes");
    assert_eq!(compiled.overrides, std::slice::from_ref(&o));
    let bundle = gatehouse_bundle::Bundle {
        manifest: gatehouse_bundle::Manifest {
            schema_version: gatehouse_bundle::SCHEMA_VERSION,
            tenant: "acme".into(),
            group: "default".into(),
            revision: content.revision(),
            sequence: 1,
            compiled_at_ms: 1,
            key_id: "k".into(),
        },
        content,
    };
    let policy = TenantPolicy::build(&bundle).unwrap();
    let route = policy.virtual_server("dev").unwrap();
    assert_eq!(route.shaping.rename("alpha", "search").as_deref(), Some("find"));
    assert!(route.shaping.tool("beta", "search").is_none());

    // Deleting an override that does not resolve a conflict is fine; a missing one is not found.
    s.set_conflict_strategy(&admin, "acme", "dev", ConflictStrategy::Auto, &[]).await.unwrap();
    s.delete_tool_override(&admin, "acme", "dev", "alpha", "search").await.unwrap();
    let e = s.delete_tool_override(&admin, "acme", "dev", "alpha", "search").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_eq!(exposed(s, &admin).await, ["echo", "alpha__search", "beta__search", "add"]);

    // Another tenant's admin sees nothing; a member cannot change shaping.
    s.create_user(&admin, "beta", "bob@beta.test", "Bob", "admin", Some("bobs-long-password")).await.unwrap();
    let bob = s.sign_in("bob@beta.test", "bobs-long-password").await.unwrap();
    let e = s.set_tool_override(&bob, "acme", "dev", &o).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_eq!(s.virtual_server_tools(&bob, "acme", "dev").await.unwrap_err().code, ErrorCode::NotFound);
    let e = s.set_conflict_strategy(&bob, "acme", "dev", ConflictStrategy::Prefix, &[]).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_eq!(
        s.delete_tool_override(&bob, "acme", "dev", "alpha", "echo").await.unwrap_err().code,
        ErrorCode::NotFound
    );
    s.create_user(&admin, "acme", "carol@acme.test", "Carol", "member", Some("carols-long-password")).await.unwrap();
    let carol = s.sign_in("carol@acme.test", "carols-long-password").await.unwrap();
    assert_eq!(s.set_tool_override(&carol, "acme", "dev", &o).await.unwrap_err().code, ErrorCode::Forbidden);
    assert_eq!(exposed(s, &carol).await.len(), 4, "members may read the effective list");
    assert!(s.list_virtual_servers(&admin, "acme").await.unwrap()[0].overrides.is_empty());
}

#[tokio::test]
async fn sqlite_shaping() {
    TestDb::sqlite().await.run(case).await;
}

#[tokio::test]
async fn postgres_shaping() {
    if let Some(db) = TestDb::postgres("postgres_shaping").await {
        db.run(case).await;
    }
}
