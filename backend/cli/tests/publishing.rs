//! Publishing as a deliberate step end to end, with real peers (`gatehouse serve`,
//! `@modelcontextprotocol/server-everything` upstream, the official Python MCP SDK as the client):
//! in reviewed mode a grant is not visible to the client before `publishPolicy` and is after; the
//! draft's simulation names the tool the user gains and replays the refused call; a rollback takes
//! it away again with a higher bundle sequence; another tenant's admin can do none of it.
//! (`docs/decisions/0015-publishing-and-rollback.md`)

use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::*;

const DRAFT: &str = r#"{ policyDraft(tenant: "acme") { mode changed revision publishedRevision rolledBack
    access { user virtualServer gained { server tool } lost { server tool } }
    replay { events nowAllowed nowDenied dependsOnArguments changes { user tool calls nowAllowed } } } }"#;
const BUNDLE: &str = r#"{ bundle(tenant: "acme") { sequence revision } }"#;
const PUBLICATIONS: &str =
    r#"{ publications(tenant: "acme") { number kind revision restoresNumber publishedBy note } }"#;

fn listed(out: &Value, step: usize) -> Vec<String> {
    out["results"][step]["tools"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// Lists alice's tools until `pred` holds (bounded), and returns the last client output.
async fn tools_until(endpoint: &str, secret: &str, what: &str, pred: impl Fn(&[String]) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = mcp_client(endpoint, secret, json!([["list"], ["call", "get-sum", {"a": 2, "b": 3}]])).await;
        if pred(&listed(&out, 0)) {
            return out;
        }
        assert!(Instant::now() < deadline, "{what}: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewed_change_reaches_clients_only_when_published_and_can_be_rolled_back() {
    let (_everything, upstream_url) = start_everything();
    let gh = start_gatehouse();
    let admin = Gql::sign_in(&gh.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (endpoint, secret) = acme_with_alice(&admin, &upstream_url, "analyst", &["echo"]).await;

    // Automatic mode: what the admin set up is live. get-sum is refused (and audited).
    let out = tools_until(&endpoint, &secret, "echo listed", |t| t.contains(&"echo".to_owned())).await;
    assert!(!listed(&out, 0).contains(&"get-sum".to_owned()), "{out}");
    assert_eq!(out["results"][1]["error"]["code"], -32003, "get-sum refused: {out}");

    let mode = admin.ok(r#"mutation { setPublishingMode(tenant: "acme", mode: "reviewed") }"#, json!({})).await;
    assert_eq!(mode["setPublishingMode"], "reviewed");
    let before = admin.ok(BUNDLE, json!({})).await["bundle"].clone();
    admin
        .ok(
            r#"mutation { setRoleGrants(tenant: "acme", role: "analyst", grants: [{server: "everything", tool: "echo"}, {server: "everything", tool: "get-sum"}]) { slug } }"#,
            json!({}),
        )
        .await;

    // Not published: no new bundle, and the client still cannot see or call get-sum (checked after
    // the time a published bundle takes to reach the worker, many times over).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(admin.ok(BUNDLE, json!({})).await["bundle"], before);
    let out = mcp_client(&endpoint, &secret, json!([["list"], ["call", "get-sum", {"a": 2, "b": 3}]])).await;
    assert!(!listed(&out, 0).contains(&"get-sum".to_owned()), "get-sum not visible before publishing: {out}");
    assert_eq!(out["results"][1]["error"]["code"], -32003, "{out}");

    // The simulation: alice gains get-sum on dev; the refused calls (once shipped) would be allowed.
    let deadline = Instant::now() + Duration::from_secs(15);
    let draft = loop {
        let d = admin.ok(DRAFT, json!({})).await["policyDraft"].clone();
        if d["replay"]["nowAllowed"].as_i64().unwrap_or(0) >= 2 || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(draft["mode"], "reviewed");
    assert_eq!(draft["changed"], true);
    assert_eq!(
        draft["access"],
        json!([{"user": "alice@acme.test", "virtualServer": "dev", "gained": [{"server": "everything", "tool": "get-sum"}], "lost": []}])
    );
    // Every refused get-sum call so far (at least the two above) would be allowed by the draft.
    let calls = draft["replay"]["changes"][0]["calls"].as_i64().unwrap();
    assert!(calls >= 2, "{draft}");
    assert_eq!(draft["replay"]["nowAllowed"].as_i64(), Some(calls), "{draft}");
    assert_eq!(draft["replay"]["nowDenied"], 0);
    assert_eq!(draft["replay"]["changes"][0]["tool"], "get-sum");
    assert_eq!(draft["replay"]["changes"][0]["user"], "alice@acme.test");

    // Another tenant's admin cannot see, publish or roll back acme's policy.
    let other = globex_admin(&admin, &gh.control).await;
    assert_eq!(other.err(DRAFT, json!({})).await.0, "NOT_FOUND");
    assert_eq!(other.err(PUBLICATIONS, json!({})).await.0, "NOT_FOUND");
    let (code, _) = other.err(r#"mutation { publishPolicy(tenant: "acme", note: "x") { number } }"#, json!({})).await;
    assert_eq!(code, "NOT_FOUND");
    let rev = draft["publishedRevision"].as_str().unwrap().to_owned();
    let (code, _) = other
        .err("mutation($r: String!) { rollbackPolicy(tenant: \"acme\", revision: $r) { number } }", json!({ "r": rev }))
        .await;
    assert_eq!(code, "NOT_FOUND");
    assert_eq!(admin.ok(BUNDLE, json!({})).await["bundle"], before);

    // Publish: the client sees and calls get-sum.
    let published = admin
        .ok(r#"mutation { publishPolicy(tenant: "acme", note: "alice needs get-sum") { number kind revision publishedBy note } }"#, json!({}))
        .await["publishPolicy"]
        .clone();
    assert_eq!(published["kind"], "publish");
    assert_eq!(published["publishedBy"], ADMIN_EMAIL);
    assert_eq!(published["revision"], draft["revision"]);
    let after = admin.ok(BUNDLE, json!({})).await["bundle"].clone();
    assert!(after["sequence"].as_i64().unwrap() > before["sequence"].as_i64().unwrap());
    let out =
        tools_until(&endpoint, &secret, "get-sum listed after publishing", |t| t.contains(&"get-sum".to_owned())).await;
    assert!(out["results"][1]["content"][0]["text"].as_str().unwrap().contains('5'), "get-sum answers: {out}");
    let (code, _) = admin.err(r#"mutation { publishPolicy(tenant: "acme") { number } }"#, json!({})).await;
    assert_eq!(code, "NOTHING_TO_PUBLISH");
    let history = admin.ok(PUBLICATIONS, json!({})).await["publications"].clone();
    assert_eq!(history[0]["note"], "alice needs get-sum");

    // Roll back to what ran before: a higher sequence again, and get-sum is gone for the client.
    let rolled = admin
        .ok(
            "mutation($r: String!) { rollbackPolicy(tenant: \"acme\", revision: $r, note: \"undo\") { kind restoresNumber revision } }",
            json!({ "r": rev }),
        )
        .await["rollbackPolicy"]
        .clone();
    assert_eq!(rolled["kind"], "rollback");
    assert_eq!(rolled["revision"], rev.as_str());
    let last = admin.ok(BUNDLE, json!({})).await["bundle"].clone();
    assert!(last["sequence"].as_i64().unwrap() > after["sequence"].as_i64().unwrap());
    let out = tools_until(&endpoint, &secret, "get-sum gone after the rollback", |t| {
        t.contains(&"echo".to_owned()) && !t.contains(&"get-sum".to_owned())
    })
    .await;
    assert_eq!(out["results"][1]["error"]["code"], -32003, "{out}");
    let d = admin.ok(DRAFT, json!({})).await["policyDraft"].clone();
    assert_eq!((d["rolledBack"].clone(), d["changed"].clone()), (json!(true), json!(true)), "the draft is kept: {d}");
}
