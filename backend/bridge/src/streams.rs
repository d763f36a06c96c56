//! Where the messages of one bridged upstream session go, and the event logs that make its streams
//! resumable with `Last-Event-ID`.
//!
//! Every answer stream of a session (one per request, plus the standalone GET stream) has a number
//! `s`; its events carry the ids `"{s}-{n}"`, `n` counting from 1. Every event is logged before it is
//! handed to the stream's reader, so a reader that went away (a dropped connection, a gateway worker
//! that restarted its stream) can come back with `GET` and `Last-Event-ID: s-n` and get what followed,
//! then the rest live. A request whose reader went away stays in flight for the resume window: its
//! progress and its answer are logged for it, not handed to another stream. After the window (or
//! once a finished stream's window has passed) it is forgotten, as before resumption existed.
//!
//! Memory: the logs of a session hold at most [`LOG_BYTES`] of messages (serialized size); past
//! that the oldest events of the oldest streams are dropped first, and a resume that asks for a
//! dropped event gets what is left.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

/// Bytes of logged messages a session keeps for resumption.
pub(crate) const LOG_BYTES: usize = 1 << 20;
/// Streams a session keeps (with or without a reader); opening one more forgets the oldest that
/// has no reader.
pub(crate) const MAX_STREAMS: usize = 1024;
/// Routing a message prunes at most this often.
const PRUNE_GAP: Duration = Duration::from_secs(1);
/// Messages buffered towards one reader.
pub(crate) const STREAM_BUFFER: usize = 64;

/// One event for a reader: its id and the message.
pub(crate) type Event = (String, Value);

/// A request in flight: the stream its messages go to.
pub(crate) struct Waiter {
    pub stream: u64,
    /// Order of arrival, for "the newest request in flight".
    pub seq: u64,
    pub progress_token: Option<String>,
}

/// The log and the reader of one stream.
struct Log {
    events: VecDeque<(u64, Value, usize)>,
    next: u64,
    reader: Option<mpsc::Sender<Event>>,
    /// Counts the readers the stream has had, so a reader that leaves after another took over
    /// does not unset the new one.
    generation: u64,
    /// The request's answer was logged: the stream ends after it.
    finished: bool,
    /// Since when it has had no reader, or has been finished: the resume window runs from then.
    quiet_since: Option<Instant>,
}

impl Log {
    fn new(reader: mpsc::Sender<Event>) -> Self {
        Self {
            events: VecDeque::new(),
            next: 1,
            reader: Some(reader),
            generation: 0,
            finished: false,
            quiet_since: None,
        }
    }

    fn live(&self) -> bool {
        self.reader.as_ref().is_some_and(|r| !r.is_closed())
    }
}

/// Which reader of which stream: what a reader reports when it goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reader {
    pub stream: u64,
    generation: u64,
}

/// What happened to a resume request.
pub(crate) enum Resumed {
    /// The reader gets the logged events after the given one, then the live ones: the receiver,
    /// whether it is the GET stream, and the [`Reader`] to drop when it goes.
    Stream(mpsc::Receiver<Event>, bool, Reader),
    /// No such stream (never existed, or forgotten after the resume window).
    Unknown,
}

/// The routes of one upstream session.
#[derive(Default)]
pub(crate) struct Routes {
    /// Requests in flight: id (as JSON text) → its waiter.
    pub pending: HashMap<String, Waiter>,
    /// Progress token (as JSON text) → request id.
    pub progress: HashMap<String, String>,
    /// The standalone GET stream, if one was opened.
    pub get: Option<u64>,
    /// Messages for a GET stream while none was ever opened.
    pub backlog: VecDeque<Value>,
    pub seq: u64,
    pub closed: bool,
    streams: HashMap<u64, Log>,
    next_stream: u64,
    logged_bytes: usize,
    pruned_at: Option<Instant>,
}

impl Routes {
    /// Opens a new stream read by `reader`.
    pub fn open(&mut self, reader: mpsc::Sender<Event>) -> Reader {
        if self.streams.len() >= MAX_STREAMS
            && let Some(oldest) = self.streams.iter().filter(|(_, l)| !l.live()).map(|(s, _)| *s).min()
        {
            self.forget(oldest);
        }
        self.next_stream += 1;
        self.streams.insert(self.next_stream, Log::new(reader));
        Reader { stream: self.next_stream, generation: 0 }
    }

