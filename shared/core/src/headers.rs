//! The HTTP header rules of MCP 2026-07-28 (Streamable HTTP, "Request Metadata", SEP-2243): the
//! headers a client mirrors from the JSON-RPC body, and the server-side check that they agree with it.
//!
//! The gateway runs this validation for 2026-07-28 clients and uses this encoding when it speaks to a
//! 2026-07-28 upstream (`backend/gateway/src/modern.rs`, `docs/decisions/0018-protocol-2026-07-28.md`).
//! It is pure: no I/O, no state, the tool schemas come from the caller.
//!
//! Source: `docs/specification/2026-07-28/basic/transports/streamable-http.mdx` and
//! `docs/specification/2026-07-28/server/tools.mdx` of the MCP specification repository. The rules
//! relied on, quoted:
//!
//! * "Every POST request to the MCP endpoint **MUST** include an `MCP-Protocol-Version` header. The
//!   header value **MUST** match the `io.modelcontextprotocol/protocolVersion` field carried in the
//!   request body's `_meta`. If the values do not match, the server **MUST** reject the request with
//!   `400 Bad Request` and a `HeaderMismatch` JSON-RPC error."
//! * Standard request headers: `Mcp-Method` from `method`, required for "All requests"; `Mcp-Name`
//!   from "`params.name` or `params.uri`", required for "`tools/call`, `resources/read`,
//!   `prompts/get` requests".
//! * "header requirements for notification POSTs are not defined by this revision", and "The client
//!   **MUST NOT** send JSON-RPC _responses_."
//! * `x-mcp-header`: "specifies the name portion used to construct the header name
//!   `Mcp-Param-{name}`"; it "**MUST** match HTTP field-name token syntax (`1*tchar`)", be
//!   "case-insensitively unique", apply only to "primitive types (integer, string, boolean)" and only
//!   to properties "statically reachable from the schema root: reachable via a chain consisting
//!   solely of `properties` keys". "Header extraction is defined as reading the instance value at the
//!   exact property path of the annotated property [...] If no value is present at that path in the
//!   call arguments, the header is omitted."
//! * Value encoding: "`string`: Use the value as-is; `integer`: Convert to decimal string
//!   representation; `boolean`: Convert to lowercase `"true"` or `"false"`". "When a value cannot be
//!   safely represented as a plain ASCII header value (e.g., it contains non-ASCII characters, control
//!   characters, or has leading/trailing whitespace), clients **MUST** use Base64 encoding of the
//!   UTF-8 representation" as `=?base64?{Base64EncodedValue}?=`; "The same encoding rule applies to
//!   the `Mcp-Name` header value"; "The prefix `=?base64?` and suffix `?=` [...] are case-sensitive";
//!   "clients **MUST** also Base64-encode any plain-ASCII value that matches the sentinel pattern".
//! * "servers **MUST** decode an encoded `Mcp-Name` or `Mcp-Param-{Name}` value before comparing it
//!   to the corresponding request body value".
//! * Custom headers, server side: "Parameter value is `null` | Client MUST omit the header | Server
//!   MUST NOT expect the header"; "Client omits header but value is in body | Non-conforming client |
//!   Server MUST reject the request"; "Intermediate servers that do not recognize an
//!   `Mcp-Param-{Name}` header **MUST** forward it and otherwise ignore it".
//! * "When validating integer parameter values, servers **SHOULD** compare the header value and the
//!   body value numerically rather than as strings (e.g., `42.0` and `42` are considered equal)."
//! * "Header names [...] are case-insensitive. [...] Header _values_ (such as method names) are
//!   case-sensitive."
//! * Failures: "A required standard header (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`) is
//!   missing. A header value does not match the corresponding request body value. [...] A header
//!   value contains invalid characters." → HTTP `400 Bad Request` with JSON-RPC `-32020`
//!   (`HeaderMismatch`), e.g. `"Header mismatch: Mcp-Name header value 'foo' does not match body
//!   value 'bar'"`.
//!
//! Choices where the text leaves room (and the official conformance suite's
//! `http-standard-headers` / `http-custom-header-server-validation` scenarios guided us):
//!
//! * Base64 is decoded strictly (standard alphabet, canonical padding): the suite expects
//!   `=?base64?SGVsbG8?=` (no padding) and non-alphabet characters to be rejected.
//! * Optional whitespace around a value is ignored (RFC 9110 §5.5; the suite sends `  name  `).
//! * A header sent more than once is refused: an intermediary reading the first copy and a server
//!   reading the last would otherwise disagree, which is exactly what these rules prevent.
//! * A recognised header present where the body has no value (`Mcp-Name` on a `tools/call` without
//!   `params.name`, `Mcp-Param-X` for an absent or `null` argument, `Mcp-Method` on a body without a
//!   method) is refused: it cannot have been mirrored from this body.
//! * Notifications: `Mcp-Method` and `MCP-Protocol-Version` are compared with the body when present,
//!   never required. Responses (which 2026-07-28 clients must not send) are refused by the caller,
//!   not here.
//! * `Mcp-Name` is only checked for the three methods the core specification names (the tasks
//!   extension adds `tasks/*` with `params.taskId`; the gateway does not offer it).

use crate::ErrorCode;
use crate::jsonrpc::{Id, Message, error_response, parse_body};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{HeaderMap, HeaderName, StatusCode};
use serde_json::{Number, Value};

/// JSON-RPC error code of a header/body disagreement (`HeaderMismatch`, MCP 2026-07-28).
pub const HEADER_MISMATCH: i64 = -32020;

/// `MCP-Protocol-Version`.
pub const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// `Mcp-Method`.
pub const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
/// `Mcp-Name`.
pub const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
/// Lower-case prefix of the `Mcp-Param-{X}` headers.
pub const MCP_PARAM_PREFIX: &str = "mcp-param-";
/// The `_meta` key carrying the request's protocol version.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

const SENTINEL_PREFIX: &str = "=?base64?";
const SENTINEL_SUFFIX: &str = "?=";
/// 2^53 - 1, the largest integer the specification allows in a header ("within the safe range for
/// integers represented using IEEE754 double-precision"): up to it, comparing through `f64` is exact.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;
/// How much of a header or body value an error message quotes.
const QUOTE_CHARS: usize = 80;

/// One tool parameter mirrored into a header: `"x-mcp-header": "Region"` on the property at `path`
/// gives `Mcp-Param-Region`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamHeader {
    /// The `x-mcp-header` value, the `{X}` of `Mcp-Param-{X}`, as the schema spells it.
    pub name: String,
    /// Property names from the root of `arguments` to the annotated property (`["region"]`, or
    /// `["location", "region"]` for a nested object property).
    pub path: Vec<String>,
}

