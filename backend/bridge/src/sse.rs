//! A minimal Server-Sent Events parser: enough to read the JSON-RPC messages an MCP server streams
//! (the `data` of each event) with the `id` and `retry` fields that resumability needs, and the
//! `event` field, with which the legacy HTTP+SSE transport announces its POST endpoint. Used by the
//! bridge and by the gateway's Streamable HTTP client.

/// An event grew past the parser's limit.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

/// One complete event.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event` field (the event's type); `None` for the default type, `message`.
    pub kind: Option<String>,
    /// The `id` field, if the event had one.
    pub id: Option<String>,
    /// The `data` lines, joined with `\n`; empty for an event without data (a priming event).
    pub data: String,
    /// The `retry` field (milliseconds), if any.
    pub retry: Option<u64>,
}

impl Event {
    /// The event's type: its `event` field, `message` without one.
    pub fn event_type(&self) -> &str {
        self.kind.as_deref().unwrap_or("message")
    }
}

/// Incremental parser: feed it chunks as they arrive, get complete events' data back.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    kind: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
    retry: Option<u64>,
    /// The previous chunk ended in `\r`: a `\n` at the start of this one belongs to that line end.
    after_cr: bool,
    max_event_bytes: usize,
}

impl SseParser {
    /// A parser that refuses events (and lines) larger than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            kind: None,
            data: String::new(),
            has_data: false,
            id: None,
            retry: None,
            after_cr: false,
            max_event_bytes,
        }
    }

    /// Feeds bytes; returns every event completed by them. Events with neither data nor an id
    /// (keep-alives) are not returned.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Event>, TooLarge> {
        let mut events = Vec::new();
        let mut rest = bytes;
        if self.after_cr && rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
        self.after_cr = false;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..pos]);
            let cr = rest[pos] == b'\r';
            rest = &rest[pos + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            self.end_line(&mut events)?;
        }
        self.line.extend_from_slice(rest);
        if self.line.len() + self.data.len() > self.max_event_bytes {
            return Err(TooLarge);
        }
        Ok(events)
    }

    fn end_line(&mut self, events: &mut Vec<Event>) -> Result<(), TooLarge> {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if self.has_data || self.id.is_some() || self.retry.is_some() {
                events.push(Event {
                    kind: self.kind.take(),
                    id: self.id.take(),
                    data: std::mem::take(&mut self.data),
                    retry: self.retry.take(),
                });
                self.has_data = false;
            }
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return Ok(()), // a comment (keep-alive)
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &b""[..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(&String::from_utf8_lossy(value));
            self.has_data = true;
            if self.data.len() > self.max_event_bytes {
                return Err(TooLarge);
            }
        } else if field == b"id" {
            // An id with NUL is ignored, as the SSE specification says.
            if !value.contains(&0) {
                self.id = Some(String::from_utf8_lossy(value).into_owned());
            }
        } else if field == b"event" {
            self.kind = Some(String::from_utf8_lossy(value).into_owned());
        } else if field == b"retry" {
            self.retry = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_across_chunks_and_line_endings() {
        let mut p = SseParser::new(1024);
        let data = |events: Vec<Event>| events.into_iter().map(|e| e.data).collect::<Vec<_>>();
        assert_eq!(data(p.push(b": keep-alive\n\nevent: message\nda").unwrap()), Vec::<String>::new());
        assert_eq!(data(p.push(b"ta: {\"a\":1}\r").unwrap()), Vec::<String>::new());
        assert_eq!(data(p.push(b"\n\r\ndata:x\ndata: y\r\rdata\n\n").unwrap()), vec!["{\"a\":1}", "x\ny", ""]);
        let primed = p.push(b"id: 7_a\nretry: 500\ndata:\n\nid: 8\ndata: {}\n\n").unwrap();
        assert_eq!(primed[0], Event { kind: None, id: Some("7_a".into()), data: String::new(), retry: Some(500) });
        assert_eq!(primed[1], Event { kind: None, id: Some("8".into()), data: "{}".into(), retry: None });
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut p = SseParser::new(8);
        assert_eq!(p.push(b"data: 0123456789\n"), Err(TooLarge));
        let mut p = SseParser::new(12);
        assert_eq!(p.push(b"data: 0123"), Ok(vec![]));
        assert_eq!(p.push(b"456789"), Err(TooLarge));
    }

    #[test]
    fn endpoint_and_message_events_across_chunks() {
        let mut p = SseParser::new(1024);
        assert_eq!(p.push(b": ping\n\nevent: endpoint\r\ndata: /message?sessionId=1").unwrap(), vec![]);
        let events = p.push(b"\r\n\r\ndata: {\"a\":1}\n\nevent: message\ndata: x\ndata: y\n\n").unwrap();
        let kinds: Vec<(&str, &str)> = events.iter().map(|e| (e.event_type(), e.data.as_str())).collect();
        assert_eq!(kinds, [("endpoint", "/message?sessionId=1"), ("message", "{\"a\":1}"), ("message", "x\ny")]);
    }
}
