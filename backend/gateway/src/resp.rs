//! A small Redis client (RESP2 over one TCP connection), just enough for the shared rate-limit
//! store (`shared_limits.rs`): `AUTH`, `SELECT`, `SCRIPT LOAD` and `EVALSHA`.
//!
//! Why not the `redis` crate: we need four commands and full control of what happens when Redis
//! is away, and `redis` 1.8 (`default-features = false`, `tokio-comp`, `script`,
//! `connection-manager`) adds about 22 s of compile time (`redis` 11.8 s, `combine` 7.2 s, small
//! crates the rest; measured on the 2-core build machine, `docs/decisions/0011-rate-limits.md`).
//!
//! # Shape
//!
//! One connection, multiplexed: requests are queued to a task that owns the socket, written in
//! batches (pipelined) and answered in order (RESP answers in request order), each through its own
//! one-shot channel. The request path never waits for a connection to be made: when there is no
//! live connection, [`Client::request`] fails at once with [`Error::Unavailable`]. A background
//! task makes the connection and remakes it whenever it is lost, after a backoff (100 ms doubling
//! to [`MAX_BACKOFF`], starting over after a connection that served for a while), so Redis coming
//! back is noticed within [`MAX_BACKOFF`] whether or not calls come. A caller that gives up on a slow
//! answer calls [`Client::trip`]: the connection is dropped and the next one waits the backoff, so
//! a Redis that hangs costs each call at most the caller's timeout, and only until it trips.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// How long making a connection (TCP, `AUTH`, `SELECT`) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait between two connection attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// A connection that answered and lived this long resets the backoff (a Redis that answers, but
/// too slowly, is tripped again and again: its reconnections keep backing off).
const HEALTHY: Duration = Duration::from_secs(10);
/// Requests queued for the connection's task at most; beyond, a request fails as [`Error::Busy`].
const QUEUE: usize = 4096;
/// Largest bulk string or array accepted in an answer (ours are a few bytes).
const MAX_LEN: i64 = 1 << 20;

/// A Redis answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// `+OK`.
    Simple(String),
    /// `-ERR …`: an error answer (the connection is fine).
    Error(String),
    /// `:42`.
    Int(i64),
    /// `$…`; `None` for the nil bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*…`; `None` for the nil array.
    Array(Option<Vec<Value>>),
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    /// No live connection (one is being made, or the last attempt failed and the backoff runs).
    #[error("not connected ({0})")]
    Unavailable(String),
    /// The request queue is full.
    #[error("request queue full")]
    Busy,
    /// The connection closed before the answer came.
    #[error("connection lost")]
    Closed,
}

/// Where Redis is: `redis://[[user]:password@]host[:port][/db]`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Target {
    host: String,
    port: u16,
    db: u32,
    username: Option<String>,
    password: Option<String>,
}

// By hand, so the password never reaches a log line.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = if self.password.is_some() { "<credentials>@" } else { "" };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "redis://{auth}{host}:{}/{}", self.port, self.db)
    }
}

impl Target {
    /// Parses a `redis://` URL. The path is the database number (default 0); a user name and a
    /// password may be percent-encoded. `rediss://` (TLS) and Unix sockets are not supported.
    pub(crate) fn parse(url: &reqwest::Url) -> Result<Target, String> {
        match url.scheme() {
            "redis" => {}
            "rediss" => return Err("rediss:// (TLS) is not supported; reach Redis over a private network".into()),
            other => return Err(format!("scheme {other:?} is not redis://")),
        }
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            _ => return Err("no host".into()),
        };
        let db = match url.path().trim_matches('/') {
            "" => 0,
            db => db.parse::<u32>().map_err(|_| format!("database {db:?} is not a number"))?,
        };
        let decode = |s: &str| percent_decode(s).ok_or_else(|| "bad percent-encoding in the credentials".to_owned());
        let username = Some(decode(url.username())?).filter(|u| !u.is_empty());
        let password = url.password().map(decode).transpose()?;
        if username.is_some() && password.is_none() {
            return Err("a user name needs a password (redis://user:password@host)".into());
        }
        Ok(Target { host, port: url.port().unwrap_or(6379), db, username, password })
    }

    /// The commands that prepare a new connection.
    fn handshake(&self) -> Vec<Vec<Vec<u8>>> {
        let mut commands = Vec::new();
        match (&self.username, &self.password) {
            (Some(user), Some(pass)) => commands.push(args(&[b"AUTH", user.as_bytes(), pass.as_bytes()])),
            (None, Some(pass)) => commands.push(args(&[b"AUTH", pass.as_bytes()])),
            _ => {}
        }
        if self.db != 0 {
            commands.push(args(&[b"SELECT", self.db.to_string().as_bytes()]));
        }
        commands
    }
}

