//! The front's decision, pure: where each request of a caller's byte stream begins and
//! ends, and whether it may be read at all (`proxy/httpserver.py`'s strict llhttp).

use std::time::Instant;

use super::{HEAD_TIMEOUT, MAX_HEADERS, MAX_HEAD_BYTES};

/// A request the mesh refuses to read: answered with `status`, `x-devmesh-error:
/// <code>` and `message`, and the connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn bad(what: &str) -> Self {
        Refusal {
            status: 400,
            code: "bad-request",
            message: format!("malformed HTTP request: {what}"),
        }
    }

    fn head_too_large() -> Self {
        Refusal {
            status: 431,
            code: "header-too-large",
            message: format!("request headers over the mesh's limit of {MAX_HEAD_BYTES} bytes"),
        }
    }

    fn too_many_headers() -> Self {
        Refusal {
            status: 431,
            code: "too-many-headers",
            message: format!("more than the mesh's limit of {MAX_HEADERS} headers"),
        }
    }

    /// A head that did not arrive whole within [`HEAD_TIMEOUT`].
    pub fn head_timeout() -> Self {
        Refusal {
            status: 408,
            code: "header-timeout",
            message: format!(
                "the request's headers did not arrive within {}s",
                HEAD_TIMEOUT.as_secs()
            ),
        }
    }

    /// The mesh's answer, whole (the Python's `_refuse`).
    pub fn answer(&self) -> Vec<u8> {
        let reason = match self.status {
            400 => "Bad Request",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            _ => "",
        };
        let body = format!("{}\n", self.message);
        format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nx-devmesh-error: {}\r\nConnection: close\r\n\r\n{body}",
            self.status,
            body.len(),
            self.code
        )
        .into_bytes()
    }
}

/// What the front learnt of one request as it arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Arrived {
    /// A chunked body that had ended, empty, in the same read as the head: an empty body
    /// (it can be replayed, like an empty `Content-Length` one).
    pub body_ended_empty: bool,
    /// An HTTP/1.0 request.
    pub http10: bool,
    /// An upgrade request (`Upgrade`, or `CONNECT`): the connection's last.
    pub upgrade: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { digits: u8, value: u64 },
    Ext { value: u64 },
    SizeLf { value: u64 },
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
}

#[derive(Debug)]
enum State {
    /// Between requests (the empty lines a caller may send before one are skipped).
    Idle,
    /// A head arriving.
    Head,
    /// A body of this many bytes more.
    Length(u64),
    Chunked(Chunk),
    /// Nothing more is read (after an upgrade request, or a refusal).
    Stopped,
}

/// The state machine over one connection's request stream.
#[derive(Debug)]
pub struct Framer {
    state: State,
    head: Vec<u8>,
    head_since: Option<Instant>,
    /// The message being read is an upgrade request.
    upgrade: bool,
    /// Data bytes of the chunked body being read.
    chunk_data: u64,
    trailer_bytes: usize,
    /// Index, in this feed's heads, of the message being read (if its head came in it).
    current: Option<usize>,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

fn hex(byte: u8) -> Option<u64> {
    (byte as char).to_digit(16).map(u64::from)
}

impl Framer {
    /// A connection's framer, before its first request.
    pub fn new() -> Self {
        Framer {
            state: State::Idle,
            head: Vec::new(),
            head_since: None,
            upgrade: false,
            chunk_data: 0,
            trailer_bytes: 0,
            current: None,
        }
    }

    /// When the head being read began to arrive (`None` between requests and in bodies).
    pub fn head_since(&self) -> Option<Instant> {
        self.head_since
    }

    /// In a body (its end not read yet).
    pub fn in_body(&self) -> bool {
        matches!(self.state, State::Length(_) | State::Chunked(_))
    }

    /// Nothing more is to be read.
    pub fn stopped(&self) -> bool {
        matches!(self.state, State::Stopped)
    }

