//! What a calling sidecar keeps about each destination service between requests
//! (`proxy/destinations.py`): the outlier detector over its endpoints (the circuit
//! breaker), a balancer per version and the connection-pool gate. [`Destinations::sync`]
//! follows a new snapshot without losing what was learnt: an endpoint that stays keeps
//! its ejection history; settings change for the next request.
//!
//! The pool a call picks among is the endpoints of the version the router chose (all of
//! the service's when it chose none). When fewer than the panic threshold's share of
//! that pool is healthy, the pick ignores the breaker's ejections (Envoy's panic mode).
//!
//! [`Gate`] is the pool gate's queue around `policy::pool`'s counters: waiters are
//! woken in order, and a waiter that gives up leaves the queue (or hands its slot on).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tracing::info;

use crate::policy::balancer::{Balancer, LbPolicy, Unavailable};
use crate::policy::outlier::{in_panic, BreakerSummary, OutlierDetector, State};
use crate::policy::pool::{Admission, PoolGate, PoolLimits, Release};
use crate::wire::snapshot::{Endpoint, Route, Snapshot};

/// One destination service, as the calling sidecar knows it.
#[derive(Debug)]
pub struct Destination {
    pub service: String,
    pub route: Route,
    pub detector: OutlierDetector,
    pub gate: Arc<Gate>,
    balancers: HashMap<Option<String>, Balancer>,
    /// Round robin of retries, apart: a retry does not move the first tries' turn.
    retry_turns: HashMap<Option<String>, Balancer>,
}

impl Destination {
    /// An endpoint among `candidates` (the pool) that the breaker lets through, or any of
    /// them when the pool is in panic, preferring ones not in `avoid` (those a retry
    /// already tried). `draw` gives floats in [0, 1) (least-request).
    pub fn pick(
        &mut self,
        candidates: &[Endpoint],
        version: Option<&str>,
        avoid: &[String],
        now: Instant,
        draw: &mut impl FnMut() -> f64,
    ) -> Result<Endpoint, Unavailable> {
        let names: Vec<&str> = candidates.iter().map(|e| e.instance.as_str()).collect();
        let mut ejected = self.detector.ejected(now);
        let threshold = self.detector.settings().panic_threshold;
        if !ejected.is_empty() && in_panic(&names, |i| ejected.contains_key(i), threshold) {
            ejected.clear(); // too few healthy: the breaker's ejections are ignored
        }
        let key = version.map(str::to_owned);
        let policy = self.route.policy.lb;
        // The tried ones are skipped like ejected ones while another is eligible.
        let mut skipped = ejected.clone();
        let mut tried = false;
        for instance in avoid {
            if names.contains(&instance.as_str()) && !ejected.contains_key(instance) {
                skipped.insert(instance.clone(), now);
                tried = true;
            }
        }
        if names.iter().all(|i| skipped.contains_key(*i)) {
            skipped = ejected;
            tried = false;
        }
        let balancer = if tried && policy == LbPolicy::RoundRobin {
            self.retry_turns
                .entry(key)
                .or_insert_with(|| Balancer::new(LbPolicy::RoundRobin))
        } else {
            self.balancers
                .entry(key)
                .or_insert_with(|| Balancer::new(policy))
        };
        let index = balancer.pick(&names, &skipped, draw)?;
        Ok(candidates[index].clone())
    }

    /// The pools calls pick among as the route stands: each version the split may
    /// choose, or the whole service without a split.
    pub fn pools(&self) -> Vec<Vec<String>> {
        let endpoints = &self.route.endpoints;
        match &self.route.split {
            None => vec![endpoints.iter().map(|e| e.instance.clone()).collect()],
            Some(split) => split
                .iter()
                .filter(|(_, weight)| *weight > 0.0)
                .map(|(v, _)| {
                    endpoints
                        .iter()
                        .filter(|e| &e.version == v)
                        .map(|e| e.instance.clone())
                        .collect()
                })
                .collect(),
        }
    }

