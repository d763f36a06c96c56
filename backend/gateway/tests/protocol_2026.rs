//! MCP 2026-07-28 clients against the gateway (2025-era fake upstreams): `server/discover`, the
//! per-request `_meta` envelope, the header rules, the pooled upstream sessions, and the same
//! policy pipeline as for 2025-era clients. Raw HTTP, so each rule is checked exactly.

mod support;

use gatehouse_bundle::SigningKey;
use gatehouse_core::audit::Outcome;
use serde_json::{Value, json};
use support::*;

const V2026: &str = "2026-07-28";

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

/// `params` with the 2026-07-28 envelope in `_meta` (keeping `_meta` keys already there).
fn enveloped(mut params: Value, client: &str) -> Value {
    let meta = params.as_object_mut().unwrap().entry("_meta").or_insert_with(|| json!({}));
    meta["io.modelcontextprotocol/protocolVersion"] = json!(V2026);
    meta["io.modelcontextprotocol/clientCapabilities"] = json!({});
    meta["io.modelcontextprotocol/clientInfo"] = json!({"name": client, "version": "9.9"});
    params
}

/// The standard headers a conforming client mirrors from this request.
fn mirrored(method: &str, params: &Value) -> Vec<(String, String)> {
    let mut headers =
        vec![("mcp-protocol-version".to_owned(), V2026.to_owned()), ("mcp-method".to_owned(), method.to_owned())];
    let name = match method {
        "tools/call" | "prompts/get" => params.get("name"),
        "resources/read" => params.get("uri"),
        _ => None,
    };
    if let Some(name) = name.and_then(Value::as_str) {
        headers.push(("mcp-name".to_owned(), name.to_owned()));
    }
    headers
}

/// A conforming 2026-07-28 request (envelope and mirrored headers) plus `extra` headers.
async fn modern(client: &McpClient, id: i64, method: &str, params: Value, extra: &[(&str, &str)]) -> Reply {
    let params = enveloped(params, "modern-test");
    let mut headers = mirrored(method, &params);
    headers.extend(extra.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())));
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    client.post_raw(body.to_string(), &headers).await
}

