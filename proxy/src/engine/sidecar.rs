//! The sidecar's data plane (`proxy/server.py`): the [`Engine`] every listener shares, and
//! the handler of each kind of listener:
//!
//! - outbound: the instance's own calls, as an HTTP proxy (`HTTP_PROXY`, absolute-form
//!   targets) or with a plain `Host`; a mesh service goes through the call pipeline
//!   (`outbound`), any other host is called directly (Istio's `ALLOW_ANY`), where a
//!   redirected connection goes where it was going (`SO_ORIGINAL_DST`), never to one of
//!   this sidecar's own listeners (508 `loop`); `CONNECT` is refused (501);
//! - inbound: calls from other sidecars, judged by the service's authorization policies
//!   and handed to the app on `127.0.0.1:<app_port>` through the app gate;
//! - gateway: traffic entering the mesh from the host, bound for one service (source
//!   `ingress`, one `X-Forwarded-For` entry added).
//!
//! Every request ends in exactly one telemetry record (`record`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::watch;

use super::appgate::{AppGate, HOLD_LIMIT};
use super::body::{ProxyBody, Watched, MAX_BODY};
use super::destinations::Destinations;
use super::headers::{append_forwarded_for, forwardable, trace_hop, DENIED_HEADER, SOURCE_HEADER};
use super::outbound::{self, Call};
use super::record::Recorder;
use super::upstream::{relay, Abort, NoAnswer, RelayOptions, Sent, Transport, Upstream};
use crate::policy::deadline::py_g;
use crate::policy::router;
use crate::security::authz::{canonical_target, evaluate, percent_decoded};
use crate::wire::bootstrap::Bootstrap;
use crate::wire::snapshot::Snapshot;
use crate::wire::telemetry::{Direction, TelemetryBuffer};

/// The source name of traffic that enters the mesh through the gateway.
pub const GATEWAY_SOURCE: &str = "ingress";
/// The source name of inbound traffic that did not come through a sidecar.
pub const EXTERNAL_SOURCE: &str = "external";

/// The ports the listeners are bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundPorts {
    pub inbound: Option<u16>,
    pub outbound: Option<u16>,
    pub gateway: std::collections::BTreeMap<String, u16>,
}

/// Which handler a listener's requests go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Outbound,
    Inbound,
    /// A gateway listener, for this service.
    Gateway(String),
}

/// What is known of the connection a request came on.
///
/// **The mTLS seam (inbound).** `principal` is the peer's proven identity (its SPIFFE
/// ID) when the accepted stream was an mTLS one: the listener, given the service's mode
/// and this sidecar's identity, runs the rustls handshake on the accepted `TcpStream`
/// and serves the TLS stream instead, with the principal the peer's certificate names;
/// plaintext connections have none (and their source is what `x-devmesh-source` says).
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Where a redirected connection was going (outbound listener only).
    pub original_dst: Option<SocketAddr>,
    pub principal: Option<String>,
    /// Set to close the connection with a TCP RST (an injected reset or hang).
    pub reset: Arc<AtomicBool>,
}

/// What the control link reads from the data plane and drives in it.
#[derive(Clone)]
pub struct DataPlane {
    pub telemetry: Arc<Mutex<TelemetryBuffer>>,
    pub destinations: Arc<Mutex<Destinations>>,
    /// Set when a breaker changed (report at once).
    pub breakers_changed: Arc<AtomicBool>,
    pub app_gate: Arc<AppGate>,
}

/// The data plane of one instance (or of the gateway).
pub struct Engine {
    pub boot: Bootstrap,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    pub destinations: Arc<Mutex<Destinations>>,
    pub telemetry: Arc<Mutex<TelemetryBuffer>>,
    pub breakers_changed: Arc<AtomicBool>,
    pub app_gate: Arc<AppGate>,
    pub upstream: Upstream,
    ports: Mutex<BoundPorts>,
}

