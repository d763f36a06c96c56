//! The audit pipeline: request path → bounded channel → group commit to the spool file → shipper
//! (from memory) → control plane.
//!
//! * The request path hands each event to a bounded channel and awaits room in it: when the disk is
//!   slow the requests slow down, but no event is dropped. That channel send is all it does.
//! * The writer commits events in groups: after the first event of a group it waits [`GROUP_WINDOW`]
//!   (or until [`GROUP_MAX_EVENTS`] are queued), serialises the group as JSON lines and appends it to
//!   `{data_dir}/audit-spool.jsonl` with one `write` and one `fdatasync`, in one blocking call.
//! * The shipper sends what was just made durable straight from memory: the group's JSON lines become
//!   the body of `POST /v1/audit` as they are, without reading or parsing the file again. Only what
//!   is not in memory any more (after a restart, or when the control plane was away long enough for
//!   [`MAX_MEMORY_BYTES`] to fill up) is read back from the spool.
//! * Once the control plane acknowledged everything in the spool, the writer truncates it (before its
//!   next append, in the same blocking call, or at once when idle), so the file only grows while the
//!   control plane is away.
//! * The acknowledged offset is recorded in `{data_dir}/audit-spool.offset` at most once per
//!   [`OFFSET_RECORD_INTERVAL`] and at shutdown, without `fsync`: a lost or stale record only makes the
//!   next start resend events the control plane already has, which is harmless because ingest is
//!   idempotent on the event id. The record names the id of the last acknowledged event, and the
//!   next start only trusts it if the spool line ending at that offset is that event; otherwise (the
//!   spool was truncated and refilled since) it resends the whole spool.
//!
//! Guarantees: an event handed to [`AuditSink::emit`] is never dropped while the process lives; an
//! event written to the spool survives a crash and is sent after the next start (possibly once more,
//! if the crash came between its acknowledgement and the next offset record or truncation).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use gatehouse_core::audit::AuditEvent;
use http::HeaderValue;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, warn};

use crate::metrics::AuditCounters;
use crate::{Backoff, GatewayConfig, OnceHandle};

const SPOOL_FILE: &str = "audit-spool.jsonl";
const OFFSET_FILE: &str = "audit-spool.offset";
/// Events the request path may queue ahead of the spool writer before it waits.
const CHANNEL_CAPACITY: usize = 4096;
/// How long the writer collects events after the first one of a group before committing them.
const GROUP_WINDOW: Duration = Duration::from_millis(10);
/// Upper bounds of one group commit (the writer does not wait for the window once this many are queued).
const GROUP_MAX_EVENTS: usize = 1000;
const GROUP_MAX_BYTES: usize = 1 << 20;
/// Upper bounds of one shipped batch (the control plane takes at most 5,000 events per POST).
const MAX_BATCH_EVENTS: usize = 2000;
const MAX_BATCH_BYTES: usize = 2 << 20;
/// Durable but unshipped events kept in memory for the shipper; beyond this (the control plane is
/// away) they are only in the spool, and the shipper reads them back from there.
const MAX_MEMORY_BYTES: usize = 8 << 20;
/// The acknowledged offset is recorded at most this often (and at shutdown).
const OFFSET_RECORD_INTERVAL: Duration = Duration::from_secs(1);
/// The shipper looks at the spool at least this often, even without a wake-up.
const IDLE_CHECK: Duration = Duration::from_secs(30);
const SHIP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest spool line the start-up check of the offset record looks at.
const MAX_RECORD_LINE: u64 = 64 << 10;

// The event is not boxed: a box would be one more allocation per request, and the channel's slots
// are allocated once and reused.
#[allow(clippy::large_enum_variant)]
enum SpoolMsg {
    Event(AuditEvent),
    /// Write everything queued before this message, then stop and acknowledge.
    Stop(oneshot::Sender<()>),
}

