//! A lean MCP client over one keep-alive HTTP/1.1 connection, for the load generator.
//!
//! Hand-written on a tokio `TcpStream` on purpose: the load generator shares the two cores with the
//! processes it measures, so it must cost as little as possible per request. It writes each request
//! in one call from a reused buffer and parses only the status line, `Content-Length`,
//! `Transfer-Encoding` and, when asked, `Mcp-Session-Id`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

pub const PROTOCOL_VERSION: &str = "2025-11-25";

/// Where requests go.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// Request path, e.g. `/mcp` or `/mcp/acme/dev`.
    pub path: String,
    /// Bearer token sent with every request (the echo upstream ignores it).
    pub token: Option<String>,
    /// The `Host` header.
    host: String,
}

impl Target {
    pub fn parse(name: &'static str, url: &str, token: Option<String>) -> anyhow::Result<Target> {
        let rest = url.strip_prefix("http://").context("only http:// URLs")?;
        let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
        let addr: SocketAddr = authority.parse().with_context(|| format!("{authority} is not ip:port"))?;
        Ok(Target { name, addr, path, token, host: addr.to_string() })
    }
}

/// One answer; `body` indexes into the connection's buffer.
pub struct Reply {
    pub status: u16,
    pub session_id: Option<String>,
    body_start: usize,
    body_end: usize,
    chunked: bool,
}

