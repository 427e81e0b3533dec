//! The engine over real sockets on 127.0.0.1: a caller sidecar (`frontend`) and a callee
//! sidecar (`catalog`) in this process, in front of a tiny hyper app.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::listener;
use super::sidecar::{BoundPorts, Engine, Kind};
use crate::wire::bootstrap::Bootstrap;
use crate::wire::snapshot::{parse_snapshot, Snapshot};
use crate::wire::telemetry::Record;

/// The app: `/hello` tells what it got, `/flaky` fails its first two calls, `/wait`
/// never answers, `/status/N` answers N, `/echo` sends the body back.
pub(super) async fn app(hits: Arc<AtomicUsize>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let hits = hits.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let hits = hits.clone();
                    async move { Ok::<_, Infallible>(answer(request, hits).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

async fn answer(request: Request<Incoming>, hits: Arc<AtomicUsize>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let said = json!({
        "path": request.uri().to_string(),
        "source": header("x-devmesh-source"),
        "traceparent": header("traceparent"),
        "request_id": header("x-request-id"),
        "host": header("host"),
        "forwarded_for": header("x-forwarded-for"),
    });
    let n = hits.fetch_add(1, Ordering::SeqCst);
    let (status, body) = match path.as_str() {
        "/flaky" if n < 2 => (503, Bytes::from("not yet")),
        "/wait" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        "/echo" => (200, request.into_body().collect().await.unwrap().to_bytes()),
        p if p.starts_with("/status/") => (p[8..].parse().unwrap(), Bytes::from("status")),
        _ => (200, Bytes::from(said.to_string())),
    };
    Response::builder()
        .status(status)
        .header("x-devmesh-error", "forged by the app")
        .body(Full::new(body))
        .unwrap()
}

pub(super) struct Sidecar {
    pub(super) engine: Arc<Engine>,
    pub(super) ports: BoundPorts,
}

/// The bootstrap of a test sidecar of `service` (ports 0, a control plane never dialled).
pub(super) fn test_boot(service: &str, instance: &str, app_port: Option<u16>) -> Bootstrap {
    Bootstrap::from_value(&json!({
        "service": service, "version": "v1", "instance": instance,
        "control_plane": "http://127.0.0.1:1", "state_dir": std::env::temp_dir(),
        "inbound_port": 0, "outbound_port": 0, "app_port": app_port,
    }))
    .unwrap()
}

/// `engine` serving an outbound and an inbound listener on free ports until `stop`.
pub(super) async fn listening(engine: Arc<Engine>, stop: watch::Receiver<bool>) -> Sidecar {
    let out = listener::bind("127.0.0.1", 0).await.unwrap();
    let inb = listener::bind("127.0.0.1", 0).await.unwrap();
    let ports = BoundPorts {
        outbound: Some(out.local_addr().unwrap().port()),
        inbound: Some(inb.local_addr().unwrap().port()),
        gateway: Default::default(),
    };
    engine.set_ports(ports.clone());
    tokio::spawn(listener::serve(
        engine.clone(),
        out,
        Kind::Outbound,
        stop.clone(),
    ));
    tokio::spawn(listener::serve(engine.clone(), inb, Kind::Inbound, stop));
    Sidecar { engine, ports }
}

async fn sidecar(
    service: &str,
    instance: &str,
    app_port: Option<u16>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    stop: watch::Receiver<bool>,
) -> Sidecar {
    let boot = test_boot(service, instance, app_port);
    listening(Arc::new(Engine::new(boot, snapshots)), stop).await
}

struct Mesh {
    caller: Sidecar,
    callees: Vec<Sidecar>,
    hits: Arc<AtomicUsize>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    _stop: watch::Sender<bool>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Mesh {
    /// A caller and `n` callee instances of `catalog` (`catalog-1` v1, `catalog-2` v2, ...).
    async fn new(n: usize) -> Mesh {
        let (stop, stopped) = watch::channel(false);
        let (snapshot, snapshots) = watch::channel(Arc::new(Snapshot::default()));
        let hits = Arc::new(AtomicUsize::new(0));
        let app_port = app(hits.clone()).await;
        let caller = sidecar(
            "frontend",
            "frontend-1",
            None,
            snapshots.clone(),
            stopped.clone(),
        )
        .await;
        let mut callees = Vec::new();
        for i in 1..=n {
            let instance = format!("catalog-{i}");
            callees.push(
                sidecar(
                    "catalog",
                    &instance,
                    Some(app_port),
                    snapshots.clone(),
                    stopped.clone(),
                )
                .await,
            );
        }
        let mut client = Client::builder(TokioExecutor::new());
        client.set_host(false);
        Mesh {
            caller,
            callees,
            hits,
            snapshot,
            _stop: stop,
            client: client.build_http(),
        }
    }

    /// Route `catalog` to the callees with `policy` (and `extra` route fields).
    fn route(&self, policy: Value, extra: Value) {
        let endpoints: Vec<Value> = self
            .callees
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({"instance": s.engine.boot.instance, "version": format!("v{}", i + 1),
                       "address": format!("127.0.0.1:{}", s.ports.inbound.unwrap())})
            })
            .collect();
        let versions: Vec<String> = (1..=self.callees.len()).map(|i| format!("v{i}")).collect();
        let mut route = json!({"endpoints": endpoints, "versions": versions, "policy": policy});
        if let (Some(route), Some(extra)) = (route.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                route.insert(k.clone(), v.clone());
            }
        }
        let version = self.snapshot.borrow().version + 1;
        let snap =
            parse_snapshot(&json!({"version": version, "routes": {"catalog": route}})).unwrap();
        self.snapshot.send_replace(Arc::new(snap));
    }

    /// Call `host` + `path` through the caller's outbound listener.
    async fn call(
        &self,
        host: &str,
        path: &str,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), String> {
        let port = self.caller.ports.outbound.unwrap();
        let request = Request::builder()
            .uri(format!("http://127.0.0.1:{port}{path}"))
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    fn records(&self, sidecar: &Sidecar) -> Vec<Record> {
        sidecar.engine.telemetry.lock().unwrap().take(1000)
    }
}

/// Wait (at most 5 s) until `check` holds.
pub(super) async fn until(mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_call_reaches_the_app_with_the_mesh_headers_and_is_recorded_on_both_sides() {
    let mesh = Mesh::new(1).await;
    mesh.route(json!({}), json!({}));
    let (status, headers, body) = mesh.call("catalog", "/hello?x=1").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        headers.get("x-devmesh-error").is_none(),
        "an app's mesh header is removed"
    );
    let said: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        said["source"],
        Value::Null,
        "the source header is the sidecars' own"
    );
    assert_eq!(said["path"], "/hello?x=1");
    assert_eq!(said["host"], "catalog");
    assert!(said["traceparent"].as_str().unwrap().starts_with("00-"));
    assert!(said["request_id"].is_string());
    until(|| mesh.caller.engine.telemetry.lock().unwrap().len() == 1).await;
    let out = mesh.records(&mesh.caller);
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(
        (r.source.as_str(), r.destination.as_str(), r.status),
        ("frontend", "catalog", 200)
    );
    assert_eq!(
        (r.instance.as_str(), r.version.as_str(), r.retries),
        ("catalog-1", "v1", 0)
    );
    assert_eq!(r.path, "/hello");
    let callee = &mesh.callees[0];
    until(|| callee.engine.telemetry.lock().unwrap().len() == 1).await;
    let inb = mesh.records(callee);
    assert_eq!(inb[0].source, "frontend");
    assert_eq!(inb[0].direction, crate::wire::telemetry::Direction::Inbound);
    // The callee's span is the caller's child.
    assert_eq!(inb[0].parent_id, r.span_id);
    assert_eq!(inb[0].trace_id, r.trace_id);
}

#[tokio::test]
async fn a_request_body_is_streamed_both_ways() {
    let mesh = Mesh::new(1).await;
    mesh.route(json!({}), json!({}));
    let port = mesh.caller.ports.outbound.unwrap();
    let body = vec![b'z'; 200_000];
    let request = Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1:{port}/echo"))
        .header("host", "catalog")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let response = mesh.client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let got = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), body.len());
}

