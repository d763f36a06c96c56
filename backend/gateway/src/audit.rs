//! The audit pipeline: request path → bounded channel → spool file → shipper → control plane.
//!
//! * The request path hands each event to a bounded channel and awaits room in it: when the disk is
//!   slow the requests slow down, but no event is dropped.
//! * The spool task appends events as JSON lines to `{data_dir}/audit-spool.jsonl`, coalescing whatever
//!   is queued into one write and one `fdatasync`.
//! * The shipper reads complete lines from the acknowledged offset on, POSTs them in batches to
//!   `/v1/audit`, and only after a 2xx records the new offset in `{data_dir}/audit-spool.offset`
//!   (temporary file + rename). A crash between the POST and that record resends the batch, which is
//!   harmless because ingest is idempotent on the event id. Once everything is acknowledged the spool
//!   is truncated, so it only grows while the control plane is away.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gatehouse_core::audit::AuditEvent;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::{Mutex, Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, warn};

use crate::{Backoff, GatewayConfig, OnceHandle};

const SPOOL_FILE: &str = "audit-spool.jsonl";
const OFFSET_FILE: &str = "audit-spool.offset";
/// Events the request path may queue ahead of the spool writer before it waits.
const CHANNEL_CAPACITY: usize = 4096;
/// Upper bounds of one shipped batch.
const MAX_BATCH_EVENTS: usize = 500;
const MAX_BATCH_BYTES: u64 = 1 << 20;
/// Upper bound of one spool write, so a burst is written in bounded pieces.
const MAX_WRITE_BYTES: usize = 1 << 20;
/// The shipper looks at the spool at least this often, even without a wake-up.
const IDLE_CHECK: Duration = Duration::from_secs(30);
const SHIP_TIMEOUT: Duration = Duration::from_secs(30);

enum SpoolMsg {
    Event(Box<AuditEvent>),
    /// Write everything queued before this message, then stop and acknowledge.
    Stop(oneshot::Sender<()>),
}

/// The request path's end of the pipeline.
#[derive(Clone)]
pub(crate) struct AuditSink {
    tx: mpsc::Sender<SpoolMsg>,
}

