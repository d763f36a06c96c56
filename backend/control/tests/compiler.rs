//! The policy compiler (`bundles::compile`) against a real store: a snapshot of the compiled bundle
//! of a fixed tenant, and determinism across insertion orders and databases.
//!
//! The fixture fixes every id, time and key, so the compiled content is the same bytes every time.
//! The snapshot, `tests/snapshots/compiler_acme.json`, is the content pretty-printed with its
//! revision (the SHA-256 of the canonical compact bytes, so it pins those bytes too). After an
//! intended change to the compiler or the bundle format:
//!
//! ```sh
//! UPDATE_SNAPSHOTS=1 cargo test -p gatehouse-control --test compiler
//! git diff backend/control/tests/snapshots/
//! ```
//!
//! Every case runs on SQLite and, when `GATEHOUSE_TEST_DATABASE_URL` names a PostgreSQL cluster, on
//! PostgreSQL too (`gatehouse_store::testing::TestDb`); both must match the same snapshot, so both
//! databases give the same revision.

use std::path::{Path, PathBuf};

use gatehouse_bundle::{Content, Decision, KeyRing, SigningKey, TenantPolicy};
use gatehouse_control::bundles;
use gatehouse_control::services::sha256_hex;
use gatehouse_store::testing::TestDb;
use gatehouse_store::{
    AccessRule, ApiToken, ClassificationRuleRow, ROLE_MEMBER, ROLE_TENANT_ADMIN, RateLimitRow, Role, Server,
    SessionKeyRow, Store, Suspension, Tenant, User, VirtualServer,
};
use serde_json::{Value, json};

// ==================================================================== the fixture

/// Every time in the fixture is this plus a few milliseconds.
const T0: i64 = 1_700_000_000_000;
const ACME: &str = "tn-acme";
const BETA: &str = "tn-beta";

/// The rule ids (UUID v7 shaped, fixed).
const R_SEARCH_GLOB: &str = "01890000-0000-7000-8000-000000000001";
const R_DENY_DELETE: &str = "01890000-0000-7000-8000-000000000002";
const R_FS_READ_ONLY: &str = "01890000-0000-7000-8000-000000000003";
const R_GH_NOT_DESTRUCTIVE: &str = "01890000-0000-7000-8000-000000000004";
const R_WRITE_DATA: &str = "01890000-0000-7000-8000-000000000005";
const R_QUERY_ANALYTICS: &str = "01890000-0000-7000-8000-000000000006";
const R_OFFICE_ONLY: &str = "01890000-0000-7000-8000-000000000007";

/// The secrets of the fixture's tokens (only their hashes are stored and compiled).
const SECRET_ALICE_LAPTOP: &str = "ghp_fixture_alice_laptop_0000000000000000";
const SECRET_ALICE_OLD: &str = "ghp_fixture_alice_revoked_000000000000000";
const SECRET_BOB_CI: &str = "ghp_fixture_bob_ci_00000000000000000000000";
const SECRET_ZED: &str = "ghp_fixture_zed_beta_000000000000000000000";

/// A role's plain grants: (tenant, role id, [(server id, tool)]).
type RoleGrants = (&'static str, &'static str, Vec<(String, String)>);

