//! The store's contract, run against both databases.
//!
//! Every case below is one `async fn(&Store)`; `contract_tests!` turns each into two tests,
//! `sqlite_<case>` (a fresh database file in a temporary folder) and `postgres_<case>` (a fresh
//! database `gh_test_<uuid>` created in the cluster named by `GATEHOUSE_TEST_DATABASE_URL`, dropped
//! afterwards). Without that variable the PostgreSQL tests print a "skipped" line and pass, unless
//! `CI` is set: then they fail, because a CI run that silently skips PostgreSQL proves nothing.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;

use gatehouse_store::testing::{TestDb, with_database};
use gatehouse_store::{
    AccessRule, ApiToken, AuditRow, Binding, BundleRow, ClassificationRuleRow, Grant, GroupMember, GroupRole,
    ROLE_MEMBER, ROLE_PLATFORM_ADMIN, ROLE_TENANT_ADMIN, RateLimitRow, Role, Server, SessionCutoffRow, SessionKeyRow,
    Store, StoreError, Suspension, Tenant, User, UserAttribute, UserGroup, VirtualServer, VirtualServerUpstream,
};
use tower_sessions::SessionStore;
use tower_sessions::session::{Id, Record};

// ==================================================================== harness
// The per-test databases live in `gatehouse_store::testing`, shared with the control plane's tests.

