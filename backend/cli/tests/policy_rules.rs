//! Access rules end to end, with real peers: `gatehouse serve`, `@modelcontextprotocol/server-everything`
//! upstream, the official Python MCP SDK as the client. An administrator writes rules over GraphQL
//! (an annotation selector narrowed by a glob, a deny rule, a parameter constraint), invalid rules
//! are refused naming the field, the client sees exactly the allowed tools and gets refusals that
//! name the rule, "explain" gives the same words, monitor mode lets the call through and audits it
//! as `would_deny`, and another tenant's admin cannot touch any of it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::*;

const ADD_RULE: &str = "mutation($t: String!, $r: String!, $rule: RuleInput!) { addRule(tenant: $t, role: $r, rule: $rule) { id effect tools params { param pattern maxLength } } }";

const AUDIT: &str = r#"{ auditEvents(tenant: "acme", limit: 200) { method tool outcome reason ruleId } }"#;

/// Waits (bounded) until the audit trail holds an event matching `pred`, and returns it.
async fn audited(admin: &Gql, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let events = admin.ok(AUDIT, json!({})).await;
        if let Some(e) = events["auditEvents"].as_array().unwrap().iter().find(|e| pred(e)) {
            return e.clone();
        }
        assert!(Instant::now() < deadline, "no audit event for {what}: {events}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_validated_enforced_explained_and_monitored() {
    let (_everything, upstream_url) = start_everything();
    let gh = start_gatehouse();
    let admin = Gql::sign_in(&gh.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;

    admin.ok(r#"mutation { createTenant(slug: "acme", name: "Acme") { slug } }"#, json!({})).await;
    let server = admin
        .ok(
            "mutation($url: String!) { registerServer(tenant: \"acme\", slug: \"everything\", name: \"Everything\", url: $url) { tools { name annotations } } }",
            json!({ "url": upstream_url }),
        )
        .await;
    let definitions = server["registerServer"]["tools"].as_array().unwrap().clone();
    // What the annotation rule below should select, computed from what the upstream declared.
    let read_only_get: Vec<String> = definitions
        .iter()
        .filter(|t| t["annotations"]["readOnlyHint"] == true)
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .filter(|n| n.starts_with("get-"))
        .collect();
    assert!(
        read_only_get.contains(&"get-sum".to_owned()) && read_only_get.contains(&"get-env".to_owned()),
        "the upstream declares get-sum and get-env read-only: {definitions:?}"
    );
    let not_read_only = definitions
        .iter()
        .find(|t| t["annotations"]["readOnlyHint"] == false)
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .expect("the upstream has a tool that is not read-only");

    admin.ok(r#"mutation { createRole(tenant: "acme", slug: "analyst") { slug } }"#, json!({})).await;
    admin
        .ok(
            r#"mutation { createUser(tenant: "acme", email: "alice@acme.test", displayName: "Alice") { id } }"#,
            json!({}),
        )
        .await;
    admin
        .ok(r#"mutation { bindRole(tenant: "acme", role: "analyst", email: "alice@acme.test") { slug } }"#, json!({}))
        .await;
    let vs = admin
        .ok(r#"mutation { createVirtualServer(tenant: "acme", slug: "dev", name: "Dev", servers: ["everything"]) { endpoint mode } }"#, json!({}))
        .await;
    assert_eq!(vs["createVirtualServer"]["mode"], "ENFORCE", "a new virtual server enforces");
    let endpoint = vs["createVirtualServer"]["endpoint"].as_str().unwrap().to_owned();
    let token = admin
        .ok(
            r#"mutation { createToken(tenant: "acme", userEmail: "alice@acme.test", name: "laptop") { secret } }"#,
            json!({}),
        )
        .await;
    let secret = token["createToken"]["secret"].as_str().unwrap().to_owned();

    // --- Invalid rules are refused, naming the field; nothing is stored.
    let add = |rule: Value| json!({ "t": "acme", "r": "analyst", "rule": rule });
    let refusals = [
        (
            json!({ "server": "everything", "effect": "DENY", "tools": "echo", "params": [{ "param": "message", "maxLength": 3 }] }),
            "params: ",
        ),
        (
            json!({ "server": "everything", "effect": "ALLOW", "tools": "echo", "params": [{ "param": "nope", "maxLength": 3 }] }),
            "params[0].param: tool 'echo' has no parameter 'nope'",
        ),
        (
            json!({ "server": "everything", "effect": "ALLOW", "tools": "echo", "params": [{ "param": "message", "pattern": "(" }] }),
            "params[0].pattern: not a valid regular expression",
        ),
        (
            json!({ "server": "everything", "effect": "ALLOW", "tools": "get-sum", "params": [{ "param": "a", "pattern": "1" }] }),
            "params[0].param: parameter 'a' of tool 'get-sum' is not a string",
        ),
        (json!({ "server": "ghost", "effect": "ALLOW", "tools": "echo" }), "server: no server 'ghost'"),
        (json!({ "server": "everything", "effect": "ALLOW", "tools": "" }), "tools: "),
    ];
    for (rule, expected) in refusals {
        let (code, message) = admin.err(ADD_RULE, add(rule.clone())).await;
        assert_eq!(code, "INVALID_INPUT", "{rule}: {message}");
        assert!(message.starts_with(expected), "{rule}: expected '{expected}…', got '{message}'");
    }
    let (code, _) = admin.err(ADD_RULE, json!({ "t": "acme", "r": "ghost", "rule": { "server": "everything", "effect": "ALLOW", "tools": "echo" } })).await;
    assert_eq!(code, "NOT_FOUND");
    let roles = admin.ok(r#"{ roles(tenant: "acme") { rules { id } } }"#, json!({})).await;
    assert_eq!(roles["roles"][0]["rules"], json!([]), "no refused rule was stored");

    // --- The rules.
    let rule_id = |v: &Value| v["addRule"]["id"].as_str().unwrap().to_owned();
    let read_only = rule_id(
        &admin
            .ok(
                ADD_RULE,
                add(json!({ "server": "everything", "effect": "ALLOW", "tools": "get-*",
                "annotation": { "hint": "READ_ONLY", "value": true } })),
            )
            .await,
    );
    let deny_env = rule_id(
        &admin
            .ok(
                ADD_RULE,
                add(json!({ "server": "everything", "effect": "DENY", "tools": "get-env",
                "description": "it shows the server's environment" })),
            )
            .await,
    );
    let echo_hello = admin
        .ok(
            ADD_RULE,
            add(json!({ "server": "everything", "effect": "ALLOW", "tools": "echo",
            "params": [{ "param": "message", "pattern": "hello.*", "maxLength": 40 }] })),
        )
        .await;
    assert_eq!(echo_hello["addRule"]["params"], json!([{ "param": "message", "pattern": "hello.*", "maxLength": 40 }]));
    let echo_hello = rule_id(&echo_hello);

    // --- A real client sees exactly what the rules allow, and refusals that name the rule.
    // `get-roots-list` is registered by the upstream only for clients that declare the roots
    // capability: the control plane's discovery does, this Python client does not.
    let mut expected_tools: Vec<String> =
        read_only_get.iter().filter(|n| *n != "get-env" && *n != "get-roots-list").cloned().collect();
    expected_tools.push("echo".to_owned());
    expected_tools.sort();
    let steps = json!([
        ["list"],
        ["call", "echo", { "message": "hello there" }],
        ["call", "echo", { "message": "goodbye" }],
        ["call", "get-sum", { "a": 1, "b": 2 }],
        ["call", "get-env", {}],
        ["call", not_read_only, {}],
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let out = loop {
        let out = mcp_client(&endpoint, &secret, steps.clone()).await;
        let mut listed: Vec<String> = out["results"][0]["tools"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        listed.sort();
        if listed == expected_tools || Instant::now() > deadline {
            assert_eq!(listed, expected_tools, "listed: the read-only get-* tools but get-env, and echo: {out}");
            break out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let r = &out["results"];
    assert!(r[1]["content"][0]["text"].as_str().unwrap().contains("hello there"), "echo hello allowed: {out}");
    let bye = &r[2]["error"];
    assert_eq!(bye["code"], -32003, "{out}");
    assert_eq!(bye["data"]["code"], "ARGUMENTS_NOT_ALLOWED");
    assert_eq!(bye["data"]["rule"], echo_hello.as_str());
    assert_eq!(
        bye["message"],
        format!(
            "tool 'echo' of server 'everything': parameter 'message' must match the pattern hello.* (rule {echo_hello} of access role 'analyst')"
        )
    );
    assert!(
        r[3]["content"][0]["text"].as_str().unwrap().contains('3'),
        "get-sum allowed by the annotation rule: {out}"
    );
    let env = &r[4]["error"];
    assert_eq!(env["data"]["code"], "TOOL_NOT_GRANTED", "{out}");
    assert_eq!(env["data"]["rule"], deny_env.as_str(), "the deny rule wins over the annotation allow");
    assert!(env["message"].as_str().unwrap().ends_with(": it shows the server's environment"), "{env}");
    assert_eq!(r[5]["error"]["data"]["rule"], "default-deny", "a tool no rule selects: {out}");

    // --- "Why was this call denied?" gives the gateway's words.
    let explained = admin
        .ok(
            r#"{ explainCall(tenant: "acme", userEmail: "alice@acme.test", server: "everything", tool: "echo", arguments: {message: "goodbye"}) { allowed ruleId reason } }"#,
            json!({}),
        )
        .await;
    assert_eq!(explained["explainCall"], json!({ "allowed": false, "ruleId": echo_hello, "reason": bye["message"] }));
    let access = admin
        .ok(r#"{ explainAccess(tenant: "acme", virtualServer: "dev", userEmail: "alice@acme.test") { tools { tool allowed constrained ruleId } } }"#, json!({}))
        .await;
    let echo =
        access["explainAccess"]["tools"].as_array().unwrap().iter().find(|t| t["tool"] == "echo").unwrap().clone();
    assert_eq!(echo, json!({ "tool": "echo", "allowed": true, "constrained": true, "ruleId": echo_hello }));

    // --- Every decision is audited with the rule that made it.
    let allowed = audited(&admin, "echo allowed", |e| e["tool"] == "echo" && e["outcome"] == "allowed").await;
    assert_eq!(allowed["ruleId"], echo_hello.as_str());
    let sum = audited(&admin, "get-sum allowed", |e| e["tool"] == "get-sum" && e["outcome"] == "allowed").await;
    assert_eq!(sum["ruleId"], read_only.as_str());
    let denied = audited(&admin, "get-env denied", |e| e["tool"] == "get-env" && e["outcome"] == "denied").await;
    assert_eq!(denied["ruleId"], deny_env.as_str());

    // --- Monitor mode: listed and let through, audited as would_deny with the rule.
    let mode = admin
        .ok(r#"mutation { setPolicyMode(tenant: "acme", virtualServer: "dev", mode: MONITOR) { mode } }"#, json!({}))
        .await;
    assert_eq!(mode["setPolicyMode"]["mode"], "MONITOR");
    let out = mcp_client(&endpoint, &secret, json!([["list_until", "get-env", 15], ["call", "get-env", {}]])).await;
    assert!(
        out["results"][0]["tools"].as_array().unwrap().contains(&json!("get-env")),
        "monitor lists everything: {out}"
    );
    assert!(out["results"][1].get("content").is_some(), "monitor lets the call through: {out}");
    let would = audited(&admin, "get-env would_deny", |e| e["tool"] == "get-env" && e["outcome"] == "would_deny").await;
    assert_eq!(would["ruleId"], deny_env.as_str());
    assert_eq!(would["reason"], env["message"], "the audit says what enforcement would have answered");

    // --- Another tenant's admin cannot read, add or delete acme's rules.
    let other = globex_admin(&admin, &gh.control).await;
    let (code, _) = other.err(r#"{ roles(tenant: "acme") { slug } }"#, json!({})).await;
    assert_eq!(code, "NOT_FOUND");
    let (code, _) = other.err(ADD_RULE, add(json!({ "server": "everything", "effect": "ALLOW", "tools": "*" }))).await;
    assert_eq!(code, "NOT_FOUND");
    let (code, _) = other
        .err("mutation($id: String!) { deleteRule(tenant: \"globex\", id: $id) }", json!({ "id": deny_env }))
        .await;
    assert_eq!(code, "NOT_FOUND", "acme's rule id is not found in globex");
    let (code, _) = other
        .err(r#"mutation { setPolicyMode(tenant: "acme", virtualServer: "dev", mode: ENFORCE) { mode } }"#, json!({}))
        .await;
    assert_eq!(code, "NOT_FOUND");

    // --- Deleting the deny rule (back in enforce mode) lets get-env through for real.
    admin
        .ok(r#"mutation { setPolicyMode(tenant: "acme", virtualServer: "dev", mode: ENFORCE) { mode } }"#, json!({}))
        .await;
    assert_eq!(
        admin.ok("mutation($id: String!) { deleteRule(tenant: \"acme\", id: $id) }", json!({ "id": deny_env })).await["deleteRule"],
        true
    );
    let (code, _) =
        admin.err("mutation($id: String!) { deleteRule(tenant: \"acme\", id: $id) }", json!({ "id": deny_env })).await;
    assert_eq!(code, "NOT_FOUND", "a deleted rule is gone");
    let out = mcp_client(&endpoint, &secret, json!([["list_until", "get-env", 15], ["call", "get-env", {}]])).await;
    assert!(out["results"][1].get("content").is_some(), "get-env allowed by the annotation rule now: {out}");
    let allowed_env = audited(&admin, "get-env allowed", |e| e["tool"] == "get-env" && e["outcome"] == "allowed").await;
    assert_eq!(allowed_env["ruleId"], read_only.as_str());
}

const ADD_DATA_RULE: &str = "mutation($rule: ClassificationRuleInput!) { addClassificationRule(tenant: \"acme\", rule: $rule) { id servers labels } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_classification_rules_reach_the_gateway_by_server_label() {
    let (_everything, upstream_url) = start_everything();
    let gh = start_gatehouse();
    let admin = Gql::sign_in(&gh.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (endpoint, secret) = acme_with_alice(&admin, &upstream_url, "analyst", &["echo"]).await;

    // Invalid rules and labels are refused naming the field.
    let refusals = [
        (json!({ "name": "ids", "detector": "PATTERN", "action": "BLOCK", "scope": "BOTH" }), "pattern: "),
        (
            json!({ "name": "ids", "detector": "PATTERN", "pattern": "(", "action": "BLOCK", "scope": "BOTH" }),
            "pattern: ",
        ),
        (
            json!({ "name": "mail", "detector": "EMAIL", "action": "LOG", "scope": "BOTH", "servers": ["ghost"] }),
            "servers[0]: no server 'ghost'",
        ),
        (
            json!({ "name": "mail", "detector": "EMAIL", "action": "LOG", "scope": "BOTH", "labels": ["not a label"] }),
            "labels[0]: ",
        ),
        (json!({ "name": " ", "detector": "EMAIL", "action": "LOG", "scope": "BOTH" }), "name: "),
    ];
    for (rule, expected) in refusals {
        let (code, message) = admin.err(ADD_DATA_RULE, json!({ "rule": rule })).await;
        assert_eq!(code, "INVALID_INPUT", "{rule}: {message}");
        assert!(message.starts_with(expected), "{rule}: expected '{expected}…', got '{message}'");
    }

    // A rule by label applies once the server carries the label.
    let labelled = admin
        .ok(
            r#"mutation { setServerLabels(tenant: "acme", server: "everything", labels: ["PII", "eu"]) { labels } }"#,
            json!({}),
        )
        .await;
    assert_eq!(labelled["setServerLabels"]["labels"], json!(["PII", "eu"]));
    admin
        .ok(ADD_DATA_RULE, json!({ "rule": { "name": "mask mail", "detector": "EMAIL", "action": "REDACT", "scope": "RESPONSES", "labels": ["PII"] } }))
        .await;
    let keys = admin
        .ok(ADD_DATA_RULE, json!({ "rule": { "name": "no keys", "detector": "API_KEY", "action": "BLOCK", "scope": "PARAMS", "servers": ["everything"] } }))
        .await;
    let keys_id = keys["addClassificationRule"]["id"].as_str().unwrap().to_owned();

    let steps = json!([
        ["call", "echo", { "message": "write to bob@example.com" }],
        ["call", "echo", { "message": "AKIAIOSFODNN7EXAMPLE" }],
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let out = loop {
        let out = mcp_client(&endpoint, &secret, steps.clone()).await;
        let redacted =
            out["results"][0]["content"][0]["text"].as_str().unwrap_or_default().contains("[REDACTED:email]");
        if (redacted && out["results"][1].get("error").is_some()) || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(out["results"][0]["content"][0]["text"], "Echo: write to [REDACTED:email]", "{out}");
    let blocked = &out["results"][1]["error"];
    assert_eq!(blocked["data"]["code"], "DATA_BLOCKED", "{out}");
    assert_eq!(blocked["data"]["rule"], keys_id.as_str());
    assert!(!blocked.to_string().contains("AKIA"), "the refusal does not repeat the key: {blocked}");

    let audit = audited(&admin, "the blocked call", |e| e["ruleId"] == keys_id.as_str()).await;
    assert_eq!(audit["outcome"], "denied");
    let with_findings = admin
        .ok(r#"{ auditEvents(tenant: "acme", limit: 50) { tool outcome findings { detector action direction path count } } }"#, json!({}))
        .await;
    let events = with_findings["auditEvents"].as_array().unwrap();
    let redaction = events
        .iter()
        .flat_map(|e| e["findings"].as_array().unwrap().iter())
        .find(|f| f["action"] == "REDACT")
        .unwrap_or_else(|| panic!("a redaction is audited: {with_findings}"));
    assert_eq!(
        redaction,
        &json!({ "detector": "EMAIL", "action": "REDACT", "direction": "response", "path": "/content/0/text", "count": 1 })
    );
    assert!(!with_findings.to_string().contains("bob@example.com"), "the audit holds no data");

    // Another tenant's admin sees none of it.
    let other = globex_admin(&admin, &gh.control).await;
    let (code, _) = other.err(r#"{ classificationRules(tenant: "acme") { id } }"#, json!({})).await;
    assert_eq!(code, "NOT_FOUND");
    let (code, _) = other
        .err(
            "mutation($id: String!) { deleteClassificationRule(tenant: \"globex\", id: $id) }",
            json!({ "id": keys_id }),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
}

/// POSTs `initialize` to the gateway with a bearer token: (HTTP status, JSON body).
async fn raw_initialize(endpoint: &str, token: &str) -> (u16, Value) {
    let resp = RawSession::initialize(&reqwest::Client::new(), endpoint, token).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_stops_a_tool_a_user_and_a_server_even_in_monitor_mode() {
    let (_everything, upstream_url) = start_everything();
    let gh = start_gatehouse();
    let admin = Gql::sign_in(&gh.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (endpoint, secret) = acme_with_alice(&admin, &upstream_url, "all", &["*"]).await;
    // Monitor mode relaxes access policy, never the kill switch.
    admin
        .ok(r#"mutation { setPolicyMode(tenant: "acme", virtualServer: "dev", mode: MONITOR) { mode } }"#, json!({}))
        .await;
    let first = mcp_client(&endpoint, &secret, json!([["list_until", "echo", 15]])).await;
    assert!(first["results"][0]["tools"].as_array().unwrap().contains(&json!("echo")), "{first}");

    // Bad input.
    let suspend = "mutation($u: String, $s: String, $t: String, $r: String!) { suspend(tenant: \"acme\", userEmail: $u, server: $s, tool: $t, reason: $r) { id kind user server tool reason createdBy } }";
    let (code, message) = admin.err(suspend, json!({ "u": "alice@acme.test", "s": "everything", "r": "x" })).await;
    assert_eq!((code.as_str(), message.starts_with("user: ")), ("INVALID_INPUT", true), "{message}");
    let (code, message) = admin.err(suspend, json!({ "u": "alice@acme.test", "r": " " })).await;
    assert_eq!((code.as_str(), message.starts_with("reason: ")), ("INVALID_INPUT", true), "{message}");
    let (code, _) = admin.err(suspend, json!({ "u": "nobody@acme.test", "r": "x" })).await;
    assert_eq!(code, "NOT_FOUND");

    // One tool.
    let tool = admin.ok(suspend, json!({ "s": "everything", "t": "echo", "r": "prompt injection in the wild" })).await;
    assert_eq!(tool["suspend"]["kind"], "tool");
    assert_eq!(tool["suspend"]["createdBy"], ADMIN_EMAIL);
    let (code, _) = admin.err(suspend, json!({ "s": "everything", "t": "echo", "r": "again" })).await;
    assert_eq!(code, "CONFLICT", "a tool is suspended once");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(15);
    let out = loop {
        let out = mcp_client(&endpoint, &secret, json!([["call", "echo", { "message": "hi" }], ["list"]])).await;
        if out["results"][0].get("error").is_some() || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("tool suspension enforced {} ms after the mutation returned", started.elapsed().as_millis());
    let refused = &out["results"][0]["error"];
    assert_eq!(refused["data"]["code"], "SUSPENDED", "{out}");
    assert_eq!(refused["data"]["rule"], "kill:tool:everything:echo");
    assert_eq!(
        refused["message"],
        "tool 'echo' of server 'everything' is suspended by a tenant admin: prompt injection in the wild"
    );
    let listed = out["results"][1]["tools"].as_array().unwrap();
    assert!(!listed.contains(&json!("echo")) && listed.contains(&json!("get-sum")), "only echo is gone: {out}");

    // The user: every request is refused with 403, whatever session it belongs to.
    let user = admin.ok(suspend, json!({ "u": "alice@acme.test", "r": "laptop stolen" })).await;
    let user_id = user["suspend"]["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    let (status, body) = loop {
        let (status, body) = raw_initialize(&endpoint, &secret).await;
        if status == 403 || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "SUSPENDED");
    assert_eq!(body["error"]["message"], "your access is suspended by a tenant admin: laptop stolen");
    let denied = audited(&admin, "the suspended user", |e| e["reason"] == body["error"]["message"]).await;
    assert_eq!(denied["outcome"], "denied");

    // Another tenant's admin cannot see or lift it.
    let other = globex_admin(&admin, &gh.control).await;
    let (code, _) = other.err(r#"{ suspensions(tenant: "acme") { id } }"#, json!({})).await;
    assert_eq!(code, "NOT_FOUND");
    let lift = "mutation($t: String!, $id: String!) { liftSuspension(tenant: $t, id: $id) }";
    let (code, _) = other.err(lift, json!({ "t": "globex", "id": user_id })).await;
    assert_eq!(code, "NOT_FOUND");

    // Lifted: back in; then the whole server.
    assert_eq!(admin.ok(lift, json!({ "t": "acme", "id": user_id })).await["liftSuspension"], true);
    let deadline = Instant::now() + Duration::from_secs(15);
    while raw_initialize(&endpoint, &secret).await.0 != 200 {
        assert!(Instant::now() < deadline, "the lifted user is still refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin.ok(suspend, json!({ "s": "everything", "r": "vendor breach" })).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let out = loop {
        let out = mcp_client(&endpoint, &secret, json!([["list"], ["call", "get-sum", { "a": 1, "b": 2 }]])).await;
        if out["results"][0]["tools"].as_array().is_some_and(Vec::is_empty) || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(out["results"][0]["tools"], json!([]), "a suspended server offers nothing: {out}");
    let message = out["results"][1]["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("server 'everything' of this virtual server is suspended by a tenant admin: vendor breach"),
        "{out}"
    );
    let listed = admin.ok(r#"{ suspensions(tenant: "acme") { kind server tool reason } }"#, json!({})).await;
    assert_eq!(
        listed["suspensions"],
        json!([
            { "kind": "tool", "server": "everything", "tool": "echo", "reason": "prompt injection in the wild" },
            { "kind": "server", "server": "everything", "tool": null, "reason": "vendor breach" },
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_from_graphql_answer_429_with_retry_after() {
    let (_everything, upstream_url) = start_everything();
    let gh = start_gatehouse();
    let admin = Gql::sign_in(&gh.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (endpoint, secret) = acme_with_alice(&admin, &upstream_url, "analyst", &["echo", "get-sum"]).await;
    let add = "mutation($l: RateLimitInput!) { addRateLimit(tenant: \"acme\", limit: $l) { id scope role server tool requests perSeconds } }";
    for (limit, expected) in [
        (json!({ "scope": "USER", "requests": 0, "perSeconds": 60 }), "requests: "),
        (json!({ "scope": "ROLE", "requests": 5, "perSeconds": 60 }), "role: "),
        (json!({ "scope": "ROLE", "role": "ghost", "requests": 5, "perSeconds": 60 }), "role: no role 'ghost'"),
        (json!({ "scope": "USER", "server": "ghost", "requests": 5, "perSeconds": 60 }), "server: no server 'ghost'"),
        (json!({ "scope": "TENANT", "requests": 5, "perSeconds": 0 }), "perSeconds: "),
    ] {
        let (code, message) = admin.err(add, json!({ "l": limit })).await;
        assert_eq!(code, "INVALID_INPUT", "{limit}: {message}");
        assert!(message.starts_with(expected), "{limit}: expected '{expected}…', got '{message}'");
    }
    let limit = admin
        .ok(add, json!({ "l": { "scope": "ROLE", "role": "analyst", "server": "everything", "tool": "echo", "requests": 1, "perSeconds": 3600 } }))
        .await;
    let limit_id = limit["addRateLimit"]["id"].as_str().unwrap().to_owned();

    let deadline = Instant::now() + Duration::from_secs(15);
    let (status, retry, body) = loop {
        // A fresh session each round: the limit counts calls of the user, whatever the session.
        let answer = match RawSession::open(&endpoint, &secret).await {
            Some(raw) => raw.call("echo", json!({ "message": "hi" })).await,
            None => (401, None, Value::Null),
        };
        if answer.0 == 429 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 429, "{body}");
    let retry: u64 = retry.expect("a Retry-After header").parse().unwrap();
    assert!((3_000..=3_600).contains(&retry), "about an hour: {retry}");
    assert_eq!(body["error"]["data"]["code"], "RATE_LIMITED");
    assert_eq!(body["error"]["data"]["rule"], limit_id.as_str());
    // Other tools are not limited.
    let raw = RawSession::open(&endpoint, &secret).await.unwrap();
    assert_eq!(raw.call("get-sum", json!({ "a": 1, "b": 2 })).await.0, 200);
    let listed = admin.ok(r#"{ rateLimits(tenant: "acme") { id role server tool } }"#, json!({})).await;
    assert_eq!(
        listed["rateLimits"],
        json!([{ "id": limit_id, "role": "analyst", "server": "everything", "tool": "echo" }])
    );
    let other = globex_admin(&admin, &gh.control).await;
    let (code, _) = other
        .err("mutation($id: String!) { deleteRateLimit(tenant: \"globex\", id: $id) }", json!({ "id": limit_id }))
        .await;
    assert_eq!(code, "NOT_FOUND");
}

/// Initializes a session as `token`: its `Mcp-Session-Id`. A token created a moment ago is refused
/// until the bundle with it reaches the worker: that wait is bounded.
async fn open_session(endpoint: &str, token: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(s) = RawSession::open(endpoint, token).await {
            return s.session;
        }
        assert!(Instant::now() < deadline, "the gateway never accepted the token");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The HTTP status of `tools/list` in session `session` as `token`.
async fn list_status(endpoint: &str, token: &str, session: &str) -> u16 {
    let s = RawSession::resume(endpoint, token, session);
    s.post(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})).await.0
}

/// Waits (bounded) until `session` is refused with 404, as every worker does once the bundle says so.
async fn until_ended(endpoint: &str, token: &str, session: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match list_status(endpoint, token, session).await {
            404 => return,
            200 => assert!(Instant::now() < deadline, "{what} still serves"),
            other => panic!("{what}: HTTP {other}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The id of the session key that sealed a session id (`len ‖ key id ‖ …`, base64url).
fn sealing_key(session: &str) -> String {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(session).unwrap();
    String::from_utf8(raw[1..1 + usize::from(raw[0])].to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_end_sessions_and_rotate_session_keys() {
    let (_everything, upstream_url) = start_everything();
    let gh = start_gatehouse();
    let admin = Gql::sign_in(&gh.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (endpoint, alice) = acme_with_alice(&admin, &upstream_url, "all", &["*"]).await;
    admin
        .ok(r#"mutation { createUser(tenant: "acme", email: "bob@acme.test", displayName: "Bob") { id } }"#, json!({}))
        .await;
    admin.ok(r#"mutation { bindRole(tenant: "acme", role: "all", email: "bob@acme.test") { slug } }"#, json!({})).await;
    let bob = admin
        .ok(
            r#"mutation { createToken(tenant: "acme", userEmail: "bob@acme.test", name: "ide") { secret } }"#,
            json!({}),
        )
        .await["createToken"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let end =
        "mutation($t: String!, $u: String) { endSessions(tenant: $t, userEmail: $u) { user notBeforeMs createdBy } }";

    // Ending one user's sessions: hers are refused (404, so the client initializes again), Bob's live.
    let (alice_1, bob_1) = (open_session(&endpoint, &alice).await, open_session(&endpoint, &bob).await);
    assert_eq!(list_status(&endpoint, &alice, &alice_1).await, 200);
    let (code, _) = admin.err(end, json!({ "t": "acme", "u": "nobody@acme.test" })).await;
    assert_eq!(code, "NOT_FOUND");
    let ended = admin.ok(end, json!({ "t": "acme", "u": "alice@acme.test" })).await;
    assert_eq!(ended["endSessions"]["user"], "alice@acme.test");
    assert_eq!(ended["endSessions"]["createdBy"], ADMIN_EMAIL);
    until_ended(&endpoint, &alice, &alice_1, "Alice's ended session").await;
    assert_eq!(list_status(&endpoint, &bob, &bob_1).await, 200, "Bob's session is not Alice's");
    let alice_2 = open_session(&endpoint, &alice).await;
    assert_eq!(list_status(&endpoint, &alice, &alice_2).await, 200, "she keeps her access");

    // Another tenant's admin can neither see nor end acme's sessions, nor touch its keys.
    let other = globex_admin(&admin, &gh.control).await;
    let (code, _) = other.err(end, json!({ "t": "acme" })).await;
    assert_eq!(code, "NOT_FOUND");
    for q in [r#"{ sessionKeys(tenant: "acme") { id } }"#, r#"{ sessionCutoffs(tenant: "acme") { user } }"#] {
        assert_eq!(other.err(q, json!({})).await.0, "NOT_FOUND", "{q}");
    }
    assert_eq!(other.err(r#"mutation { rotateSessionKey(tenant: "acme") { id } }"#, json!({})).await.0, "NOT_FOUND");

    // Rotation: the new key seals new sessions, the old one keeps opening the sessions it sealed.
    let keys = "{ sessionKeys(tenant: \"acme\") { id sealing createdAtMs } }";
    let before = admin.ok(keys, json!({})).await["sessionKeys"].clone();
    assert_eq!(before.as_array().unwrap().len(), 1, "{before}");
    let old = before[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(sealing_key(&alice_2), old);
    let new = admin.ok(r#"mutation { rotateSessionKey(tenant: "acme") { id sealing } }"#, json!({})).await;
    let new = new["rotateSessionKey"]["id"].as_str().unwrap().to_owned();
    let after = admin.ok(keys, json!({})).await["sessionKeys"].clone();
    assert_eq!((after[0]["id"].as_str(), after[0]["sealing"].as_bool()), (Some(new.as_str()), Some(true)), "{after}");
    assert_eq!((after[1]["id"].as_str(), after[1]["sealing"].as_bool()), (Some(old.as_str()), Some(false)), "{after}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let alice_3 = loop {
        let s = open_session(&endpoint, &alice).await;
        if sealing_key(&s) == new {
            break s;
        }
        assert!(Instant::now() < deadline, "new sessions are still sealed with {old}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(list_status(&endpoint, &alice, &alice_2).await, 200, "the old key still opens its sessions");

    // Retiring: not the sealing key; within the overlap only with force; then its sessions end.
    let retire = "mutation($id: String!, $f: Boolean) { retireSessionKey(tenant: \"acme\", id: $id, force: $f) }";
    let (code, message) = admin.err(retire, json!({ "id": new })).await;
    assert_eq!((code.as_str(), message.starts_with("id: ")), ("INVALID_INPUT", true), "{message}");
    let (code, message) = admin.err(retire, json!({ "id": old })).await;
    assert_eq!((code.as_str(), message.starts_with("force: ")), ("INVALID_INPUT", true), "{message}");
    assert!(message.contains("23 h"), "says how long its sessions may live: {message}");
    assert_eq!(list_status(&endpoint, &alice, &alice_2).await, 200, "a refused retirement ends nothing");
    assert_eq!(admin.ok(retire, json!({ "id": old, "f": true })).await["retireSessionKey"], true);
    until_ended(&endpoint, &alice, &alice_2, "a session of the retired key").await;
    until_ended(&endpoint, &bob, &bob_1, "Bob's session of the retired key").await;
    assert_eq!(list_status(&endpoint, &alice, &alice_3).await, 200, "the new key's sessions live");
    assert_eq!(admin.err(retire, json!({ "id": old, "f": true })).await.0, "NOT_FOUND");

    // Every session of the tenant.
    admin.ok(end, json!({ "t": "acme" })).await;
    until_ended(&endpoint, &alice, &alice_3, "a session before the tenant-wide end").await;
    let cutoffs = admin.ok(r#"{ sessionCutoffs(tenant: "acme") { user createdBy } }"#, json!({})).await;
    assert_eq!(
        cutoffs["sessionCutoffs"],
        json!([{ "user": null, "createdBy": ADMIN_EMAIL }, { "user": "alice@acme.test", "createdBy": ADMIN_EMAIL }])
    );
    let bob_2 = open_session(&endpoint, &bob).await;
    assert_eq!(list_status(&endpoint, &bob, &bob_2).await, 200, "new sessions start as usual");
}
