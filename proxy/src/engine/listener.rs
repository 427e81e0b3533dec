//! The listeners: accept loops serving HTTP/1.1 with hyper behind the mesh's strict front
//! (`front`, every byte a caller sends passes through it), with `proxy/httpserver.py`'s
//! limits (Envoy's defaults where it has one):
//!
//! - the request head at most [`MAX_HEAD_BYTES`] (60 KiB) and [`MAX_HEADERS`] (100)
//!   fields, checked strictly: the front refuses (400, 431) with the mesh's own answer
//!   (`x-devmesh-error`, a text body) and closes the connection; hyper never sees it;
//! - the head must arrive within [`HEAD_TIMEOUT`] of its first byte: the front answers
//!   408 (hyper's own header timeout is off: it would count idle keep-alive time);
//! - a keep-alive connection idle (no request in flight, nothing read) for
//!   [`IDLE_TIMEOUT`] is closed (watched here: hyper has no idle limit of its own);
//! - a body over the mesh's limit: a `Content-Length` over it is refused 413 by the
//!   outbound handler, a chunked one is cut off there (`body::Watched`).
//!
//! An upgrade request (`Upgrade`, `CONNECT`) is answered as a plain one with `Connection:
//! close` (the front reads nothing after it); an HTTP/1.0 caller is answered with an
//! HTTP/1.1 status line (close-delimited, as hyper frames it); a caller that half-closes
//! after its request still gets the answer (the front holds its end back from hyper until
//! then; a reset ends the connection at once, and so does any end over mTLS, as the
//! Python's TLS transports do). `Expect: 100-continue` is answered by hyper
//! when the handler first reads the body. What the front saw of each request as it
//! arrived ([`Arrived`]) is the request's extension.
//!
//! The inbound listener lets each connection in through the mTLS gate
//! (`security::mtls::admit`) with the gate of the moment it arrives (the service's mode
//! in the snapshot in force, this sidecar's identity now), at most
//! [`MAX_ADMITTING`] at once; refusals are counted in the engine's `refusals`. A later
//! change of the service's mode closes the open connections the new mode no longer
//! admits ([`keeps_open`]) once the request in hand is answered.
//!
//! A connection an injected fault resets is closed with `SO_LINGER` 0 (a TCP RST), as a
//! crashed server would ([`Conn`]).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};

use super::body::{BoxError, ProxyBody};
use super::front::{Answering, Arrivals, Front, InFlight};
pub use super::front::{Arrived, HEAD_TIMEOUT, MAX_HEADERS, MAX_HEAD_BYTES};
use super::origdst::original_destination;
use super::sidecar::{ConnInfo, Engine, Kind};
use crate::security::mtls::{admit, keeps_open, Gate, MeshStream, Refusal, MAX_ADMITTING};

/// A keep-alive connection idle this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Bind `host:port` (port 0: any free one).
pub async fn bind(host: &str, port: u16) -> io::Result<TcpListener> {
    TcpListener::bind((host, port)).await
}

/// Serve the connections `listener` accepts until `stop` turns true; connections then
/// finish the request in flight and close.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    kind: Kind,
    mut stop: watch::Receiver<bool>,
) {
    let admitting = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                debug!("accept failed: {err}");
                continue;
            }
        };
        let engine = engine.clone();
        let kind = kind.clone();
        let stop = stop.clone();
        if kind != Kind::Inbound {
            tokio::spawn(async move {
                connection(engine, MeshStream::Plain(stream), None, peer, kind, stop).await;
            });
            continue;
        }
        if admitting.load(Ordering::Relaxed) >= MAX_ADMITTING {
            engine.refusals.add(peer, &Refusal::busy());
            continue;
        }
        let admitting = Admitting::enter(&admitting);
        tokio::spawn(async move {
            let gate = Gate::now(engine.own_mode(), engine.credentials_watch());
            let admitted = admit(stream, &gate).await;
            drop(admitting);
            match admitted {
                Ok(admitted) => {
                    let principal = admitted.principal;
                    connection(engine, admitted.stream, principal, peer, kind, stop).await;
                }
                Err(refusal) => engine.refusals.add(peer, &refusal),
            }
        });
    }
}

/// A connection waiting in the mTLS gate, until dropped.
struct Admitting(Arc<AtomicUsize>);

impl Admitting {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Admitting(count.clone())
    }
}

