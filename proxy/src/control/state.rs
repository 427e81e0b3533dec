//! What the control link keeps across links and how it answers the control plane, apart
//! from the socket: the snapshot in force (published on a `watch` channel, the last good
//! one written to disk), the identity, the hold of the app, and the health to report.
//!
//! Snapshots are parsed: a good one becomes the one in force and is acked; a bad one is
//! nacked with the error's text and the previous one stays. Identities are written to
//! disk and acked with their fingerprint. A hold closes the app gate of the data plane
//! (`engine::appgate`) and is answered `held` once no call is with the app (or after
//! `DRAIN_LIMIT`, with how many still are); while held, the health reported is the one
//! it had when the hold began; a release opens the gate, probes the app at once, reports
//! that and says `released`; a hold never released ends by itself after `HOLD_LIMIT`.
//!
//! With a data plane ([`LinkState::with_data_plane`]) it also sends, as
//! `proxy/control.py` does, the `breakers` of every destination (at once on a change,
//! and each [`BREAKER_REFRESH`] while one is not closed) and the `telemetry` records in
//! batches of at most [`BATCH_LIMIT`], with the count of those dropped.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::health::{HealthProbe, Tracker};
use super::identity::IdentityStore;
use super::kept;
use super::liveness::Hold;
use crate::engine::appgate::DRAIN_LIMIT;
use crate::engine::sidecar::DataPlane;
use crate::security::mtls::CredentialsWatch;
use crate::wire::bootstrap::{Bootstrap, AUTO};
use crate::wire::messages::{decode, Decoded, FromControl, Health, Node, ToControl};
use crate::wire::snapshot::{parse_snapshot, Snapshot};
use crate::wire::telemetry::Record;

/// The most records in one `telemetry` message.
pub const BATCH_LIMIT: usize = 1000;
/// While a breaker is not closed, the breakers are sent this often.
pub const BREAKER_REFRESH: Duration = Duration::from_secs(1);

/// The link's state across links.
pub struct LinkState {
    data: Option<DataPlane>,
    /// A hold waits for the calls with the app to end, until then.
    held_due: Option<Instant>,
    breakers_looked: Option<Instant>,
    boot: Bootstrap,
    health: Arc<HealthProbe>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    identity: IdentityStore,
    hold: Hold,
    health_at_hold: Option<Health>,
    health_dirty: bool,
    say_released: bool,
}

impl LinkState {
    /// The state for `boot`, starting from the last good snapshot and the identity kept
    /// on disk, if any.
    pub fn new(boot: Bootstrap, health: Arc<HealthProbe>) -> Self {
        let start = match kept::load(&boot.snapshot_file()) {
            Some(snapshot) => {
                info!(
                    "starting from last good snapshot {} kept on disk",
                    snapshot.version
                );
                snapshot
            }
            None => empty_snapshot(),
        };
        let mut identity = IdentityStore::new(boot.identity_dir());
        if identity.load_kept(unix_now()).is_some() {
            info!("starting with the identity kept on disk");
        }
        LinkState {
            data: None,
            held_due: None,
            breakers_looked: None,
            boot,
            health,
            snapshot: watch::channel(Arc::new(start)).0,
            identity,
            hold: Hold::default(),
            health_at_hold: None,
            health_dirty: true,
            say_released: false,
        }
    }

    /// The data plane whose telemetry and breakers to send, and whose app gate a hold
    /// closes.
    pub fn with_data_plane(mut self, data: DataPlane) -> Self {
        self.data = Some(data);
        self
    }

    pub fn boot(&self) -> &Bootstrap {
        &self.boot
    }