/// One keep-alive connection holding one MCP session.
pub struct Conn {
    target: Arc<Target>,
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    body: Vec<u8>,
    dechunked: Vec<u8>,
    pub session: Option<String>,
    next_id: u64,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Conn {
    pub async fn connect(target: Arc<Target>) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(target.addr).await.with_context(|| format!("connecting to {}", target.addr))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            target,
            stream,
            rbuf: Vec::with_capacity(16 * 1024),
            wbuf: Vec::with_capacity(1024),
            body: Vec::with_capacity(512),
            dechunked: Vec::new(),
            session: None,
            next_id: 1,
        })
    }

    /// The body of the last reply.
    pub fn body<'a>(&'a self, reply: &Reply) -> &'a [u8] {
        if reply.chunked { &self.dechunked } else { &self.rbuf[reply.body_start..reply.body_end] }
    }

    /// POSTs the JSON-RPC message in `self.body` and reads the answer.
    async fn post(&mut self, want_session: bool) -> anyhow::Result<Reply> {
        let t = &self.target;
        self.wbuf.clear();
        self.wbuf.extend_from_slice(b"POST ");
        self.wbuf.extend_from_slice(t.path.as_bytes());
        self.wbuf.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.wbuf.extend_from_slice(t.host.as_bytes());
        self.wbuf.extend_from_slice(
            b"\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n",
        );
        if let Some(token) = &t.token {
            self.wbuf.extend_from_slice(b"Authorization: Bearer ");
            self.wbuf.extend_from_slice(token.as_bytes());
            self.wbuf.extend_from_slice(b"\r\n");
        }
        if let Some(session) = &self.session {
            self.wbuf.extend_from_slice(b"Mcp-Session-Id: ");
            self.wbuf.extend_from_slice(session.as_bytes());
            self.wbuf.extend_from_slice(b"\r\nMCP-Protocol-Version: ");
            self.wbuf.extend_from_slice(PROTOCOL_VERSION.as_bytes());
            self.wbuf.extend_from_slice(b"\r\n");
        }
        self.wbuf.extend_from_slice(b"Content-Length: ");
        write!(self.wbuf, "{}", self.body.len())?;
        self.wbuf.extend_from_slice(b"\r\n\r\n");
        self.wbuf.extend_from_slice(&self.body);
        self.stream.write_all(&self.wbuf).await?;
        self.read_reply(want_session).await
    }

    /// Reads until `self.rbuf` holds at least `n` bytes.
    async fn fill(&mut self, n: usize) -> anyhow::Result<()> {
        while self.rbuf.len() < n {
            if self.rbuf.capacity() == self.rbuf.len() {
                self.rbuf.reserve(16 * 1024);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                bail!("the server closed the connection");
            }
        }
        Ok(())
    }

    async fn read_reply(&mut self, want_session: bool) -> anyhow::Result<Reply> {
        self.rbuf.clear();
        let header_end = loop {
            if let Some(i) = find(&self.rbuf, b"\r\n\r\n") {
                break i + 4;
            }
            let have = self.rbuf.len();
            self.fill(have + 1).await?;
        };
        let head = std::str::from_utf8(&self.rbuf[..header_end]).context("non-UTF-8 response head")?;
        let mut lines = head.split("\r\n");
        let status: u16 =
            lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).context("bad status line")?;
        let (mut length, mut chunked, mut session_id) = (None, false, None);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().context("bad Content-Length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if want_session && name.eq_ignore_ascii_case("mcp-session-id") {
                session_id = Some(value.to_owned());
            }
        }
        if chunked {
            self.dechunk(header_end).await?;
            return Ok(Reply { status, session_id, body_start: 0, body_end: 0, chunked: true });
        }
        let length = length.unwrap_or(0);
        self.fill(header_end + length).await?;
        Ok(Reply { status, session_id, body_start: header_end, body_end: header_end + length, chunked: false })
    }

    async fn dechunk(&mut self, mut at: usize) -> anyhow::Result<()> {
        self.dechunked.clear();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.rbuf[at..], b"\r\n") {
                    break at + i;
                }
                let have = self.rbuf.len();
                self.fill(have + 1).await?;
            };
            let size_text = std::str::from_utf8(&self.rbuf[at..line_end])?.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).context("bad chunk size")?;
            at = line_end + 2;
            if size == 0 {
                // No trailers expected: just the closing CRLF.
                self.fill(at + 2).await?;
                return Ok(());
            }
            self.fill(at + size + 2).await?;
            let data = self.rbuf[at..at + size].to_vec();
            self.dechunked.extend_from_slice(&data);
            at += size + 2;
        }
    }

    /// Sends a JSON-RPC request with a fresh id; checks for HTTP 200.
    async fn request(&mut self, method: &str, params: &str, want_session: bool) -> anyhow::Result<Reply> {
        let id = self.next_id;
        self.next_id += 1;
        self.body.clear();
        self.body.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        write!(self.body, "{id}")?;
        self.body.extend_from_slice(br#","method":""#);
        self.body.extend_from_slice(method.as_bytes());
        self.body.extend_from_slice(br#"","params":"#);
        self.body.extend_from_slice(params.as_bytes());
        self.body.push(b'}');
        let reply = self.post(want_session).await?;
        if reply.status != 200 {
            bail!(
                "{} answered {method} with HTTP {}: {}",
                self.target.name,
                reply.status,
                String::from_utf8_lossy(self.body(&reply))
            );
        }
        Ok(reply)
    }

    /// `initialize` + `notifications/initialized`: opens this connection's session.
    pub async fn initialize(&mut self) -> anyhow::Result<()> {
        self.session = None;
        let params = format!(
            r#"{{"protocolVersion":"{PROTOCOL_VERSION}","capabilities":{{}},"clientInfo":{{"name":"gatehouse-bench","version":"1"}}}}"#
        );
        let reply = self.request("initialize", &params, true).await?;
        self.session = Some(reply.session_id.context("initialize answered without Mcp-Session-Id")?);
        self.body.clear();
        self.body.extend_from_slice(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        let reply = self.post(false).await?;
        if reply.status != 202 && reply.status != 200 {
            bail!("{} answered notifications/initialized with HTTP {}", self.target.name, reply.status);
        }
        Ok(())
    }

    /// `tools/list`; returns the tool names.
    pub async fn tools_list(&mut self) -> anyhow::Result<Vec<String>> {
        let reply = self.request("tools/list", "{}", false).await?;
        let v: Value = serde_json::from_slice(self.body(&reply))?;
        let tools = v["result"]["tools"].as_array().with_context(|| format!("tools/list answered {v}"))?;
        Ok(tools.iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect())
    }

    /// `tools/call echo`, checked cheaply: HTTP 200 and a `"result"` member. Returns the body length.
    pub async fn call_echo(&mut self) -> anyhow::Result<usize> {
        let reply = self.request("tools/call", ECHO_PARAMS, false).await?;
        let body = self.body(&reply);
        if find(body, b"\"result\"").is_none() {
            bail!("{} answered tools/call without a result: {}", self.target.name, String::from_utf8_lossy(body));
        }
        Ok(body.len())
    }

    /// `tools/call echo`, checked fully (the echoed text).
    pub async fn call_echo_checked(&mut self) -> anyhow::Result<()> {
        let reply = self.request("tools/call", ECHO_PARAMS, false).await?;
        let v: Value = serde_json::from_slice(self.body(&reply))?;
        let text = v["result"]["content"][0]["text"].as_str().unwrap_or_default();
        if !text.contains(ECHO_MESSAGE) {
            bail!("{} did not echo: {v}", self.target.name);
        }
        Ok(())
    }
}

pub const ECHO_MESSAGE: &str = "hello from the gatehouse load generator";
const ECHO_PARAMS: &str = r#"{"name":"echo","arguments":{"message":"hello from the gatehouse load generator"}}"#;

/// A plain `GET path` on a fresh connection that is then kept open (for the per-connection memory figure).
pub async fn idle_connection(addr: SocketAddr, path: &str) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    while find(&buf, b"\r\n\r\n").is_none() {
        if stream.read_buf(&mut buf).await? == 0 {
            bail!("closed");
        }
    }
    // /healthz answers a short body that fits in the same segment; anything left over is harmless.
    Ok(stream)
}