#[tokio::test]
async fn a_split_lands_on_both_versions_and_a_version_host_pins_one() {
    let mesh = Mesh::new(2).await;
    mesh.route(json!({}), json!({"split": {"v1": 50, "v2": 50}}));
    for _ in 0..40 {
        assert_eq!(mesh.call("catalog", "/hello").await.unwrap().0, 200);
    }
    until(|| mesh.caller.engine.telemetry.lock().unwrap().len() == 40).await;
    let records = mesh.records(&mesh.caller);
    let v2 = records.iter().filter(|r| r.version == "v2").count();
    assert!(v2 > 0 && v2 < 40, "v2 took {v2} of 40");
    for _ in 0..5 {
        mesh.call("catalog-v2", "/hello").await.unwrap();
    }
    until(|| mesh.caller.engine.telemetry.lock().unwrap().len() == 5).await;
    assert!(mesh.records(&mesh.caller).iter().all(|r| r.version == "v2"));
}

#[tokio::test]
async fn a_retry_policy_retries_5xx_until_the_app_answers() {
    let mesh = Mesh::new(1).await;
    mesh.route(
        json!({"retries": {"attempts": 3, "retry_on": ["5xx"]}}),
        json!({}),
    );
    let (status, _, _) = mesh.call("catalog", "/flaky").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(mesh.hits.load(Ordering::SeqCst), 3);
    until(|| mesh.caller.engine.telemetry.lock().unwrap().len() == 1).await;
    assert_eq!(mesh.records(&mesh.caller)[0].retries, 2);
}