    /// The snapshot in force, and each one taken after it.
    pub fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.subscribe()
    }

    /// This sidecar's identity, loaded for mTLS, and each one installed after it (the
    /// engine's inbound gate and outbound calls take the newest for each connection).
    pub fn credentials(&self) -> CredentialsWatch {
        self.identity.credentials()
    }

    /// Follow the probe's changes of health.
    pub fn health_changes(&self) -> watch::Receiver<Tracker> {
        self.health.subscribe()
    }

    /// The health is to be reported (the probe's changed, or a link is new).
    pub fn health_changed(&mut self) {
        self.health_dirty = true;
    }

    /// The hello that opens each link.
    pub fn hello(&self) -> ToControl {
        let ports_inbound = self.boot.inbound_port;
        let inbound = (ports_inbound != 0).then(|| {
            let host = if self.boot.advertise_host == AUTO {
                address_towards(&self.boot.control_plane)
            } else {
                self.boot.advertise_host.clone()
            };
            format!("{host}:{ports_inbound}")
        });
        ToControl::Hello {
            node: Node {
                service: self.boot.service.clone(),
                version: self.boot.version.clone(),
                instance: self.boot.instance.clone(),
                role: self.boot.role.as_str().to_string(),
                inbound,
                health_check: self.health.target().describe(),
            },
            snapshot_version: self.snapshot.borrow().version,
            health: self.reported_health(),
        }
    }

    /// The health to report: the probe's, or while the app is held the one it had then.
    fn reported_health(&self) -> Health {
        self.health_at_hold
            .clone()
            .unwrap_or_else(|| self.health.health())
    }

    /// What to send now: the health if it changed (not while held), `released` when a
    /// hold ended (by a release, or by itself at `now`).
    pub fn pending(&mut self, now: Instant) -> Vec<ToControl> {
        if self.hold.expire(now) {
            info!("the hold of the app ended by itself");
            self.released();
        }
        let mut out = Vec::new();
        if self.health_dirty && self.health_at_hold.is_none() {
            self.health_dirty = false;
            out.push(ToControl::Health(self.reported_health()));
        }
        if let (Some(due), Some(data)) = (self.held_due, &self.data) {
            let in_flight = data.app_gate.in_flight();
            if in_flight == 0 || now >= due {
                self.held_due = None;
                info!("holding calls to the app ({in_flight} still in flight)");
                out.push(ToControl::Held {
                    in_flight: in_flight as u64,
                });
            }
        }
        if let Some(data) = &self.data {
            let dirty = data.breakers_changed.load(Ordering::Relaxed);
            let look = dirty
                || self
                    .breakers_looked
                    .is_none_or(|at| now.saturating_duration_since(at) >= BREAKER_REFRESH);
            if look {
                self.breakers_looked = Some(now);
                let snapshot = self.snapshot.borrow().clone();
                let mut destinations = data.destinations.lock().expect("destinations");
                destinations.sync(&snapshot, now); // as the Python follows each snapshot
                let (breakers, troubled) = destinations.breakers(now);
                drop(destinations);
                if dirty || troubled {
                    data.breakers_changed.store(false, Ordering::Relaxed);
                    out.push(ToControl::Breakers { breakers });
                }
            }
            let mut telemetry = data.telemetry.lock().expect("telemetry");
            while !telemetry.is_empty() {
                let records = telemetry.take(BATCH_LIMIT);
                let dropped = std::mem::take(&mut telemetry.dropped);
                out.push(ToControl::Telemetry {
                    records: records.iter().map(|r| r.to_wire()).collect(),
                    dropped,
                });
            }
            if telemetry.dropped > 0 {
                let dropped = std::mem::take(&mut telemetry.dropped);
                out.push(ToControl::Telemetry {
                    records: Vec::new(),
                    dropped,
                });
            }
        }
        if std::mem::take(&mut self.say_released) {
            out.push(ToControl::Released);
        }
        out
    }

    /// Messages of [`LinkState::pending`] that could not be sent (the link broke): the
    /// telemetry records go back to the front of their buffer (with their dropped count),
    /// the breakers are to be sent again, a health report or a `released` is said again.
    pub fn put_back(&mut self, messages: Vec<ToControl>) {
        // The last batch first: each goes to the front of the buffer.
        for message in messages.into_iter().rev() {
            match message {
                ToControl::Telemetry { records, dropped } => {
                    let Some(data) = &self.data else { continue };
                    let records: Vec<Record> = records
                        .into_iter()
                        .filter_map(|r| serde_json::from_value(r).ok())
                        .collect();
                    let mut buffer = data.telemetry.lock().expect("telemetry");
                    buffer.put_back(records);
                    buffer.dropped += dropped;
                }
                ToControl::Breakers { .. } => {
                    if let Some(data) = &self.data {
                        data.breakers_changed.store(true, Ordering::Relaxed);
                    }
                }
                ToControl::Health(_) => self.health_dirty = true,
                ToControl::Released => self.say_released = true,
                _ => {}
            }
        }
    }

    /// Handle one text frame from the control plane: the replies to send.
    pub async fn handle(&mut self, text: &str) -> Vec<ToControl> {
        match decode(text) {
            Decoded::Ignored(what) => {
                debug!("ignoring {what}");
                Vec::new()
            }
            Decoded::Malformed {
                kind: "identity",
                error,
            } => {
                error!("refused an identity from the control plane: {error}");
                Vec::new()
            }
            Decoded::Malformed { error, .. } => {
                warn!("ignoring {error}");
                Vec::new()
            }
            Decoded::Message(FromControl::Snapshot { snapshot }) => {
                vec![self.take_snapshot(snapshot)]
            }
            Decoded::Message(FromControl::Identity(identity)) => {
                match self.identity.install(&identity) {
                    Ok(installed) => {
                        let short: String = installed.fingerprint.chars().take(16).collect();
                        info!(
                            "identity {} installed (certificate {short})",
                            installed.spiffe_id
                        );
                        vec![ToControl::IdentityAck {
                            fingerprint: installed.fingerprint.clone(),
                        }]
                    }
                    Err(err) => {
                        error!("refused an identity from the control plane: {err}");
                        Vec::new()
                    }
                }
            }
            Decoded::Message(FromControl::Hold) => {
                if self.health_at_hold.is_none() {
                    self.health_at_hold = Some(self.health.health());
                }
                let now = Instant::now();
                self.hold.begin(now);
                match &self.data {
                    None => {
                        info!("holding calls to the app (0 still in flight)");
                        vec![ToControl::Held { in_flight: 0 }]
                    }
                    Some(data) => {
                        // Answered by `pending` once no call is with the app.
                        data.app_gate.hold(now);
                        self.held_due = Some(now + DRAIN_LIMIT);
                        self.pending(now)
                    }
                }
            }
            Decoded::Message(FromControl::Release) => {
                if self.hold.end() {
                    // What the new app is, before anyone counts on it.
                    self.health.probe_now().await;
                }
                // Said again even if it had ended: the control plane may not know.
                self.released();
                self.pending(Instant::now())
            }
        }
    }

    /// A hold ended: report the probe's health again, and say so.
    fn released(&mut self) {
        if let Some(data) = &self.data {
            data.app_gate.release();
        }
        self.held_due = None;
        if self.health_at_hold.take().is_some() {
            info!(
                "released the calls held for the app ({:?})",
                self.health.health().state
            );
        }
        self.health_dirty = true;
        self.say_released = true;
    }

    fn take_snapshot(&mut self, raw: Value) -> ToControl {
        let version = raw.get("version").cloned().unwrap_or(Value::Null);
        match parse_snapshot(&raw) {
            Err(err) => {
                warn!("rejected snapshot {version}: {err}");
                ToControl::Nack {
                    version,
                    error: err.0,
                }
            }
            Ok(snapshot) => {
                let version = snapshot.version;
                self.snapshot.send_replace(Arc::new(snapshot));
                if let Err(err) = kept::save(&self.boot.snapshot_file(), &raw) {
                    warn!("could not keep snapshot {version} on disk: {err}");
                }
                debug!("took snapshot {version}");
                ToControl::Ack { version }
            }
        }
    }
}