/// One tenant's rows, as the store takes them.
struct Fixture {
    tenants: Vec<Tenant>,
    session_keys: Vec<SessionKeyRow>,
    users: Vec<User>,
    servers: Vec<Server>,
    roles: Vec<Role>,
    grants: Vec<RoleGrants>,
    rules: Vec<AccessRule>,
    /// (tenant, role id, user id).
    bindings: Vec<(&'static str, &'static str, &'static str)>,
    /// A virtual server and its upstream server ids, in order.
    virtual_servers: Vec<(VirtualServer, Vec<String>)>,
    tokens: Vec<ApiToken>,
    classification: Vec<ClassificationRuleRow>,
    suspensions: Vec<Suspension>,
    rate_limits: Vec<RateLimitRow>,
}

fn data_rule(id: &str, detector: &str, action: &str, servers: &str, labels: &str, at: i64) -> ClassificationRuleRow {
    ClassificationRuleRow {
        tenant_id: ACME.into(),
        id: id.into(),
        name: id.into(),
        detector: detector.into(),
        pattern: (detector == "pattern").then(|| "ACME-[0-9]{6}".to_owned()),
        action: action.into(),
        scope: "both".into(),
        servers_json: servers.into(),
        labels_json: labels.into(),
        created_at_ms: T0 + at,
    }
}

fn suspension(id: &str, kind: &str, target: &str, tool: &str, at: i64) -> Suspension {
    Suspension {
        tenant_id: ACME.into(),
        id: id.into(),
        kind: kind.into(),
        target_id: target.into(),
        tool: tool.into(),
        reason: format!("{kind} incident"),
        created_by: "carol@acme.test".into(),
        created_at_ms: T0 + at,
    }
}

fn rate_limit(
    id: &str,
    scope: &str,
    role_id: Option<&str>,
    server_id: Option<&str>,
    tool: Option<&str>,
    at: i64,
) -> RateLimitRow {
    RateLimitRow {
        tenant_id: ACME.into(),
        id: id.into(),
        scope: scope.into(),
        role_id: role_id.map(Into::into),
        user_id: None,
        server_id: server_id.map(Into::into),
        tool: tool.map(Into::into),
        requests: 60,
        per_seconds: 60,
        burst: (scope == "tenant").then_some(120),
        description: String::new(),
        created_at_ms: T0 + at,
    }
}

fn tool(name: &str, annotations: Option<Value>, params: &[&str]) -> Value {
    let properties: serde_json::Map<String, Value> = params
        .iter()
        .map(|p| ((*p).to_owned(), json!({ "type": if *p == "limit" { "integer" } else { "string" } })))
        .collect();
    let mut t = json!({
        "name": name,
        "description": format!("The {name} tool"),
        "inputSchema": { "type": "object", "properties": properties },
    });
    if let Some(a) = annotations {
        t["annotations"] = a;
    }
    t
}

fn server(tenant: &str, id: &str, slug: &str, tools: Vec<Value>, labels: &[&str], at: i64) -> Server {
    Server {
        tenant_id: tenant.into(),
        id: id.into(),
        slug: slug.into(),
        name: slug.to_uppercase(),
        url: format!("https://{slug}.mcp.example/mcp"),
        tools_json: serde_json::to_string(&tools).unwrap(),
        tools_fetched_at_ms: Some(T0 + at),
        labels_json: serde_json::to_string(labels).unwrap(),
        created_at_ms: T0 + at,
        transport: "streamableHttp".into(),
        command_json: None,
    }
}

fn user(tenant: &str, id: &str, email: &str, console_role: &str, at: i64) -> User {
    User {
        tenant_id: tenant.into(),
        id: id.into(),
        email: email.into(),
        display_name: email.split('@').next().unwrap().to_owned(),
        password_hash: None,
        console_role: console_role.into(),
        created_at_ms: T0 + at,
    }
}

fn role(id: &str, slug: &str, at: i64) -> Role {
    Role {
        tenant_id: ACME.into(),
        id: id.into(),
        slug: slug.into(),
        description: format!("the {slug}s"),
        created_at_ms: T0 + at,
    }
}

#[allow(clippy::too_many_arguments)]
fn rule(
    id: &str,
    role_id: &str,
    server_id: &str,
    effect: &str,
    tools: &str,
    annotation: Option<Value>,
    params: Value,
    description: &str,
    at: i64,
) -> AccessRule {
    AccessRule {
        tenant_id: ACME.into(),
        id: id.into(),
        role_id: role_id.into(),
        server_id: server_id.into(),
        effect: effect.into(),
        tools: tools.into(),
        annotation_json: annotation.map(|a| a.to_string()),
        params_json: params.to_string(),
        description: description.into(),
        created_at_ms: T0 + at,
        condition_cel: None,
    }
}

fn token(tenant: &str, id: &str, user_id: &str, secret: &str, expires: Option<i64>, revoked: Option<i64>) -> ApiToken {
    ApiToken {
        tenant_id: tenant.into(),
        id: id.into(),
        user_id: user_id.into(),
        name: id.trim_start_matches("tk-").into(),
        sha256: sha256_hex(secret),
        prefix: secret[..8].into(),
        created_at_ms: T0 + 500,
        expires_at_ms: expires,
        revoked_at_ms: revoked,
    }
}

fn fixture() -> Fixture {
    let ro = |v: bool| json!({ "readOnlyHint": v });
    let github = server(
        ACME,
        "sv-github",
        "github",
        vec![
            // No annotations: MCP's defaults (not read-only, destructive, not idempotent, open world).
            tool("create_issue", None, &["repo", "title"]),
            tool("delete_repo", Some(json!({ "destructiveHint": true })), &["repo"]),
            tool("get_file", Some(ro(true)), &["repo", "path"]),
            tool("list_issues", Some(json!({ "readOnlyHint": true, "openWorldHint": false })), &["repo"]),
            tool("search_code", Some(ro(true)), &["query"]),
            tool("search_issues", Some(ro(true)), &["query"]),
            tool(
                "update_issue",
                Some(json!({ "readOnlyHint": false, "destructiveHint": false, "idempotentHint": true })),
                &["repo", "title"],
            ),
        ],
        &[],
        10,
    );
    let fs = server(
        ACME,
        "sv-fs",
        "fs",
        vec![
            tool("delete_file", Some(json!({ "destructiveHint": true })), &["path"]),
            tool("list_dir", Some(ro(true)), &["path"]),
            tool("move_file", None, &["from", "to"]),
            tool("read_file", Some(ro(true)), &["path"]),
            tool("write_file", Some(json!({ "destructiveHint": false, "idempotentHint": true })), &["path", "content"]),
        ],
        // Unsorted on purpose: the bundle sorts labels.
        &["eu", "PII"],
        11,
    );
    let db = server(
        ACME,
        "sv-db",
        "db",
        vec![
            tool("list_tables", Some(ro(true)), &["database"]),
            tool("run_query", Some(ro(false)), &["database", "sql", "limit"]),
        ],
        &["PCI"],
        12,
    );
    let beta_server = server(BETA, "sv-beta-wiki", "wiki", vec![tool("read_page", Some(ro(true)), &["page"])], &[], 13);
    // Transports (docs/decisions/0016-stdio-and-sse-upstreams.md): fs is a stdio server the workers
    // launch, db a legacy HTTP+SSE server; github stays Streamable HTTP (no `transport` in the bundle).
    let fs = Server {
        url: String::new(),
        transport: "stdio".into(),
        command_json: Some(
            json!({ "command": "/opt/mcp/bin/fs", "args": ["--root", "/srv"], "env": { "FS_MODE": "rw" } }).to_string(),
        ),
        ..fs
    };
    let db = Server { url: "https://db.mcp.example/sse".into(), transport: "sse".into(), ..db };

    let s = |v: &str| v.to_owned();
    let pairs = |server: &str, tools: &[&str]| tools.iter().map(|t| (s(server), s(t))).collect::<Vec<_>>();
    Fixture {
        tenants: vec![
            Tenant { id: ACME.into(), slug: "acme".into(), name: "Acme".into(), created_at_ms: T0 },
            Tenant { id: BETA.into(), slug: "beta".into(), name: "Beta".into(), created_at_ms: T0 + 1 },
        ],
        session_keys: vec![
            SessionKeyRow {
                tenant_id: ACME.into(),
                id: "k-2023a".into(),
                key_b64: "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".into(),
                created_at_ms: T0 + 2,
            },
            SessionKeyRow {
                tenant_id: ACME.into(),
                id: "k-2023b".into(),
                key_b64: "CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=".into(),
                created_at_ms: T0 + 3,
            },
            SessionKeyRow {
                tenant_id: BETA.into(),
                id: "k-beta".into(),
                key_b64: "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=".into(),
                created_at_ms: T0 + 4,
            },
        ],
        users: vec![
            user(ACME, "us-alice", "alice@acme.test", ROLE_MEMBER, 20),
            user(ACME, "us-bob", "bob@acme.test", ROLE_MEMBER, 21),
            user(ACME, "us-carol", "carol@acme.test", ROLE_TENANT_ADMIN, 22),
            // No roles: in the bundle (she can authenticate), granted nothing.
            user(ACME, "us-dave", "dave@acme.test", ROLE_MEMBER, 23),
            user(BETA, "us-zed", "zed@beta.test", ROLE_MEMBER, 24),
        ],
        servers: vec![github, fs, db, beta_server],
        roles: vec![
            role("ro-admin", "admin", 30),
            role("ro-analyst", "analyst", 31),
            role("ro-reader", "reader", 32),
            role("ro-writer", "writer", 33),
            // Bound to nobody, grants nothing: still compiled (an empty role).
            role("ro-unused", "unused", 34),
        ],
        grants: vec![
            (ACME, "ro-admin", pairs("sv-github", &["*"])),
            (
                ACME,
                "ro-analyst",
                [pairs("sv-github", &["list_issues", "get_file"]), pairs("sv-db", &["list_tables"])].concat(),
            ),
        ],
        rules: vec![
            // A glob: every `search_*` tool, including ones the server adds later.
            rule(R_SEARCH_GLOB, "ro-analyst", "sv-github", "allow", "search_*", None, json!([]), "", 40),
            // A deny: wins over every allow of every role (carol's `*` grant on github included).
            rule(
                R_DENY_DELETE,
                "ro-analyst",
                "sv-github",
                "deny",
                "delete_*",
                None,
                json!([]),
                "deleting repositories is irreversible",
                41,
            ),
            // Annotation selectors, resolved by the compiler into `only`.
            rule(
                R_FS_READ_ONLY,
                "ro-reader",
                "sv-fs",
                "allow",
                "*",
                Some(json!({ "hint": "readOnlyHint", "value": true })),
                json!([]),
                "read-only file tools",
                42,
            ),
            // Read-only tools count as not destructive (MCP: destructiveHint only means something
            // when readOnlyHint is false), and a tool without annotations is destructive.
            rule(
                R_GH_NOT_DESTRUCTIVE,
                "ro-reader",
                "sv-github",
                "allow",
                "*",
                Some(json!({ "hint": "destructiveHint", "value": false })),
                json!([]),
                "",
                43,
            ),
            // Parameter constraints.
            rule(
                R_WRITE_DATA,
                "ro-writer",
                "sv-fs",
                "allow",
                "write_file",
                None,
                json!([{ "param": "path", "pathPrefixes": ["/srv/data"] }]),
                "only the data volume",
                44,
            ),
            rule(
                R_QUERY_ANALYTICS,
                "ro-writer",
                "sv-db",
                "allow",
                "run_query",
                None,
                json!([
                    { "param": "database", "pattern": "analytics_[a-z]+" },
                    { "param": "limit", "optional": true, "max": 1000.0 },
                ]),
                "analytics databases, bounded results",
                45,
            ),
        ],
        bindings: vec![
            (ACME, "ro-analyst", "us-alice"),
            (ACME, "ro-reader", "us-alice"),
            (ACME, "ro-writer", "us-bob"),
            (ACME, "ro-admin", "us-carol"),
            (ACME, "ro-analyst", "us-carol"),
        ],
        virtual_servers: vec![
            (
                VirtualServer {
                    tenant_id: ACME.into(),
                    id: "vs-dev".into(),
                    slug: "dev".into(),
                    name: "Developers".into(),
                    policy_mode: "enforce".into(),
                    created_at_ms: T0 + 50,
                },
                // The virtual server's order is kept (it is the order tools are merged in).
                vec![s("sv-github"), s("sv-fs"), s("sv-db")],
            ),
            (
                VirtualServer {
                    tenant_id: ACME.into(),
                    id: "vs-pilot".into(),
                    slug: "pilot".into(),
                    name: "Pilot".into(),
                    policy_mode: "monitor".into(),
                    created_at_ms: T0 + 51,
                },
                vec![s("sv-fs")],
            ),
            (
                VirtualServer {
                    tenant_id: BETA.into(),
                    id: "vs-beta".into(),
                    slug: "dev".into(),
                    name: "Beta".into(),
                    policy_mode: "enforce".into(),
                    created_at_ms: T0 + 52,
                },
                vec![s("sv-beta-wiki")],
            ),
        ],
        tokens: vec![
            token(ACME, "tk-alice-laptop", "us-alice", SECRET_ALICE_LAPTOP, None, None),
            token(ACME, "tk-alice-old", "us-alice", SECRET_ALICE_OLD, None, Some(T0 + 600)),
            token(ACME, "tk-bob-ci", "us-bob", SECRET_BOB_CI, Some(T0 + 30 * 86_400_000), None),
            token(BETA, "tk-zed", "us-zed", SECRET_ZED, None, None),
        ],
        classification: vec![
            // By label: fs carries PII; db carries PCI.
            data_rule("dc-mail", "email", "redact", "[]", r#"["PII"]"#, 70),
            data_rule("dc-cards", "card_number", "block", r#"["github"]"#, r#"["PCI"]"#, 71),
            // Everywhere.
            data_rule("dc-ids", "pattern", "log", "[]", "[]", 72),
            // A label no server carries: left out of the bundle (it applies nowhere).
            data_rule("dc-phi", "us_ssn", "block", "[]", r#"["PHI"]"#, 73),
        ],
        suspensions: vec![
            suspension("su-dave", "user", "us-dave", "", 80),
            suspension("su-update", "tool", "sv-github", "update_issue", 81),
        ],
        rate_limits: vec![
            rate_limit("rl-tenant", "tenant", None, None, None, 90),
            rate_limit("rl-writers", "role", Some("ro-writer"), Some("sv-fs"), Some("write_*"), 91),
        ],
    }
}

/// In which order rows go into the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// As listed in the fixture.
    Forward,
    /// Every list reversed, independent kinds of rows in another order, grants set per role in
    /// reverse, and the revoked token stored active and then revoked.
    Reverse,
}

fn ordered<T: Clone>(items: &[T], order: Order) -> Vec<T> {
    let mut v = items.to_vec();
    if order == Order::Reverse {
        v.reverse();
    }
    v
}

/// Stores the fixture (both tenants). Session keys go in first, so the compiler never adds a
/// random one.
async fn populate(store: &Store, order: Order) {
    let f = fixture();
    for t in ordered(&f.tenants, order) {
        store.create_tenant(&t).await.unwrap();
    }
    for k in ordered(&f.session_keys, order) {
        store.insert_session_key(&k).await.unwrap();
    }
    let users = async {
        for u in ordered(&f.users, order) {
            store.create_user(&u).await.unwrap();
        }
    };
    let servers = async {
        for s in ordered(&f.servers, order) {
            store.create_server(&s).await.unwrap();
        }
    };
    let roles = async {
        for r in ordered(&f.roles, order) {
            store.create_role(&r).await.unwrap();
        }
    };
    match order {
        Order::Forward => {
            users.await;
            servers.await;
            roles.await;
        }
        Order::Reverse => {
            roles.await;
            servers.await;
            users.await;
        }
    }
    let tokens = async {
        for t in ordered(&f.tokens, order) {
            match (order, t.revoked_at_ms) {
                (Order::Reverse, Some(at)) => {
                    store.create_token(&ApiToken { revoked_at_ms: None, ..t.clone() }).await.unwrap();
                    assert!(store.revoke_token(&t.tenant_id, &t.id, at).await.unwrap());
                }
                _ => store.create_token(&t).await.unwrap(),
            }
        }
    };
    let policy = async {
        for (tenant, role_id, grants) in ordered(&f.grants, order) {
            store.set_role_grants(tenant, role_id, &ordered(&grants, order)).await.unwrap();
        }
        for r in ordered(&f.rules, order) {
            store.insert_rule(&r).await.unwrap();
        }
        for (tenant, role_id, user_id) in ordered(&f.bindings, order) {
            store.bind_role(tenant, role_id, user_id).await.unwrap();
        }
        for (vs, upstreams) in ordered(&f.virtual_servers, order) {
            store.create_virtual_server(&vs, &upstreams).await.unwrap();
        }
        for r in ordered(&f.classification, order) {
            store.insert_classification_rule(&r).await.unwrap();
        }
        for r in ordered(&f.suspensions, order) {
            store.insert_suspension(&r).await.unwrap();
        }
        for r in ordered(&f.rate_limits, order) {
            store.insert_rate_limit(&r).await.unwrap();
        }
    };
    match order {
        Order::Forward => {
            policy.await;
            tokens.await;
        }
        Order::Reverse => {
            tokens.await;
            policy.await;
        }
    }
    // Local groups, attributes and a conditional rule (docs/decisions/0012-groups-and-conditions.md):
    // bob holds ro-reader through the `oncall` group; alice has attributes; an allow rule of
    // ro-analyst applies only from the office network.
    store
        .create_group(&gatehouse_store::UserGroup {
            tenant_id: ACME.into(),
            id: "gr-oncall".into(),
            slug: "oncall".into(),
            name: "On call".into(),
            created_at_ms: T0 + 95,
        })
        .await
        .unwrap();
    store.add_group_member(ACME, "gr-oncall", "us-bob").await.unwrap();
    store.bind_group_role(ACME, "gr-oncall", "ro-reader").await.unwrap();
    let attrs = [("department", "payments"), ("clearance", "high")];
    let attrs: Vec<(String, String)> =
        ordered(&attrs, order).iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    store.set_user_attributes(ACME, "us-alice", &attrs).await.unwrap();
    let office = AccessRule {
        condition_cel: Some("inCidr(client.ip, '10.0.0.0/8')".into()),
        ..rule(R_OFFICE_ONLY, "ro-analyst", "sv-github", "allow", "create_issue", None, json!([]), "office only", 46)
    };
    store.insert_rule(&office).await.unwrap();
    // Virtual-server shaping (docs/decisions/0013-virtual-server-shaping.md): dev resolves clashes by
    // priority, fs's tools are prefixed `files`, github's search_code is renamed, fs's read_file has
    // its path fixed and described anew.
    store
        .set_shaping(&gatehouse_store::ShapingRow {
            tenant_id: ACME.into(),
            virtual_server_id: "vs-dev".into(),
            conflict_strategy: "priority".into(),
            prefixes_json: r#"{"sv-fs":"files"}"#.into(),
            updated_at_ms: T0 + 96,
        })
        .await
        .unwrap();
    let overrides = [
        ("sv-github", "search_code", json!({ "rename": "code_search" })),
        (
            "sv-fs",
            "read_file",
            json!({ "description": "Reads under /srv", "fixed": [{ "name": "path", "value": "/srv/README" }] }),
        ),
    ];
    for (server_id, tool, o) in ordered(&overrides, order) {
        let row = gatehouse_store::ToolOverrideRow {
            tenant_id: ACME.into(),
            virtual_server_id: "vs-dev".into(),
            server_id: server_id.into(),
            tool: tool.into(),
            override_json: o.to_string(),
            updated_at_ms: T0 + 97,
        };
        store.upsert_tool_override(&row).await.unwrap();
    }
}

async fn compile_acme(store: &Store) -> Content {
    let tenant = store.tenant_by_id(ACME).await.unwrap().expect("the fixture's tenant");
    bundles::compile(store, &tenant).await.unwrap()
}

// ==================================================================== the snapshot

const SNAPSHOT: &str = "compiler_acme.json";

fn snapshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(name)
}

/// The snapshot's text: the revision, then the content, pretty-printed (fields in declaration
/// order, as in the canonical bytes).
fn snapshot_text(content: &Content) -> String {
    #[derive(serde::Serialize)]
    struct Snapshot<'a> {
        revision: String,
        content: &'a Content,
    }
    let mut text =
        serde_json::to_string_pretty(&Snapshot { revision: content.revision(), content }).expect("serialises");
    text.push('\n');
    text
}

/// Compares `content` with the committed snapshot `name`; with `UPDATE_SNAPSHOTS=1` rewrites it.
fn assert_snapshot(name: &str, content: &Content) {
    let actual = snapshot_text(content);
    let path = snapshot_path(name);
    let expected = std::fs::read_to_string(&path).ok();
    if expected.as_deref() == Some(actual.as_str()) {
        // The pretty form pins the canonical bytes too: parsing it back gives the same content.
        let parsed: Value = serde_json::from_str(&actual).unwrap();
        let back: Content = serde_json::from_value(parsed["content"].clone()).unwrap();
        assert_eq!(back.canonical_bytes(), content.canonical_bytes());
        return;
    }
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Write and rename, so the SQLite and PostgreSQL cases never leave a torn file.
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        std::fs::write(&tmp, &actual).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        eprintln!("updated snapshot {}", path.display());
        return;
    }
    let new = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&new, &actual).unwrap();
    let Some(expected) = expected else {
        panic!(
            "no snapshot {} yet; the compiled content is in {}.\n\
             Review it, then create the snapshot with:\n  \
             UPDATE_SNAPSHOTS=1 cargo test -p gatehouse-control --test compiler",
            path.display(),
            new.display()
        );
    };
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let first = e.iter().zip(&a).position(|(x, y)| x != y).unwrap_or(e.len().min(a.len()));
    let context = |lines: &[&str]| {
        let from = first.saturating_sub(3);
        lines[from..(first + 4).min(lines.len())]
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{:>5} {}{l}", from + i + 1, if from + i == first { "> " } else { "  " }))
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "the compiled bundle differs from the snapshot {} at line {} (expected {} lines, got {}).\n\
         expected:\n{}\nactual:\n{}\n\
         Full diff:\n  diff -u {} {}\n\
         If the change is intended, accept it with:\n  \
         UPDATE_SNAPSHOTS=1 cargo test -p gatehouse-control --test compiler\n\
         and commit the snapshot with the change.",
        path.display(),
        first + 1,
        e.len(),
        a.len(),
        context(&e),
        context(&a),
        path.display(),
        new.display()
    );
}