fn names(reply: &Reply) -> Vec<String> {
    let tools = reply.body["result"]["tools"].as_array().unwrap_or_else(|| panic!("a tool list: {reply:?}"));
    tools.iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn discover_lists_calls_and_streams_without_a_session() {
    let (_key, up, cp, gw, _dir) = setup().await;
    let alice = gw.client("dev", Some(ALICE));

    // server/discover: answered by the gateway, private to the caller, no session minted.
    let discover = modern(&alice, 1, "server/discover", json!({}), &[]).await;
    assert_eq!(discover.status, 200, "{discover:?}");
    assert!(discover.header("mcp-session-id").is_none(), "2026-07-28 has no sessions");
    let result = &discover.body["result"];
    assert_eq!(result["supportedVersions"], json!([V2026, "2025-11-25", "2025-06-18", "2025-03-26"]));
    assert_eq!(
        result["capabilities"],
        json!({"tools": {"listChanged": false}, "resources": {"listChanged": false}, "prompts": {"listChanged": true},
               "completions": {}, "logging": {}}),
        "what the upstreams offer, merged, without `subscribe` (resource subscriptions are not honoured)"
    );
    assert_eq!((result["ttlMs"].clone(), result["cacheScope"].clone()), (json!(0), json!("private")));
    assert_eq!(result["resultType"], "complete");
    assert_eq!(result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "gatehouse/dev");

    // tools/list: filtered by alice's grants exactly as for a 2025 client, and private.
    let list = modern(&alice, 2, "tools/list", json!({}), &[]).await;
    assert_eq!(names(&list), ["echo", "alpha__search", "beta__search"]);
    assert_eq!(list.body["result"]["cacheScope"], "private");
    assert_eq!(list.body["result"]["ttlMs"], 0);

    // tools/call: forwarded without the envelope (other `_meta` keys pass), answer completed.
    let call = modern(
        &alice,
        3,
        "tools/call",
        json!({"name": "echo", "arguments": {"x": 1}, "_meta": {"progressToken": 3}}),
        &[],
    )
    .await;
    assert_eq!(call.status, 200, "{call:?}");
    assert_eq!(call.body["id"], 3);
    assert_eq!(call.body["result"]["resultType"], "complete");
    assert!(call.body["result"].get("cacheScope").is_none(), "a call is not cacheable");
    assert_eq!(up.alpha.calls().last().unwrap()["_meta"], json!({"progressToken": 3}));
    // A client declaring elicitation: still nothing of it reaches a 2025-era upstream (the gateway
    // keeps it for 2026-07-28 upstreams only, decision 0018).
    let mut params = enveloped(json!({"name": "echo", "arguments": {}}), "modern-test");
    params["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!({"elicitation": {}, "sampling": {}});
    let body = json!({"jsonrpc": "2.0", "id": 33, "method": "tools/call", "params": params}).to_string();
    let headers = [("mcp-protocol-version", V2026), ("mcp-method", "tools/call"), ("mcp-name", "echo")];
    assert_eq!(alice.post_raw(body, &headers).await.body["result"]["resultType"], "complete");
    assert!(up.alpha.calls().last().unwrap().get("_meta").is_none(), "{:?}", up.alpha.calls().last());

    // Policy applies: a tool alice is not granted is refused and audited as denied.
    let denied = modern(&alice, 4, "tools/call", json!({"name": "wipe", "arguments": {}}), &[]).await;
    assert_eq!(denied.body["error"]["code"], -32003, "{denied:?}");

    // An `Mcp-Session-Id` is ignored, whatever it says.
    let ignored = modern(&alice, 5, "tools/list", json!({}), &[("mcp-session-id", "not-a-session")]).await;
    assert_eq!(names(&ignored), ["echo", "alpha__search", "beta__search"]);

    // Upstream sessions are pooled per user on this worker: one per upstream for all of alice's
    // requests so far, another for bob.
    assert_eq!((up.alpha.sessions_opened(), up.beta.sessions_opened()), (1, 1));
    let bob = gw.client("dev", Some(BOB));
    let bobs = modern(&bob, 1, "tools/list", json!({}), &[]).await;
    assert!(names(&bobs).contains(&"wipe".to_owned()), "{bobs:?}");
    assert_eq!((up.alpha.sessions_opened(), up.beta.sessions_opened()), (2, 2));
    assert_eq!(up.alpha.notes()[0], json!({"declared": {}}), "no client capability is declared upstream");

    // An upstream that forgot the pooled session gets a new one, once, and the request goes through.
    up.alpha.forget_sessions();
    let again = modern(&alice, 6, "tools/call", json!({"name": "echo", "arguments": {}}), &[]).await;
    assert_eq!(again.body["result"]["resultType"], "complete", "{again:?}");
    assert_eq!(up.alpha.sessions_opened(), 3);

    // A streamed call: progress is relayed on the request's stream; beta's sampling request cannot
    // reach a 2026-07-28 client, so the gateway answers it (an error) and the call finishes.
    let ask =
        modern(&bob, 2, "tools/call", json!({"name": "ask", "arguments": {}, "_meta": {"progressToken": "p"}}), &[])
            .await;
    assert_eq!(ask.header("content-type"), Some("text/event-stream"));
    let methods: Vec<&str> = ask.events.iter().filter_map(|(_, m)| m["method"].as_str()).collect();
    assert_eq!(methods, ["notifications/progress"], "progress only; no server request: {ask:?}");
    assert_eq!(ask.events[1].1["params"]["progressToken"], "p");
    assert_eq!(ask.body["id"], 2);
    assert_eq!(ask.body["result"]["content"][0]["text"], "beta/ask: ?", "beta got an error instead of a sample");
    assert_eq!(ask.body["result"]["resultType"], "complete");

    // Resources and prompts, routed as for 2025 clients; reads are private.
    let resources = modern(&alice, 7, "resources/list", json!({}), &[]).await;
    assert_eq!(resources.body["result"]["cacheScope"], "private");
    let read = modern(&alice, 8, "resources/read", json!({"uri": "alpha://doc/1"}), &[]).await;
    assert_eq!(read.body["result"]["contents"][0]["uri"], "alpha://doc/1", "{read:?}");
    assert_eq!(
        (read.body["result"]["ttlMs"].clone(), read.body["result"]["cacheScope"].clone()),
        (json!(0), json!("private"))
    );
    let prompts = modern(&alice, 9, "prompts/list", json!({}), &[]).await;
    assert_eq!(prompts.body["result"]["cacheScope"], "private");
    let prompt_name = prompts.body["result"]["prompts"][0]["name"].as_str().unwrap().to_owned();
    let got = modern(&alice, 10, "prompts/get", json!({"name": prompt_name}), &[]).await;
    assert_eq!(got.body["result"]["resultType"], "complete", "{got:?}");

    // Audit: one event per request, with the client from `_meta`, no session id, outcomes as usual.
    let events = eventually("audit events", async || {
        let events = cp.audit_events();
        (events.iter().filter(|e| e.client_name.as_deref() == Some("modern-test")).count() >= 13).then_some(events)
    })
    .await;
    let mine: Vec<_> = events.iter().filter(|e| e.client_name.as_deref() == Some("modern-test")).collect();
    assert!(mine.iter().all(|e| e.session_id.is_none() && e.client_version.as_deref() == Some("9.9")));
    let wipe = mine.iter().find(|e| e.method == "tools/call" && e.tool.as_deref() == Some("wipe")).unwrap();
    assert_eq!(wipe.outcome, Outcome::Denied);
    assert!(mine.iter().any(|e| e.method == "server/discover" && e.outcome == Outcome::Allowed));
}

#[tokio::test]
async fn envelope_header_and_version_errors() {
    let (_key, _up, _cp, gw, _dir) = setup().await;
    let alice = gw.client("dev", Some(ALICE));

    // Authentication comes first, as for every request.
    let anonymous = gw.client("dev", None);
    assert_eq!(modern(&anonymous, 1, "tools/list", json!({}), &[]).await.status, 401);

    // Headers against the body: 400 with -32020 naming the header.
    let call = enveloped(json!({"name": "echo", "arguments": {}}), "t");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call}).to_string();
    let wrong_name = alice
        .post_raw(body.clone(), &[("mcp-protocol-version", V2026), ("mcp-method", "tools/call"), ("mcp-name", "add")])
        .await;
    assert_eq!((wrong_name.status, wrong_name.rpc_code()), (400, Some(-32020)), "{wrong_name:?}");
    assert_eq!(wrong_name.body["error"]["data"]["header"], "Mcp-Name");
    assert!(wrong_name.body["error"]["message"].as_str().unwrap().contains("'add' does not match body value 'echo'"));
    let no_name = alice.post_raw(body.clone(), &[("mcp-protocol-version", V2026), ("mcp-method", "tools/call")]).await;
    assert_eq!((no_name.status, no_name.body["error"]["data"]["header"].clone()), (400, json!("Mcp-Name")));
    let no_method = alice.post_raw(body.clone(), &[("mcp-protocol-version", V2026), ("mcp-name", "echo")]).await;
    assert_eq!((no_method.status, no_method.body["error"]["data"]["header"].clone()), (400, json!("Mcp-Method")));
    let other_version = alice
        .post_raw(
            body.clone(),
            &[("mcp-protocol-version", "2025-11-25"), ("mcp-method", "tools/call"), ("mcp-name", "echo")],
        )
        .await;
    assert_eq!(
        (other_version.rpc_code(), other_version.body["error"]["data"]["header"].clone()),
        (Some(-32020), json!("MCP-Protocol-Version"))
    );
    let encoded = alice
        .post_raw(
            body,
            &[("mcp-protocol-version", V2026), ("mcp-method", "tools/call"), ("mcp-name", "=?base64?ZWNobw==?=")],
        )
        .await;
    assert_eq!(encoded.status, 200, "a Base64-encoded Mcp-Name is decoded: {encoded:?}");

    // The envelope: `_meta` with the version and the client capabilities, else -32602 naming them.
    let bare = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": V2026}}});
    let missing =
        alice.post_raw(bare.to_string(), &[("mcp-protocol-version", V2026), ("mcp-method", "tools/list")]).await;
    assert_eq!((missing.status, missing.rpc_code()), (400, Some(-32602)));
    assert!(missing.body["error"]["message"].as_str().unwrap().contains("io.modelcontextprotocol/clientCapabilities"));
    let probe = alice
        .post_raw(
            r#"{"jsonrpc":"2.0","id":3,"method":"server/discover","params":{}}"#,
            &[("mcp-protocol-version", V2026), ("mcp-method", "server/discover")],
        )
        .await;
    assert_eq!((probe.status, probe.rpc_code()), (400, Some(-32602)), "a probe without its envelope");

    // A version the gateway does not speak: 400 -32022 listing the ones it does.
    let mut future = enveloped(json!({}), "t");
    future["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let body = json!({"jsonrpc": "2.0", "id": 4, "method": "server/discover", "params": future}).to_string();
    let unsupported =
        alice.post_raw(body, &[("mcp-protocol-version", "2099-01-01"), ("mcp-method", "server/discover")]).await;
    assert_eq!((unsupported.status, unsupported.rpc_code()), (400, Some(-32022)), "{unsupported:?}");
    assert_eq!(
        unsupported.body["error"]["data"],
        json!({"supported": [V2026, "2025-11-25", "2025-06-18", "2025-03-26"], "requested": "2099-01-01"})
    );

    // Methods this era does not have, or the gateway does not offer: 404 -32601.
    for method in ["ping", "logging/setLevel", "resources/subscribe", "nope/nope"] {
        let reply = modern(&alice, 5, method, json!({}), &[]).await;
        assert_eq!((reply.status, reply.rpc_code()), (404, Some(-32601)), "{method}: {reply:?}");
    }

    // Responses are never sent by 2026-07-28 clients; notifications are accepted and dropped.
    let response =
        alice.post_raw(r#"{"jsonrpc":"2.0","id":"0:n:1","result":{}}"#, &[("mcp-protocol-version", V2026)]).await;
    assert_eq!((response.status, response.rpc_code()), (400, Some(-32600)));
    let note = alice
        .post_raw(
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#,
            &[("mcp-protocol-version", V2026), ("mcp-method", "notifications/cancelled")],
        )
        .await;
    assert_eq!(note.status, 202);

    // GET and DELETE do not exist in this era: 405, allowing POST.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let reply = reqwest::Client::new()
            .request(method.clone(), &alice.endpoint)
            .bearer_auth(ALICE)
            .header("mcp-protocol-version", V2026)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 405, "{method}");
        assert_eq!(reply.headers()["allow"], "POST");
    }

    // 2025-era traffic is untouched: the handshake still works beside it.
    let mut legacy = gw.client("dev", Some(ALICE));
    assert_eq!(legacy.initialize().await.body["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(legacy.tool_names().await, ["echo", "alpha__search", "beta__search"]);
}

/// An upstream (2025 era) whose GET stream sends a tools list change, a log message and a prompts
/// list change, then stays open; it offers `tools.listChanged` only.
async fn noisy_upstream() -> String {
    use axum::response::IntoResponse as _;
    async fn post(axum::Json(msg): axum::Json<Value>) -> axum::response::Response {
        match msg["method"].as_str() {
            Some("initialize") => (
                [("mcp-session-id", "noisy-1")],
                axum::Json(json!({"jsonrpc": "2.0", "id": msg["id"], "result": {"protocolVersion": "2025-11-25",
                    "capabilities": {"tools": {"listChanged": true}}, "serverInfo": {"name": "noisy", "version": "1"}}})),
            )
                .into_response(),
            Some("tools/list") => axum::Json(json!({"jsonrpc": "2.0", "id": msg["id"], "result": {"tools": []}})).into_response(),
            _ if msg.get("id").is_none() => axum::http::StatusCode::ACCEPTED.into_response(),
            _ => axum::http::StatusCode::BAD_REQUEST.into_response(),
        }
    }
    async fn get() -> axum::response::Response {
        use futures::StreamExt as _;
        let events = [
            json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
            json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}}),
            json!({"jsonrpc": "2.0", "method": "notifications/prompts/list_changed"}),
        ];
        let first: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        let body = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(first) })
            .chain(futures::stream::pending());
        ([("content-type", "text/event-stream")], axum::body::Body::from_stream(body)).into_response()
    }
    let (base, _task) = serve(axum::Router::new().route("/mcp", axum::routing::post(post).get(get))).await;
    format!("{base}/mcp")
}