impl ParamHeader {
    /// A parameter at the top level of `arguments`.
    pub fn top_level(name: impl Into<String>, property: impl Into<String>) -> Self {
        Self { name: name.into(), path: vec![property.into()] }
    }

    /// The header as the spec writes it, `Mcp-Param-{X}`.
    pub fn header(&self) -> String {
        format!("Mcp-Param-{}", self.name)
    }
}

/// Why a request's headers were refused: which header, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMismatch {
    /// The header, spelled as in the specification (`Mcp-Name`, `Mcp-Param-Region`).
    pub header: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Required (the body has the value it mirrors) but absent. Carries the body value, rendered.
    Missing {
        /// The body value the header should have mirrored (`None` when the body lacks it too).
        body: Option<String>,
    },
    /// Sent more than once.
    Repeated,
    /// Not visible ASCII, space or tab.
    InvalidCharacters,
    /// A `=?base64?…?=` value that is not valid Base64 of UTF-8 text.
    BadEncoding(String),
    /// Present, but the body has no value for it.
    NotInBody,
    /// Present and decoded, but different from the body value.
    Differs {
        /// The header value (decoded).
        header: String,
        /// The body value, rendered as the header would carry it.
        body: String,
    },
    /// The tool's schema names this header with an `x-mcp-header` value that is not an HTTP token,
    /// so no client can send it.
    InvalidAnnotation,
}

impl HeaderMismatch {
    /// The HTTP status of a header mismatch.
    pub const STATUS: StatusCode = StatusCode::BAD_REQUEST;

    fn new(header: impl Into<String>, problem: Problem) -> Self {
        Self { header: header.into(), problem }
    }

    /// The HTTP status to answer with: always `400 Bad Request`.
    pub fn status(&self) -> StatusCode {
        Self::STATUS
    }

    /// The JSON-RPC error response: code `-32020`, this error's message, and `data` with
    /// Gatehouse's stable code (`INVALID_INPUT`) and the header's name.
    pub fn to_error(&self, id: Option<&Id>) -> Value {
        let mut response = error_response(id, HEADER_MISMATCH, &self.to_string(), Some(ErrorCode::InvalidInput));
        response["error"]["data"]["header"] = Value::String(self.header.clone());
        response
    }
}

impl std::fmt::Display for HeaderMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header = &self.header;
        match &self.problem {
            Problem::Missing { body: Some(body) } => {
                write!(f, "Header mismatch: {header} header is missing; the body value is '{}'", quote(body))
            }
            Problem::Missing { body: None } => write!(f, "Header mismatch: {header} header is missing"),
            Problem::Repeated => write!(f, "Header mismatch: {header} header is sent more than once"),
            Problem::InvalidCharacters => write!(
                f,
                "Header mismatch: {header} header value contains invalid characters \
                 (non-ASCII values must be sent as =?base64?...?=)"
            ),
            Problem::BadEncoding(why) => write!(f, "Header mismatch: {header} header value is not valid Base64: {why}"),
            Problem::NotInBody => {
                write!(f, "Header mismatch: {header} header is present but the body has no such value")
            }
            Problem::Differs { header: value, body } => write!(
                f,
                "Header mismatch: {header} header value '{}' does not match body value '{}'",
                quote(value),
                quote(body)
            ),
            Problem::InvalidAnnotation => write!(
                f,
                "Header mismatch: the tool's x-mcp-header annotation for {header} is not a valid header name; \
                 the tool cannot be called over HTTP until its server fixes the schema"
            ),
        }
    }
}

impl std::error::Error for HeaderMismatch {}

/// A value for an error message: at most [`QUOTE_CHARS`] characters, control characters escaped.
fn quote(value: &str) -> String {
    let mut out: String = value.chars().take(QUOTE_CHARS).flat_map(char::escape_default).collect();
    if value.chars().nth(QUOTE_CHARS).is_some() {
        out.push_str("...");
    }
    out
}

/// Checks a 2026-07-28 POST's headers against its body: `MCP-Protocol-Version` against
/// `params._meta["io.modelcontextprotocol/protocolVersion"]`, `Mcp-Method` against `method`,
/// `Mcp-Name` against `params.name` (`tools/call`, `prompts/get`) or `params.uri`
/// (`resources/read`), and for `tools/call` each `Mcp-Param-{X}` of the called tool against its
/// argument. Header names are matched case-insensitively (the `HeaderMap` lower-cases them), values
/// case-sensitively after trimming optional whitespace and, for `Mcp-Name` and `Mcp-Param-*`,
/// decoding `=?base64?…?=`.
///
/// `param_headers` gives, for a tool name as the client called it, its header-mapped parameters
/// (see [`tool_param_headers`]); `None` means the tool is unknown, in which case no `Mcp-Param-*`
/// header is checked (the call is refused as an unknown tool anyway). `Mcp-Param-*` headers the
/// tool does not declare are ignored, as the specification requires of servers that do not
/// recognise them.
///
/// The first problem found is returned; answer it with [`HeaderMismatch::STATUS`] and
/// [`HeaderMismatch::to_error`].
pub fn check_request_headers(
    headers: &HeaderMap,
    message: &Message,
    param_headers: &dyn Fn(&str) -> Option<Vec<ParamHeader>>,
) -> Result<(), HeaderMismatch> {
    let params = message.params.as_ref();
    let required = message.is_request();

    let body_version = params.and_then(|p| p.get("_meta")).and_then(|m| m.get(META_PROTOCOL_VERSION));
    let body_version = match body_version {
        None => None,
        Some(Value::String(version)) => Some(version.as_str()),
        // A version that is not a string cannot be mirrored; quote it as JSON.
        Some(other) => {
            let header = plain_header(headers, &MCP_PROTOCOL_VERSION, "MCP-Protocol-Version")?;
            return Err(HeaderMismatch::new(
                "MCP-Protocol-Version",
                Problem::Differs { header: header.unwrap_or_default().to_owned(), body: other.to_string() },
            ));
        }
    };
    compare_plain(headers, &MCP_PROTOCOL_VERSION, "MCP-Protocol-Version", body_version, required)?;
    compare_plain(headers, &MCP_METHOD, "Mcp-Method", message.method.as_deref(), required)?;

    let Some(method) = message.method.as_deref() else { return Ok(()) };
    let name_field = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return Ok(()),
    };
    let name = match params.and_then(|p| p.get(name_field)) {
        None | Some(Value::Null) => None,
        Some(value) => Some(value),
    };
    compare_encoded(headers, &MCP_NAME, "Mcp-Name", name, required)?;

    if method != "tools/call" {
        return Ok(());
    }
    let Some(tool) = name.and_then(Value::as_str) else { return Ok(()) };
    let Some(mapped) = param_headers(tool) else { return Ok(()) };
    let arguments = params.and_then(|p| p.get("arguments"));
    for param in &mapped {
        let label = param.header();
        let Ok(header_name) = HeaderName::from_bytes(format!("{MCP_PARAM_PREFIX}{}", param.name).as_bytes()) else {
            return Err(HeaderMismatch::new(label, Problem::InvalidAnnotation));
        };
        let value = argument_at(arguments, &param.path);
        compare_encoded(headers, &header_name, &label, value, true)?;
    }
    Ok(())
}

