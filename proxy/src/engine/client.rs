//! The pooled HTTP/1.1 client to upstreams (`proxy/httpclient.py`), its errors classified
//! as the Python's are: a connect failure (ECONNREFUSED told apart), the caller's body
//! breaking off, or the upstream resetting.
//!
//! It is hyper-util's pooled ("legacy") `Client` over its `HttpConnector`: keep-alive
//! connections per `host:port`, idle ones closed after [`IDLE_TIMEOUT`], a connection the
//! upstream closed as a request went out tried once more on a new one (as the Python
//! pool does), and the connect timeout of [`CONNECT_TIMEOUT`]. It was chosen over a pool
//! of our own on `hyper::client::conn` because it already does all of that and the seam
//! below is enough for mTLS.
//!
//! **The mTLS seam (outbound).** How a connection to an endpoint is made is the
//! connector: [`Transport`] says which. `Transport::Plain` is this client; mTLS
//! (`security::mtls`) plugs in as another variant holding a second pooled `Client`
//! whose connector dials with `HttpConnector` and then runs the rustls handshake with
//! this sidecar's identity, checking the peer's SPIFFE ID (its pool keyed by the peer
//! id too, as `httpclient.py` keys its pool by `(host, port, peer_id)`). A failed
//! handshake is a connect failure (`the mTLS handshake failed: ...`).

use std::time::Duration;

use http::{HeaderMap, Method, Request, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::{caller_body_error, ProxyBody};
use super::upstream::{NoAnswer, Sent};
use crate::wire::bootstrap::strerror;

/// How long a connection to an upstream may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle pooled connection is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