    /// Feed `data`, read at `now`: the bytes hyper may read are appended to `out` (a head
    /// once it is whole and checked, a body's bytes as they come), and what arrived of
    /// each head handed on is returned. `Err`: the request is refused, and nothing of
    /// this feed is to be handed on.
    pub fn feed(
        &mut self,
        data: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<Vec<Arrived>, Refusal> {
        let mut heads = Vec::new();
        self.current = None;
        let fed = self.feed_all(data, now, out, &mut heads);
        if fed.is_err() {
            self.state = State::Stopped;
            self.head_since = None;
            self.head.clear();
        }
        fed.map(|()| heads)
    }

    fn feed_all(
        &mut self,
        data: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
        heads: &mut Vec<Arrived>,
    ) -> Result<(), Refusal> {
        let mut at = 0;
        while at < data.len() {
            let byte = data[at];
            match &mut self.state {
                State::Stopped => return Ok(()),
                State::Idle => {
                    if byte != b'\r' && byte != b'\n' {
                        self.state = State::Head;
                        self.head_since = Some(now);
                        continue;
                    }
                    at += 1;
                }
                State::Head => {
                    at += 1;
                    self.head_byte(byte, out, heads)?;
                }
                State::Length(left) => {
                    let n = (*left).min((data.len() - at) as u64) as usize;
                    out.extend_from_slice(&data[at..at + n]);
                    at += n;
                    *left -= n as u64;
                    if *left == 0 {
                        self.end_message(false, heads);
                    }
                }
                State::Chunked(Chunk::Data(left)) => {
                    let n = (*left).min((data.len() - at) as u64) as usize;
                    out.extend_from_slice(&data[at..at + n]);
                    at += n;
                    *left -= n as u64;
                    self.chunk_data += n as u64;
                    if *left == 0 {
                        self.state = State::Chunked(Chunk::DataCr);
                    }
                }
                State::Chunked(chunk) => {
                    let chunk = *chunk;
                    at += 1;
                    out.push(byte);
                    let next = self.chunk_byte(chunk, byte)?;
                    match next {
                        Some(next) => self.state = State::Chunked(next),
                        None => self.end_message(true, heads),
                    }
                }
            }
        }
        Ok(())
    }

    fn head_byte(
        &mut self,
        byte: u8,
        out: &mut Vec<u8>,
        heads: &mut Vec<Arrived>,
    ) -> Result<(), Refusal> {
        let last = self.head.last().copied();
        if byte == b'\n' && last != Some(b'\r') {
            return Err(Refusal::bad("a line ends with a bare LF"));
        }
        if last == Some(b'\r') && byte != b'\n' {
            return Err(Refusal::bad("a CR not followed by LF"));
        }
        self.head.push(byte);
        if self.head.len() > MAX_HEAD_BYTES {
            return Err(Refusal::head_too_large());
        }
        if !self.head.ends_with(b"\r\n\r\n") {
            return Ok(());
        }
        let head = std::mem::take(&mut self.head);
        self.head_since = None;
        let (arrived, framing) = check_head(&head)?;
        out.extend_from_slice(&head);
        self.upgrade = arrived.upgrade;
        self.current = Some(heads.len());
        heads.push(arrived);
        self.chunk_data = 0;
        self.trailer_bytes = 0;
        match framing {
            Framing::None => self.end_message(false, heads),
            Framing::Length(n) => self.state = State::Length(n),
            Framing::Chunked => {
                self.state = State::Chunked(Chunk::Size {
                    digits: 0,
                    value: 0,
                })
            }
        }
        Ok(())
    }

    /// The next chunk state after `byte` (`None`: the body has ended).
    fn chunk_byte(&mut self, chunk: Chunk, byte: u8) -> Result<Option<Chunk>, Refusal> {
        let bad_size = || Refusal::bad("invalid character in chunk size");
        let next = match chunk {
            Chunk::Size { digits, value } => match (hex(byte), byte) {
                (Some(d), _) => {
                    if digits >= 15 {
                        return Err(Refusal::bad("a chunk size too large"));
                    }
                    Chunk::Size {
                        digits: digits + 1,
                        value: value * 16 + d,
                    }
                }
                (None, b';') if digits > 0 => Chunk::Ext { value },
                (None, b'\r') if digits > 0 => Chunk::SizeLf { value },
                _ => return Err(bad_size()),
            },
            Chunk::Ext { value } => match byte {
                b'\r' => Chunk::SizeLf { value },
                b'\t' | 0x20..=0x7e | 0x80..=0xff => Chunk::Ext { value },
                _ => return Err(Refusal::bad("invalid character in a chunk extension")),
            },
            Chunk::SizeLf { value } => match byte {
                b'\n' if value == 0 => Chunk::TrailerStart,
                b'\n' => Chunk::Data(value),
                _ => return Err(Refusal::bad("a chunk size line not ended by CRLF")),
            },
            Chunk::Data(_) => unreachable!("data is copied whole"),
            Chunk::DataCr => match byte {
                b'\r' => Chunk::DataLf,
                _ => return Err(Refusal::bad("a chunk's data not followed by CRLF")),
            },
            Chunk::DataLf => match byte {
                b'\n' => Chunk::Size {
                    digits: 0,
                    value: 0,
                },
                _ => return Err(Refusal::bad("a chunk's data not followed by CRLF")),
            },
            Chunk::TrailerStart => match byte {
                b'\r' => Chunk::EndLf,
                b' ' | b'\t' => return Err(Refusal::bad("obsolete line folding in trailers")),
                b'\n' => return Err(Refusal::bad("a line ends with a bare LF")),
                _ => self.trailer(Chunk::Trailer)?,
            },
            Chunk::Trailer => match byte {
                b'\r' => self.trailer(Chunk::TrailerLf)?,
                b'\n' => return Err(Refusal::bad("a line ends with a bare LF")),
                _ => self.trailer(Chunk::Trailer)?,
            },
            Chunk::TrailerLf => match byte {
                b'\n' => self.trailer(Chunk::TrailerStart)?,
                _ => return Err(Refusal::bad("a CR not followed by LF")),
            },
            Chunk::EndLf => match byte {
                b'\n' => return Ok(None),
                _ => return Err(Refusal::bad("a CR not followed by LF")),
            },
        };
        Ok(Some(next))
    }

    fn trailer(&mut self, next: Chunk) -> Result<Chunk, Refusal> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_HEAD_BYTES {
            return Err(Refusal::head_too_large());
        }
        Ok(next)
    }

