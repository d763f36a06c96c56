//! The local front over a small scripted stdio server and a scripted legacy SSE server.

use std::time::Duration;

use axum::response::sse::{Event, Sse};
use futures::StreamExt;
use serde_json::{Value, json};

use super::*;

/// A stdio MCP server in Python: answers initialize, `slow` (two progress notifications and a
/// sampling request before its answer), echoes anything else, and sends a log notification when
/// it receives `notifications/initialized`.
const SERVER: &str = r#"
import json, sys
def out(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
print("not json: a banner", flush=True)
for line in sys.stdin:
    m = json.loads(line)
    if m.get("method") == "initialize":
        out({"jsonrpc": "2.0", "id": m["id"], "result": {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "py", "version": "1"}}})
    elif m.get("method") == "notifications/initialized":
        out({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "ready"}})
    elif m.get("method") == "slow":
        tok = m["params"]["_meta"]["progressToken"]
        out({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": tok, "progress": 1}})
        out({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {}})
        answer = json.loads(sys.stdin.readline())
        out({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": tok, "progress": 2}})
        out({"jsonrpc": "2.0", "id": m["id"], "result": {"sampled": answer.get("result")}})
    elif m.get("method") == "exit":
        sys.exit(0)
    elif "id" in m and "method" in m:
        out({"jsonrpc": "2.0", "id": m["id"], "result": {"echo": m.get("params")}})
"#;

fn python_spec() -> StdioCommand {
    StdioCommand { command: "python3".into(), args: vec!["-c".into(), SERVER.into()], env: Default::default() }
}

async fn bridge(commands: &[&str]) -> Bridge {
    Bridge::start(BridgeConfig {
        stdio_commands: commands.iter().map(|c| c.to_string()).collect(),
        timeout: Duration::from_secs(10),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn init() -> Value {
    json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})
}

struct Client {
    http: reqwest::Client,
    url: String,
    sid: Option<String>,
}

impl Client {
    async fn post(&self, body: Value) -> reqwest::Response {
        let mut r = self.http.post(&self.url).json(&body);
        if let Some(s) = &self.sid {
            r = r.header(SESSION_HEADER, s);
        }
        r.send().await.unwrap()
    }

    async fn initialize(url: &str) -> (Client, Value) {
        let mut c = Client { http: reqwest::Client::new(), url: url.to_owned(), sid: None };
        let r = c.post(init()).await;
        c.sid = r.headers().get(SESSION_HEADER).map(|v| v.to_str().unwrap().to_owned());
        let body: Value = r.json().await.unwrap();
        (c, body)
    }

    async fn events(&self, body: Value) -> Vec<Value> {
        let r = self.post(body).await;
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/event-stream");
        let text = r.text().await.unwrap();
        text.split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn a_stdio_server_is_a_streamable_http_endpoint() {
    let b = bridge(&["python3"]).await;
    let url = b.endpoint(&Upstream::Stdio(python_spec()));
    assert_eq!(url, b.endpoint(&Upstream::Stdio(python_spec())), "one spec, one URL");
    let (c, answer) = Client::initialize(&url).await;
    assert_eq!(answer["result"]["serverInfo"]["name"], "py", "{answer}");
    assert!(c.sid.is_some());
    assert_eq!(b.open_sessions(), 1);

    // A notification: 202; the server's log notification waits in the backlog for a GET stream.
    let r = c.post(json!({"jsonrpc":"2.0","method":"notifications/initialized"})).await;
    assert_eq!(r.status(), 202);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let echoed = c.events(json!({"jsonrpc":"2.0","id":"a-1","method":"tools/call","params":{"x":1}})).await;
    assert_eq!(echoed, vec![json!({"jsonrpc":"2.0","id":"a-1","result":{"echo":{"x":1}}})]);

    // A request with progress and a server-to-client request in the middle: the client answers
    // the sampling request with a POST while the stream is open.
    let c2 = Client { http: c.http.clone(), url: c.url.clone(), sid: c.sid.clone() };
    let slow = tokio::spawn(async move {
        c2.events(json!({"jsonrpc":"2.0","id":9,"method":"slow","params":{"_meta":{"progressToken":"p"}}})).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = c.post(json!({"jsonrpc":"2.0","id":"s1","result":{"text":"hi"}})).await;
    assert_eq!(r.status(), 202);
    let events = slow.await.unwrap();
    let methods: Vec<&str> = events.iter().map(|e| e["method"].as_str().unwrap_or("(response)")).collect();
    assert_eq!(
        methods,
        ["notifications/progress", "sampling/createMessage", "notifications/progress", "(response)"],
        "{events:?}"
    );
    assert_eq!(events[3]["result"]["sampled"]["text"], "hi");

    // GET: the backlog (the log notification sent while nothing was in flight).
    let get = c.http.get(&url).header(SESSION_HEADER, c.sid.as_deref().unwrap()).send().await.unwrap();
    assert_eq!(get.status(), 200);
    let mut body = get.bytes_stream();
    let first = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(first.contains("\"ready\""), "{first}");

    // DELETE ends the session and its process; the session is then unknown.
    let r = c.http.delete(&url).header(SESSION_HEADER, c.sid.as_deref().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(b.open_sessions(), 0);
    let r = c.post(json!({"jsonrpc":"2.0","id":1,"method":"ping"})).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn sessions_are_bound_to_their_endpoint_and_unknown_ones_are_404() {
    let b = bridge(&["python3"]).await;
    let url = b.endpoint(&Upstream::Stdio(python_spec()));
    let other = b.endpoint(&Upstream::Sse("http://127.0.0.1:9/sse".into()));
    let (c, _) = Client::initialize(&url).await;
    let wrong = Client { http: c.http.clone(), url: other, sid: c.sid.clone() };
    assert_eq!(wrong.post(json!({"jsonrpc":"2.0","id":1,"method":"ping"})).await.status(), 404);
    let unknown = Client { http: c.http.clone(), url: url.clone(), sid: Some("nope".into()) };
    assert_eq!(unknown.post(json!({"jsonrpc":"2.0","id":1,"method":"ping"})).await.status(), 404);
    let none = Client { http: c.http.clone(), url: url.clone(), sid: None };
    assert_eq!(none.post(json!({"jsonrpc":"2.0","id":1,"method":"ping"})).await.status(), 400);
    let junk = c.http.post(&url).header(SESSION_HEADER, c.sid.as_deref().unwrap()).body("{not json").send().await;
    assert_eq!(junk.unwrap().status(), 400);
    let r = c.http.post(format!("{}/u/0000", b.shared.base)).json(&init()).send().await.unwrap();
    assert_eq!(r.status(), 404, "an endpoint key nobody registered");
}

#[tokio::test]
async fn a_command_off_the_allow_list_is_refused_and_not_launched() {
    let marker = std::env::temp_dir().join(format!("gatehouse-bridge-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let spec = StdioCommand {
        command: "touch".into(),
        args: vec![marker.to_string_lossy().into_owned()],
        env: Default::default(),
    };
    for allowed in [&[][..], &["python3"][..]] {
        let b = bridge(allowed).await;
        let url = b.endpoint(&Upstream::Stdio(spec.clone()));
        let (c, answer) = Client::initialize(&url).await;
        assert!(c.sid.is_none());
        let why = answer["error"]["message"].as_str().unwrap();
        assert!(why.contains("'touch'") && why.contains("stdio_commands"), "{why}");
        assert!(b.refusal(&Upstream::Stdio(spec.clone())).is_some());
        assert_eq!(b.open_sessions(), 0);
    }
    assert!(!marker.exists(), "the refused command ran");
}

#[tokio::test]
async fn a_server_that_exits_ends_its_session_and_answers_what_was_in_flight() {
    let b = bridge(&["python3"]).await;
    let url = b.endpoint(&Upstream::Stdio(python_spec()));
    let (c, _) = Client::initialize(&url).await;
    let events = c.events(json!({"jsonrpc":"2.0","id":5,"method":"exit"})).await;
    assert_eq!(events[0]["id"], 5);
    assert!(events[0]["error"]["message"].as_str().unwrap().contains("closed"), "{events:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b.open_sessions(), 0);
    assert_eq!(c.post(json!({"jsonrpc":"2.0","id":6,"method":"ping"})).await.status(), 404);
}

#[tokio::test]
async fn a_server_that_fails_to_start_says_why() {
    let b = bridge(&["sh"]).await;
    let spec = StdioCommand {
        command: "sh".into(),
        args: vec!["-c".into(), "echo boom >&2; exit 3".into()],
        env: Default::default(),
    };
    let (_, answer) = Client::initialize(&b.endpoint(&Upstream::Stdio(spec))).await;
    let why = answer["error"]["message"].as_str().unwrap();
    assert!(why.contains("exited before answering initialize") && why.contains("boom"), "{why}");
}

/// A legacy HTTP+SSE server: `GET /sse` announces `/messages?s=1`; each POSTed request is
/// answered on the stream (a progress notification first when it carries a token).
async fn legacy_sse_server(cross_origin: bool) -> String {
    use axum::routing::get;
    let (tx, rx) = tokio::sync::broadcast::channel::<Value>(16);
    let rx = std::sync::Arc::new(Mutex::new(Some(rx)));
    let app = Router::new()
        .route(
            "/sse",
            get(move || {
                let rx = lock(&rx).take();
                async move {
                    let endpoint = if cross_origin { "http://198.51.100.1/messages" } else { "/messages?s=1" };
                    let first = futures::stream::once(async move {
                        Ok::<_, Infallible>(Event::default().event("endpoint").data(endpoint))
                    });
                    let rest = tokio_stream_of(rx.unwrap())
                        .map(|m| Ok::<_, Infallible>(Event::default().event("message").data(m.to_string())));
                    Sse::new(first.chain(rest))
                }
            }),
        )
        .route(
            "/messages",
            post(move |axum::Json(m): axum::Json<Value>| async move {
                if let (Some(id), Some(method)) = (m.get("id"), m.get("method")) {
                    if let Some(t) = m.pointer("/params/_meta/progressToken") {
                        let _ = tx.send(json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":t,"progress":1}}));
                    }
                    let result = if method == "initialize" {
                        json!({"protocolVersion":"2024-11-05","capabilities":{"tools":{}},"serverInfo":{"name":"legacy","version":"1"}})
                    } else {
                        json!({"method": method})
                    };
                    let _ = tx.send(json!({"jsonrpc":"2.0","id":id,"result":result}));
                }
                StatusCode::ACCEPTED
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sse", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn tokio_stream_of(rx: tokio::sync::broadcast::Receiver<Value>) -> impl futures::Stream<Item = Value> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.ok().map(|m| (m, rx)) })
}

#[tokio::test]
async fn a_legacy_sse_server_is_a_streamable_http_endpoint() {
    let b = bridge(&[]).await;
    let sse_url = legacy_sse_server(false).await;
    let url = b.endpoint(&Upstream::Sse(sse_url));
    let (c, answer) = Client::initialize(&url).await;
    assert_eq!(answer["result"]["serverInfo"]["name"], "legacy", "{answer}");
    let events =
        c.events(json!({"jsonrpc":"2.0","id":"x","method":"tools/list","params":{"_meta":{"progressToken":3}}})).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["method"], "notifications/progress");
    assert_eq!(events[1], json!({"jsonrpc":"2.0","id":"x","result":{"method":"tools/list"}}));
}

#[tokio::test]
async fn a_legacy_sse_server_may_not_send_the_messages_elsewhere() {
    let b = bridge(&[]).await;
    let url = b.endpoint(&Upstream::Sse(legacy_sse_server(true).await));
    let (c, answer) = Client::initialize(&url).await;
    assert!(c.sid.is_none());
    let why = answer["error"]["message"].as_str().unwrap();
    assert!(why.contains("another origin"), "{why}");
}

/// `(id, message)` of every event in an SSE body.
fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|e| {
            let id = e.lines().find_map(|l| l.strip_prefix("id: "))?;
            let data = e.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((id.to_owned(), serde_json::from_str(data).unwrap()))
        })
        .collect()
}

#[tokio::test]
async fn a_request_whose_reader_went_away_resumes_after_its_last_event() {
    let b = bridge(&["python3"]).await;
    let url = b.endpoint(&Upstream::Stdio(python_spec()));
    let (c, _) = Client::initialize(&url).await;
    // `slow` sends progress, then waits for a sampling answer; its reader hangs up after the first event.
    let abandoned =
        c.post(json!({"jsonrpc":"2.0","id":1,"method":"slow","params":{"_meta":{"progressToken":"p"}}})).await;
    let mut events = abandoned.bytes_stream();
    let first = String::from_utf8(events.next().await.unwrap().unwrap().to_vec()).unwrap();
    let first = sse_events(&first);
    assert_eq!(first[0].1["method"], "notifications/progress", "{first:?}");
    let last_seen = first.last().unwrap().0.clone();
    drop(events);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // GET with Last-Event-ID: what followed (the sampling request), then, once the client answers
    // it, the rest live, ending with the answer; nothing of it went to another stream.
    let resumed = c
        .http
        .get(&url)
        .header(SESSION_HEADER, c.sid.as_deref().unwrap())
        .header("last-event-id", &last_seen)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let mut stream = resumed.bytes_stream();
    let mut text = String::new();
    let mut answered = false;
    let body = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = stream.next().await {
            text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
            if !answered && text.contains("sampling/createMessage") {
                answered = true;
                let r = c.post(json!({"jsonrpc":"2.0","id":"s1","result":{"text":"late"}})).await;
                assert_eq!(r.status(), 202);
            }
        }
        text
    })
    .await
    .expect("the resumed stream ends after the answer");
    let events = sse_events(&body);
    let methods: Vec<&str> = events.iter().map(|(_, m)| m["method"].as_str().unwrap_or("(response)")).collect();
    let all: Vec<&str> =
        first.iter().map(|(_, m)| m["method"].as_str().unwrap_or("(response)")).chain(methods).collect();
    assert_eq!(all, ["notifications/progress", "sampling/createMessage", "notifications/progress", "(response)"]);
    assert_eq!(events.last().unwrap().1["result"]["sampled"]["text"], "late");
    let ids: Vec<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
    let stream_of = |id: &str| id.split_once('-').unwrap().0.to_owned();
    assert!(ids.iter().all(|id| stream_of(id) == stream_of(&last_seen)), "one stream: {ids:?} after {last_seen}");
    // A resume after the end replays nothing more than what is left, and ends at once.
    let again = c
        .http
        .get(&url)
        .header(SESSION_HEADER, c.sid.as_deref().unwrap())
        .header("last-event-id", *ids.last().unwrap())
        .send()
        .await
        .unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(5), again.text()).await.unwrap().unwrap();
    assert!(sse_events(&rest).is_empty(), "{rest}");
}

#[tokio::test]
async fn after_the_resume_window_an_abandoned_request_takes_no_more_messages() {
    let b = Bridge::start(BridgeConfig {
        stdio_commands: vec!["python3".into()],
        timeout: Duration::from_secs(10),
        resume_window: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = b.endpoint(&Upstream::Stdio(python_spec()));
    let (c, _) = Client::initialize(&url).await;
    // `slow` waits for a sampling answer that never comes; its reader hangs up.
    let abandoned =
        c.post(json!({"jsonrpc":"2.0","id":1,"method":"slow","params":{"_meta":{"progressToken":"p"}}})).await;
    let mut events = abandoned.bytes_stream();
    let first = String::from_utf8(events.next().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(first.contains("notifications/progress"), "{first}");
    drop(events);
    // Past the window (and the once-a-second prune), the request is forgotten, and a GET stream
    // gets what the server sends outside any request.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let get = c.http.get(&url).header(SESSION_HEADER, c.sid.as_deref().unwrap()).send().await.unwrap();
    let mut stream = get.bytes_stream();
    let r = c.post(json!({"jsonrpc":"2.0","id":"s1","result":{}})).await;
    assert_eq!(r.status(), 202);
    let next = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap().unwrap();
    let text = String::from_utf8(next.to_vec()).unwrap();
    assert!(text.contains("\"progress\": 2") || text.contains("\"progress\":2"), "{text}");
    let shared = &b.shared;
    let sessions = lock(&shared.sessions);
    let s = sessions.values().next().unwrap();
    assert!(lock(&s.routes).pending.is_empty(), "the abandoned request is forgotten");
}
