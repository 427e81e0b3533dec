//! mTLS through the engine over real sockets on 127.0.0.1: a caller sidecar
//! (`frontend`) and a callee sidecar (`catalog`) with identities of one test CA, by the
//! mode the snapshot gives `catalog`; and the passive health of the callee's app.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::sidecar::Engine;
use super::tests::{app, listening, test_boot, until, Sidecar};
use crate::control::health::{HealthProbe, Target};
use crate::security::mtls::tests::Pki;
use crate::security::mtls::{self, Credentials, Reason};
use crate::wire::messages::HealthState;
use crate::wire::snapshot::{parse_snapshot, Snapshot};
use crate::wire::telemetry::{Direction, Record};

const PROJECT: &str = "spiffe://devmesh.local/demo/";

async fn side(
    service: &str,
    app_port: Option<u16>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    stop: watch::Receiver<bool>,
    credentials: watch::Receiver<Option<Arc<Credentials>>>,
    health: Option<Arc<HealthProbe>>,
) -> Sidecar {
    let boot = test_boot(service, &format!("{service}-1"), app_port);
    let mut engine = Engine::new(boot, snapshots).with_credentials(credentials);
    if let Some(health) = health {
        engine = engine.with_health(health);
    }
    listening(Arc::new(engine), stop).await
}

