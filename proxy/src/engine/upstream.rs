//! Talking to an upstream over HTTP (`proxy/upstream.py`): what an attempt got (a
//! [`Sent`]: the upstream's answer head, why none came, or an injected abort), then the
//! answer passed on ([`relay`]) or the mesh's own made ([`reply`]), always marked
//! (`x-devmesh-error`, `x-devmesh-fault`) so that it is never taken for an app's. The
//! pooled client that sends is [`super::client`].

use std::future::Future;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{full, BoxError, ProxyBody};
use super::headers::{
    forwardable, header_safe, Span, ERROR_HEADER, FAULT_HEADER, HEADER_SAFE_LIMIT,
};
use super::throttle::Throttled;
use crate::policy::route::retry::Sent as PolicySent;

pub use super::client::{Transport, Upstream, CONNECT_TIMEOUT, IDLE_TIMEOUT};

/// What happened to one forwarded request, for its telemetry record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// The status sent downstream; 0 if none was.
    pub status: u16,
    pub error: Option<String>,
    pub instance: String,
    pub version: String,
    /// Ids of the injected faults that shaped the answer.
    pub fault: Option<String>,
    pub retries: u32,
    /// This hop's span of the request's trace.
    pub span: Option<Span>,
    /// It went (outbound) or came (inbound) over mTLS.
    pub mtls: bool,
    /// `deny:<policy>` or `audit:<policy>`.
    pub authz: Option<String>,
}

/// The upstream gave no response; the mesh answers in its place.
#[derive(Debug, Clone, PartialEq)]
pub struct NoAnswer {
    /// Whose doing it was: the upstream's (`connect-failure`, `reset`, `timeout`), the
    /// caller's (`downstream-reset`, `body-timeout`), or the mesh's refusal
    /// (`no-healthy-upstream`, `breaker-open`, `overflow`, ...).
    pub code: &'static str,
    pub message: String,
    /// The connection was refused: nothing listens on the upstream's port.
    pub refused: bool,
    pub status: u16,
    /// The injected fault that made it (a reset or a hang), if one did.
    pub fault: Option<String>,
    /// More headers of the mesh's answer (why an authorization policy denied it).
    pub headers: Vec<(&'static str, String)>,
}

impl NoAnswer {
    /// A 503 of `code`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        NoAnswer {
            code,
            message: message.into(),
            refused: false,
            status: 503,
            fault: None,
            headers: Vec::new(),
        }
    }

    /// As what an attempt got.
    pub fn into_sent(self) -> Sent {
        Sent::NoAnswer(self)
    }

    /// The same with another status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
}

/// What one attempt got.
#[derive(Debug)]
pub enum Sent {
    /// The upstream's answer (its body still to come).
    Response(Response<Incoming>),
    NoAnswer(NoAnswer),
    /// An abort a fault injected in place of the upstream's answer.
    Injected {
        status: u16,
        fault: String,
    },
}

impl Sent {
    /// What retries and the breaker see of it.
    pub fn as_policy(&self) -> PolicySent<'_> {
        match self {
            Sent::Response(r) => PolicySent::Response {
                status: r.status().as_u16(),
                mesh_connect_failure: r
                    .headers()
                    .get(ERROR_HEADER)
                    .is_some_and(|v| v.as_bytes() == b"connect-failure"),
            },
            Sent::NoAnswer(n) => PolicySent::NoAnswer { code: n.code },
            Sent::Injected { status, .. } => PolicySent::Injected { status: *status },
        }
    }
}

/// The route's timeout ran out while the answer was streaming: it cannot end normally.
#[derive(Debug)]
pub struct StreamTimedOut;

impl std::fmt::Display for StreamTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the call's timeout ran out while its answer was streaming")
    }
}

impl std::error::Error for StreamTimedOut {}

/// The caller's connection is to be closed without an answer (the caller broke off its
/// own request), or reset (an injected reset or hang).
#[derive(Debug)]
pub struct Abort;

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request ends without an answer")
    }
}

impl std::error::Error for Abort {}

/// How an upstream's answer is passed on.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelayOptions {
    /// The upstream is another sidecar: its `x-devmesh-*` response headers (a mesh-made
    /// error) pass on; an app's or an outside host's are removed.
    pub trusted: bool,
    /// A bandwidth fault's rate, bytes per second.
    pub bandwidth: Option<u64>,
    /// The call's deadline, which the body's streaming must meet too.
    pub deadline: Option<Instant>,
}