/// This host's address on the route to `url` (a UDP "connect" sends no packet).
fn address_towards(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or("");
    let target = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|sock| {
            sock.connect(target.as_str())?;
            sock.local_addr()
        })
        .map(|addr| addr.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".to_string())
}

/// The snapshot a sidecar starts from with none kept: version 0, no routes.
fn empty_snapshot() -> Snapshot {
    parse_snapshot(&serde_json::json!({"version": 0, "routes": {}}))
        .expect("the empty snapshot is valid")
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::health::Target;
    use crate::wire::messages::HealthState;
    use serde_json::json;

    fn link(name: &str, app_port: Option<u16>) -> (LinkState, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("rlink-link-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let boot = Bootstrap::from_value(&json!({
            "service": "catalog", "version": "v1", "instance": "catalog-v1-1",
            "control_plane": "http://127.0.0.1:1", "state_dir": dir, "inbound_port": 41001,
            "app_port": app_port,
        }))
        .unwrap();
        let health = Arc::new(HealthProbe::new(Target {
            app_port,
            path: None,
        }));
        (LinkState::new(boot, health), dir)
    }

    fn snapshot(version: Value) -> String {
        json!({"type": "snapshot", "snapshot": {"version": version, "routes": {}}}).to_string()
    }

    #[tokio::test]
    async fn a_good_snapshot_is_acked_kept_and_saved_and_a_bad_one_nacked() {
        let (mut link, dir) = link("snap", None);
        let snapshots = link.snapshots();
        assert_eq!(
            link.handle(&snapshot(json!(7))).await,
            [ToControl::Ack { version: 7 }]
        );
        assert_eq!(snapshots.borrow().version, 7);
        assert_eq!(
            kept::load(&dir.join("snapshot.json")).map(|s| s.version),
            Some(7)
        );
        let replies = link.handle(&snapshot(json!("eight"))).await;
        assert_eq!(
            replies,
            [ToControl::Nack {
                version: json!("eight"),
                error: "snapshot.version must be a non-negative integer".into()
            }]
        );
        assert_eq!(snapshots.borrow().version, 7, "the previous snapshot stays");
        assert_eq!(
            kept::load(&dir.join("snapshot.json")).map(|s| s.version),
            Some(7)
        );
        // A new link starts from the one kept.
        let again = LinkState::new(link.boot.clone(), link.health.clone());
        assert_eq!(again.snapshots().borrow().version, 7);
        let ToControl::Hello {
            snapshot_version,
            node,
            ..
        } = again.hello()
        else {
            panic!()
        };
        assert_eq!(snapshot_version, 7);
        assert_eq!(node.inbound.as_deref(), Some("127.0.0.1:41001"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_hold_freezes_the_health_reported_until_the_release() {
        let (mut link, dir) = link("hold", Some(1));
        assert_eq!(
            link.pending(Instant::now()),
            [ToControl::Health(Health {
                state: HealthState::Starting,
                detail: "not probed yet".into()
            })]
        );
        assert_eq!(
            link.handle(r#"{"type": "hold"}"#).await,
            [ToControl::Held { in_flight: 0 }]
        );
        link.health_dirty = true;
        assert_eq!(link.pending(Instant::now()), [], "no health while held");
        let replies = link.handle(r#"{"type": "release"}"#).await;
        assert_eq!(replies.len(), 2, "{replies:?}");
        assert!(matches!(replies[0], ToControl::Health(_)));
        assert_eq!(replies[1], ToControl::Released);
        // Said again even when there was no hold.
        assert!(link
            .handle(r#"{"type": "release"}"#)
            .await
            .contains(&ToControl::Released));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_hold_never_released_ends_by_itself() {
        let (mut link, dir) = link("expire", None);
        link.handle(r#"{"type": "hold"}"#).await;
        link.pending(Instant::now());
        let later = Instant::now() + super::super::liveness::HOLD_LIMIT;
        assert_eq!(
            link.pending(later),
            [
                ToControl::Health(Health {
                    state: HealthState::Ready,
                    detail: "no port to probe".into()
                }),
                ToControl::Released
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_bad_identity_is_refused_without_an_answer() {
        let (mut link, dir) = link("identity", None);
        let text = json!({"type": "identity", "spiffe_id": "s", "cert": "c", "key": "k",
            "ca": "a", "not_after": 4e9, "fingerprint": "abcdef"})
        .to_string();
        assert_eq!(link.handle(&text).await, []);
        assert_eq!(link.handle(r#"{"type": "identity"}"#).await, []);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn data_plane() -> DataPlane {
        let boot = Bootstrap::from_value(&json!({
            "service": "frontend", "version": "v1", "instance": "frontend-1",
            "control_plane": "http://127.0.0.1:1", "state_dir": std::env::temp_dir(),
        }))
        .unwrap();
        let engine = crate::engine::sidecar::Engine::new(
            boot,
            watch::channel(Arc::new(Snapshot::default())).1,
        );
        engine.data_plane()
    }

    fn record(n: usize) -> crate::wire::telemetry::Record {
        crate::wire::telemetry::Record {
            ts: 0.0,
            direction: crate::wire::telemetry::Direction::Outbound,
            source: "frontend".into(),
            destination: "catalog".into(),
            version: String::new(),
            instance: String::new(),
            status: 200,
            latency_ms: n as f64,
            method: "GET".into(),
            path: "/".into(),
            error: None,
            fault: None,
            retries: 0,
            trace_id: None,
            span_id: None,
            parent_id: None,
            mtls: false,
            authz: None,
        }
    }

    #[tokio::test]
    async fn telemetry_goes_in_batches_with_the_dropped_count_and_breakers_at_once() {
        let (link, dir) = link("telemetry", None);
        let data = data_plane();
        let mut link = link.with_data_plane(data.clone());
        {
            let mut buffer = data.telemetry.lock().unwrap();
            for n in 0..(BATCH_LIMIT + 5) {
                buffer.add(record(n));
            }
            buffer.dropped = 3;
        }
        let now = Instant::now();
        let sent = link.pending(now);
        let kinds: Vec<&str> = sent
            .iter()
            .map(|m| match m {
                ToControl::Health(_) => "health",
                ToControl::Breakers { .. } => "breakers",
                ToControl::Telemetry { .. } => "telemetry",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["health", "breakers", "telemetry", "telemetry"]);
        let ToControl::Telemetry { records, dropped } = &sent[2] else {
            panic!()
        };
        assert_eq!((records.len(), *dropped), (BATCH_LIMIT, 3));
        let ToControl::Telemetry { records, dropped } = &sent[3] else {
            panic!()
        };
        assert_eq!((records.len(), *dropped), (5, 0));
        // Nothing changed, every breaker closed: nothing more to send.
        assert_eq!(link.pending(now + BREAKER_REFRESH), []);
        // What a broken link could not send is sent on the next one, in its order.
        link.put_back(sent);
        let again = link.pending(now + BREAKER_REFRESH * 2);
        assert_eq!(again.len(), 4, "{again:?}");
        let ToControl::Telemetry { records, dropped } = &again[2] else {
            panic!()
        };
        assert_eq!((records.len(), *dropped), (BATCH_LIMIT, 3));
        assert_eq!(records[0]["latency_ms"], 0.0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_hold_is_answered_once_no_call_is_with_the_app() {
        let (link, dir) = link("drain", Some(1));
        let data = data_plane();
        let mut link = link.with_data_plane(data.clone());
        link.pending(Instant::now());
        let call = data.app_gate.enter().await.unwrap();
        let replies = link.handle(r#"{"type": "hold"}"#).await;
        assert!(!replies.iter().any(|m| matches!(m, ToControl::Held { .. })));
        assert!(data.app_gate.held());
        drop(call);
        assert!(link
            .pending(Instant::now())
            .contains(&ToControl::Held { in_flight: 0 }));
        // A call still in flight at the drain limit is reported.
        let _stuck = {
            link.handle(r#"{"type": "release"}"#).await;
            data.app_gate.enter().await.unwrap()
        };
        link.handle(r#"{"type": "hold"}"#).await;
        assert!(link
            .pending(Instant::now() + DRAIN_LIMIT)
            .contains(&ToControl::Held { in_flight: 1 }));
        link.handle(r#"{"type": "release"}"#).await;
        assert!(!data.app_gate.held());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_address_towards_the_control_plane() {
        assert_eq!(address_towards("http://127.0.0.1:41000"), "127.0.0.1");
    }
}
