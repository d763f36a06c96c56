//! Upstream transports (issue 3, `docs/decisions/0016-stdio-and-sse-upstreams.md`): registering a
//! stdio or legacy HTTP+SSE server, checking its command, and reading its tools through a
//! short-lived local bridge.

use std::collections::BTreeMap;

use gatehouse_bridge::{Bridge, BridgeConfig, Upstream, forbidden_env};
use gatehouse_bundle::format::{StdioCommand, Transport};
use gatehouse_core::{ErrorCode, GatehouseError};
use gatehouse_store::Server;
use serde_json::Value;

use super::{Actor, Result, ServerView, Services, new_id, now_ms, server_view, store_err, trimmed, validate_slug};
use crate::upstream;

/// Arguments of a stdio server at most.
const MAX_ARGS: usize = 64;
/// Environment variables of a stdio server at most.
const MAX_ENV: usize = 32;
/// Longest command, argument or environment value.
const MAX_TEXT: usize = 4096;

/// What `registerServer` was given for the server's transport.
#[derive(Debug, Clone, Default)]
pub struct ServerSpec {
    /// `streamableHttp` (default), `sse` or `stdio`.
    pub transport: Option<String>,
    /// The endpoint (Streamable HTTP) or SSE URL (sse); absent for stdio.
    pub url: Option<String>,
    /// The program (stdio only).
    pub command: Option<String>,
    /// Its arguments (stdio only).
    pub args: Vec<String>,
    /// Its environment (stdio only).
    pub env: Vec<(String, String)>,
}

/// A checked spec: (transport, url, command for stdio).
struct Checked {
    transport: &'static str,
    url: String,
    command: Option<StdioCommand>,
}

fn check(spec: &ServerSpec) -> Result<Checked> {
    let transport = match spec.transport.as_deref().map(str::trim).unwrap_or("streamableHttp") {
        "streamableHttp" | "" => "streamableHttp",
        "sse" => "sse",
        "stdio" => "stdio",
        other => {
            return Err(GatehouseError::invalid(
                "transport",
                format!("unknown transport '{other}'; give streamableHttp, sse or stdio"),
            ));
        }
    };
    let url = spec.url.as_deref().map(str::trim).unwrap_or("");
    if transport != "stdio" {
        if spec.command.is_some() || !spec.args.is_empty() || !spec.env.is_empty() {
            return Err(GatehouseError::invalid(
                "command",
                format!("a {transport} server has no command, args or env"),
            ));
        }
        if url.is_empty() {
            return Err(GatehouseError::invalid("url", format!("a {transport} server needs its URL")));
        }
        let url = upstream::validate_url("url", url)?;
        return Ok(Checked { transport, url, command: None });
    }
    if !url.is_empty() {
        return Err(GatehouseError::invalid("url", "a stdio server has no URL; give its command instead"));
    }
    let command = spec.command.as_deref().map(str::trim).unwrap_or("");
    if command.is_empty() {
        return Err(GatehouseError::invalid("command", "a stdio server needs the program to run"));
    }
    if command.len() > MAX_TEXT || command.contains('\0') {
        return Err(GatehouseError::invalid("command", format!("at most {MAX_TEXT} characters, no NUL")));
    }
    if command.contains('/') && !command.starts_with('/') {
        return Err(GatehouseError::invalid(
            "command",
            "a relative path depends on the worker's directory; give a bare program name (looked up on PATH) or an absolute path",
        ));
    }
    if spec.args.len() > MAX_ARGS {
        return Err(GatehouseError::invalid("args", format!("at most {MAX_ARGS} arguments")));
    }
    if spec.args.iter().any(|a| a.len() > MAX_TEXT || a.contains('\0')) {
        return Err(GatehouseError::invalid("args", format!("each argument: at most {MAX_TEXT} characters, no NUL")));
    }
    if spec.env.len() > MAX_ENV {
        return Err(GatehouseError::invalid("env", format!("at most {MAX_ENV} variables")));
    }
    let mut env = BTreeMap::new();
    for (name, value) in &spec.env {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(GatehouseError::invalid(
                "env",
                format!("'{name}' is not a variable name (letters, digits, _)"),
            ));
        }
        if forbidden_env(name) {
            return Err(GatehouseError::invalid(
                "env",
                format!("'{name}' would change which program runs; the worker sets PATH itself"),
            ));
        }
        if value.len() > MAX_TEXT || value.contains('\0') {
            return Err(GatehouseError::invalid("env", format!("'{name}': at most {MAX_TEXT} characters, no NUL")));
        }
        if env.insert(name.clone(), value.clone()).is_some() {
            return Err(GatehouseError::invalid("env", format!("'{name}' is given twice")));
        }
    }
    let command = StdioCommand { command: command.to_owned(), args: spec.args.clone(), env };
    Ok(Checked { transport, url: String::new(), command: Some(command) })
}

/// The bundle transport of a stored server (a stdio server whose command does not parse gets an
/// empty command, which no worker allows).
pub(crate) fn bundle_transport(s: &Server) -> Transport {
    match s.transport.as_str() {
        "sse" => Transport::Sse,
        "stdio" => Transport::Stdio(stdio_command(s).unwrap_or_default()),
        _ => Transport::StreamableHttp,
    }
}

fn stdio_command(s: &Server) -> Option<StdioCommand> {
    serde_json::from_str(s.command_json.as_deref()?).ok()
}

/// Adds the transport fields to a view.
pub(crate) fn describe(s: &Server, view: &mut ServerView) {
    view.transport = s.transport.clone();
    if let Some(c) = stdio_command(s) {
        view.command = Some(c.command);
        view.args = c.args;
        view.env_names = c.env.into_keys().collect();
    }
}