    /// Whether stream `s` has a connected reader.
    pub fn live(&self, s: u64) -> bool {
        self.streams.get(&s).is_some_and(Log::live)
    }

    /// Logs `message` on stream `s` (its last when `last`); returns where to hand it now, if the
    /// stream has a reader.
    pub fn push(&mut self, s: u64, message: Value, last: bool) -> Option<(mpsc::Sender<Event>, Event)> {
        let log = self.streams.get_mut(&s)?;
        let n = log.next;
        log.next += 1;
        let size = message.to_string().len();
        log.events.push_back((n, message.clone(), size));
        if last {
            log.finished = true;
            log.quiet_since.get_or_insert_with(Instant::now);
        }
        let out = log.reader.clone().filter(|r| !r.is_closed()).map(|r| (r, (format!("{s}-{n}"), message)));
        self.logged_bytes += size;
        self.trim();
        out
    }

    /// Marks stream `s` as having lost its reader (a send to it failed).
    pub fn reader_gone(&mut self, s: u64) {
        if let Some(log) = self.streams.get_mut(&s) {
            log.reader = None;
            log.quiet_since.get_or_insert_with(Instant::now);
        }
    }

    /// `reader` went away (its response body was dropped): unless another reader took over since,
    /// the stream's resume window starts now.
    pub fn left(&mut self, reader: Reader) {
        if self.streams.get(&reader.stream).is_some_and(|l| l.generation == reader.generation) {
            self.reader_gone(reader.stream);
        }
    }

    /// A new reader for the stream of event `last_event_id` (`"s-n"`): the logged events after it,
    /// then the live ones. The bool says whether the stream is the standalone GET stream.
    pub fn resume(&mut self, last_event_id: &str) -> Resumed {
        let Some((s, n)) = last_event_id.split_once('-').and_then(|(s, n)| Some((s.parse().ok()?, n.parse().ok()?)))
        else {
            return Resumed::Unknown;
        };
        let is_get = self.get == Some(s);
        let Some(log) = self.streams.get_mut(&s) else { return Resumed::Unknown };
        let (tx, rx) = mpsc::channel(log.events.len() + STREAM_BUFFER);
        for (m, message, _) in log.events.iter().filter(|(m, ..)| *m > n) {
            // The channel has room for every logged event.
            let _ = tx.try_send((format!("{s}-{m}"), message.clone()));
        }
        if !log.finished {
            log.reader = Some(tx);
            log.quiet_since = None;
        }
        log.generation += 1;
        Resumed::Stream(rx, is_get, Reader { stream: s, generation: log.generation })
    }

    /// [`Routes::prune`], unless that ran less than a second ago (it looks at every stream).
    pub fn prune_now_and_then(&mut self, window: Duration) {
        if self.pruned_at.is_none_or(|t| t.elapsed() >= PRUNE_GAP) {
            self.prune(window);
        }
    }

    fn forget(&mut self, s: u64) {
        if let Some(log) = self.streams.remove(&s) {
            self.logged_bytes -= log.events.iter().map(|(.., size)| size).sum::<usize>();
        }
    }