impl Drop for Admitting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(
    engine: Arc<Engine>,
    stream: MeshStream,
    principal: Option<String>,
    peer: std::net::SocketAddr,
    kind: Kind,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.tcp().set_nodelay(true);
    let Ok(local) = stream.tcp().local_addr() else {
        return;
    };
    let original_dst = match kind {
        Kind::Outbound => original_destination(stream.tcp()),
        _ => None,
    };
    let reset = Arc::new(AtomicBool::new(false));
    let mtls = principal.is_some();
    // An inbound connection follows its service's mode (the Python's `enforce`).
    let mut modes = (kind == Kind::Inbound).then(|| engine.snapshots());
    let info = Arc::new(ConnInfo {
        peer,
        local,
        original_dst,
        principal,
        reset: reset.clone(),
    });
    let activity = Arc::new(Activity::new());
    let arrivals = Arc::new(Arrivals::default());
    let front = Front::new(
        Conn {
            stream,
            reset,
            activity: activity.clone(),
        },
        arrivals.clone(),
    );
    let io = TokioIo::new(if mtls {
        front.without_half_close()
    } else {
        front
    });
    let modes_engine = engine.clone();
    let service = {
        let activity = activity.clone();
        service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            let engine = engine.clone();
            let kind = kind.clone();
            let info = info.clone();
            let busy = activity.busy();
            let arrivals = arrivals.clone();
            let (arrived, in_flight) = arrivals.next();
            request.extensions_mut().insert(arrived);
            async move {
                let answered = engine.handle(kind, info, request).await;
                drop(busy);
                answered.map(|response| answer(response, arrived, in_flight, &arrivals))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The front holds the limits (and the head timeout): hyper's are only a backstop.
        .max_header_size(2 * MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .header_read_timeout(None)
        // The front tells hyper of a caller's half-close only once its requests are
        // answered: hyper's own half-close would stop watching for a reset.
        .half_close(false)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    let mut check = tokio::time::interval(Duration::from_secs(1));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(err) = done {
                    debug!("connection from {peer} ended: {err}");
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            changed = async { modes.as_mut().expect("watched").changed().await },
                if modes.is_some() && !stopping =>
            {
                if changed.is_err() {
                    modes = None;
                } else if !keeps_open(modes_engine.own_mode(), mtls) {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = check.tick() => {
                if activity.idle_for(Instant::now()) >= IDLE_TIMEOUT && !stopping {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The response hyper is handed: its body counted as being written (the front answers a
/// request it refuses only while hyper writes no answer), with `Connection: close` after
/// an upgrade request (what follows its head is not read).
fn answer(
    mut response: http::Response<ProxyBody>,
    arrived: Arrived,
    in_flight: InFlight,
    arrivals: &Arrivals,
) -> http::Response<ProxyBody> {
    if arrived.upgrade {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    let answering = arrivals.answering();
    response.map(|inner| {
        Counted {
            inner,
            _answering: answering,
            _in_flight: in_flight,
        }
        .boxed()
    })
}

/// A response body, counted as being written until dropped.
struct Counted {
    inner: ProxyBody,
    _answering: Answering,
    _in_flight: InFlight,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// When a connection last read anything, and how many requests (their answers
/// included) it has in flight.
#[derive(Debug)]
struct Activity {
    born: Instant,
    last_read_ms: AtomicU64,
    in_flight: Arc<AtomicUsize>,
}

/// A request in flight on its connection, until dropped.
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    fn new() -> Self {
        Activity {
            born: Instant::now(),
            last_read_ms: AtomicU64::new(0),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn busy(&self) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.in_flight.clone())
    }

    fn read(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.last_read_ms.store(ms, Ordering::Relaxed);
    }

    /// How long it has been idle at `now` (zero while a request is in flight).
    fn idle_for(&self, now: Instant) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = self.born + Duration::from_millis(self.last_read_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }
}

/// An accepted connection: reads are noted (idleness), and a connection marked reset
/// is closed with a TCP RST when dropped.
struct Conn {
    stream: MeshStream,
    reset: Arc<AtomicBool>,
    activity: Arc<Activity>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            let _ = self.stream.tcp().set_zero_linger();
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.reset.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.reset.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.reset.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_with_a_request_in_flight_is_never_idle() {
        let activity = Activity::new();
        let later = Instant::now() + IDLE_TIMEOUT;
        assert!(activity.idle_for(later) >= IDLE_TIMEOUT);
        let busy = activity.busy();
        assert_eq!(activity.idle_for(later), Duration::ZERO);
        drop(busy);
        activity.read();
        assert!(activity.idle_for(Instant::now()) < IDLE_TIMEOUT);
    }
}