// ==================================================================== the cases

/// The fixture compiles to the committed snapshot, twice the same, and means what it says.
async fn compiles_to_the_snapshot(store: Store) {
    populate(&store, Order::Forward).await;
    let content = compile_acme(&store).await;
    assert_eq!(compile_acme(&store).await.canonical_bytes(), content.canonical_bytes(), "compiling is repeatable");
    assert_eq!(store.list_session_keys(ACME).await.unwrap().len(), 2, "the compiler added no random key");
    assert_snapshot(SNAPSHOT, &content);

    // A revoked token is absent; the others are there, by hash only.
    let ids: Vec<&str> = content.tokens.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"tk-alice-laptop") && ids.contains(&"tk-bob-ci"), "{ids:?}");
    let bytes = String::from_utf8(content.canonical_bytes()).unwrap();
    assert!(!bytes.contains("tk-alice-old") && !bytes.contains(&sha256_hex(SECRET_ALICE_OLD)));
    assert!(!bytes.contains(SECRET_ALICE_LAPTOP), "a token's secret never reaches a bundle");

    // Annotation selectors are resolved to the names of the tools that had the hint.
    let rule = |id: &str| content.roles.iter().flat_map(|r| &r.rules).find(|r| r.id == id).unwrap();
    assert_eq!(rule(R_FS_READ_ONLY).only.as_deref(), Some(&["list_dir".to_owned(), "read_file".to_owned()][..]));
    assert_eq!(
        rule(R_GH_NOT_DESTRUCTIVE).only.as_deref().unwrap(),
        ["get_file", "list_issues", "search_code", "search_issues", "update_issue"]
    );
    // A rule without a selector has no `only`: globs stay globs.
    assert_eq!(rule(R_SEARCH_GLOB).only, None);

    // Another tenant's rows stay out.
    assert!(!bytes.contains("beta") && !bytes.contains("k-beta") && !bytes.contains("wiki"));

    // Signed and verified as a worker would, the bundle decides as the fixture intends.
    let key = SigningKey::generate();
    let mut ring = KeyRing::default();
    ring.add_base64(&key.public_base64()).unwrap();
    let bundle = ring.verify(&key.sign("default", 1, T0, content.clone())).unwrap();
    let p = TenantPolicy::build(&bundle).unwrap();
    let args = |v: Value| v.as_object().unwrap().clone();
    assert_eq!(p.authorize_tool("us-alice", "github", "search_code").rule(), R_SEARCH_GLOB);
    assert_eq!(p.authorize_tool("us-alice", "github", "get_file").rule(), "grant:analyst:github:get_file");
    assert_eq!(p.authorize_tool("us-alice", "fs", "read_file").rule(), R_FS_READ_ONLY);
    assert_eq!(p.authorize_tool("us-alice", "fs", "write_file").rule(), "default-deny");
    assert_eq!(p.authorize_tool("us-carol", "github", "create_issue").rule(), "grant:admin:github:*");
    assert!(matches!(
        p.authorize_call("us-carol", "github", "delete_repo", None),
        Decision::Deny { rule, .. } if rule == R_DENY_DELETE
    ));
    let write = |path: &str| p.authorize_call("us-bob", "fs", "write_file", Some(&args(json!({ "path": path }))));
    assert!(write("/srv/data/x.csv").is_allow());
    assert!(!write("/srv/data/../etc/passwd").is_allow());
    let query = |v: Value| p.authorize_call("us-bob", "db", "run_query", Some(&args(v))).is_allow();
    assert!(query(json!({ "database": "analytics_sales", "sql": "select 1" })));
    assert!(!query(json!({ "database": "payroll", "sql": "select 1" })));
    assert!(!query(json!({ "database": "analytics_sales", "limit": 5000 })));
    // The kill list, the data rules and the rate limits, compiled.
    assert_eq!(p.authorize_tool("us-dave", "github", "get_file").rule(), "kill:user");
    assert_eq!(p.authorize_tool("us-carol", "github", "update_issue").rule(), "kill:tool:github:update_issue");
    let data: Vec<(&str, Vec<&str>)> = content
        .classification
        .iter()
        .map(|r| (r.id.as_str(), r.servers.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        data,
        [("dc-cards", vec!["db", "github"]), ("dc-ids", vec![]), ("dc-mail", vec!["fs"])],
        "labels resolved to servers; a rule whose label no server carries is left out"
    );
    let limits: Vec<String> = p.rate_limits_for("us-bob", "fs", "write_file").map(|l| l.limit.id.clone()).collect();
    assert_eq!(limits, ["rl-tenant", "rl-writers"], "bob holds writer");
    assert!(p.authenticate(SECRET_ALICE_OLD, T0 + 1000).is_err());
    assert_eq!(p.authenticate(SECRET_ALICE_LAPTOP, T0 + 1000).unwrap().user_id, "us-alice");
    assert_eq!(p.virtual_server("pilot").unwrap().mode, gatehouse_core::rules::PolicyMode::Monitor);
}