    /// The breaker's summary at `now`, saying whether one of its pools is in panic.
    pub fn summary(&mut self, now: Instant) -> BreakerSummary {
        let mut summary = self.detector.tick(now);
        if summary.ejected == 0 {
            return summary;
        }
        let ejected = self.detector.ejected(now);
        let threshold = self.detector.settings().panic_threshold;
        summary.panic = self
            .pools()
            .iter()
            .any(|pool| in_panic(pool, |i| ejected.contains_key(i), threshold));
        summary
    }

    /// A request to `endpoint` begins (least-request counts it).
    pub fn started(&mut self, endpoint: &Endpoint, version: Option<&str>) {
        if let Some(b) = self.balancers.get_mut(&version.map(str::to_owned)) {
            b.started(&endpoint.instance);
        }
    }

    /// A request to `endpoint` ended.
    pub fn finished(&mut self, endpoint: &Endpoint, version: Option<&str>) {
        if let Some(b) = self.balancers.get_mut(&version.map(str::to_owned)) {
            b.finished(&endpoint.instance);
        }
    }
}

/// Every destination, following the snapshot in force.
#[derive(Debug, Default)]
pub struct Destinations {
    by_service: BTreeMap<String, Destination>,
    synced: Option<Arc<Snapshot>>,
    changed: Arc<AtomicBool>,
}

impl Destinations {
    /// Destinations whose breakers' changes set `changed` (the control link reports
    /// them at once).
    pub fn new(changed: Arc<AtomicBool>) -> Self {
        Destinations {
            by_service: BTreeMap::new(),
            synced: None,
            changed,
        }
    }

    /// The destination of `service`, once in line with `snapshot`.
    pub fn get(
        &mut self,
        snapshot: &Arc<Snapshot>,
        service: &str,
        now: Instant,
    ) -> Option<&mut Destination> {
        self.sync(snapshot, now);
        self.by_service.get_mut(service)
    }

    /// Follow a new snapshot (a no-op for the one already followed): new destinations,
    /// changed endpoints and settings.
    pub fn sync(&mut self, snapshot: &Arc<Snapshot>, now: Instant) {
        if self
            .synced
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, snapshot))
        {
            return;
        }
        self.synced = Some(snapshot.clone());
        self.by_service
            .retain(|service, _| snapshot.routes.contains_key(service));
        for (service, route) in &snapshot.routes {
            let instances: Vec<&str> = route
                .endpoints
                .iter()
                .map(|e| e.instance.as_str())
                .collect();
            match self.by_service.get_mut(service) {
                None => {
                    let changed = self.changed.clone();
                    let name = service.clone();
                    let on_change = Box::new(move |summary: &BreakerSummary| {
                        let panic = if summary.panic {
                            " · panic: routing to all"
                        } else {
                            ""
                        };
                        info!(
                            "breaker to {name}: {}{panic} ({})",
                            summary.state.as_str(),
                            summary.reason.as_deref().unwrap_or("")
                        );
                        changed.store(true, Ordering::Relaxed);
                    });
                    let detector = OutlierDetector::new(
                        now,
                        route.policy.outlier,
                        &instances,
                        Some(on_change),
                    );
                    self.by_service.insert(
                        service.clone(),
                        Destination {
                            service: service.clone(),
                            route: route.clone(),
                            detector,
                            gate: Arc::new(Gate::new(route.policy.pool)),
                            balancers: HashMap::new(),
                            retry_turns: HashMap::new(),
                        },
                    );
                }
                Some(found) => {
                    found.route = route.clone();
                    found.detector.set_settings(route.policy.outlier);
                    found.detector.set_endpoints(&instances, now);
                    found.gate.set_limits(route.policy.pool);
                    for balancer in found.balancers.values_mut() {
                        balancer.policy = route.policy.lb;
                    }
                }
            }
        }
    }

    /// Each destination's breaker as the `breakers` message carries it, and whether one
    /// is not closed.
    pub fn breakers(&mut self, now: Instant) -> (Map<String, Value>, bool) {
        let mut out = Map::new();
        let mut troubled = false;
        for (service, destination) in &mut self.by_service {
            let summary = destination.summary(now);
            troubled |= summary.state != State::Closed;
            out.insert(service.clone(), summary.to_json(now));
        }
        (out, troubled)
    }
}

