//! Gatehouse as a complete MCP proxy, with real peers: `gatehouse serve` (the real binary), the MCP
//! reference server (`@modelcontextprotocol/server-everything`) behind a virtual server, and the
//! official TypeScript and Python SDK clients through it. Each client lists and calls tools, runs a
//! long operation and receives its progress notifications, answers a sampling request the server
//! sends in the middle of a tool call, lists and reads resources, lists and gets prompts, and pings.
//! The MCP Inspector's CLI (`@modelcontextprotocol/inspector --cli`, on the v2 SDK client) then lists,
//! calls, reads and gets through the same virtual server, one process per method as a developer runs it.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const SET_GRANTS: &str = "mutation($g: [GrantInput!]!) { setRoleGrants(tenant: \"acme\", role: \"analyst\", grants: $g) { grants { server tool } } }";

/// A tenant with server-everything behind virtual server `dev`, all its tools granted to alice;
/// returns the endpoint and alice's token.
async fn configure(gh: &Gatehouse, upstream_url: &str) -> (String, String) {
    let admin = Gql::sign_in(&gh.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    admin.ok(r#"mutation { createTenant(slug: "acme", name: "Acme Corp") { slug } }"#, json!({})).await;
    admin
        .ok(
            "mutation($url: String!) { registerServer(tenant: \"acme\", slug: \"everything\", name: \"Everything\", url: $url) { slug } }",
            json!({ "url": upstream_url }),
        )
        .await;
    admin
        .ok(r#"mutation { createRole(tenant: "acme", slug: "analyst", description: "all") { slug } }"#, json!({}))
        .await;
    // Granted by name: the sampling tool exists only for clients that declare sampling, so this also
    // checks that the control plane's tool discovery declares the capabilities the gateway relays.
    let grants: Vec<Value> = ["echo", "trigger-long-running-operation", "trigger-sampling-request"]
        .iter()
        .map(|t| json!({ "server": "everything", "tool": t }))
        .collect();
    admin.ok(SET_GRANTS, json!({ "g": grants })).await;
    admin
        .ok(
            r#"mutation { createUser(tenant: "acme", email: "alice@acme.test", displayName: "Alice") { id } }"#,
            json!({}),
        )
        .await;
    admin
        .ok(
            r#"mutation { bindRole(tenant: "acme", role: "analyst", email: "alice@acme.test") { members } }"#,
            json!({}),
        )
        .await;
    let vs = admin
        .ok(
            r#"mutation { createVirtualServer(tenant: "acme", slug: "dev", name: "Dev", servers: ["everything"]) { endpoint } }"#,
            json!({}),
        )
        .await;
    let endpoint = vs["createVirtualServer"]["endpoint"].as_str().unwrap().to_owned();
    let token = admin
        .ok(
            r#"mutation { createToken(tenant: "acme", userEmail: "alice@acme.test", name: "laptop") { secret } }"#,
            json!({}),
        )
        .await["createToken"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    // The worker picks the bundle up by long poll: wait until initialize works.
    let http = reqwest::Client::new();
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"probe","version":"1"}}});
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = http
            .post(&endpoint)
            .bearer_auth(&token)
            .header("accept", "application/json, text/event-stream")
            .json(&init)
            .send()
            .await
            .unwrap()
            .status();
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the gateway never served the virtual server ({status})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (endpoint, token)
}