#[tokio::test]
async fn a_connect_failure_fails_over_to_another_endpoint_once() {
    let mesh = Mesh::new(2).await;
    mesh.route(json!({}), json!({}));
    // The first endpoint's address now points at a closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    let second = mesh.callees[1].ports.inbound.unwrap();
    let snap = parse_snapshot(&json!({"version": 9, "routes": {"catalog": {"endpoints": [
        {"instance": "catalog-1", "version": "v1", "address": format!("127.0.0.1:{dead}")},
        {"instance": "catalog-2", "version": "v1", "address": format!("127.0.0.1:{second}")}]}}}))
    .unwrap();
    mesh.snapshot.send_replace(Arc::new(snap));
    for _ in 0..12 {
        assert_eq!(mesh.call("catalog", "/hello").await.unwrap().0, 200);
    }
    // Each try on the dead endpoint fed its breaker: five connect failures (every other
    // call's first try, round robin) ejected it; the calls after it try it no more.
    until(|| mesh.caller.engine.telemetry.lock().unwrap().len() == 12).await;
    let records = mesh.records(&mesh.caller);
    assert!(records.iter().all(|r| r.instance == "catalog-2"));
    assert!(records.iter().any(|r| r.retries == 1), "failed over");
    assert!(
        records.iter().rev().take(2).all(|r| r.retries == 0),
        "ejected: not tried"
    );
    let (breakers, troubled) = mesh
        .caller
        .engine
        .destinations
        .lock()
        .unwrap()
        .breakers(Instant::now());
    assert!(troubled);
    assert_eq!(breakers["catalog"]["state"], "open");
    assert_eq!(breakers["catalog"]["instance"], "catalog-1");
}

#[tokio::test]
async fn an_abort_fault_answers_503_marked_injected() {
    let mesh = Mesh::new(1).await;
    mesh.route(
        json!({"faults": [{"id": "f1", "abort_status": 503}]}),
        json!({}),
    );
    let (status, headers, body) = mesh.call("catalog", "/hello").await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(headers["x-devmesh-fault"], "f1");
    assert_eq!(&body[..], b"fault f1 injected by devmesh\n");
    assert_eq!(
        mesh.hits.load(Ordering::SeqCst),
        0,
        "the app was not called"
    );
    until(|| mesh.caller.engine.telemetry.lock().unwrap().len() == 1).await;
    assert_eq!(mesh.records(&mesh.caller)[0].fault.as_deref(), Some("f1"));
}

#[tokio::test]
async fn a_reset_fault_resets_the_callers_connection() {
    let mesh = Mesh::new(1).await;
    mesh.route(
        json!({"faults": [{"id": "r", "abort_reset": true}]}),
        json!({}),
    );
    assert!(mesh.call("catalog", "/hello").await.is_err());
    until(|| mesh.caller.engine.telemetry.lock().unwrap().len() == 1).await;
    let r = &mesh.records(&mesh.caller)[0];
    assert_eq!((r.status, r.error.as_deref()), (0, Some("reset")));
}