/// The connection-pool gate of one destination: the counters and the queue of waiters.
#[derive(Debug)]
pub struct Gate {
    inner: Mutex<GateInner>,
}

#[derive(Debug)]
struct GateInner {
    counters: PoolGate,
    waiters: VecDeque<(u64, oneshot::Sender<()>)>,
    next_id: u64,
}

/// The pool is full: the request is refused (503 `overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow(pub PoolLimits);

/// A slot of the pool, given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<Gate>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Gate {
    pub fn new(limits: PoolLimits) -> Self {
        Gate {
            inner: Mutex::new(GateInner {
                counters: PoolGate::new(limits),
                waiters: VecDeque::new(),
                next_id: 0,
            }),
        }
    }

    /// A slot: at once, after waiting in the queue, or [`Overflow`] at once.
    pub async fn acquire(self: &Arc<Self>) -> Result<Slot, Overflow> {
        let (id, rx) = {
            let mut inner = self.inner.lock().expect("pool gate");
            match inner.counters.admit() {
                Admission::Admitted => return Ok(Slot(self.clone())),
                Admission::Overflow => return Err(Overflow(inner.counters.limits())),
                Admission::Queued => {
                    let (tx, rx) = oneshot::channel();
                    let id = inner.next_id;
                    inner.next_id += 1;
                    inner.waiters.push_back((id, tx));
                    (id, rx)
                }
            }
        };
        let mut waiting = Waiting {
            gate: self.clone(),
            id,
            rx: Some(rx),
        };
        let rx = waiting.rx.as_mut().expect("receiver");
        let _ = rx.await;
        waiting.rx = None; // handed a slot: it is the caller's now
        Ok(Slot(self.clone()))
    }

    fn release(&self) {
        let mut inner = self.inner.lock().expect("pool gate");
        loop {
            match inner.counters.release() {
                Release::Freed => return,
                Release::HandedOver => match inner.waiters.pop_front() {
                    // A waiter that went away passes the slot on again.
                    Some((_, tx)) => {
                        if tx.send(()).is_ok() {
                            return;
                        }
                    }
                    None => return,
                },
            }
        }
    }

    /// New limits; waiters that now fit are woken.
    pub fn set_limits(&self, limits: PoolLimits) {
        let mut inner = self.inner.lock().expect("pool gate");
        let woken = inner.counters.set_limits(limits);
        for _ in 0..woken {
            match inner.waiters.pop_front() {
                Some((_, tx)) => {
                    if tx.send(()).is_err() {
                        inner.counters.release(); // it went away: give the slot back
                    }
                }
                None => break,
            }
        }
    }

    /// Requests holding a slot, and waiting for one.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.inner.lock().expect("pool gate");
        (inner.counters.active(), inner.counters.pending())
    }
}