impl Engine {
    /// The engine of `boot`, following the snapshots of `snapshots`.
    pub fn new(boot: Bootstrap, snapshots: watch::Receiver<Arc<Snapshot>>) -> Self {
        let changed = Arc::new(AtomicBool::new(true));
        Engine {
            boot,
            snapshots,
            destinations: Arc::new(Mutex::new(Destinations::new(changed.clone()))),
            telemetry: Arc::new(Mutex::new(TelemetryBuffer::default())),
            breakers_changed: changed,
            app_gate: Arc::new(AppGate::default()),
            upstream: Upstream::new(),
            ports: Mutex::new(BoundPorts::default()),
        }
    }

    /// The handles the control link needs.
    pub fn data_plane(&self) -> DataPlane {
        DataPlane {
            telemetry: self.telemetry.clone(),
            destinations: self.destinations.clone(),
            breakers_changed: self.breakers_changed.clone(),
            app_gate: self.app_gate.clone(),
        }
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// The ports bound (for the loop guard).
    pub fn set_ports(&self, ports: BoundPorts) {
        *self.ports.lock().expect("ports") = ports;
    }

    pub fn ports(&self) -> BoundPorts {
        self.ports.lock().expect("ports").clone()
    }

    /// Handle one request that came to a listener of `kind`.
    pub async fn handle(
        self: Arc<Self>,
        kind: Kind,
        conn: Arc<ConnInfo>,
        request: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Abort> {
        let start = Instant::now();
        match &kind {
            Kind::Outbound => self.outbound(&conn, request, start).await,
            Kind::Inbound => self.inbound(&conn, request, start).await,
            Kind::Gateway(service) => {
                let service = service.clone();
                self.to_service(&conn, request, &service, GATEWAY_SOURCE, None, start)
                    .await
            }
        }
    }

    fn recorder(
        &self,
        direction: Direction,
        source: &str,
        destination: &str,
        head: &Head,
        start: Instant,
    ) -> Recorder {
        Recorder::new(
            self.telemetry.clone(),
            direction,
            source,
            destination,
            head.method.as_str(),
            &head.path,
            start,
        )
    }

    async fn outbound(
        &self,
        conn: &ConnInfo,
        request: Request<Incoming>,
        start: Instant,
    ) -> Result<Response<ProxyBody>, Abort> {
        let head = Head::of(&request);
        if request.method() == Method::CONNECT {
            let mut rec = self.recorder(
                Direction::Outbound,
                &self.boot.service,
                &head.host,
                &head,
                start,
            );
            let sent = NoAnswer::new(
                "tunnel-unsupported",
                "devmesh proxies plain HTTP; CONNECT tunnels are not supported",
            )
            .with_status(501);
            let response = relay(
                Sent::NoAnswer(sent),
                &mut rec.outcome,
                RelayOptions::default(),
            )?;
            return Ok(rec.answer(response));
        }
        let snapshot = self.snapshot();
        let resolved = router::resolve(&head.host, |s| {
            snapshot.routes.get(s).map(|r| r.versions.as_slice())
        })
        .map(|(s, v)| (s.to_owned(), v.map(str::to_owned)));
        match resolved {
            Some((service, version)) => {
                let source = self.boot.service.clone();
                self.to_service(conn, request, &service, &source, version.as_deref(), start)
                    .await
            }
            None => self.passthrough(conn, request, head, start).await,
        }
    }

    async fn to_service(
        &self,
        conn: &ConnInfo,
        request: Request<Incoming>,
        service: &str,
        source: &str,
        version: Option<&str>,
        start: Instant,
    ) -> Result<Response<ProxyBody>, Abort> {
        let head = Head::of(&request);
        let mut rec = self.recorder(Direction::Outbound, source, service, &head, start);
        let (parts, body) = request.into_parts();
        let mut headers = forwardable(&parts.headers, true);
        if let Ok(value) = HeaderValue::from_str(source) {
            headers.insert(SOURCE_HEADER, value);
        }
        set_host(&mut headers, &head.authority);
        if source == GATEWAY_SOURCE {
            append_forwarded_for(&mut headers, Some(&conn.peer.ip().to_string()));
        }
        // As Envoy does by default: hyper answers "100 Continue" itself when the body is
        // first read, and the expectation is not passed on.
        headers.remove(http::header::EXPECT);
        rec.outcome.span = Some(trace_hop(&mut headers, &mut rand::rng()));
        if let Some(length) = head.content_length.filter(|n| *n > MAX_BODY) {
            let sent = NoAnswer::new(
                "body-too-large",
                format!(
                    "the request body ({length} bytes) is over the mesh's limit of {MAX_BODY} bytes"
                ),
            )
            .with_status(413);
            let trusted = RelayOptions {
                trusted: true,
                ..RelayOptions::default()
            };
            let response = relay(Sent::NoAnswer(sent), &mut rec.outcome, trusted)?;
            return Ok(rec.answer(response));
        }
        let (watched, state) = Watched::new(body);
        let call = Call {
            method: &parts.method,
            path_qs: &head.path_qs,
            path: &head.path,
            original: &parts.headers,
            headers,
            service,
            source,
            version,
        };
        let mut holds = Vec::new();
        let answered = outbound::call(
            self,
            call,
            watched.boxed(),
            state,
            head.content_length,
            &mut rec.outcome,
            &mut holds,
        )
        .await;
        for hold in holds {
            rec.hold(hold);
        }
        self.answer(conn, rec, answered)
    }

    /// Pass the answer on with its recorder, or end the connection (reset it if the
    /// outcome says an injected reset).
    fn answer(
        &self,
        conn: &ConnInfo,
        rec: Recorder,
        answered: Result<Response<ProxyBody>, Abort>,
    ) -> Result<Response<ProxyBody>, Abort> {
        match answered {
            Ok(response) => Ok(rec.answer(response)),
            Err(abort) => {
                if rec.outcome.error.as_deref() == Some("reset") {
                    conn.reset.store(true, Ordering::Relaxed);
                }
                rec.finish();
                Err(abort)
            }
        }
    }

    async fn passthrough(
        &self,
        conn: &ConnInfo,
        request: Request<Incoming>,
        head: Head,
        start: Instant,
    ) -> Result<Response<ProxyBody>, Abort> {
        let mut rec = self.recorder(
            Direction::Outbound,
            &self.boot.service,
            &head.host,
            &head,
            start,
        );
        let (parts, body) = request.into_parts();
        let mut headers = forwardable(&parts.headers, true);
        set_host(&mut headers, &head.authority);
        rec.outcome.span = Some(trace_hop(&mut headers, &mut rand::rng()));
        let (host, port) = match conn.original_dst {
            Some(original) => (original.ip().to_string(), original.port()),
            None => (head.host.clone(), head.port),
        };
        let sent = if self.is_own_listener(conn, &host, port) {
            NoAnswer::new(
                "loop",
                format!(
                    "{} is this sidecar's own listener: the request would loop; name a service \
                     of the mesh or an outside host",
                    head.authority
                ),
            )
            .with_status(508)
            .into_sent()
        } else {
            headers.remove(http::header::EXPECT);
            let (watched, _) = Watched::new(body);
            self.upstream
                .send(
                    Transport::Plain,
                    &host,
                    port,
                    &parts.method,
                    &head.path_qs,
                    headers,
                    watched.boxed(),
                    "",
                )
                .await
        };
        let answered = relay(sent, &mut rec.outcome, RelayOptions::default());
        self.answer(conn, rec, answered)
    }

    fn is_own_listener(&self, conn: &ConnInfo, host: &str, port: u16) -> bool {
        let ports = self.ports();
        let mine = ports.inbound == Some(port)
            || ports.outbound == Some(port)
            || ports.gateway.values().any(|p| *p == port);
        if !mine {
            return false;
        }
        let here = conn.local.ip().to_string();
        let local = [
            "localhost",
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "::",
            self.boot.listen_host.as_str(),
            self.boot.outbound_host.as_str(),
            here.as_str(),
        ];
        local.contains(&host)
    }

    async fn inbound(
        &self,
        conn: &ConnInfo,
        mut request: Request<Incoming>,
        start: Instant,
    ) -> Result<Response<ProxyBody>, Abort> {
        let principal = conn.principal.clone();
        let source = match &principal {
            Some(p) => service_of(p).to_owned(),
            None => request
                .headers()
                .get(SOURCE_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(EXTERNAL_SOURCE)
                .to_owned(),
        };
        let mut head = Head::of(&request);
        let mut rec = self.recorder(
            Direction::Inbound,
            &source,
            &self.boot.service,
            &head,
            start,
        );
        rec.outcome.instance = self.boot.instance.clone();
        rec.outcome.version = self.boot.version.clone();
        rec.outcome.mtls = principal.is_some();
        let untrusted = RelayOptions::default();
        let snapshot = self.snapshot();
        let route = snapshot.routes.get(&self.boot.service);
        let mut verdict = None;
        if let Some(route) = route.filter(|r| !r.authz.is_empty()) {
            match canonical_target(&head.target, &head.path_qs) {
                Err(why) => {
                    let sent = NoAnswer::new("bad-path", why).with_status(400).into_sent();
                    let response = relay(sent, &mut rec.outcome, untrusted)?;
                    return Ok(rec.answer(response));
                }
                Ok(Some(canonical)) => {
                    if let Ok(uri) = canonical.parse::<http::Uri>() {
                        *request.uri_mut() = uri;
                    }
                    head.path_qs = canonical;
                    let raw = head.path_qs.split('?').next().unwrap_or("");
                    head.path = percent_decoded(raw);
                }
                Ok(None) => {}
            }
            verdict = Some(evaluate(
                &route.authz,
                principal.as_deref(),
                &head.path,
                head.method.as_str(),
            ));
        }
        if let Some(audit) = verdict.as_ref().and_then(|v| v.audit.as_ref()) {
            rec.outcome.authz = Some(format!("audit:{}", audit.policy.as_deref().unwrap_or("")));
            tracing::info!("audit: {} (not enforced)", audit.reason);
        }
        if let Some(denied) = verdict.filter(|v| !v.allowed) {
            rec.outcome.authz = Some(format!("deny:{}", denied.policy.as_deref().unwrap_or("")));
            let mut sent = NoAnswer::new(
                "denied",
                format!("{}: {}", self.boot.service, denied.reason),
            )
            .with_status(403);
            sent.headers.push((DENIED_HEADER, denied.reason.clone()));
            let response = relay(sent.into_sent(), &mut rec.outcome, untrusted)?;
            return Ok(rec.answer(response));
        }
        let Some(app_port) = self.boot.app_port else {
            let sent = NoAnswer::new(
                "no-port",
                format!("{} declares no port to receive calls on", self.boot.service),
            );
            let response = relay(sent.into_sent(), &mut rec.outcome, untrusted)?;
            return Ok(rec.answer(response));
        };
        let Some(in_flight) = self.app_gate.enter().await else {
            let sent = NoAnswer::new(
                "app-restarting",
                format!(
                    "{} was held for its app's restart longer than {}s",
                    self.boot.instance,
                    py_g(HOLD_LIMIT.as_secs_f64())
                ),
            );
            let response = relay(sent.into_sent(), &mut rec.outcome, untrusted)?;
            return Ok(rec.answer(response));
        };
        rec.hold(in_flight);
        let (parts, body) = request.into_parts();
        let mut headers = forwardable(&parts.headers, false);
        headers.remove(SOURCE_HEADER);
        headers.remove(http::header::EXPECT);
        // The server span: the app's own calls, if it passes traceparent on, are its children.
        rec.outcome.span = Some(trace_hop(&mut headers, &mut rand::rng()));
        let (watched, _) = Watched::new(body);
        let sent = self
            .upstream
            .send(
                Transport::Plain,
                "127.0.0.1",
                app_port,
                &parts.method,
                &head.path_qs,
                headers,
                watched.boxed(),
                &self.boot.instance,
            )
            .await;
        let answered = relay(sent, &mut rec.outcome, untrusted);
        self.answer(conn, rec, answered)
    }
}

impl NoAnswer {
    fn into_sent(self) -> Sent {
        Sent::NoAnswer(self)
    }
}

/// The service a SPIFFE ID names (`spiffe://<domain>/<project>/<service>`): its last
/// path segment.
pub fn service_of(principal: &str) -> &str {
    principal.rsplit('/').next().unwrap_or(principal)
}

fn set_host(headers: &mut HeaderMap, authority: &str) {
    if let Ok(value) = HeaderValue::from_str(authority) {
        headers.insert(http::header::HOST, value);
    }
}

/// What the handlers read of a request's head.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: Method,
    /// The request target as it arrived.
    pub target: String,
    /// Its path and query.
    pub path_qs: String,
    /// Its path, percent-decoded.
    pub path: String,
    /// Where the caller asked to go: the absolute-form target's authority, else `Host`.
    pub authority: String,
    /// Its host, lower case, and port (80 if none).
    pub host: String,
    pub port: u16,
    pub content_length: Option<u64>,
}

impl Head {
    pub fn of<B>(request: &Request<B>) -> Head {
        let uri = request.uri();
        let path_qs = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let raw_path = path_qs.split('?').next().unwrap_or("").to_owned();
        let authority = match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(authority)) => authority.as_str().to_owned(),
            _ => request
                .headers()
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
        };
        let (host, port) = split_authority(&authority);
        Head {
            method: request.method().clone(),
            target: uri.to_string(),
            path: percent_decoded(&raw_path),
            path_qs,
            authority,
            host,
            port,
            content_length: request
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
        }
    }
}