/// The non-`null` value at `path` inside `arguments`, if there is one.
fn argument_at<'v>(arguments: Option<&'v Value>, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(arguments?, |at, key| at.as_object()?.get(key)).filter(|v| !v.is_null())
}

/// The header's value with optional whitespace trimmed, `None` when absent; refuses a repeated
/// header and one with bytes outside visible ASCII, space and tab.
fn plain_header<'h>(headers: &'h HeaderMap, name: &HeaderName, label: &str) -> Result<Option<&'h str>, HeaderMismatch> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(HeaderMismatch::new(label, Problem::Repeated));
    }
    let text = value.to_str().map_err(|_| HeaderMismatch::new(label, Problem::InvalidCharacters))?;
    Ok(Some(text.trim_matches([' ', '\t'])))
}

/// A header that is never Base64-encoded (`MCP-Protocol-Version`, `Mcp-Method`) against its body
/// value. `required`: a body value without a header is refused (else the pair is only compared when
/// both are there, and a header without a body value is still refused).
fn compare_plain(
    headers: &HeaderMap,
    name: &HeaderName,
    label: &str,
    body: Option<&str>,
    required: bool,
) -> Result<(), HeaderMismatch> {
    match (plain_header(headers, name, label)?, body) {
        (Some(header), Some(body)) if header == body => Ok(()),
        (Some(header), Some(body)) => {
            Err(HeaderMismatch::new(label, Problem::Differs { header: header.to_owned(), body: body.to_owned() }))
        }
        (Some(_), None) => Err(HeaderMismatch::new(label, Problem::NotInBody)),
        (None, body) if required => Err(HeaderMismatch::new(label, Problem::Missing { body: body.map(str::to_owned) })),
        (None, _) => Ok(()),
    }
}

/// A header that may be Base64-encoded (`Mcp-Name`, `Mcp-Param-*`) against a body value (`None`:
/// absent or `null`). A header without a body value is always refused; a body value without a
/// header only when `required`.
fn compare_encoded(
    headers: &HeaderMap,
    name: &HeaderName,
    label: &str,
    body: Option<&Value>,
    required: bool,
) -> Result<(), HeaderMismatch> {
    let header = plain_header(headers, name, label)?;
    let (header, body) = match (header, body) {
        (None, None) => return Ok(()),
        (Some(_), None) => return Err(HeaderMismatch::new(label, Problem::NotInBody)),
        (None, Some(body)) if required => {
            return Err(HeaderMismatch::new(label, Problem::Missing { body: Some(render(body)) }));
        }
        (None, Some(_)) => return Ok(()),
        (Some(header), Some(body)) => (header, body),
    };
    let decoded = decode_header_text(header).map_err(|why| HeaderMismatch::new(label, Problem::BadEncoding(why)))?;
    if value_matches(&decoded, body) {
        Ok(())
    } else {
        Err(HeaderMismatch::new(label, Problem::Differs { header: decoded, body: render(body) }))
    }
}

/// Whether decoded header text mirrors a body value: strings as they are, booleans as `true` /
/// `false`, numbers compared numerically (`42.0` equals `42`). Objects and arrays never match: no
/// client can mirror them.
fn value_matches(header: &str, body: &Value) -> bool {
    match body {
        Value::String(s) => header == s,
        Value::Bool(b) => header == if *b { "true" } else { "false" },
        Value::Number(n) => numbers_equal(header, n),
        Value::Null | Value::Array(_) | Value::Object(_) => false,
    }
}

fn numbers_equal(header: &str, body: &Number) -> bool {
    // The header must be a JSON number on its own: no sign "+", no leading zeros, no "NaN".
    let Ok(header) = serde_json::from_str::<Number>(header) else { return false };
    if let (Some(a), Some(b)) = (header.as_i64(), body.as_i64()) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (header.as_u64(), body.as_u64()) {
        return a == b;
    }
    let (Some(a), Some(b)) = (header.as_f64(), body.as_f64()) else { return false };
    // One side is an integer outside i64 or the two differ in kind (42 vs 42.0): compare as f64
    // only where f64 is exact for integers.
    let integer_involved = header.is_i64() || header.is_u64() || body.is_i64() || body.is_u64();
    a == b && (!integer_involved || a.abs() <= MAX_SAFE_INTEGER)
}

/// A body value rendered as its header would carry it (unencoded), for messages.
fn render(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Decodes a `=?base64?…?=` header value (strict standard Base64, UTF-8), or returns any other
/// value as it is. The markers are case-sensitive.
pub fn decode_header_text(value: &str) -> Result<String, String> {
    let Some(encoded) = value.strip_prefix(SENTINEL_PREFIX).and_then(|rest| rest.strip_suffix(SENTINEL_SUFFIX)) else {
        return Ok(value.to_owned());
    };
    let bytes = BASE64.decode(encoded).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|_| "the decoded bytes are not UTF-8".to_owned())
}

/// Encodes text for `Mcp-Name` or `Mcp-Param-*`: as it is when it is plain ASCII a header carries
/// unchanged (visible characters and inner spaces), else `=?base64?{Base64 of UTF-8}?=`. Also encoded:
/// tabs and leading or trailing spaces (HTTP strips or mangles them), and text that itself looks like
/// the sentinel.
pub fn encode_header_text(text: &str) -> String {
    let unsafe_bytes = text.bytes().any(|b| !(0x20..=0x7e).contains(&b));
    let padded = text.starts_with(' ') || text.ends_with(' ');
    let looks_encoded = text.starts_with(SENTINEL_PREFIX) && text.ends_with(SENTINEL_SUFFIX);
    if !(unsafe_bytes || padded || looks_encoded) {
        text.to_owned()
    } else {
        format!("{SENTINEL_PREFIX}{}{SENTINEL_SUFFIX}", BASE64.encode(text))
    }
}

