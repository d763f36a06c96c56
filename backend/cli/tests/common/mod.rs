//! Helpers shared by the integration tests that run real peers: the `gatehouse` binary, the MCP
//! reference server (`@modelcontextprotocol/server-everything`) bound to 127.0.0.1, the test peers'
//! folder and Python venv, and a GraphQL client for the console API. (Taken from `e2e.rs`, which can
//! switch to it.)

#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "correct-horse-battery-staple";

/// A child process killed when the test ends, however it ends.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn peers_dir() -> PathBuf {
    let dir = std::env::var_os("GATEHOUSE_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/node_modules"));
    assert!(
        dir.join("@modelcontextprotocol/server-everything").exists(),
        "test peers are not installed in {}: run `scripts/setup.sh test` (or `make test`)",
        dir.display()
    );
    dir
}

pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("GATEHOUSE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".tools/venv/bin/python");
    assert!(venv.exists(), "the Python MCP SDK venv is missing: run `scripts/setup.sh test` (or `make test`)");
    venv
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn wait_for_tcp(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn start_everything() -> (Proc, String) {
    let port = free_port();
    let peers = peers_dir();
    let child = Command::new("node")
        .arg("--require")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/bind-localhost.cjs"))
        .arg(peers.join("@modelcontextprotocol/server-everything/dist/index.js"))
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node must be installed");
    let proc = Proc(child);
    wait_for_tcp(port, "server-everything");
    (proc, format!("http://127.0.0.1:{port}/mcp"))
}

pub struct Gatehouse {
    pub _proc: Proc,
    pub control: String,
    pub gateway: String,
    pub _data: tempfile::TempDir,
}

pub fn start_gatehouse() -> Gatehouse {
    start_gatehouse_with(&[])
}

/// `gatehouse serve` with extra environment variables.
pub fn start_gatehouse_with(env: &[(&str, &str)]) -> Gatehouse {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["serve", "--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .envs(env.iter().copied())
        .env("GATEHOUSE_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("GATEHOUSE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("[gatehouse] {line}");
            let _ = tx.send(line);
        }
    });
    let (mut control, mut gateway) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while control.is_none() || gateway.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("gatehouse serve did not report its addresses in time");
        let url_after =
            |marker: &str| line.split(marker).nth(1).map(|r| r.split_whitespace().next().unwrap().to_owned());
        if let Some(u) = url_after("console listening on ") {
            control = Some(u);
        }
        if let Some(u) = url_after("gateway worker listening on ") {
            gateway = Some(u);
        }
    }
    Gatehouse { _proc: proc, control: control.unwrap(), gateway: gateway.unwrap(), _data: data }
}

/// A GraphQL client signed in as a console user (session cookie + same-origin header), or holding
/// an API token.
pub struct Gql {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
    bearer: Option<String>,
}

impl Gql {
    pub async fn sign_in(base: &str, email: &str, password: &str) -> Gql {
        let http = reqwest::Client::new();
        let resp = http
            .post(format!("{base}/auth/login"))
            .header("origin", base)
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "sign-in failed: {}", resp.text().await.unwrap());
        let cookie = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("gatehouse_session="))
            .map(|v| v.split(';').next().unwrap().to_owned())
            .expect("sign-in sets the session cookie");
        Gql { http, base: base.to_owned(), cookie: Some(cookie), bearer: None }
    }

    pub fn with_token(base: &str, token: &str) -> Gql {
        Gql { http: reqwest::Client::new(), base: base.to_owned(), cookie: None, bearer: Some(token.to_owned()) }
    }

    /// A client with no credentials at all.
    pub fn anonymous(base: &str) -> Gql {
        Gql { http: reqwest::Client::new(), base: base.to_owned(), cookie: None, bearer: None }
    }

    /// The session cookie (`name=value`) of a signed-in client.
    pub fn cookie(&self) -> Option<&str> {
        self.cookie.as_deref()
    }

    pub async fn raw(&self, query: &str, variables: Value) -> Value {
        let mut req =
            self.http.post(format!("{}/graphql", self.base)).json(&json!({ "query": query, "variables": variables }));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c).header("origin", &self.base);
        }
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// Runs a query that must succeed and returns its `data`.
    pub async fn ok(&self, query: &str, variables: Value) -> Value {
        let v = self.raw(query, variables).await;
        assert!(v.get("errors").is_none(), "GraphQL errors: {v}");
        v["data"].clone()
    }

    /// Runs a query that must fail and returns the first error's `extensions.code` and message.
    pub async fn err(&self, query: &str, variables: Value) -> (String, String) {
        let v = self.raw(query, variables).await;
        let e = &v["errors"][0];
        assert!(!e.is_null(), "expected an error, got {v}");
        (e["extensions"]["code"].as_str().unwrap_or_default().to_owned(), e["message"].as_str().unwrap().to_owned())
    }
}

/// Runs the official Python MCP SDK client (`tests/peers/mcp_client.py`) against `url` with `token`
/// and the given steps; returns what it printed (see the script for the format).
pub async fn mcp_client(url: &str, token: &str, steps: Value) -> Value {
    mcp_client_in(url, token, steps, "auto").await
}