/// `(host, port)` of an authority: lower case, the port 80 unless digits say otherwise,
/// an IPv6 literal without its brackets, user info dropped.
pub fn split_authority(authority: &str) -> (String, u16) {
    let mut host = authority.to_owned();
    let mut port = 80;
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            host = rest[..end].to_owned();
            if let Some(digits) = rest[end + 1..].strip_prefix(':') {
                if let Ok(p) = digits.parse::<u16>() {
                    if digits.bytes().all(|b| b.is_ascii_digit()) {
                        port = p;
                    }
                }
            }
        }
    } else if let Some((name, digits)) = authority.rsplit_once(':') {
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(p) = digits.parse::<u16>() {
                host = name.to_owned();
                port = p;
            }
        }
    }
    if let Some((_, after)) = host.rsplit_once('@') {
        host = after.to_owned();
    }
    (host.to_ascii_lowercase(), port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split_as_the_python_splits_them() {
        assert_eq!(split_authority("Catalog:8080"), ("catalog".into(), 8080));
        assert_eq!(split_authority("catalog"), ("catalog".into(), 80));
        assert_eq!(split_authority("[::1]:9000"), ("::1".into(), 9000));
        assert_eq!(split_authority("[::1]"), ("::1".into(), 80));
        assert_eq!(split_authority("user@host:81"), ("host".into(), 81));
        assert_eq!(split_authority("host:x"), ("host:x".into(), 80));
    }

    #[test]
    fn the_target_is_the_absolute_forms_else_the_host() {
        let request = Request::builder()
            .uri("http://catalog-v2:8080/items?q=%41")
            .header("host", "other")
            .body(())
            .unwrap();
        let head = Head::of(&request);
        assert_eq!((head.host.as_str(), head.port), ("catalog-v2", 8080));
        assert_eq!(head.path_qs, "/items?q=%41");
        let request = Request::builder()
            .uri("/a%20b")
            .header("host", "Catalog")
            .body(())
            .unwrap();
        let head = Head::of(&request);
        assert_eq!(
            (head.authority.as_str(), head.host.as_str()),
            ("Catalog", "catalog")
        );
        assert_eq!(head.path, "/a b");
    }

    #[test]
    fn a_principal_names_its_service_last() {
        assert_eq!(service_of("spiffe://devmesh.local/demo/catalog"), "catalog");
    }
}