impl Services {
    /// The commands stdio servers may run for tool discovery on this control plane (the same
    /// `stdio_commands` setting as the worker's). Empty by default: stdio servers cannot be
    /// registered.
    pub fn set_stdio_commands(&self, commands: Vec<String>) {
        *self.stdio_commands.write().unwrap_or_else(std::sync::PoisonError::into_inner) = commands;
    }

    fn stdio_allowed(&self) -> Vec<String> {
        self.stdio_commands.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Reads a server's tools over its transport.
    pub(crate) async fn discover_tools(&self, s: &Server) -> Result<Vec<Value>> {
        let up = match s.transport.as_str() {
            "sse" => Upstream::Sse(s.url.clone()),
            "stdio" => Upstream::Stdio(stdio_command(s).unwrap_or_default()),
            _ => return upstream::fetch_tools(&s.url).await,
        };
        let bridge =
            Bridge::start(BridgeConfig { stdio_commands: self.stdio_allowed(), ..Default::default() }).await.map_err(
                |e| GatehouseError::new(ErrorCode::Internal, format!("could not start the local bridge: {e}")),
            )?;
        if let Some(why) = bridge.refusal(&up) {
            return Err(GatehouseError::invalid(
                "command",
                format!("{why}; the control plane reads a server's tools when it is registered"),
            ));
        }
        let endpoint = bridge.endpoint(&up);
        let what = match &up {
            Upstream::Sse(url) => format!("the SSE server {url}"),
            Upstream::Stdio(c) => format!("the stdio server '{}'", c.command),
        };
        // The bridge (and the child with it) goes when this returns.
        upstream::fetch_tools(&endpoint).await.map_err(|mut e| {
            e.message = e.message.replace(&endpoint, &what);
            e
        })
    }

    /// Registers an upstream server of any transport and reads its tools. Nothing is stored when
    /// the spec is invalid or the server cannot be read.
    pub async fn register_server_spec(
        &self,
        actor: &Actor,
        tenant: &str,
        slug: &str,
        name: &str,
        spec: &ServerSpec,
    ) -> Result<ServerView> {
        let t = self.tenant_for(actor, tenant, super::Need::Admin).await?;
        validate_slug("slug", slug)?;
        let name = trimmed("name", name, 100)?;
        let checked = check(spec)?;
        if self.store.server_by_slug(&t.id, slug).await.map_err(store_err("server"))?.is_some() {
            return Err(GatehouseError::new(
                ErrorCode::Conflict,
                format!("a server with slug '{slug}' already exists"),
            ));
        }
        let mut s = Server {
            tenant_id: t.id.clone(),
            id: new_id(),
            slug: slug.to_owned(),
            name,
            url: checked.url,
            tools_json: "[]".to_owned(),
            tools_fetched_at_ms: None,
            labels_json: "[]".to_owned(),
            created_at_ms: now_ms(),
            transport: checked.transport.to_owned(),
            command_json: checked.command.as_ref().map(|c| serde_json::to_string(c).unwrap_or_default()),
        };
        let tools = self.discover_tools(&s).await?;
        s.tools_json = serde_json::to_string(&tools).unwrap_or_else(|_| "[]".into());
        s.tools_fetched_at_ms = Some(now_ms());
        self.store.create_server(&s).await.map_err(store_err("a server with this slug"))?;
        self.recompile(&t).await?;
        Ok(server_view(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdio(command: &str) -> ServerSpec {
        ServerSpec { transport: Some("stdio".into()), command: Some(command.into()), ..Default::default() }
    }

    fn field(spec: ServerSpec) -> String {
        let e = check(&spec).err().expect("refused");
        assert_eq!(e.code, ErrorCode::InvalidInput);
        e.message
    }

    #[test]
    fn specs_are_checked_field_by_field() {
        assert!(field(ServerSpec { transport: Some("ftp".into()), ..Default::default() }).starts_with("transport: "));
        assert!(field(ServerSpec::default()).starts_with("url: "));
        assert!(
            field(ServerSpec { transport: Some("sse".into()), url: Some("nope".into()), ..Default::default() })
                .starts_with("url: ")
        );
        let mut http_with_command = stdio("npx");
        http_with_command.transport = None;
        http_with_command.url = Some("https://x.test/mcp".into());
        assert!(field(http_with_command).starts_with("command: "));
        assert!(field(stdio(" ")).starts_with("command: "));
        assert!(field(stdio("bin/server")).contains("relative path"));
        let mut with_url = stdio("npx");
        with_url.url = Some("https://x.test".into());
        assert!(field(with_url).starts_with("url: "));
        let mut bad_env = stdio("npx");
        bad_env.env = vec![("LD_PRELOAD".into(), "/x.so".into())];
        assert!(field(bad_env).starts_with("env: "));
        let mut bad_name = stdio("npx");
        bad_name.env = vec![("A-B".into(), "1".into())];
        assert!(field(bad_name).starts_with("env: "));
        let mut many = stdio("npx");
        many.args = vec!["a".into(); MAX_ARGS + 1];
        assert!(field(many).starts_with("args: "));

        let ok = check(&ServerSpec {
            transport: Some("stdio".into()),
            command: Some("/opt/mcp/bin/server".into()),
            args: vec!["--stdio".into()],
            env: vec![("MODE".into(), "ro".into())],
            url: None,
        })
        .unwrap();
        assert_eq!(ok.transport, "stdio");
        assert_eq!(ok.command.unwrap().env["MODE"], "ro");
        let sse = check(&ServerSpec {
            transport: Some("sse".into()),
            url: Some("http://h:1/sse".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((sse.transport, sse.url.as_str()), ("sse", "http://h:1/sse"));
    }
}