/// Runs a peer script (at most 90 s) and parses the JSON line it prints.
async fn run_peer(program: PathBuf, args: &[&str]) -> Value {
    let peers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers");
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(&program).args(args).current_dir(&peers).kill_on_drop(true).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{} {args:?} hung", program.display()))
    .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// What both SDK clients must have seen.
fn check(client: &str, out: &Value) {
    let tools: Vec<&str> = out["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    for tool in ["echo", "trigger-long-running-operation", "trigger-sampling-request"] {
        assert!(tools.contains(&tool), "{client}: {tool} listed: {tools:?}");
    }
    let echo = out["echo"][0]["text"].as_str().unwrap();
    assert!(echo.contains("hi from"), "{client}: echo: {out}");
    let progress = out["long"]["progress"].as_array().unwrap();
    assert!(progress.len() >= 2, "{client}: progress notifications arrive through the gateway: {out}");
    assert!(out["long"]["content"][0]["text"].as_str().unwrap().contains("completed"), "{client}: {out}");
    assert_eq!(out["sampling"]["handled"], 1, "{client}: the sampling request reached the client: {out}");
    let sampled = out["sampling"]["content"][0]["text"].as_str().unwrap();
    assert!(sampled.contains("sampled by"), "{client}: the client's answer reached the server: {out}");
    assert!(out["resources"].as_u64().unwrap() > 0, "{client}: {out}");
    assert!(!out["read"].is_null(), "{client}: {out}");
    let prompts: Vec<&str> = out["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(prompts.contains(&"simple-prompt"), "{client}: {prompts:?}");
    assert!(out["prompt"].as_array().is_some_and(|m| !m.is_empty()), "{client}: {out}");
    assert!(!out["ping"].is_null(), "{client}: {out}");
}

/// What a 2026-07-28 client must have seen: tools (the sampling tool is not offered, since the
/// gateway declares no sampling capability upstream for such clients), a call, a long call with its
/// progress on the request's stream, resources and prompts.
fn check_2026(client: &str, out: &Value) {
    assert_eq!(out["protocolVersion"], "2026-07-28", "{client}: the client adopted server/discover: {out}");
    let tools: Vec<&str> = out["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(tools.contains(&"echo") && tools.contains(&"trigger-long-running-operation"), "{client}: {tools:?}");
    assert!(!tools.contains(&"trigger-sampling-request"), "{client}: sampling is not relayed: {tools:?}");
    assert!(out["echo"][0]["text"].as_str().unwrap().contains("hi from"), "{client}: echo: {out}");
    let progress = out["long"]["progress"].as_array().unwrap();
    assert!(progress.len() >= 2, "{client}: progress arrives on the request's stream: {out}");
    assert!(out["long"]["content"][0]["text"].as_str().unwrap().contains("completed"), "{client}: {out}");
    assert!(out["resources"].as_u64().unwrap() > 0, "{client}: {out}");
    assert!(!out["read"].is_null(), "{client}: {out}");
    let prompts: Vec<&str> = out["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(prompts.contains(&"simple-prompt"), "{client}: {prompts:?}");
    assert!(out["prompt"].as_array().is_some_and(|m| !m.is_empty()), "{client}: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdk_clients_use_every_feature_through_the_gateway() {
    let (_everything, upstream_url) = start_everything();
    let gh = start_gatehouse();
    let (endpoint, token) = configure(&gh, &upstream_url).await;

    let ts = run_peer(PathBuf::from("node"), &["proxy_client.mjs", &endpoint, &token]).await;
    eprintln!("TypeScript SDK client: {ts}");
    assert_eq!(ts["protocolVersion"], "2025-11-25");
    for capability in ["tools", "resources", "prompts"] {
        assert!(ts["capabilities"].get(capability).is_some(), "{capability} advertised: {}", ts["capabilities"]);
    }
    check("TypeScript", &ts);

    // Pinned to the 2025 era ("legacy"): the walk answers a sampling request in the middle of a tool
    // call, which only 2025-era clients can receive (GET stream / request stream relaying).
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/proxy_client.py");
    let py = run_peer(python(), &[script.to_str().unwrap(), &endpoint, &token, "legacy"]).await;
    eprintln!("Python SDK client (2025 era): {py}");
    assert_eq!(py["protocolVersion"], "2025-11-25", "the Python client pinned to the handshake era");
    check("Python", &py);

    // The same client in its default mode probes server/discover and speaks 2026-07-28 through the
    // gateway, to the 2025-era server-everything behind it.
    let modern = run_peer(python(), &[script.to_str().unwrap(), &endpoint, &token, "auto"]).await;
    eprintln!("Python SDK client (2026-07-28): {modern}");
    check_2026("Python 2026-07-28", &modern);

    inspector_cli(&endpoint, &token).await;
}

/// One `mcp-inspector --cli` run (at most 60 s): the JSON it prints, or its error output.
async fn inspector(catalog: &std::path::Path, endpoint: &str, token: &str, args: &[&str]) -> Result<Value, String> {
    let launcher = peers_dir().join("@modelcontextprotocol/inspector/clients/launcher/build/index.js");
    let auth = format!("Authorization: Bearer {token}");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .arg(&launcher)
            .args(["--cli", endpoint, "--transport", "http", "--header", &auth])
            .args(args)
            // Its catalog of known servers goes to a scratch file, not the home directory.
            .env("MCP_CATALOG_PATH", catalog)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("mcp-inspector --cli {args:?} hung"))
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stdout}"))
}

/// The MCP Inspector CLI through the gateway: it sees the granted tools only, calls one, reads a
/// resource, gets a prompt, and cannot reach an ungranted tool.
async fn inspector_cli(endpoint: &str, token: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let catalog = scratch.path().join("mcp.json");
    let run = |args: &'static [&'static str]| {
        let catalog = catalog.clone();
        async move {
            inspector(&catalog, endpoint, token, args)
                .await
                .unwrap_or_else(|e| panic!("mcp-inspector --cli {args:?} failed through the gateway: {e}"))
        }
    };

    let listed = run(&["--method", "tools/list"]).await;
    let mut tools: Vec<&str> =
        listed["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    tools.sort_unstable();
    // Granted are echo, the long operation and the sampling tool; the upstream offers the sampling
    // tool only to clients that declare sampling, which the Inspector's CLI does not.
    assert_eq!(tools, ["echo", "trigger-long-running-operation"], "Inspector: {listed}");

    let echoed =
        run(&["--method", "tools/call", "--tool-name", "echo", "--tool-arg", "message=from the inspector"]).await;
    assert_eq!(echoed["content"][0]["text"], "Echo: from the inspector", "Inspector: {echoed}");

    let resources = run(&["--method", "resources/list"]).await;
    let first =
        resources["resources"][0]["uri"].as_str().unwrap_or_else(|| panic!("Inspector: {resources}")).to_owned();
    let read = inspector(&catalog, endpoint, token, &["--method", "resources/read", "--uri", &first])
        .await
        .unwrap_or_else(|e| panic!("mcp-inspector resources/read {first}: {e}"));
    assert_eq!(read["contents"][0]["uri"], first.as_str(), "Inspector: {read}");

    let prompts = run(&["--method", "prompts/list"]).await;
    assert!(
        prompts["prompts"].as_array().unwrap().iter().any(|p| p["name"] == "simple-prompt"),
        "Inspector: {prompts}"
    );
    let prompt = run(&["--method", "prompts/get", "--prompt-name", "simple-prompt"]).await;
    assert!(prompt["messages"].as_array().is_some_and(|m| !m.is_empty()), "Inspector: {prompt}");

    // A tool the role does not grant (server-everything has it): the gateway leaves it out of the
    // list, so the Inspector, which looks a tool up before calling it, does not find it.
    let refused = inspector(&catalog, endpoint, token, &["--method", "tools/call", "--tool-name", "get-env"]).await;
    let refusal = match refused {
        Ok(answer) => panic!("Inspector called an ungranted tool: {answer}"),
        Err(output) => output,
    };
    assert!(refusal.contains("\"tool_not_found\""), "Inspector: {refusal}");
}
