//! Local groups, user attributes and CEL conditions end to end, with real peers (`gatehouse serve`,
//! `@modelcontextprotocol/server-everything` upstream, the official Python MCP SDK as the client):
//! a role reaches alice through a group; an allow rule applies only from the client's network and
//! group, another only from a network she is not on (so its tool is hidden and refused), a deny
//! rule on the client application and an attribute overrides a plain grant; a bad condition is
//! refused naming the field and the place; "explain" answers for another address; and another
//! tenant's admin reaches none of it (`docs/decisions/0012-groups-and-conditions.md`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::*;

const ADD_RULE: &str =
    "mutation($rule: RuleInput!) { addRule(tenant: \"acme\", role: \"net\", rule: $rule) { id condition } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_on_network_group_attribute_and_client_app_decide() {
    let (_everything, upstream_url) = start_everything();
    let gh = start_gatehouse();
    let admin = Gql::sign_in(&gh.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    // alice holds `analyst` (a plain grant of echo) directly.
    let (endpoint, secret) = acme_with_alice(&admin, &upstream_url, "analyst", &["echo"]).await;

    // `net` reaches alice only through the `oncall` group.
    admin.ok(r#"mutation { createRole(tenant: "acme", slug: "net") { slug } }"#, json!({})).await;
    admin.ok(r#"mutation { createGroup(tenant: "acme", slug: "oncall", name: "On call") { slug } }"#, json!({})).await;
    admin
        .ok(
            r#"mutation { addGroupMember(tenant: "acme", group: "oncall", email: "alice@acme.test") { slug } }"#,
            json!({}),
        )
        .await;
    let group = admin
        .ok(r#"mutation { bindGroupRole(tenant: "acme", group: "oncall", role: "net") { members roles } }"#, json!({}))
        .await;
    assert_eq!(group["bindGroupRole"], json!({ "members": ["alice@acme.test"], "roles": ["net"] }));
    let attrs = admin
        .ok(
            r#"mutation { setUserAttributes(tenant: "acme", email: "alice@acme.test", attributes: [{key: "department", value: "support"}]) { key value } }"#,
            json!({}),
        )
        .await;
    assert_eq!(attrs["setUserAttributes"], json!([{ "key": "department", "value": "support" }]));
    let (code, message) = admin
        .err(
            r#"mutation { setUserAttributes(tenant: "acme", email: "alice@acme.test", attributes: [{key: "Dept", value: "x"}]) { key } }"#,
            json!({}),
        )
        .await;
    assert_eq!(code, "INVALID_INPUT");
    assert!(message.starts_with("attributes[0].key: 'Dept' is not a valid key"), "{message}");

    // A bad condition is refused with the field and the place; nothing is stored.
    let rule = |effect: &str, tools: &str, condition: &str| json!({ "rule": { "server": "everything", "effect": effect, "tools": tools, "condition": condition } });
    let (code, message) = admin.err(ADD_RULE, rule("ALLOW", "get-sum", "inCidr(client.ip, '127.0.0.0/33')")).await;
    assert_eq!(code, "INVALID_INPUT");
    assert_eq!(
        message,
        "condition: line 1, column 19: '127.0.0.0/33': the prefix length must be a number from 0 to 32"
    );
    let (_, message) = admin.err(ADD_RULE, rule("ALLOW", "get-sum", "client.address == '1'")).await;
    assert_eq!(message, "condition: line 1, column 7: 'client' has no field 'address'; its fields are ip, app");

    // The client connects from 127.0.0.1, declares clientInfo.name "mcp" (the SDK's default).
    let id = |v: &Value| v["addRule"]["id"].as_str().unwrap().to_owned();
    let local = id(&admin
        .ok(ADD_RULE, rule("ALLOW", "get-sum", "inCidr(client.ip, '127.0.0.0/8') && 'oncall' in user.groups"))
        .await);
    let office = id(&admin.ok(ADD_RULE, rule("ALLOW", "get-env", "inCidr(client.ip, '10.0.0.0/8')")).await);
    let support_app = id(&admin
        .ok(ADD_RULE, rule("DENY", "echo", "client.app == 'mcp' && user.attributes.department == 'support'"))
        .await);

    let steps = json!([
        ["list"],
        ["call", "get-sum", { "a": 1, "b": 2 }],
        ["call", "get-env", {}],
        ["call", "echo", { "message": "hi" }],
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let out = loop {
        let out = mcp_client(&endpoint, &secret, steps.clone()).await;
        let listed: Vec<String> = out["results"][0]["tools"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        if listed == ["get-sum"] || Instant::now() > deadline {
            assert_eq!(listed, ["get-sum"], "only the tool whose condition holds is listed: {out}");
            break out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let r = &out["results"];
    assert!(r[1]["content"][0]["text"].as_str().unwrap().contains('3'), "get-sum allowed from 127/8: {out}");
    assert_eq!(r[2]["error"]["data"]["code"], "TOOL_NOT_GRANTED", "{out}");
    assert_eq!(r[2]["error"]["data"]["rule"], "default-deny", "get-env only from 10/8: {out}");
    assert_eq!(
        r[3]["error"]["data"]["rule"],
        support_app.as_str(),
        "the conditional deny beats the plain grant: {out}"
    );

    // "Explain" for another address and time gives the other answer.
    let explain = |tool: &str, ip: &str| {
        format!(
            r#"{{ explainCall(tenant: "acme", userEmail: "alice@acme.test", server: "everything", tool: "{tool}", clientIp: "{ip}", clientApp: "mcp", at: "2026-11-27T22:00:00+01:00") {{ allowed ruleId }} }}"#
        )
    };
    let from_office = admin.ok(&explain("get-env", "10.1.2.3"), json!({})).await;
    assert_eq!(from_office["explainCall"], json!({ "allowed": true, "ruleId": office }));
    let from_home = admin.ok(&explain("get-sum", "192.168.1.9"), json!({})).await;
    assert_eq!(from_home["explainCall"], json!({ "allowed": false, "ruleId": "default-deny" }));
    let (code, message) = admin.err(&explain("get-sum", "not-an-ip"), json!({})).await;
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("INVALID_INPUT", "clientIp: 'not-an-ip' is not an IP address such as 10.1.2.3")
    );

    let from_here = admin.ok(&explain("get-sum", "127.0.0.1"), json!({})).await;
    assert_eq!(from_here["explainCall"], json!({ "allowed": true, "ruleId": local }));

    // A new attribute value lifts the deny (the plain grant decides again).
    admin
        .ok(
            r#"mutation { setUserAttributes(tenant: "acme", email: "alice@acme.test", attributes: [{key: "department", value: "payments"}]) { key } }"#,
            json!({}),
        )
        .await;
    let until = |want: Value| {
        let (endpoint, secret) = (endpoint.clone(), secret.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let out =
                    mcp_client(&endpoint, &secret, json!([["list"], ["call", "echo", { "message": "hi" }]])).await;
                let mut listed: Vec<String> = out["results"][0]["tools"]
                    .as_array()
                    .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
                    .unwrap_or_default();
                listed.sort();
                if json!(listed) == want || Instant::now() > deadline {
                    assert_eq!(json!(listed), want, "{out}");
                    break out;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let out = until(json!(["echo", "get-sum"])).await;
    assert!(out["results"][1]["content"][0]["text"].as_str().unwrap().contains("hi"), "{out}");
    // Leaving the group takes the group's role (and its rules) away.
    admin
        .ok(
            r#"mutation { removeGroupMember(tenant: "acme", group: "oncall", email: "alice@acme.test") { slug } }"#,
            json!({}),
        )
        .await;
    until(json!(["echo"])).await;

    // Another tenant's admin reaches none of acme's groups or attributes.
    let other = globex_admin(&admin, &gh.control).await;
    let (code, _) = other.err(r#"{ groups(tenant: "acme") { slug } }"#, json!({})).await;
    assert_eq!(code, "NOT_FOUND");
    let (code, _) = other
        .err(
            r#"mutation { addGroupMember(tenant: "acme", group: "oncall", email: "root@globex.test") { slug } }"#,
            json!({}),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
    let (code, _) =
        other.err(r#"{ userAttributes(tenant: "acme", email: "alice@acme.test") { key } }"#, json!({})).await;
    assert_eq!(code, "NOT_FOUND");
}
