//! Talking to an upstream over HTTP (`proxy/upstream.py`, `proxy/httpclient.py`): send a
//! request and get its answer's head or why none came ([`Upstream::send`], a [`Sent`]),
//! then pass it on ([`relay`]) or make the mesh's own answer ([`reply`]), always marked
//! (`x-devmesh-error`, `x-devmesh-fault`) so that it is never taken for an app's.
//!
//! The client is hyper-util's pooled ("legacy") `Client` over its `HttpConnector`:
//! keep-alive connections per `host:port`, idle ones closed after [`IDLE_TIMEOUT`], a
//! connection the upstream closed as a request went out tried once more on a new one
//! (as the Python pool does), and the connect timeout of [`CONNECT_TIMEOUT`]. It was
//! chosen over a pool of our own on `hyper::client::conn` because it already does
//! all of that and the seam below is enough for mTLS.
//!
//! **The mTLS seam (outbound).** How a connection to an endpoint is made is the
//! connector: [`Transport`] says which. `Transport::Plain` is this client; mTLS
//! (`security::mtls`) plugs in as another variant holding a second pooled `Client`
//! whose connector dials with `HttpConnector` and then runs the rustls handshake with
//! this sidecar's identity, checking the peer's SPIFFE ID (its pool keyed by the peer
//! id too, as `httpclient.py` keys its pool by `(host, port, peer_id)`). A failed
//! handshake is a connect failure (`the mTLS handshake failed: ...`).

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::{caller_body_error, full, BoxError, ProxyBody};
use super::headers::{
    forwardable, header_safe, Span, ERROR_HEADER, FAULT_HEADER, HEADER_SAFE_LIMIT,
};
use super::throttle::Throttled;
use crate::policy::route::retry::Sent as PolicySent;
use crate::wire::bootstrap::strerror;

/// How long a connection to an upstream may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle pooled connection is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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

/// How a connection to an upstream is made (see the module's note on mTLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP.
    Plain,
}

/// The pooled HTTP/1.1 client to upstreams.
#[derive(Debug, Clone)]
pub struct Upstream {
    plain: Client<HttpConnector, ProxyBody>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream::new()
    }
}

impl Upstream {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let plain = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .set_host(false)
            .build(connector);
        Upstream { plain }
    }

    /// Send a request to `host:port` (`instance` names the endpoint in error texts);
    /// `headers` are sent as they are (their `Host` included).
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        transport: Transport,
        host: &str,
        port: u16,
        method: &Method,
        path_qs: &str,
        headers: HeaderMap,
        body: ProxyBody,
        instance: &str,
    ) -> Sent {
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let where_ = if instance.is_empty() {
            String::new()
        } else {
            format!("{instance} at ")
        };
        let uri = match format!("http://{authority}{path_qs}").parse::<http::Uri>() {
            Ok(uri) => uri,
            Err(err) => {
                return Sent::NoAnswer(NoAnswer::new(
                    "connect-failure",
                    format!("upstream connect error: {where_}{authority}: {err}"),
                ))
            }
        };
        let mut request = Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;
        let Transport::Plain = transport;
        match self.plain.request(request).await {
            Ok(response) => Sent::Response(response),
            Err(err) => Sent::NoAnswer(classify(&err, &where_, &authority)),
        }
    }
}

/// A failed request in `httpclient.py`'s terms: a connect failure (refused told apart),
/// the caller's body breaking off, or the upstream resetting.
fn classify(err: &hyper_util::client::legacy::Error, where_: &str, authority: &str) -> NoAnswer {
    if let Some(found) = caller_body_error(err) {
        return NoAnswer::new("downstream-reset", found.0.clone()).with_status(0);
    }
    if err.is_connect() {
        let io = io_error(err);
        let reason = match io {
            Some(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                format!("no connection within {}s", CONNECT_TIMEOUT.as_secs())
            }
            Some(io) => strerror(io),
            None => innermost(err),
        };
        let mut answer = NoAnswer::new(
            "connect-failure",
            format!("upstream connect error: {where_}{authority}: {reason}"),
        );
        answer.refused = io.and_then(std::io::Error::raw_os_error) == Some(libc_econnrefused());
        return answer;
    }
    let hyper = find::<hyper::Error>(err);
    let why = match hyper {
        Some(h) if h.is_incomplete_message() || h.is_closed() || h.is_canceled() => {
            "the upstream closed the connection".to_string()
        }
        Some(h) => h.to_string(),
        None => err.to_string(),
    };
    NoAnswer::new("reset", format!("upstream reset before response: {why}"))
}

/// ECONNREFUSED on Linux (the sidecar's platform; the Python compares `errno.ECONNREFUSED`).
const fn libc_econnrefused() -> i32 {
    111
}

/// The text of the last error in `err`'s chain of sources (a resolver's, say).
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

fn io_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    find::<std::io::Error>(err)
}

fn find<'a, T: std::error::Error + 'static>(
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

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure_told_apart() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let sent = Upstream::new()
            .send(
                Transport::Plain,
                "127.0.0.1",
                port,
                &Method::GET,
                "/",
                HeaderMap::new(),
                super::super::body::empty(),
                "catalog-1",
            )
            .await;
        let Sent::NoAnswer(answer) = sent else {
            panic!("answered")
        };
        assert_eq!(answer.code, "connect-failure");
        assert!(answer.refused);
        assert_eq!(
            answer.message,
            format!("upstream connect error: catalog-1 at 127.0.0.1:{port}: Connection refused")
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
        let deadline = Instant::now() + Duration::from_secs(1);
        let err = Deadlined::new(body, deadline).collect().await.unwrap_err();
        assert!(err.downcast_ref::<StreamTimedOut>().is_some());
    }
}