#[tokio::test]
async fn subscriptions_listen_fans_in_the_list_changes_asked_for() {
    use futures::StreamExt as _;
    let key = SigningKey::generate();
    let up = Upstreams::start().await;
    let cp = FakeControlPlane::start().await;
    let mut bundle = content(&up, ANALYST);
    let noisy = noisy_upstream().await;
    bundle.servers.iter_mut().find(|s| s.slug == "alpha").unwrap().url = noisy;
    cp.publish(vec![key.sign("default", 1, 0, bundle)]);
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(&cp.url, dir.path(), &key).await;
    gw.revision().await;
    let alice = gw.client("dev", Some(ALICE));

    let filter = json!({"notifications": {"toolsListChanged": true, "promptsListChanged": true,
                                          "resourceSubscriptions": ["alpha://doc/1"]}});
    let params = enveloped(filter, "modern-test");
    let body = json!({"jsonrpc": "2.0", "id": "sub-1", "method": "subscriptions/listen", "params": params});
    let response = reqwest::Client::new()
        .post(&alice.endpoint)
        .bearer_auth(ALICE)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", V2026)
        .header("mcp-method", "subscriptions/listen")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let events = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let events = parse_events(&text);
            if events.len() >= 2 {
                return events;
            }
            text.push_str(&String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()));
        }
    })
    .await
    .expect("the acknowledgement and one notice");
    // Only what an upstream with a stream can send is acknowledged: beta offers prompt list changes
    // but has no GET stream; resource subscriptions are never honoured.
    assert_eq!(events[0].1["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(events[0].1["params"]["notifications"], json!({"toolsListChanged": true}));
    assert_eq!(events[0].1["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "sub-1");
    assert_eq!(events[1].1["method"], "notifications/tools/list_changed");
    assert_eq!(events[1].1["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "sub-1");
    // The log message and the prompts notice are not what was acknowledged: nothing else arrives.
    let more = tokio::time::timeout(std::time::Duration::from_millis(300), stream.next()).await;
    assert!(more.is_err(), "nothing beyond the acknowledged notices: {more:?}");
}