/// The `Mcp-Param-{X}` header value a client sends for an argument: strings through
/// [`encode_header_text`], integers in decimal, booleans as `true` / `false`. `None` for `null`,
/// arrays and objects (the header is omitted for `null`; the others cannot be annotated). A number
/// with a fraction (the specification does not allow `x-mcp-header` on `number` properties) is
/// rendered as JSON text; an integral one within 2^53 as an integer (`42.0` → `42`).
pub fn encode_param_value(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(encode_header_text(s)),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                return Some(n.to_string());
            }
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER => Some(format!("{}", f as i64)),
                _ => Some(n.to_string()),
            }
        }
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// The header-mapped parameters of a tool, read from its `inputSchema`, or why the annotations are
/// invalid (then, per the specification, a client excludes the tool from `tools/list`).
///
/// Checked: every `x-mcp-header` value is a non-empty HTTP token (`1*tchar`), unique ignoring case,
/// on a property whose `type` is `string`, `integer` or `boolean`, reachable from the root through
/// `properties` keys only (not `items`, `oneOf`, `$ref`, ...).
pub fn tool_param_headers(input_schema: &Value) -> Result<Vec<ParamHeader>, String> {
    let mut found = Vec::new();
    collect_annotations(input_schema, Some(&mut Vec::new()), &mut found)?;
    for (i, param) in found.iter().enumerate() {
        if found[..i].iter().any(|p| p.name.eq_ignore_ascii_case(&param.name)) {
            return Err(format!("x-mcp-header {:?} is used twice (names are compared ignoring case)", param.name));
        }
    }
    Ok(found)
}

/// Keywords whose values are data, not schemas: an `x-mcp-header` key inside them is not an annotation.
const DATA_KEYWORDS: [&str; 4] = ["const", "default", "enum", "examples"];