/// A place in the queue; dropped before it was handed a slot, it leaves the queue (or,
/// handed one meanwhile, gives it back).
struct Waiting {
    gate: Arc<Gate>,
    id: u64,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let mut inner = self.gate.inner.lock().expect("pool gate");
        if let Some(at) = inner.waiters.iter().position(|(id, _)| *id == self.id) {
            inner.waiters.remove(at);
            inner.counters.abandon();
        } else if rx.try_recv().is_ok() {
            drop(inner);
            self.gate.release(); // a slot came just as it gave up
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::snapshot::parse_snapshot;
    use serde_json::json;

    fn snapshot(value: Value) -> Arc<Snapshot> {
        Arc::new(parse_snapshot(&value).unwrap())
    }

    fn two() -> Arc<Snapshot> {
        snapshot(json!({"version": 1, "routes": {"catalog": {"endpoints": [
            {"instance": "c1", "version": "v1", "address": "127.0.0.1:1"},
            {"instance": "c2", "version": "v1", "address": "127.0.0.1:2"}]}}}))
    }

    #[test]
    fn round_robin_takes_turns_and_a_retry_avoids_the_one_tried() {
        let mut all = Destinations::default();
        let snap = two();
        let now = Instant::now();
        let d = all.get(&snap, "catalog", now).unwrap();
        let eps = d.route.endpoints.clone();
        let mut draw = || 0.0;
        let first = d.pick(&eps, None, &[], now, &mut draw).unwrap();
        let second = d.pick(&eps, None, &[], now, &mut draw).unwrap();
        assert_ne!(first.instance, second.instance);
        for _ in 0..3 {
            let retry = d
                .pick(
                    &eps,
                    None,
                    std::slice::from_ref(&first.instance),
                    now,
                    &mut draw,
                )
                .unwrap();
            assert_ne!(retry.instance, first.instance);
        }
        // Every one tried: any may be picked again.
        let avoid = vec!["c1".to_string(), "c2".to_string()];
        assert!(d.pick(&eps, None, &avoid, now, &mut draw).is_ok());
    }

    #[test]
    fn a_sync_keeps_what_was_learnt_and_drops_what_left() {
        let mut all = Destinations::default();
        let now = Instant::now();
        let snap = two();
        let d = all.get(&snap, "catalog", now).unwrap();
        for _ in 0..5 {
            d.detector
                .record("c1", &crate::policy::outlier::Outcome::Status(503), now);
        }
        assert_eq!(d.summary(now).ejected, 1);
        let again = two(); // a new snapshot, the same routes
        assert_eq!(
            all.get(&again, "catalog", now)
                .unwrap()
                .summary(now)
                .ejected,
            1
        );
        let (breakers, troubled) = all.breakers(now);
        assert!(troubled);
        assert_eq!(breakers["catalog"]["state"], "open");
        let none = snapshot(json!({"version": 2, "routes": {}}));
        assert!(all.get(&none, "catalog", now).is_none());
    }

    #[test]
    fn a_pool_with_its_only_endpoint_ejected_is_in_panic_and_still_picked() {
        let mut all = Destinations::default();
        let now = Instant::now();
        let snap = snapshot(json!({"version": 1, "routes": {"catalog": {"endpoints": [
            {"instance": "c1", "version": "v1", "address": "127.0.0.1:1"}]}}}));
        let d = all.get(&snap, "catalog", now).unwrap();
        for _ in 0..5 {
            d.detector
                .record("c1", &crate::policy::outlier::Outcome::Status(500), now);
        }
        assert!(d.summary(now).panic);
        let eps = d.route.endpoints.clone();
        assert_eq!(
            d.pick(&eps, None, &[], now, &mut || 0.0).unwrap().instance,
            "c1"
        );
    }

    #[tokio::test]
    async fn the_gate_admits_queues_in_order_and_overflows() {
        let gate = Arc::new(Gate::new(PoolLimits {
            max_connections: 1,
            max_pending: 1,
            max_requests: 1,
        }));
        let first = gate.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire().await.map(|_slot| ()) }
        });
        while gate.counts().1 == 0 {
            tokio::task::yield_now().await;
        }
        assert!(gate.acquire().await.is_err(), "the queue is full");
        drop(first);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(gate.counts(), (0, 0));
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_the_queue() {
        let gate = Arc::new(Gate::new(PoolLimits {
            max_connections: 1,
            max_pending: 1,
            max_requests: 1,
        }));
        let first = gate.acquire().await.unwrap();
        let gave_up =
            tokio::time::timeout(std::time::Duration::from_millis(1), gate.acquire()).await;
        assert!(gave_up.is_err());
        assert_eq!(gate.counts(), (1, 0));
        drop(first);
        assert_eq!(gate.counts(), (0, 0));
    }
}
