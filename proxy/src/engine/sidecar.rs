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

use super::appgate::AppGate;
use super::body::{ProxyBody, Watched, MAX_BODY};
use super::destinations::Destinations;
use super::front::Arrived;
use super::headers::{append_forwarded_for, forwardable, trace_hop, SOURCE_HEADER};
use super::outbound::{self, Call};
use super::record::Recorder;
use super::target::Head;
use super::upstream::{relay, Abort, NoAnswer, RelayOptions, Sent, Transport, Upstream};
use crate::control::health::HealthProbe;
use crate::policy::router;
use crate::security::mtls::{Credentials, CredentialsWatch, Refusals};
use crate::wire::bootstrap::Bootstrap;
use crate::wire::snapshot::{MtlsMode, Snapshot, DEFAULT_MTLS};
use crate::wire::telemetry::{Direction, TelemetryBuffer};

/// The source name of traffic that enters the mesh through the gateway.
pub const GATEWAY_SOURCE: &str = "ingress";

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
/// `principal` is the peer's proven identity (its SPIFFE ID) when the inbound gate
/// (`security::mtls::admit`) let the connection in over mTLS; plaintext connections
/// have none (and their source is what `x-devmesh-source` says).
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
    credentials: CredentialsWatch,
    /// The inbound connections the mTLS gate closed, by reason.
    pub refusals: Arc<Refusals>,
    /// Told when the app refuses a connection a request opens (passive health).
    health: Option<Arc<HealthProbe>>,
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
            credentials: watch::channel(None).1,
            refusals: Arc::new(Refusals::default()),
            health: None,
        }
    }

    /// The same, with this sidecar's identity as `credentials` publishes it (without:
    /// none, so plaintext only).
    pub fn with_credentials(mut self, credentials: CredentialsWatch) -> Self {
        self.credentials = credentials;
        self
    }

    /// The same, telling `health` when the app refuses a request's connection.
    pub fn with_health(mut self, health: Arc<HealthProbe>) -> Self {
        self.health = Some(health);
        self
    }

    /// The identity installed now, if any.
    pub fn credentials(&self) -> Option<Arc<Credentials>> {
        self.credentials.borrow().clone()
    }

    /// The identity as it changes (for the inbound gate).
    pub fn credentials_watch(&self) -> &CredentialsWatch {
        &self.credentials
    }

    /// The snapshot in force and each one after it.
    pub fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.clone()
    }

    /// The mTLS mode of this sidecar's own service in the snapshot in force.
    pub fn own_mode(&self) -> MtlsMode {
        mode_of(&self.snapshot(), &self.boot.service)
    }

    /// The app refused a connection a request opened: tell the health probe.
    pub(super) fn app_refused(&self, detail: String) {
        if let Some(health) = &self.health {
            health.observed_failure(detail);
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

    /// A recorder of a request that arrived at `start`.
    pub(super) fn recorder(
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
        let ended_empty = parts
            .extensions
            .get::<Arrived>()
            .is_some_and(|arrived| arrived.body_ended_empty);
        let (mut watched, state) = Watched::new(body);
        if ended_empty {
            // A chunked body that had ended, empty, with its head (the Python's `complete and
            // received == 0`): read to its end now (it is all here), so that it counts as an
            // empty body, one a failover can resend.
            while let Some(Ok(_)) = watched.frame().await {}
        }
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
    pub(super) fn answer(
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
}

/// The mTLS mode of `service` in `snapshot` (the default without a route).
pub fn mode_of(snapshot: &Snapshot, service: &str) -> MtlsMode {
    snapshot
        .routes
        .get(service)
        .map_or(DEFAULT_MTLS, |route| route.mtls)
}

fn set_host(headers: &mut HeaderMap, authority: &str) {
    if let Ok(value) = HeaderValue::from_str(authority) {
        headers.insert(http::header::HOST, value);
    }
}
