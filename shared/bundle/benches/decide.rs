//! Micro-benchmark of policy decisions: nanoseconds per `TenantPolicy::authorize_call` for each
//! path a decision can take, and per `authorize_tool` filtering of a 100-tool list, in a realistic
//! tenant (500 users, 50 roles over 40 servers, plain grants, globs, denies, constrained rules).
//! Plain `std::time`, a few seconds in all: `cargo bench -p gatehouse-bundle --bench decide`.
//!
//! Each case first checks that the decision is the one it claims to measure (the rule that decided),
//! so a change to the policy code cannot quietly make a case measure another path.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use gatehouse_bundle::conditions::RequestFacts;
use gatehouse_bundle::format::{Rule, Server, SessionKey, Token, User, VirtualServer};
use gatehouse_bundle::{Bundle, Content, Decision, Manifest, TenantPolicy};
use gatehouse_core::rules::{Effect, ParamConstraint, PolicyMode};
use serde_json::{Map, Value, json};

const SERVERS: usize = 40;
const ROLES: usize = 50;
const USERS: usize = 500;
/// Servers each role covers.
const SERVERS_PER_ROLE: usize = 8;
/// The roles of the user every case decides for (three roles, like a real engineer's).
/// Roles 7 and 12 cover the same servers in another order, so on most of them the user holds rules of
/// two roles (role 7's first server is role 12's second).
const BENCH_ROLES: [usize; 3] = [7, 12, 41];

/// Runs `f` repeatedly for about `budget` and returns the nanoseconds per call of the fastest of 20
/// slices: the least disturbed by other work on the machine.
fn measure(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..1_000 {
        f();
    }
    let slice = budget / 20;
    let mut best = f64::INFINITY;
    for _ in 0..20 {
        let mut iterations = 0u64;
        let start = Instant::now();
        while start.elapsed() < slice {
            for _ in 0..64 {
                f();
            }
            iterations += 64;
        }
        best = best.min(start.elapsed().as_nanos() as f64 / iterations as f64);
    }
    best
}

fn server_slug(i: usize) -> String {
    format!("srv-{i:02}")
}

fn role_slug(i: usize) -> String {
    format!("role-{i:02}")
}

/// The `k`-th server role `r` covers.
fn server_of(r: usize, k: usize) -> usize {
    (r * 7 + k * 5) % SERVERS
}

fn rule_id(r: usize, k: usize, n: usize) -> String {
    format!("01900000-0000-7000-8000-{r:04}{k:04}{n:04}")
}

fn rule(r: usize, k: usize, n: usize, effect: Effect, tools: &str, params: Vec<ParamConstraint>) -> Rule {
    Rule {
        id: rule_id(r, k, n),
        server: server_slug(server_of(r, k)),
        effect,
        tools: tools.into(),
        only: None,
        annotation: None,
        params,
        description: format!("rule {n} of {} on {}", role_slug(r), server_slug(server_of(r, k))),
        condition: None,
    }
}

/// Role `r` on each of its servers grants `get_issue`, `get_file`, `list_issue`, `list_file` by
/// name; on its first server it also allows `search_*` and denies `delete_*`; on its second it
/// allows `write_file` inside its team's directory or `/srv/shared`; on its third it allows
/// `run_query` on `analytics_*` databases with at most 1,000 rows; on its fourth it allows `read_*`.
fn role(r: usize) -> gatehouse_bundle::format::Role {
    let mut grants = BTreeMap::new();
    for k in 0..SERVERS_PER_ROLE {
        grants.insert(
            server_slug(server_of(r, k)),
            vec!["get_file".into(), "get_issue".into(), "list_file".into(), "list_issue".into()],
        );
    }
    let mut rules = vec![
        rule(r, 0, 0, Effect::Allow, "search_*", vec![]),
        rule(r, 0, 1, Effect::Deny, "delete_*", vec![]),
        rule(
            r,
            1,
            2,
            Effect::Allow,
            "write_file",
            vec![ParamConstraint {
                param: "path".into(),
                path_prefixes: Some(vec![format!("/srv/data/team-{r:02}"), "/srv/shared".into()]),
                ..Default::default()
            }],
        ),
        rule(
            r,
            2,
            3,
            Effect::Allow,
            "run_query",
            vec![
                ParamConstraint {
                    param: "database".into(),
                    pattern: Some("analytics_[a-z]+".into()),
                    ..Default::default()
                },
                ParamConstraint { param: "limit".into(), optional: true, max: Some(1000.0), ..Default::default() },
            ],
        ),
        rule(r, 3, 4, Effect::Allow, "read_*", vec![]),
    ];
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    gatehouse_bundle::format::Role { slug: role_slug(r), grants, rules }
}