/// [`mcp_client`] with the client's `mode`: `"auto"` (its default: MCP 2026-07-28 through the
/// gateway) or `"legacy"` (pinned to the 2025 era: handshake, session, DELETE at the end).
#[allow(dead_code)] // not every test binary pins the era
pub async fn mcp_client_in(url: &str, token: &str, steps: Value, mode: &str) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/mcp_client.py");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(python())
            .arg(script)
            .arg(url)
            .arg(token)
            .arg(steps.to_string())
            .arg(mode)
            .output(),
    )
    .await
    .expect("the Python MCP client hung")
    .unwrap();
    assert!(out.status.success(), "Python MCP client failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Tenant `acme` with server `everything` at `upstream_url`, an access role `role` granting
/// `grants` (tool names of everything, `*` for all), user alice@acme.test bound to it, virtual
/// server `dev` over everything, and an API token of alice's. Returns (MCP endpoint, token secret).
pub async fn acme_with_alice(admin: &Gql, upstream_url: &str, role: &str, grants: &[&str]) -> (String, String) {
    admin.ok(r#"mutation { createTenant(slug: "acme", name: "Acme") { slug } }"#, json!({})).await;
    admin
        .ok(
            "mutation($url: String!) { registerServer(tenant: \"acme\", slug: \"everything\", name: \"Everything\", url: $url) { slug } }",
            json!({ "url": upstream_url }),
        )
        .await;
    let grants: Vec<Value> = grants.iter().map(|t| json!({ "server": "everything", "tool": t })).collect();
    admin.ok("mutation($r: String!) { createRole(tenant: \"acme\", slug: $r) { slug } }", json!({ "r": role })).await;
    admin
        .ok(
            "mutation($r: String!, $g: [GrantInput!]!) { setRoleGrants(tenant: \"acme\", role: $r, grants: $g) { slug } }",
            json!({ "r": role, "g": grants }),
        )
        .await;
    admin
        .ok(
            r#"mutation { createUser(tenant: "acme", email: "alice@acme.test", displayName: "Alice") { id } }"#,
            json!({}),
        )
        .await;
    admin
        .ok(
            "mutation($r: String!) { bindRole(tenant: \"acme\", role: $r, email: \"alice@acme.test\") { slug } }",
            json!({ "r": role }),
        )
        .await;
    let vs = admin
        .ok(
            r#"mutation { createVirtualServer(tenant: "acme", slug: "dev", name: "Dev", servers: ["everything"]) { endpoint } }"#,
            json!({}),
        )
        .await;
    let token = admin
        .ok(
            r#"mutation { createToken(tenant: "acme", userEmail: "alice@acme.test", name: "laptop") { secret } }"#,
            json!({}),
        )
        .await;
    (
        vs["createVirtualServer"]["endpoint"].as_str().unwrap().to_owned(),
        token["createToken"]["secret"].as_str().unwrap().to_owned(),
    )
}

/// Creates tenant `globex` with an admin of its own, signed in: the client that tries to cross into
/// acme.
pub async fn globex_admin(admin: &Gql, control: &str) -> Gql {
    admin.ok(r#"mutation { createTenant(slug: "globex", name: "Globex") { slug } }"#, json!({})).await;
    admin
        .ok(
            r#"mutation { createUser(tenant: "globex", email: "root@globex.test", displayName: "Root", consoleRole: "admin", password: "globex-password-1") { id } }"#,
            json!({}),
        )
        .await;
    Gql::sign_in(control, "root@globex.test", "globex-password-1").await
}

/// One MCP session over plain HTTP: initialize, initialized, then `tools/call`s; each call answers
/// (HTTP status, Retry-After header, JSON body).
pub struct RawSession {
    http: reqwest::Client,
    endpoint: String,
    token: String,
    /// Its `Mcp-Session-Id`.
    pub session: String,
}

impl RawSession {
    /// POSTs a 2025-11-25 `initialize` as `token`; the answer, unread.
    pub async fn initialize(http: &reqwest::Client, endpoint: &str, token: &str) -> reqwest::Response {
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
        http.post(endpoint)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(&init)
            .send()
            .await
            .unwrap()
    }

    /// `None` while the gateway does not know the token yet (the bundle is on its way).
    pub async fn open(endpoint: &str, token: &str) -> Option<RawSession> {
        let http = reqwest::Client::new();
        let resp = Self::initialize(&http, endpoint, token).await;
        if resp.status() != 200 {
            return None;
        }
        let session = resp.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let s = RawSession { http, endpoint: endpoint.to_owned(), token: token.to_owned(), session };
        s.post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
        Some(s)
    }

    /// A session opened before (by id), to send more requests in it.
    pub fn resume(endpoint: &str, token: &str, session: &str) -> RawSession {
        RawSession {
            http: reqwest::Client::new(),
            endpoint: endpoint.to_owned(),
            token: token.to_owned(),
            session: session.to_owned(),
        }
    }

    pub async fn post(&self, body: Value) -> (u16, Option<String>, Value) {
        let resp = self
            .http
            .post(&self.endpoint)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.session)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        (status, retry, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn call(&self, tool: &str, arguments: Value) -> (u16, Option<String>, Value) {
        self.post(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})).await
    }
}
