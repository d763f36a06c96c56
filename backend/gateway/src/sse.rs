//! A minimal Server-Sent Events parser: enough to read the JSON-RPC messages an MCP server streams in
//! answer to a POST (the `data` of each event). `event`, `id` and `retry` fields are ignored, since the
//! gateway does not resume upstream streams.

/// An event grew past the parser's limit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooLarge;

/// Incremental parser: feed it chunks as they arrive, get complete events' data back.
#[derive(Debug)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    data: String,
    has_data: bool,
    /// The previous chunk ended in `\r`: a `\n` at the start of this one belongs to that line end.
    after_cr: bool,
    max_event_bytes: usize,
}

impl SseParser {
    /// A parser that refuses events (and lines) larger than `max_event_bytes`.
    pub(crate) fn new(max_event_bytes: usize) -> Self {
        Self { line: Vec::new(), data: String::new(), has_data: false, after_cr: false, max_event_bytes }
    }

    /// Feeds bytes; returns the data of every event completed by them.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, TooLarge> {
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

    fn end_line(&mut self, events: &mut Vec<String>) -> Result<(), TooLarge> {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if self.has_data {
                events.push(std::mem::take(&mut self.data));
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
        assert_eq!(p.push(b": keep-alive\n\nevent: message\nda").unwrap(), Vec::<String>::new());
        assert_eq!(p.push(b"ta: {\"a\":1}\r").unwrap(), Vec::<String>::new());
        assert_eq!(p.push(b"\n\r\ndata:x\ndata: y\r\rdata\n\n").unwrap(), vec!["{\"a\":1}", "x\ny", ""]);
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut p = SseParser::new(8);
        assert_eq!(p.push(b"data: 0123456789\n"), Err(TooLarge));
        let mut p = SseParser::new(12);
        assert_eq!(p.push(b"data: 0123"), Ok(vec![]));
        assert_eq!(p.push(b"456789"), Err(TooLarge));
    }
}
