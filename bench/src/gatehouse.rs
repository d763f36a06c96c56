//! Starts the processes under test (the echo upstream, `gatehouse serve` or the split control plane +
//! worker) and configures a tenant over GraphQL the way an administrator would.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

pub const ADMIN_EMAIL: &str = "bench-admin@example.com";
pub const ADMIN_PASSWORD: &str = "bench-correct-horse-battery-staple";

/// A child process, killed when dropped.
pub struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Spawns `command` with stdout piped; its lines are drained by a thread (so the pipe never fills)
    /// and, when `echo` is set, copied to stderr with a prefix.
    pub fn spawn(mut command: Command, label: &'static str, echo: bool) -> anyhow::Result<Proc> {
        command.stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(Stdio::null());
        let mut child = command.spawn().with_context(|| format!("starting {label}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[{label}] {line}");
                }
                let _ = tx.send(line);
            }
        });
        Ok(Proc { child, lines })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The rest of the first output line containing `marker`, up to whitespace.
    pub fn wait_for(&self, marker: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line =
                self.lines.recv_timeout(left).with_context(|| format!("no output line with {marker:?} in time"))?;
            if let Some(rest) = line.split(marker).nth(1) {
                return Ok(rest.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
    }

    /// Every output line until the process exits.
    pub fn wait_exit(mut self) -> anyhow::Result<Vec<String>> {
        let status = self.child.wait()?;
        if !status.success() {
            bail!("exited with {status}");
        }
        Ok(self.lines.try_iter().collect())
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The echo upstream, as a child process of this harness (so its CPU and memory are its own).
pub fn start_upstream(threads: usize) -> anyhow::Result<(Proc, String)> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args(["upstream", "--threads", &threads.to_string()]);
    let proc = Proc::spawn(command, "echo upstream", false)?;
    let addr = proc.wait_for("echo upstream listening on ", Duration::from_secs(10))?;
    Ok((proc, format!("http://{addr}/mcp")))
}

/// The Gatehouse processes under test.
pub struct Gatehouse {
    /// The process serving `/mcp/...` (the whole `serve` process, or the worker in split mode).
    pub worker: Proc,
    /// The control plane when it runs as its own process (split mode).
    pub control: Option<Proc>,
    pub control_url: String,
}

fn gatehouse_command(binary: &Path, log: Option<&str>) -> Command {
    let mut command = Command::new(binary);
    command.env("GATEHOUSE_ADMIN_EMAIL", ADMIN_EMAIL).env("GATEHOUSE_ADMIN_PASSWORD", ADMIN_PASSWORD);
    match log {
        Some(filter) => command.env("RUST_LOG", filter),
        // The binary's own default filter (info), as an operator runs it.
        None => command.env_remove("RUST_LOG"),
    };
    command
}

/// `gatehouse serve`: control plane, console and one worker in one process.
pub fn start_serve(binary: &Path, data: &Path, log: Option<&str>, echo: bool) -> anyhow::Result<Gatehouse> {
    let mut command = gatehouse_command(binary, log);
    command.args(["serve", "--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0", "--data-dir"]).arg(data);
    let proc = Proc::spawn(command, "gatehouse", echo)?;
    let control_url = proc.wait_for("console listening on ", Duration::from_secs(60))?;
    proc.wait_for("gateway worker listening on ", Duration::from_secs(60))?;
    Ok(Gatehouse { worker: proc, control: None, control_url })
}

/// `gatehouse control` and `gatehouse gateway` as two processes, as deployed: the worker's CPU then
/// excludes the control plane's (audit ingest into the database, bundle compilation).
pub fn start_split(binary: &Path, data: &Path, log: Option<&str>, echo: bool) -> anyhow::Result<Gatehouse> {
    let control_dir = data.join("control");
    let worker_dir = data.join("worker");
    std::fs::create_dir_all(&control_dir)?;
    let mut command = gatehouse_command(binary, log);
    command.args(["public-key", "--data-dir"]).arg(&control_dir);
    let key = Proc::spawn(command, "gatehouse public-key", echo)?
        .wait_exit()?
        .pop()
        .context("`gatehouse public-key` printed nothing")?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let worker_token = format!("bench-worker-{nanos:x}{:x}", std::process::id());
    let gateway_port = free_port()?;
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");

    let mut command = gatehouse_command(binary, log);
    command
        .args(["control", "--listen", "127.0.0.1:0", "--gateway-public-url", &gateway_url, "--worker-token"])
        .arg(&worker_token)
        .arg("--data-dir")
        .arg(&control_dir);
    let control = Proc::spawn(command, "gatehouse control", echo)?;
    let control_url = control.wait_for("console listening on ", Duration::from_secs(60))?;

    let mut command = gatehouse_command(binary, log);
    command
        .args(["gateway", "--gateway-listen", &format!("127.0.0.1:{gateway_port}"), "--control-url", &control_url])
        .args(["--worker-token", &worker_token, "--trusted-key", &key, "--data-dir"])
        .arg(&worker_dir);
    let worker = Proc::spawn(command, "gatehouse gateway", echo)?;
    worker.wait_for("gateway worker listening on ", Duration::from_secs(60))?;
    Ok(Gatehouse { worker, control: Some(control), control_url })
}

/// A GraphQL client signed in as the bootstrap administrator.
struct Admin {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Admin {
    async fn sign_in(base: &str) -> anyhow::Result<Admin> {
        let http = reqwest::Client::new();
        let resp = http
            .post(format!("{base}/auth/login"))
            .header("origin", base)
            .json(&json!({ "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD }))
            .send()
            .await?;
        if resp.status() != 200 {
            bail!("sign-in failed: HTTP {} {}", resp.status(), resp.text().await.unwrap_or_default());
        }
        let cookie = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("gatehouse_session="))
            .and_then(|v| v.split(';').next())
            .context("sign-in set no session cookie")?
            .to_owned();
        Ok(Admin { http, base: base.to_owned(), cookie })
    }

    async fn run(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let v: Value = self
            .http
            .post(format!("{}/graphql", self.base))
            .header("cookie", &self.cookie)
            .header("origin", &self.base)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?;
        if let Some(errors) = v.get("errors") {
            bail!("GraphQL errors for {query}: {errors}");
        }
        Ok(v["data"].clone())
    }
}

/// What the configuration produced.
pub struct Configured {
    /// The virtual server's MCP endpoint.
    pub endpoint: String,
    /// The user's bearer token.
    pub token: String,
}

/// Configures a realistic tenant: the echo upstream as a server, a role granting `echo` only, a user
/// bound to it, a virtual server and a token. (Parameter rules do not exist yet, so the policy is:
/// token check, role filter, audit event.)
pub async fn configure(control_url: &str, upstream_url: &str) -> anyhow::Result<Configured> {
    let admin = Admin::sign_in(control_url).await?;
    admin.run(r#"mutation { createTenant(slug: "bench", name: "Bench Corp") { slug } }"#, json!({})).await?;
    admin
        .run(
            r#"mutation($url: String!) { registerServer(tenant: "bench", slug: "echo", name: "Echo", url: $url) { slug } }"#,
            json!({ "url": upstream_url }),
        )
        .await?;
    admin
        .run(r#"mutation { createRole(tenant: "bench", slug: "caller", description: "may echo") { slug } }"#, json!({}))
        .await?;
    // The realistic policy of issue 3: echo is allowed only through a parameter rule (the message must
    // be printable ASCII of at most 200 characters), and a deny rule the evaluator checks first.
    admin
        .run(
            r#"mutation($r: RuleInput!) { addRule(tenant: "bench", role: "caller", rule: $r) { id } }"#,
            json!({ "r": { "server": "echo", "effect": "ALLOW", "tools": "echo",
                "params": [{ "param": "message", "maxLength": 200, "pattern": "[ -~]*" }] } }),
        )
        .await?;
    admin
        .run(
            r#"mutation($r: RuleInput!) { addRule(tenant: "bench", role: "caller", rule: $r) { id } }"#,
            json!({ "r": { "server": "echo", "effect": "DENY", "tools": "add", "description": "not for load" } }),
        )
        .await?;
    admin
        .run(
            r#"mutation { createUser(tenant: "bench", email: "load@bench.test", displayName: "Load") { id } }"#,
            json!({}),
        )
        .await?;
    admin
        .run(
            r#"mutation { bindRole(tenant: "bench", role: "caller", email: "load@bench.test") { members } }"#,
            json!({}),
        )
        .await?;
    let vs = admin
        .run(
            r#"mutation { createVirtualServer(tenant: "bench", slug: "dev", name: "Dev", servers: ["echo"]) { endpoint } }"#,
            json!({}),
        )
        .await?;
    let endpoint = vs["createVirtualServer"]["endpoint"].as_str().context("no endpoint")?.to_owned();
    let token = admin
        .run(
            r#"mutation { createToken(tenant: "bench", userEmail: "load@bench.test", name: "bench") { secret } }"#,
            json!({}),
        )
        .await?["createToken"]["secret"]
        .as_str()
        .context("no token secret")?
        .to_owned();
    Ok(Configured { endpoint, token })
}