fn args(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes a command as a RESP array of bulk strings.
pub(crate) fn encode(parts: &[&[u8]], out: &mut Vec<u8>) {
    use std::io::Write as _;
    let _ = write!(out, "*{}\r\n", parts.len());
    for p in parts {
        let _ = write!(out, "${}\r\n", p.len());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one answer from the front of `buf`: `Ok(None)` if it is not complete yet, else the
/// answer and how many bytes it took.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, String> {
    fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
        let end = buf.get(from..)?.windows(2).position(|w| w == b"\r\n")?;
        Some((&buf[from..from + end], from + end + 2))
    }
    fn int(bytes: &[u8]) -> Result<i64, String> {
        std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).ok_or_else(|| "bad integer".to_owned())
    }
    fn at(buf: &[u8], from: usize, depth: usize) -> Result<Option<(Value, usize)>, String> {
        if depth > 8 {
            return Err("answer nested too deeply".into());
        }
        let Some(&kind) = buf.get(from) else { return Ok(None) };
        let Some((text, next)) = line(buf, from + 1) else { return Ok(None) };
        let string = || String::from_utf8_lossy(text).into_owned();
        Ok(Some(match kind {
            b'+' => (Value::Simple(string()), next),
            b'-' => (Value::Error(string()), next),
            b':' => (Value::Int(int(text)?), next),
            b'$' => match int(text)? {
                -1 => (Value::Bulk(None), next),
                n @ 0..=MAX_LEN => {
                    let n = n as usize;
                    if buf.len() < next + n + 2 {
                        return Ok(None);
                    }
                    if &buf[next + n..next + n + 2] != b"\r\n" {
                        return Err("bulk string not terminated".into());
                    }
                    (Value::Bulk(Some(buf[next..next + n].to_vec())), next + n + 2)
                }
                n => return Err(format!("bulk length {n}")),
            },
            b'*' => match int(text)? {
                -1 => (Value::Array(None), next),
                n @ 0..=MAX_LEN => {
                    let mut items = Vec::with_capacity((n as usize).min(64));
                    let mut pos = next;
                    for _ in 0..n {
                        let Some((item, after)) = at(buf, pos, depth + 1)? else { return Ok(None) };
                        items.push(item);
                        pos = after;
                    }
                    (Value::Array(Some(items)), pos)
                }
                n => return Err(format!("array length {n}")),
            },
            other => return Err(format!("unknown answer type {:?}", other as char)),
        }))
    }
    at(buf, 0, 0)
}

struct Pending {
    command: Vec<u8>,
    answer: oneshot::Sender<Value>,
}

struct State {
    /// The live connection's queue.
    tx: Option<mpsc::Sender<Pending>>,
    /// Why there is no live connection (for [`Error::Unavailable`]).
    last_error: String,
}

struct Shared {
    target: Target,
    state: Mutex<State>,
}

/// A Redis connection that remakes itself (see the module docs). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Client {
    shared: Arc<Shared>,
}

impl Client {
    /// A client for `target`. A background task makes the connection and remakes it whenever it is
    /// lost (needs a Tokio runtime); it ends when the last clone is dropped.
    pub(crate) fn new(target: Target) -> Client {
        let state = State { tx: None, last_error: "not connected yet".into() };
        let shared = Arc::new(Shared { target, state: Mutex::new(state) });
        tokio::spawn(keep_connected(Arc::downgrade(&shared)));
        Client { shared }
    }

    /// Where this client connects.
    pub(crate) fn target(&self) -> &Target {
        &self.shared.target
    }

    /// True while a connection is live.
    pub(crate) fn is_connected(&self) -> bool {
        lock(&self.shared).tx.as_ref().is_some_and(|tx| !tx.is_closed())
    }

