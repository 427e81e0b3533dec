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
//! **mTLS (outbound).** How a connection to an endpoint is made is the [`Transport`]:
//! `Plain` is the client above; `Mtls` goes through a second pooled `Client` per
//! expected peer identity (the destination service's SPIFFE ID), whose connector dials
//! with `HttpConnector` and then runs the rustls handshake with this sidecar's
//! identity (`security::mtls::connect`, secure naming). So the pools are apart by
//! construction: a plaintext connection is never reused for mTLS, nor an mTLS one for
//! another identity (as `httpclient.py` keys its pool by `(host, port, peer_id)`).
//! A renewed identity (another `Credentials`) replaces that identity's client: new
//! connections present the newest certificate, and the connections of the old client
//! finish the requests they carry. A failed handshake is a connect failure
//! (`upstream connect error: ...: the mTLS handshake failed: ...`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Method, Request, Uri, Version};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::security::mtls::{self, Credentials};

use super::body::{caller_body_error, find_source, ProxyBody};
use super::upstream::{NoAnswer, Sent};
use crate::wire::bootstrap::strerror;

/// How long a connection to an upstream may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle pooled connection is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How a connection to an upstream is made (see the module's note on mTLS).
#[derive(Debug, Clone)]
pub enum Transport {
    /// Plain TCP.
    Plain,
    /// mTLS with these credentials, the server proving it is a sidecar of `service`.
    Mtls {
        credentials: Arc<Credentials>,
        service: String,
    },
}

impl Transport {
    /// Whether it is mTLS.
    pub fn is_mtls(&self) -> bool {
        matches!(self, Transport::Mtls { .. })
    }
}

type MtlsClient = Client<MtlsConnector, ProxyBody>;
/// By expected peer SPIFFE ID: the credentials its client presents, and it.
type MtlsClients = HashMap<String, (Arc<Credentials>, MtlsClient)>;

/// The pooled HTTP/1.1 client to upstreams: one pool for plaintext, one per expected
/// peer identity for mTLS.
#[derive(Debug, Clone)]
pub struct Upstream {
    plain: Client<HttpConnector, ProxyBody>,
    mtls: Arc<Mutex<MtlsClients>>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream::new()
    }
}

impl Upstream {
    pub fn new() -> Self {
        let plain = pooled(plain_connector());
        Upstream {
            plain,
            mtls: Arc::default(),
        }
    }

    /// The mTLS client of `service`'s identity presenting `credentials` (a new one when
    /// the identity was renewed).
    fn mtls_client(&self, credentials: &Arc<Credentials>, service: &str) -> MtlsClient {
        let peer = credentials.peer_id(service);
        let mut all = self.mtls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((held, client)) = all.get(&peer) {
            if Arc::ptr_eq(held, credentials) {
                return client.clone();
            }
        }
        let connector = MtlsConnector {
            tcp: plain_connector(),
            credentials: credentials.clone(),
            service: Arc::from(service),
        };
        let client = pooled(connector);
        all.insert(peer, (credentials.clone(), client.clone()));
        client
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
        let sent = match &transport {
            Transport::Plain => self.plain.request(request).await,
            Transport::Mtls {
                credentials,
                service,
            } => {
                self.mtls_client(credentials, service)
                    .request(request)
                    .await
            }
        };
        match sent {
            Ok(response) => Sent::Response(response),
            Err(err) => Sent::NoAnswer(classify(&err, &where_, &authority)),
        }
    }
}

fn plain_connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    connector
}

fn pooled<C>(connector: C) -> Client<C, ProxyBody>
where
    C: hyper_util::client::legacy::connect::Connect + Clone,
{
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .set_host(false)
        .build(connector)
}

/// Dials with `HttpConnector`, then runs the mTLS handshake (`mtls::connect`): the
/// server must prove it is a sidecar of `service`.
#[derive(Clone)]
struct MtlsConnector {
    tcp: HttpConnector,
    credentials: Arc<Credentials>,
    service: Arc<str>,
}

impl std::fmt::Debug for MtlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsConnector")
            .field("service", &self.service)
            .finish()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for MtlsConnector {
    type Response = MtlsConn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<MtlsConn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dialing = self.tcp.call(uri);
        let credentials = self.credentials.clone();
        let service = self.service.clone();
        Box::pin(async move {
            let tcp = dialing.await?.into_inner();
            let handshake = mtls::connect(tcp, &credentials, &service);
            match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
                Ok(Ok(tls)) => Ok(MtlsConn(TokioIo::new(tls))),
                Ok(Err(err)) => Err(err.into()),
                // Told as the Python tells it: `no connection within 10s`.
                Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
            }
        })
    }
}

/// An mTLS connection to an upstream, as hyper reads and writes it.
struct MtlsConn(TokioIo<TlsStream<TcpStream>>);

impl Connection for MtlsConn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for MtlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for MtlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
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
    let hyper = find_source::<hyper::Error>(err);
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
    find_source::<std::io::Error>(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mtls_pools_are_one_per_expected_identity_and_a_renewal_starts_a_new_one() {
        use crate::security::mtls::tests::{Pki, PROJECT};
        let pki = Pki::new(PROJECT);
        let upstream = Upstream::new();
        let first = pki.credentials("frontend");
        upstream.mtls_client(&first, "catalog");
        upstream.mtls_client(&first, "catalog");
        upstream.mtls_client(&first, "orders");
        let held = |service: &str| {
            let all = upstream.mtls.lock().unwrap();
            all.get(&format!("{PROJECT}{service}"))
                .map(|(credentials, _)| credentials.clone())
        };
        assert_eq!(upstream.mtls.lock().unwrap().len(), 2);
        let renewed = pki.credentials("frontend");
        upstream.mtls_client(&renewed, "catalog");
        assert_eq!(upstream.mtls.lock().unwrap().len(), 2);
        assert!(Arc::ptr_eq(&held("catalog").unwrap(), &renewed));
        assert!(Arc::ptr_eq(&held("orders").unwrap(), &first));
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
}
