//! stdio and legacy HTTP+SSE upstream servers (issue 3, `docs/decisions/0016-stdio-and-sse-upstreams.md`)
//! with real peers: `gatehouse serve` allowed to launch `node` only, the MCP reference server
//! (`@modelcontextprotocol/server-everything`) registered once as a **stdio** server the worker
//! launches and once in its legacy **sse** mode, and the official Python SDK client through each
//! (tools listed and called, a long operation with progress, a sampling request, resources,
//! prompts, ping). The child sees none of the worker's environment, and a command off the
//! allow-list is refused and never launched.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Set on the gatehouse process: a stdio child must never see it.
const CANARY: (&str, &str) = ("WORKER_SECRET_CANARY", "canary-7f3a9b");

const REGISTER: &str = "mutation($slug: String!, $transport: String, $url: String, $command: String, $args: [String!] = []) { registerServer(tenant: \"acme\", slug: $slug, name: $slug, transport: $transport, url: $url, command: $command, args: $args) { slug transport command args tools { name } } }";

fn everything_js() -> String {
    peers_dir().join("@modelcontextprotocol/server-everything/dist/index.js").to_string_lossy().into_owned()
}

/// server-everything in its legacy HTTP+SSE mode; returns its SSE URL.
fn start_everything_sse() -> (Proc, String) {
    let port = free_port();
    let child = Command::new("node")
        .arg("--require")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/bind-localhost.cjs"))
        .arg(everything_js())
        .arg("sse")
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node must be installed");
    let proc = Proc(child);
    wait_for_tcp(port, "server-everything (sse)");
    (proc, format!("http://127.0.0.1:{port}/sse"))
}

/// A virtual server `vs` over `server`, all its tools granted to alice; returns the endpoint.
async fn virtual_server(admin: &Gql, vs: &str, server: &str) -> String {
    admin
        .ok(
            "mutation($g: [GrantInput!]!) { setRoleGrants(tenant: \"acme\", role: \"analyst\", grants: $g) { slug } }",
            json!({ "g": [{ "server": "local", "tool": "*" }, { "server": "legacy", "tool": "*" }] }),
        )
        .await;
    let created = admin
        .ok(
            "mutation($vs: String!, $s: String!) { createVirtualServer(tenant: \"acme\", slug: $vs, name: $vs, servers: [$s]) { endpoint } }",
            json!({ "vs": vs, "s": server }),
        )
        .await;
    created["createVirtualServer"]["endpoint"].as_str().unwrap().to_owned()
}