    fn end_message(&mut self, chunked: bool, heads: &mut [Arrived]) {
        if chunked && self.chunk_data == 0 {
            if let Some(arrived) = self.current.and_then(|i| heads.get_mut(i)) {
                arrived.body_ended_empty = true;
            }
        }
        self.current = None;
        self.state = if self.upgrade {
            State::Stopped
        } else {
            State::Idle
        };
    }
}

enum Framing {
    None,
    Length(u64),
    Chunked,
}

fn tokens(value: &[u8]) -> impl Iterator<Item = String> + '_ {
    value
        .split(|b| *b == b',')
        .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
}

/// Check a whole head (it ends with CRLFCRLF, every LF after a CR) as llhttp-strict does.
fn check_head(head: &[u8]) -> Result<(Arrived, Framing), Refusal> {
    for line in head.split(|b| *b == b'\n').skip(1) {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(Refusal::bad("obsolete line folding"));
        }
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Refusal::bad("an incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::too_many_headers()),
        Err(err) => return Err(Refusal::bad(&err.to_string())),
    }
    let method = request.method.unwrap_or("");
    let http10 = request.version == Some(0);
    let mut lengths = Vec::new();
    let mut codings = Vec::new();
    let mut connection_upgrade = false;
    let mut upgrade_header = false;
    for field in request.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            lengths.push(field.value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            codings.extend(tokens(field.value));
            if tokens(field.value).next().is_none() {
                return Err(Refusal::bad("an empty Transfer-Encoding"));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= tokens(field.value).any(|t| t == "upgrade");
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_header = true;
        }
    }
    let upgrade = method == "CONNECT" || (connection_upgrade && upgrade_header);
    let arrived = Arrived {
        body_ended_empty: false,
        http10,
        upgrade,
    };
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err(Refusal::bad("Content-Length with Transfer-Encoding"));
        }
        let chunked_at = codings.iter().position(|c| c == "chunked");
        if chunked_at != Some(codings.len() - 1) {
            return Err(Refusal::bad(
                "a Transfer-Encoding whose last coding is not chunked",
            ));
        }
        return Ok((arrived, Framing::Chunked));
    }
    match lengths.as_slice() {
        [] => Ok((arrived, Framing::None)),
        [value] => {
            let digits = value.iter().all(u8::is_ascii_digit) && !value.is_empty();
            let length = std::str::from_utf8(value)
                .ok()
                .filter(|_| digits)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| Refusal::bad("an invalid Content-Length"))?;
            if length == 0 {
                Ok((arrived, Framing::None))
            } else {
                Ok((arrived, Framing::Length(length)))
            }
        }
        _ => Err(Refusal::bad("more than one Content-Length")),
    }
}