/// The same state stored in another order compiles to the same bytes.
async fn insertion_order_does_not_matter(a: Store, b: Store) {
    populate(&a, Order::Forward).await;
    populate(&b, Order::Reverse).await;
    let (ca, cb) = (compile_acme(&a).await, compile_acme(&b).await);
    assert_eq!(ca.revision(), cb.revision());
    assert_eq!(ca.canonical_bytes(), cb.canonical_bytes());
}

/// Runs `case` over two fresh databases on a task of its own, removes both databases, then passes
/// a panic on.
async fn with_two<F, Fut>(a: TestDb, b: TestDb, case: F)
where
    F: FnOnce(Store, Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(case(a.store.clone(), b.store.clone())).await;
    a.finish().await;
    b.finish().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn sqlite_compiles_to_the_snapshot() {
    TestDb::sqlite().await.run(compiles_to_the_snapshot).await;
}

#[tokio::test]
async fn postgres_compiles_to_the_snapshot() {
    if let Some(db) = TestDb::postgres("postgres_compiles_to_the_snapshot").await {
        db.run(compiles_to_the_snapshot).await;
    }
}

#[tokio::test]
async fn sqlite_insertion_order_does_not_matter() {
    with_two(TestDb::sqlite().await, TestDb::sqlite().await, insertion_order_does_not_matter).await;
}

#[tokio::test]
async fn postgres_insertion_order_does_not_matter() {
    let Some(a) = TestDb::postgres("postgres_insertion_order_does_not_matter").await else { return };
    let Some(b) = TestDb::postgres("postgres_insertion_order_does_not_matter").await else { return };
    with_two(a, b, insertion_order_does_not_matter).await;
}

/// SQLite filled in one order and PostgreSQL in the other give the same revision (both also match
/// the snapshot, above; this says it directly).
#[tokio::test]
async fn sqlite_and_postgres_compile_the_same_revision() {
    let Some(pg) = TestDb::postgres("sqlite_and_postgres_compile_the_same_revision").await else { return };
    with_two(TestDb::sqlite().await, pg, insertion_order_does_not_matter).await;
}