/// A caller and a callee, each with the identity it is given (`None`: none).
struct Net {
    pki: Pki,
    caller: Sidecar,
    callee: Sidecar,
    snapshot: watch::Sender<Arc<Snapshot>>,
    identities: [watch::Sender<Option<Arc<Credentials>>>; 2],
    _stop: watch::Sender<bool>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Net {
    /// The caller `frontend`; the callee `catalog` presenting the identity of
    /// `callee_as` (`catalog`, or another service to test secure naming).
    async fn new(caller_identity: bool, callee_as: &str) -> Net {
        Net::with_app(caller_identity, callee_as, None, None).await
    }

    async fn with_app(
        caller_identity: bool,
        callee_as: &str,
        app_port: Option<u16>,
        health: Option<Arc<HealthProbe>>,
    ) -> Net {
        let pki = Pki::new(PROJECT);
        let (stop, stopped) = watch::channel(false);
        let (snapshot, snapshots) = watch::channel(Arc::new(Snapshot::default()));
        let app_port = match app_port {
            Some(port) => port,
            None => app(Arc::new(AtomicUsize::new(0))).await,
        };
        let caller_creds = watch::channel(caller_identity.then(|| pki.credentials("frontend")));
        let callee_creds = watch::channel(Some(pki.credentials(callee_as)));
        let caller = side(
            "frontend",
            None,
            snapshots.clone(),
            stopped.clone(),
            caller_creds.1,
            None,
        )
        .await;
        let callee = side(
            "catalog",
            Some(app_port),
            snapshots,
            stopped,
            callee_creds.1,
            health,
        )
        .await;
        let mut client = Client::builder(TokioExecutor::new());
        client.set_host(false);
        Net {
            pki,
            caller,
            callee,
            snapshot,
            identities: [caller_creds.0, callee_creds.0],
            _stop: stop,
            client: client.build_http(),
        }
    }

    /// Route `catalog` to the callee, its mode `mode`.
    fn route(&self, mode: &str) {
        let address = format!("127.0.0.1:{}", self.callee.ports.inbound.unwrap());
        let route = json!({"endpoints": [{"instance": "catalog-1", "version": "v1",
                                          "address": address}],
                           "versions": ["v1"], "policy": {}, "mtls": mode});
        let version = self.snapshot.borrow().version + 1;
        let snap =
            parse_snapshot(&json!({"version": version, "routes": {"catalog": route}})).unwrap();
        self.snapshot.send_replace(Arc::new(snap));
    }

    /// Call `catalog` through the caller's outbound listener.
    async fn call(&self, path: &str) -> (StatusCode, Bytes) {
        let port = self.caller.ports.outbound.unwrap();
        let request = Request::builder()
            .uri(format!("http://127.0.0.1:{port}{path}"))
            .header("host", "catalog")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    fn inbound_port(&self) -> u16 {
        self.callee.ports.inbound.unwrap()
    }
}

/// The records of `side` once it has `n`.
async fn records(side: &Sidecar, n: usize) -> Vec<Record> {
    until(|| side.engine.telemetry.lock().unwrap().len() >= n).await;
    side.engine.telemetry.lock().unwrap().take(1000)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A connection of our own to `port`: plaintext, or mTLS as `service` would call
/// `catalog`; its sender and the task driving it (it ends when the connection does).
async fn open(port: u16, tls: Option<&Credentials>) -> (Sender, JoinHandle<()>) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    match tls {
        None => {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            (sender, tokio::spawn(async move { drop(conn.await) }))
        }
        Some(credentials) => {
            let tls = mtls::connect(tcp, credentials, "catalog").await.unwrap();
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            (sender, tokio::spawn(async move { drop(conn.await) }))
        }
    }
}

/// Send `GET /hello`, saying source `forged`, on `sender`.
async fn get(sender: &mut Sender) -> Result<StatusCode, hyper::Error> {
    let request = Request::builder()
        .uri("/hello")
        .header("host", "catalog")
        .header("x-devmesh-source", "forged")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

#[tokio::test]
async fn strict_sidecars_call_each_other_over_mtls_and_the_callee_knows_the_caller() {
    let net = Net::new(true, "catalog").await;
    net.route("strict");
    for _ in 0..3 {
        assert_eq!(net.call("/hello").await.0, 200);
    }
    let out = records(&net.caller, 3).await;
    assert!(out.iter().all(|r| r.mtls && r.status == 200), "{out:?}");
    let inb = records(&net.callee, 3).await;
    assert!(inb
        .iter()
        .all(|r| r.mtls && r.source == "frontend" && r.direction == Direction::Inbound));
    // The proven principal is the source, whatever the header says.
    let orders = net.pki.credentials("orders");
    let (mut sender, _conn) = open(net.inbound_port(), Some(&orders)).await;
    assert_eq!(get(&mut sender).await.unwrap(), 200);
    let inb = records(&net.callee, 1).await;
    assert_eq!((inb[0].source.as_str(), inb[0].mtls), ("orders", true));
}

#[tokio::test]
async fn strict_refuses_a_plaintext_client_before_reading_it() {
    let net = Net::new(true, "catalog").await;
    net.route("strict");
    let mut tcp = TcpStream::connect(("127.0.0.1", net.inbound_port()))
        .await
        .unwrap();
    tcp.write_all(b"GET /hello HTTP/1.1\r\nhost: catalog\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got).await;
    assert!(
        got.is_empty(),
        "answered {:?}",
        String::from_utf8_lossy(&got)
    );
    until(|| net.callee.engine.refusals.count(Reason::Plaintext) == 1).await;
    assert!(net.callee.engine.telemetry.lock().unwrap().is_empty());
}

#[tokio::test]
async fn strict_without_an_identity_the_caller_answers_no_identity() {
    let net = Net::new(false, "catalog").await;
    net.route("strict");
    let (status, body) = net.call("/hello").await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        "catalog takes only mTLS calls and this sidecar has no identity yet \
         (its control plane gives it one)\n"
    );
    let out = records(&net.caller, 1).await;
    assert_eq!(out[0].error.as_deref(), Some("no-identity"));
    assert!(!out[0].mtls);
}

#[tokio::test]
async fn permissive_takes_mtls_and_plaintext_and_the_plaintext_source_is_the_header() {
    let net = Net::new(true, "catalog").await;
    net.route("permissive");
    assert_eq!(net.call("/hello").await.0, 200);
    assert!(records(&net.caller, 1).await[0].mtls);
    let inb = records(&net.callee, 1).await;
    assert_eq!((inb[0].source.as_str(), inb[0].mtls), ("frontend", true));
    let (mut sender, _conn) = open(net.inbound_port(), None).await;
    assert_eq!(get(&mut sender).await.unwrap(), 200);
    let inb = records(&net.callee, 1).await;
    assert_eq!((inb[0].source.as_str(), inb[0].mtls), ("forged", false));
}

#[tokio::test]
async fn off_calls_in_plaintext_and_refuses_tls() {
    let net = Net::new(true, "catalog").await;
    net.route("off");
    assert_eq!(net.call("/hello").await.0, 200);
    assert!(!records(&net.caller, 1).await[0].mtls);
    let inb = records(&net.callee, 1).await;
    assert_eq!((inb[0].source.as_str(), inb[0].mtls), ("frontend", false));
    let frontend = net.pki.credentials("frontend");
    let tcp = TcpStream::connect(("127.0.0.1", net.inbound_port()))
        .await
        .unwrap();
    assert!(mtls::connect(tcp, &frontend, "catalog").await.is_err());
    until(|| net.callee.engine.refusals.count(Reason::TlsUnavailable) == 1).await;
}

#[tokio::test]
async fn a_callee_proving_another_service_is_refused_by_the_caller() {
    let net = Net::new(true, "orders").await;
    net.route("strict");
    let (status, body) = net.call("/hello").await;
    assert_eq!(status, 503);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains(&format!(
            "its certificate names {PROJECT}orders, not {PROJECT}catalog"
        )),
        "{text}"
    );
    let out = records(&net.caller, 1).await;
    assert_eq!(out[0].error.as_deref(), Some("connect-failure"));
    assert!(net.callee.engine.telemetry.lock().unwrap().is_empty());
}

#[tokio::test]
async fn permissive_to_strict_closes_open_plaintext_connections_and_keeps_mtls_ones() {
    let net = Net::new(true, "catalog").await;
    net.route("permissive");
    let (mut plain, plain_conn) = open(net.inbound_port(), None).await;
    assert_eq!(get(&mut plain).await.unwrap(), 200);
    let frontend = net.pki.credentials("frontend");
    let (mut tls, tls_conn) = open(net.inbound_port(), Some(&frontend)).await;
    assert_eq!(get(&mut tls).await.unwrap(), 200);
    net.route("strict");
    until(|| plain_conn.is_finished()).await;
    assert!(get(&mut plain).await.is_err());
    assert_eq!(get(&mut tls).await.unwrap(), 200);
    assert!(!tls_conn.is_finished());
}

#[tokio::test]
async fn a_renewed_identity_serves_new_connections_and_calls_go_on() {
    let net = Net::new(true, "catalog").await;
    net.route("strict");
    assert_eq!(net.call("/hello").await.0, 200);
    // Renew both sides: calls go on, pooled connections or new ones.
    net.identities[0].send_replace(Some(net.pki.credentials("frontend")));
    net.identities[1].send_replace(Some(net.pki.credentials("catalog")));
    for _ in 0..5 {
        assert_eq!(net.call("/hello").await.0, 200);
    }
    assert!(records(&net.caller, 6).await.iter().all(|r| r.mtls));
}

#[tokio::test]
async fn an_app_refusing_a_request_turns_a_ready_instance_unhealthy_at_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let health = Arc::new(HealthProbe::new(Target {
        app_port: Some(port),
        path: None,
    }));
    health.probe_now().await;
    assert_eq!(health.health().state, HealthState::Ready);
    drop(listener);
    let net = Net::with_app(true, "catalog", Some(port), Some(health.clone())).await;
    net.route("strict");
    let (status, _) = net.call("/hello").await;
    assert_eq!(status, 503);
    let health = health.health();
    assert_eq!(health.state, HealthState::Unhealthy);
    assert_eq!(
        health.detail,
        format!("connection refused on 127.0.0.1:{port} by a request")
    );
}
