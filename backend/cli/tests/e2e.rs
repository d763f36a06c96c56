//! End to end, with real peers: `gatehouse serve` (the real binary, SQLite in a temp dir), the
//! official MCP reference server (`@modelcontextprotocol/server-everything`) as the upstream, and
//! the official Python MCP SDK as the client. Walks the skeleton's user story: configure a tenant
//! over GraphQL, connect a client through the gateway, see policy enforced and audited, change the
//! policy and see it take effect without a restart, and try to cross from one tenant into another.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

mod common;

use common::*;

fn tool_names(result: &Value) -> Vec<String> {
    let mut names: Vec<String> =
        result["tools"].as_array().expect("a tools list").iter().map(|t| t.as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

const SET_GRANTS: &str = "mutation($g: [GrantInput!]!) { setRoleGrants(tenant: \"acme\", role: \"analyst\", grants: $g) { grants { server tool } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walking_skeleton_end_to_end() {
    let (_everything, upstream_url) = start_everything();
    let gh = start_gatehouse();
    let admin = Gql::sign_in(&gh.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;

    // Step 2: configure a tenant.
    admin.ok(r#"mutation { createTenant(slug: "acme", name: "Acme Corp") { slug } }"#, json!({})).await;
    let server = admin
        .ok(
            "mutation($url: String!) { registerServer(tenant: \"acme\", slug: \"everything\", name: \"Everything\", url: $url) { slug tools { name } } }",
            json!({ "url": upstream_url }),
        )
        .await;
    let tools: Vec<&str> =
        server["registerServer"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(tools.contains(&"echo") && tools.contains(&"get-sum"), "tools fetched from the upstream: {tools:?}");
    admin
        .ok(
            r#"mutation { createRole(tenant: "acme", slug: "analyst", description: "reads things") { slug } }"#,
            json!({}),
        )
        .await;
    admin.ok(SET_GRANTS, json!({ "g": [{ "server": "everything", "tool": "echo" }] })).await;
    admin
        .ok(
            r#"mutation { createUser(tenant: "acme", email: "alice@acme.test", displayName: "Alice") { id } }"#,
            json!({}),
        )
        .await;
    let role = admin
        .ok(
            r#"mutation { bindRole(tenant: "acme", role: "analyst", email: "alice@acme.test") { members } }"#,
            json!({}),
        )
        .await;
    assert_eq!(role["bindRole"]["members"], json!(["alice@acme.test"]));
    let vs = admin
        .ok(
            r#"mutation { createVirtualServer(tenant: "acme", slug: "dev", name: "Dev tools", servers: ["everything"]) { endpoint } }"#,
            json!({}),
        )
        .await;
    let endpoint = vs["createVirtualServer"]["endpoint"].as_str().unwrap().to_owned();
    assert_eq!(endpoint, format!("{}/mcp/acme/dev", gh.gateway));
    let token = admin
        .ok(r#"mutation { createToken(tenant: "acme", userEmail: "alice@acme.test", name: "laptop") { secret token { prefix } } }"#, json!({}))
        .await;
    let secret = token["createToken"]["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(token["createToken"]["token"]["prefix"].as_str().unwrap()));

    // Step 3: a real MCP client through the gateway. The bundle reaches the worker asynchronously,
    // so allow it a bounded moment to arrive.
    let steps = json!([["list"], ["call", "echo", { "message": "hello through the gateway" }], ["call", "get-sum", { "a": 1, "b": 2 }]]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        let out = mcp_client(&endpoint, &secret, steps.clone()).await;
        if out["results"][0].get("tools").is_some() || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(tool_names(&first["results"][0]), vec!["echo"], "only the granted tool is listed: {first}");
    let echoed = first["results"][1]["content"][0]["text"].as_str().unwrap_or_default();
    assert!(echoed.contains("hello through the gateway"), "the upstream's echo came back: {first}");
    let denied = &first["results"][2]["error"];
    assert_eq!(denied["code"], -32003, "a call outside the grant is refused: {first}");
    assert!(denied["message"].as_str().unwrap().contains("get-sum"), "the refusal says which tool: {denied}");
    assert_eq!(denied["data"]["code"], "TOOL_NOT_GRANTED");

    // "What can Alice do here, and why?" is answered by the gateway's own evaluator: the same
    // decision and the same words as the refusal the client just got.
    let explained = admin
        .ok(
            r#"{ explainAccess(tenant: "acme", virtualServer: "dev", userEmail: "alice@acme.test") { bundleRevision tools { server tool allowed role reason } } }"#,
            json!({}),
        )
        .await;
    let access = explained["explainAccess"]["tools"].as_array().unwrap();
    let of = |tool: &str| access.iter().find(|t| t["tool"] == tool).unwrap_or_else(|| panic!("{tool} explained"));
    assert_eq!(of("echo")["allowed"], true);
    assert_eq!(of("echo")["role"], "analyst");
    assert_eq!(of("get-sum")["allowed"], false);
    assert_eq!(of("get-sum")["reason"], denied["message"]);
    assert_eq!(access.iter().filter(|t| t["allowed"] == true).count(), 1, "only echo is granted: {explained}");

    // No token, or a bad one: 401 with the resource-metadata pointer.
    let http = reqwest::Client::new();
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}});
    let expected_challenge =
        format!("Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp/acme/dev\"", gh.gateway);
    for auth in [None, Some("Bearer ghp_not-a-real-token")] {
        let mut req = http.post(&endpoint).header("accept", "application/json, text/event-stream").json(&init);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["www-authenticate"].to_str().unwrap(), expected_challenge);
    }
    // Malformed JSON-RPC is a 400 with a JSON-RPC parse error, not a 500.
    let resp = http
        .post(&endpoint)
        .bearer_auth(&secret)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], -32700);

    // Step 4: the calls are in the audit trail with the full attribution chain.
    let deadline = Instant::now() + Duration::from_secs(15);
    let events = loop {
        let data = admin.ok(
            r#"{ auditEvents(tenant: "acme", limit: 200) { user clientName clientVersion virtualServer upstreamServer method tool outcome reason latencyUs bundleRevision timeMs } }"#,
            json!({}),
        ).await;
        let events = data["auditEvents"].as_array().unwrap().clone();
        let has = |tool: &str, outcome: &str| {
            events.iter().any(|e| e["method"] == "tools/call" && e["tool"] == tool && e["outcome"] == outcome)
        };
        let unauthenticated = events.iter().filter(|e| e["outcome"] == "denied" && e["user"].is_null()).count();
        if (has("echo", "allowed") && has("get-sum", "denied") && unauthenticated >= 2) || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let allowed =
        events.iter().find(|e| e["method"] == "tools/call" && e["tool"] == "echo").expect("the echo call is audited");
    assert_eq!(allowed["user"], "alice@acme.test");
    assert_eq!(allowed["virtualServer"], "dev");
    assert_eq!(allowed["upstreamServer"], "everything");
    assert_eq!(allowed["outcome"], "allowed");
    assert!(allowed["clientName"].as_str().is_some_and(|n| !n.is_empty()), "client name recorded: {allowed}");
    assert!(allowed["clientVersion"].as_str().is_some_and(|n| !n.is_empty()), "client version recorded: {allowed}");
    assert!(allowed["latencyUs"].as_i64().unwrap() > 0);
    assert_eq!(allowed["bundleRevision"].as_str().unwrap().len(), 64);
    let refused = events.iter().find(|e| e["tool"] == "get-sum").expect("the refused call is audited");
    assert_eq!(refused["outcome"], "denied");
    assert!(refused["reason"].as_str().unwrap().contains("get-sum"));
    assert!(events.iter().any(|e| e["method"] == "tools/list" && e["outcome"] == "allowed"));
    assert!(
        events.iter().filter(|e| e["outcome"] == "denied" && e["user"].is_null()).count() >= 2,
        "both 401s are audited too"
    );

    // Step 5: grant another tool while a client session stays open; that same session sees the
    // tool and can call it, without any restart.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/mcp_client.py");
    let steps = json!([["list"], ["mark"], ["list_until", "get-sum", 15], ["call", "get-sum", { "a": 1, "b": 2 }]]);
    let mut child = tokio::process::Command::new(python())
        .arg(script)
        .arg(&endpoint)
        .arg(&secret)
        .arg(steps.to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the Python MCP client hung")
            .unwrap()
            .expect("the Python MCP client ended early");
        serde_json::from_str(&line).unwrap()
    };
    let before = next_line().await;
    assert_eq!(tool_names(&before["results"][0]), vec!["echo"]);
    admin
        .ok(
            SET_GRANTS,
            json!({ "g": [{ "server": "everything", "tool": "echo" }, { "server": "everything", "tool": "get-sum" }] }),
        )
        .await;
    let after = next_line().await;
    assert!(child.wait().await.unwrap().success());
    let seen = &after["results"][2];
    eprintln!("policy change visible in the open session after {} s", seen["seconds"]);
    assert_eq!(tool_names(seen), vec!["echo", "get-sum"], "the open session sees the new grant: {after}");
    assert!(seen["seconds"].as_f64().unwrap() < 15.0);
    let sum = after["results"][3]["content"][0]["text"].as_str().unwrap_or_default();
    assert!(sum.contains('3'), "get-sum now reaches the upstream: {after}");

    // Tenants never see each other.
    admin.ok(r#"mutation { createTenant(slug: "beta", name: "Beta Ltd") { slug } }"#, json!({})).await;
    admin
        .ok(r#"mutation { createUser(tenant: "beta", email: "bob@beta.test", displayName: "Bob", consoleRole: "admin") { id } }"#, json!({}))
        .await;
    let bob_token = admin
        .ok(
            r#"mutation { createToken(tenant: "beta", userEmail: "bob@beta.test", name: "cli") { secret } }"#,
            json!({}),
        )
        .await["createToken"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob = Gql::with_token(&gh.control, &bob_token);
    assert_eq!(bob.ok("{ tenants { slug } }", json!({})).await["tenants"], json!([{ "slug": "beta" }]));
    for q in [
        r#"{ servers(tenant: "acme") { slug } }"#,
        r#"{ auditEvents(tenant: "acme") { id } }"#,
        r#"{ tokens(tenant: "acme") { id } }"#,
    ] {
        assert_eq!(bob.err(q, json!({})).await.0, "NOT_FOUND", "{q}");
    }
    let (code, _) = bob.err(r#"mutation { createRole(tenant: "acme", slug: "evil") { slug } }"#, json!({})).await;
    assert_eq!(code, "NOT_FOUND");
    let (code, _) = bob.err(r#"mutation { createTenant(slug: "gamma", name: "G") { slug } }"#, json!({})).await;
    assert_eq!(code, "FORBIDDEN");
    // Bob's token means nothing on Acme's gateway endpoint.
    let deadline = Instant::now() + Duration::from_secs(5);
    let resp = loop {
        let resp = http
            .post(&endpoint)
            .bearer_auth(&bob_token)
            .header("accept", "application/json, text/event-stream")
            .json(&init)
            .send()
            .await
            .unwrap();
        if resp.status() == 401 || Instant::now() > deadline {
            break resp;
        }
    };
    assert_eq!(resp.status(), 401);

    // Bad input gets specific errors.
    let (code, msg) =
        admin.err(r#"mutation { createTenant(slug: "Not A Slug", name: "x") { slug } }"#, json!({})).await;
    assert_eq!(code, "INVALID_INPUT");
    assert!(msg.starts_with("slug:"), "{msg}");
    let (code, _) = admin.err(r#"mutation { createTenant(slug: "acme", name: "again") { slug } }"#, json!({})).await;
    assert_eq!(code, "CONFLICT");
    let (code, msg) = admin.err(SET_GRANTS, json!({ "g": [{ "server": "everything", "tool": "no-such-tool" }] })).await;
    assert_eq!(code, "INVALID_INPUT");
    assert!(msg.contains("no-such-tool"), "{msg}");
    let (code, _) = admin
        .err(r#"mutation { registerServer(tenant: "acme", slug: "down", name: "Down", url: "http://127.0.0.1:9/mcp") { slug } }"#, json!({}))
        .await;
    assert_eq!(code, "UPSTREAM_UNAVAILABLE");
    assert!(
        admin.ok(r#"{ servers(tenant: "acme") { slug } }"#, json!({})).await["servers"].as_array().unwrap().len() == 1,
        "a failed registration stores nothing"
    );
    let anonymous = Gql::anonymous(&gh.control);
    assert_eq!(anonymous.err("{ me { email } }", json!({})).await.0, "UNAUTHENTICATED");
    let resp = http
        .post(format!("{}/auth/login", gh.control))
        .header("origin", &gh.control)
        .json(&json!({"email": ADMIN_EMAIL, "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "INVALID_CREDENTIALS");
    // A cross-site sign-in (login CSRF) is refused even without a cookie.
    let resp = http
        .post(format!("{}/auth/login", gh.control))
        .header("origin", "http://evil.example")
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // A cookie-authenticated change without a same-origin proof is refused (CSRF).
    let resp = http
        .post(format!("{}/graphql", gh.control))
        .header("cookie", admin.cookie().unwrap())
        .header("origin", "http://evil.example")
        .json(&json!({ "query": r#"mutation { createTenant(slug: "csrf", name: "x") { slug } }"# }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "CSRF_REJECTED");
    assert_eq!(
        admin.ok("{ tenants { slug } }", json!({})).await["tenants"],
        json!([{"slug":"acme"},{"slug":"beta"},{"slug":"platform"}])
    );
}