impl AuditSink {
    /// Queues one event, waiting for room (back-pressure) rather than dropping it.
    pub(crate) async fn emit(&self, event: AuditEvent) {
        if let Err(mpsc::error::SendError(SpoolMsg::Event(event))) =
            self.tx.send(SpoolMsg::Event(Box::new(event))).await
        {
            // Only after shutdown: the process is going away and nothing can take the event any more.
            error!(event = ?event, "audit event not spooled: the gateway is shutting down");
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

/// The spool file as the writer knows it. `len` only covers complete writes, so a reader that stops at
/// `len` never sees half a line.
struct Spool {
    file: tokio::fs::File,
    len: u64,
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

/// Opens the spool and spawns the spool and shipper tasks.
pub(crate) async fn start(config: &GatewayConfig, http: reqwest::Client) -> anyhow::Result<(AuditSink, ShipperHandle)> {
    let path = config.data_dir.join(SPOOL_FILE);
    let offset_path = config.data_dir.join(OFFSET_FILE);
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
        .with_context(|| format!("opening the audit spool {}", path.display()))?;
    let mut len = file.metadata().await?.len();
    if len > 0 && last_byte(&path, len).await? != Some(b'\n') {
        // A crash tore the last write: end that line so the next event starts on a fresh one.
        file.write_all(b"\n").await?;
        file.flush().await?;
        len += 1;
    }
    let offset = read_offset(&offset_path).await.min(len);

    let spool = Arc::new(Mutex::new(Spool { file, len }));
    let wake = Arc::new(Notify::new());
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    tokio::spawn(run_spool(rx, Arc::clone(&spool), Arc::clone(&wake)));

    let (stop, stopped) = watch::channel(false);
    let shipper = Shipper {
        spool,
        wake,
        stopped,
        path,
        offset_path,
        http,
        url: format!("{}/v1/audit", config.control_url),
        token: config.worker_token.clone(),
    };
    let task: JoinHandle<()> = tokio::spawn(shipper.run(offset));
    let handle = ShipperHandle { stop, abort: task.abort_handle(), task: std::sync::Mutex::new(Some(task)) };
    Ok((AuditSink { tx }, handle))
}

async fn last_byte(path: &Path, len: u64) -> std::io::Result<Option<u8>> {
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(SeekFrom::Start(len - 1)).await?;
    let mut b = [0u8; 1];
    Ok(if f.read(&mut b).await? == 1 { Some(b[0]) } else { None })
}

async fn read_offset(path: &Path) -> u64 {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            // Resending from the start is safe (idempotent ingest); skipping events is not.
            warn!(file = %path.display(), "unreadable audit offset; resending the whole spool");
            0
        }),
        Err(_) => 0,
    }
}

/// The spool writer: drains the channel into the spool file.
async fn run_spool(mut rx: mpsc::Receiver<SpoolMsg>, spool: Arc<Mutex<Spool>>, wake: Arc<Notify>) {
    let mut buf = Vec::new();
    let mut backoff = Backoff::standard();
    while let Some(first) = rx.recv().await {
        let mut stop = None;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                SpoolMsg::Event(event) => {
                    // AuditEvent is plain data: serialising it cannot fail.
                    if serde_json::to_writer(&mut buf, &event).is_ok() {
                        buf.push(b'\n');
                    }
                }
                SpoolMsg::Stop(ack) => {
                    stop = Some(ack);
                    break;
                }
            }
            if buf.len() < MAX_WRITE_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            // Never give up on a write: while it fails, the channel fills and requests wait.
            while let Err(e) = append(&spool, &buf).await {
                error!("could not write the audit spool: {e}; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            backoff.reset();
            buf.clear();
            wake.notify_one();
        }
        if let Some(ack) = stop {
            let _ = ack.send(());
            return;
        }
    }
}

async fn append(spool: &Mutex<Spool>, bytes: &[u8]) -> std::io::Result<()> {
    let mut s = spool.lock().await;
    let result = async {
        s.file.write_all(bytes).await?;
        s.file.flush().await?;
        s.file.sync_data().await
    }
    .await;
    match result {
        Ok(()) => {
            s.len += bytes.len() as u64;
            Ok(())
        }
        Err(e) => {
            // Cut off whatever part was written, so the retry does not glue a torn line to a whole one.
            let len = s.len;
            let _ = s.file.set_len(len).await;
            Err(e)
        }
    }
}

/// Ships the spool to the control plane.
struct Shipper {
    spool: Arc<Mutex<Spool>>,
    wake: Arc<Notify>,
    stopped: watch::Receiver<bool>,
    path: PathBuf,
    offset_path: PathBuf,
    http: reqwest::Client,
    url: String,
    token: String,
}

/// Complete lines read from the spool.
struct Batch {
    events: Vec<AuditEvent>,
    /// Offset just past the last line read.
    end: u64,
}

impl Shipper {
    async fn run(mut self, mut offset: u64) {
        let mut backoff = Backoff::standard();
        loop {
            let len = self.spool.lock().await.len;
            if offset >= len {
                if *self.stopped.borrow() {
                    return;
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    changed = self.stopped.changed() => {
                        // The handle is gone: nobody can ask for a graceful stop any more.
                        if changed.is_err() {
                            return;
                        }
                    }
                    _ = tokio::time::sleep(IDLE_CHECK) => {}
                }
                continue;
            }
            let batch = match read_batch(&self.path, offset, len).await {
                Ok(batch) => batch,
                Err(e) => {
                    error!("could not read the audit spool {}: {e}", self.path.display());
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            if !batch.events.is_empty()
                && let Err(e) = self.ship(&batch.events).await
            {
                if *self.stopped.borrow() {
                    // Shutting down: the spool keeps the batch for the next start.
                    return;
                }
                warn!("could not ship {} audit events to the control plane: {e}; retrying", batch.events.len());
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            backoff.reset();
            offset = self.acknowledge(batch.end).await;
        }
    }

    /// Records that everything before `end` is acknowledged; truncates the spool when that is all of
    /// it. Returns the new offset.
    async fn acknowledge(&self, end: u64) -> u64 {
        let mut spool = self.spool.lock().await;
        if end == spool.len {
            // Truncate first, then record offset 0, both under the writer's lock. A crash in between
            // leaves an offset past the end, which the next start clamps to 0: nothing lost or resent.
            match spool.file.set_len(0).await {
                Ok(()) => {
                    spool.len = 0;
                    self.write_offset(0).await;
                    return 0;
                }
                Err(e) => warn!("could not truncate the audit spool: {e}"),
            }
        }
        drop(spool);
        self.write_offset(end).await;
        end
    }

    async fn write_offset(&self, offset: u64) {
        let path = self.offset_path.clone();
        let result =
            tokio::task::spawn_blocking(move || crate::bundles::write_atomically(&path, offset.to_string().as_bytes()))
                .await;
        if !matches!(result, Ok(Ok(()))) {
            // The in-memory offset is right; after a restart the batch is resent, which is harmless.
            warn!("could not record the audit offset in {}", self.offset_path.display());
        }
    }

    async fn ship(&self, events: &[AuditEvent]) -> Result<(), String> {
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .timeout(SHIP_TIMEOUT)
            .json(&serde_json::json!({ "events": events }))
            .send()
            .await
            .map_err(|e| crate::bundles::describe(&e))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("the control plane answered HTTP {}", response.status().as_u16()))
        }
    }
}

/// Reads up to a batch of complete lines from `offset`, never past `len`.
async fn read_batch(path: &Path, offset: u64, len: u64) -> std::io::Result<Batch> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(SeekFrom::Start(offset)).await?;
    let mut reader = BufReader::new(file.take(len - offset));
    let mut events = Vec::new();
    let mut end = offset;
    let mut line = Vec::new();
    while events.len() < MAX_BATCH_EVENTS && end - offset < MAX_BATCH_BYTES {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).await?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        end += n as u64;
        match serde_json::from_slice::<AuditEvent>(&line) {
            Ok(event) => events.push(event),
            // Only a line torn by a crash can be unreadable; keeping it would block the whole spool.
            Err(e) => warn!("skipping an unreadable audit spool line at offset {}: {e}", end - n as u64),
        }
    }
    Ok(Batch { events, end })
}

#[cfg(test)]
mod tests {
    use gatehouse_core::audit::Outcome;

    use super::*;

    fn event(id: &str) -> AuditEvent {
        AuditEvent {
            id: id.into(),
            time_ms: 1,
            tenant: "acme".into(),
            user_id: None,
            user_email: None,
            client_name: None,
            client_version: None,
            session_id: None,
            virtual_server: "dev".into(),
            upstream_server: None,
            method: "ping".into(),
            tool: None,
            outcome: Outcome::Allowed,
            reason: None,
            latency_us: 1,
            bundle_revision: None,
        }
    }

    #[tokio::test]
    async fn batches_stop_at_torn_lines_and_skip_garbage() {
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
        tokio::fs::write(&path, &text).await.unwrap();
        let batch = read_batch(&path, 0, text.len() as u64).await.unwrap();
        assert_eq!(batch.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(batch.end, whole);
    }
}
