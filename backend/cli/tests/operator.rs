//! The operator commands against a running `gatehouse control`: `groups create|list|assign` move a
//! tenant's bundle from one group's set to another's, mistakes are one line naming the field or
//! object, and `keys generate` + `signing_key_file` re-sign every bundle with the new key.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, free_port, wait_for_tcp};
use serde_json::Value;

const WORKER_TOKEN: &str = "operator-test-worker-token";

fn control(data: &Path, port: u16, env: &[(&str, &str)]) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["control", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .envs(env.iter().copied())
        .env("GATEHOUSE_WORKER_TOKEN", WORKER_TOKEN)
        .env("GATEHOUSE_ADMIN_PASSWORD", "a-long-enough-password")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    wait_for_tcp(port, "gatehouse control");
    proc
}

/// Runs `gatehouse --data-dir DATA args…`: (exit success, stdout, stderr).
fn run(data: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The (tenant, key id) pairs of a group's bundle set, or the HTTP status when it is not 200.
async fn set_of(port: u16, group: &str) -> Result<Vec<(String, String)>, u16> {
    let resp = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/bundles/{group}"))
        .bearer_auth(WORKER_TOKEN)
        .send()
        .await
        .unwrap();
    if resp.status() != 200 {
        return Err(resp.status().as_u16());
    }
    let body: Value = resp.json().await.unwrap();
    let mut out = Vec::new();
    for b in body["bundles"].as_array().unwrap() {
        // The manifest is inside the signed payload (base64 JSON); its tenant is all we need here.
        let payload = b["payload"].as_str().unwrap();
        let json = base64_decode(payload);
        let bundle: Value = serde_json::from_slice(&json).unwrap();
        out.push((bundle["manifest"]["tenant"].as_str().unwrap().to_owned(), b["key_id"].as_str().unwrap().to_owned()));
    }
    Ok(out)
}

/// Standard base64 without a dependency (test helper).
fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_key_rotation_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    // Without a deployment there is nothing to act on: said in one line.
    let (ok, _, err) = run(dir, &["groups", "list"], &[]);
    assert!(!ok && err.starts_with("gatehouse: error: no database at"), "{err}");

    let port = free_port();
    let cp = control(dir, port, &[]);
    let before = set_of(port, "default").await.unwrap();
    assert_eq!(before.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(), ["platform"]);
    assert_eq!(set_of(port, "eu").await, Err(404));

    let (ok, out, err) = run(dir, &["groups", "create", "eu"], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("created gateway group 'eu'"));
    let (ok, _, err) = run(dir, &["groups", "create", "eu"], &[]);
    assert!(!ok && err.trim() == "gatehouse: error: gateway group 'eu' already exists", "{err}");
    let (ok, _, err) = run(dir, &["groups", "create", "EU"], &[]);
    assert!(!ok && err.contains("error: group: must start with a lowercase letter"), "{err}");
    let (ok, _, err) = run(dir, &["groups", "assign", "--tenant", "platform", "--group", "mars"], &[]);
    assert!(!ok && err.contains("gateway group 'mars'"), "{err}");
    let (ok, _, err) = run(dir, &["groups", "assign", "--tenant", "nope", "--group", "eu"], &[]);
    assert!(!ok && err.contains("tenant 'nope' not found"), "{err}");
    // A refused assignment created nothing.
    let (_, out, _) = run(dir, &["groups", "list"], &[]);
    assert_eq!(out, "default (default): platform\neu: -\n");

    let (ok, out, err) = run(dir, &["groups", "assign", "--tenant", "platform", "--group", "eu"], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("tenant 'platform' is in gateway group 'eu'"), "{out}");
    // SQLite: the running control plane answers from the database on its workers' next poll.
    assert_eq!(set_of(port, "default").await.unwrap(), vec![]);
    assert_eq!(set_of(port, "eu").await.unwrap().iter().map(|t| t.0.as_str()).collect::<Vec<_>>(), ["platform"]);
    let (_, out, _) = run(dir, &["groups", "list"], &[]);
    assert_eq!(out, "default (default): -\neu: platform\n");
    drop(cp);

    // Key rotation: a new key file, the control plane restarted on it, every bundle re-signed.
    let old_public = run(dir, &["public-key"], &[]).1;
    let key_file = dir.join("signing-key-2.pem");
    let key_arg = key_file.to_str().unwrap();
    let (ok, new_public, err) = run(dir, &["keys", "generate", "--out", key_arg], &[]);
    assert!(ok, "{err}");
    assert_ne!(new_public, old_public);
    let (ok, _, err) = run(dir, &["keys", "generate", "--out", key_arg], &[]);
    assert!(!ok && err.contains("exists"), "{err}");
    let env = [("GATEHOUSE_SIGNING_KEY_FILE", key_arg)];
    assert_eq!(run(dir, &["public-key"], &env).1, new_public, "public-key prints the configured key");
    let old_key_id = set_of_after_restart(dir, &[]).await;
    let new_key_id = set_of_after_restart(dir, &env).await;
    assert_ne!(old_key_id, new_key_id, "the restart with the new key re-signed the bundle");
    let (ok, _, err) = run(dir, &["public-key"], &[("GATEHOUSE_SIGNING_KEY_FILE", "/nonexistent/key.pem")]);
    assert!(!ok && err.contains("signing key file"), "{err}");
}

/// Starts the control plane with `env`, returns the key id of the eu group's bundle, stops it.
async fn set_of_after_restart(dir: &Path, env: &[(&str, &str)]) -> String {
    let port = free_port();
    let _cp = control(dir, port, env);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(set) = set_of(port, "eu").await
            && let Some((_, key_id)) = set.first()
        {
            return key_id.clone();
        }
        assert!(Instant::now() < deadline, "no eu bundle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