fn bundle() -> Bundle {
    // A small deterministic generator, so every run builds the same tenant.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let users = (0..USERS)
        .map(|u| {
            let roles = if u == 0 {
                BENCH_ROLES.iter().map(|r| role_slug(*r)).collect()
            } else {
                (0..1 + next(3)).map(|_| role_slug(next(ROLES))).collect()
            };
            User {
                id: format!("user-{u:04}"),
                email: format!("user{u}@acme.test"),
                roles,
                groups: if u % 10 == 0 { vec!["oncall".into()] } else { vec![] },
                attributes: BTreeMap::new(),
            }
        })
        .collect();
    // Parts of the format this benchmark does not exercise (classification, ...) stay empty.
    let mut content = Content {
        tenant: "acme".into(),
        users,
        tokens: (0..USERS)
            .map(|u| Token {
                sha256: format!("{u:064x}"),
                id: format!("tok-{u:04}"),
                user_id: format!("user-{u:04}"),
                expires_at_ms: None,
            })
            .collect(),
        servers: (0..SERVERS)
            .map(|s| Server {
                slug: server_slug(s),
                url: format!("https://{}.mcp.example/mcp", server_slug(s)),
                labels: vec![],
                transport: Default::default(),
            })
            .collect(),
        roles: (0..ROLES).map(role).collect(),
        virtual_servers: vec![VirtualServer {
            slug: "dev".into(),
            upstreams: (0..SERVERS).map(server_slug).collect(),
            mode: PolicyMode::Enforce,
            conflict_strategy: Default::default(),
            prefixes: vec![],
            overrides: vec![],
        }],
        session_keys: vec![SessionKey {
            id: "k1".into(),
            key_b64: "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".into(),
            created_at_ms: 1,
        }],
        ..Default::default()
    };
    content.normalize();
    Bundle {
        manifest: Manifest {
            schema_version: gatehouse_bundle::SCHEMA_VERSION,
            tenant: "acme".into(),
            group: "default".into(),
            revision: content.revision(),
            sequence: 1,
            compiled_at_ms: 0,
            key_id: "bench".into(),
        },
        content,
    }
}

fn args(v: Value) -> Map<String, Value> {
    v.as_object().expect("an object").clone()
}

/// 100 tool names: 10 verbs × 10 objects.
fn hundred_tools() -> Vec<String> {
    let verbs = ["get", "list", "search", "create", "update", "delete", "export", "import", "read", "write"];
    let objects = ["issue", "file", "user", "repo", "branch", "commit", "comment", "label", "release", "workflow"];
    verbs.iter().flat_map(|v| objects.iter().map(move |o| format!("{v}_{o}"))).collect()
}

