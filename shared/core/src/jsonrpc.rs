//! JSON-RPC 2.0 shapes as MCP uses them, and Gatehouse's own JSON-RPC error codes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorCode;

/// JSON-RPC: the body is not valid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: the JSON is not a valid request.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: unknown method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: bad parameters (also used for unknown tools, as MCP servers do).
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC: internal error.
pub const INTERNAL_ERROR: i64 = -32603;
/// Gatehouse: the policy refuses this request (`error.data.code` says which rule kind).
pub const POLICY_DENIED: i64 = -32003;
/// Gatehouse: the upstream server failed.
pub const UPSTREAM_ERROR: i64 = -32004;

/// A JSON-RPC id: number or string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    /// Numeric id.
    Num(i64),
    /// String id.
    Str(String),
}

/// One incoming JSON-RPC message (request, notification or response), parsed loosely so the gateway
/// can tell them apart and pass unknown fields on unchanged.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Message {
    /// Must be "2.0".
    pub jsonrpc: String,
    /// Present on requests and responses. A `null` id is refused rather than read as "no id", which
    /// would turn a broken request into a notification that never gets an answer (MCP forbids them).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "non_null_id")]
    pub id: Option<Id>,
    /// Present on requests and notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    /// A response's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// A response's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

fn non_null_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Id>, D::Error> {
    Id::deserialize(d).map(Some)
}

impl Message {
    /// A request has both a method and an id.
    pub fn is_request(&self) -> bool {
        self.method.is_some() && self.id.is_some()
    }
    /// A notification has a method and no id.
    pub fn is_notification(&self) -> bool {
        self.method.is_some() && self.id.is_none()
    }
}

/// Builds a JSON-RPC error response. `code` is Gatehouse's stable code, carried in `error.data.code`.
pub fn error_response(id: Option<&Id>, rpc_code: i64, message: &str, code: Option<ErrorCode>) -> Value {
    let mut error = serde_json::json!({ "code": rpc_code, "message": message });
    if let Some(code) = code {
        error["data"] = serde_json::json!({ "code": code.as_str() });
    }
    serde_json::json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

/// Builds a JSON-RPC success response.
pub fn result_response(id: &Id, result: Value) -> Value {
    serde_json::json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// Parses one HTTP body as a single JSON-RPC 2.0 message, as the gateway's MCP endpoint does; the
/// error is a JSON-RPC code (`PARSE_ERROR` or `INVALID_REQUEST`) and a message.
pub fn parse_body(body: &[u8]) -> Result<Message, (i64, String)> {
    // One pass on the request path; the body is looked at again only to explain a refusal.
    let message: Message = serde_json::from_slice(body).map_err(|e| refusal_of(body, e))?;
    if message.jsonrpc != "2.0" {
        return Err((
            INVALID_REQUEST,
            "the body is not a JSON-RPC 2.0 message: \"jsonrpc\" must be \"2.0\"".to_owned(),
        ));
    }
    if message.method.is_none() && message.result.is_none() && message.error.is_none() {
        return Err((INVALID_REQUEST, "a JSON-RPC message needs a method, a result or an error".to_owned()));
    }
    Ok(message)
}

/// The JSON-RPC error for a body that is not a single JSON-RPC message.
fn refusal_of(body: &[u8], e: serde_json::Error) -> (i64, String) {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(e) => return (PARSE_ERROR, format!("the body is not valid JSON: {e}")),
    };
    if value.is_array() {
        return (INVALID_REQUEST, "batches are not supported in protocol 2025-11-25".to_owned());
    }
    if !value.is_object() {
        return (INVALID_REQUEST, "the body must be a JSON-RPC 2.0 message (a JSON object)".to_owned());
    }
    if value.get("id").is_some_and(Value::is_null) {
        return (INVALID_REQUEST, "the id must be a string or a number, not null".to_owned());
    }
    (INVALID_REQUEST, format!("the body is not a JSON-RPC 2.0 message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_may_be_absent_but_never_null() {
        let n: Message = serde_json::from_str(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(n.is_notification());
        let r: Message = serde_json::from_str(r#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#).unwrap();
        assert_eq!(r.id, Some(Id::Str("a".into())));
        assert!(serde_json::from_str::<Message>(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#).is_err());
    }
}
