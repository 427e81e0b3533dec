//! The strict front of every listener: every byte a caller sends passes through it on its
//! way to hyper, as `proxy/httpserver.py`'s strict llhttp parser reads it (Envoy and
//! HAProxy parse every byte themselves too).
//!
//! [`Framer`] is the decision, pure: a state machine over the request stream — a head is
//! held back until it is whole (at most [`MAX_HEAD_BYTES`] and [`MAX_HEADERS`] fields:
//! 431), then checked strictly (RFC 9112: `Content-Length` with `Transfer-Encoding`, two
//! `Content-Length`s, a bare LF, obsolete line folding, whitespace in a name, a bad chunk
//! size… are 400), and its body is framed (a `Content-Length` countdown, or chunks and
//! trailers) so that the next head is found on a keep-alive or pipelined connection.
//! After an upgrade request (`Upgrade`, or `CONNECT`) nothing more is read: what follows
//! its head is not HTTP.
//!
//! [`Front`] is the I/O around it: a refused request is answered by the mesh itself
//! (status, `Connection: close`, `x-devmesh-error` and a text body, as the Python's
//! `_refuse`) and the connection ended; hyper never sees its bytes. The head timeout
//! ([`HEAD_TIMEOUT`] from a head's first byte: 408 `header-timeout`) is the front's, so
//! the idle time between requests does not count. A refusal drops the whole read it came
//! in (a well-formed request pipelined before it in that read too: its handling would be
//! cancelled, as the Python cancels a request whose answer has not begun); the mesh's
//! answer is written only while hyper is writing none (else the connection just ends).
//! A 1.0 caller's status line is rewritten to HTTP/1.1 (hyper answers in its version). What the front learnt of each request
//! as it arrived ([`Arrived`]) is queued for the handler (see [`Arrivals`]).

mod framer;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub use framer::{Arrived, Framer, Refusal};

/// The longest request head (line and headers), Envoy's `max_request_headers_kb`.
pub const MAX_HEAD_BYTES: usize = 60 * 1024;
/// The most header fields a request may have.
pub const MAX_HEADERS: usize = 100;
/// A head must arrive whole within this long of its first byte.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The most bytes read from the caller at once.
const READ_SIZE: usize = 64 * 1024;
/// The most bytes of what a refused caller sent on that are read (and dropped) before the
/// connection closes, so that closing does not reset it under the answer.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// What the front and the connection's handler share: the requests as they arrived, in
/// order (one [`Arrived`] per head handed to hyper), how many answers hyper is writing,
/// and how many requests are not answered yet.
#[derive(Debug, Default)]
pub struct Arrivals {
    queue: Mutex<VecDeque<Arrived>>,
    answering: Arc<AtomicUsize>,
    flight: Arc<Flight>,
}

/// The requests handed on and not answered yet, and the front's read waiting for none.
#[derive(Debug, Default)]
struct Flight {
    count: AtomicUsize,
    waker: Mutex<Option<Waker>>,
}

/// A request handed on, until its answer is written (or given up): dropped then.
#[derive(Debug)]
pub struct InFlight(Arc<Flight>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(waker) = self.0.waker.lock().expect("flight").take() {
                waker.wake();
            }
        }
    }
}

impl Arrivals {
    /// What arrived of the next request hyper hands the handler (hyper hands them in
    /// the order the front passed their heads on), and the request counted as not
    /// answered until the guard is dropped.
    pub fn next(&self) -> (Arrived, InFlight) {
        let arrived = self
            .queue
            .lock()
            .expect("arrivals")
            .pop_front()
            .unwrap_or_default();
        (arrived, InFlight(self.flight.clone()))
    }

    fn push(&self, arrived: Arrived) {
        self.flight.count.fetch_add(1, Ordering::AcqRel);
        self.queue.lock().expect("arrivals").push_back(arrived);
    }

    /// Whether a request is not answered yet (if so, `cx` is woken once none is).
    fn unanswered(&self, cx: &Context<'_>) -> bool {
        *self.flight.waker.lock().expect("flight") = Some(cx.waker().clone());
        self.flight.count.load(Ordering::Acquire) > 0
    }

    /// An answer handed to hyper, counted until dropped (hyper drops a response's body
    /// once it has written it).
    pub fn answering(&self) -> Answering {
        self.answering.fetch_add(1, Ordering::Relaxed);
        Answering(self.answering.clone())
    }

    fn any_answering(&self) -> bool {
        self.answering.load(Ordering::Relaxed) > 0
    }
}

