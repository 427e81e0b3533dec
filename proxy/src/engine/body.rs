//! The bodies the engine moves: a caller's request body watched on its way upstream
//! ([`Watched`]: whether it ended, whether the wait is on its sender, the mesh's size
//! limit), and the one boxed body type every response and upstream request has
//! ([`ProxyBody`]).
//!
//! Nothing is buffered here: a chunk goes on as it comes (hyper's own buffers and
//! TCP's give the back-pressure `proxy/body.py`'s high-water mark gives the Python).
//! The one exception is a body read whole so that a retry can resend it
//! (`outbound`, at most 64 KiB).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, SizeHint};

/// Any error a body or a service may end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the engine answers with and every request it sends.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// The largest request body a sidecar passes on (`proxy/httpserver.py`'s `MAX_BODY`).
pub const MAX_BODY: u64 = 64 * 1024 * 1024;

/// `bytes` as a [`ProxyBody`].
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// No body.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// The caller's request body could not be read to its end: its connection broke, its
/// framing was bad, or it went over [`MAX_BODY`]. Sent upstream as the body's error,
/// it tells the upstream client's failure apart from the upstream's own.
#[derive(Debug)]
pub struct CallerBodyError(pub String);

impl std::fmt::Display for CallerBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CallerBodyError {}

/// What is known of a watched body while it is on its way.
#[derive(Debug, Default)]
pub struct BodyState {
    ended: AtomicBool,
    on_sender: AtomicBool,
    received: AtomicU64,
}

impl BodyState {
    /// Everything arrived.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Not whole yet, and the last read found nothing waiting: the sender is the one to
    /// send more (not the reader, which may have stopped reading). A timeout then is
    /// the caller's (408), not the upstream's (504).
    pub fn waiting_on_sender(&self) -> bool {
        !self.ended() && self.on_sender.load(Ordering::Relaxed)
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// A caller's request body, watched (see [`BodyState`]) and cut at [`MAX_BODY`].
pub struct Watched<B> {
    inner: B,
    state: Arc<BodyState>,
}

impl<B: Body> Watched<B> {
    /// `inner`, with the state to watch it by. A body that is at its end already counts
    /// as ended.
    pub fn new(inner: B) -> (Self, Arc<BodyState>) {
        let state = Arc::new(BodyState::default());
        if inner.is_end_stream() {
            state.ended.store(true, Ordering::Relaxed);
        }
        (
            Watched {
                inner,
                state: state.clone(),
            },
            state,
        )
    }
}

impl<B> Body for Watched<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let state = &this.state;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                state.on_sender.store(true, Ordering::Relaxed);
                Poll::Pending
            }
            Poll::Ready(None) => {
                state.ended.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => {
                let text = format!("the request body broke off: {err}");
                Poll::Ready(Some(Err(Box::new(CallerBodyError(text)))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                state.on_sender.store(false, Ordering::Relaxed);
                if let Some(data) = frame.data_ref() {
                    let total = state
                        .received
                        .fetch_add(data.remaining() as u64, Ordering::Relaxed)
                        + data.remaining() as u64;
                    if total > MAX_BODY {
                        let text = format!("the request body is over {MAX_BODY} bytes");
                        return Poll::Ready(Some(Err(Box::new(CallerBodyError(text)))));
                    }
                }
                if this.inner.is_end_stream() {
                    state.ended.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether an error (of a body, or of the upstream client around one) is, somewhere in
/// its chain of sources, the caller's body breaking off.
pub fn caller_body_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a CallerBodyError> {
    find_source::<CallerBodyError>(err)
}

/// The first error of type `T` in `err`'s chain of sources, `err` itself included.
pub fn find_source<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    #[tokio::test]
    async fn a_whole_body_ends_and_an_empty_one_has_ended_already() {
        let (body, state) = Watched::new(Full::new(Bytes::from_static(b"abc")));
        assert!(!state.ended());
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abc");
        assert!(state.ended());
        assert_eq!(state.received(), 3);
        let (_, state) = Watched::new(Empty::<Bytes>::new());
        assert!(state.ended() && !state.waiting_on_sender());
    }

    #[tokio::test]
    async fn a_body_still_arriving_waits_on_its_sender() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let (mut body, state) = Watched::new(StreamBody::new(Box::pin(stream)));
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        assert!(body.frame().await.is_some());
        assert!(
            !state.waiting_on_sender(),
            "a chunk came: the reader's turn"
        );
        let next = tokio::time::timeout(std::time::Duration::from_millis(1), body.frame()).await;
        assert!(next.is_err());
        assert!(state.waiting_on_sender());
        drop(tx);
        assert!(body.frame().await.is_none());
        assert!(state.ended() && !state.waiting_on_sender());
    }

    #[tokio::test]
    async fn a_broken_body_is_the_callers_error() {
        let stream =
            futures_util::stream::iter(vec![Err::<Frame<Bytes>, _>(std::io::Error::other("gone"))]);
        let (body, _) = Watched::new(StreamBody::new(stream));
        let err = body.collect().await.unwrap_err();
        let found = caller_body_error(err.as_ref()).unwrap();
        assert_eq!(found.0, "the request body broke off: gone");
    }
}