/// Waits until the worker serves `endpoint` (it picks bundles up by long poll), then ends the
/// probe's session (and with it the upstream session: a stdio child).
async fn served(endpoint: &str, token: &str) {
    let http = reqwest::Client::new();
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"probe","version":"1"}}});
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = http
            .post(endpoint)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(&init)
            .send()
            .await
            .unwrap();
        let status = r.status();
        if status == 200 {
            let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
            let ended = http.delete(endpoint).bearer_auth(token).header("mcp-session-id", sid).send().await.unwrap();
            assert!(ended.status().is_success(), "DELETE of the probe's session: {}", ended.status());
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the gateway never served {endpoint} ({status})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Python SDK's full walk through the gateway (`tests/peers/proxy_client.py`).
async fn walk(endpoint: &str, token: &str) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/proxy_client.py");
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        // Pinned to the 2025 era: the walk answers a server-initiated sampling request.
        tokio::process::Command::new(python())
            .arg(script)
            .arg(endpoint)
            .arg(token)
            .arg("legacy")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the Python client hung")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "Python client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn check(what: &str, out: &Value) {
    let tools: Vec<&str> = out["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    for tool in ["echo", "trigger-long-running-operation", "trigger-sampling-request"] {
        assert!(tools.contains(&tool), "{what}: {tool} listed: {tools:?}");
    }
    assert!(out["echo"][0]["text"].as_str().unwrap().contains("hi from"), "{what}: echo: {out}");
    let progress = out["long"]["progress"].as_array().unwrap();
    assert!(progress.len() >= 2, "{what}: progress notifications arrive through the gateway: {out}");
    assert!(out["long"]["content"][0]["text"].as_str().unwrap().contains("completed"), "{what}: {out}");
    assert_eq!(out["sampling"]["handled"], 1, "{what}: the sampling request reached the client: {out}");
    assert!(out["sampling"]["content"][0]["text"].as_str().unwrap().contains("sampled by"), "{what}: {out}");
    assert!(out["resources"].as_u64().unwrap() > 0, "{what}: {out}");
    let prompts: Vec<&str> = out["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(prompts.contains(&"simple-prompt"), "{what}: {prompts:?}");
    assert!(!out["ping"].is_null(), "{what}: {out}");
}

/// Processes whose command line names `marker`.
fn processes_naming(marker: &str) -> usize {
    let out = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(marker) && !l.contains("ps -eo")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_and_sse_servers_work_through_the_gateway_and_stdio_is_confined() {
    let (_sse, sse_url) = start_everything_sse();
    let gh = start_gatehouse_with(&[("GATEHOUSE_STDIO_COMMANDS", "node"), CANARY]);
    let admin = Gql::sign_in(&gh.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    admin.ok(r#"mutation { createTenant(slug: "acme", name: "Acme") { slug } }"#, json!({})).await;

    // Registration reads the tools of each through the control plane's own bridge.
    let local = admin
        .ok(
            REGISTER,
            json!({ "slug": "local", "transport": "stdio", "command": "node", "args": [everything_js(), "stdio"] }),
        )
        .await;
    assert_eq!(local["registerServer"]["transport"], "stdio");
    assert_eq!(local["registerServer"]["command"], "node");
    assert!(local["registerServer"]["tools"].as_array().unwrap().iter().any(|t| t["name"] == "get-env"));
    let legacy = admin.ok(REGISTER, json!({ "slug": "legacy", "transport": "sse", "url": sse_url })).await;
    assert_eq!(legacy["registerServer"]["transport"], "sse");
    assert!(legacy["registerServer"]["tools"].as_array().unwrap().iter().any(|t| t["name"] == "echo"));

    // A command off the allow-list is refused by name and never runs.
    let marker = tempfile::tempdir().unwrap();
    let touched = marker.path().join("launched");
    let (code, message) = admin
        .err(
            REGISTER,
            json!({ "slug": "evil", "transport": "stdio", "command": "/usr/bin/touch", "args": [touched.to_str().unwrap()] }),
        )
        .await;
    assert_eq!(code, "INVALID_INPUT");
    assert!(message.starts_with("command: ") && message.contains("stdio_commands"), "{message}");
    assert!(!touched.exists(), "a command off the allow-list was launched");
    let (code, message) =
        admin.err(REGISTER, json!({ "slug": "rel", "transport": "stdio", "command": "bin/server" })).await;
    assert_eq!((code.as_str(), message.contains("relative path")), ("INVALID_INPUT", true), "{message}");
    let (code, message) = admin.err(REGISTER, json!({ "slug": "nourl", "transport": "sse" })).await;
    assert_eq!((code.as_str(), message.starts_with("url: ")), ("INVALID_INPUT", true), "{message}");

    // Alice, with every tool of both servers.
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
    let stdio_endpoint = virtual_server(&admin, "stdio", "local").await;
    let sse_endpoint = virtual_server(&admin, "legacy", "legacy").await;
    let token = admin
        .ok(
            r#"mutation { createToken(tenant: "acme", userEmail: "alice@acme.test", name: "laptop") { secret } }"#,
            json!({}),
        )
        .await["createToken"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    served(&stdio_endpoint, &token).await;
    served(&sse_endpoint, &token).await;

    let out = walk(&stdio_endpoint, &token).await;
    eprintln!("through the stdio server: {out}");
    check("stdio", &out);
    let out = walk(&sse_endpoint, &token).await;
    eprintln!("through the legacy SSE server: {out}");
    check("sse", &out);

    // The stdio child's environment: only PATH and HOME of the worker's, none of its secrets. Pinned
    // to the 2025 era: the check below is that a client session's child ends with the session (its
    // DELETE); a 2026-07-28 client has no session, and its pooled upstream session (with its child)
    // lives until the worker forgets it (decision 0018).
    let env = mcp_client_in(&stdio_endpoint, &token, json!([["call", "get-env", {}]]), "legacy").await;
    let text = env["results"][0]["content"][0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("PATH"), "get-env answered: {env}");
    for secret in [CANARY.1, ADMIN_PASSWORD, "GATEHOUSE_"] {
        assert!(!text.contains(secret), "the stdio child saw {secret}: {text}");
    }

    // Each client session had its own child, ended with the session (the clients are done).
    let stdio_children = format!("{} stdio", everything_js());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while processes_naming(&stdio_children) > 0 {
        assert!(std::time::Instant::now() < deadline, "stdio children outlived their sessions");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