    /// Forgets what the resume window has passed for: finished streams, streams without a reader,
    /// and requests whose stream that was.
    pub fn prune(&mut self, window: Duration) {
        self.pruned_at = Some(Instant::now());
        for log in self.streams.values_mut() {
            if !log.live() {
                log.quiet_since.get_or_insert_with(Instant::now);
            }
        }
        let expired: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, l)| !l.live() && l.quiet_since.is_some_and(|t| t.elapsed() >= window))
            .map(|(s, _)| *s)
            .collect();
        for s in expired {
            self.forget(s);
        }
        let gone: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, w)| !self.streams.contains_key(&w.stream))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(t) = self.pending.remove(&id).and_then(|w| w.progress_token) {
                self.progress.remove(&t);
            }
        }
        if self.get.is_some_and(|s| !self.streams.contains_key(&s)) {
            self.get = None;
        }
    }

    /// Whether any stream still has a reader or is within its resume window.
    pub fn any_stream(&self) -> bool {
        !self.streams.is_empty()
    }

    /// Drops the oldest events of the oldest streams until the logs fit [`LOG_BYTES`].
    fn trim(&mut self) {
        while self.logged_bytes > LOG_BYTES {
            let Some(oldest) = self.streams.iter().filter(|(_, l)| !l.events.is_empty()).map(|(s, _)| *s).min() else {
                return;
            };
            if let Some((.., size)) = self.streams.get_mut(&oldest).and_then(|l| l.events.pop_front()) {
                self.logged_bytes -= size;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_reader_that_comes_back_gets_what_followed_its_last_event() {
        let mut r = Routes::default();
        let (tx, mut rx) = mpsc::channel(8);
        let s = r.open(tx).stream;
        let (reader, first) = r.push(s, json!({"method": "a"}), false).unwrap();
        assert_eq!(first.0, format!("{s}-1"));
        drop((reader, rx.try_recv()));
        drop(rx);
        assert!(r.push(s, json!({"method": "b"}), false).is_none(), "no reader: logged only");
        r.reader_gone(s);
        let Resumed::Stream(mut again, false, second) = r.resume(&format!("{s}-1")) else { panic!("not resumed") };
        assert_eq!(again.try_recv().unwrap(), (format!("{s}-2"), json!({"method": "b"})));
        r.left(Reader { stream: s, generation: 0 });
        assert!(r.live(s), "the first reader leaving late does not unset the second");
        let (_, live) = r.push(s, json!({"id": 1, "result": {}}), true).unwrap();
        assert_eq!(live.0, format!("{s}-3"), "then live, numbered on");
        r.left(second);
        assert!(!r.live(s));
        assert!(matches!(r.resume("99-1"), Resumed::Unknown));
        assert!(matches!(r.resume("garbage"), Resumed::Unknown));
    }

    #[test]
    fn the_window_forgets_streams_without_readers_and_their_requests() {
        let mut r = Routes::default();
        let (tx, rx) = mpsc::channel(8);
        let s = r.open(tx).stream;
        r.pending.insert("1".into(), Waiter { stream: s, seq: 1, progress_token: Some("\"p\"".into()) });
        r.progress.insert("\"p\"".into(), "1".into());
        r.prune(Duration::ZERO);
        assert!(r.pending.contains_key("1"), "a stream with a reader stays");
        drop(rx);
        r.prune(Duration::from_secs(60));
        assert!(r.pending.contains_key("1"), "within the window it stays");
        r.prune(Duration::ZERO);
        assert!(r.pending.is_empty() && r.progress.is_empty() && !r.any_stream());
    }

    #[test]
    fn streams_are_bounded_and_the_oldest_without_a_reader_goes_first() {
        let mut r = Routes::default();
        let (live, _rx) = mpsc::channel(1);
        let first = r.open(live).stream;
        let (gone, rx) = mpsc::channel(1);
        drop(rx);
        let second = r.open(gone.clone()).stream;
        for _ in 2..MAX_STREAMS {
            r.open(gone.clone());
        }
        assert_eq!(r.streams.len(), MAX_STREAMS);
        r.open(gone);
        assert_eq!(r.streams.len(), MAX_STREAMS);
        assert!(r.live(first) && !r.streams.contains_key(&second), "the live one stays, the oldest readerless goes");
    }

    #[test]
    fn logs_are_bounded_oldest_first() {
        let mut r = Routes::default();
        let (tx, _rx) = mpsc::channel(1);
        let s = r.open(tx).stream;
        let big = json!({"method": "x", "params": {"pad": "p".repeat(100_000)}});
        for _ in 0..30 {
            r.push(s, big.clone(), false);
        }
        assert!(r.logged_bytes <= LOG_BYTES);
        let Resumed::Stream(mut rx, ..) = r.resume(&format!("{s}-0")) else { panic!() };
        let first = rx.try_recv().unwrap().0;
        assert_ne!(first, format!("{s}-1"), "the oldest were dropped");
    }
}
