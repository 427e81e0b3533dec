//! Bandwidth faults (`proxy/toxics.py`'s `Throttle`): a response body paced to a rate
//! in bytes per second, in pieces of 1/50 s of data (at least 1 byte).
//!
//! [`Throttle`] is the schedule, pure (the time is passed in): a piece goes out when
//! the bytes already sent over the rate say so, so a late wake-up costs nothing and
//! the schedule keeps one piece of credit, no more (an idle sender cannot burst
//! later). [`Throttled`] is a body that follows it.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, SizeHint};

/// Pieces per second of data.
pub const PIECES_PER_SECOND: u64 = 50;

/// When each piece of a paced stream may go out.
#[derive(Debug, Clone)]
pub struct Throttle {
    rate: u64,
    piece: usize,
    credit: Duration,
    due: Option<Instant>,
}

impl Throttle {
    /// A schedule of `rate` bytes per second (at least 1).
    pub fn new(rate: u64) -> Self {
        let rate = rate.max(1);
        let piece = (rate / PIECES_PER_SECOND).max(1);
        Throttle {
            rate,
            piece: piece as usize,
            credit: Duration::from_secs_f64(piece as f64 / rate as f64),
            due: None,
        }
    }

    /// The size of a piece.
    pub fn piece(&self) -> usize {
        self.piece
    }

    /// A piece of `len` bytes is to be sent at `now` or later: the time it may go out
    /// (wait until then), which the schedule now counts as sent.
    pub fn schedule(&mut self, now: Instant, len: usize) -> Instant {
        let due = match self.due {
            None => now,
            Some(due) => due.max(now.checked_sub(self.credit).unwrap_or(now)),
        };
        self.due = Some(due + Duration::from_secs_f64(len as f64 / self.rate as f64));
        due
    }
}

/// A body whose data is let out on a [`Throttle`]'s schedule.
pub struct Throttled<B> {
    inner: B,
    throttle: Throttle,
    rest: Bytes,
    waiting: Option<(Bytes, Pin<Box<tokio::time::Sleep>>)>,
}

impl<B> Throttled<B> {
    pub fn new(inner: B, rate: u64) -> Self {
        Throttled {
            inner,
            throttle: Throttle::new(rate),
            rest: Bytes::new(),
            waiting: None,
        }
    }
}

impl<B> Body for Throttled<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if let Some((_, sleep)) = &mut this.waiting {
                ready!(sleep.as_mut().poll(cx));
                let (piece, _) = this.waiting.take().expect("waiting");
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            if !this.rest.is_empty() {
                let n = this.throttle.piece().min(this.rest.len());
                let piece = this.rest.split_to(n);
                let now = tokio::time::Instant::now().into_std();
                let due = this.throttle.schedule(now, n);
                if due <= now {
                    return Poll::Ready(Some(Ok(Frame::data(piece))));
                }
                let sleep = Box::pin(tokio::time::sleep_until(due.into()));
                this.waiting = Some((piece, sleep));
                continue;
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(mut data) => this.rest = data.copy_to_bytes(data.remaining()),
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.waiting.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let buffered = (self.rest.len() + self.waiting.as_ref().map_or(0, |(p, _)| p.len())) as u64;
        hint.set_lower(hint.lower() + buffered);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + buffered);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn pieces_are_a_fiftieth_of_a_second_and_at_least_a_byte() {
        assert_eq!(Throttle::new(5000).piece(), 100);
        assert_eq!(Throttle::new(10).piece(), 1);
    }

    #[test]
    fn the_schedule_spaces_pieces_by_their_time_at_the_rate() {
        let t0 = Instant::now();
        let mut t = Throttle::new(1000); // pieces of 20 bytes, 20 ms each
        assert_eq!(t.schedule(t0, 20), t0);
        assert_eq!(t.schedule(t0, 20), t0 + Duration::from_millis(20));
        assert_eq!(t.schedule(t0, 20), t0 + Duration::from_millis(40));
    }

    #[test]
    fn a_late_wake_up_costs_nothing_but_credit_is_one_piece() {
        let t0 = Instant::now();
        let mut t = Throttle::new(1000);
        t.schedule(t0, 20); // next due at 20 ms; woken at 30 ms, it goes at once
        let late = t0 + Duration::from_millis(30);
        assert_eq!(t.schedule(late, 20), late - Duration::from_millis(10));
        // Idle for a second: only one piece of credit is kept.
        let idle = t0 + Duration::from_secs(1);
        assert_eq!(t.schedule(idle, 20), idle - Duration::from_millis(20));
        assert_eq!(t.schedule(idle, 20), idle);
        assert_eq!(t.schedule(idle, 20), idle + Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_body_takes_its_length_over_the_rate() {
        let body = http_body_util::Full::new(Bytes::from(vec![b'x'; 1000]));
        let start = tokio::time::Instant::now();
        let collected = Throttled::new(body, 1000).collect().await.unwrap();
        assert_eq!(collected.to_bytes().len(), 1000);
        let took = start.elapsed();
        // 50 pieces of 20 bytes: the last goes at 49 × 20 ms.
        assert_eq!(took, Duration::from_millis(980));
    }
}
