//! The message pipe: JSON-RPC messages to and from one upstream connection, whatever carries them.
//!
//! * [`spawn_stdio`]: a child process speaking newline-delimited JSON-RPC on stdin/stdout. Its
//!   environment is cleared (only `PATH`, `HOME` and the variables the server spec names); its
//!   stderr is logged, bounded; it is killed when the pipe is dropped.
//! * [`connect_sse`]: the legacy HTTP+SSE transport (2024-11-05): GET the SSE URL, wait for the
//!   `endpoint` event, POST each message to that endpoint, read messages from the stream.
//!
//! Both hand back the same [`Pipe`]; the upstream's messages end (the receiver closes) when the
//! process exits or the stream ends. Bad output (a line that is not JSON, an oversized line or
//! event) is logged and skipped, never a panic.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use gatehouse_bundle::format::StdioCommand;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use crate::sse;

/// Messages buffered in each direction before the writer waits.
const CHANNEL: usize = 64;
/// Longest stderr line logged (the rest is cut).
const STDERR_LINE: usize = 1024;
/// Stderr lines logged per child; later ones are read and dropped.
const STDERR_LINES: usize = 1000;
/// Stderr lines kept to explain a failed start.
const STDERR_TAIL: usize = 5;

/// Environment variables a server spec may not set: they would change what the allow-listed
/// command runs (`PATH` lookup, preloaded libraries).
pub fn forbidden_env(name: &str) -> bool {
    name == "PATH" || name.starts_with("LD_") || name.starts_with("DYLD_")
}

/// One open upstream connection.
pub(crate) struct Pipe {
    /// Messages to the upstream.
    pub outgoing: mpsc::Sender<Value>,
    /// Messages from the upstream; closed when the upstream is gone.
    pub incoming: mpsc::Receiver<Value>,
    /// Stops everything when dropped.
    pub guard: PipeGuard,
    /// The last lines of the child's stderr (empty for SSE).
    pub stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

/// Ends the connection when dropped: aborts the pipe's tasks and kills the child.
pub(crate) struct PipeGuard {
    tasks: Vec<AbortHandle>,
    child: Option<tokio::process::Child>,
}

impl Drop for PipeGuard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(child) = &mut self.child {
            // `kill_on_drop` would do it too; start_kill does not wait.
            let _ = child.start_kill();
        }
    }
}

/// Launches `spec` (its command must already be allowed).
pub(crate) fn spawn_stdio(spec: &StdioCommand, max_line: usize) -> Result<Pipe, String> {
    let mut command = tokio::process::Command::new(&spec.command);
    command.args(&spec.args).env_clear();
    for (k, v) in &spec.env {
        if !forbidden_env(k) {
            command.env(k, v);
        }
    }
    // Only PATH and HOME of the worker's own environment: never its tokens or keys.
    command.env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()));
    if !spec.env.contains_key("HOME") {
        command.env("HOME", std::env::var_os("HOME").unwrap_or_else(|| "/".into()));
    }
    // A fixed working directory, not the worker's (which holds its data directory).
    command.current_dir("/");
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| format!("could not start '{}': {e}", spec.command))?;
    let pid = child.id().unwrap_or_default();
    let (stdin, stdout, stderr) = match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
        (Some(i), Some(o), Some(e)) => (i, o, e),
        _ => return Err("the child's standard streams are missing".to_owned()),
    };
    let (out_tx, mut out_rx) = mpsc::channel::<Value>(CHANNEL);
    let (in_tx, in_rx) = mpsc::channel::<Value>(CHANNEL);
    let command_name = spec.command.clone();

    let writer = tokio::spawn(async move {
        let mut stdin = stdin;
        while let Some(message) = out_rx.recv().await {
            let mut line = match serde_json::to_vec(&message) {
                Ok(l) => l,
                Err(_) => continue,
            };
            line.push(b'\n');
            if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
    });

    let reader = tokio::spawn(async move {
        let mut out = BufReader::new(stdout);
        let mut line = Vec::new();
        let mut skipping = false;
        loop {
            let buf = match out.fill_buf().await {
                Ok([]) | Err(_) => break,
                Ok(b) => b,
            };
            let (chunk, done, used) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], true, i + 1),
                None => (buf, false, buf.len()),
            };
            if !skipping {
                if line.len() + chunk.len() > max_line {
                    warn!(pid, "stdio server wrote a line longer than {max_line} bytes; it is skipped");
                    skipping = true;
                    line.clear();
                } else {
                    line.extend_from_slice(chunk);
                }
            }
            out.consume(used);
            if done {
                if !skipping {
                    for message in parse_line(&line, pid) {
                        if in_tx.send(message).await.is_err() {
                            return;
                        }
                    }
                }
                line.clear();
                skipping = false;
            }
        }
        debug!(pid, "stdio server closed its stdout");
    });

    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let stderr_tail = Arc::clone(&tail);
    let logger = tokio::spawn(async move {
        let mut err = BufReader::new(stderr);
        let mut logged = 0usize;
        let mut line = Vec::new();
        loop {
            line.clear();
            // Bounded: a line is read in pieces of at most STDERR_LINE bytes.
            match (&mut err).take(STDERR_LINE as u64).read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            if text.is_empty() {
                continue;
            }
            if logged < STDERR_LINES {
                logged += 1;
                debug!(pid, command = %command_name, "stdio server stderr: {text}");
            }
            if let Ok(mut t) = tail.lock() {
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(text);
            }
        }
    });
    Ok(Pipe {
        outgoing: out_tx,
        incoming: in_rx,
        guard: PipeGuard {
            tasks: vec![writer.abort_handle(), reader.abort_handle(), logger.abort_handle()],
            child: Some(child),
        },
        stderr_tail,
    })
}

