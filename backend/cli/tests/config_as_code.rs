//! Policy as code end to end: `gatehouse serve` with `@modelcontextprotocol/server-everything` as a
//! registered upstream, and the real binary's `export` and `apply` talking to it over GraphQL with a
//! tenant admin's API token. Export, edit, dry run (the diff, nothing changed), apply (the change is
//! there), apply again ("no changes"), then the ways it refuses: an unknown key, a rule the control
//! plane refuses (its error, naming the field, with the rule it belongs to), what the API cannot do
//! yet, another tenant's token.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

mod common;

use common::*;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs the real `gatehouse` binary with `GATEHOUSE_TOKEN` set to `token`.
async fn gatehouse(args: &[&str], token: &str) -> Run {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(args)
            .env("GATEHOUSE_TOKEN", token)
            .env("RUST_LOG", "warn")
            .output(),
    )
    .await
    .expect("gatehouse hung")
    .unwrap();
    let run = Run {
        ok: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    eprintln!("$ gatehouse {}\n{}{}", args.join(" "), run.stdout, run.stderr);
    run
}

fn write_yaml(path: &Path, v: &Value) {
    std::fs::write(path, serde_norway::to_string(v).unwrap()).unwrap();
}

const STATE: &str = r#"{
  roles(tenant: "acme") { slug description grants { server tool } members
    rules { server effect tools annotation { hint value } params { param pattern } description } }
  virtualServers(tenant: "acme") { slug name upstreams mode }
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_edit_dry_run_apply_and_apply_again() {
    let (_everything, upstream_url) = start_everything();
    let gh = start_gatehouse();
    let admin = Gql::sign_in(&gh.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;

    // --- A tenant set up by hand, as through the console.
    admin.ok(r#"mutation { createTenant(slug: "acme", name: "Acme") { slug } }"#, json!({})).await;
    admin
        .ok(
            "mutation($url: String!) { registerServer(tenant: \"acme\", slug: \"everything\", name: \"Everything\", url: $url) { slug } }",
            json!({ "url": upstream_url }),
        )
        .await;
    admin
        .ok(r#"mutation { createRole(tenant: "acme", slug: "ops", description: "Operators") { slug } }"#, json!({}))
        .await;
    admin
        .ok(
            r#"mutation { setRoleGrants(tenant: "acme", role: "ops", grants: [{server: "everything", tool: "get-sum"}]) { slug } }"#,
            json!({}),
        )
        .await;
    let deny = admin
        .ok(
            r#"mutation { addRule(tenant: "acme", role: "ops", rule: {server: "everything", effect: DENY, tools: "get-env", description: "it shows the server's environment"}) { id } }"#,
            json!({}),
        )
        .await;
    let deny_id = deny["addRule"]["id"].as_str().unwrap().to_owned();
    admin
        .ok(
            r#"mutation { createUser(tenant: "acme", email: "alice@acme.test", displayName: "Alice") { id } }"#,
            json!({}),
        )
        .await;
    admin
        .ok(
            r#"mutation { createUser(tenant: "acme", email: "ops@acme.test", displayName: "Ops", consoleRole: "admin") { id } }"#,
            json!({}),
        )
        .await;
    admin
        .ok(r#"mutation { bindRole(tenant: "acme", role: "ops", email: "alice@acme.test") { slug } }"#, json!({}))
        .await;
    admin
        .ok(
            r#"mutation { createVirtualServer(tenant: "acme", slug: "dev", name: "Dev", servers: ["everything"]) { slug } }"#,
            json!({}),
        )
        .await;
    let token = admin
        .ok(r#"mutation { createToken(tenant: "acme", userEmail: "ops@acme.test", name: "ci") { secret } }"#, json!({}))
        .await;
    let token = token["createToken"]["secret"].as_str().unwrap().to_owned();
    let url = gh.control.as_str();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    let policy_arg = policy.to_str().unwrap();

    // --- Export: the tenant's policy as YAML, servers and users by reference.
    let exported = gatehouse(&["export", "--url", url, "--tenant", "acme"], &token).await;
    assert!(exported.ok, "{}", exported.stderr);
    assert!(exported.stdout.starts_with("# Gatehouse access policy of tenant acme"), "{}", exported.stdout);
    let mut file: Value = serde_norway::from_str(&exported.stdout).unwrap();
    assert_eq!(
        file,
        json!({
            "version": 1,
            "tenant": "acme",
            "roles": [{
                "slug": "ops",
                "description": "Operators",
                "grants": { "everything": ["get-sum"] },
                "rules": [{ "server": "everything", "effect": "deny", "tools": "get-env",
                            "description": "it shows the server's environment" }],
                "members": ["alice@acme.test"],
            }],
            "virtualServers": [{ "slug": "dev", "name": "Dev", "upstreams": ["everything"], "mode": "enforce",
                                 "conflictStrategy": "auto" }],
            "groups": [],
            "userAttributes": {},
        })
    );
    // `-o` writes the same thing to a file.
    let out = dir.path().join("exported.yaml");
    let written = gatehouse(&["export", "--url", url, "--tenant", "acme", "-o", out.to_str().unwrap()], &token).await;
    assert!(written.ok, "{}", written.stderr);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), exported.stdout);

    // --- Edit: a new role with grants, rules and a member; ops changes its grants and loses its
    // deny rule; dev goes to monitor mode.
    file["roles"][0]["grants"] = json!({ "everything": ["echo"] });
    file["roles"][0]["rules"] = json!([]);
    file["roles"].as_array_mut().unwrap().push(json!({
        "slug": "data-analyst",
        "description": "Reads data",
        "grants": { "everything": ["get-sum"] },
        "rules": [
            { "server": "everything", "effect": "allow", "tools": "get-*",
              "annotation": { "hint": "readOnlyHint", "value": true } },
            { "server": "everything", "effect": "deny", "tools": "get-env", "description": "no env" },
        ],
        "members": ["alice@acme.test"],
    }));
    file["virtualServers"][0]["mode"] = json!("monitor");
    write_yaml(&policy, &file);
    let diff = [
        "~ role ops: grants everything: +echo -get-sum".to_owned(),
        format!("- role ops: rule {deny_id} (deny get-env of everything: \"it shows the server's environment\")"),
        "+ role data-analyst (\"Reads data\")".to_owned(),
        "+ role data-analyst: grants everything: +get-sum".to_owned(),
        "+ role data-analyst: rule (allow get-* of everything where readOnlyHint=true)".to_owned(),
        "+ role data-analyst: rule (deny get-env of everything: \"no env\")".to_owned(),
        "+ role data-analyst: member alice@acme.test".to_owned(),
        "~ virtual server dev: mode enforce → monitor".to_owned(),
    ]
    .join("\n");

    // --- Dry run: the diff, and nothing changes.
    let before = admin.ok(STATE, json!({})).await;
    let dry = gatehouse(&["apply", "-f", policy_arg, "--url", url, "--tenant", "acme", "--dry-run"], &token).await;
    assert!(dry.ok, "{}", dry.stderr);
    assert_eq!(dry.stdout, format!("{diff}\ndry run: 9 change(s) not applied\n"));
    assert!(!dry.stderr.contains("error") && !dry.stderr.contains("warning: role"), "{}", dry.stderr);
    assert_eq!(admin.ok(STATE, json!({})).await, before, "a dry run changes nothing");

    // --- Apply: the same diff, and the control plane has it.
    let applied = gatehouse(&["apply", "-f", policy_arg, "--url", url, "--tenant", "acme"], &token).await;
    assert!(applied.ok, "{}", applied.stderr);
    assert_eq!(applied.stdout, format!("{diff}\napplied 9 change(s)\n"));
    let state = admin.ok(STATE, json!({})).await;
    let role = |slug: &str| state["roles"].as_array().unwrap().iter().find(|r| r["slug"] == slug).unwrap().clone();
    let ops = role("ops");
    assert_eq!(ops["grants"], json!([{ "server": "everything", "tool": "echo" }]));
    assert_eq!(ops["rules"], json!([]));
    assert_eq!(ops["members"], json!(["alice@acme.test"]));
    let analyst = role("data-analyst");
    assert_eq!(analyst["description"], "Reads data");
    assert_eq!(analyst["grants"], json!([{ "server": "everything", "tool": "get-sum" }]));
    assert_eq!(analyst["members"], json!(["alice@acme.test"]));
    let mut rules: Vec<Value> = analyst["rules"].as_array().unwrap().clone();
    rules.sort_by_key(|r| r["effect"].as_str().unwrap().to_owned());
    assert_eq!(
        rules,
        vec![
            json!({ "server": "everything", "effect": "ALLOW", "tools": "get-*",
                    "annotation": { "hint": "READ_ONLY", "value": true }, "params": [], "description": "" }),
            json!({ "server": "everything", "effect": "DENY", "tools": "get-env", "annotation": null,
                    "params": [], "description": "no env" }),
        ]
    );
    assert_eq!(state["virtualServers"][0]["mode"], "MONITOR");
    // The gateway's evaluator agrees: the new deny wins over the annotation allow.
    let explained = admin
        .ok(
            r#"{ explainCall(tenant: "acme", userEmail: "alice@acme.test", server: "everything", tool: "get-env") { allowed } }"#,
            json!({}),
        )
        .await;
    assert_eq!(explained["explainCall"]["allowed"], false);

    // --- Apply again: nothing to do.
    let again = gatehouse(&["apply", "-f", policy_arg, "--url", url, "--tenant", "acme"], &token).await;
    assert!(again.ok, "{}", again.stderr);
    assert_eq!(again.stdout, "no changes\n");
    // A fresh export describes the same policy (rules may come back in another order: they are
    // matched by content).
    let reexported =
        gatehouse(&["export", "--url", url, "--tenant", "acme", "-o", out.to_str().unwrap()], &token).await;
    assert!(reexported.ok);
    let same = gatehouse(&["apply", "-f", out.to_str().unwrap(), "--url", url, "--dry-run"], &token).await;
    assert!(same.ok, "{}", same.stderr);
    assert_eq!(same.stdout, "no changes\n", "the tenant comes from the file when --tenant is not given");

    // --- An unknown key is refused before anything is read or changed, with its line.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "tenant: acme\nroles:\n  - slug: ops\n    grantz:\n      everything: [echo]\n").unwrap();
    let refused = gatehouse(&["apply", "-f", bad.to_str().unwrap(), "--url", url, "--tenant", "acme"], &token).await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("bad.yaml: roles[0]: unknown field `grantz`, expected one of")
            && refused.stderr.contains("at line 4 column 5"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("nothing was applied"), "{}", refused.stderr);
    assert_eq!(refused.stdout, "");

    // --- A rule the control plane refuses: its error, naming the field, with the rule it belongs
    // to; non-zero exit; nothing stored.
    let mut with_bad_rule = file.clone();
    with_bad_rule["roles"][0]["rules"] = json!([{ "server": "everything", "effect": "allow", "tools": "echo",
        "params": [{ "param": "message", "pattern": "(" }] }]);
    write_yaml(&bad, &with_bad_rule);
    let refused = gatehouse(&["apply", "-f", bad.to_str().unwrap(), "--url", url, "--tenant", "acme"], &token).await;
    assert!(!refused.ok);
    assert_eq!(refused.stdout, "+ role ops: rule (allow echo of everything with message(pattern \"(\"))\n");
    assert!(
        refused.stderr.contains(
            "error: role ops: rule (allow echo of everything with message(pattern \"(\")): INVALID_INPUT: params[0].pattern: not a valid regular expression"
        ),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("stopped: 0 of 1 change(s) were applied"), "{}", refused.stderr);
    assert_eq!(admin.ok(STATE, json!({})).await, state, "nothing changed");

    // --- What the API cannot do yet is an error naming the item, and stops everything; what is
    // live but not in the file is a warning.
    let mut impossible = file.clone();
    impossible["virtualServers"][0]["name"] = json!("Development");
    impossible["roles"][0]["grants"] = json!({ "everything": ["echo", "get-env"] });
    impossible["roles"].as_array_mut().unwrap().truncate(1);
    write_yaml(&bad, &impossible);
    let refused = gatehouse(&["apply", "-f", bad.to_str().unwrap(), "--url", url, "--tenant", "acme"], &token).await;
    assert!(!refused.ok);
    assert_eq!(refused.stdout, "~ role ops: grants everything: +get-env\n");
    assert!(
        refused
            .stderr
            .contains("warning: role data-analyst: exists but is not in the file; the API cannot delete roles yet"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("error: virtual server dev: name: the API cannot rename a virtual server yet"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("1 error(s): nothing was applied"), "{}", refused.stderr);
    assert_eq!(admin.ok(STATE, json!({})).await, state, "nothing changed");

    // --- The file's tenant and --tenant must agree.
    let refused = gatehouse(&["apply", "-f", policy_arg, "--url", url, "--tenant", "globex"], &token).await;
    assert!(!refused.ok);
    assert!(refused.stderr.contains("the file describes tenant acme, not globex"), "{}", refused.stderr);

    // --- Another tenant's admin token: acme is not found, for export and apply alike.
    admin.ok(r#"mutation { createTenant(slug: "globex", name: "Globex") { slug } }"#, json!({})).await;
    admin
        .ok(
            r#"mutation { createUser(tenant: "globex", email: "root@globex.test", displayName: "Root", consoleRole: "admin") { id } }"#,
            json!({}),
        )
        .await;
    let other = admin
        .ok(
            r#"mutation { createToken(tenant: "globex", userEmail: "root@globex.test", name: "ci") { secret } }"#,
            json!({}),
        )
        .await;
    let other = other["createToken"]["secret"].as_str().unwrap().to_owned();
    let mut grab = file.clone();
    grab["roles"][0]["grants"] = json!({ "everything": ["*"] });
    write_yaml(&bad, &grab);
    let refused = gatehouse(&["apply", "-f", bad.to_str().unwrap(), "--url", url, "--tenant", "acme"], &other).await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("error: reading the live policy of tenant acme: NOT_FOUND: "),
        "{}",
        refused.stderr
    );
    assert_eq!(refused.stdout, "");
    let refused = gatehouse(&["export", "--url", url, "--tenant", "acme"], &other).await;
    assert!(!refused.ok);
    assert!(refused.stderr.contains("NOT_FOUND"), "{}", refused.stderr);
    assert_eq!(refused.stdout, "");
    assert_eq!(admin.ok(STATE, json!({})).await, state, "nothing changed");

    // --- No token: a clear error, not a request.
    let refused = gatehouse(&["export", "--url", url, "--tenant", "acme"], "").await;
    assert!(!refused.ok);
    assert!(refused.stderr.contains("set GATEHOUSE_TOKEN to an API token"), "{}", refused.stderr);

    groups_attributes_and_shaping(&admin, url, &token, dir.path()).await;
}

const SHAPED: &str = r#"{
  groups(tenant: "acme") { slug name members roles }
  alice: userAttributes(tenant: "acme", email: "alice@acme.test") { key value }
  ops: userAttributes(tenant: "acme", email: "ops@acme.test") { key value }
  virtualServers(tenant: "acme") { slug conflictStrategy prefixes { server prefix }
    overrides { server tool rename description fixed { name value } hidden enums { name values } } }
}"#;

/// Groups, user attributes and virtual-server shaping (0012, 0013) through export and apply, on
/// the tenant the main test left (roles ops and data-analyst, virtual server dev in monitor mode).
async fn groups_attributes_and_shaping(admin: &Gql, url: &str, token: &str, dir: &Path) {
    // --- Set up by hand, as through the console.
    for m in [
        r#"mutation { createGroup(tenant: "acme", slug: "oncall", name: "On call") { slug } }"#,
        r#"mutation { addGroupMember(tenant: "acme", group: "oncall", email: "alice@acme.test") { slug } }"#,
        r#"mutation { bindGroupRole(tenant: "acme", group: "oncall", role: "ops") { slug } }"#,
        r#"mutation { setUserAttributes(tenant: "acme", email: "alice@acme.test", attributes: [{key: "department", value: "eng"}]) { key } }"#,
        r#"mutation { setConflictStrategy(tenant: "acme", virtualServer: "dev", strategy: PREFIX, prefixes: [{server: "everything", prefix: "ev"}]) { slug } }"#,
        r#"mutation { setToolOverride(tenant: "acme", virtualServer: "dev", override: {server: "everything", tool: "echo", rename: "say", fixed: [{name: "message", value: "hi"}]}) { slug } }"#,
    ] {
        admin.ok(m, json!({})).await;
    }

    // --- Export carries them.
    let exported = gatehouse(&["export", "--url", url, "--tenant", "acme"], token).await;
    assert!(exported.ok, "{}", exported.stderr);
    let mut file: Value = serde_norway::from_str(&exported.stdout).unwrap();
    assert_eq!(
        file["groups"],
        json!([{ "slug": "oncall", "name": "On call", "members": ["alice@acme.test"], "roles": ["ops"] }])
    );
    assert_eq!(file["userAttributes"], json!({ "alice@acme.test": { "department": "eng" } }));
    assert_eq!(
        file["virtualServers"][0],
        json!({ "slug": "dev", "name": "Dev", "upstreams": ["everything"], "mode": "monitor",
                "conflictStrategy": "prefix", "prefixes": { "everything": "ev" },
                "overrides": [{ "server": "everything", "tool": "echo", "rename": "say", "fixed": { "message": "hi" } }] })
    );
    let policy = dir.join("shaped.yaml");
    let policy_arg = policy.to_str().unwrap();
    write_yaml(&policy, &file);
    let same = gatehouse(&["apply", "-f", policy_arg, "--url", url, "--dry-run"], token).await;
    assert!(same.ok, "{}", same.stderr);
    assert_eq!(same.stdout, "no changes\n", "an export applied to its own state changes nothing");

    // --- Edit: oncall loses its role and gains a member; a new group; attributes changed and
    // added; dev goes to priority with default prefixes, its echo override loses the fixed value
    // and gains a description, get-sum is renamed.
    file["groups"][0]["roles"] = json!([]);
    file["groups"][0]["members"] = json!(["alice@acme.test", "ops@acme.test"]);
    file["groups"].as_array_mut().unwrap().push(json!({
        "slug": "sre", "name": "SRE", "members": ["alice@acme.test"], "roles": ["data-analyst"] }));
    file["userAttributes"] = json!({ "alice@acme.test": { "department": "sales" }, "ops@acme.test": { "level": "3" } });
    let dev = &mut file["virtualServers"][0];
    dev["conflictStrategy"] = json!("priority");
    dev["prefixes"] = json!({});
    dev["overrides"] = json!([
        { "server": "everything", "tool": "echo", "rename": "say", "description": "Says it" },
        { "server": "everything", "tool": "get-sum", "rename": "add" },
    ]);
    write_yaml(&policy, &file);
    let diff = [
        "~ virtual server dev: conflict strategy prefix → priority",
        "~ virtual server dev: prefix of everything: ev → everything",
        "~ virtual server dev: override everything/echo: rename say, fixed message=\"hi\" → rename say, description \"Says it\"",
        "+ virtual server dev: override everything/get-sum (rename add)",
        "- group oncall: role ops",
        "+ group oncall: member ops@acme.test",
        "+ group sre (\"SRE\")",
        "+ group sre: role data-analyst",
        "+ group sre: member alice@acme.test",
        "~ user alice@acme.test: attribute department: \"eng\" → \"sales\"",
        "+ user ops@acme.test: attribute level = \"3\"",
    ]
    .join("\n");
    let before = admin.ok(SHAPED, json!({})).await;
    let dry = gatehouse(&["apply", "-f", policy_arg, "--url", url, "--dry-run"], token).await;
    assert!(dry.ok, "{}", dry.stderr);
    assert_eq!(dry.stdout, format!("{diff}\ndry run: 10 change(s) not applied\n"));
    assert_eq!(admin.ok(SHAPED, json!({})).await, before, "a dry run changes nothing");

    // --- Apply: the control plane has it.
    let applied = gatehouse(&["apply", "-f", policy_arg, "--url", url], token).await;
    assert!(applied.ok, "{}", applied.stderr);
    assert_eq!(applied.stdout, format!("{diff}\napplied 10 change(s)\n"));
    let state = admin.ok(SHAPED, json!({})).await;
    assert_eq!(
        state["groups"],
        json!([
            { "slug": "oncall", "name": "On call", "members": ["alice@acme.test", "ops@acme.test"], "roles": [] },
            { "slug": "sre", "name": "SRE", "members": ["alice@acme.test"], "roles": ["data-analyst"] },
        ])
    );
    assert_eq!(state["alice"], json!([{ "key": "department", "value": "sales" }]));
    assert_eq!(state["ops"], json!([{ "key": "level", "value": "3" }]));
    assert_eq!(
        state["virtualServers"][0],
        json!({ "slug": "dev", "conflictStrategy": "PRIORITY", "prefixes": [], "overrides": [
            { "server": "everything", "tool": "echo", "rename": "say", "description": "Says it",
              "fixed": [], "hidden": [], "enums": [] },
            { "server": "everything", "tool": "get-sum", "rename": "add", "description": null,
              "fixed": [], "hidden": [], "enums": [] },
        ] })
    );

    // --- Apply again: nothing to do; a fresh export agrees.
    let again = gatehouse(&["apply", "-f", policy_arg, "--url", url], token).await;
    assert!(again.ok, "{}", again.stderr);
    assert_eq!(again.stdout, "no changes\n");

    // --- What the file leaves out of a managed section is deleted: a group, an override, a
    // user's attributes. The group goes first (it narrows access).
    file["groups"].as_array_mut().unwrap().truncate(1);
    file["virtualServers"][0]["overrides"].as_array_mut().unwrap().truncate(1);
    file["userAttributes"] = json!({ "alice@acme.test": { "department": "sales" } });
    write_yaml(&policy, &file);
    let applied = gatehouse(&["apply", "-f", policy_arg, "--url", url], token).await;
    assert!(applied.ok, "{}", applied.stderr);
    assert_eq!(
        applied.stdout,
        "- virtual server dev: override everything/get-sum (rename add)\n\
         - group sre (\"SRE\")\n\
         - user ops@acme.test: attribute level = \"3\"\n\
         applied 3 change(s)\n"
    );
    let state = admin.ok(SHAPED, json!({})).await;
    assert_eq!(state["groups"].as_array().unwrap().len(), 1);
    assert_eq!(state["ops"], json!([]));
    assert_eq!(state["virtualServers"][0]["overrides"].as_array().unwrap().len(), 1);
    let again = gatehouse(&["apply", "-f", policy_arg, "--url", url], token).await;
    assert_eq!(again.stdout, "no changes\n", "{}", again.stderr);

    // --- A group of a user the tenant does not have, and an override of a tool the upstream does
    // not have: errors naming the item, nothing applied.
    file["groups"][0]["members"] = json!(["carol@acme.test"]);
    file["virtualServers"][0]["overrides"] = json!([{ "server": "everything", "tool": "no-such-tool", "rename": "x" }]);
    write_yaml(&policy, &file);
    let refused = gatehouse(&["apply", "-f", policy_arg, "--url", url], token).await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("error: group oncall: members: no user 'carol@acme.test' in this tenant"),
        "{}",
        refused.stderr
    );
    assert!(
        refused
            .stderr
            .contains("error: virtual server dev: overrides[0].tool: server 'everything' has no tool 'no-such-tool'"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("2 error(s): nothing was applied"), "{}", refused.stderr);
    assert_eq!(admin.ok(SHAPED, json!({})).await, state, "nothing changed");
}
