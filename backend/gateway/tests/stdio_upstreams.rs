//! A bundle that names a stdio server on a worker whose `stdio_commands` do not allow it: the
//! server is unavailable with a reason naming the command and the setting, and nothing is launched
//! (`docs/decisions/0016-stdio-and-sse-upstreams.md`). The full path with allowed commands, real
//! peers and an SDK client is `backend/cli/tests/stdio_sse_upstreams.rs`.

mod support;

use gatehouse_bundle::SigningKey;
use gatehouse_bundle::format::{Server, StdioCommand, Transport, VirtualServer};
use gatehouse_core::rules::PolicyMode;
use serde_json::json;
use support::*;

#[tokio::test]
async fn a_stdio_server_the_worker_does_not_allow_is_unavailable_and_never_launched() {
    let key = SigningKey::generate();
    let up = Upstreams::start().await;
    let cp = FakeControlPlane::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("launched");
    let mut c = content(&up, ANALYST);
    c.servers.push(Server {
        slug: "local".into(),
        url: String::new(),
        labels: vec![],
        transport: Transport::Stdio(StdioCommand {
            command: "touch".into(),
            args: vec![marker.to_string_lossy().into_owned()],
            env: Default::default(),
        }),
    });
    let mut vs: VirtualServer = c.virtual_servers.iter().find(|v| v.slug == "dev").unwrap().clone();
    vs.slug = "local".into();
    vs.upstreams = vec!["alpha".into(), "local".into()];
    vs.mode = PolicyMode::Enforce;
    c.virtual_servers.push(vs);
    c.normalize();
    cp.publish(vec![key.sign("default", 1, 0, c)]);
    let dir = tempfile::tempdir().unwrap();
    // The test gateway's configuration allows no stdio command.
    let gw = TestGateway::start(&cp.url, dir.path(), &key).await;
    gw.revision().await;

    let mut bob = gw.client("local", Some(BOB));
    bob.initialize().await;
    let failed = bob.request("tools/list", json!({})).await;
    assert_eq!((failed.status, failed.rpc_code()), (200, Some(-32004)), "{failed:?}");
    let message = failed.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("upstream server 'local'"), "{message}");
    assert!(message.contains("'touch'") && message.contains("stdio_commands"), "{message}");
    assert_eq!(failed.body["error"]["data"]["code"], "UPSTREAM_UNAVAILABLE");
    assert!(!marker.exists(), "the worker launched a command its allow-list does not name");

    // The HTTP upstreams of the tenant are unaffected.
    let mut dev = gw.client("dev", Some(BOB));
    dev.initialize().await;
    assert!(dev.tool_names().await.contains(&"echo".to_owned()));
}