/// The JSON-RPC messages of one line (a batch array is split), skipping what is not JSON-RPC.
fn parse_line(line: &[u8], pid: u32) -> Vec<Value> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return vec![];
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => vec![Value::Object(m)],
        Ok(Value::Array(items)) => items.into_iter().filter(Value::is_object).collect(),
        _ => {
            let shown: String = text.chars().take(200).collect();
            warn!(pid, "stdio server wrote a line that is not a JSON-RPC message; skipped: {shown}");
            vec![]
        }
    }
}

/// Connects to a legacy HTTP+SSE server at `url`: waits (at most `timeout`) for its `endpoint`
/// event, which must name a URL of the same origin.
pub(crate) async fn connect_sse(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
    max_event: usize,
) -> Result<Pipe, String> {
    let base = url::Url::parse(url).map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    let opening = async {
        let response = http
            .get(base.clone())
            .header(http::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| format!("could not reach {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url} answered HTTP {}", response.status().as_u16()));
        }
        let is_sse = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if !is_sse {
            return Err(format!("GET {url} did not answer with an event stream"));
        }
        let mut stream = response.bytes_stream();
        let mut parser = sse::SseParser::new(max_event);
        let mut early = Vec::new();
        loop {
            let chunk = match stream.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => return Err(format!("the event stream of {url} failed: {e}")),
                None => return Err(format!("the event stream of {url} ended before its endpoint event")),
            };
            let events = parser.push(&chunk).map_err(|_| format!("{url} sent an event over {max_event} bytes"))?;
            let mut endpoint = None;
            for event in events {
                if event.event_type() == "endpoint" && endpoint.is_none() {
                    let target = base
                        .join(event.data.trim())
                        .map_err(|e| format!("{url} announced an endpoint that is not a URL: {e}"))?;
                    if target.origin() != base.origin() {
                        return Err(format!(
                            "{url} announced an endpoint on another origin ({}); refused",
                            target.origin().ascii_serialization()
                        ));
                    }
                    endpoint = Some(target);
                } else if event.event_type() == "message" && !event.data.is_empty() {
                    early.push(event.data);
                }
            }
            if let Some(endpoint) = endpoint {
                return Ok((endpoint, stream, parser, early));
            }
        }
    };
    let (endpoint, mut stream, mut parser, early) = tokio::time::timeout(timeout, opening)
        .await
        .map_err(|_| format!("{url} sent no endpoint event within {timeout:?}"))??;

    let (out_tx, mut out_rx) = mpsc::channel::<Value>(CHANNEL);
    let (in_tx, in_rx) = mpsc::channel::<Value>(CHANNEL);
    let origin = url.to_owned();
    let reader_tx = in_tx.clone();
    let reader = tokio::spawn(async move {
        let deliver = async |data: String| -> bool {
            match serde_json::from_str::<Value>(&data) {
                Ok(m @ Value::Object(_)) => reader_tx.send(m).await.is_ok(),
                _ => {
                    warn!(url = %origin, "SSE server sent an event that is not a JSON-RPC message; skipped");
                    true
                }
            }
        };
        for data in early {
            if !deliver(data).await {
                return;
            }
        }
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            let Ok(events) = parser.push(&chunk) else {
                warn!(url = %origin, "SSE server sent an oversized event; the connection is closed");
                break;
            };
            for event in events.into_iter().filter(|e| e.event_type() == "message" && !e.data.is_empty()) {
                if !deliver(event.data).await {
                    return;
                }
            }
        }
        debug!(url = %origin, "the SSE stream ended");
    });

    let client = http.clone();
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            let sent = client.post(endpoint.clone()).timeout(timeout).json(&message).send().await;
            let failure = match sent {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("it answered HTTP {}", r.status().as_u16())),
                Err(e) => Some(format!("it could not be reached ({e})")),
            };
            let (Some(why), Some(id)) = (failure, message.get("id").filter(|_| message.get("method").is_some())) else {
                continue;
            };
            // A request the server never got would wait forever: answer it here.
            let answer = json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": -32603, "message": format!("the SSE server did not accept the message: {why}")}});
            if in_tx.send(answer).await.is_err() {
                break;
            }
        }
    });

    Ok(Pipe {
        outgoing: out_tx,
        incoming: in_rx,
        guard: PipeGuard { tasks: vec![reader.abort_handle(), writer.abort_handle()], child: None },
        stderr_tail: Arc::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_that_are_not_json_rpc_are_skipped() {
        assert_eq!(parse_line(b"  {\"jsonrpc\":\"2.0\",\"id\":1}\r", 1), vec![json!({"jsonrpc":"2.0","id":1})]);
        assert!(parse_line(b"Server started on stdio", 1).is_empty());
        assert!(parse_line(b"42", 1).is_empty());
        assert_eq!(parse_line(b"[{\"a\":1},2]", 1), vec![json!({"a":1})]);
    }

    #[test]
    fn spec_env_cannot_change_what_runs() {
        assert!(forbidden_env("PATH") && forbidden_env("LD_PRELOAD") && forbidden_env("DYLD_INSERT_LIBRARIES"));
        assert!(!forbidden_env("API_URL"));
    }

    #[tokio::test]
    async fn a_child_sees_only_path_home_and_its_spec_env_and_dies_with_the_pipe() {
        let spec = StdioCommand {
            command: "sh".into(),
            args: vec![
                "-c".into(),
                // Prints its environment as one JSON-RPC message, then an oversized line, junk and
                // an echo of stdin.
                r#"printf '{"env":"%s"}\n' "$(env | cut -d= -f1 | sort | tr '\n' ' ')"; head -c 5000 /dev/zero | tr '\0' x; echo; echo junk; read l; echo "$l"; sleep 30"#.into(),
            ],
            env: [("GIVEN".to_owned(), "1".to_owned()), ("LD_PRELOAD".to_owned(), "/x.so".to_owned())].into(),
        };
        let mut pipe = spawn_stdio(&spec, 4096).unwrap();
        let first = pipe.incoming.recv().await.unwrap();
        let names: Vec<&str> = first["env"].as_str().unwrap().split_whitespace().collect();
        for name in &names {
            assert!(["GIVEN", "HOME", "PATH", "PWD", "SHLVL", "_", "OLDPWD"].contains(name), "child saw {name}");
        }
        assert!(names.contains(&"GIVEN") && !names.contains(&"LD_PRELOAD"));
        pipe.outgoing.send(json!({"jsonrpc":"2.0","id":7,"method":"ping"})).await.unwrap();
        let echoed = pipe.incoming.recv().await.unwrap();
        assert_eq!(echoed["id"], 7, "the oversized line and the junk were skipped");
        drop(pipe.guard);
        let ended = tokio::time::timeout(Duration::from_secs(5), pipe.incoming.recv()).await.unwrap();
        assert!(ended.is_none(), "the pipe closes when its guard goes");
    }

    #[tokio::test]
    async fn a_command_that_does_not_exist_is_a_clear_error() {
        let spec = StdioCommand { command: "/nonexistent/mcp-server".into(), ..Default::default() };
        let err = spawn_stdio(&spec, 1024).err().unwrap();
        assert!(err.contains("could not start '/nonexistent/mcp-server'"), "{err}");
    }
}
