//! Registering stdio and SSE servers through the services (`docs/decisions/0016-stdio-and-sse-upstreams.md`):
//! the allow-list, tool discovery through the local bridge, what views and bundles carry, and tenant
//! isolation. Runs on SQLite, and on PostgreSQL too when `GATEHOUSE_TEST_DATABASE_URL` is set.

use gatehouse_bundle::format::Transport;
use gatehouse_bundle::{KeyRing, SigningKey};
use gatehouse_control::services::ServerSpec;
use gatehouse_control::{Actor, ControlConfig, ControlPlane};
use gatehouse_core::ErrorCode;
use gatehouse_store::Store;
use gatehouse_store::testing::TestDb;

/// A stdio MCP server: initialize and a one-tool tools/list.
const SERVER: &str = r#"
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m:
        continue
    if m["method"] == "initialize":
        r = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "py", "version": "1"}}
    elif m["method"] == "tools/list":
        r = {"tools": [{"name": "read_note", "inputSchema": {"type": "object"}}]}
    else:
        r = {}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": r}) + "\n"); sys.stdout.flush()
"#;

async fn databases() -> Vec<TestDb> {
    let mut all = vec![TestDb::sqlite().await];
    all.extend(TestDb::postgres("control transports").await);
    all
}

async fn plane(store: Store) -> (ControlPlane, Actor, SigningKey) {
    let key = SigningKey::generate();
    let config = ControlConfig {
        gateway_public_url: "http://gw.test".into(),
        public_url: "http://cp.test".into(),
        worker_token: "w".into(),
        group: "default".into(),
        secure_cookies: false,
    };
    let cp = ControlPlane::new(config, store, key.clone()).await.unwrap();
    let s = cp.services();
    s.ensure_bootstrap_admin("root@example.com", Some("a-long-enough-password")).await.unwrap();
    let admin = s.sign_in("root@example.com", "a-long-enough-password").await.unwrap();
    (cp, admin, key)
}

fn python_server() -> ServerSpec {
    ServerSpec {
        transport: Some("stdio".into()),
        command: Some("python3".into()),
        args: vec!["-c".into(), SERVER.into()],
        env: vec![("NOTES_DIR".into(), "/srv/notes".into())],
        url: None,
    }
}

#[tokio::test]
async fn stdio_servers_need_the_allow_list_and_carry_their_command_to_the_bundle() {
    for db in databases().await {
        let (cp, admin, key) = plane(db.store.clone()).await;
        let s = cp.services();
        s.create_tenant(&admin, "acme", "Acme").await.unwrap();
        s.create_tenant(&admin, "beta", "Beta").await.unwrap();

        // Off by default: refused on `command`, naming the setting; nothing stored.
        let e = s.register_server_spec(&admin, "acme", "notes", "Notes", &python_server()).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidInput);
        assert!(e.message.starts_with("command: ") && e.message.contains("stdio_commands"), "{}", e.message);
        assert!(s.list_servers(&admin, "acme").await.unwrap().is_empty());

        s.set_stdio_commands(vec!["python3".into()]);
        let view = s.register_server_spec(&admin, "acme", "notes", "Notes", &python_server()).await.unwrap();
        assert_eq!(view.transport, "stdio");
        assert_eq!(view.command.as_deref(), Some("python3"));
        assert_eq!(view.env_names, ["NOTES_DIR"]);
        assert_eq!(view.url, "");
        assert_eq!(view.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["read_note"]);
        let again = s.refresh_server_tools(&admin, "acme", "notes").await.unwrap();
        assert_eq!(again.tools.len(), 1, "refresh reads the tools over stdio too");

        // The bundle carries the command for the workers.
        let tenant = cp.store().tenant_by_slug("acme").await.unwrap().unwrap();
        let row = s.bundles().latest(&tenant.id).await.unwrap().unwrap();
        let mut ring = KeyRing::default();
        ring.add_base64(&key.public_base64()).unwrap();
        let bundle = ring.verify(&serde_json::from_str(&row.signed_json).unwrap()).unwrap();
        let server = bundle.content.servers.iter().find(|s| s.slug == "notes").unwrap();
        match &server.transport {
            Transport::Stdio(c) => {
                assert_eq!(c.command, "python3");
                assert_eq!(c.env["NOTES_DIR"], "/srv/notes");
            }
            other => panic!("bundle transport {other:?}"),
        }

        // Another tenant's administrator can neither see nor register into acme.
        s.create_user(&admin, "beta", "bob@beta.test", "Bob", "admin", Some("bobs-long-password")).await.unwrap();
        let bob = s.sign_in("bob@beta.test", "bobs-long-password").await.unwrap();
        let e = s.register_server_spec(&bob, "acme", "evil", "Evil", &python_server()).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        assert_eq!(s.refresh_server_tools(&bob, "acme", "notes").await.unwrap_err().code, ErrorCode::NotFound);
        assert!(s.list_servers(&bob, "beta").await.unwrap().is_empty());

        // An SSE server that is not there: a clear upstream error naming it, nothing stored.
        let sse = ServerSpec {
            transport: Some("sse".into()),
            url: Some("http://127.0.0.1:9/sse".into()),
            ..Default::default()
        };
        let e = s.register_server_spec(&admin, "acme", "legacy", "Legacy", &sse).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
        assert!(e.message.contains("127.0.0.1:9/sse"), "{}", e.message);
        assert_eq!(s.list_servers(&admin, "acme").await.unwrap().len(), 1);
        drop(cp);
        db.finish().await;
    }
}