/// The request path's end of the pipeline.
#[derive(Clone)]
pub(crate) struct AuditSink {
    tx: mpsc::Sender<SpoolMsg>,
    /// Queued, shipped and dropped events, for `/metrics`.
    pub(crate) counters: Arc<AuditCounters>,
}

impl AuditSink {
    /// Queues one event, waiting for room (back-pressure) rather than dropping it.
    pub(crate) async fn emit(&self, event: AuditEvent) {
        if let Err(mpsc::error::SendError(SpoolMsg::Event(event))) = self.tx.send(SpoolMsg::Event(event)).await {
            // Only after shutdown: the process is going away and nothing can take the event any more.
            self.counters.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            error!(event = ?event, "audit event not spooled: the gateway is shutting down");
        } else {
            self.counters.queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Lets the spool write everything queued so far, then stops it.
    pub(crate) async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(SpoolMsg::Stop(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// One group commit, kept in memory until shipped.
struct Chunk {
    /// The group's JSON lines, exactly as written to the spool.
    lines: Vec<u8>,
    events: usize,
    last_id: String,
}

/// What the writer and the shipper share. Offsets are positions in the spool file; a truncation
/// starts them again at 0.
#[derive(Default)]
struct State {
    /// Bytes of the spool made durable (complete lines only).
    len: u64,
    /// Bytes the control plane acknowledged (`acked <= mem_start <= len`).
    acked: u64,
    /// The id of the event ending at `acked`, if known (for the offset record).
    acked_id: Option<String>,
    /// Durable groups not handed to the shipper yet, contiguous, covering `mem_start..len`.
    mem: VecDeque<Chunk>,
    mem_start: u64,
    mem_bytes: usize,
}

impl State {
    /// True when the spool holds bytes and all of them are acknowledged.
    fn compactable(&self) -> bool {
        self.len > 0 && self.acked == self.len
    }
}

struct Shared {
    state: std::sync::Mutex<State>,
    /// Wakes the shipper: something became durable.
    ship: Notify,
    /// Wakes the writer: everything is acknowledged, the spool may be truncated.
    compact: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Control over the shipper task.
pub(crate) struct ShipperHandle {
    stop: watch::Sender<bool>,
    task: OnceHandle,
    abort: tokio::task::AbortHandle,
}

impl ShipperHandle {
    /// Asks the shipper to finish what it can within `grace`, then stops it.
    pub(crate) async fn stop(&self, grace: Duration) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task
            && tokio::time::timeout(grace, task).await.is_err()
        {
            warn!("the audit shipper did not finish within {grace:?}; the rest is sent after the next start");
            self.abort.abort();
        }
    }

    /// Stops the shipper at once (the spool keeps whatever it did not send).
    pub(crate) fn abort(&self) {
        self.abort.abort();
    }
}

/// Opens the spool and spawns the writer and shipper tasks.
pub(crate) async fn start(config: &GatewayConfig, http: reqwest::Client) -> anyhow::Result<(AuditSink, ShipperHandle)> {
    let url = format!("{}/v1/audit", config.control_url);
    start_in(&config.data_dir, &url, &config.worker_token, http).await
}

async fn start_in(
    data_dir: &Path,
    url: &str,
    token: &str,
    http: reqwest::Client,
) -> anyhow::Result<(AuditSink, ShipperHandle)> {
    let path = data_dir.join(SPOOL_FILE);
    let offset_path = data_dir.join(OFFSET_FILE);
    let (file, len, acked) = {
        let (path, offset_path) = (path.clone(), offset_path.clone());
        tokio::task::spawn_blocking(move || open_spool(&path, &offset_path)).await??
    };
    let url = reqwest::Url::parse(url).with_context(|| format!("the audit URL {url}"))?;
    let mut authorization = HeaderValue::from_str(&format!("Bearer {token}")).context("the worker token")?;
    authorization.set_sensitive(true);

    let shared = Arc::new(Shared {
        state: std::sync::Mutex::new(State {
            len,
            acked: acked.0,
            acked_id: acked.1,
            mem_start: len,
            ..State::default()
        }),
        ship: Notify::new(),
        compact: Notify::new(),
    });
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    tokio::spawn(run_writer(rx, file, Arc::clone(&shared)));

    let (stop, stopped) = watch::channel(false);
    let counters = Arc::new(AuditCounters::default());
    let shipper = Shipper {
        shared,
        stopped,
        path,
        offset_path,
        http,
        url,
        authorization,
        recorded: None,
        counters: Arc::clone(&counters),
    };
    let task: JoinHandle<()> = tokio::spawn(shipper.run());
    let handle = ShipperHandle { stop, abort: task.abort_handle(), task: std::sync::Mutex::new(Some(task)) };
    Ok((AuditSink { tx, counters }, handle))
}

/// Opens the spool for appending (ending a line torn by a crash) and finds the acknowledged offset.
/// Returns the file, its length and the acknowledged offset with its event id.
fn open_spool(path: &Path, offset_path: &Path) -> anyhow::Result<(File, u64, (u64, Option<String>))> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the audit spool {}", path.display()))?;
    let mut len = file.metadata()?.len();
    if len > 0 && last_byte(path, len)? != Some(b'\n') {
        // A crash tore the last write: end that line so the next event starts on a fresh one.
        file.write_all(b"\n")?;
        file.sync_data()?;
        len += 1;
    }
    let acked = match read_offset_record(offset_path) {
        Some((offset, _)) if offset == 0 || offset > len => (0, None),
        Some((offset, id)) => {
            if line_before(path, offset).ok().flatten().is_some_and(|line| event_id(&line).as_deref() == Some(&id)) {
                (offset, Some(id))
            } else {
                // The spool was truncated and refilled after that record: resend all of it (harmless).
                (0, None)
            }
        }
        None => (0, None),
    };
    Ok((file, len, acked))
}

fn last_byte(path: &Path, len: u64) -> std::io::Result<Option<u8>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(len - 1))?;
    let mut b = [0u8; 1];
    Ok(if f.read(&mut b)? == 1 { Some(b[0]) } else { None })
}

/// `"{offset} {event id}"`; `None` if missing or unreadable (then the whole spool is resent, which is
/// safe; skipping events would not be).
fn read_offset_record(path: &Path) -> Option<(u64, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (offset, id) = text.trim().split_once(' ')?;
    match offset.parse() {
        Ok(offset) if !id.is_empty() => Some((offset, id.to_owned())),
        _ => {
            warn!(file = %path.display(), "unreadable audit offset; resending the whole spool");
            None
        }
    }
}

/// The complete line of the spool that ends at `offset` (without its newline), if there is one.
fn line_before(path: &Path, offset: u64) -> std::io::Result<Option<Vec<u8>>> {
    let start = offset.saturating_sub(MAX_RECORD_LINE + 1);
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut tail = vec![0u8; usize::try_from(offset - start).unwrap_or(0)];
    f.read_exact(&mut tail)?;
    if tail.pop() != Some(b'\n') {
        return Ok(None);
    }
    Ok(match tail.iter().rposition(|&b| b == b'\n') {
        Some(nl) => Some(tail[nl + 1..].to_vec()),
        None if start == 0 => Some(tail),
        None => None,
    })
}

fn event_id(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    serde_json::from_slice::<Id>(line).ok().map(|i| i.id)
}

/// The writer: drains the channel into the spool, one group commit at a time.
async fn run_writer(mut rx: mpsc::Receiver<SpoolMsg>, file: File, shared: Arc<Shared>) {
    let mut file = Some(file);
    let mut backoff = Backoff::standard();
    loop {
        let first = tokio::select! {
            biased;
            msg = rx.recv() => match msg {
                Some(msg) => msg,
                None => return,
            },
            () = shared.compact.notified() => {
                // Idle and everything acknowledged: truncate now rather than before the next append.
                if shared.lock().compactable() {
                    let f = file.take().expect("the writer owns the spool");
                    let shared2 = Arc::clone(&shared);
                    file = Some(
                        tokio::task::spawn_blocking(move || {
                            let mut f = f;
                            if let Err(e) = commit(&mut f, &shared2, &[]) {
                                warn!("could not truncate the audit spool: {e}");
                            }
                            f
                        })
                        .await
                        .expect("the spool commit does not panic"),
                    );
                }
                continue;
            }
        };

        // Collect the group: wait for the window unless the group is full already.
        let mut lines = Vec::with_capacity(16 << 10);
        let mut events = 0usize;
        let mut last_id = String::new();
        let mut stop = None;
        let mut next = Some(first);
        let mut waited = false;
        loop {
            match next.take() {
                Some(SpoolMsg::Event(event)) => {
                    events += usize::from(append_line(&mut lines, &event));
                    last_id = event.id;
                }
                Some(SpoolMsg::Stop(ack)) => {
                    stop = Some(ack);
                    break;
                }
                None => {}
            }
            if events >= GROUP_MAX_EVENTS || lines.len() >= GROUP_MAX_BYTES {
                break;
            }
            next = rx.try_recv().ok();
            if next.is_none() {
                if waited || rx.is_closed() {
                    break;
                }
                waited = true;
                if rx.len() < GROUP_MAX_EVENTS {
                    tokio::time::sleep(GROUP_WINDOW).await;
                }
                next = rx.try_recv().ok();
                if next.is_none() {
                    break;
                }
            }
        }

        if events > 0 {
            let mut chunk = Some(Chunk { lines, events, last_id });
            // Never give up on a write: while it fails, the channel fills and requests wait.
            loop {
                let f = file.take().expect("the writer owns the spool");
                let (shared2, c) = (Arc::clone(&shared), chunk.take().expect("the group is kept until written"));
                let (f, c, result) = tokio::task::spawn_blocking(move || {
                    let mut f = f;
                    let result = commit(&mut f, &shared2, &c.lines);
                    (f, c, result)
                })
                .await
                .expect("the spool commit does not panic");
                file = Some(f);
                match result {
                    Ok(()) => {
                        let mut st = shared.lock();
                        st.len += c.lines.len() as u64;
                        if st.mem_bytes + c.lines.len() > MAX_MEMORY_BYTES {
                            // The control plane is not keeping up: the shipper reads these from the spool.
                            st.mem.clear();
                            st.mem_bytes = 0;
                            st.mem_start = st.len;
                        } else {
                            st.mem_bytes += c.lines.len();
                            st.mem.push_back(c);
                        }
                        drop(st);
                        backoff.reset();
                        shared.ship.notify_one();
                        break;
                    }
                    Err(e) => {
                        error!("could not write the audit spool: {e}; retrying");
                        chunk = Some(c);
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
        if let Some(ack) = stop {
            let _ = ack.send(());
            return;
        }
    }
}

/// Appends `event` as one JSON line. AuditEvent is plain data, so this cannot fail; if it ever did,
/// nothing of the event would be left in `lines`.
fn append_line(lines: &mut Vec<u8>, event: &AuditEvent) -> bool {
    let mark = lines.len();
    match serde_json::to_writer(&mut *lines, event) {
        Ok(()) => {
            lines.push(b'\n');
            true
        }
        Err(e) => {
            lines.truncate(mark);
            error!(event = ?event, "could not serialise an audit event: {e}");
            false
        }
    }
}

/// One group commit, in a blocking context: truncates the spool first if everything in it is
/// acknowledged, then appends `lines` with one write and one `fdatasync`. On failure, whatever part
/// was written is cut off again, so a retry does not glue a torn line to a whole one.
fn commit(file: &mut File, shared: &Shared, lines: &[u8]) -> std::io::Result<()> {
    // The shipper has nothing to do while everything is acknowledged, so the state cannot change
    // between this check and the truncation.
    let (truncate, base) = {
        let st = shared.lock();
        (st.compactable(), st.len)
    };
    if truncate {
        file.set_len(0)?;
        let mut st = shared.lock();
        *st = State::default();
    }
    if lines.is_empty() {
        return Ok(());
    }
    let base = if truncate { 0 } else { base };
    let result = file.write_all(lines).and_then(|()| file.sync_data());
    if result.is_err() {
        let _ = file.set_len(base);
    }
    result
}

/// Ships the spool to the control plane.
struct Shipper {
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
    path: PathBuf,
    offset_path: PathBuf,
    http: reqwest::Client,
    url: reqwest::Url,
    authorization: HeaderValue,
    /// When the acknowledged offset was last recorded.
    recorded: Option<Instant>,
    counters: Arc<AuditCounters>,
}

/// What the shipper does next.
enum Work {
    Idle,
    /// Groups handed over from memory, ending at `end`.
    Memory {
        chunks: Vec<Chunk>,
        end: u64,
    },
    /// `from..to` is only in the spool file.
    File {
        from: u64,
        to: u64,
    },
}

/// Complete lines read back from the spool.
struct Batch {
    events: Vec<AuditEvent>,
    /// Offset just past the last line read.
    end: u64,
    /// The id of the event on the last line read, if that line was readable.
    last_id: Option<String>,
    /// Unreadable (torn) lines skipped.
    skipped: u64,
}

impl Shipper {
    async fn run(mut self) {
        let mut backoff = Backoff::standard();
        loop {
            let work = self.next_work();
            let (body, end, last_id, events) = match work {
                Work::Idle => {
                    if *self.stopped.borrow() {
                        self.record_offset(true).await;
                        return;
                    }
                    tokio::select! {
                        () = self.shared.ship.notified() => {}
                        changed = self.stopped.changed() => {
                            // The handle is gone: nobody can ask for a graceful stop any more.
                            if changed.is_err() {
                                return;
                            }
                        }
                        () = tokio::time::sleep(IDLE_CHECK) => {}
                    }
                    continue;
                }
                Work::Memory { chunks, end } => {
                    let last_id = chunks.last().map(|c| c.last_id.clone());
                    let events = chunks.iter().map(|c| c.events as u64).sum();
                    (Some(body_of_lines(&chunks)), end, last_id, events)
                }
                Work::File { from, to } => {
                    let path = self.path.clone();
                    match tokio::task::spawn_blocking(move || read_batch(&path, from, to)).await {
                        Ok(Ok(batch)) if batch.events.is_empty() => {
                            self.counters.dropped.fetch_add(batch.skipped, std::sync::atomic::Ordering::Relaxed);
                            (None, batch.end, batch.last_id, 0)
                        }
                        Ok(Ok(batch)) => {
                            self.counters.dropped.fetch_add(batch.skipped, std::sync::atomic::Ordering::Relaxed);
                            let body = serde_json::to_vec(&serde_json::json!({ "events": batch.events }))
                                .expect("audit events serialise");
                            (Some(Bytes::from(body)), batch.end, batch.last_id, batch.events.len() as u64)
                        }
                        failed => {
                            let why = failed
                                .map_or_else(|e| e.to_string(), |r| r.err().map(|e| e.to_string()).unwrap_or_default());
                            error!("could not read the audit spool {}: {why}", self.path.display());
                            tokio::time::sleep(backoff.next_delay()).await;
                            continue;
                        }
                    }
                }
            };
            if let Some(body) = body {
                // Retry the same batch until it is taken (from memory, so nothing is read again).
                while let Err(e) = self.ship(body.clone()).await {
                    if *self.stopped.borrow() {
                        // Shutting down: the spool keeps the batch for the next start.
                        self.record_offset(true).await;
                        return;
                    }
                    warn!("could not ship audit events to the control plane: {e}; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
            backoff.reset();
            self.counters.shipped.fetch_add(events, std::sync::atomic::Ordering::Relaxed);
            self.acknowledge(end, last_id).await;
        }
    }

    /// Takes the next batch: from memory when the acknowledged offset reaches it, else from the file.
    fn next_work(&self) -> Work {
        let mut st = self.shared.lock();
        if st.acked >= st.len {
            return Work::Idle;
        }
        if st.acked < st.mem_start {
            return Work::File { from: st.acked, to: st.mem_start };
        }
        let mut chunks = Vec::new();
        let (mut events, mut bytes) = (0usize, 0usize);
        while let Some(c) = st.mem.front() {
            if !chunks.is_empty() && (events + c.events > MAX_BATCH_EVENTS || bytes + c.lines.len() > MAX_BATCH_BYTES) {
                break;
            }
            events += c.events;
            bytes += c.lines.len();
            chunks.push(st.mem.pop_front().expect("front exists"));
        }
        st.mem_start += bytes as u64;
        st.mem_bytes -= bytes;
        Work::Memory { chunks, end: st.mem_start }
    }

    /// Records that everything before `end` is acknowledged. When that is all of the spool, the
    /// writer truncates it; otherwise the offset is recorded now and then.
    async fn acknowledge(&mut self, end: u64, last_id: Option<String>) {
        let compactable = {
            let mut st = self.shared.lock();
            st.acked = end;
            st.acked_id = last_id;
            st.compactable()
        };
        if compactable {
            self.shared.compact.notify_one();
        } else {
            self.record_offset(false).await;
        }
    }

    /// Writes the acknowledged offset to the offset file, at most once per [`OFFSET_RECORD_INTERVAL`]
    /// unless `now`. No `fsync`, on purpose: a lost or stale record only makes the next start resend
    /// events that were already acknowledged, and ingest is idempotent on the event id.
    async fn record_offset(&mut self, now: bool) {
        if !now && self.recorded.is_some_and(|t| t.elapsed() < OFFSET_RECORD_INTERVAL) {
            return;
        }
        let record = {
            let st = self.shared.lock();
            match &st.acked_id {
                Some(id) if st.acked > 0 => format!("{} {id}\n", st.acked),
                _ => return,
            }
        };
        self.recorded = Some(Instant::now());
        let path = self.offset_path.clone();
        if !matches!(tokio::task::spawn_blocking(move || std::fs::write(&path, record)).await, Ok(Ok(()))) {
            warn!("could not record the audit offset in {}", self.offset_path.display());
        }
    }

    async fn ship(&self, body: Bytes) -> Result<(), String> {
        let response = self
            .http
            .post(self.url.clone())
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .header(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .timeout(SHIP_TIMEOUT)
            .body(body)
            .send()
            .await
            .map_err(|e| crate::bundles::describe(&e))?;
        let status = response.status();
        // Read the (small) answer so the connection goes back to the pool.
        let _ = response.bytes().await;
        if status.is_success() { Ok(()) } else { Err(format!("the control plane answered HTTP {}", status.as_u16())) }
    }
}

/// `{"events":[…]}` from groups of JSON lines: the lines are the array's elements as they are (a
/// serialised event never holds a raw newline, so every newline is a separator).
fn body_of_lines(chunks: &[Chunk]) -> Bytes {
    const HEAD: &[u8] = b"{\"events\":[";
    let size: usize = chunks.iter().map(|c| c.lines.len()).sum();
    let mut body = Vec::with_capacity(HEAD.len() + size + 2);
    body.extend_from_slice(HEAD);
    for c in chunks {
        body.extend_from_slice(&c.lines);
    }
    for b in &mut body[HEAD.len()..] {
        if *b == b'\n' {
            *b = b',';
        }
    }
    if body.last() == Some(&b',') {
        body.pop();
    }
    body.extend_from_slice(b"]}");
    Bytes::from(body)
}

/// Reads up to a batch of complete lines from `offset`, never past `len` (recovery path only).
fn read_batch(path: &Path, offset: u64, len: u64) -> std::io::Result<Batch> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(file.take(len - offset));
    let mut events = Vec::new();
    let mut end = offset;
    let mut last_id = None;
    let mut skipped = 0;
    let mut line = Vec::new();
    while events.len() < MAX_BATCH_EVENTS && end - offset < MAX_BATCH_BYTES as u64 {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        end += n as u64;
        match serde_json::from_slice::<AuditEvent>(&line) {
            Ok(event) => {
                last_id = Some(event.id.clone());
                events.push(event);
            }
            // Only a line torn by a crash can be unreadable; keeping it would block the whole spool.
            Err(e) => {
                last_id = None;
                skipped += 1;
                warn!("skipping an unreadable audit spool line at offset {}: {e}", end - n as u64);
            }
        }
    }
    Ok(Batch { events, end, last_id, skipped })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use gatehouse_core::audit::Outcome;

    use super::*;

    fn event(id: &str) -> AuditEvent {
        AuditEvent {
            id: id.into(),
            time_ms: 1,
            tenant: "acme".into(),
            user_id: None,
            user_email: None,
            client_name: Some("a \"client\"\nwith a newline".into()),
            client_version: None,
            session_id: None,
            virtual_server: "dev".into(),
            upstream_server: None,
            method: "ping".into(),
            tool: None,
            exposed_tool: None,
            outcome: Outcome::Allowed,
            reason: None,
            latency_us: 1,
            bundle_revision: None,
            rule_id: None,
            findings: vec![],
        }
    }

    #[test]
    fn batches_stop_at_torn_lines_and_skip_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SPOOL_FILE);
        let mut text = String::new();
        for id in ["a", "b"] {
            text.push_str(&serde_json::to_string(&event(id)).unwrap());
            text.push('\n');
        }
        text.push_str("garbage\n");
        let whole = text.len() as u64;
        text.push_str("{\"id\":\"torn");
        std::fs::write(&path, &text).unwrap();
        let batch = read_batch(&path, 0, text.len() as u64).unwrap();
        assert_eq!(batch.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(batch.end, whole);
        assert_eq!(batch.last_id, None, "the last line read was garbage");
    }

    #[test]
    fn a_body_of_lines_is_the_events_array() {
        let mut lines = Vec::new();
        for id in ["a", "b", "c"] {
            serde_json::to_writer(&mut lines, &event(id)).unwrap();
            lines.push(b'\n');
        }
        let (one, two) = lines.split_at(lines.iter().position(|&b| b == b'\n').unwrap() + 1);
        let chunks = [
            Chunk { lines: one.to_vec(), events: 1, last_id: "a".into() },
            Chunk { lines: two.to_vec(), events: 2, last_id: "c".into() },
        ];
        let body: serde_json::Value = serde_json::from_slice(&body_of_lines(&chunks)).unwrap();
        let events: Vec<AuditEvent> = serde_json::from_value(body["events"].clone()).unwrap();
        assert_eq!(events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(events[1].client_name, event("b").client_name);
    }

    /// A fake control plane: records every event POSTed, refuses while `refuse` is set.
    #[derive(Default)]
    struct Cp {
        events: Mutex<Vec<String>>,
        posts: AtomicUsize,
        refuse: std::sync::atomic::AtomicBool,
    }

    async fn fake_control_plane() -> (Arc<Cp>, String) {
        use axum::extract::State;
        async fn audit(State(cp): State<Arc<Cp>>, body: axum::body::Bytes) -> axum::http::StatusCode {
            cp.posts.fetch_add(1, Ordering::SeqCst);
            if cp.refuse.load(Ordering::SeqCst) {
                return axum::http::StatusCode::SERVICE_UNAVAILABLE;
            }
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let events: Vec<AuditEvent> = serde_json::from_value(body["events"].clone()).unwrap();
            cp.events.lock().unwrap().extend(events.into_iter().map(|e| e.id));
            axum::http::StatusCode::OK
        }
        let cp = Arc::new(Cp::default());
        let app = axum::Router::new().route("/v1/audit", axum::routing::post(audit)).with_state(Arc::clone(&cp));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (cp, url)
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn spool_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join(SPOOL_FILE)).unwrap().len()
    }

    #[tokio::test]
    async fn unacknowledged_events_are_resent_once_after_a_restart_and_the_spool_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let (cp, url) = fake_control_plane().await;
        let url = format!("{url}/v1/audit");
        let http = reqwest::Client::new();

        // First run: "a" and "b" are acknowledged; then the control plane refuses "c" and "d", which
        // stay in the spool, and the process ends (the shipper is aborted, as by a crash).
        let (sink, shipper) = start_in(dir.path(), &url, "t", http.clone()).await.unwrap();
        sink.emit(event("a")).await;
        sink.emit(event("b")).await;
        eventually("a and b", || cp.events.lock().unwrap().len() == 2).await;
        eventually("a truncated spool", || spool_len(dir.path()) == 0).await;
        cp.refuse.store(true, Ordering::SeqCst);
        let posts = cp.posts.load(Ordering::SeqCst);
        sink.emit(event("c")).await;
        sink.emit(event("d")).await;
        eventually("a refused post", || cp.posts.load(Ordering::SeqCst) > posts).await;
        sink.close().await;
        shipper.abort();
        assert!(spool_len(dir.path()) > 0, "c and d are in the spool");

        // Second run: c and d are sent once more (from the file), a and b not again; then the spool
        // is truncated, and new events go out from memory.
        cp.refuse.store(false, Ordering::SeqCst);
        let (sink, shipper) = start_in(dir.path(), &url, "t", http.clone()).await.unwrap();
        eventually("c and d", || cp.events.lock().unwrap().len() == 4).await;
        eventually("a truncated spool", || spool_len(dir.path()) == 0).await;
        sink.emit(event("e")).await;
        eventually("e", || cp.events.lock().unwrap().len() == 5).await;
        eventually("a truncated spool", || spool_len(dir.path()) == 0).await;
        sink.close().await;
        shipper.stop(Duration::from_secs(5)).await;

        // Third run: nothing is left to resend.
        let (_sink, shipper) = start_in(dir.path(), &url, "t", http).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        shipper.stop(Duration::from_secs(5)).await;
        assert_eq!(*cp.events.lock().unwrap(), ["a", "b", "c", "d", "e"], "each event exactly once");
    }

    #[tokio::test]
    async fn a_recorded_offset_skips_what_was_acknowledged_before_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let (cp, url) = fake_control_plane().await;
        let url = format!("{url}/v1/audit");
        let http = reqwest::Client::new();
        // A spool of three events of which the first two were acknowledged (offset record), and a
        // stale record (from before a truncation) that must not be trusted.
        let mut text = Vec::new();
        let mut after_b = 0;
        for id in ["a", "b", "c"] {
            serde_json::to_writer(&mut text, &event(id)).unwrap();
            text.push(b'\n');
            if id == "b" {
                after_b = text.len();
            }
        }
        std::fs::write(dir.path().join(SPOOL_FILE), &text).unwrap();
        std::fs::write(dir.path().join(OFFSET_FILE), format!("{after_b} b\n")).unwrap();
        let (sink, shipper) = start_in(dir.path(), &url, "t", http.clone()).await.unwrap();
        eventually("c", || cp.events.lock().unwrap().len() == 1).await;
        sink.close().await;
        shipper.stop(Duration::from_secs(5)).await;
        assert_eq!(*cp.events.lock().unwrap(), ["c"]);

        std::fs::write(dir.path().join(SPOOL_FILE), &text).unwrap();
        std::fs::write(dir.path().join(OFFSET_FILE), format!("{after_b} x\n")).unwrap();
        let (_sink, shipper) = start_in(dir.path(), &url, "t", http).await.unwrap();
        eventually("a, b, c again", || cp.events.lock().unwrap().len() == 4).await;
        shipper.stop(Duration::from_secs(5)).await;
        assert_eq!(*cp.events.lock().unwrap(), ["c", "a", "b", "c"]);
    }
}