fn main() {
    let budget = Duration::from_millis(250);
    let b = bundle();
    let started = Instant::now();
    let policy = TenantPolicy::build(&b).expect("the bundle is valid");
    let build = started.elapsed();
    let rules: usize = b.content.roles.iter().map(|r| r.rules.len()).sum();
    let grants: usize = b.content.roles.iter().flat_map(|r| r.grants.values()).map(Vec::len).sum();
    println!(
        "tenant: {USERS} users, {ROLES} roles ({grants} plain grants, {rules} rules), {SERVERS} servers; \
         bundle {} B; TenantPolicy::build {:.1} ms",
        b.content.canonical_bytes().len(),
        build.as_secs_f64() * 1e3
    );

    let user = "user-0000";
    let r = BENCH_ROLES[0];
    let first = server_slug(server_of(r, 0));
    let second = server_slug(server_of(r, 1));
    let third = server_slug(server_of(r, 2));
    let unrelated = (0..SERVERS)
        .map(server_slug)
        .find(|s| BENCH_ROLES.iter().all(|r| (0..SERVERS_PER_ROLE).all(|k| server_slug(server_of(*r, k)) != *s)))
        .expect("some server none of the user's roles covers");

    struct Case {
        name: &'static str,
        server: String,
        tool: &'static str,
        arguments: Map<String, Value>,
        /// The rule that must decide, and whether it allows.
        expect: (String, bool),
    }
    let cases = vec![
        Case {
            name: "plain grant hit",
            server: first.clone(),
            tool: "get_issue",
            arguments: args(json!({ "owner": "acme", "repo": "payments", "issue_number": 4211 })),
            expect: (format!("grant:{}:{first}:get_issue", role_slug(r)), true),
        },
        Case {
            name: "glob rule hit (search_*)",
            server: first.clone(),
            tool: "search_code",
            arguments: args(json!({ "query": "checkout timeout", "per_page": 30 })),
            expect: (rule_id(r, 0, 0), true),
        },
        Case {
            name: "deny rule hit (delete_*)",
            server: first.clone(),
            tool: "delete_repo",
            arguments: args(json!({ "owner": "acme", "repo": "payments" })),
            expect: (rule_id(r, 0, 1), false),
        },
        Case {
            name: "constrained allow: path prefix",
            server: second.clone(),
            tool: "write_file",
            arguments: args(json!({
                "path": format!("/srv/data/team-{r:02}/reports/2024/q3-summary.csv"),
                "content": "region,revenue\neu,1200\nus,3400\n",
            })),
            expect: (rule_id(r, 1, 2), true),
        },
        Case {
            name: "constrained allow: pattern + max",
            server: third.clone(),
            tool: "run_query",
            arguments: args(json!({
                "database": "analytics_sales",
                "sql": "select region, sum(amount) from orders group by region",
                "limit": 500,
            })),
            expect: (rule_id(r, 2, 3), true),
        },
        Case {
            name: "constrained refusal: path outside",
            server: second.clone(),
            tool: "write_file",
            arguments: args(json!({ "path": "/srv/data/../../etc/passwd", "content": "x" })),
            expect: (rule_id(r, 1, 2), false),
        },
        Case {
            name: "default deny, granted server",
            server: first.clone(),
            tool: "create_issue",
            arguments: args(json!({ "owner": "acme", "repo": "payments", "title": "x" })),
            expect: ("default-deny".into(), false),
        },
        Case {
            name: "default deny, server not granted",
            server: unrelated.clone(),
            tool: "get_issue",
            arguments: args(json!({ "owner": "acme", "repo": "payments", "issue_number": 1 })),
            expect: ("default-deny".into(), false),
        },
    ];

    println!();
    println!("| authorize_call (user with 3 roles) | ns/decision | decided by |");
    println!("|---|---:|---|");
    // As the gateway decides: with the request's facts for rule conditions (built per request;
    // nothing in them is computed unless a condition is evaluated).
    let ip = Some("10.1.2.3".parse().expect("an address"));
    for c in &cases {
        let d = policy.authorize_call_in(
            &RequestFacts::new(ip, Some("bench"), None),
            user,
            &c.server,
            c.tool,
            Some(&c.arguments),
        );
        assert_eq!((d.rule(), d.is_allow()), (c.expect.0.as_str(), c.expect.1), "{}: {d:?}", c.name);
        let ns = measure(budget, || {
            black_box(policy.authorize_call_in(
                &RequestFacts::new(black_box(ip), Some("bench"), None),
                black_box(user),
                black_box(&c.server),
                black_box(c.tool),
                Some(black_box(&c.arguments)),
            ));
        });
        let by = match &d {
            Decision::Allow { rule, .. } => format!("allow, {rule}"),
            Decision::Deny { rule, .. } => format!("deny, {rule}"),
        };
        println!("| {} | {ns:.0} | {by} |", c.name);
    }

    // tools/list: the gateway asks authorize_tool once per tool of the upstream's list.
    let tools = hundred_tools();
    let decisions: Vec<Decision> = tools.iter().map(|t| policy.authorize_tool(user, &first, t)).collect();
    let count = |f: &dyn Fn(&Decision) -> bool| decisions.iter().filter(|d| f(d)).count();
    let allowed = count(&|d| d.is_allow());
    let by_grant = count(&|d| d.is_allow() && d.rule().starts_with("grant:"));
    let constrained = count(&|d| matches!(d, Decision::Allow { constrained: true, .. }));
    let default_deny = count(&|d| d.rule() == "default-deny");
    let denied = count(&|d| !d.is_allow() && d.rule() != "default-deny");
    // 4 plain grants, 10 `search_*`, `write_file` (role 12's constrained rule), 10 `delete_*` denied.
    assert_eq!((allowed, by_grant, constrained, denied), (15, 4, 1, 10), "{decisions:?}");
    let ns = measure(budget, || {
        let kept =
            tools.iter().filter(|t| policy.authorize_tool(black_box(user), black_box(&first), t).is_allow()).count();
        black_box(kept);
    });
    println!();
    println!("| authorize_tool over a 100-tool tools/list | ns/list | ns/tool |");
    println!("|---|---:|---:|");
    println!(
        "| {allowed} of 100 kept ({by_grant} grants, {} by glob, {constrained} constrained), {denied} by deny rule, \
         {default_deny} default deny | {ns:.0} | {:.1} |",
        allowed - by_grant - constrained,
        ns / 100.0
    );

    conditions(budget);
}