#[tokio::test]
async fn a_bandwidth_fault_paces_the_answer() {
    let mesh = Mesh::new(1).await;
    mesh.route(
        json!({"faults": [{"id": "slow", "bandwidth": 20000}]}),
        json!({}),
    );
    let start = Instant::now();
    let (status, _, body) = mesh.call("catalog", "/hello").await.unwrap();
    assert_eq!(status, 200);
    // The body (some 200 bytes) goes in pieces of 400 bytes: no slower than one piece.
    assert!(!body.is_empty());
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_route_timeout_answers_504_and_a_per_try_timeout_is_retried() {
    let mesh = Mesh::new(1).await;
    mesh.route(json!({"timeout": 0.2}), json!({}));
    let (status, headers, body) = mesh.call("catalog", "/wait").await.unwrap();
    assert_eq!(status, 504);
    assert_eq!(headers["x-devmesh-error"], "timeout");
    assert_eq!(
        &body[..],
        b"upstream request timeout: catalog did not answer within 0.2s\n"
    );
    mesh.route(
        json!({"retries": {"attempts": 2, "per_try_timeout": 0.1, "retry_on": ["gateway-error"]}}),
        json!({}),
    );
    let (status, _, body) = mesh.call("catalog", "/wait").await.unwrap();
    assert_eq!(status, 504);
    assert_eq!(&body[..], b"catalog-1 did not answer within 0.1s\n");
    until(|| mesh.caller.engine.telemetry.lock().unwrap().len() == 2).await;
    assert_eq!(mesh.records(&mesh.caller)[1].retries, 1);
}

#[tokio::test]
async fn a_late_request_body_is_the_callers_408() {
    let mesh = Mesh::new(1).await;
    mesh.route(json!({"timeout": 0.2}), json!({}));
    let port = mesh.caller.ports.outbound.unwrap();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: catalog\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("x-devmesh-error: body-timeout"), "{text}");
}

#[tokio::test]
async fn a_full_pool_overflows_with_503() {
    let mesh = Mesh::new(1).await;
    mesh.route(
        json!({"pool": {"max_connections": 1, "max_pending": 1}, "timeout": 5}),
        json!({}),
    );
    let waiting = || {
        let client = mesh.client.clone();
        let port = mesh.caller.ports.outbound.unwrap();
        tokio::spawn(async move {
            let request = Request::builder()
                .uri(format!("http://127.0.0.1:{port}/wait"))
                .header("host", "catalog")
                .body(Full::new(Bytes::new()))
                .unwrap();
            client.request(request).await.map(|r| r.status())
        })
    };
    let first = waiting();
    let second = waiting();
    let engine = mesh.caller.engine.clone();
    until(|| {
        let snapshot = engine.snapshot();
        let mut all = engine.destinations.lock().unwrap();
        all.get(&snapshot, "catalog", Instant::now())
            .is_some_and(|d| d.gate.counts() == (1, 1))
    })
    .await;
    let (status, headers, body) = mesh.call("catalog", "/hello").await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(headers["x-devmesh-error"], "overflow");
    assert_eq!(
        String::from_utf8_lossy(&body),
        "too many requests to catalog at once (pool limits: 1 connections, 1 pending)\n"
    );
    first.abort();
    second.abort();
}

#[tokio::test]
async fn a_call_to_the_sidecars_own_listener_is_refused_as_a_loop() {
    let mesh = Mesh::new(1).await;
    let own = format!("127.0.0.1:{}", mesh.caller.ports.outbound.unwrap());
    let (status, headers, _) = mesh.call(&own, "/").await.unwrap();
    assert_eq!(status, 508);
    assert_eq!(headers["x-devmesh-error"], "loop");
}

#[tokio::test]
async fn a_host_outside_the_mesh_is_called_directly_with_its_mesh_headers_dropped() {
    let mesh = Mesh::new(1).await;
    mesh.route(json!({}), json!({}));
    // The app, by its own address: not a service of the mesh.
    let inbound = mesh.callees[0].ports.inbound.unwrap();
    let (status, headers, _) = mesh
        .call(&format!("127.0.0.1:{inbound}"), "/hello")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(headers.get("x-devmesh-error").is_none());
    until(|| mesh.caller.engine.telemetry.lock().unwrap().len() == 1).await;
    let r = &mesh.records(&mesh.caller)[0];
    assert_eq!((r.destination.as_str(), r.status), ("127.0.0.1", 200));
}