/// Whether two strings are equal, at compile time.
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `contract_tests! { case => sqlite_case, postgres_case; … }`: two tests per contract case. (The
/// test names are spelt out because `macro_rules!` cannot build identifiers; a misspelt one does
/// not compile.)
macro_rules! contract_tests {
    ($($case:ident => $sqlite:ident, $postgres:ident;)*) => {
        $(
            const _: () = assert!(
                same(stringify!($sqlite), concat!("sqlite_", stringify!($case)))
                    && same(stringify!($postgres), concat!("postgres_", stringify!($case))),
                concat!("contract_tests!: name the tests of `", stringify!($case), "` sqlite_", stringify!($case),
                    " and postgres_", stringify!($case))
            );

            #[tokio::test]
            async fn $sqlite() {
                TestDb::sqlite().await.run(|s| async move { $case(&s).await }).await;
            }

            #[tokio::test]
            async fn $postgres() {
                if let Some(db) = TestDb::postgres(stringify!($postgres)).await {
                    db.run(|s| async move { $case(&s).await }).await;
                }
            }
        )*
    };
}

contract_tests! {
    tenants => sqlite_tenants, postgres_tenants;
    users => sqlite_users, postgres_users;
    servers => sqlite_servers, postgres_servers;
    roles_grants_bindings => sqlite_roles_grants_bindings, postgres_roles_grants_bindings;
    access_rules_and_policy_mode => sqlite_access_rules_and_policy_mode, postgres_access_rules_and_policy_mode;
    groups_and_attributes => sqlite_groups_and_attributes, postgres_groups_and_attributes;
    classification_rules_and_labels => sqlite_classification_rules_and_labels, postgres_classification_rules_and_labels;
    suspensions => sqlite_suspensions, postgres_suspensions;
    rate_limits => sqlite_rate_limits, postgres_rate_limits;
    virtual_servers => sqlite_virtual_servers, postgres_virtual_servers;
    tokens => sqlite_tokens, postgres_tokens;
    audit => sqlite_audit, postgres_audit;
    audit_large_batches => sqlite_audit_large_batches, postgres_audit_large_batches;
    bundles => sqlite_bundles, postgres_bundles;
    session_keys => sqlite_session_keys, postgres_session_keys;
    session_cutoffs => sqlite_session_cutoffs, postgres_session_cutoffs;
    tenant_isolation => sqlite_tenant_isolation, postgres_tenant_isolation;
    cross_tenant_references => sqlite_cross_tenant_references, postgres_cross_tenant_references;
    console_sessions => sqlite_console_sessions, postgres_console_sessions;
    publications => sqlite_publications, postgres_publications;
    virtual_server_shaping => sqlite_virtual_server_shaping, postgres_virtual_server_shaping;
}

#[test]
fn migrations_have_the_same_numbering() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let names = |dialect: &str| -> BTreeSet<String> {
        let dir = root.join(dialect);
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    let sqlite = names("sqlite");
    let postgres = names("postgres");
    assert!(!sqlite.is_empty(), "no migrations in migrations/sqlite");
    assert_eq!(
        sqlite,
        postgres,
        "migrations/sqlite and migrations/postgres must hold the same file names \
         (only in sqlite: {:?}; only in postgres: {:?})",
        sqlite.difference(&postgres).collect::<Vec<_>>(),
        postgres.difference(&sqlite).collect::<Vec<_>>(),
    );
}

// ==================================================================== fixtures

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn tenant(slug: &str) -> Tenant {
    Tenant { id: new_id(), slug: slug.to_owned(), name: format!("Tenant {slug}"), created_at_ms: 1_700_000_000_000 }
}

fn user(t: &Tenant, email: &str, password: Option<&str>, console_role: &str, created_at_ms: i64) -> User {
    User {
        tenant_id: t.id.clone(),
        id: new_id(),
        email: email.to_owned(),
        display_name: format!("User {email}"),
        password_hash: password.map(|p| format!("$argon2id$v=19$m=19456,t=2,p=1${p}")),
        console_role: console_role.to_owned(),
        created_at_ms,
    }
}

fn server(t: &Tenant, slug: &str) -> Server {
    Server {
        tenant_id: t.id.clone(),
        id: new_id(),
        slug: slug.to_owned(),
        name: format!("Server {slug}"),
        url: format!("https://{slug}.example.com/mcp"),
        tools_json: "[]".to_owned(),
        tools_fetched_at_ms: None,
        labels_json: "[]".to_owned(),
        created_at_ms: 1_700_000_000_000,
        transport: "streamableHttp".to_owned(),
        command_json: None,
    }
}

fn role(t: &Tenant, slug: &str) -> Role {
    Role {
        tenant_id: t.id.clone(),
        id: new_id(),
        slug: slug.to_owned(),
        description: format!("Role {slug}"),
        created_at_ms: 1_700_000_000_000,
    }
}

fn virtual_server(t: &Tenant, slug: &str) -> VirtualServer {
    VirtualServer {
        tenant_id: t.id.clone(),
        id: new_id(),
        slug: slug.to_owned(),
        name: format!("Virtual {slug}"),
        policy_mode: "enforce".to_owned(),
        created_at_ms: 1_700_000_000_000,
    }
}

fn token(u: &User, name: &str, created_at_ms: i64) -> ApiToken {
    let id = new_id();
    ApiToken {
        tenant_id: u.tenant_id.clone(),
        sha256: format!("{:0>64}", id.replace('-', "")),
        prefix: format!("gh_{}", &id[..8]),
        id,
        user_id: u.id.clone(),
        name: name.to_owned(),
        created_at_ms,
        expires_at_ms: None,
        revoked_at_ms: None,
    }
}

/// An audit event; `full` fills every optional column.
fn audit_event(t: &Tenant, time_ms: i64, full: bool) -> AuditRow {
    let some = |s: &str| full.then(|| s.to_owned());
    AuditRow {
        tenant_id: t.id.clone(),
        id: new_id(),
        time_ms,
        user_id: some("user-1"),
        user_email: some("user@example.com"),
        client_name: some("claude-code"),
        client_version: some("1.2.3"),
        session_id: some("session-1"),
        virtual_server: "dev-tools".to_owned(),
        upstream_server: some("search"),
        method: "tools/call".to_owned(),
        tool: some("search_docs"),
        exposed_tool: some("docs__search_docs"),
        outcome: if full { "allowed" } else { "denied" }.to_owned(),
        reason: some("granted by role dev"),
        latency_us: 1234,
        bundle_revision: some("abc123"),
        rule_id: some("grant:dev:search:search_docs"),
        findings_json: some(
            r#"[{"ruleId":"r1","detector":"email","action":"log","direction":"params","path":"/to","count":1}]"#,
        ),
        received_at_ms: time_ms + 5,
    }
}

fn bundle(t: &Tenant, group: &str, sequence: i64) -> BundleRow {
    BundleRow {
        tenant_id: t.id.clone(),
        group_name: group.to_owned(),
        sequence,
        revision: format!("rev-{}-{group}-{sequence}", t.slug),
        signed_json: format!(r#"{{"tenant":"{}","sequence":{sequence}}}"#, t.slug),
        created_at_ms: 1_700_000_000_000 + sequence,
    }
}

fn grant(r: &Role, s: &Server, tool: &str) -> Grant {
    Grant { role_id: r.id.clone(), server_id: s.id.clone(), tool: tool.to_owned() }
}

/// The `(server_id, tool)` pairs `set_role_grants` takes.
fn grant_set(pairs: &[(&Server, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(srv, tool)| (srv.id.clone(), (*tool).to_owned())).collect()
}

fn binding(r: &Role, u: &User) -> Binding {
    Binding { role_id: r.id.clone(), user_id: u.id.clone() }
}

fn sorted_grants(mut v: Vec<Grant>) -> Vec<Grant> {
    v.sort_by(|a, b| (&a.role_id, &a.server_id, &a.tool).cmp(&(&b.role_id, &b.server_id, &b.tool)));
    v
}

fn sorted_bindings(mut v: Vec<Binding>) -> Vec<Binding> {
    v.sort_by(|a, b| (&a.role_id, &a.user_id).cmp(&(&b.role_id, &b.user_id)));
    v
}

#[track_caller]
fn assert_conflict<T: Debug>(r: gatehouse_store::Result<T>, what: &str) {
    match r {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{what}: expected StoreError::Conflict, got {other:?}"),
    }
}

#[track_caller]
fn assert_missing_reference<T: Debug>(r: gatehouse_store::Result<T>, what: &str) {
    match r {
        Err(StoreError::MissingReference(_)) => {}
        other => panic!("{what}: expected StoreError::MissingReference, got {other:?}"),
    }
}

// ==================================================================== 1. tenants

async fn tenants(s: &Store) {
    let beta = tenant("beta");
    let alpha = tenant("alpha");
    let gamma = tenant("gamma");
    for t in [&beta, &alpha, &gamma] {
        s.create_tenant(t).await.unwrap();
    }

    assert_eq!(s.tenant_by_slug("beta").await.unwrap(), Some(beta.clone()));
    assert_eq!(s.tenant_by_id(&gamma.id).await.unwrap(), Some(gamma.clone()));
    assert_eq!(s.tenant_by_slug("delta").await.unwrap(), None);
    assert_eq!(s.tenant_by_id(&new_id()).await.unwrap(), None);
    // A slug is not an id, nor the other way round.
    assert_eq!(s.tenant_by_id("beta").await.unwrap(), None);
    assert_eq!(s.tenant_by_slug(&beta.id).await.unwrap(), None);

    assert_eq!(s.list_tenants().await.unwrap(), vec![alpha.clone(), beta.clone(), gamma.clone()], "ordered by slug");

    let mut dup = tenant("beta");
    dup.name = "Another beta".into();
    assert_conflict(s.create_tenant(&dup).await, "a second tenant with slug beta");
    let mut same_id = tenant("epsilon");
    same_id.id = alpha.id.clone();
    assert_conflict(s.create_tenant(&same_id).await, "a second tenant with alpha's id");

    assert_eq!(s.list_tenants().await.unwrap(), vec![alpha, beta.clone(), gamma], "failed inserts left no rows");
    assert_eq!(s.tenant_by_slug("beta").await.unwrap(), Some(beta), "the original beta is untouched");
}

// ==================================================================== 2. users

async fn users(s: &Store) {
    let a = tenant("a");
    let b = tenant("b");
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();

    let carol = user(&a, "carol@example.com", Some("c"), ROLE_TENANT_ADMIN, 3_000);
    let alice = user(&a, "alice@example.com", None, ROLE_MEMBER, 1_000);
    let bob = user(&a, "bob@example.com", Some("b"), ROLE_PLATFORM_ADMIN, 2_000);
    for u in [&carol, &alice, &bob] {
        s.create_user(u).await.unwrap();
    }

    assert_eq!(s.list_users(&a.id).await.unwrap(), vec![alice.clone(), bob.clone(), carol.clone()], "ordered by email");
    assert_eq!(s.user_by_id(&a.id, &bob.id).await.unwrap(), Some(bob.clone()));
    assert_eq!(s.user_by_email(&a.id, "carol@example.com").await.unwrap(), Some(carol.clone()));
    assert_eq!(s.user_by_email(&a.id, "alice@example.com").await.unwrap().unwrap().password_hash, None);
    assert_eq!(s.user_by_id(&a.id, &new_id()).await.unwrap(), None);
    assert_eq!(s.user_by_email(&a.id, "nobody@example.com").await.unwrap(), None);

    // E-mails are unique per tenant, not globally.
    let alice_again = user(&a, "alice@example.com", Some("x"), ROLE_MEMBER, 4_000);
    assert_conflict(s.create_user(&alice_again).await, "a second alice@ in tenant a");
    let alice_b = user(&b, "alice@example.com", Some("a2"), ROLE_MEMBER, 5_000);
    s.create_user(&alice_b).await.expect("the same e-mail in another tenant is allowed");
    let carol_b = user(&b, "carol@example.com", Some("c2"), ROLE_MEMBER, 500);
    s.create_user(&carol_b).await.unwrap();
    assert_eq!(s.list_users(&a.id).await.unwrap(), vec![alice.clone(), bob.clone(), carol.clone()]);
    assert_eq!(s.list_users(&b.id).await.unwrap(), vec![alice_b.clone(), carol_b.clone()]);

    // Sign-in candidates: every tenant, only users with a password, oldest first.
    assert_eq!(s.sign_in_candidates("alice@example.com").await.unwrap(), vec![alice_b], "a's alice has no password");
    assert_eq!(s.sign_in_candidates("carol@example.com").await.unwrap(), vec![carol_b, carol]);
    assert_eq!(s.sign_in_candidates("bob@example.com").await.unwrap(), vec![bob]);
    assert_eq!(s.sign_in_candidates("nobody@example.com").await.unwrap(), vec![]);

    assert_eq!(s.count_platform_admins().await.unwrap(), 1);
    s.create_user(&user(&b, "root@example.com", Some("r"), ROLE_PLATFORM_ADMIN, 6_000)).await.unwrap();
    assert_eq!(s.count_platform_admins().await.unwrap(), 2, "platform admins are counted across tenants");

    // A user must belong to an existing tenant.
    let ghost = Tenant { id: new_id(), ..tenant("ghost") };
    assert_missing_reference(
        s.create_user(&user(&ghost, "g@example.com", None, ROLE_MEMBER, 1)).await,
        "a user of a tenant that does not exist",
    );
}

// ==================================================================== 3. servers

async fn servers(s: &Store) {
    let a = tenant("a");
    let b = tenant("b");
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();

    let search = server(&a, "search");
    let files = server(&a, "files");
    let b_search = server(&b, "search");
    for srv in [&search, &files, &b_search] {
        s.create_server(srv).await.unwrap();
    }

    assert_eq!(s.list_servers(&a.id).await.unwrap(), vec![files.clone(), search.clone()], "ordered by slug");
    assert_eq!(s.server_by_slug(&a.id, "search").await.unwrap(), Some(search.clone()));
    assert_eq!(s.server_by_slug(&b.id, "search").await.unwrap(), Some(b_search.clone()));
    assert_eq!(s.server_by_slug(&a.id, "mail").await.unwrap(), None);
    assert_conflict(s.create_server(&server(&a, "files")).await, "a second server slug files in tenant a");

    // A stdio server keeps its transport and command; another tenant does not see it.
    let local = Server {
        url: String::new(),
        transport: "stdio".to_owned(),
        command_json: Some(r#"{"command":"npx","args":["-y","srv"],"env":{}}"#.to_owned()),
        ..server(&a, "local")
    };
    s.create_server(&local).await.unwrap();
    assert_eq!(s.server_by_slug(&a.id, "local").await.unwrap(), Some(local.clone()));
    assert_eq!(s.server_by_slug(&b.id, "local").await.unwrap(), None, "tenant b cannot read a's stdio server");
    let legacy = Server { transport: "sse".to_owned(), ..server(&b, "legacy") };
    s.create_server(&legacy).await.unwrap();
    assert_eq!(s.list_servers(&b.id).await.unwrap(), vec![legacy, b_search.clone()]);
    let bogus = Server { transport: "carrier-pigeon".to_owned(), ..server(&a, "bogus") };
    assert!(s.create_server(&bogus).await.is_err(), "the database refuses an unknown transport");

    let tools = r#"[{"name":"search_docs","inputSchema":{"type":"object"}}]"#;
    assert!(s.update_server_tools(&a.id, &search.id, tools, 1_700_000_001_000).await.unwrap());
    let updated = s.server_by_slug(&a.id, "search").await.unwrap().unwrap();
    assert_eq!(updated, Server { tools_json: tools.into(), tools_fetched_at_ms: Some(1_700_000_001_000), ..search });
    assert_eq!(s.server_by_slug(&a.id, "files").await.unwrap(), Some(files), "only the named server changed");

    // Another tenant's server is out of reach.
    assert!(!s.update_server_tools(&a.id, &b_search.id, "[\"hijacked\"]", 9).await.unwrap());
    assert_eq!(s.server_by_slug(&b.id, "search").await.unwrap(), Some(b_search), "b's server is unchanged");
    assert!(!s.update_server_tools(&a.id, &new_id(), "[]", 9).await.unwrap(), "no such server");
}

// ==================================================================== 4. roles, grants, bindings

async fn roles_grants_bindings(s: &Store) {
    let a = tenant("a");
    s.create_tenant(&a).await.unwrap();
    let ops = role(&a, "ops");
    let dev = role(&a, "dev");
    s.create_role(&ops).await.unwrap();
    s.create_role(&dev).await.unwrap();
    assert_eq!(s.list_roles(&a.id).await.unwrap(), vec![dev.clone(), ops.clone()], "ordered by slug");
    assert_eq!(s.role_by_slug(&a.id, "ops").await.unwrap(), Some(ops.clone()));
    assert_eq!(s.role_by_slug(&a.id, "qa").await.unwrap(), None);
    assert_conflict(s.create_role(&role(&a, "dev")).await, "a second role slug dev");

    let s1 = server(&a, "s1");
    let s2 = server(&a, "s2");
    s.create_server(&s1).await.unwrap();
    s.create_server(&s2).await.unwrap();
    let u1 = user(&a, "u1@example.com", None, ROLE_MEMBER, 1);
    let u2 = user(&a, "u2@example.com", None, ROLE_MEMBER, 2);
    s.create_user(&u1).await.unwrap();
    s.create_user(&u2).await.unwrap();

    // Grants: set replaces the role's whole set, and only that role's.
    s.set_role_grants(&a.id, &ops.id, &grant_set(&[(&s1, "read")])).await.unwrap();
    s.set_role_grants(&a.id, &dev.id, &grant_set(&[(&s2, "read"), (&s1, "*")])).await.unwrap();
    assert_eq!(
        s.list_grants(&a.id).await.unwrap(),
        sorted_grants(vec![grant(&ops, &s1, "read"), grant(&dev, &s1, "*"), grant(&dev, &s2, "read")])
    );
    s.set_role_grants(&a.id, &dev.id, &grant_set(&[(&s2, "write")])).await.unwrap();
    assert_eq!(
        s.list_grants(&a.id).await.unwrap(),
        sorted_grants(vec![grant(&ops, &s1, "read"), grant(&dev, &s2, "write")]),
        "dev's old grants are gone, ops' are untouched"
    );

    // Atomic: a failing grant leaves the previous set in place (the delete is rolled back too).
    let before = s.list_grants(&a.id).await.unwrap();
    assert_missing_reference(
        s.set_role_grants(&a.id, &dev.id, &[(s1.id.clone(), "x".into()), (new_id(), "y".into())]).await,
        "a grant on a server that does not exist",
    );
    assert_eq!(s.list_grants(&a.id).await.unwrap(), before, "the failed set_role_grants changed nothing");
    assert_conflict(
        s.set_role_grants(&a.id, &dev.id, &[(s1.id.clone(), "x".into()), (s1.id.clone(), "x".into())]).await,
        "the same grant twice",
    );
    assert_eq!(s.list_grants(&a.id).await.unwrap(), before, "the failed set_role_grants changed nothing");
    assert_missing_reference(
        s.set_role_grants(&a.id, &new_id(), &[(s1.id.clone(), "*".into())]).await,
        "grants of a role that does not exist",
    );

    s.set_role_grants(&a.id, &dev.id, &[]).await.unwrap();
    assert_eq!(s.list_grants(&a.id).await.unwrap(), vec![grant(&ops, &s1, "read")], "an empty set clears dev");

    // Bindings: idempotent bind, unbind says whether there was something.
    s.bind_role(&a.id, &dev.id, &u1.id).await.unwrap();
    s.bind_role(&a.id, &dev.id, &u1.id).await.expect("binding twice is fine");
    assert_eq!(s.list_bindings(&a.id).await.unwrap(), vec![binding(&dev, &u1)], "bound once");
    s.bind_role(&a.id, &ops.id, &u1.id).await.unwrap();
    s.bind_role(&a.id, &dev.id, &u2.id).await.unwrap();
    assert_eq!(
        s.list_bindings(&a.id).await.unwrap(),
        sorted_bindings(vec![binding(&dev, &u1), binding(&ops, &u1), binding(&dev, &u2)])
    );
    assert!(s.unbind_role(&a.id, &dev.id, &u1.id).await.unwrap());
    assert!(!s.unbind_role(&a.id, &dev.id, &u1.id).await.unwrap(), "already unbound");
    assert!(!s.unbind_role(&a.id, &ops.id, &u2.id).await.unwrap(), "never bound");
    assert_eq!(s.list_bindings(&a.id).await.unwrap(), sorted_bindings(vec![binding(&ops, &u1), binding(&dev, &u2)]));
    assert_missing_reference(s.bind_role(&a.id, &dev.id, &new_id()).await, "binding a user that does not exist");
    assert_missing_reference(s.bind_role(&a.id, &new_id(), &u1.id).await, "binding a role that does not exist");
}

fn access_rule(r: &Role, srv: &Server, effect: &str, tools: &str, created_at_ms: i64) -> AccessRule {
    AccessRule {
        tenant_id: r.tenant_id.clone(),
        id: new_id(),
        role_id: r.id.clone(),
        server_id: srv.id.clone(),
        effect: effect.to_owned(),
        tools: tools.to_owned(),
        annotation_json: None,
        params_json: "[]".to_owned(),
        description: String::new(),
        created_at_ms,
        condition_cel: None,
    }
}

fn group(t: &Tenant, slug: &str, created_at_ms: i64) -> UserGroup {
    UserGroup {
        tenant_id: t.id.clone(),
        id: new_id(),
        slug: slug.to_owned(),
        name: format!("Group {slug}"),
        created_at_ms,
    }
}

async fn groups_and_attributes(s: &Store) {
    let a = tenant("a");
    let b = tenant("b");
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();
    let u1 = user(&a, "u1@a.test", None, ROLE_MEMBER, 1);
    let u2 = user(&a, "u2@a.test", None, ROLE_MEMBER, 2);
    let bu = user(&b, "u@b.test", None, ROLE_MEMBER, 3);
    for u in [&u1, &u2, &bu] {
        s.create_user(u).await.unwrap();
    }
    let ops = role(&a, "ops");
    s.create_role(&ops).await.unwrap();
    let oncall = group(&a, "oncall", 1);
    let eng = group(&a, "eng", 2);
    s.create_group(&oncall).await.unwrap();
    s.create_group(&eng).await.unwrap();
    assert_eq!(s.list_groups(&a.id).await.unwrap(), vec![eng.clone(), oncall.clone()], "by slug, every column kept");
    assert!(s.list_groups(&b.id).await.unwrap().is_empty(), "tenant b sees none of a's groups");
    assert_eq!(s.group_by_slug(&a.id, "oncall").await.unwrap(), Some(oncall.clone()));
    assert_eq!(s.group_by_slug(&b.id, "oncall").await.unwrap(), None, "not across tenants");
    assert!(matches!(s.create_group(&group(&a, "oncall", 3)).await, Err(StoreError::Conflict(_))), "slug is unique");
    s.create_group(&group(&b, "oncall", 3)).await.expect("another tenant may use the same slug");

    // Members and roles: idempotent adds, removals say whether there was something.
    s.add_group_member(&a.id, &oncall.id, &u1.id).await.unwrap();
    s.add_group_member(&a.id, &oncall.id, &u1.id).await.expect("adding twice is fine");
    s.add_group_member(&a.id, &eng.id, &u2.id).await.unwrap();
    s.bind_group_role(&a.id, &oncall.id, &ops.id).await.unwrap();
    s.bind_group_role(&a.id, &oncall.id, &ops.id).await.expect("binding twice is fine");
    let member = |g: &UserGroup, u: &User| GroupMember { group_id: g.id.clone(), user_id: u.id.clone() };
    let mut expected = vec![member(&oncall, &u1), member(&eng, &u2)];
    expected.sort_by(|x, y| (&x.group_id, &x.user_id).cmp(&(&y.group_id, &y.user_id)));
    assert_eq!(s.list_group_members(&a.id).await.unwrap(), expected);
    assert_eq!(
        s.list_group_roles(&a.id).await.unwrap(),
        vec![GroupRole { group_id: oncall.id.clone(), role_id: ops.id.clone() }]
    );
    assert!(s.list_group_members(&b.id).await.unwrap().is_empty());
    assert!(s.list_group_roles(&b.id).await.unwrap().is_empty());
    // Cross-tenant attempts: tenant b's user in a's group, a's group under tenant b's id, b's role.
    assert_missing_reference(s.add_group_member(&a.id, &oncall.id, &bu.id).await, "tenant b's user in a's group");
    assert_missing_reference(s.add_group_member(&b.id, &oncall.id, &bu.id).await, "a's group named under tenant b");
    let b_role = role(&b, "ops");
    s.create_role(&b_role).await.unwrap();
    assert_missing_reference(s.bind_group_role(&a.id, &oncall.id, &b_role.id).await, "tenant b's role on a's group");
    assert!(!s.remove_group_member(&b.id, &oncall.id, &u1.id).await.unwrap(), "tenant b cannot remove a's member");
    assert!(!s.delete_group(&b.id, &oncall.id).await.unwrap(), "tenant b cannot delete a's group");
    assert!(s.remove_group_member(&a.id, &eng.id, &u2.id).await.unwrap());
    assert!(!s.remove_group_member(&a.id, &eng.id, &u2.id).await.unwrap(), "already out");
    assert!(!s.unbind_group_role(&a.id, &eng.id, &ops.id).await.unwrap(), "never bound");

    // Attributes: replaced whole, per user, scoped by tenant.
    let pairs = |v: &[(&str, &str)]| v.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<Vec<_>>();
    s.set_user_attributes(&a.id, &u1.id, &pairs(&[("department", "payments"), ("clearance", "high")])).await.unwrap();
    s.set_user_attributes(&a.id, &u2.id, &pairs(&[("department", "support")])).await.unwrap();
    s.set_user_attributes(&a.id, &u1.id, &pairs(&[("clearance", "low")])).await.unwrap();
    let attr = |u: &User, k: &str, v: &str| UserAttribute {
        user_id: u.id.clone(),
        attr_key: k.to_owned(),
        attr_value: v.to_owned(),
    };
    let mut expected = vec![attr(&u1, "clearance", "low"), attr(&u2, "department", "support")];
    expected.sort_by(|x, y| (&x.user_id, &x.attr_key).cmp(&(&y.user_id, &y.attr_key)));
    assert_eq!(s.list_user_attributes(&a.id).await.unwrap(), expected, "the second set replaced u1's first");
    assert!(s.list_user_attributes(&b.id).await.unwrap().is_empty());
    assert_missing_reference(
        s.set_user_attributes(&b.id, &u1.id, &pairs(&[("x", "y")])).await,
        "attributes for a's user under tenant b",
    );

    // Deleting a group takes its memberships and role bindings with it.
    assert!(s.delete_group(&a.id, &oncall.id).await.unwrap());
    assert!(s.list_group_members(&a.id).await.unwrap().is_empty());
    assert!(s.list_group_roles(&a.id).await.unwrap().is_empty());
    assert!(!s.delete_group(&a.id, &oncall.id).await.unwrap(), "already deleted");
}

async fn access_rules_and_policy_mode(s: &Store) {
    let a = tenant("a");
    let b = tenant("b");
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();
    let ops = role(&a, "ops");
    let dev = role(&a, "dev");
    s.create_role(&ops).await.unwrap();
    s.create_role(&dev).await.unwrap();
    let s1 = server(&a, "s1");
    s.create_server(&s1).await.unwrap();

    let constrained = AccessRule {
        annotation_json: Some(r#"{"hint":"readOnlyHint","value":true}"#.to_owned()),
        params_json: r#"[{"param":"path","pathPrefixes":["/tmp"]}]"#.to_owned(),
        description: "tmp only".to_owned(),
        ..access_rule(&ops, &s1, "allow", "*", 2)
    };
    let deny = AccessRule {
        condition_cel: Some("inCidr(client.ip, '10.0.0.0/8')".to_owned()),
        ..access_rule(&ops, &s1, "deny", "drop_*", 1)
    };
    let dev_rule = access_rule(&dev, &s1, "allow", "read", 3);
    for r in [&constrained, &deny, &dev_rule] {
        s.insert_rule(r).await.unwrap();
    }
    let mut expected = vec![deny.clone(), constrained.clone(), dev_rule.clone()];
    expected.sort_by(|x, y| (&x.role_id, x.created_at_ms).cmp(&(&y.role_id, y.created_at_ms)));
    assert_eq!(s.list_rules(&a.id).await.unwrap(), expected, "ordered by role, then creation; every column kept");
    assert!(s.list_rules(&b.id).await.unwrap().is_empty(), "tenant b sees none of a's rules");

    // Only `allow` and `deny` are effects.
    assert!(s.insert_rule(&access_rule(&ops, &s1, "maybe", "x", 4)).await.is_err());
    // A rule cannot point at another tenant's role or server.
    let b_role = role(&b, "ops");
    s.create_role(&b_role).await.unwrap();
    assert_missing_reference(
        s.insert_rule(&AccessRule { role_id: b_role.id.clone(), ..access_rule(&ops, &s1, "allow", "x", 5) }).await,
        "a rule of tenant a on tenant b's role",
    );

    // Delete is tenant-scoped.
    assert!(!s.delete_rule(&b.id, &deny.id).await.unwrap(), "tenant b cannot delete a's rule");
    assert!(s.delete_rule(&a.id, &deny.id).await.unwrap());
    assert!(!s.delete_rule(&a.id, &deny.id).await.unwrap(), "already gone");
    expected.retain(|r| r.id != deny.id);
    assert_eq!(s.list_rules(&a.id).await.unwrap(), expected, "only the deleted rule is gone");

    // Policy mode: stored, read back, scoped.
    let vs = virtual_server(&a, "tools");
    s.create_virtual_server(&vs, &[]).await.unwrap();
    assert!(s.set_policy_mode(&a.id, &vs.id, "monitor").await.unwrap());
    assert!(!s.set_policy_mode(&b.id, &vs.id, "enforce").await.unwrap(), "tenant b cannot change a's mode");
    assert_eq!(s.list_virtual_servers(&a.id).await.unwrap()[0].policy_mode, "monitor");
}

async fn classification_rules_and_labels(s: &Store) {
    let a = tenant("a");
    let b = tenant("b");
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();
    let rule = |t: &Tenant, name: &str, action: &str, at: i64| ClassificationRuleRow {
        tenant_id: t.id.clone(),
        id: new_id(),
        name: name.to_owned(),
        detector: "pattern".to_owned(),
        pattern: Some("ACME-[0-9]{6}".to_owned()),
        action: action.to_owned(),
        scope: "both".to_owned(),
        servers_json: r#"["crm"]"#.to_owned(),
        labels_json: r#"["PII"]"#.to_owned(),
        created_at_ms: at,
    };
    let later = rule(&a, "later", "redact", 2);
    let earlier =
        ClassificationRuleRow { pattern: None, detector: "card_number".to_owned(), ..rule(&a, "earlier", "block", 1) };
    s.insert_classification_rule(&later).await.unwrap();
    s.insert_classification_rule(&earlier).await.unwrap();
    assert_eq!(
        s.list_classification_rules(&a.id).await.unwrap(),
        vec![earlier.clone(), later.clone()],
        "oldest first, every column kept"
    );
    assert!(s.list_classification_rules(&b.id).await.unwrap().is_empty(), "b sees none of a's rules");
    assert!(s.insert_classification_rule(&rule(&a, "bad", "shred", 3)).await.is_err(), "only block, redact, log");
    assert!(!s.delete_classification_rule(&b.id, &later.id).await.unwrap(), "b cannot delete a's rule");
    assert!(s.delete_classification_rule(&a.id, &later.id).await.unwrap());
    assert_eq!(s.list_classification_rules(&a.id).await.unwrap(), vec![earlier]);

    let srv = server(&a, "crm");
    s.create_server(&srv).await.unwrap();
    assert_eq!(s.list_servers(&a.id).await.unwrap()[0].labels_json, "[]", "no labels by default");
    assert!(s.set_server_labels(&a.id, &srv.id, r#"["PCI","eu"]"#).await.unwrap());
    assert!(!s.set_server_labels(&b.id, &srv.id, r#"["x"]"#).await.unwrap(), "b cannot label a's server");
    assert_eq!(s.server_by_slug(&a.id, "crm").await.unwrap().unwrap().labels_json, r#"["PCI","eu"]"#);
}

async fn suspensions(s: &Store) {
    let a = tenant("a");
    let b = tenant("b");
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();
    let sus = |t: &Tenant, kind: &str, target: &str, tool: &str, at: i64| Suspension {
        tenant_id: t.id.clone(),
        id: new_id(),
        kind: kind.to_owned(),
        target_id: target.to_owned(),
        tool: tool.to_owned(),
        reason: format!("{kind} incident"),
        created_by: "sec@example.com".to_owned(),
        created_at_ms: at,
    };
    let user = sus(&a, "user", "u-1", "", 1);
    let tool = sus(&a, "tool", "s-1", "delete_repo", 2);
    s.insert_suspension(&tool).await.unwrap();
    s.insert_suspension(&user).await.unwrap();
    assert_eq!(s.list_suspensions(&a.id).await.unwrap(), vec![user.clone(), tool.clone()], "oldest first");
    assert!(s.list_suspensions(&b.id).await.unwrap().is_empty());
    assert_conflict(s.insert_suspension(&sus(&a, "user", "u-1", "", 3)).await, "the same user twice");
    s.insert_suspension(&sus(&a, "tool", "s-1", "other_tool", 4)).await.expect("another tool of the server");
    s.insert_suspension(&sus(&b, "user", "u-1", "", 5)).await.expect("the same ids in another tenant");
    assert!(s.insert_suspension(&sus(&a, "group", "g", "", 6)).await.is_err(), "only user, server, tool");
    assert!(!s.delete_suspension(&b.id, &user.id).await.unwrap(), "b cannot lift a's suspension");
    assert!(s.delete_suspension(&a.id, &user.id).await.unwrap());
    assert_eq!(s.list_suspensions(&a.id).await.unwrap().len(), 2);
}

async fn rate_limits(s: &Store) {
    let a = tenant("a");
    let b = tenant("b");
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();
    let ops = role(&a, "ops");
    s.create_role(&ops).await.unwrap();
    let srv = server(&a, "s1");
    s.create_server(&srv).await.unwrap();
    let limit = |t: &Tenant, scope: &str, role_id: Option<&str>, at: i64| RateLimitRow {
        tenant_id: t.id.clone(),
        id: new_id(),
        scope: scope.to_owned(),
        role_id: role_id.map(str::to_owned),
        user_id: None,
        server_id: None,
        tool: None,
        requests: 10,
        per_seconds: 60,
        burst: None,
        description: String::new(),
        created_at_ms: at,
    };
    let per_role = RateLimitRow {
        server_id: Some(srv.id.clone()),
        tool: Some("deploy_*".to_owned()),
        burst: Some(3),
        ..limit(&a, "role", Some(&ops.id), 2)
    };
    let tenant_wide = limit(&a, "tenant", None, 1);
    s.insert_rate_limit(&per_role).await.unwrap();
    s.insert_rate_limit(&tenant_wide).await.unwrap();
    assert_eq!(s.list_rate_limits(&a.id).await.unwrap(), vec![tenant_wide.clone(), per_role.clone()], "oldest first");
    assert!(s.list_rate_limits(&b.id).await.unwrap().is_empty());
    assert!(s.insert_rate_limit(&limit(&a, "galaxy", None, 3)).await.is_err(), "only tenant, role, user");
    assert_missing_reference(
        s.insert_rate_limit(&limit(&b, "role", Some(&ops.id), 4)).await,
        "a limit of tenant b on tenant a's role",
    );
    assert!(!s.delete_rate_limit(&b.id, &per_role.id).await.unwrap(), "b cannot delete a's limit");
    assert!(s.delete_rate_limit(&a.id, &per_role.id).await.unwrap());
    assert_eq!(s.list_rate_limits(&a.id).await.unwrap(), vec![tenant_wide]);
}

// ==================================================================== 5. virtual servers

async fn virtual_servers(s: &Store) {
    let a = tenant("a");
    s.create_tenant(&a).await.unwrap();
    let s1 = server(&a, "s1");
    let s2 = server(&a, "s2");
    let s3 = server(&a, "s3");
    for srv in [&s1, &s2, &s3] {
        s.create_server(srv).await.unwrap();
    }

    let tools = virtual_server(&a, "tools");
    s.create_virtual_server(&tools, &[s3.id.clone(), s1.id.clone(), s2.id.clone()]).await.unwrap();
    let docs = virtual_server(&a, "docs");
    s.create_virtual_server(&docs, std::slice::from_ref(&s2.id)).await.unwrap();
    let empty = virtual_server(&a, "empty");
    s.create_virtual_server(&empty, &[]).await.unwrap();

    assert_eq!(s.list_virtual_servers(&a.id).await.unwrap(), vec![docs.clone(), empty.clone(), tools.clone()]);
    let up = |vs: &VirtualServer, srv: &Server, position: i64| VirtualServerUpstream {
        virtual_server_id: vs.id.clone(),
        server_id: srv.id.clone(),
        position,
    };
    let upstreams = s.list_virtual_server_upstreams(&a.id).await.unwrap();
    let of =
        |vs: &VirtualServer| upstreams.iter().filter(|u| u.virtual_server_id == vs.id).cloned().collect::<Vec<_>>();
    assert_eq!(of(&tools), vec![up(&tools, &s3, 0), up(&tools, &s1, 1), up(&tools, &s2, 2)], "in position order");
    assert_eq!(of(&docs), vec![up(&docs, &s2, 0)]);
    assert_eq!(upstreams.len(), 4, "no other links: {upstreams:?}");
    let mut by_vs = upstreams.clone();
    by_vs.sort_by(|x, y| (&x.virtual_server_id, x.position).cmp(&(&y.virtual_server_id, y.position)));
    assert_eq!(upstreams, by_vs, "ordered by virtual server, then position");

    assert_conflict(s.create_virtual_server(&virtual_server(&a, "docs"), &[]).await, "a second slug docs");

    // A missing upstream fails the whole creation: no virtual server row is left behind.
    let broken = virtual_server(&a, "broken");
    assert_missing_reference(
        s.create_virtual_server(&broken, &[s1.id.clone(), new_id()]).await,
        "a virtual server over a server that does not exist",
    );
    assert_eq!(s.list_virtual_servers(&a.id).await.unwrap(), vec![docs, empty, tools], "no `broken` row");
    assert_eq!(s.list_virtual_server_upstreams(&a.id).await.unwrap(), upstreams, "no link of `broken`");
    // And the same virtual server can then be created for real (its id and slug are free).
    s.create_virtual_server(&broken, std::slice::from_ref(&s1.id)).await.expect("the rolled-back id and slug are free");
    let upstreams = s.list_virtual_server_upstreams(&a.id).await.unwrap();
    assert_eq!(upstreams.iter().filter(|u| u.virtual_server_id == broken.id).count(), 1);
}

/// Virtual-server shaping rows (`docs/decisions/0013-virtual-server-shaping.md`): upserts and tenant
/// scoping (another tenant's id finds nothing and deletes nothing).
async fn virtual_server_shaping(s: &Store) {
    use gatehouse_store::{ShapingRow, ToolOverrideRow};
    let (a, b) = (tenant("a"), tenant("b"));
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();
    let (s1, s2) = (server(&a, "s1"), server(&a, "s2"));
    s.create_server(&s1).await.unwrap();
    s.create_server(&s2).await.unwrap();
    let vs = virtual_server(&a, "dev");
    s.create_virtual_server(&vs, &[s1.id.clone(), s2.id.clone()]).await.unwrap();
    let shaping = |strategy: &str| ShapingRow {
        tenant_id: a.id.clone(),
        virtual_server_id: vs.id.clone(),
        conflict_strategy: strategy.into(),
        prefixes_json: format!(r#"{{"{}":"x"}}"#, s2.id),
        updated_at_ms: 1,
    };
    s.set_shaping(&shaping("priority")).await.unwrap();
    s.set_shaping(&shaping("explicit")).await.unwrap();
    assert_eq!(s.list_shaping(&a.id).await.unwrap(), vec![shaping("explicit")], "one row per virtual server");
    assert!(s.set_shaping(&shaping("nonsense")).await.is_err(), "the strategy is checked by the database");
    let o = |server: &Server, tool: &str, json: &str| ToolOverrideRow {
        tenant_id: a.id.clone(),
        virtual_server_id: vs.id.clone(),
        server_id: server.id.clone(),
        tool: tool.into(),
        override_json: json.into(),
        updated_at_ms: 2,
    };
    s.upsert_tool_override(&o(&s2, "search", r#"{"rename":"a"}"#)).await.unwrap();
    s.upsert_tool_override(&o(&s1, "echo", r#"{"rename":"b"}"#)).await.unwrap();
    s.upsert_tool_override(&o(&s2, "search", r#"{"rename":"c"}"#)).await.unwrap();
    let mut expected = vec![o(&s1, "echo", r#"{"rename":"b"}"#), o(&s2, "search", r#"{"rename":"c"}"#)];
    expected.sort_by(|x, y| (&x.server_id, &x.tool).cmp(&(&y.server_id, &y.tool)));
    assert_eq!(s.list_tool_overrides(&a.id).await.unwrap(), expected, "replaced, ordered by server and tool");

    // Another tenant sees and deletes nothing of a's, and cannot point at a's rows.
    assert!(s.list_shaping(&b.id).await.unwrap().is_empty());
    assert!(s.list_tool_overrides(&b.id).await.unwrap().is_empty());
    assert!(!s.delete_tool_override(&b.id, &vs.id, &s1.id, "echo").await.unwrap());
    let foreign = ToolOverrideRow { tenant_id: b.id.clone(), ..o(&s1, "echo", "{}") };
    assert_missing_reference(s.upsert_tool_override(&foreign).await, "an override of another tenant's virtual server");

    assert!(s.delete_tool_override(&a.id, &vs.id, &s1.id, "echo").await.unwrap());
    assert!(!s.delete_tool_override(&a.id, &vs.id, &s1.id, "echo").await.unwrap());
    assert_eq!(s.list_tool_overrides(&a.id).await.unwrap(), vec![o(&s2, "search", r#"{"rename":"c"}"#)]);
}

// ==================================================================== 6. tokens

async fn tokens(s: &Store) {
    let a = tenant("a");
    let b = tenant("b");
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();
    let u = user(&a, "u@example.com", None, ROLE_MEMBER, 1);
    s.create_user(&u).await.unwrap();

    let t1 = token(&u, "laptop", 1_000);
    let t2 = ApiToken { expires_at_ms: Some(9_000_000), ..token(&u, "ci", 3_000) };
    let t3 = token(&u, "script", 2_000);
    for t in [&t1, &t2, &t3] {
        s.create_token(t).await.unwrap();
    }
    assert_eq!(s.list_tokens(&a.id).await.unwrap(), vec![t2.clone(), t3.clone(), t1.clone()], "newest first");
    assert_eq!(s.token_by_hash(&t2.sha256).await.unwrap(), Some(t2.clone()));
    assert_eq!(s.token_by_hash(&"0".repeat(64)).await.unwrap(), None);

    let dup = ApiToken { sha256: t1.sha256.clone(), ..token(&u, "copy", 4_000) };
    assert_conflict(s.create_token(&dup).await, "a second token with the same hash");

    // Another tenant's id revokes nothing.
    assert!(!s.revoke_token(&b.id, &t1.id, 5_000).await.unwrap());
    assert_eq!(s.token_by_hash(&t1.sha256).await.unwrap(), Some(t1.clone()), "still active");

    assert!(s.revoke_token(&a.id, &t1.id, 5_000).await.unwrap());
    assert!(!s.revoke_token(&a.id, &t1.id, 6_000).await.unwrap(), "already revoked");
    assert_eq!(s.token_by_hash(&t1.sha256).await.unwrap(), None, "a revoked token does not authenticate");
    assert!(!s.revoke_token(&a.id, &new_id(), 6_000).await.unwrap(), "no such token");
    assert_eq!(
        s.list_tokens(&a.id).await.unwrap(),
        vec![t2.clone(), t3.clone(), ApiToken { revoked_at_ms: Some(5_000), ..t1 }],
        "revoked tokens stay listed, with the first revocation time"
    );
    assert_eq!(s.token_by_hash(&t3.sha256).await.unwrap(), Some(t3), "the others still work");

    let born_revoked = ApiToken { revoked_at_ms: Some(1), ..token(&u, "old", 500) };
    s.create_token(&born_revoked).await.unwrap();
    assert_eq!(s.token_by_hash(&born_revoked.sha256).await.unwrap(), None);
    assert_missing_reference(
        s.create_token(&ApiToken { user_id: new_id(), ..token(&u, "orphan", 1) }).await,
        "a token of a user that does not exist",
    );
}

// ==================================================================== 7. audit

/// Batches larger than one INSERT statement holds (the store chunks them to stay under each
/// database's bound-parameter limit), with duplicates inside a batch and across retries.
async fn audit_large_batches(s: &Store) {
    let a = tenant("a");
    s.create_tenant(&a).await.unwrap();
    let mut batch: Vec<AuditRow> = (0..2_501).map(|i| audit_event(&a, i, i % 2 == 0)).collect();
    batch.push(batch[1_700].clone());
    assert_eq!(s.insert_audit_events(&batch).await.unwrap(), 2_501, "a duplicate inside the batch counts once");
    assert_eq!(s.insert_audit_events(&batch).await.unwrap(), 0, "a retried batch adds nothing");
    let more: Vec<AuditRow> = (0..1_200).map(|i| audit_event(&a, 10_000 + i, true)).collect();
    let mixed: Vec<AuditRow> = batch[..1_000].iter().cloned().chain(more.iter().cloned()).collect();
    assert_eq!(s.insert_audit_events(&mixed).await.unwrap(), 1_200, "only the new events of a mixed retry");
    let stored = s.list_audit(&a.id, 10_000, None).await.unwrap();
    assert_eq!(stored.len(), 3_701);
    assert_eq!(stored.iter().find(|e| e.id == batch[2_000].id), Some(&batch[2_000]), "rows round-trip intact");
}

async fn audit(s: &Store) {
    let a = tenant("a");
    let b = tenant("b");
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();

    // Five events of a (every other one with all optional fields), interleaved with b's.
    let events: Vec<AuditRow> = (1..=5).map(|i| audit_event(&a, i * 1_000, i % 2 == 1)).collect();
    let b_events: Vec<AuditRow> = (1..=5).map(|i| audit_event(&b, i * 1_000 + 500, true)).collect();

    assert_eq!(s.insert_audit_events(&[]).await.unwrap(), 0);
    assert_eq!(s.insert_audit_events(&events).await.unwrap(), 5);
    assert_eq!(s.insert_audit_events(&events).await.unwrap(), 0, "a retried batch adds nothing");
    assert_eq!(s.insert_audit_events(&b_events).await.unwrap(), 5);
    let late = audit_event(&a, 6_000, true);
    assert_eq!(s.insert_audit_events(&[events[0].clone(), late.clone(), events[4].clone()]).await.unwrap(), 1);

    let mut newest_first: Vec<AuditRow> = events.iter().cloned().chain([late.clone()]).collect();
    newest_first.reverse();
    assert_eq!(s.list_audit(&a.id, 100, None).await.unwrap(), newest_first, "every event of a, newest first");
    assert_eq!(s.list_audit(&a.id, 2, None).await.unwrap(), newest_first[..2].to_vec(), "at most `limit`");
    assert_eq!(s.list_audit(&a.id, 0, None).await.unwrap(), vec![]);
    assert_eq!(
        s.list_audit(&a.id, 100, Some(3_000)).await.unwrap(),
        vec![events[1].clone(), events[0].clone()],
        "strictly older than before_ms"
    );
    assert_eq!(s.list_audit(&a.id, 1, Some(3_001)).await.unwrap(), vec![events[2].clone()], "limit and before_ms");
    assert_eq!(s.list_audit(&a.id, 100, Some(1_000)).await.unwrap(), vec![]);

    let mut b_newest: Vec<AuditRow> = b_events.clone();
    b_newest.reverse();
    assert_eq!(s.list_audit(&b.id, 100, None).await.unwrap(), b_newest);
}

// ==================================================================== 8. bundles

async fn session_keys(s: &Store) {
    let a = tenant("a");
    let b = tenant("b");
    for t in [&a, &b] {
        s.create_tenant(t).await.unwrap();
    }
    let key = |t: &Tenant, id: &str, at: i64| SessionKeyRow {
        tenant_id: t.id.clone(),
        id: id.to_owned(),
        key_b64: format!("key {id} of {}", t.slug),
        created_at_ms: at,
    };
    assert_eq!(s.list_session_keys(&a.id).await.unwrap(), vec![]);
    // Inserted out of id order; listed by id.
    let (a2, a1, b1) = (key(&a, "k2", 2), key(&a, "k1", 5), key(&b, "k1", 1));
    for row in [&a2, &a1, &b1] {
        s.insert_session_key(row).await.unwrap();
    }
    assert_eq!(s.list_session_keys(&a.id).await.unwrap(), vec![a1.clone(), a2.clone()]);
    assert_eq!(s.list_session_keys(&b.id).await.unwrap(), vec![b1.clone()]);
    assert_conflict(s.insert_session_key(&key(&a, "k1", 9)).await, "a second key k1 of tenant a");
    assert!(!format!("{a1:?}").contains("key k1"), "Debug hides the key");

    // Deleting names the tenant: b's k1 survives a's deletion.
    assert!(s.delete_session_key(&a.id, "k1").await.unwrap());
    assert!(!s.delete_session_key(&a.id, "k1").await.unwrap());
    assert_eq!(s.list_session_keys(&a.id).await.unwrap(), vec![a2]);
    assert_eq!(s.list_session_keys(&b.id).await.unwrap(), vec![b1]);
}

async fn session_cutoffs(s: &Store) {
    let a = tenant("a");
    let b = tenant("b");
    for t in [&a, &b] {
        s.create_tenant(t).await.unwrap();
    }
    let cut = |t: &Tenant, user: &str, at: i64, by: &str| SessionCutoffRow {
        tenant_id: t.id.clone(),
        user_id: user.to_owned(),
        not_before_ms: at,
        created_by: by.to_owned(),
    };
    assert_eq!(s.list_session_cutoffs(&a.id).await.unwrap(), vec![]);
    for row in [cut(&a, "u1", 100, "x@a"), cut(&a, "", 50, "x@a"), cut(&b, "u1", 70, "y@b")] {
        s.upsert_session_cutoff(&row).await.unwrap();
    }
    // Listed by user, the tenant-wide cutoff first; a later cutoff moves it, an earlier one does not.
    s.upsert_session_cutoff(&cut(&a, "u1", 200, "z@a")).await.unwrap();
    s.upsert_session_cutoff(&cut(&a, "", 10, "z@a")).await.unwrap();
    assert_eq!(s.list_session_cutoffs(&a.id).await.unwrap(), vec![cut(&a, "", 50, "x@a"), cut(&a, "u1", 200, "z@a")]);
    assert_eq!(s.list_session_cutoffs(&b.id).await.unwrap(), vec![cut(&b, "u1", 70, "y@b")]);
    // Pruning names the tenant: b's cutoff survives a's pruning.
    assert_eq!(s.prune_session_cutoffs(&a.id, 100).await.unwrap(), 1);
    assert_eq!(s.list_session_cutoffs(&a.id).await.unwrap(), vec![cut(&a, "u1", 200, "z@a")]);
    assert_eq!(s.list_session_cutoffs(&b.id).await.unwrap(), vec![cut(&b, "u1", 70, "y@b")]);
}

async fn bundles(s: &Store) {
    let a = tenant("a");
    let b = tenant("b");
    let c = tenant("c");
    for t in [&a, &b, &c] {
        s.create_tenant(t).await.unwrap();
    }
    // Inserted out of order, so the newest is not simply the last inserted.
    let a1 = bundle(&a, "default", 1);
    let a3 = bundle(&a, "default", 3);
    let a2 = bundle(&a, "default", 2);
    let a_canary = bundle(&a, "canary", 9);
    let b5 = bundle(&b, "default", 5);
    let b1 = bundle(&b, "default", 1);
    let c_canary = bundle(&c, "canary", 4);
    for row in [&a1, &a3, &a2, &a_canary, &b5, &b1, &c_canary] {
        s.insert_bundle(row).await.unwrap();
    }

    assert_eq!(s.latest_bundle(&a.id, "default").await.unwrap(), Some(a3.clone()));
    assert_eq!(s.latest_bundle(&a.id, "canary").await.unwrap(), Some(a_canary.clone()));
    assert_eq!(s.latest_bundle(&b.id, "default").await.unwrap(), Some(b5.clone()));
    assert_eq!(s.latest_bundle(&c.id, "default").await.unwrap(), None);
    assert_eq!(s.latest_bundle(&a.id, "nope").await.unwrap(), None);

    let by_tenant = |mut v: Vec<BundleRow>| {
        v.sort_by(|x, y| x.tenant_id.cmp(&y.tenant_id));
        v
    };
    assert_eq!(s.latest_bundles_for_group("default").await.unwrap(), by_tenant(vec![a3.clone(), b5.clone()]));
    assert_eq!(s.latest_bundles_for_group("canary").await.unwrap(), by_tenant(vec![a_canary, c_canary]));
    assert_eq!(s.latest_bundles_for_group("nope").await.unwrap(), vec![]);

    let mut dup = bundle(&a, "default", 2);
    dup.revision = "another revision".into();
    assert_conflict(s.insert_bundle(&dup).await, "a second bundle (a, default, 2)");
    assert_eq!(s.latest_bundle(&a.id, "default").await.unwrap(), Some(a3.clone()));

    let a4 = bundle(&a, "default", 4);
    s.insert_bundle(&a4).await.unwrap();
    assert_eq!(s.latest_bundles_for_group("default").await.unwrap(), by_tenant(vec![a4, b5]));
}

// ==================================================================== 9. tenant isolation

/// Everything a tenant can hold. Objects named `shared` have the same slug / e-mail in every
/// tenant; those named after the tenant exist only there.
struct Holdings {
    tenant: Tenant,
    users: Vec<User>,
    servers: Vec<Server>,
    roles: Vec<Role>,
    grants: Vec<Grant>,
    bindings: Vec<Binding>,
    virtual_servers: Vec<VirtualServer>,
    upstreams: Vec<VirtualServerUpstream>,
    tokens: Vec<ApiToken>,
    audit: Vec<AuditRow>,
    bundle: BundleRow,
}

async fn populate(s: &Store, slug: &str, time_offset: i64) -> Holdings {
    let t = tenant(slug);
    s.create_tenant(&t).await.unwrap();
    let users = vec![
        user(&t, "shared@example.com", Some("p"), ROLE_TENANT_ADMIN, 1 + time_offset),
        user(&t, &format!("{slug}-only@example.com"), Some("p"), ROLE_MEMBER, 2 + time_offset),
    ];
    let servers = vec![server(&t, "shared"), server(&t, &format!("{slug}-only"))];
    let roles = vec![role(&t, "shared"), role(&t, &format!("{slug}-only"))];
    let virtual_servers = vec![virtual_server(&t, "shared"), virtual_server(&t, &format!("{slug}-only"))];
    for u in &users {
        s.create_user(u).await.unwrap();
    }
    for srv in &servers {
        s.create_server(srv).await.unwrap();
    }
    let mut grants = vec![];
    let mut bindings = vec![];
    for r in &roles {
        s.create_role(r).await.unwrap();
        s.set_role_grants(&t.id, &r.id, &grant_set(&[(&servers[0], "*"), (&servers[1], "read")])).await.unwrap();
        grants.extend([grant(r, &servers[0], "*"), grant(r, &servers[1], "read")]);
        for u in &users {
            s.bind_role(&t.id, &r.id, &u.id).await.unwrap();
            bindings.push(binding(r, u));
        }
    }
    let mut upstreams = vec![];
    for vs in &virtual_servers {
        s.create_virtual_server(vs, &[servers[1].id.clone(), servers[0].id.clone()]).await.unwrap();
        upstreams.extend([
            VirtualServerUpstream { virtual_server_id: vs.id.clone(), server_id: servers[1].id.clone(), position: 0 },
            VirtualServerUpstream { virtual_server_id: vs.id.clone(), server_id: servers[0].id.clone(), position: 1 },
        ]);
    }
    let tokens: Vec<ApiToken> = users.iter().map(|u| token(u, "token", 10 + time_offset)).collect();
    for tok in &tokens {
        s.create_token(tok).await.unwrap();
    }
    let audit: Vec<AuditRow> = (1..=3).map(|i| audit_event(&t, i * 1_000 + time_offset, true)).collect();
    assert_eq!(s.insert_audit_events(&audit).await.unwrap(), 3);
    let bundle = bundle(&t, "default", 1 + time_offset);
    s.insert_bundle(&bundle).await.unwrap();
    Holdings { tenant: t, users, servers, roles, grants, bindings, virtual_servers, upstreams, tokens, audit, bundle }
}

fn ids<T>(rows: &[T], id: impl Fn(&T) -> &str) -> BTreeSet<String> {
    rows.iter().map(|r| id(r).to_owned()).collect()
}

/// What every list / lookup of tenant `mine` returns is exactly its own holdings, and none of
/// `theirs`.
async fn assert_sees_only_its_own(s: &Store, mine: &Holdings, theirs: &Holdings) {
    let t = &mine.tenant.id;
    let name = &mine.tenant.slug;

    assert_eq!(ids(&s.list_users(t).await.unwrap(), |u| &u.id), ids(&mine.users, |u| &u.id), "{name}: list_users");
    assert_eq!(
        ids(&s.list_servers(t).await.unwrap(), |x| &x.id),
        ids(&mine.servers, |x| &x.id),
        "{name}: list_servers"
    );
    assert_eq!(ids(&s.list_roles(t).await.unwrap(), |x| &x.id), ids(&mine.roles, |x| &x.id), "{name}: list_roles");
    assert_eq!(s.list_grants(t).await.unwrap(), sorted_grants(mine.grants.clone()), "{name}: list_grants");
    assert_eq!(s.list_bindings(t).await.unwrap(), sorted_bindings(mine.bindings.clone()), "{name}: list_bindings");
    assert_eq!(
        ids(&s.list_virtual_servers(t).await.unwrap(), |x| &x.id),
        ids(&mine.virtual_servers, |x| &x.id),
        "{name}: list_virtual_servers"
    );
    assert_eq!(
        sorted_upstreams(s.list_virtual_server_upstreams(t).await.unwrap()),
        sorted_upstreams(mine.upstreams.clone()),
        "{name}: list_virtual_server_upstreams"
    );
    assert_eq!(ids(&s.list_tokens(t).await.unwrap(), |x| &x.id), ids(&mine.tokens, |x| &x.id), "{name}: list_tokens");
    assert_eq!(
        ids(&s.list_audit(t, 1_000, None).await.unwrap(), |x| &x.id),
        ids(&mine.audit, |x| &x.id),
        "{name}: list_audit"
    );
    assert_eq!(s.latest_bundle(t, "default").await.unwrap(), Some(mine.bundle.clone()), "{name}: latest_bundle");

    // Shared slugs and e-mails resolve to this tenant's object.
    assert_eq!(s.user_by_email(t, "shared@example.com").await.unwrap().as_ref(), Some(&mine.users[0]));
    assert_eq!(s.server_by_slug(t, "shared").await.unwrap().as_ref(), Some(&mine.servers[0]));
    assert_eq!(s.role_by_slug(t, "shared").await.unwrap().as_ref(), Some(&mine.roles[0]));

    // The other tenant's objects are not found with this tenant's id.
    let other = &theirs.tenant.slug;
    for u in &theirs.users {
        assert_eq!(s.user_by_id(t, &u.id).await.unwrap(), None, "{name}: user_by_id of {other}'s {}", u.email);
    }
    assert_eq!(s.user_by_email(t, &format!("{other}-only@example.com")).await.unwrap(), None);
    assert_eq!(s.server_by_slug(t, &format!("{other}-only")).await.unwrap(), None);
    assert_eq!(s.role_by_slug(t, &format!("{other}-only")).await.unwrap(), None);
}

fn sorted_upstreams(mut v: Vec<VirtualServerUpstream>) -> Vec<VirtualServerUpstream> {
    v.sort_by(|x, y| (&x.virtual_server_id, x.position).cmp(&(&y.virtual_server_id, y.position)));
    v
}

async fn tenant_isolation(s: &Store) {
    let a = populate(s, "a", 0).await;
    let b = populate(s, "b", 100).await;

    assert_sees_only_its_own(s, &a, &b).await;
    assert_sees_only_its_own(s, &b, &a).await;

    // Writes with a's id never touch b's rows.
    assert!(!s.update_server_tools(&a.tenant.id, &b.servers[0].id, "[\"x\"]", 1).await.unwrap());
    assert!(!s.revoke_token(&a.tenant.id, &b.tokens[0].id, 1).await.unwrap());
    assert!(!s.unbind_role(&a.tenant.id, &b.roles[0].id, &b.users[0].id).await.unwrap());
    s.set_role_grants(&a.tenant.id, &b.roles[0].id, &[]).await.unwrap();
    assert_eq!(s.server_by_slug(&b.tenant.id, "shared").await.unwrap().as_ref(), Some(&b.servers[0]));
    assert_eq!(s.token_by_hash(&b.tokens[0].sha256).await.unwrap().as_ref(), Some(&b.tokens[0]));
    assert_sees_only_its_own(s, &b, &a).await;
    assert_sees_only_its_own(s, &a, &b).await;

    // The one cross-tenant read finds both (it is how sign-in picks a tenant).
    let candidates = s.sign_in_candidates("shared@example.com").await.unwrap();
    assert_eq!(candidates, vec![a.users[0].clone(), b.users[0].clone()]);
    // A tenant with nothing sees nothing.
    let empty = tenant("empty");
    s.create_tenant(&empty).await.unwrap();
    assert_eq!(s.list_users(&empty.id).await.unwrap(), vec![]);
    assert_eq!(s.list_servers(&empty.id).await.unwrap(), vec![]);
    assert_eq!(s.list_roles(&empty.id).await.unwrap(), vec![]);
    assert_eq!(s.list_grants(&empty.id).await.unwrap(), vec![]);
    assert_eq!(s.list_bindings(&empty.id).await.unwrap(), vec![]);
    assert_eq!(s.list_virtual_servers(&empty.id).await.unwrap(), vec![]);
    assert_eq!(s.list_virtual_server_upstreams(&empty.id).await.unwrap(), vec![]);
    assert_eq!(s.list_tokens(&empty.id).await.unwrap(), vec![]);
    assert_eq!(s.list_audit(&empty.id, 1_000, None).await.unwrap(), vec![]);
    assert_eq!(s.latest_bundle(&empty.id, "default").await.unwrap(), None);
}

/// A tenant's rows can only point at objects of the same tenant: a grant, binding, virtual-server
/// upstream or token naming another tenant's role, server or user is refused like a missing one.
async fn cross_tenant_references(s: &Store) {
    let a = populate(s, "a", 0).await;
    let b = populate(s, "b", 100).await;
    let ta = &a.tenant.id;

    assert_missing_reference(
        s.set_role_grants(ta, &a.roles[0].id, &[(b.servers[0].id.clone(), "*".into())]).await,
        "a's role granted b's server",
    );
    assert_missing_reference(
        s.set_role_grants(ta, &b.roles[0].id, &[(a.servers[0].id.clone(), "*".into())]).await,
        "grants under a's id for b's role",
    );
    assert_missing_reference(s.bind_role(ta, &a.roles[0].id, &b.users[0].id).await, "b's user bound to a's role");
    assert_missing_reference(s.bind_role(ta, &b.roles[0].id, &a.users[0].id).await, "a's user bound to b's role");
    let vs = virtual_server(&a.tenant, "sneaky");
    assert_missing_reference(
        s.create_virtual_server(&vs, &[a.servers[0].id.clone(), b.servers[0].id.clone()]).await,
        "a's virtual server over b's server",
    );
    assert_eq!(s.list_virtual_servers(ta).await.unwrap().len(), a.virtual_servers.len(), "no `sneaky` row");
    let mut tok = token(&a.users[0], "sneaky", 1);
    tok.user_id = b.users[0].id.clone();
    assert_missing_reference(s.create_token(&tok).await, "a token in a for b's user");

    assert_sees_only_its_own(s, &a, &b).await;
    assert_sees_only_its_own(s, &b, &a).await;
}

// ==================================================================== 10. console sessions

fn record(data: &[(&str, serde_json::Value)], expires_in: time::Duration) -> Record {
    Record {
        id: Id::default(),
        data: data.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect::<HashMap<_, _>>(),
        expiry_date: time::OffsetDateTime::now_utc() + expires_in,
    }
}

async fn console_sessions(s: &Store) {
    let hour = time::Duration::hours(1);
    let mut rec = record(&[("user", serde_json::json!({"tenant": "a", "id": "u1"}))], hour);
    s.create(&mut rec).await.unwrap();
    assert_eq!(s.load(&rec.id).await.unwrap(), Some(rec.clone()), "created, then loaded back intact");
    assert_eq!(s.load(&Id::default()).await.unwrap(), None, "an unknown id");

    // create never overwrites: on an id collision it picks a new id.
    let mut clash = record(&[("user", serde_json::json!("intruder"))], hour);
    clash.id = rec.id;
    s.create(&mut clash).await.unwrap();
    assert_ne!(clash.id, rec.id, "create chose another id");
    assert_eq!(s.load(&rec.id).await.unwrap(), Some(rec.clone()), "the first session is untouched");
    assert_eq!(s.load(&clash.id).await.unwrap(), Some(clash.clone()));

    // save updates data and expiry.
    rec.data.insert("csrf".into(), serde_json::json!("token-1"));
    rec.expiry_date += hour;
    s.save(&rec).await.unwrap();
    assert_eq!(s.load(&rec.id).await.unwrap(), Some(rec.clone()), "saved changes are loaded");
    // save of a record never created stores it.
    let fresh = record(&[("n", serde_json::json!(1))], hour);
    s.save(&fresh).await.unwrap();
    assert_eq!(s.load(&fresh.id).await.unwrap(), Some(fresh.clone()));

    // An expired record is not loaded, even though it is still stored.
    let mut expired = record(&[("old", serde_json::json!(true))], -hour);
    s.create(&mut expired).await.unwrap();
    assert_eq!(s.load(&expired.id).await.unwrap(), None, "expired");
    let mut stale = fresh.clone();
    stale.expiry_date = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    s.save(&stale).await.unwrap();
    assert_eq!(s.load(&fresh.id).await.unwrap(), None, "expired by a save");

    // delete.
    s.delete(&clash.id).await.unwrap();
    assert_eq!(s.load(&clash.id).await.unwrap(), None, "deleted");
    s.delete(&clash.id).await.expect("deleting twice is fine");
    s.delete(&Id::default()).await.expect("deleting an unknown id is fine");

    // delete_expired_sessions removes exactly the two expired records.
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    assert_eq!(s.delete_expired_sessions(now_ms).await.unwrap(), 2);
    assert_eq!(s.delete_expired_sessions(now_ms).await.unwrap(), 0);
    assert_eq!(s.load(&rec.id).await.unwrap(), Some(rec.clone()), "the live session survives");
    // Once the clock passes its expiry, it goes too.
    let later_ms = now_ms + 3 * 3_600_000;
    assert_eq!(s.delete_expired_sessions(later_ms).await.unwrap(), 1);
    // It is gone from the table, not just filtered: saving it again with a future expiry is a
    // fresh insert whose data is what we save now.
    let mut back = rec.clone();
    back.data.clear();
    s.save(&back).await.unwrap();
    assert_eq!(s.load(&rec.id).await.unwrap(), Some(back));
}

#[test]
fn with_database_replaces_only_the_path() {
    assert_eq!(with_database("postgres://u@h:1/postgres", "x"), "postgres://u@h:1/x");
    assert_eq!(
        with_database("postgres://u:p@h:1/postgres?sslmode=disable", "x"),
        "postgres://u:p@h:1/x?sslmode=disable"
    );
    assert_eq!(with_database("postgresql://h", "x"), "postgresql://h/x");
    assert_eq!(with_database("postgres://h?sslmode=disable", "x"), "postgres://h/x?sslmode=disable");
}

/// Publishing mode and publications (decision 0015): numbered per tenant, a number taken twice is a
/// conflict, every read is scoped by tenant; the replay query keeps a tenant's own recent tool calls.
async fn publications(s: &Store) {
    use gatehouse_store::{PublicationRow, PublishingModeRow};
    let a = tenant("a");
    let b = tenant("b");
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();
    assert_eq!(s.publishing_mode(&a.id).await.unwrap(), None);
    let mode = PublishingModeRow {
        tenant_id: a.id.clone(),
        mode: "reviewed".into(),
        updated_by: "root@example.com".into(),
        updated_at_ms: 7,
    };
    s.set_publishing_mode(&mode).await.unwrap();
    s.set_publishing_mode(&PublishingModeRow { mode: "automatic".into(), ..mode.clone() }).await.unwrap();
    assert_eq!(s.publishing_mode(&a.id).await.unwrap().unwrap().mode, "automatic");
    assert_eq!(s.publishing_mode(&b.id).await.unwrap(), None);

    let row = |t: &Tenant, number: i64, revision: &str| PublicationRow {
        tenant_id: t.id.clone(),
        number,
        kind: "publish".into(),
        revision: revision.into(),
        content_json: format!("{{\"n\":{number}}}"),
        restores_number: None,
        published_by: Some("root@example.com".into()),
        note: "why".into(),
        published_at_ms: number,
    };
    s.insert_publication(&row(&a, 1, "r1")).await.unwrap();
    s.insert_publication(&PublicationRow { restores_number: Some(1), kind: "rollback".into(), ..row(&a, 2, "r2") })
        .await
        .unwrap();
    assert!(matches!(s.insert_publication(&row(&a, 2, "r3")).await, Err(StoreError::Conflict(_))));
    s.insert_publication(&row(&b, 1, "r1")).await.unwrap();

    let latest = s.latest_publication(&a.id, true).await.unwrap().unwrap();
    assert_eq!((latest.number, latest.restores_number, latest.content_json.as_str()), (2, Some(1), "{\"n\":2}"));
    assert_eq!(s.latest_publication(&a.id, false).await.unwrap().unwrap().content_json, "");
    let listed = s.list_publications(&a.id, 10).await.unwrap();
    assert_eq!(listed.iter().map(|p| p.number).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(s.list_publications(&a.id, 1).await.unwrap().len(), 1);
    assert_eq!(s.publication_by_revision(&a.id, "r1").await.unwrap().unwrap().tenant_id, a.id);
    assert_eq!(s.publication_by_revision(&b.id, "r2").await.unwrap(), None, "a's revision is not b's");

    let mut events = vec![audit_event(&a, 1_000, true), audit_event(&a, 5_000, true), audit_event(&b, 5_000, true)];
    let mut list = audit_event(&a, 6_000, true);
    list.method = "tools/list".into();
    events.push(list);
    s.insert_audit_events(&events).await.unwrap();
    let calls = s.list_tool_calls_since(&a.id, 2_000, 10).await.unwrap();
    assert_eq!(calls.iter().map(|e| (e.tenant_id.as_str(), e.time_ms)).collect::<Vec<_>>(), [(a.id.as_str(), 5_000)]);
    assert_eq!(s.list_tool_calls_since(&a.id, 0, 1).await.unwrap()[0].time_ms, 5_000, "newest first");
}
