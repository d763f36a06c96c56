//! Virtual-server shaping end to end, with real peers (`docs/decisions/0013-virtual-server-shaping.md`):
//! `gatehouse serve`, two `@modelcontextprotocol/server-everything` upstreams (so every tool name
//! clashes), the official Python MCP SDK as the client. An administrator picks the `priority`
//! strategy and overrides tools over GraphQL (invalid overrides refused naming the field); the
//! client sees the renamed tools, both sides of a clash, a fixed parameter hidden from the schema
//! and injected into the call (the upstream's answer shows the value), a narrowed enum enforced,
//! and access policy deciding on the upstream name and the final arguments.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::*;

const SET_OVERRIDE: &str = "mutation($o: ToolOverrideInput!) { setToolOverride(tenant: \"acme\", virtualServer: \"dev\", override: $o) { overrides { server tool rename } } }";

fn text(result: &Value) -> String {
    result["content"][0]["text"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shaped_virtual_server_renames_fixes_narrows_and_keeps_both_sides_of_a_clash() {
    let (_main, main_url) = start_everything();
    let (_mirror, mirror_url) = start_everything();
    let gh = start_gatehouse();
    let admin = Gql::sign_in(&gh.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;

    admin.ok(r#"mutation { createTenant(slug: "acme", name: "Acme") { slug } }"#, json!({})).await;
    for (slug, url) in [("everything", &main_url), ("mirror", &mirror_url)] {
        admin
            .ok(
                "mutation($s: String!, $url: String!) { registerServer(tenant: \"acme\", slug: $s, name: $s, url: $url) { slug } }",
                json!({ "s": slug, "url": url }),
            )
            .await;
    }
    admin.ok(r#"mutation { createRole(tenant: "acme", slug: "analyst") { slug } }"#, json!({})).await;
    let grants = json!([
        { "server": "everything", "tool": "get-sum" },
        { "server": "everything", "tool": "echo" },
        { "server": "everything", "tool": "get-annotated-message" },
    ]);
    admin
        .ok(
            "mutation($g: [GrantInput!]!) { setRoleGrants(tenant: \"acme\", role: \"analyst\", grants: $g) { slug } }",
            json!({ "g": grants }),
        )
        .await;
    // mirror's echo only with the message the gateway injects: policy sees the final arguments.
    admin
        .ok(
            "mutation($rule: RuleInput!) { addRule(tenant: \"acme\", role: \"analyst\", rule: $rule) { id } }",
            json!({ "rule": { "server": "mirror", "effect": "ALLOW", "tools": "echo",
                               "params": [{ "param": "message", "pattern": "^from-gateway$" }] } }),
        )
        .await;
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
        .ok(
            r#"mutation { createVirtualServer(tenant: "acme", slug: "dev", name: "Dev", servers: ["everything", "mirror"]) { endpoint conflictStrategy } }"#,
            json!({}),
        )
        .await;
    assert_eq!(vs["createVirtualServer"]["conflictStrategy"], "AUTO");
    let endpoint = vs["createVirtualServer"]["endpoint"].as_str().unwrap().to_owned();
    let token = admin
        .ok(
            r#"mutation { createToken(tenant: "acme", userEmail: "alice@acme.test", name: "laptop") { secret } }"#,
            json!({}),
        )
        .await;
    let secret = token["createToken"]["secret"].as_str().unwrap().to_owned();

    // --- Explicit is refused while every name clashes; priority with a prefix is saved.
    let (code, message) = admin
        .err(
            r#"mutation { setConflictStrategy(tenant: "acme", virtualServer: "dev", strategy: EXPLICIT) { slug } }"#,
            json!({}),
        )
        .await;
    assert_eq!(code, "INVALID_INPUT");
    assert!(
        message.starts_with("strategy: the explicit strategy needs a rename for every conflict: 'everything/echo' and 'mirror/echo' would all be exposed as 'echo'"),
        "{message}"
    );
    let set = admin
        .ok(
            r#"mutation { setConflictStrategy(tenant: "acme", virtualServer: "dev", strategy: PRIORITY, prefixes: [{ server: "mirror", prefix: "m" }]) { conflictStrategy prefixes { server prefix } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(set["setConflictStrategy"]["conflictStrategy"], "PRIORITY");
    assert_eq!(set["setConflictStrategy"]["prefixes"], json!([{ "server": "mirror", "prefix": "m" }]));

    // --- Invalid overrides are refused naming the field; nothing is stored.
    let refusals = [
        (
            json!({ "server": "everything", "tool": "get-sum", "fixed": [{ "name": "c", "value": 1 }] }),
            "override.fixed.c: the tool has no parameter 'c'",
        ),
        (
            json!({ "server": "everything", "tool": "get-sum", "fixed": [{ "name": "a", "value": "forty" }] }),
            "override.fixed.a: \"forty\" is not of the parameter's type \"number\"",
        ),
        (
            json!({ "server": "everything", "tool": "get-sum", "hidden": ["a"] }),
            "override.hidden.a: 'a' is required by the tool: fix it to a value to hide it",
        ),
        (
            json!({ "server": "everything", "tool": "get-annotated-message", "enums": [{ "name": "messageType", "values": ["success", "fatal"] }] }),
            "override.enums.messageType: \"fatal\" is not one of the tool's values [\"error\",\"success\",\"debug\"]",
        ),
        (
            json!({ "server": "ghost", "tool": "echo", "rename": "x" }),
            "override.server: 'ghost' is not an upstream of virtual server 'dev'",
        ),
    ];
    for (o, expected) in refusals {
        let (code, message) = admin.err(SET_OVERRIDE, json!({ "o": o })).await;
        assert_eq!(code, "INVALID_INPUT", "{o}: {message}");
        assert!(message.starts_with(expected), "{o}: expected '{expected}…', got '{message}'");
    }
    let none = admin.ok(r#"{ virtualServers(tenant: "acme") { overrides { tool } } }"#, json!({})).await;
    assert_eq!(none["virtualServers"][0]["overrides"], json!([]), "no refused override was stored");

    // --- The overrides.
    for o in [
        json!({ "server": "everything", "tool": "get-sum", "rename": "add-forty", "description": "Adds 40 to b",
                "fixed": [{ "name": "a", "value": 40 }] }),
        json!({ "server": "everything", "tool": "get-annotated-message", "enums": [{ "name": "messageType", "values": ["success"] }] }),
        json!({ "server": "mirror", "tool": "echo", "fixed": [{ "name": "message", "value": "from-gateway" }] }),
    ] {
        admin.ok(SET_OVERRIDE, json!({ "o": o })).await;
    }
    let effective = admin
        .ok(
            r#"{ virtualServerTools(tenant: "acme", virtualServer: "dev") { exposed server tool overridden } }"#,
            json!({}),
        )
        .await;
    let effective = effective["virtualServerTools"].as_array().unwrap();
    let find = |exposed: &str| effective.iter().find(|t| t["exposed"] == exposed).cloned();
    assert_eq!(find("add-forty").unwrap()["tool"], "get-sum");
    // everything's get-sum is renamed away, so mirror's keeps the bare name; echo clashes.
    assert_eq!(find("get-sum").unwrap()["server"], "mirror");
    assert_eq!(find("m__get-annotated-message").unwrap()["server"], "mirror", "priority prefixes the second");
    assert_eq!(find("echo").unwrap()["server"], "everything");
    assert_eq!(find("m__echo").unwrap()["overridden"], true);

    // --- What the client sees and gets.
    let out = mcp_client(
        &endpoint,
        &secret,
        json!([
            ["list_full"],
            ["call", "add-forty", { "b": 2 }],
            ["call", "add-forty", { "a": 1, "b": 2 }],
            ["call", "get-annotated-message", { "messageType": "success" }],
            ["call", "get-annotated-message", { "messageType": "error" }],
            ["call", "echo", { "message": "hi" }],
            ["call", "m__echo", {}],
            ["call", "get-sum", { "a": 1, "b": 2 }],
        ]),
    )
    .await;
    let r = &out["results"];
    let tools = r[0]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    // Granted tools only, in upstream order: everything's (renamed), then mirror's echo (prefixed).
    assert_eq!(names, ["echo", "get-annotated-message", "add-forty", "m__echo"], "{r}");
    let add = tools.iter().find(|t| t["name"] == "add-forty").unwrap();
    assert_eq!(add["description"], "Adds 40 to b");
    let properties: Vec<&String> = add["inputSchema"]["properties"].as_object().unwrap().keys().collect();
    assert_eq!(properties, ["b"], "the fixed parameter is hidden: {add}");
    assert_eq!(add["inputSchema"]["required"], json!(["b"]));
    let annotated = tools.iter().find(|t| t["name"] == "get-annotated-message").unwrap();
    assert_eq!(annotated["inputSchema"]["properties"]["messageType"]["enum"], json!(["success"]));
    let m_echo = tools.iter().find(|t| t["name"] == "m__echo").unwrap();
    assert!(m_echo["inputSchema"]["properties"].as_object().unwrap().is_empty(), "{m_echo}");

    assert_eq!(text(&r[1]), "The sum of 40 and 2 is 42.", "the upstream got the injected a: {}", r[1]);
    assert_eq!(r[2]["error"]["code"], -32602, "{}", r[2]);
    assert_eq!(
        r[2]["error"]["message"],
        "parameter 'a' of tool 'add-forty' is fixed by this virtual server; do not send it"
    );
    assert_eq!(r[2]["error"]["data"]["param"], "a");
    assert_eq!(r[3]["isError"], false, "{}", r[3]);
    assert_eq!(r[4]["error"]["code"], -32602, "{}", r[4]);
    assert_eq!(
        r[4]["error"]["message"],
        "parameter 'messageType' of tool 'get-annotated-message' must be one of [\"success\"]"
    );
    assert_eq!(text(&r[5]), "Echo: hi");
    assert_eq!(text(&r[6]), "Echo: from-gateway", "the mirror's echo, allowed on the injected message: {}", r[6]);
    assert_eq!(r[7]["error"]["data"]["code"], "TOOL_NOT_GRANTED", "{}", r[7]);

    // --- Audit keeps the upstream tool name, and the name the client called beside it.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let events = admin
            .ok(
                r#"{ auditEvents(tenant: "acme", limit: 200) { method tool exposedTool upstreamServer outcome reason } }"#,
                json!({}),
            )
            .await;
        let events = events["auditEvents"].as_array().unwrap();
        let sum_calls: Vec<&Value> =
            events.iter().filter(|e| e["method"] == "tools/call" && e["tool"] == "get-sum").collect();
        if sum_calls.len() >= 3 {
            assert!(
                sum_calls.iter().any(|e| e["outcome"] == "allowed" && e["upstreamServer"] == "everything"),
                "{events:?}"
            );
            assert!(sum_calls.iter().any(|e| e["outcome"] == "invalid"), "{events:?}");
            assert!(
                sum_calls.iter().any(|e| e["outcome"] == "denied" && e["upstreamServer"] == "mirror"),
                "{events:?}"
            );
            // everything's get-sum was called as `add-forty`; mirror's keeps its name.
            for e in &sum_calls {
                let exposed = if e["upstreamServer"] == "everything" { "add-forty" } else { "get-sum" };
                assert_eq!(e["exposedTool"], exposed, "{e}");
            }
            let prefixed = events.iter().find(|e| e["exposedTool"] == "m__echo").expect("the m__echo call");
            assert_eq!((&prefixed["tool"], &prefixed["upstreamServer"]), (&json!("echo"), &json!("mirror")));
            break;
        }
        assert!(Instant::now() < deadline, "no audit events for the get-sum calls: {events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // --- Another tenant's admin cannot see or change any of it.
    let globex = globex_admin(&admin, &gh.control).await;
    let (code, _) =
        globex.err(SET_OVERRIDE, json!({ "o": { "server": "everything", "tool": "echo", "rename": "x" } })).await;
    assert_eq!(code, "NOT_FOUND");
    let (code, _) =
        globex.err(r#"{ virtualServerTools(tenant: "acme", virtualServer: "dev") { exposed } }"#, json!({})).await;
    assert_eq!(code, "NOT_FOUND");
}