    /// Sends one command and waits for its answer (an error answer is `Ok(Value::Error)`). Fails at
    /// once when no connection is live. Callers bound the wait with their own timeout.
    pub(crate) async fn request(&self, parts: &[&[u8]]) -> Result<Value, Error> {
        let tx = {
            let state = lock(&self.shared);
            match &state.tx {
                Some(tx) if !tx.is_closed() => tx.clone(),
                _ => return Err(Error::Unavailable(state.last_error.clone())),
            }
        };
        let mut command = Vec::with_capacity(64 + parts.iter().map(|p| p.len() + 16).sum::<usize>());
        encode(parts, &mut command);
        let (answer, rx) = oneshot::channel();
        tx.try_send(Pending { command, answer }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::Busy,
            mpsc::error::TrySendError::Closed(_) => Error::Closed,
        })?;
        drop(tx);
        rx.await.map_err(|_| Error::Closed)
    }

    /// Drops the connection (it answered too slowly); the next one is made after the backoff.
    pub(crate) fn trip(&self, why: &str) {
        let mut state = lock(&self.shared);
        if state.tx.take().is_some() {
            state.last_error = why.to_owned();
        }
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes the connection, serves it until it is lost or tripped, waits the backoff, and again; for
/// as long as the client lives. The backoff doubles from 100 ms to [`MAX_BACKOFF`] and starts over
/// after a connection that answered for at least [`HEALTHY`].
async fn keep_connected(shared: Weak<Shared>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(strong) = shared.upgrade() else { return };
        let target = strong.target.clone();
        drop(strong);
        let made =
            tokio::time::timeout(CONNECT_TIMEOUT, open(&target)).await.unwrap_or_else(|_| Err("timed out".into()));
        let Some(strong) = shared.upgrade() else { return };
        match made {
            Ok(stream) => {
                let (tx, rx) = mpsc::channel(QUEUE);
                lock(&strong).tx = Some(tx);
                drop(strong);
                tracing::info!(redis = %target, "connected to the shared rate-limit store");
                let since = std::time::Instant::now();
                let answered = run(stream, rx).await;
                let Some(strong) = shared.upgrade() else { return };
                let mut state = lock(&strong);
                if state.tx.take().is_some() {
                    state.last_error = "connection lost".into();
                }
                tracing::info!(redis = %target, reason = %state.last_error, "lost the shared rate-limit store");
                if answered && since.elapsed() >= HEALTHY {
                    backoff = FIRST_BACKOFF;
                }
            }
            Err(e) => {
                tracing::debug!(redis = %target, error = %e, "cannot connect to the shared rate-limit store");
                lock(&strong).last_error = e;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Connects and runs the handshake (`AUTH`, `SELECT`).
async fn open(target: &Target) -> Result<TcpStream, String> {
    let mut stream =
        TcpStream::connect((target.host.as_str(), target.port)).await.map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(256);
    for command in target.handshake() {
        let parts: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
        let mut bytes = Vec::new();
        encode(&parts, &mut bytes);
        stream.write_all(&bytes).await.map_err(|e| format!("write: {e}"))?;
        let answer = loop {
            if let Some((value, used)) = parse(&buf)? {
                buf.advance(used);
                break value;
            }
            if stream.read_buf(&mut buf).await.map_err(|e| format!("read: {e}"))? == 0 {
                return Err("closed during the handshake".into());
            }
        };
        if let Value::Error(e) = answer {
            // Never echo the command: it holds the password.
            let what = String::from_utf8_lossy(&command[0]).into_owned();
            return Err(format!("{what} refused: {e}"));
        }
    }
    Ok(stream)
}

/// Owns one connection: writes queued commands (batched), hands answers back in order. Ends when
/// the socket fails or every sender is gone (the client tripped it, or was dropped); unanswered
/// requests then see [`Error::Closed`]. Returns whether any answer came.
async fn run(stream: TcpStream, mut rx: mpsc::Receiver<Pending>) -> bool {
    let (mut reader, mut writer) = stream.into_split();
    let mut waiting: VecDeque<oneshot::Sender<Value>> = VecDeque::new();
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    let mut answered = false;
    loop {
        tokio::select! {
            next = rx.recv() => {
                let Some(first) = next else { return answered };
                out.clear();
                out.extend_from_slice(&first.command);
                waiting.push_back(first.answer);
                while out.len() < 64 * 1024 {
                    let Ok(more) = rx.try_recv() else { break };
                    out.extend_from_slice(&more.command);
                    waiting.push_back(more.answer);
                }
                if writer.write_all(&out).await.is_err() {
                    return answered;
                }
            }
            read = reader.read_buf(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return answered;
                }
                loop {
                    match parse(&buf) {
                        Ok(Some((value, used))) => {
                            buf.advance(used);
                            // An answer nobody asked for means we lost track: give up the connection.
                            let Some(answer) = waiting.pop_front() else { return answered };
                            answered = true;
                            let _ = answer.send(value);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "unreadable answer from the rate-limit store; reconnecting");
                            return answered;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        let mut out = Vec::new();
        encode(&[b"EVALSHA", b"abc", b"1", b"k"], &mut out);
        assert_eq!(out, b"*4\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$1\r\nk\r\n");
    }

    #[test]
    fn parses_every_answer_type_and_waits_for_incomplete_ones() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Some((Value::Simple("OK".into()), 5)));
        assert_eq!(
            parse(b"-NOSCRIPT No matching\r\n").unwrap().unwrap().0,
            Value::Error("NOSCRIPT No matching".into())
        );
        assert_eq!(parse(b":-42\r\n").unwrap().unwrap().0, Value::Int(-42));
        assert_eq!(parse(b"$-1\r\n").unwrap().unwrap().0, Value::Bulk(None));
        assert_eq!(parse(b"$3\r\nabc\r\n+x").unwrap(), Some((Value::Bulk(Some(b"abc".to_vec())), 9)));
        let array = b"*3\r\n:1\r\n:0\r\n$2\r\nhi\r\n";
        assert_eq!(
            parse(array).unwrap().unwrap(),
            (Value::Array(Some(vec![Value::Int(1), Value::Int(0), Value::Bulk(Some(b"hi".to_vec()))])), array.len())
        );
        for cut in 0..array.len() {
            assert_eq!(parse(&array[..cut]).unwrap(), None, "incomplete at {cut}");
        }
        assert!(parse(b"?what\r\n").is_err());
        assert!(parse(b"$3\r\nabcd\r\n").is_err());
        assert!(parse(b"$99999999999\r\n").is_err());
        assert!(parse(b":x\r\n").is_err());
    }

    #[test]
    fn urls_give_host_port_database_and_credentials_never_shown() {
        let parse = |s: &str| Target::parse(&reqwest::Url::parse(s).unwrap());
        let t = parse("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db, &t.password), ("127.0.0.1", 6380, 2, &None));
        assert!(t.handshake().iter().any(|c| c[0] == b"SELECT" && c[1] == b"2"));
        let t = parse("redis://redis.internal").unwrap();
        assert_eq!((t.port, t.db), (6379, 0));
        assert!(t.handshake().is_empty(), "database 0, no password: nothing to say");
        let t = parse("redis://:s%40cret@h:1/0").unwrap();
        assert_eq!(t.password.as_deref(), Some("s@cret"));
        assert_eq!(t.handshake(), vec![args(&[b"AUTH", b"s@cret"])]);
        let t = parse("redis://gw:pw@[::1]:7000").unwrap();
        assert_eq!(t.handshake(), vec![args(&[b"AUTH", b"gw", b"pw"])]);
        assert_eq!(t.to_string(), "redis://<credentials>@[::1]:7000/0");
        assert!(!format!("{t:?}").contains("pw"));
        assert!(parse("rediss://h").unwrap_err().contains("TLS"));
        assert!(parse("http://h").unwrap_err().contains("redis://"));
        assert!(parse("redis://h/x").unwrap_err().contains("database"));
        assert!(parse("redis://user@h").unwrap_err().contains("password"));
    }

    #[tokio::test]
    async fn a_dead_address_fails_at_once_and_says_why() {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        let url = reqwest::Url::parse(&format!("redis://127.0.0.1:{port}")).unwrap();
        let client = Client::new(Target::parse(&url).unwrap());
        let started = Instant::now();
        assert!(matches!(client.request(&[b"PING"]).await, Err(Error::Unavailable(_))));
        assert!(started.elapsed() < Duration::from_millis(50), "never waits for a connection");
        tokio::time::sleep(Duration::from_millis(50)).await;
        match client.request(&[b"PING"]).await {
            Err(Error::Unavailable(why)) => assert!(why.contains("connect"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(!client.is_connected());
    }
}
