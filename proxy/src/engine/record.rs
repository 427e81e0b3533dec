//! Exactly one telemetry [`Record`] per request: a [`Recorder`] is made when a request
//! arrives and records it once, whichever way the request ends:
//!
//! - its answer was sent whole (the response body ended, or there was none to send);
//! - its answer broke off: the upstream failed mid-body (`reset`) or the call's timeout
//!   ran out while it streamed (`timeout`);
//! - the caller went away first (the handler or the response body was dropped before
//!   the end: `downstream-reset`, status 0 if no status was sent).
//!
//! The recorder also holds what must live as long as the request does (the pool's slot,
//! the app gate's count, the connection's count of requests in flight).

use std::any::Any;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};

use super::body::{BoxError, ProxyBody};
use super::upstream::{Outcome, StreamTimedOut};
use crate::wire::telemetry::{record_path, Direction, Record, TelemetryBuffer};

/// The record of one request in the making.
pub struct Recorder {
    sink: Arc<Mutex<TelemetryBuffer>>,
    direction: Direction,
    source: String,
    destination: String,
    method: String,
    path: String,
    start: Instant,
    answered: bool,
    /// What happened so far.
    pub outcome: Outcome,
    holds: Vec<Box<dyn Any + Send + Sync>>,
    done: bool,
}

impl Recorder {
    /// A request that arrived at `start`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sink: Arc<Mutex<TelemetryBuffer>>,
        direction: Direction,
        source: impl Into<String>,
        destination: impl Into<String>,
        method: &str,
        path: &str,
        start: Instant,
    ) -> Self {
        Recorder {
            sink,
            direction,
            source: source.into(),
            destination: destination.into(),
            method: method.to_owned(),
            path: record_path(path).to_owned(),
            start,
            answered: false,
            outcome: Outcome::default(),
            holds: Vec::new(),
            done: false,
        }
    }

    /// Keep `thing` until the request is recorded.
    pub fn hold(&mut self, thing: impl Any + Send + Sync) {
        self.holds.push(Box::new(thing));
    }

    /// The source the record names (known only once the request was read).
    pub fn set_source(&mut self, source: impl Into<String>) {
        self.source = source.into();
    }

    /// The record as it stands now.
    pub fn record(&self) -> Record {
        let span = self.outcome.span.as_ref();
        Record {
            ts: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            direction: self.direction,
            source: self.source.clone(),
            destination: self.destination.clone(),
            version: self.outcome.version.clone(),
            instance: self.outcome.instance.clone(),
            status: self.outcome.status,
            latency_ms: self.start.elapsed().as_secs_f64() * 1000.0,
            method: self.method.clone(),
            path: self.path.clone(),
            error: self.outcome.error.clone(),
            fault: self.outcome.fault.clone(),
            retries: self.outcome.retries,
            trace_id: span.map(|s| s.trace_id.clone()),
            span_id: span.map(|s| s.span_id.clone()),
            parent_id: span.and_then(|s| s.parent_id.clone()),
            mtls: self.outcome.mtls,
            authz: self.outcome.authz.clone(),
        }
    }

    /// Record it now, as it stands.
    pub fn finish(mut self) {
        self.write();
    }

    fn write(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let record = self.record();
        if let Ok(mut sink) = self.sink.lock() {
            sink.add(record);
        }
        self.holds.clear();
    }

    /// The answer goes out: it is recorded when its body has been sent (at once if it
    /// has none left to send).
    pub fn answer(mut self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        self.answered = true;
        // A HEAD's answer, a 204 or a 304 has no body to send (hyper does not read it).
        let bodiless = self.method == "HEAD" || matches!(response.status().as_u16(), 204 | 304);
        if bodiless || response.body().is_end_stream() {
            self.finish();
            return response;
        }
        response.map(|body| {
            Finished {
                inner: body,
                recorder: Some(self),
            }
            .boxed()
        })
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.done {
            // Dropped unrecorded: the caller went away before its answer was whole.
            if self.outcome.error.is_none() {
                self.outcome.error = Some("downstream-reset".into());
            }
            if !self.answered {
                self.outcome.status = 0;
            }
            self.write();
        }
    }
}

/// A response body that records its request when it ends (or breaks off).
struct Finished {
    inner: ProxyBody,
    recorder: Option<Recorder>,
}

impl Body for Finished {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(recorder) = this.recorder.take() {
                    recorder.finish();
                }
            }
            Poll::Ready(Some(Err(err))) => {
                if let Some(mut recorder) = this.recorder.take() {
                    // The upstream failed mid-body, or the call's time ran out: finishing
                    // normally would hand the caller a truncated body that looks whole.
                    let code = if err.downcast_ref::<StreamTimedOut>().is_some() {
                        "timeout"
                    } else {
                        "reset"
                    };
                    recorder.outcome.error = Some(code.into());
                    recorder.finish();
                }
            }
            Poll::Ready(Some(Ok(_))) => {
                if this.inner.is_end_stream() {
                    if let Some(recorder) = this.recorder.take() {
                        recorder.finish();
                    }
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::body::full;

    fn recorder(sink: &Arc<Mutex<TelemetryBuffer>>) -> Recorder {
        Recorder::new(
            sink.clone(),
            Direction::Outbound,
            "frontend",
            "catalog",
            "GET",
            "/items",
            Instant::now(),
        )
    }

    #[tokio::test]
    async fn an_answer_sent_whole_is_recorded_once() {
        let sink = Arc::new(Mutex::new(TelemetryBuffer::default()));
        let mut r = recorder(&sink);
        r.outcome.status = 200;
        let response = r.answer(Response::new(full("ok")));
        assert_eq!(sink.lock().unwrap().len(), 0, "recorded once sent");
        response.into_body().collect().await.unwrap();
        let records = sink.lock().unwrap().take(10);
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].status, records[0].error.as_deref()),
            (200, None)
        );
        assert_eq!(records[0].path, "/items");
    }

    #[test]
    fn a_caller_that_left_before_the_answer_is_a_downstream_reset() {
        let sink = Arc::new(Mutex::new(TelemetryBuffer::default()));
        let mut r = recorder(&sink);
        r.outcome.status = 502;
        drop(r);
        let records = sink.lock().unwrap().take(10);
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].status, records[0].error.as_deref()),
            (0, Some("downstream-reset"))
        );
    }

    #[tokio::test]
    async fn a_streamed_answer_is_recorded_at_its_end_or_its_break() {
        let sink = Arc::new(Mutex::new(TelemetryBuffer::default()));
        let stream = futures_util::stream::iter(vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Err::<Frame<Bytes>, BoxError>("gone".into()),
        ]);
        let body = http_body_util::StreamBody::new(stream).boxed();
        let mut r = recorder(&sink);
        r.outcome.status = 200;
        let response = r.answer(Response::new(body));
        assert_eq!(sink.lock().unwrap().len(), 0);
        assert!(response.into_body().collect().await.is_err());
        let records = sink.lock().unwrap().take(10);
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].status, records[0].error.as_deref()),
            (200, Some("reset"))
        );
    }
}