/// A response hyper is writing, until dropped.
#[derive(Debug)]
pub struct Answering(Arc<AtomicUsize>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
enum Phase {
    /// Reading requests.
    Reading,
    /// Writing the mesh's own answer to a refused request (`None`: an answer was being
    /// written already, so only closing).
    Answering(Option<(Vec<u8>, usize)>),
    /// The answer is written: the write side is being shut.
    Shutting,
    /// Dropping what the caller still sends, then the end.
    Draining(usize),
    /// Ended: every read fails.
    Ended,
}

/// The caller's stream as hyper reads it: through a [`Framer`].
pub struct Front<S> {
    inner: S,
    framer: Framer,
    arrivals: Arc<Arrivals>,
    /// Bytes the framer let through, not yet read by hyper.
    ready: Vec<u8>,
    taken: usize,
    /// Nothing more is handed on once `ready` is read (the caller's EOF, or after an
    /// upgrade request); hyper is told the end once every request is answered (a caller
    /// that half-closes after its request gets the answer, as the Python's
    /// `eof_received`), or at once if it came in a body (the body broke off).
    eof: bool,
    eof_now: bool,
    /// A half-close is held back from hyper (plaintext; over TLS an end is the end, as
    /// Python's TLS transports close on EOF).
    half_close: bool,
    phase: Phase,
    timer: Option<(Instant, Pin<Box<Sleep>>)>,
    /// Heads of HTTP/1.0 requests handed on whose status line is not written yet.
    http10: usize,
    scratch: Box<[u8]>,
}

impl<S> Front<S> {
    /// `inner`, read through a fresh framer; what arrives is queued on `arrivals`.
    pub fn new(inner: S, arrivals: Arc<Arrivals>) -> Self {
        Front {
            inner,
            framer: Framer::new(),
            arrivals,
            ready: Vec::new(),
            taken: 0,
            eof: false,
            eof_now: false,
            half_close: true,
            phase: Phase::Reading,
            timer: None,
            http10: 0,
            scratch: vec![0u8; READ_SIZE].into_boxed_slice(),
        }
    }

    /// The same, telling hyper of the caller's end at once (no half-close: over TLS).
    pub fn without_half_close(mut self) -> Self {
        self.half_close = false;
        self
    }

    /// The stream read from.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn refuse(&mut self, refusal: &Refusal) {
        tracing::info!("refused a request: {}", refusal.message);
        self.ready.clear();
        self.taken = 0;
        let answer = (!self.arrivals.any_answering()).then(|| (refusal.answer(), 0));
        self.phase = Phase::Answering(answer);
    }
}

fn ended() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the front refused the request and ended the connection",
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> Front<S> {
    /// Drive the end of a refused connection; `Ready` once it has ended.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.phase {
                Phase::Reading => return Poll::Ready(()),
                Phase::Answering(None) => self.phase = Phase::Shutting,
                Phase::Answering(Some((bytes, at))) => {
                    if *at >= bytes.len() {
                        self.phase = Phase::Shutting;
                        continue;
                    }
                    match Pin::new(&mut self.inner).poll_write(cx, &bytes[*at..]) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(n)) if n > 0 => *at += n,
                        Poll::Ready(_) => self.phase = Phase::Ended,
                    }
                }
                Phase::Shutting => match Pin::new(&mut self.inner).poll_shutdown(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => self.phase = Phase::Draining(0),
                    Poll::Ready(Err(_)) => self.phase = Phase::Ended,
                },
                Phase::Draining(drained) => {
                    let mut scratch = [0u8; 8192];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                            *drained += buf.filled().len();
                            if *drained > DRAIN_LIMIT {
                                self.phase = Phase::Ended;
                            }
                        }
                        // Nothing waiting (or the end): closing now resets nothing unread.
                        _ => self.phase = Phase::Ended,
                    }
                }
                Phase::Ended => return Poll::Ready(()),
            }
        }
    }

    /// Whether the head timeout has fired.
    fn poll_head_timeout(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(since) = self.framer.head_since() else {
            self.timer = None;
            return false;
        };
        let due = since + HEAD_TIMEOUT;
        match &mut self.timer {
            Some((at, _)) if *at == due => {}
            _ => {
                self.timer = Some((due, Box::pin(tokio::time::sleep_until(due.into()))));
            }
        }
        let (_, sleep) = self.timer.as_mut().expect("armed");
        sleep.as_mut().poll(cx).is_ready()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Front<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !matches!(this.phase, Phase::Reading) {
                return match this.poll_end(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => Poll::Ready(Err(ended())),
                };
            }
            if this.taken < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.taken);
                buf.put_slice(&this.ready[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.ready.len() {
                    this.ready.clear();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                if this.eof_now || !this.arrivals.unanswered(cx) {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Pending;
            }
            if this.poll_head_timeout(cx) {
                let refusal = Refusal::head_timeout();
                this.refuse(&refusal);
                continue;
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Ready(Ok(())) => {}
            }
            let data = read.filled();
            if data.is_empty() {
                this.eof = true;
                this.eof_now = !this.half_close || this.framer.in_body();
                continue;
            }
            let mut out = Vec::new();
            match this.framer.feed(data, Instant::now(), &mut out) {
                Err(refusal) => this.refuse(&refusal),
                Ok(heads) => {
                    for arrived in heads {
                        if arrived.http10 {
                            this.http10 += 1;
                        }
                        this.arrivals.push(arrived);
                    }
                    this.ready = out;
                    this.taken = 0;
                    if this.framer.stopped() {
                        this.eof = true;
                    }
                }
            }
        }
    }
}

/// The status line hyper writes to an HTTP/1.0 caller, and the one the mesh sends it
/// (the Python answers every caller as HTTP/1.1, close-delimited for a 1.0 one).
const STATUS_10: &[u8] = b"HTTP/1.0 ";
const STATUS_11: &[u8] = b"HTTP/1.1 ";

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Front<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !matches!(this.phase, Phase::Reading) {
            // The mesh's own answer is the last word: hyper's is dropped.
            return Poll::Ready(Ok(buf.len()));
        }
        if this.http10 > 0 && buf.starts_with(STATUS_10) {
            let mut fixed = buf.to_vec();
            fixed[..STATUS_11.len()].copy_from_slice(STATUS_11);
            let polled = Pin::new(&mut this.inner).poll_write(cx, &fixed);
            if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
                this.http10 -= 1;
            }
            return polled;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !matches!(self.phase, Phase::Reading) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !matches!(self.phase, Phase::Reading) {
            let this = &mut *self;
            return this.poll_end(cx).map(|()| Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