#[tokio::test]
async fn connect_is_refused_as_unsupported() {
    let mesh = Mesh::new(1).await;
    let port = mesh.caller.ports.outbound.unwrap();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 501"), "{text}");
    assert!(
        text.contains("x-devmesh-error: tunnel-unsupported"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unknown_service_version_and_a_denied_call_are_the_meshs_answers() {
    let mesh = Mesh::new(1).await;
    mesh.route(json!({}), json!({}));
    let port = mesh.caller.ports.outbound.unwrap();
    let request = Request::builder()
        .uri(format!("http://127.0.0.1:{port}/hello"))
        .header("host", "catalog")
        .header("x-devmesh-version", "v9")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = mesh.client.request(request).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-devmesh-error"], "no-healthy-upstream");
    mesh.route(
        json!({}),
        json!({"authz": [{"name": "only-admin", "action": "allow", "sources": ["admin"]}]}),
    );
    let (status, headers, _) = mesh.call("catalog", "/hello").await.unwrap();
    assert_eq!(status, 403);
    assert_eq!(headers["x-devmesh-error"], "denied");
    assert!(headers.contains_key("x-devmesh-denied"));
}

#[tokio::test]
async fn a_head_over_the_limit_is_431() {
    let mesh = Mesh::new(1).await;
    let port = mesh.caller.ports.outbound.unwrap();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let big = "a".repeat(70 * 1024);
    let head = format!("GET / HTTP/1.1\r\nHost: catalog\r\nX-Big: {big}\r\n\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap_or(0);
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 431"));
}

#[tokio::test]
async fn a_gateway_listener_sends_its_service_traffic_from_ingress_with_one_forwarded_for() {
    let mesh = Mesh::new(1).await;
    mesh.route(json!({}), json!({}));
    let (_stop, stopped) = watch::channel(false);
    let gateway = listener::bind("127.0.0.1", 0).await.unwrap();
    let port = gateway.local_addr().unwrap().port();
    let kind = Kind::Gateway("catalog".into());
    tokio::spawn(listener::serve(
        mesh.caller.engine.clone(),
        gateway,
        kind,
        stopped,
    ));
    let request = Request::builder()
        .uri(format!("http://127.0.0.1:{port}/hello"))
        .header("host", "shop.localhost")
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-devmesh-source", "forged")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = mesh.client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let said: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(said["forwarded_for"], "10.1.2.3, 127.0.0.1");
    let callee = &mesh.callees[0];
    until(|| callee.engine.telemetry.lock().unwrap().len() == 1).await;
    assert_eq!(mesh.records(callee)[0].source, "ingress");
}

#[tokio::test]
async fn a_head_request_is_recorded_once_answered() {
    let mesh = Mesh::new(1).await;
    let port = mesh.caller.ports.outbound.unwrap();
    let request = Request::builder()
        .method("HEAD")
        .uri(format!("http://127.0.0.1:{port}/hello"))
        .header("host", "catalog")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = mesh.client.request(request).await.unwrap();
    // No route yet: `catalog` is a host outside the mesh, which does not resolve.
    assert_eq!(response.status(), 503);
    until(|| mesh.caller.engine.telemetry.lock().unwrap().len() == 1).await;
    let r = &mesh.records(&mesh.caller)[0];
    assert_eq!(
        (r.status, r.error.as_deref()),
        (503, Some("connect-failure"))
    );
}

#[tokio::test]
async fn a_caller_that_hangs_up_while_it_waits_is_a_downstream_reset() {
    let mesh = Mesh::new(1).await;
    mesh.route(json!({}), json!({}));
    let port = mesh.caller.ports.outbound.unwrap();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /wait HTTP/1.1\r\nHost: catalog\r\n\r\n")
        .await
        .unwrap();
    until(|| mesh.hits.load(Ordering::SeqCst) == 1).await;
    // A reset (SO_LINGER 0): a plain close is a half-close, after which the caller may
    // still read its answer, so the sidecar keeps waiting for it (as the Python does).
    stream.set_zero_linger().unwrap();
    drop(stream);
    until(|| mesh.caller.engine.telemetry.lock().unwrap().len() == 1).await;
    let r = &mesh.records(&mesh.caller)[0];
    assert_eq!(
        (r.status, r.error.as_deref()),
        (0, Some("downstream-reset"))
    );
}
