//! The gateway worker end to end: a real worker on 127.0.0.1, a fake control plane and tiny MCP
//! upstreams, all over HTTP.

mod support;

use base64::Engine as _;
use gatehouse_bundle::SigningKey;
use gatehouse_bundle::format::SessionKey;
use gatehouse_core::audit::Outcome;
use serde_json::json;
use sha2::{Digest, Sha256};
use support::*;

/// Alice's tools under the default grants.
const ALICE_TOOLS: [&str; 3] = ["echo", "alpha__search", "beta__search"];

/// A worker with one tenant bundle (sequence 1, default grants) already active.
async fn setup() -> (SigningKey, Upstreams, FakeControlPlane, TestGateway, tempfile::TempDir) {
    let key = SigningKey::generate();
    let up = Upstreams::start().await;
    let cp = FakeControlPlane::start().await;
    cp.publish(vec![key.sign("default", 1, 0, content(&up, ANALYST))]);
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(&cp.url, dir.path(), &key).await;
    gw.revision().await;
    (key, up, cp, gw, dir)
}

#[tokio::test]
async fn a_changed_revision_replaces_the_old_one() {
    let (key, up, cp, gw, _dir) = setup().await;
    let first = gw.revision().await;
    let mut alice = gw.client("dev", Some(ALICE));
    alice.initialize().await;
    assert_eq!(alice.tool_names().await, ALICE_TOOLS);
    assert_eq!(alice.call("add", json!({"a": 1})).await.rpc_code(), Some(-32003));

    let more = &[("alpha", &["echo", "search", "add"][..]), ("beta", &["search"][..])];
    cp.publish(vec![key.sign("default", 2, 0, content(&up, more))]);
    let second = eventually("the new revision", async || gw.gw.active_revision(TENANT).filter(|r| *r != first)).await;

    assert_eq!(second, content(&up, more).revision());
    assert_eq!(alice.tool_names().await, ["echo", "add", "alpha__search", "beta__search"]);
    assert_eq!(text_of(&alice.call("add", json!({"a": 1})).await), r#"alpha/add: {"a":1}"#);
    assert_eq!(gw.gw.last_error(), None);
}

#[tokio::test]
async fn a_bundle_with_a_bad_signature_is_refused_and_the_old_one_keeps_serving() {
    let (key, up, cp, gw, _dir) = setup().await;
    let first = gw.revision().await;

    // Signed by another key but claiming the trusted key's id: the signature cannot verify.
    let forged = SigningKey::generate();
    let everything = &[("alpha", &["*"][..]), ("beta", &["*"][..])];
    let mut bad = forged.sign("default", 2, 0, content(&up, everything));
    bad.key_id = key.key_id().to_owned();
    cp.publish(vec![bad]);

    let error = eventually("the refusal", async || gw.gw.last_error()).await;
    assert!(error.contains("signature does not verify"), "{error}");
    assert!(error.contains("tenant 'acme'"), "{error}");
    assert_eq!(gw.gw.active_revision(TENANT), Some(first));
    assert_eq!(gw.get("/readyz").await.status, 200);
    let mut alice = gw.client("dev", Some(ALICE));
    alice.initialize().await;
    assert_eq!(alice.tool_names().await, ALICE_TOOLS);
}

#[tokio::test]
async fn an_older_sequence_is_refused() {
    let key = SigningKey::generate();
    let up = Upstreams::start().await;
    let cp = FakeControlPlane::start().await;
    cp.publish(vec![key.sign("default", 5, 0, content(&up, ANALYST))]);
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(&cp.url, dir.path(), &key).await;
    let active = gw.revision().await;

    let everything = &[("alpha", &["*"][..]), ("beta", &["*"][..])];
    cp.publish(vec![key.sign("default", 4, 0, content(&up, everything))]);
    let error = eventually("the refusal", async || gw.gw.last_error()).await;
    assert!(error.contains("sequence 4 is older than the active 5"), "{error}");
    assert_eq!(gw.gw.active_revision(TENANT), Some(active.clone()));
    let mut alice = gw.client("dev", Some(ALICE));
    alice.initialize().await;
    assert_eq!(alice.tool_names().await, ALICE_TOOLS);

    // A newer one is taken again, and the report clears.
    cp.publish(vec![key.sign("default", 6, 0, content(&up, everything))]);
    eventually("the newer revision", async || gw.gw.active_revision(TENANT).filter(|r| *r != active)).await;
    assert_eq!(gw.gw.last_error(), None);
}

#[tokio::test]
async fn a_worker_without_its_control_plane_serves_its_disk_copy() {
    let (key, _up, _cp, first, dir) = setup().await;
    let revision = first.revision().await;
    eventually("the disk copy", async || dir.path().join("bundles.json").exists().then_some(())).await;
    first.stop().await;

    let dead = dead_port();
    let gw = TestGateway::start(&dead.url, dir.path(), &key).await;
    assert!(gw.gw.is_ready(), "ready from disk before any poll");
    assert_eq!(gw.gw.active_revision(TENANT), Some(revision));
    assert_eq!(gw.get("/readyz").await.status, 200);
    let mut alice = gw.client("dev", Some(ALICE));
    alice.initialize().await;
    assert_eq!(alice.tool_names().await, ALICE_TOOLS);
    assert_eq!(text_of(&alice.call("echo", json!({"text": "hi"})).await), r#"alpha/echo: {"text":"hi"}"#);
    let error = eventually("the poll error", async || gw.gw.last_error()).await;
    assert!(error.contains("cannot reach the control plane"), "{error}");

    // Neither a control plane nor a disk copy: not ready.
    let empty = tempfile::tempdir().unwrap();
    let lost = TestGateway::start(&dead.url, empty.path(), &key).await;
    let ready = lost.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["error"]["code"], "NO_BUNDLE");
    let reply = lost.client("dev", Some(ALICE)).post(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body["error"]["code"], "NO_BUNDLE");
    assert_eq!(lost.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn authentication_sessions_and_protocol_errors() {
    let (_key, up, cp, gw, _dir) = setup().await;

    // No token, an unknown one, an expired one: 401 pointing at the resource metadata.
    let metadata = format!("{}/.well-known/oauth-protected-resource/mcp/acme/dev", gw.url);
    for token in [None, Some("nope"), Some(EXPIRED)] {
        let reply = gw.client("dev", token).post(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize"})).await;
        assert_eq!(reply.status, 401, "{token:?}");
        assert_eq!(reply.header("www-authenticate"), Some(format!("Bearer resource_metadata=\"{metadata}\"").as_str()));
        assert_eq!(reply.body["error"]["code"], "UNAUTHENTICATED");
    }
    let expired = gw.client("dev", Some(EXPIRED)).post(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).await;
    assert!(expired.body["error"]["message"].as_str().unwrap().contains("expired"));
    let prm = gw.get("/.well-known/oauth-protected-resource/mcp/acme/dev").await;
    assert_eq!(prm.status, 200);
    assert_eq!(prm.body["resource"], format!("{}/mcp/acme/dev", gw.url));
    assert_eq!(prm.body["authorization_servers"], json!([cp.url]));
    assert_eq!(prm.body["bearer_methods_supported"], json!(["header"]));

    // Unknown tenant or virtual server.
    for path in ["/mcp/acme/nope", "/mcp/ghost/dev"] {
        let reply = McpClient::new(&format!("{}{path}", gw.url), Some(ALICE))
            .post(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
            .await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.body["error"]["code"], "NOT_FOUND");
    }

    // initialize: version negotiation, server info, a session id.
    let mut alice = gw.client("dev", Some(ALICE));
    let init = alice.initialize().await;
    assert_eq!(init.body["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(init.body["result"]["serverInfo"]["name"], "gatehouse/dev");
    assert_eq!(
        init.body["result"]["capabilities"],
        json!({
            "tools": {"listChanged": false},
            "resources": {"subscribe": true, "listChanged": false},
            "prompts": {"listChanged": true},
            "completions": {},
            "logging": {},
        }),
        "what the upstreams offer, merged"
    );
    assert_eq!(init.header("content-type"), Some("application/json"));
    for (asked, answered) in [("2025-06-18", "2025-06-18"), ("2025-03-26", "2025-03-26"), ("2099-01-01", "2025-11-25")]
    {
        let mut other = gw.client("dev", Some(ALICE));
        let reply = other.request("initialize", json!({"protocolVersion": asked, "capabilities": {}})).await;
        assert_eq!(reply.body["result"]["protocolVersion"], answered);
        assert!(reply.header("mcp-session-id").is_some());
    }
    assert_eq!(alice.request("ping", json!({})).await.body["result"], json!({}));
    let unknown = alice.request("sampling/createMessage", json!({})).await;
    assert_eq!((unknown.status, unknown.rpc_code()), (200, Some(-32601)));

    // Missing, unknown and someone else's session.
    let mut anonymous = gw.client("dev", Some(ALICE));
    let missing = anonymous.request("tools/list", json!({})).await;
    assert_eq!((missing.status, missing.rpc_code()), (400, Some(-32600)));
    assert!(missing.body["error"]["message"].as_str().unwrap().contains("missing Mcp-Session-Id"));
    anonymous.session = Some("0123456789abcdef".into());
    assert_eq!(anonymous.request("tools/list", json!({})).await.status, 404);
    let mut bob = gw.client("dev", Some(BOB));
    bob.session = alice.session.clone();
    assert_eq!(bob.request("tools/list", json!({})).await.status, 404);
    let mut elsewhere = gw.client("broken", Some(ALICE));
    elsewhere.session = alice.session.clone();
    assert_eq!(elsewhere.request("ping", json!({})).await.status, 404);

    // An unsupported version header (2026-07-28 clients are tested in `protocol_2026.rs`).
    let bad_header = gw
        .client("dev", Some(ALICE))
        .post_raw(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
            &[("mcp-protocol-version", "1999-01-01")],
        )
        .await;
    assert_eq!((bad_header.status, bad_header.rpc_code()), (400, Some(-32022)));
    assert_eq!(bad_header.body["error"]["message"], "Unsupported protocol version");
    assert_eq!(
        bad_header.body["error"]["data"],
        json!({"supported": ["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"], "requested": "1999-01-01"})
    );

    // Malformed bodies.
    for (body, code) in [
        ("{not json", -32700),
        ("[]", -32600),
        (r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, -32600),
        ("7", -32600),
        (r#"{"jsonrpc":"2.0","id":1}"#, -32600),
    ] {
        let reply = alice.post_raw(body, &[]).await;
        assert_eq!((reply.status, reply.rpc_code()), (400, Some(code)), "{body}");
    }
    let batch = alice.post_raw("[]", &[]).await;
    assert!(batch.body["error"]["message"].as_str().unwrap().contains("batches are not supported"));
    let huge = alice.post_raw(vec![b' '; 5 << 20], &[]).await;
    assert_eq!(huge.status, 413);
    let padded = json!({"jsonrpc": "2.0", "id": 5, "method": "ping", "params": {"pad": "x".repeat(3 << 20)}});
    assert_eq!(alice.post(padded).await.status, 200, "3 MiB is within the 4 MiB limit");

    // Origin: the gateway's own is fine, another is refused.
    assert_eq!(alice.post_raw(r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#, &[("origin", &gw.url)]).await.status, 200);
    let evil = alice.post_raw(r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#, &[("origin", "http://evil.test")]).await;
    assert_eq!(evil.status, 403);
    assert_eq!(evil.body["error"]["code"], "FORBIDDEN");

    // GET needs the token; DELETE ends the session and its upstream sessions.
    let get = reqwest::get(&alice.endpoint).await.unwrap();
    assert_eq!(get.status(), 401);
    assert_eq!(alice.tool_names().await, ALICE_TOOLS);
    let session = alice.session.clone().unwrap();
    let endpoint = alice.endpoint.clone();
    let delete = |token: &'static str| {
        let session = session.clone();
        let endpoint = endpoint.clone();
        async move {
            reqwest::Client::new()
                .delete(endpoint)
                .bearer_auth(token)
                .header("mcp-session-id", session)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(delete(BOB).await, 404, "only the owner may end a session");
    assert_eq!(delete(ALICE).await, 200);
    assert_eq!(alice.request("ping", json!({})).await.status, 404);
    assert_eq!(delete(ALICE).await, 404);
    eventually("upstream sessions ended", async || {
        (up.alpha.deleted_sessions().len() == 1 && up.beta.deleted_sessions().len() == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn tools_are_filtered_routed_and_denied() {
    let (_key, up, _cp, gw, _dir) = setup().await;
    let mut alice = gw.client("dev", Some(ALICE));
    alice.initialize().await;

    // Calling before listing works: the gateway lists on its own to find the route.
    assert_eq!(text_of(&alice.call("echo", json!({"text": "hi"})).await), r#"alpha/echo: {"text":"hi"}"#);

    let list = alice.request("tools/list", json!({})).await;
    let tools = list.body["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ALICE_TOOLS, "filtered by grant, both 'search' tools kept under prefixed names");
    assert_eq!(tools[2]["description"], "search of beta");
    assert_eq!(tools[2]["inputSchema"], json!({"type": "object"}));

    // Routed to the right upstream under the upstream's own name; beta answers over SSE.
    assert_eq!(text_of(&alice.call("alpha__search", json!({"q": "x"})).await), r#"alpha/search: {"q":"x"}"#);
    assert_eq!(text_of(&alice.call("beta__search", json!({"q": "y"})).await), r#"beta/search: {"q":"y"}"#);
    let with_meta =
        alice.request("tools/call", json!({"name": "echo", "arguments": {}, "_meta": {"progressToken": 7}})).await;
    assert_eq!(with_meta.status, 200);
    assert_eq!(up.alpha.calls().last().unwrap()["_meta"], json!({"progressToken": 7}));
    assert!(!up.alpha.saw_authorization() && !up.beta.saw_authorization(), "the client's token never goes upstream");

    // Not granted, and unknown.
    for tool in ["add", "wipe"] {
        let denied = alice.call(tool, json!({})).await;
        assert_eq!((denied.status, denied.rpc_code()), (200, Some(-32003)), "{tool}");
        assert!(denied.body["error"]["message"].as_str().unwrap().contains("is not granted to you"), "{denied:?}");
        assert_eq!(
            denied.body["error"]["data"],
            json!({"code": "TOOL_NOT_GRANTED", "tool": tool, "rule": "default-deny"})
        );
    }
    assert!(up.alpha.calls().iter().all(|c| c["name"] != "add"), "a denied call never reaches the upstream");
    let unknown = alice.call("search", json!({})).await;
    assert_eq!(unknown.rpc_code(), Some(-32602));
    assert!(unknown.body["error"]["message"].as_str().unwrap().contains("unknown tool 'search'"));

    // Bob's admin role sees every tool.
    let mut bob = gw.client("dev", Some(BOB));
    bob.initialize().await;
    assert_eq!(bob.tool_names().await, ["echo", "add", "alpha__search", "beta__search", "wipe", "ask"]);

    // An upstream that forgot the gateway's session (a restart) gets a new one transparently.
    let opened = up.alpha.sessions_opened();
    up.alpha.forget_sessions();
    assert_eq!(text_of(&alice.call("echo", json!({})).await), "alpha/echo: {}");
    assert_eq!(up.alpha.sessions_opened(), opened + 1);

    // An upstream that does not answer: a JSON-RPC error naming it.
    let mut broken = gw.client("broken", Some(BOB));
    broken.initialize().await;
    let failed = broken.request("tools/list", json!({})).await;
    assert_eq!((failed.status, failed.rpc_code()), (200, Some(-32004)));
    assert!(failed.body["error"]["message"].as_str().unwrap().contains("upstream server 'gone'"), "{failed:?}");
    assert_eq!(failed.body["error"]["data"]["code"], "UPSTREAM_UNAVAILABLE");
}

#[tokio::test]
async fn audit_events_reach_the_control_plane_despite_refusals_and_restarts() {
    let key = SigningKey::generate();
    let up = Upstreams::start().await;
    let cp = FakeControlPlane::start().await;
    cp.refuse_audit(2);
    cp.publish(vec![key.sign("default", 1, 0, content(&up, ANALYST))]);
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(&cp.url, dir.path(), &key).await;
    let revision = gw.revision().await;

    // 8 audited POSTs (initialize and its notification, list, granted and denied calls, 401, bad
    // JSON, an unknown virtual server) and 1 for an unknown tenant, which is not audited.
    let mut alice = gw.client("dev", Some(ALICE));
    alice.initialize().await;
    alice.tool_names().await;
    alice.call("echo", json!({"text": "hi"})).await;
    alice.call("add", json!({})).await;
    gw.client("dev", None).post(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).await;
    alice.post_raw("{oops", &[]).await;
    gw.client("nope", Some(ALICE)).post(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).await;
    McpClient::new(&format!("{}/mcp/ghost/dev", gw.url), Some(ALICE))
        .post(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .await;

    let events = eventually("8 audit events", async || {
        let events = cp.audit_events();
        (events.len() >= 8).then_some(events)
    })
    .await;
    assert!(cp.audit_posts() >= 3, "the two refused posts were retried");
    assert_eq!(events.len(), 8, "no duplicates, nothing for the unknown tenant: {events:#?}");
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 8);
    assert!(events.iter().all(|e| e.tenant == TENANT && e.bundle_revision.as_deref() == Some(revision.as_str())));

    let find = |method: &str, tool: Option<&str>| {
        events
            .iter()
            .find(|e| e.method == method && e.tool.as_deref() == tool)
            .unwrap_or_else(|| panic!("an event for {method} {tool:?}: {events:#?}"))
    };
    let call = find("tools/call", Some("echo"));
    assert_eq!(call.outcome, Outcome::Allowed);
    assert_eq!(call.user_id.as_deref(), Some("u-alice"));
    assert_eq!(call.user_email.as_deref(), Some("alice@acme.test"));
    assert_eq!(call.client_name.as_deref(), Some("test-client"));
    assert_eq!(call.client_version.as_deref(), Some("1.2.3"));
    // Audit carries the short id of the sealed session: 32 hex digits of the token's SHA-256.
    let sealed = alice.session.as_deref().unwrap();
    assert_eq!(call.session_id.as_deref(), Some(&hex::encode(Sha256::digest(sealed.as_bytes()))[..32]));
    assert_eq!(call.virtual_server, "dev");
    assert_eq!(call.upstream_server.as_deref(), Some("alpha"));
    assert!(call.latency_us > 0);
    let denied = find("tools/call", Some("add"));
    assert_eq!(denied.outcome, Outcome::Denied);
    assert!(denied.reason.as_deref().unwrap().contains("not granted"));
    assert_eq!(find("initialize", None).outcome, Outcome::Allowed);
    assert_eq!(find("notifications/initialized", None).outcome, Outcome::Allowed);
    assert_eq!(find("tools/list", None).outcome, Outcome::Allowed);
    let unauthenticated = events.iter().find(|e| e.user_id.is_none() && e.outcome == Outcome::Denied).unwrap();
    assert_eq!(unauthenticated.method, "POST");
    assert!(
        events
            .iter()
            .any(|e| e.outcome == Outcome::Invalid && e.reason.as_deref().unwrap_or("").contains("not valid JSON"))
    );
    assert!(events.iter().any(|e| e.virtual_server == "nope" && e.outcome == Outcome::Invalid));

    // Everything acknowledged: the spool is compacted, and a restart resends nothing.
    let spool = dir.path().join("audit-spool.jsonl");
    eventually("a compacted spool", async || (std::fs::metadata(&spool).unwrap().len() == 0).then_some(())).await;
    gw.stop().await;
    let gw = TestGateway::start(&cp.url, dir.path(), &key).await;
    gw.revision().await;
    let mut again = gw.client("dev", Some(ALICE));
    again.initialize().await;
    let events = eventually("the new events", async || {
        let events = cp.audit_events();
        (events.len() >= 10).then_some(events)
    })
    .await;
    assert_eq!(events.len(), 10, "only the two new events arrive after the restart");
}

#[tokio::test]
async fn audit_events_spooled_while_the_control_plane_is_away_are_sent_after_a_restart() {
    let (key, _up, cp, gw, dir) = setup().await;
    // Refuse everything: events stay in the spool.
    cp.refuse_audit(usize::MAX);
    let mut alice = gw.client("dev", Some(ALICE));
    alice.initialize().await;
    eventually("a refused post", async || (cp.audit_posts() >= 1).then_some(())).await;
    gw.stop().await;
    assert!(std::fs::metadata(dir.path().join("audit-spool.jsonl")).unwrap().len() > 0);

    cp.refuse_audit(0);
    let _gw = TestGateway::start(&cp.url, dir.path(), &key).await;
    let events = eventually("the spooled events", async || {
        let events = cp.audit_events();
        (events.len() >= 2).then_some(events)
    })
    .await;
    let methods: Vec<&str> = events.iter().map(|e| e.method.as_str()).collect();
    assert_eq!(methods, ["initialize", "notifications/initialized"]);
}

/// Reads SSE events from a streamed POST or GET answer until `until` matches one (at most 10 s).
async fn read_until(
    response: &mut reqwest::Response,
    buffer: &mut String,
    seen: &mut Vec<(Option<String>, serde_json::Value)>,
    until: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            for event in parse_events(&block) {
                seen.push(event.clone());
                if until(&event.1) {
                    return event.1;
                }
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let chunk = tokio::time::timeout(left, response.chunk()).await.expect("the event in time").unwrap();
        buffer.push_str(std::str::from_utf8(&chunk.expect("the stream is still open")).unwrap());
    }
}

fn stream_request(client: &McpClient, body: serde_json::Value, extra: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let mut request = reqwest::Client::new()
        .post(&client.endpoint)
        .bearer_auth(client.token.as_deref().unwrap())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", client.session.as_deref().unwrap())
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string());
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request
}

#[tokio::test]
async fn streams_server_requests_and_notifications_are_relayed_with_mapped_ids() {
    let (_key, up, _cp, gw, _dir) = setup().await;
    let mut bob = gw.client("dev", Some(BOB));
    let init = bob
        .request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {"sampling": {}, "roots": {}, "experimental": {"x": {}}},
                   "clientInfo": {"name": "t", "version": "1"}}),
        )
        .await;
    bob.session = Some(init.header("mcp-session-id").unwrap().to_owned());
    // Both upstream sessions were opened at initialize, declaring the client's relayed capabilities.
    for upstream in [&up.alpha, &up.beta] {
        assert_eq!(upstream.sessions_opened(), 1);
        assert_eq!(upstream.notes()[0], json!({"declared": {"sampling": {}, "roots": {}}}));
    }

    // A streamed call: priming event, progress, a sampling request, then the answer (beta is upstream 1).
    let call = json!({"jsonrpc": "2.0", "id": 41, "method": "tools/call",
                      "params": {"name": "ask", "arguments": {}, "_meta": {"progressToken": "p1"}}});
    let mut stream = stream_request(&bob, call, &[]).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    assert_eq!(stream.headers()["x-accel-buffering"], "no");
    let (mut buffer, mut seen) = (String::new(), Vec::new());
    let asked = read_until(&mut stream, &mut buffer, &mut seen, |m| m["method"] == "sampling/createMessage").await;
    assert_eq!(asked["id"], "1:n:1", "the server request's id names its upstream");
    let ids: Vec<Option<&str>> = seen.iter().map(|(id, _)| id.as_deref()).collect();
    assert_eq!(ids, [Some("1.b-1"), Some("1.b-2"), Some("1.b-3")]);
    assert_eq!(seen[0].1, json!(null), "the priming event is relayed");
    assert_eq!(seen[1].1["params"]["progressToken"], "p1", "the client's own progress token");

    // The client's answer goes back to beta under beta's id.
    let answer = json!({"jsonrpc": "2.0", "id": "1:n:1", "result": {"role": "assistant", "model": "m",
                        "content": {"type": "text", "text": "sampled!"}}});
    assert_eq!(bob.post(answer).await.status, 202);
    let done = read_until(&mut stream, &mut buffer, &mut seen, |m| m.get("result").is_some()).await;
    assert_eq!(done["id"], 41);
    assert_eq!(done["result"]["content"][0]["text"], "beta/ask: sampled!");
    assert!(stream.chunk().await.unwrap().is_none(), "the stream ends after the answer");
    let stray = bob.post(json!({"jsonrpc": "2.0", "id": "7:n:1", "result": {}})).await;
    assert_eq!(stray.status, 400, "a response to nothing the gateway relayed");

    // Cancelling an in-flight call reaches the upstream serving it, under its upstream id.
    let call =
        json!({"jsonrpc": "2.0", "id": "c-2", "method": "tools/call", "params": {"name": "ask", "arguments": {}}});
    let mut pending = stream_request(&bob, call, &[]).send().await.unwrap();
    read_until(&mut pending, &mut String::new(), &mut Vec::new(), |m| m["method"] == "sampling/createMessage").await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "c-2", "reason": "bored"}});
    assert_eq!(bob.post(cancel).await.status, 202);
    let cancelled = up.beta.notes().into_iter().find(|n| n["method"] == "notifications/cancelled").unwrap();
    assert_eq!(cancelled["params"], json!({"requestId": "gh:s:c-2", "reason": "bored"}));
    drop(pending);

    // roots/list_changed goes to every upstream.
    let roots = json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"});
    assert_eq!(bob.post(roots).await.status, 202);
    for upstream in [&up.alpha, &up.beta] {
        assert!(upstream.notes().iter().any(|n| n["method"] == "notifications/roots/list_changed"));
    }

    // The GET stream: alpha's events with ids naming alpha (upstream 0); beta has none (405).
    let get = |last: Option<&str>| {
        let mut request = reqwest::Client::new()
            .get(&bob.endpoint)
            .bearer_auth(BOB)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", bob.session.as_deref().unwrap())
            .header("mcp-protocol-version", "2025-06-18");
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        request.send()
    };
    let mut events = get(None).await.unwrap();
    assert_eq!(events.status(), 200);
    let (mut buffer, mut seen) = (String::new(), Vec::new());
    let hello = read_until(&mut events, &mut buffer, &mut seen, |m| m["method"] == "notifications/message").await;
    assert_eq!(hello["params"]["data"], "hello");
    assert_eq!(seen.last().unwrap().0.as_deref(), Some("0.a-1"));
    drop(events);
    let mut resumed = get(Some("0.a-1")).await.unwrap();
    let (mut buffer, mut seen) = (String::new(), Vec::new());
    let again = read_until(&mut resumed, &mut buffer, &mut seen, |m| m["method"] == "notifications/message").await;
    assert_eq!(again["params"]["data"], "resumed after a-1", "alpha resumes after its own event id");
    assert_eq!(seen.last().unwrap().0.as_deref(), Some("0.a-2"));
    assert_eq!(up.alpha.gets(), [None, Some("a-1".to_owned())]);
    let no_session = reqwest::Client::new().get(&bob.endpoint).bearer_auth(BOB).send().await.unwrap();
    assert_eq!(no_session.status(), 400);
    let bad_version = get(None);
    drop(bad_version);
    let old = reqwest::Client::new()
        .get(&bob.endpoint)
        .bearer_auth(BOB)
        .header("mcp-session-id", bob.session.as_deref().unwrap())
        .header("mcp-protocol-version", "1999-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 400);
}

#[tokio::test]
async fn resources_prompts_completions_and_logging_are_merged_and_routed() {
    let (_key, up, _cp, gw, _dir) = setup().await;
    let mut alice = gw.client("dev", Some(ALICE));
    alice.initialize().await;

    let resources = alice.request("resources/list", json!({})).await;
    assert_eq!(resources.body["result"], json!({"resources": [{"uri": "alpha://doc/1", "name": "doc 1"}]}));
    let read = alice.request("resources/read", json!({"uri": "alpha://doc/1"})).await;
    assert_eq!(read.body["result"]["contents"][0]["text"], "alpha resources/read alpha://doc/1");
    let templates = alice.request("resources/templates/list", json!({})).await;
    assert_eq!(templates.body["result"]["resourceTemplates"][0]["uriTemplate"], "alpha://item/{id}");
    let by_template = alice.request("resources/read", json!({"uri": "alpha://item/7"})).await;
    assert_eq!(by_template.body["result"]["contents"][0]["text"], "alpha resources/read alpha://item/7");
    let subscribed = alice.request("resources/subscribe", json!({"uri": "alpha://doc/1"})).await;
    assert_eq!(subscribed.status, 200);

    let prompts = alice.request("prompts/list", json!({})).await;
    let names: Vec<&str> =
        prompts.body["result"]["prompts"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["greet", "alpha__summary", "beta__summary"]);
    let got = alice.request("prompts/get", json!({"name": "beta__summary", "arguments": {"x": "1"}})).await;
    assert_eq!(got.body["result"]["messages"][0]["content"]["text"], r#"beta/summary: {"x":"1"}"#);
    let greet = alice.request("prompts/get", json!({"name": "greet"})).await;
    assert!(greet.body["result"]["messages"][0]["content"]["text"].as_str().unwrap().starts_with("alpha/greet"));
    let unknown = alice.request("prompts/get", json!({"name": "summary"})).await;
    assert_eq!(unknown.rpc_code(), Some(-32602));
    let completion = alice
        .request(
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "alpha__summary"},
                                                "argument": {"name": "a", "value": ""}}),
        )
        .await;
    assert_eq!(completion.body["result"]["completion"]["values"], json!(["alpha:summary"]));

    let level = alice.request("logging/setLevel", json!({"level": "debug"})).await;
    assert_eq!(level.body["result"], json!({}));
    assert!(up.alpha.notes().iter().any(|n| n["method"] == "logging/setLevel"));
    assert!(!up.beta.notes().iter().any(|n| n["method"] == "logging/setLevel"), "beta offers no logging");
}

/// DELETEs a session with `token`'s credentials; the status.
async fn delete_session(client: &McpClient, token: &str) -> u16 {
    reqwest::Client::new()
        .delete(&client.endpoint)
        .bearer_auth(token)
        .header("mcp-session-id", client.session.as_deref().unwrap())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The id of the session key that sealed a token (its first byte is the id's length).
fn sealing_key_id(token: &str) -> String {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).unwrap();
    String::from_utf8(bytes[1..1 + usize::from(bytes[0])].to_vec()).unwrap()
}

#[tokio::test]
async fn any_worker_serves_any_session() {
    let (key, up, cp, a, _dir) = setup().await;
    let (dir_b, dir_c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = TestGateway::start(&cp.url, dir_b.path(), &key).await;
    let c = TestGateway::start(&cp.url, dir_c.path(), &key).await;
    b.revision().await;
    c.revision().await;

    // initialize on A; list and call on B with the same session id.
    let mut on_a = a.client("dev", Some(ALICE));
    on_a.initialize().await;
    let token = on_a.session.clone().unwrap();
    let mut on_b = b.client("dev", Some(ALICE));
    on_b.session = Some(token.clone());
    assert_eq!(on_b.tool_names().await, ALICE_TOOLS);
    assert_eq!(text_of(&on_b.call("echo", json!({"x": 1})).await), r#"alpha/echo: {"x":1}"#);
    assert_eq!(text_of(&on_b.call("beta__search", json!({})).await), "beta/search: {}");
    assert_eq!(on_a.tool_names().await, ALICE_TOOLS);
    // B used the upstream sessions A sealed into the token: no upstream was initialized again.
    assert_eq!((up.alpha.sessions_opened(), up.beta.sessions_opened()), (1, 1));

    // Another virtual server, another user, a tampered id: 404 like an unknown session, whether the
    // worker has the session cached (A, B) or not (C).
    let mut tampered = token.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for gw in [&c, &a, &b] {
        for (vs, user, session) in [
            ("broken", ALICE, &token),
            ("dev", BOB, &token),
            ("dev", ALICE, &tampered),
            ("dev", ALICE, &format!("{token}x")),
        ] {
            let mut client = gw.client(vs, Some(user));
            client.session = Some(session.clone());
            let reply = client.request("tools/list", json!({})).await;
            assert_eq!((reply.status, reply.rpc_code()), (404, Some(-32001)), "{vs} {user} at {}", gw.url);
        }
    }

    // An upstream forgets its sessions: B opens a new one and keeps it (the token cannot change);
    // A, which never saw the new one, opens its own when it meets the 404.
    up.alpha.forget_sessions();
    assert_eq!(text_of(&on_b.call("echo", json!({})).await), "alpha/echo: {}");
    assert_eq!(text_of(&on_b.call("echo", json!({})).await), "alpha/echo: {}");
    assert_eq!(up.alpha.sessions_opened(), 2);
    assert_eq!(text_of(&on_a.call("echo", json!({})).await), "alpha/echo: {}");
    assert_eq!(up.alpha.sessions_opened(), 3);

    // Key rotation: a newer key seals new sessions, the old one still opens; once the old key leaves
    // the bundle, its sessions are over everywhere (cached or not).
    let mut rotated = content(&up, ANALYST);
    let k2 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    rotated.session_keys.push(SessionKey { id: "k2".into(), key_b64: k2.clone(), created_at_ms: 2 });
    rotated.normalize();
    let revision = rotated.revision();
    cp.publish(vec![key.sign("default", 2, 0, rotated.clone())]);
    for gw in [&a, &b, &c] {
        eventually("the rotated bundle", async || (gw.gw.active_revision(TENANT)? == revision).then_some(())).await;
    }
    assert_eq!(sealing_key_id(&token), "k1");
    assert_eq!(on_b.tool_names().await, ALICE_TOOLS, "the old key still opens");
    let mut fresh = c.client("dev", Some(ALICE));
    fresh.initialize().await;
    assert_eq!(sealing_key_id(fresh.session.as_deref().unwrap()), "k2", "the newest key seals");
    let mut fresh_on_a = a.client("dev", Some(ALICE));
    fresh_on_a.session = fresh.session.clone();
    assert_eq!(fresh_on_a.tool_names().await, ALICE_TOOLS);

    rotated.session_keys.retain(|k| k.id == "k2");
    let revision = rotated.revision();
    cp.publish(vec![key.sign("default", 3, 0, rotated)]);
    for gw in [&a, &b, &c] {
        eventually("the bundle without k1", async || (gw.gw.active_revision(TENANT)? == revision).then_some(())).await;
    }
    assert_eq!(on_b.request("ping", json!({})).await.status, 404, "k1 left the bundle");
    assert_eq!(on_a.request("ping", json!({})).await.status, 404);
    assert_eq!(fresh_on_a.request("ping", json!({})).await.status, 200);

    // DELETE on A: A answers 404 from then on. Without shared state, B keeps serving the session
    // until it expires (re-opening the upstream sessions A ended): the documented limit.
    let mut on_b = b.client("dev", Some(ALICE));
    on_b.session = fresh.session.clone();
    assert_eq!(on_b.request("ping", json!({})).await.status, 200);
    assert_eq!(delete_session(&fresh_on_a, BOB).await, 404, "only the owner may end a session");
    assert_eq!(delete_session(&fresh_on_a, ALICE).await, 200);
    assert_eq!(fresh_on_a.request("ping", json!({})).await.status, 404);
    assert_eq!(delete_session(&fresh_on_a, ALICE).await, 404);
    assert_eq!(text_of(&on_b.call("echo", json!({})).await), "alpha/echo: {}");
}

#[tokio::test]
async fn data_classification_blocks_and_redacts_arguments_and_results() {
    use gatehouse_bundle::classify::{Action, ClassificationRule, Detector, Scope};
    let key = SigningKey::generate();
    let up = Upstreams::start().await;
    let cp = FakeControlPlane::start().await;
    let rule = |id: &str, detector, action, scope, servers: &[&str]| ClassificationRule {
        id: id.into(),
        name: id.into(),
        detector,
        pattern: None,
        action,
        scope,
        servers: servers.iter().map(|s| (*s).to_owned()).collect(),
    };
    let mut guarded = content(&up, ANALYST);
    guarded.classification = vec![
        // Keys never leave the user's machine, to any server.
        rule("no-keys", Detector::ApiKey, Action::Block, Scope::Params, &[]),
        // E-mail addresses in results are redacted, on both servers (alpha answers JSON, beta SSE).
        rule("mask-mail", Detector::Email, Action::Redact, Scope::Responses, &["alpha", "beta"]),
        // Card numbers in beta's results stop the result.
        rule("no-cards", Detector::CardNumber, Action::Block, Scope::Responses, &["beta"]),
        // Phone numbers are only logged.
        rule("see-phones", Detector::Phone, Action::Log, Scope::Both, &[]),
    ];
    guarded.normalize();
    cp.publish(vec![key.sign("default", 1, 0, guarded.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(&cp.url, dir.path(), &key).await;
    gw.revision().await;
    let mut alice = gw.client("dev", Some(ALICE));
    alice.initialize().await;

    // A key in the arguments: refused before anything goes upstream, naming rule and place only.
    let calls_before = up.alpha.calls().len();
    let blocked = alice.call("echo", json!({"config": {"aws": "AKIAIOSFODNN7EXAMPLE"}})).await;
    assert_eq!(blocked.rpc_code(), Some(-32003), "{blocked:?}");
    assert_eq!(blocked.body["error"]["data"], json!({"code": "DATA_BLOCKED", "tool": "echo", "rule": "no-keys"}));
    let message = blocked.body["error"]["message"].as_str().unwrap();
    assert_eq!(message, "the arguments of tool 'echo' hold data that rule no-keys blocks (api_key at /config/aws)");
    assert!(!message.contains("AKIA"), "the refusal never repeats the data");
    assert_eq!(up.alpha.calls().len(), calls_before, "a blocked call never reaches the upstream");

    // An e-mail address echoed back: redacted in the JSON answer (alpha) and the SSE answer (beta).
    let mailed = alice.call("echo", json!({"to": "bob@example.com"})).await;
    assert_eq!(text_of(&mailed), r#"alpha/echo: {"to":"[REDACTED:email]"}"#);
    assert_eq!(up.alpha.calls().last().unwrap()["arguments"], json!({"to": "bob@example.com"}), "params untouched");
    let streamed = alice.call("beta__search", json!({"q": "mail bob@example.com"})).await;
    assert_eq!(text_of(&streamed), r#"beta/search: {"q":"mail [REDACTED:email]"}"#);

    // A card number in beta's (streamed) result: the client gets DATA_BLOCKED instead of the result.
    let carded = alice.call("beta__search", json!({"q": "4111 1111 1111 1111"})).await;
    assert_eq!(carded.body["error"]["data"]["code"], "DATA_BLOCKED", "{carded:?}");
    assert!(!carded.body.to_string().contains("4111"), "the card number never reaches the client: {carded:?}");
    // The same on alpha is not blocked (the rule names beta only).
    assert!(text_of(&alice.call("echo", json!({"q": "4111 1111 1111 1111"})).await).contains("4111"));

    // A phone number is only logged.
    assert!(text_of(&alice.call("echo", json!({"call": "+1 415 555 0100"})).await).contains("+1 415 555 0100"));

    // Every finding is audited (rule, detector, action, direction, place), never the data.
    let events = eventually("the audit events", async || {
        let events = cp.audit_events();
        (events.iter().filter(|e| !e.findings.is_empty()).count() >= 5).then_some(events)
    })
    .await;
    let arg_block = events.iter().find(|e| e.rule_id.as_deref() == Some("no-keys")).expect("the blocked call");
    assert_eq!(arg_block.outcome, Outcome::Denied);
    assert_eq!(arg_block.findings[0].path, "/config/aws");
    assert_eq!(arg_block.findings[0].direction, "params");
    let result_block = events.iter().find(|e| e.rule_id.as_deref() == Some("no-cards")).expect("the blocked result");
    assert_eq!(result_block.outcome, Outcome::Denied, "{result_block:?}");
    assert_eq!(result_block.findings.iter().map(|f| f.direction.as_str()).collect::<Vec<_>>(), ["response"]);
    let logged = events.iter().find(|e| e.findings.iter().any(|f| f.rule_id == "see-phones")).expect("the phone");
    assert_eq!(logged.outcome, Outcome::Allowed);
    assert!(!serde_json::to_string(&events).unwrap().contains("bob@example.com"), "no audited data");

    // A bundle whose classification rule cannot compile is refused; the previous one keeps serving.
    let first = gw.revision().await;
    let mut broken = guarded.clone();
    broken.classification.push(ClassificationRule {
        pattern: Some("(".into()),
        ..rule("bad", Detector::Pattern, Action::Log, Scope::Both, &[])
    });
    broken.normalize();
    cp.publish(vec![key.sign("default", 2, 0, broken)]);
    eventually("the refusal", async || gw.gw.last_error().filter(|e| e.contains("data-classification rule bad"))).await;
    assert_eq!(gw.gw.active_revision(TENANT), Some(first));
    assert_eq!(
        alice.call("echo", json!({"k": "AKIAIOSFODNN7EXAMPLE"})).await.rpc_code(),
        Some(-32003),
        "old rules serve"
    );
}

#[tokio::test]
async fn data_classification_screens_resources_and_prompts() {
    use gatehouse_bundle::classify::{Action, ClassificationRule, Detector, Scope};
    let key = SigningKey::generate();
    let up = Upstreams::start().await;
    let cp = FakeControlPlane::start().await;
    let rule = |id: &str, detector, action, scope, servers: &[&str]| ClassificationRule {
        id: id.into(),
        name: id.into(),
        detector,
        pattern: None,
        action,
        scope,
        servers: servers.iter().map(|s| (*s).to_owned()).collect(),
    };
    let mut guarded = content(&up, ANALYST);
    guarded.classification = vec![
        // Card numbers read from alpha are redacted; beta (a PCI server) may neither receive nor return one.
        rule("mask-cards", Detector::CardNumber, Action::Redact, Scope::Responses, &["alpha"]),
        rule("pci", Detector::CardNumber, Action::Block, Scope::Both, &["beta"]),
        // Keys are never sent, to any server, not even inside a resource URI.
        rule("no-keys", Detector::ApiKey, Action::Block, Scope::Params, &[]),
    ];
    guarded.normalize();
    cp.publish(vec![key.sign("default", 1, 0, guarded)]);
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(&cp.url, dir.path(), &key).await;
    gw.revision().await;
    let mut alice = gw.client("dev", Some(ALICE));
    alice.initialize().await;

    // resources/read: the card number in the text is redacted, as JSON and as an event stream.
    let read = alice.request("resources/read", json!({"uri": "alpha://item/card"})).await;
    assert_eq!(
        read.body["result"]["contents"][0]["text"],
        "alpha resources/read alpha://item/card: card [REDACTED:card_number]",
        "{read:?}"
    );
    let streamed = alice.request("resources/read", json!({"uri": "alpha://item/card-sse"})).await;
    assert!(!streamed.events.is_empty(), "answered as an event stream: {streamed:?}");
    assert_eq!(
        streamed.body["result"]["contents"][0]["text"],
        "alpha resources/read alpha://item/card-sse: card [REDACTED:card_number]"
    );
    assert!(streamed.events.iter().any(|(_, e)| e["method"] == "notifications/message"), "the log event streams");
    // Binary contents are not scanned: passed through as they are.
    let blob = alice.request("resources/read", json!({"uri": "alpha://item/blob"})).await;
    assert_eq!(blob.body["result"]["contents"][0]["blob"], "4111111111111111");

    // A resource URI is an argument: a key in it is refused before anything goes upstream, and the
    // refusal does not repeat the URI.
    let reads_before = up.alpha.reads().len();
    let keyed = alice.request("resources/read", json!({"uri": "alpha://item/AKIAIOSFODNN7EXAMPLE"})).await;
    assert_eq!(keyed.rpc_code(), Some(-32003), "{keyed:?}");
    assert_eq!(keyed.body["error"]["data"], json!({"code": "DATA_BLOCKED", "rule": "no-keys"}));
    assert_eq!(
        keyed.body["error"]["message"],
        "the URI of resources/read holds data that rule no-keys blocks (api_key at /uri)"
    );
    assert!(!keyed.body.to_string().contains("AKIA"));
    assert_eq!(up.alpha.reads().len(), reads_before, "a blocked read never reaches the upstream");

    // prompts/get: alpha's messages are redacted (the results-only rule leaves the arguments alone).
    let got = alice
        .request("prompts/get", json!({"name": "alpha__summary", "arguments": {"c": "4111 1111 1111 1111"}}))
        .await;
    assert_eq!(
        got.body["result"]["messages"][0]["content"]["text"],
        r#"alpha/summary: {"c":"[REDACTED:card_number]"}"#
    );
    assert_eq!(up.alpha.reads().last().unwrap()["params"]["arguments"]["c"], "4111 1111 1111 1111");

    // beta's arguments: blocked, beta never sees them.
    let beta_before = up.beta.reads().len();
    let refused =
        alice.request("prompts/get", json!({"name": "beta__summary", "arguments": {"c": "4111 1111 1111 1111"}})).await;
    assert_eq!(refused.rpc_code(), Some(-32003), "{refused:?}");
    assert_eq!(
        refused.body["error"]["data"],
        json!({"code": "DATA_BLOCKED", "prompt": "beta__summary", "rule": "pci"})
    );
    assert_eq!(
        refused.body["error"]["message"],
        "the arguments of prompt 'beta__summary' hold data that rule pci blocks (card_number at /c)"
    );
    assert_eq!(up.beta.reads().len(), beta_before, "a blocked prompts/get never reaches the upstream");

    // beta's messages holding a card: DATA_BLOCKED instead of the messages, as JSON and in a stream.
    for arguments in [json!({"card": "yes"}), json!({"card": "yes", "sse": "yes"})] {
        let blocked = alice.request("prompts/get", json!({"name": "beta__summary", "arguments": arguments})).await;
        assert_eq!(blocked.body["error"]["data"]["code"], "DATA_BLOCKED", "{blocked:?}");
        assert_eq!(
            blocked.body["error"]["message"],
            "the messages of prompt 'beta__summary' held data that rule pci blocks \
             (card_number at /messages/0/content/text); they were not delivered"
        );
        assert!(!format!("{blocked:?}").contains("4111"), "the card never reaches the client: {blocked:?}");
    }
    assert_eq!(up.beta.reads().len(), beta_before + 2, "those did reach beta");
    // Without a card, beta's prompt is delivered.
    let plain = alice.request("prompts/get", json!({"name": "beta__summary", "arguments": {"x": "1"}})).await;
    assert_eq!(plain.body["result"]["messages"][0]["content"]["text"], r#"beta/summary: {"x":"1"}"#);

    // The audit has every finding (rule, direction, place), never the data.
    let events = eventually("the audit events", async || {
        let events = cp.audit_events();
        (events.iter().filter(|e| !e.findings.is_empty()).count() >= 7).then_some(events)
    })
    .await;
    let find = |method: &str, rule: &str, path: &str| {
        events
            .iter()
            .find(|e| e.method == method && e.findings.iter().any(|f| f.rule_id == rule && f.path == path))
            .unwrap_or_else(|| panic!("no audited {method} finding of {rule} at {path}: {events:#?}"))
    };
    let redacted = find("resources/read", "mask-cards", "/contents/0/text");
    assert_eq!(redacted.outcome, Outcome::Allowed);
    assert_eq!(redacted.findings[0].direction, "response");
    assert_eq!(redacted.findings[0].action, Action::Redact);
    let uri = find("resources/read", "no-keys", "/uri");
    assert_eq!((uri.outcome, uri.rule_id.as_deref()), (Outcome::Denied, Some("no-keys")));
    assert_eq!(uri.findings[0].direction, "params");
    let args = find("prompts/get", "pci", "/c");
    assert_eq!((args.outcome, args.rule_id.as_deref()), (Outcome::Denied, Some("pci")));
    assert_eq!(args.upstream_server.as_deref(), Some("beta"));
    let messages = find("prompts/get", "pci", "/messages/0/content/text");
    assert_eq!((messages.outcome, messages.rule_id.as_deref()), (Outcome::Denied, Some("pci")));
    assert_eq!(messages.findings[0].direction, "response");
    assert_eq!(
        events.iter().filter(|e| e.method == "prompts/get" && e.rule_id.as_deref() == Some("pci")).count(),
        3,
        "the blocked arguments and both blocked answers (JSON and stream): {events:#?}"
    );
    let audited = serde_json::to_string(&events).unwrap();
    assert!(!audited.contains("4111") && !audited.contains("AKIA"), "no audited data: {audited}");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_per_user_and_per_tenant() {
    use gatehouse_bundle::format::RateLimit;
    use gatehouse_core::limits::LimitScope;
    let key = SigningKey::generate();
    let up = Upstreams::start().await;
    let cp = FakeControlPlane::start().await;
    let limit = |id: &str, scope, tool: &str, requests| RateLimit {
        id: id.into(),
        scope,
        role: None,
        user: None,
        server: Some("alpha".into()),
        tool: Some(tool.into()),
        requests,
        per_seconds: 3600,
        burst: None,
    };
    let mut limited = content(&up, ANALYST);
    // Each user may echo twice an hour; the whole tenant may search three times an hour.
    limited.rate_limits = vec![
        limit("echo-per-user", LimitScope::User, "echo", 2),
        limit("search-tenant", LimitScope::Tenant, "search", 3),
    ];
    limited.normalize();
    cp.publish(vec![key.sign("default", 1, 0, limited)]);
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(&cp.url, dir.path(), &key).await;
    gw.revision().await;
    let mut alice = gw.client("dev", Some(ALICE));
    alice.initialize().await;
    let mut bob = gw.client("dev", Some(BOB));
    bob.initialize().await;

    for _ in 0..2 {
        assert_eq!(text_of(&alice.call("echo", json!({})).await), "alpha/echo: {}");
    }
    let calls = up.alpha.calls().len();
    let refused = alice.call("echo", json!({})).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    let retry: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1_700..=1_800).contains(&retry), "the next token is due in half an hour: {retry}");
    assert_eq!(refused.body["error"]["data"]["code"], "RATE_LIMITED");
    assert_eq!(refused.body["error"]["data"]["rule"], "echo-per-user");
    assert_eq!(refused.body["error"]["data"]["retryAfter"], json!(retry));
    assert_eq!(up.alpha.calls().len(), calls, "a refused call never reaches the upstream");
    // Bob has buckets of his own for a per-user limit...
    assert_eq!(text_of(&bob.call("echo", json!({})).await), "alpha/echo: {}");
    // ...but shares the tenant's: three searches in all, then both are refused.
    assert!(text_of(&alice.call("alpha__search", json!({})).await).starts_with("alpha/search"));
    assert!(text_of(&bob.call("alpha__search", json!({})).await).starts_with("alpha/search"));
    assert!(text_of(&bob.call("alpha__search", json!({})).await).starts_with("alpha/search"));
    assert_eq!(alice.call("alpha__search", json!({})).await.status, 429);
    assert_eq!(bob.call("alpha__search", json!({})).await.status, 429);
    // Beta's search is not limited (the limits name alpha).
    assert!(text_of(&alice.call("beta__search", json!({})).await).starts_with("beta/search"));

    let events = eventually("the refusals in the audit", async || {
        let events = cp.audit_events();
        (events.iter().filter(|e| e.rule_id.as_deref() == Some("search-tenant")).count() >= 2).then_some(events)
    })
    .await;
    let refusal = events.iter().find(|e| e.rule_id.as_deref() == Some("echo-per-user")).unwrap();
    assert_eq!(refusal.outcome, Outcome::Denied);
    assert!(refusal.reason.as_deref().unwrap().starts_with("rate limit echo-per-user reached for tool 'echo'"));
}
