//! The small MCP client the control plane uses to read a server's tools when it is registered.
//!
//! It speaks Streamable HTTP (2025-11-25): `initialize`, `notifications/initialized`, `tools/list`
//! (following `nextCursor`), then `DELETE` of the session. Answers may be JSON or SSE.

use std::time::Duration;

use gatehouse_core::{ErrorCode, GatehouseError};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

const PROTOCOL_VERSION: &str = "2025-11-25";
const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_PAGES: usize = 50;

/// Checks that `url` is an absolute http(s) URL and returns it normalised.
pub fn validate_url(field: &str, url: &str) -> Result<String, GatehouseError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        GatehouseError::invalid(field, format!("not a URL ({e}); give e.g. https://mcp.example.com/mcp"))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(GatehouseError::invalid(field, "must be an http:// or https:// URL"));
    }
    if parsed.host_str().is_none() {
        return Err(GatehouseError::invalid(field, "must name a host"));
    }
    Ok(parsed.to_string())
}

fn unavailable(url: &str, why: impl std::fmt::Display) -> GatehouseError {
    GatehouseError::new(ErrorCode::UpstreamUnavailable, format!("could not read tools from {url}: {why}"))
}

/// Reads the JSON-RPC response with `id` from a JSON or SSE answer.
async fn response_for(resp: reqwest::Response, id: i64) -> Result<Value, String> {
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let is_sse = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let body = resp.text().await.map_err(|e| format!("reading the answer failed: {e}"))?;
    let messages: Vec<Value> = if is_sse {
        body.split("\n\n")
            .filter_map(|event| {
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                (!data.is_empty()).then(|| serde_json::from_str(&data.join("\n")).ok()).flatten()
            })
            .collect()
    } else {
        vec![serde_json::from_str(&body).map_err(|e| format!("answer is not JSON: {e}"))?]
    };
    let msg = messages
        .into_iter()
        .find(|m| m.get("id").and_then(Value::as_i64) == Some(id))
        .ok_or_else(|| "no JSON-RPC response in the answer".to_owned())?;
    if let Some(err) = msg.get("error") {
        return Err(format!("server answered with error {err}"));
    }
    msg.get("result").cloned().ok_or_else(|| "response has no result".to_owned())
}

/// Connects to an MCP server and returns its tools (MCP tool objects, as the server sent them).
pub async fn fetch_tools(url: &str) -> Result<Vec<Value>, GatehouseError> {
    let client = reqwest::Client::builder().timeout(TIMEOUT).build().map_err(|e| unavailable(url, e))?;
    let post = |body: Value, session: Option<&str>| {
        let mut req = client
            .post(url)
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .json(&body);
        if let Some(s) = session {
            req = req.header("mcp-session-id", s).header("mcp-protocol-version", PROTOCOL_VERSION);
        }
        req.send()
    };
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        // Declare every client capability the gateway can relay, so servers that list some tools
        // only to capable clients (sampling, elicitation, roots) show their whole catalogue.
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}},
        "clientInfo": {"name": "gatehouse-control", "version": env!("CARGO_PKG_VERSION")}}});
    let resp = post(init, None).await.map_err(|e| unavailable(url, e))?;
    let session = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    response_for(resp, 1).await.map_err(|e| unavailable(url, e))?;
    let result = async {
        post(json!({"jsonrpc":"2.0","method":"notifications/initialized"}), session.as_deref())
            .await
            .map_err(|e| unavailable(url, e))?;
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 0..MAX_PAGES {
            let id = 2 + page as i64;
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let resp = post(json!({"jsonrpc":"2.0","id":id,"method":"tools/list","params":params}), session.as_deref())
                .await
                .map_err(|e| unavailable(url, e))?;
            let result = response_for(resp, id).await.map_err(|e| unavailable(url, e))?;
            if let Some(list) = result.get("tools").and_then(Value::as_array) {
                tools.extend(list.iter().filter(|t| t.get("name").and_then(Value::as_str).is_some()).cloned());
            }
            cursor = result.get("nextCursor").and_then(Value::as_str).map(str::to_owned);
            if cursor.is_none() {
                return Ok(tools);
            }
        }
        Err(unavailable(url, format!("more than {MAX_PAGES} pages of tools")))
    }
    .await;
    if let Some(s) = &session {
        // Best effort: the server would expire the session anyway.
        let _ = client.delete(url).header("mcp-session-id", s).send().await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_validation() {
        assert!(validate_url("url", "http://127.0.0.1:3001/mcp").is_ok());
        assert_eq!(validate_url("url", "ftp://x/y").unwrap_err().code, ErrorCode::InvalidInput);
        assert!(validate_url("url", "not a url").unwrap_err().message.starts_with("url: "));
    }

    #[tokio::test]
    async fn unreachable_server_is_a_clear_error() {
        // Port 9 (discard) is closed on our machines; connection is refused at once.
        let err = fetch_tools("http://127.0.0.1:9/mcp").await.unwrap_err();
        assert_eq!(err.code, ErrorCode::UpstreamUnavailable);
        assert!(err.message.contains("127.0.0.1:9"), "{}", err.message);
    }
}
