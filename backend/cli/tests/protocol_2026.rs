//! The MCP 2026-07-28 era through `gatehouse serve` with real peers: a 2026-07-28 upstream (the
//! official Python SDK's `MCPServer`, `tests/peers/modern_server.py`) that the gateway finds by its
//! `server/discover` probe and then speaks to per request (envelope, mirrored headers including
//! `Mcp-Param-Region`, no session), for a 2026-07-28 client (the Python SDK in its default mode) and
//! for a 2025-era client (raw HTTP with the handshake); and an `input_required` result (MRTR)
//! passing through to a 2026-07-28 client and its retry back. The 2025-era upstream case is covered by
//! `proxy_peers.rs` (server-everything) and `backend/gateway/tests/protocol_2026.rs`.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

/// The Python SDK's 2026-07-28 server on a free port: (process, MCP URL).
fn start_modern_server() -> (Proc, String) {
    let port = free_port();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/modern_server.py");
    let child = Command::new(python())
        .arg(script)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the Python interpreter of GATEHOUSE_PYTHON");
    let proc = Proc(child);
    wait_for_tcp(port, "the 2026-07-28 Python server");
    (proc, format!("http://127.0.0.1:{port}/mcp"))
}

/// One JSON-RPC message POSTed as a 2025-era client: the answer (the response message of a JSON or
/// SSE body) and every SSE message before it.
async fn post_2025(
    endpoint: &str,
    token: &str,
    session: Option<&str>,
    body: Value,
) -> (Value, Vec<Value>, Option<String>) {
    let mut request = reqwest::Client::new()
        .post(endpoint)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    if let Some(session) = session {
        request = request.header("mcp-session-id", session).header("mcp-protocol-version", "2025-11-25");
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{body}");
    let session = response.headers().get("mcp-session-id").map(|v| v.to_str().unwrap().to_owned());
    let sse = response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream");
    let text = response.text().await.unwrap();
    if !sse {
        return (serde_json::from_str(&text).unwrap(), Vec::new(), session);
    }
    let messages: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect();
    let answer = messages.iter().rev().find(|m| m.get("id").is_some() && m.get("method").is_none()).cloned().unwrap();
    (answer, messages, session)
}

/// A raw 2026-07-28 `tools/call` of `tool` (a client declaring elicitation), with `extra` params
/// merged in: the answer message and the HTTP status.
async fn post_2026(
    endpoint: &str,
    token: &str,
    id: i64,
    tool: &str,
    arguments: Value,
    extra: Option<Value>,
) -> (Value, u16) {
    let mut params = json!({"name": tool, "arguments": arguments, "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
        "io.modelcontextprotocol/clientInfo": {"name": "raw-2026", "version": "1"}}});
    for (key, value) in extra.as_ref().and_then(Value::as_object).into_iter().flatten() {
        params[key] = value.clone();
    }
    let response = reqwest::Client::new()
        .post(endpoint)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let sse = response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream");
    let text = response.text().await.unwrap();
    let answer = if sse {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .rfind(|m| m.get("id").is_some())
            .unwrap_or_else(|| panic!("no answer in {text}"))
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (answer, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2026_upstream_is_probed_and_spoken_to_in_its_era() {
    let (_server, upstream_url) = start_modern_server();
    let gh = start_gatehouse();
    let admin = Gql::sign_in(&gh.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (endpoint, token) =
        acme_with_alice(&admin, &upstream_url, "analyst", &["echo", "where", "slow", "confirm"]).await;

    // A 2026-07-28 client to a 2026-07-28 upstream. `where` answers with the Mcp-Param-Region
    // header it received: the server refuses a call whose header is missing, so the text proves
    // the gateway mirrored the argument (Base64-encoded when it is not plain ASCII).
    let steps = json!([["list"], ["call", "where", {"region": "eu-west"}], ["call", "where", {"region": "Zürich"}],
                       ["call", "echo", {"message": "hi"}]]);
    let modern = mcp_client(&endpoint, &token, steps).await;
    eprintln!("2026-07-28 client: {modern}");
    assert_eq!(modern["protocolVersion"], "2026-07-28", "{modern}");
    let results = &modern["results"];
    let mut tools: Vec<&str> = results[0]["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    tools.sort_unstable();
    assert_eq!(tools, ["confirm", "echo", "slow", "where"]);
    assert_eq!(results[1]["content"][0]["text"], "region=eu-west header=eu-west", "{modern}");
    let zurich = results[2]["content"][0]["text"].as_str().unwrap();
    assert!(zurich.starts_with("region=Zürich header==?base64?"), "{zurich}");
    assert_eq!(results[3]["content"][0]["text"], "modern echo: hi");

    // MRTR passes through: the upstream's `input_required` result (an elicitation, offered because
    // the client declared it) reaches the 2026-07-28 client, whose retry with `inputResponses` and
    // the echoed `requestState` reaches the upstream, which then answers.
    let (first, _) = post_2026(&endpoint, &token, 7, "confirm", json!({"what": "delete"}), None).await;
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let (key, request) = first["result"]["inputRequests"].as_object().unwrap().iter().next().unwrap();
    assert_eq!(request["method"], "elicitation/create");
    assert_eq!(request["params"]["message"], "Really delete?");
    let retry = json!({"inputResponses": {key: {"action": "accept", "content": {"ok": true}}},
                       "requestState": first["result"]["requestState"]});
    let (done, _) = post_2026(&endpoint, &token, 8, "confirm", json!({"what": "delete"}), Some(retry)).await;
    assert_eq!(done["result"]["content"][0]["text"], "delete: confirmed=True", "{done}");
    assert_eq!(done["result"]["resultType"], "complete");

    // A 2025-era client (handshake and session with the gateway) to the same upstream: the gateway
    // still speaks 2026-07-28 upstream, and relays the progress of the request's stream.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
    let (init, _, session) = post_2025(&endpoint, &token, None, init).await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    assert!(init["result"]["capabilities"].get("resources").is_some(), "{init}");
    let session = session.expect("a session id");
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "where", "arguments": {"region": "us-east"}}});
    let (answer, _, _) = post_2025(&endpoint, &token, Some(&session), call).await;
    assert_eq!(answer["result"]["content"][0]["text"], "region=us-east header=us-east", "{answer}");
    assert!(answer["result"].get("resultType").is_none(), "no 2026-07-28 fields for a 2025 client: {answer}");
    let slow = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": 3}, "_meta": {"progressToken": "tok"}}});
    let (answer, messages, _) = post_2025(&endpoint, &token, Some(&session), slow).await;
    assert_eq!(answer["result"]["content"][0]["text"], "done after 3 steps", "{answer}");
    let progress: Vec<&Value> = messages.iter().filter(|m| m["method"] == "notifications/progress").collect();
    assert_eq!(progress.len(), 3, "{messages:?}");
    assert!(progress.iter().all(|p| p["params"]["progressToken"] == "tok"));
    let read = json!({"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {"uri": "modern://note"}});
    let (answer, _, _) = post_2025(&endpoint, &token, Some(&session), read).await;
    assert_eq!(answer["result"]["contents"][0]["text"], "a note from the 2026-07-28 server", "{answer}");
    let prompt = json!({"jsonrpc": "2.0", "id": 5, "method": "prompts/get", "params": {"name": "greet", "arguments": {"name": "Ada"}}});
    let (answer, _, _) = post_2025(&endpoint, &token, Some(&session), prompt).await;
    assert_eq!(answer["result"]["messages"][0]["content"]["text"], "Hello, Ada!", "{answer}");
    // Policy applies as ever: a tool outside the grants is refused by the gateway.
    let (denied, _, _) = post_2025(
        &endpoint,
        &token,
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 6,
        "method": "tools/call", "params": {"name": "nope", "arguments": {}}}),
    )
    .await;
    assert!(denied.get("error").is_some(), "{denied}");
}