/// The answer to pass on for `sent` (the outcome told its status and error), or
/// [`Abort`] for a caller that broke off its own request.
pub fn relay(
    sent: Sent,
    outcome: &mut Outcome,
    options: RelayOptions,
) -> Result<Response<ProxyBody>, Abort> {
    match sent {
        Sent::Injected { status, fault } => {
            outcome.status = status;
            Ok(reply(
                status,
                None,
                &format!("fault {fault} injected by devmesh"),
                &[(FAULT_HEADER, fault.clone())],
            ))
        }
        Sent::NoAnswer(answer) if answer.code == "downstream-reset" => {
            // The caller broke off its own request: there is no one to answer (and a
            // request that ended short cannot be answered as if whole).
            outcome.status = 0;
            outcome.error = Some(answer.code.into());
            Err(Abort)
        }
        Sent::NoAnswer(answer) => {
            outcome.status = answer.status;
            outcome.error = Some(answer.code.into());
            Ok(reply(
                answer.status,
                Some(answer.code),
                &answer.message,
                &answer.headers,
            ))
        }
        Sent::Response(response) => {
            let (parts, body) = response.into_parts();
            outcome.status = parts.status.as_u16();
            let mut body: ProxyBody = body.map_err(|e| Box::new(e) as BoxError).boxed();
            if let Some(rate) = options.bandwidth {
                body = Throttled::new(body, rate).boxed();
            }
            if let Some(deadline) = options.deadline {
                body = Deadlined::new(body, deadline).boxed();
            }
            let mut out = Response::new(body);
            *out.status_mut() = parts.status;
            *out.headers_mut() = forwardable(&parts.headers, !options.trusted);
            Ok(out)
        }
    }
}

/// Let go of an answer that will not be passed on, keeping its connection if its body is
/// short (an error's text, read whole); a longer one's connection is closed.
pub async fn discard(sent: Sent) {
    if let Sent::Response(response) = sent {
        let short = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n <= 64 * 1024);
        if short {
            let _ = response.into_body().collect().await;
        }
    }
}

/// A response the mesh makes itself, marked so that it is never taken for the app's: a
/// text body (the message and a line end), `x-devmesh-error: <code>` if a code is given.
pub fn reply(
    status: u16,
    code: Option<&str>,
    message: &str,
    headers: &[(&'static str, String)],
) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from(format!("{message}\n"))));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let map = response.headers_mut();
    map.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    for (name, value) in headers {
        let safe = header_safe(value, HEADER_SAFE_LIMIT);
        if let Ok(value) = HeaderValue::from_str(&safe) {
            map.append(HeaderName::from_static(name), value);
        }
    }
    if let Some(code) = code {
        if let Ok(value) = HeaderValue::from_str(code) {
            map.insert(HeaderName::from_static(ERROR_HEADER), value);
        }
    }
    response
}

/// A body that must end by a deadline: past it, it fails with [`StreamTimedOut`].
pub struct Deadlined<B> {
    inner: B,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<B> Deadlined<B> {
    pub fn new(inner: B, deadline: Instant) -> Self {
        Deadlined {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(deadline.into())),
        }
    }
}

impl<B> hyper::body::Body for Deadlined<B>
where
    B: hyper::body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let std::task::Poll::Ready(frame) = std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            return std::task::Poll::Ready(frame);
        }
        match this.sleep.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => {
                std::task::Poll::Ready(Some(Err(Box::new(StreamTimedOut))))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_mesh_reply_is_marked_and_a_text() {
        let response = reply(
            403,
            Some("denied"),
            "catalog: denied by policy p",
            &[("x-devmesh-denied", "denied by\npolicy p".into())],
        );
        assert_eq!(response.status(), 403);
        let h = response.headers();
        assert_eq!(h["x-devmesh-error"], "denied");
        assert_eq!(h["x-devmesh-denied"], "denied by?policy p");
        assert_eq!(h["content-type"], "text/plain; charset=utf-8");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"catalog: denied by policy p\n");
    }

    #[tokio::test]
    async fn an_injected_abort_is_marked_injected_and_a_caller_reset_aborts() {
        let mut outcome = Outcome::default();
        let sent = Sent::Injected {
            status: 503,
            fault: "f1".into(),
        };
        let response = relay(sent, &mut outcome, RelayOptions::default()).unwrap();
        assert_eq!(response.headers()["x-devmesh-fault"], "f1");
        assert!(response.headers().get("x-devmesh-error").is_none());
        assert_eq!(outcome.status, 503);
        let gone = Sent::NoAnswer(NoAnswer::new("downstream-reset", "x").with_status(0));
        assert!(relay(gone, &mut outcome, RelayOptions::default()).is_err());
        assert_eq!(
            (outcome.status, outcome.error.as_deref()),
            (0, Some("downstream-reset"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_past_its_deadline_fails() {
        let (_tx, rx) =
            tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, BoxError>>(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let body = http_body_util::StreamBody::new(Box::pin(stream)).boxed();
        let deadline = Instant::now() + std::time::Duration::from_secs(1);
        let err = Deadlined::new(body, deadline).collect().await.unwrap_err();
        assert!(err.downcast_ref::<StreamTimedOut>().is_some());
    }
}