/// Rules with CEL conditions (`docs/decisions/0012-groups-and-conditions.md`): the same tenant plus,
/// on role 7's first server, an allow of `export_*` from 10/8 before 22:00 in Berlin and a deny of
/// `import_*` unless the user is in the `oncall` group. A condition is evaluated per decision
/// that reaches its rule; a decision that reaches none pays nothing.
fn conditions(budget: Duration) {
    let mut b = bundle();
    let r = BENCH_ROLES[0];
    let first = server_slug(server_of(r, 0));
    let role = b.content.roles.iter_mut().find(|x| x.slug == role_slug(r)).expect("role 7");
    role.rules.push(Rule {
        condition: Some("inCidr(client.ip, '10.0.0.0/8') && request.time.getHours('Europe/Berlin') < 22".into()),
        ..rule(r, 0, 90, Effect::Allow, "export_*", vec![])
    });
    role.rules.push(Rule {
        condition: Some("!('oncall' in user.groups)".into()),
        ..rule(r, 0, 91, Effect::Deny, "import_*", vec![])
    });
    b.content.normalize();
    let started = Instant::now();
    let policy = TenantPolicy::build(&b).expect("the bundle is valid");
    println!();
    println!(
        "conditions: TenantPolicy::build {:.1} ms with 2 conditional rules",
        started.elapsed().as_secs_f64() * 1e3
    );
    println!();
    println!("| authorize_call_in with conditions | ns/decision | decided by |");
    println!("|---|---:|---|");
    let user = "user-0000";
    let noon = Some(1_795_782_600_000); // a Friday, 13:30 in Berlin
    let none = Map::new();
    /// (name, client address, tool, request time, the rule that must decide, allowed)
    type Case<'a> = (&'a str, &'a str, &'a str, Option<i64>, String, bool);
    let cases: [Case; 5] = [
        (
            "plain grant hit (tenant has conditions)",
            "10.1.2.3",
            "get_issue",
            None,
            format!("grant:{}:{first}:get_issue", role_slug(r)),
            true,
        ),
        ("conditional allow, condition true", "10.1.2.3", "export_issue", noon, rule_id(r, 0, 90), true),
        (
            "conditional allow, condition false (192.168.1.9)",
            "192.168.1.9",
            "export_issue",
            noon,
            "default-deny".into(),
            false,
        ),
        (
            "conditional deny not applying (user in oncall)",
            "10.1.2.3",
            "import_issue",
            noon,
            "default-deny".into(),
            false,
        ),
        ("glob rule hit after a conditional deny", "10.1.2.3", "search_code", noon, rule_id(r, 0, 0), true),
    ];
    for (name, ip, tool, time, expect, allowed) in cases {
        let ip = Some(ip.parse().expect("an address"));
        let d = policy.authorize_call_in(&RequestFacts::new(ip, Some("bench"), time), user, &first, tool, Some(&none));
        assert_eq!((d.rule(), d.is_allow()), (expect.as_str(), allowed), "{name}: {d:?}");
        let ns = measure(budget, || {
            black_box(policy.authorize_call_in(
                &RequestFacts::new(black_box(ip), Some("bench"), time),
                black_box(user),
                black_box(&first),
                black_box(tool),
                Some(black_box(&none)),
            ));
        });
        println!("| {name} | {ns:.0} | {} |", d.rule());
    }
}