/// Walks a schema. `path` is `Some` while the node is statically reachable (the property names
/// leading to it), `None` below any other keyword.
fn collect_annotations(
    node: &Value,
    mut path: Option<&mut Vec<String>>,
    found: &mut Vec<ParamHeader>,
) -> Result<(), String> {
    match node {
        Value::Array(items) => {
            for item in items {
                collect_annotations(item, None, found)?;
            }
        }
        Value::Object(map) => {
            if let Some(annotation) = map.get("x-mcp-header") {
                let Some(path) = path.as_deref() else {
                    return Err(
                        "x-mcp-header on a property that is not reachable through `properties` alone".to_owned()
                    );
                };
                found.push(check_annotation(annotation, map.get("type"), path)?);
            }
            for (key, value) in map {
                if DATA_KEYWORDS.contains(&key.as_str()) || key == "x-mcp-header" {
                    continue;
                }
                match (key.as_str(), value, path.as_deref_mut()) {
                    ("properties", Value::Object(properties), Some(path)) => {
                        for (name, sub) in properties {
                            path.push(name.clone());
                            let walked = collect_annotations(sub, Some(path), found);
                            path.pop();
                            walked?;
                        }
                    }
                    ("properties", Value::Object(properties), None) => {
                        for sub in properties.values() {
                            collect_annotations(sub, None, found)?;
                        }
                    }
                    _ => collect_annotations(value, None, found)?,
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_annotation(annotation: &Value, ty: Option<&Value>, path: &[String]) -> Result<ParamHeader, String> {
    let at = path.join(".");
    let Some(name) = annotation.as_str() else {
        return Err(format!("x-mcp-header of {at:?} is not a string"));
    };
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(format!("x-mcp-header {name:?} of {at:?} is not an HTTP token (1*tchar)"));
    }
    if path.is_empty() {
        return Err(format!("x-mcp-header {name:?} is on the schema root, not on a property"));
    }
    match ty.and_then(Value::as_str) {
        Some("string" | "integer" | "boolean") => Ok(ParamHeader { name: name.to_owned(), path: path.to_vec() }),
        _ => Err(format!("x-mcp-header {name:?} of {at:?} is not on a string, integer or boolean property")),
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Fuzzing entry point (`fuzz/fuzz_targets/request.rs`); not an API.
///
/// `data` is `header lines` `\n\n` `body` (or only a body). Parses the body with [`parse_body`], as the gateway's MCP
/// endpoint does, checks the given headers against it (the answer may be anything but a panic), then
/// checks the headers a conforming client derives from the body ([`encode_param_value`],
/// [`encode_header_text`]) and panics if they are refused: that would be a bug here.
#[doc(hidden)]
pub fn fuzz_request(data: &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (&b""[..], data),
    };
    // The gateway's own body parser; a refused body ends here (its explanation is the fuzzed part).
    let Ok(message) = parse_body(body) else { return };
    // Every tool maps every top-level argument that is a token to a header of the same name.
    let from_arguments = |_: &str| -> Option<Vec<ParamHeader>> {
        let arguments = message.params.as_ref()?.get("arguments")?.as_object()?;
        let mut params: Vec<ParamHeader> = Vec::new();
        for key in arguments.keys() {
            if !key.is_empty() && key.bytes().all(is_tchar) && !params.iter().any(|p| p.name.eq_ignore_ascii_case(key))
            {
                params.push(ParamHeader::top_level(key.clone(), key.clone()));
            }
        }
        Some(params)
    };

    let mut given = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(&line[..colon]), http::HeaderValue::from_bytes(&line[colon + 1..]))
        {
            given.append(name, value);
        }
    }
    if let Err(e) = check_request_headers(&given, &message, &from_arguments) {
        let _ = e.to_error(message.id.as_ref());
    }

    // What a conforming client sends for this body must pass.
    let Some(derived) = client_headers(&message, &from_arguments) else { return };
    if let Err(e) = check_request_headers(&derived, &message, &from_arguments) {
        panic!("headers derived from the body were refused: {e}\nheaders: {derived:?}\nbody: {message:?}");
    }
}

/// The headers a conforming client sends for `message`, or `None` when it cannot send them (a
/// method or protocol version that is not header-safe, a non-string name, an argument no header
/// can carry).
fn client_headers(message: &Message, param_headers: &dyn Fn(&str) -> Option<Vec<ParamHeader>>) -> Option<HeaderMap> {
    use http::HeaderValue;
    let mut headers = HeaderMap::new();
    let params = message.params.as_ref();
    let method = message.method.as_deref()?;
    // Non-string versions and methods outside the safe set cannot be mirrored at all.
    match params.and_then(|p| p.get("_meta")).and_then(|m| m.get(META_PROTOCOL_VERSION)) {
        None => {}
        Some(Value::String(v)) => {
            headers.insert(MCP_PROTOCOL_VERSION, HeaderValue::from_str(v).ok().filter(|_| safe_plain(v))?);
        }
        Some(_) => return None,
    }
    if message.is_request() && !headers.contains_key(MCP_PROTOCOL_VERSION) {
        return None;
    }
    headers.insert(MCP_METHOD, HeaderValue::from_str(method).ok().filter(|_| safe_plain(method))?);
    let field = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return Some(headers),
    };
    let name = match params.and_then(|p| p.get(field)) {
        None | Some(Value::Null) => return Some(headers),
        Some(value) => value,
    };
    headers.insert(MCP_NAME, HeaderValue::from_str(&encode_param_value(name)?).ok()?);
    if method != "tools/call" {
        return Some(headers);
    }
    let tool = name.as_str()?;
    let arguments = params.and_then(|p| p.get("arguments"));
    for param in param_headers(tool).unwrap_or_default() {
        let Some(value) = argument_at(arguments, &param.path) else { continue };
        let header = HeaderName::from_bytes(format!("{MCP_PARAM_PREFIX}{}", param.name).as_bytes()).ok()?;
        // Objects and arrays cannot be annotated; fractional numbers are not allowed either.
        if value.is_f64() && value.as_f64().is_some_and(|f| f.fract() != 0.0 || f.abs() > MAX_SAFE_INTEGER) {
            return None;
        }
        headers.insert(header, HeaderValue::from_str(&encode_param_value(value)?).ok()?);
    }
    Some(headers)
}

/// Text a header carries unchanged (no trimming, no invalid bytes).
fn safe_plain(text: &str) -> bool {
    text.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    const V: &str = "2026-07-28";

    fn message(body: &Value) -> Message {
        serde_json::from_slice(&serde_json::to_vec(body).unwrap()).unwrap()
    }

    fn meta() -> Value {
        json!({
            META_PROTOCOL_VERSION: V,
            "io.modelcontextprotocol/clientInfo": { "name": "test", "version": "1" },
            "io.modelcontextprotocol/clientCapabilities": {}
        })
    }

    fn request(method: &str, mut params: Value) -> Message {
        params["_meta"] = meta();
        message(&json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    /// The example tool of the specification, plus an integer, a boolean and a nested property.
    fn tools(tool: &str) -> Option<Vec<ParamHeader>> {
        (tool == "execute_sql").then(|| {
            vec![
                ParamHeader::top_level("Region", "region"),
                ParamHeader::top_level("Priority", "priority"),
                ParamHeader::top_level("Verbose", "verbose"),
                ParamHeader { name: "Zone".into(), path: vec!["placement".into(), "zone".into()] },
            ]
        })
    }

    fn check(h: &[(&str, &str)], m: &Message) -> Result<(), HeaderMismatch> {
        check_request_headers(&headers(h), m, &tools)
    }

    fn call(arguments: Value) -> Message {
        request("tools/call", json!({ "name": "execute_sql", "arguments": arguments }))
    }

    const CALL: [(&str, &str); 3] =
        [("MCP-Protocol-Version", V), ("Mcp-Method", "tools/call"), ("Mcp-Name", "execute_sql")];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        CALL.iter().chain(extra).copied().collect()
    }

    #[track_caller]
    fn assert_problem(result: Result<(), HeaderMismatch>, header: &str, problem: &Problem) {
        let e = result.expect_err("should be refused");
        assert_eq!(e.header, header, "{e}");
        assert_eq!(std::mem::discriminant(&e.problem), std::mem::discriminant(problem), "{e}");
    }

    #[test]
    fn headers_spec_example_tools_call_passes() {
        let m = call(json!({ "region": "us-west1", "query": "SELECT * FROM users" }));
        check(&with(&[("Mcp-Param-Region", "us-west1")]), &m).unwrap();
    }

    #[test]
    fn headers_header_names_are_case_insensitive() {
        let m = call(json!({ "region": "us-west1" }));
        let h = [
            ("mcp-protocol-version", V),
            ("MCP-METHOD", "tools/call"),
            ("mcp-NAME", "execute_sql"),
            ("MCP-PARAM-REGION", "us-west1"),
        ];
        check(&h, &m).unwrap();
        let lower: Vec<_> = h.iter().map(|(n, v)| (n.to_ascii_lowercase(), *v)).collect();
        let lower: Vec<(&str, &str)> = lower.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        check(&lower, &m).unwrap();
    }

    #[test]
    fn headers_values_are_case_sensitive() {
        let m = request("tools/list", json!({}));
        let e = check(&[("MCP-Protocol-Version", V), ("Mcp-Method", "TOOLS/LIST")], &m).unwrap_err();
        assert!(matches!(e.problem, Problem::Differs { .. }), "{e}");
    }

    #[test]
    fn headers_protocol_version_must_match_meta() {
        let m = request("tools/list", json!({}));
        check(&[("MCP-Protocol-Version", V), ("Mcp-Method", "tools/list")], &m).unwrap();
        let e = check(&[("MCP-Protocol-Version", "2025-11-25"), ("Mcp-Method", "tools/list")], &m).unwrap_err();
        assert_eq!(e.header, "MCP-Protocol-Version");
        assert_eq!(e.problem, Problem::Differs { header: "2025-11-25".into(), body: V.into() },);
        assert_problem(
            check(&[("Mcp-Method", "tools/list")], &m),
            "MCP-Protocol-Version",
            &Problem::Missing { body: None },
        );
        // A header, but no version in the body's _meta.
        let bare = message(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }));
        assert_problem(
            check(&[("MCP-Protocol-Version", V), ("Mcp-Method", "tools/list")], &bare),
            "MCP-Protocol-Version",
            &Problem::NotInBody,
        );
        // A version that is not a string.
        let odd = message(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": { "_meta": { META_PROTOCOL_VERSION: 20260728 } }
        }));
        assert_problem(
            check(&[("MCP-Protocol-Version", "20260728"), ("Mcp-Method", "tools/list")], &odd),
            "MCP-Protocol-Version",
            &Problem::Differs { header: String::new(), body: String::new() },
        );
    }

    #[test]
    fn headers_method_required_and_equal_on_requests() {
        let m = request("tools/list", json!({}));
        assert_problem(check(&[("MCP-Protocol-Version", V)], &m), "Mcp-Method", &Problem::Missing { body: None });
        let e = check(&[("MCP-Protocol-Version", V), ("Mcp-Method", "prompts/list")], &m).unwrap_err();
        assert_eq!(e.problem, Problem::Differs { header: "prompts/list".into(), body: "tools/list".into() });
        assert_eq!(
            e.to_string(),
            "Header mismatch: Mcp-Method header value 'prompts/list' does not match body value 'tools/list'"
        );
    }

    #[test]
    fn headers_optional_whitespace_is_trimmed() {
        let m = call(json!({}));
        check(&[("MCP-Protocol-Version", V), ("Mcp-Method", " tools/call\t"), ("Mcp-Name", "  execute_sql  ")], &m)
            .unwrap();
    }

    #[test]
    fn headers_repeated_header_is_refused() {
        let m = request("tools/list", json!({}));
        let h = [("MCP-Protocol-Version", V), ("Mcp-Method", "tools/list"), ("mcp-method", "tools/list")];
        assert_problem(check(&h, &m), "Mcp-Method", &Problem::Repeated);
    }

    #[test]
    fn headers_invalid_characters_are_refused() {
        let m = request("prompts/get", json!({ "name": "grüße" }));
        let mut h = headers(&[("MCP-Protocol-Version", V), ("Mcp-Method", "prompts/get")]);
        h.insert(MCP_NAME, HeaderValue::from_bytes("grüße".as_bytes()).unwrap());
        let e = check_request_headers(&h, &m, &tools).unwrap_err();
        assert_eq!((e.header.as_str(), &e.problem), ("Mcp-Name", &Problem::InvalidCharacters));
    }

    #[test]
    fn headers_notifications_need_no_headers_but_must_agree() {
        let n =
            message(&json!({ "jsonrpc": "2.0", "method": "notifications/cancelled", "params": { "requestId": 1 } }));
        check(&[], &n).unwrap();
        check(&[("Mcp-Method", "notifications/cancelled")], &n).unwrap();
        assert_problem(
            check(&[("Mcp-Method", "notifications/progress")], &n),
            "Mcp-Method",
            &Problem::Differs { header: String::new(), body: String::new() },
        );
        // A version header with no version in the body is not from this body.
        assert_problem(check(&[("MCP-Protocol-Version", V)], &n), "MCP-Protocol-Version", &Problem::NotInBody);
    }

    #[test]
    fn headers_responses_carry_no_method() {
        let r = message(&json!({ "jsonrpc": "2.0", "id": 3, "result": {} }));
        check(&[], &r).unwrap();
        assert_problem(check(&[("Mcp-Method", "tools/call")], &r), "Mcp-Method", &Problem::NotInBody);
    }

    #[test]
    fn headers_name_required_for_tools_call() {
        let m = call(json!({}));
        check(&CALL, &m).unwrap();
        let e = check(&CALL[..2], &m).unwrap_err();
        assert_eq!(e.problem, Problem::Missing { body: Some("execute_sql".into()) });
        assert_eq!(e.header, "Mcp-Name");
        let mut wrong = CALL;
        wrong[2].1 = "wrong_tool_name";
        let e = check(&wrong, &m).unwrap_err();
        assert_eq!(e.problem, Problem::Differs { header: "wrong_tool_name".into(), body: "execute_sql".into() });
    }

    #[test]
    fn headers_name_required_for_prompts_get_and_resources_read() {
        let p = request("prompts/get", json!({ "name": "greeting", "arguments": { "who": "x" } }));
        check(&[("MCP-Protocol-Version", V), ("Mcp-Method", "prompts/get"), ("Mcp-Name", "greeting")], &p).unwrap();
        assert_problem(
            check(&[("MCP-Protocol-Version", V), ("Mcp-Method", "prompts/get")], &p),
            "Mcp-Name",
            &Problem::Missing { body: None },
        );
        assert_problem(
            check(&[("MCP-Protocol-Version", V), ("Mcp-Method", "prompts/get"), ("Mcp-Name", "farewell")], &p),
            "Mcp-Name",
            &Problem::Differs { header: String::new(), body: String::new() },
        );

        let uri = "file:///projects/myapp/config.json";
        let r = request("resources/read", json!({ "uri": uri }));
        check(&[("MCP-Protocol-Version", V), ("Mcp-Method", "resources/read"), ("Mcp-Name", uri)], &r).unwrap();
        assert_problem(
            check(&[("MCP-Protocol-Version", V), ("Mcp-Method", "resources/read")], &r),
            "Mcp-Name",
            &Problem::Missing { body: None },
        );
        assert_problem(
            check(
                &[("MCP-Protocol-Version", V), ("Mcp-Method", "resources/read"), ("Mcp-Name", "file:///etc/passwd")],
                &r,
            ),
            "Mcp-Name",
            &Problem::Differs { header: String::new(), body: String::new() },
        );
    }

    #[test]
    fn headers_name_base64_form_is_decoded() {
        let uri = "file:///Users/jo/Über uns.md";
        let r = request("resources/read", json!({ "uri": uri }));
        let encoded = encode_header_text(uri);
        assert_eq!(encoded, format!("=?base64?{}?=", BASE64.encode(uri)));
        let h = [("MCP-Protocol-Version", V), ("Mcp-Method", "resources/read"), ("Mcp-Name", encoded.as_str())];
        check(&h, &r).unwrap();
        // A plain name may be sent encoded too.
        let m = call(json!({}));
        let encoded = format!("=?base64?{}?=", BASE64.encode("execute_sql"));
        check(&[("MCP-Protocol-Version", V), ("Mcp-Method", "tools/call"), ("Mcp-Name", encoded.as_str())], &m)
            .unwrap();
    }

    #[test]
    fn headers_name_without_body_value_is_refused() {
        let m = request("tools/call", json!({ "arguments": {} }));
        // No name in the body and no header: left to the parameter validation (-32602).
        check(&CALL[..2], &m).unwrap();
        assert_problem(check(&CALL, &m), "Mcp-Name", &Problem::NotInBody);
    }

    #[test]
    fn headers_name_is_ignored_on_other_methods() {
        let m = request("tools/list", json!({}));
        check(&[("MCP-Protocol-Version", V), ("Mcp-Method", "tools/list"), ("Mcp-Name", "anything")], &m).unwrap();
    }

    #[test]
    fn headers_param_string_matches_and_mismatches() {
        let m = call(json!({ "region": "us-west1" }));
        check(&with(&[("Mcp-Param-Region", "us-west1")]), &m).unwrap();
        let e = check(&with(&[("Mcp-Param-Region", "eu-west1")]), &m).unwrap_err();
        assert_eq!(e.header, "Mcp-Param-Region");
        assert_eq!(e.problem, Problem::Differs { header: "eu-west1".into(), body: "us-west1".into() });
    }

    #[test]
    fn headers_param_missing_header_for_present_argument() {
        let m = call(json!({ "region": "us-west1" }));
        let e = check(&CALL, &m).unwrap_err();
        assert_eq!(e.header, "Mcp-Param-Region");
        assert_eq!(e.problem, Problem::Missing { body: Some("us-west1".into()) });
    }

    #[test]
    fn headers_param_extra_header_for_absent_or_null_argument() {
        let m = call(json!({ "query": "SELECT 1" }));
        assert_problem(check(&with(&[("Mcp-Param-Region", "us-west1")]), &m), "Mcp-Param-Region", &Problem::NotInBody);
        let m = call(json!({ "region": null }));
        check(&CALL, &m).unwrap();
        assert_problem(check(&with(&[("Mcp-Param-Region", "null")]), &m), "Mcp-Param-Region", &Problem::NotInBody);
        // Without any arguments at all.
        let m = request("tools/call", json!({ "name": "execute_sql" }));
        check(&CALL, &m).unwrap();
        assert_problem(check(&with(&[("Mcp-Param-Verbose", "true")]), &m), "Mcp-Param-Verbose", &Problem::NotInBody);
    }

    #[test]
    fn headers_param_headers_the_tool_does_not_declare_are_ignored() {
        let m = call(json!({ "region": "us-west1" }));
        check(&with(&[("Mcp-Param-Region", "us-west1"), ("Mcp-Param-Other", "x")]), &m).unwrap();
        // An unknown tool: nothing to check its Mcp-Param-* headers against.
        let m = request("tools/call", json!({ "name": "unknown", "arguments": { "region": "x" } }));
        check(&[("MCP-Protocol-Version", V), ("Mcp-Method", "tools/call"), ("Mcp-Name", "unknown")], &m).unwrap();
    }

    #[test]
    fn headers_param_numbers_compare_numerically() {
        let m = call(json!({ "priority": 42 }));
        check(&with(&[("Mcp-Param-Priority", "42")]), &m).unwrap();
        check(&with(&[("Mcp-Param-Priority", "42.0")]), &m).unwrap();
        assert_problem(
            check(&with(&[("Mcp-Param-Priority", "43")]), &m),
            "Mcp-Param-Priority",
            &Problem::Differs { header: String::new(), body: String::new() },
        );
        for bad in ["042", "+42", "forty-two", "4 2", "NaN", ""] {
            assert!(check(&with(&[("Mcp-Param-Priority", bad)]), &m).is_err(), "{bad:?}");
        }
        let m = call(json!({ "priority": -7 }));
        check(&with(&[("Mcp-Param-Priority", "-7")]), &m).unwrap();
        // The body may carry the integer as 42.0.
        let m = call(json!({ "priority": 42.0 }));
        check(&with(&[("Mcp-Param-Priority", "42")]), &m).unwrap();
        // Beyond 2^53, f64 would call these equal; exact integers must not.
        let m = call(json!({ "priority": 9_007_199_254_740_993_i64 }));
        check(&with(&[("Mcp-Param-Priority", "9007199254740993")]), &m).unwrap();
        assert!(check(&with(&[("Mcp-Param-Priority", "9007199254740992.0")]), &m).is_err());
        assert!(check(&with(&[("Mcp-Param-Priority", "9007199254740992")]), &m).is_err());
    }

    #[test]
    fn headers_param_booleans() {
        let m = call(json!({ "verbose": false }));
        check(&with(&[("Mcp-Param-Verbose", "false")]), &m).unwrap();
        assert!(check(&with(&[("Mcp-Param-Verbose", "False")]), &m).is_err());
        assert!(check(&with(&[("Mcp-Param-Verbose", "0")]), &m).is_err());
        assert!(check(&with(&[("Mcp-Param-Verbose", "true")]), &m).is_err());
    }

    #[test]
    fn headers_param_base64_form() {
        // The encoding table of the specification.
        let m = call(json!({ "region": "Hello, 世界" }));
        check(&with(&[("Mcp-Param-Region", "=?base64?SGVsbG8sIOS4lueVjA==?=")]), &m).unwrap();
        assert!(check(&with(&[("Mcp-Param-Region", "=?base64?SGVsbG8=?=")]), &m).is_err());
        let m = call(json!({ "region": " padded " }));
        check(&with(&[("Mcp-Param-Region", "=?base64?IHBhZGRlZCA=?=")]), &m).unwrap();
        let m = call(json!({ "region": "line1\nline2" }));
        check(&with(&[("Mcp-Param-Region", "=?base64?bGluZTEKbGluZTI=?=")]), &m).unwrap();
        let m = call(json!({ "region": "=?base64?literal?=" }));
        check(&with(&[("Mcp-Param-Region", "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=")]), &m).unwrap();
        assert!(check(&with(&[("Mcp-Param-Region", "=?base64?literal?=")]), &m).is_err());
    }

    #[test]
    fn headers_param_base64_is_strict() {
        let m = call(json!({ "region": "Hello" }));
        check(&with(&[("Mcp-Param-Region", "=?base64?SGVsbG8=?=")]), &m).unwrap();
        for bad in ["=?base64?SGVsbG8?=", "=?base64?SGVs!!!bG8=?="] {
            assert_problem(
                check(&with(&[("Mcp-Param-Region", bad)]), &m),
                "Mcp-Param-Region",
                &Problem::BadEncoding(String::new()),
            );
        }
        // Not UTF-8 once decoded.
        let m = call(json!({ "region": "x" }));
        let e = check(&with(&[("Mcp-Param-Region", "=?base64?/w==?=")]), &m).unwrap_err();
        assert!(matches!(e.problem, Problem::BadEncoding(_)), "{e}");
        // Without the full sentinel the value is literal; the markers are case-sensitive.
        for literal in ["SGVsbG8=", "=?base64?SGVsbG8=", "=?BASE64?SGVsbG8=?="] {
            let m = call(json!({ "region": literal }));
            check(&with(&[("Mcp-Param-Region", literal)]), &m).unwrap();
        }
    }

    #[test]
    fn headers_param_nested_path() {
        let m = call(json!({ "placement": { "zone": "b" } }));
        check(&with(&[("Mcp-Param-Zone", "b")]), &m).unwrap();
        assert_problem(check(&CALL, &m), "Mcp-Param-Zone", &Problem::Missing { body: None });
        // The path runs through a non-object: no value, so no header.
        let m = call(json!({ "placement": "b" }));
        check(&CALL, &m).unwrap();
    }

    #[test]
    fn headers_param_objects_cannot_be_mirrored() {
        let m = call(json!({ "region": { "name": "us-west1" } }));
        assert!(check(&CALL, &m).is_err());
        assert!(check(&with(&[("Mcp-Param-Region", "{\"name\":\"us-west1\"}")]), &m).is_err());
    }

    #[test]
    fn headers_param_invalid_annotation_is_reported() {
        let m = call(json!({}));
        let bad = |_: &str| Some(vec![ParamHeader::top_level("Bad Name", "x")]);
        let e = check_request_headers(&headers(&CALL), &m, &bad).unwrap_err();
        assert_eq!(e.problem, Problem::InvalidAnnotation);
    }

    #[test]
    fn headers_error_object_and_status() {
        let m = call(json!({ "region": "us-west1" }));
        let e = check(&with(&[("Mcp-Param-Region", "eu-west1")]), &m).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            e.to_error(m.id.as_ref()),
            json!({
                "jsonrpc": "2.0",
                "id": 1,
                "error": {
                    "code": -32020,
                    "message": "Header mismatch: Mcp-Param-Region header value 'eu-west1' does not match body value 'us-west1'",
                    "data": { "code": "INVALID_INPUT", "header": "Mcp-Param-Region" }
                }
            })
        );
        // Long or odd values are quoted bounded and escaped.
        let long = "x".repeat(500);
        let e = HeaderMismatch::new("Mcp-Name", Problem::Differs { header: long.clone(), body: "a\nb".into() });
        let text = e.to_string();
        assert!(text.len() < 200 && text.contains("...") && text.contains("a\\nb"), "{text}");
    }

    #[test]
    fn headers_encode_param_value() {
        assert_eq!(encode_param_value(&json!("us-west1")).as_deref(), Some("us-west1"));
        assert_eq!(encode_param_value(&json!("us west 1")).as_deref(), Some("us west 1"));
        assert_eq!(encode_param_value(&json!("")).as_deref(), Some(""));
        assert_eq!(encode_param_value(&json!("Hello, 世界")).as_deref(), Some("=?base64?SGVsbG8sIOS4lueVjA==?="));
        assert_eq!(encode_param_value(&json!(" padded ")).as_deref(), Some("=?base64?IHBhZGRlZCA=?="));
        assert_eq!(encode_param_value(&json!("line1\nline2")).as_deref(), Some("=?base64?bGluZTEKbGluZTI=?="));
        assert_eq!(encode_param_value(&json!("\tindented")).as_deref(), Some("=?base64?CWluZGVudGVk?="));
        assert_eq!(
            encode_param_value(&json!("=?base64?literal?=")).as_deref(),
            Some("=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=")
        );
        assert_eq!(encode_param_value(&json!(42)).as_deref(), Some("42"));
        assert_eq!(encode_param_value(&json!(-7)).as_deref(), Some("-7"));
        assert_eq!(encode_param_value(&json!(42.0)).as_deref(), Some("42"));
        assert_eq!(encode_param_value(&json!(u64::MAX)).as_deref(), Some("18446744073709551615"));
        assert_eq!(encode_param_value(&json!(1.5)).as_deref(), Some("1.5"));
        assert_eq!(encode_param_value(&json!(true)).as_deref(), Some("true"));
        assert_eq!(encode_param_value(&json!(false)).as_deref(), Some("false"));
        assert_eq!(encode_param_value(&json!(null)), None);
        assert_eq!(encode_param_value(&json!([1])), None);
        assert_eq!(encode_param_value(&json!({})), None);
    }

    #[test]
    fn headers_encoded_values_round_trip_through_the_check() {
        let values = [
            json!("us-west1"),
            json!("Hello, 世界"),
            json!(" padded "),
            json!("\r\n"),
            json!(""),
            json!("=?base64?x?="),
            json!("=?base64?="),
            json!(0),
            json!(-9_007_199_254_740_991_i64),
            json!(true),
        ];
        for value in values {
            let m = call(json!({ "region": value }));
            let encoded = encode_param_value(&value).unwrap();
            let h = with(&[]);
            let mut h = headers(&h);
            h.insert("mcp-param-region", HeaderValue::from_str(&encoded).unwrap());
            check_request_headers(&h, &m, &tools).unwrap_or_else(|e| panic!("{value}: {e}"));
        }
    }

    #[test]
    fn headers_tool_param_headers_from_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "region": { "type": "string", "x-mcp-header": "Region" },
                "priority": { "type": "integer", "x-mcp-header": "Priority" },
                "placement": { "type": "object", "properties": { "zone": { "type": "string", "x-mcp-header": "Zone" } } },
                "query": { "type": "string", "default": { "x-mcp-header": "NotAnAnnotation" } },
                "x-mcp-header": { "type": "string" }
            }
        });
        let mut found = tool_param_headers(&schema).unwrap();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            found,
            vec![
                ParamHeader::top_level("Priority", "priority"),
                ParamHeader::top_level("Region", "region"),
                ParamHeader { name: "Zone".into(), path: vec!["placement".into(), "zone".into()] },
            ]
        );
        assert_eq!(tool_param_headers(&json!({ "type": "object" })).unwrap(), vec![]);
    }

    #[test]
    fn headers_tool_param_headers_refuses_invalid_annotations() {
        let invalid = [
            json!({ "properties": { "a": { "type": "string", "x-mcp-header": "" } } }),
            json!({ "properties": { "a": { "type": "string", "x-mcp-header": "Has Space" } } }),
            json!({ "properties": { "a": { "type": "string", "x-mcp-header": "Colon:" } } }),
            json!({ "properties": { "a": { "type": "string", "x-mcp-header": "Grüße" } } }),
            json!({ "properties": { "a": { "type": "string", "x-mcp-header": "Cr\r" } } }),
            json!({ "properties": { "a": { "type": "string", "x-mcp-header": 7 } } }),
            json!({ "properties": { "a": { "type": "number", "x-mcp-header": "A" } } }),
            json!({ "properties": { "a": { "type": "object", "x-mcp-header": "A" } } }),
            json!({ "properties": { "a": { "type": "array", "x-mcp-header": "A" } } }),
            json!({ "properties": { "a": { "type": "null", "x-mcp-header": "A" } } }),
            json!({ "properties": { "a": { "x-mcp-header": "A" } } }),
            json!({ "properties": {
                "a": { "type": "string", "x-mcp-header": "Same" },
                "b": { "type": "string", "x-mcp-header": "same" }
            } }),
            json!({ "properties": { "a": { "type": "array", "items": { "type": "string", "x-mcp-header": "A" } } } }),
            json!({ "properties": { "a": { "oneOf": [{ "type": "string", "x-mcp-header": "A" }] } } }),
            json!({ "$defs": { "a": { "type": "string", "x-mcp-header": "A" } } }),
            json!({ "type": "string", "x-mcp-header": "Root" }),
        ];
        for schema in invalid {
            assert!(tool_param_headers(&schema).is_err(), "{schema}");
        }
    }

    #[test]
    fn headers_fuzz_entry_accepts_any_bytes_and_its_corpus() {
        for data in [
            &b""[..],
            b"\n\n",
            b"[]",
            b"{\"jsonrpc\":\"2.0\",\"id\":null}",
            b"mcp-method: x\n\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":7}}",
            b"\xff\xfe: \x00\n\n{\"jsonrpc\":\"2.0\",\"method\":\"x\"}",
        ] {
            fuzz_request(data);
        }
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/request");
        if let Ok(entries) = std::fs::read_dir(corpus) {
            for entry in entries {
                fuzz_request(&std::fs::read(entry.unwrap().path()).unwrap());
            }
        }
    }
}
