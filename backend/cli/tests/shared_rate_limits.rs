//! Rate limits shared by separate worker processes: `gatehouse control`, two `gatehouse gateway`
//! processes started with `--rate-limit-store redis://…` (the flag as an operator types it), a real
//! `redis-server` and the MCP reference server, all on 127.0.0.1. A limit added over GraphQL holds
//! across both workers.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const WORKER_TOKEN: &str = "shared-limits-worker-token";

fn spawn(args: &[&str], data: &Path, env: &[(&str, &str)]) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .envs(env.iter().copied())
        .env("GATEHOUSE_WORKER_TOKEN", WORKER_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Proc(child)
}

fn redis_server() -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (Debian redis-server; `scripts/setup.sh test` installs it)");
    let proc = Proc(child);
    wait_for_tcp(port, "redis-server");
    (proc, port)
}

async fn metric(worker: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{worker}/metrics")).await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_share_a_limit_through_redis() {
    let (_everything, upstream_url) = start_everything();
    let (_redis, redis_port) = redis_server();
    let control_dir = tempfile::tempdir().unwrap();
    let control_port = free_port();
    let _control = spawn(
        &["control", "--listen", &format!("127.0.0.1:{control_port}")],
        control_dir.path(),
        &[("GATEHOUSE_ADMIN_EMAIL", ADMIN_EMAIL), ("GATEHOUSE_ADMIN_PASSWORD", ADMIN_PASSWORD)],
    );
    wait_for_tcp(control_port, "gatehouse control");
    let control = format!("http://127.0.0.1:{control_port}");
    let key = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("public-key")
        .arg("--data-dir")
        .arg(control_dir.path())
        .output()
        .unwrap();
    assert!(key.status.success(), "{}", String::from_utf8_lossy(&key.stderr));
    let key = String::from_utf8(key.stdout).unwrap().trim().to_owned();

    let store = format!("redis://127.0.0.1:{redis_port}/0?timeout_ms=2000");
    let mut workers = Vec::new();
    let mut worker_dirs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        workers.push((
            spawn(
                &[
                    "gateway",
                    "--gateway-listen",
                    &listen,
                    "--control-url",
                    &control,
                    "--trusted-key",
                    &key,
                    "--rate-limit-store",
                    &store,
                ],
                dir.path(),
                &[],
            ),
            format!("http://{listen}"),
        ));
        wait_for_tcp(port, "gatehouse gateway");
        worker_dirs.push(dir);
    }

    let admin = Gql::sign_in(&control, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    acme_with_alice(&admin, &upstream_url, "analyst", &["echo"]).await;
    let add = "mutation($l: RateLimitInput!) { addRateLimit(tenant: \"acme\", limit: $l) { id } }";
    let limit = admin
        .ok(add, json!({ "l": { "scope": "USER", "server": "everything", "tool": "echo", "requests": 4, "perSeconds": 3600 } }))
        .await;
    let limit_id = limit["addRateLimit"]["id"].as_str().unwrap().to_owned();
    // A token made after the limit: a worker that knows it has a policy with the limit.
    let token = admin
        .ok(
            r#"mutation { createToken(tenant: "acme", userEmail: "alice@acme.test", name: "after-limit") { secret } }"#,
            json!({}),
        )
        .await;
    let token = token["createToken"]["secret"].as_str().unwrap().to_owned();

    let mut sessions = Vec::new();
    for (_, url) in &workers {
        let endpoint = format!("{url}/mcp/acme/dev");
        let deadline = Instant::now() + Duration::from_secs(30);
        let session = loop {
            if let Some(s) = RawSession::open(&endpoint, &token).await {
                break s;
            }
            assert!(Instant::now() < deadline, "worker {url} never served the new token");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        sessions.push(session);
    }

    // Four calls in all, alternating between the two processes; then both refuse.
    for i in 0..4 {
        let (status, _, body) = sessions[i % 2].call("echo", json!({"message": "hi"})).await;
        assert_eq!(status, 200, "call {i}: {body}");
    }
    for s in [&sessions[0], &sessions[1]] {
        let (status, retry, body) = s.call("echo", json!({"message": "hi"})).await;
        assert_eq!(status, 429, "{body}");
        let retry: u64 = retry.expect("Retry-After").parse().unwrap();
        assert!((1..=900).contains(&retry), "the next token is due within 15 min: {retry}");
        assert_eq!(body["error"]["data"]["rule"], limit_id.as_str());
    }
    for (_, url) in &workers {
        assert_eq!(metric(url, "gatehouse_rate_limit_store_up").await, Some(1.0), "{url}");
        assert_eq!(metric(url, "gatehouse_rate_limit_store_fallbacks_total").await, Some(0.0), "{url}");
    }
}
