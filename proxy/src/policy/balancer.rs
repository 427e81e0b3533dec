//! Picking an endpoint of one pool (a service, or one version of it). Pure logic.
//!
//! Two policies, with Envoy's meaning, over the endpoints the circuit breaker has
//! not ejected (the caller passes plain instance ids and the ejected ones, see
//! [`crate::policy::outlier::OutlierDetector::ejected`]):
//!
//! - `round-robin`: each eligible endpoint in turn, in the order given; ejected
//!   endpoints are skipped, so the others keep taking turns evenly.
//! - `least-request`: Envoy's power of two choices: two endpoints drawn at random
//!   (with replacement, as Envoy does), the one with fewer active requests wins; on
//!   a tie the first drawn. Active requests are counted with
//!   [`Balancer::started`] / [`Balancer::finished`].
//!
//! With nothing to pick, [`Balancer::pick`] says why: there are no endpoints at
//! all, or all of them are ejected (with the soonest time one is tried again).
//! Randomness is passed in as a function drawing floats in [0, 1), e.g.
//! `|| rng.random::<f64>()`.

use std::collections::HashMap;
use std::time::Instant;

/// How a pool's endpoint is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LbPolicy {
    /// Each eligible endpoint in turn.
    #[default]
    RoundRobin,
    /// Power of two choices on active requests.
    LeastRequest,
}

/// The wire names of the policies, in the order error texts list them.
pub const LB_POLICIES: [&str; 2] = ["round-robin", "least-request"];

impl LbPolicy {
    /// The wire name (`round-robin`, `least-request`).
    pub fn as_str(self) -> &'static str {
        match self {
            LbPolicy::RoundRobin => "round-robin",
            LbPolicy::LeastRequest => "least-request",
        }
    }

    /// The policy a wire name means, if any.
    pub fn from_wire(name: &str) -> Option<LbPolicy> {
        match name {
            "round-robin" => Some(LbPolicy::RoundRobin),
            "least-request" => Some(LbPolicy::LeastRequest),
            _ => None,
        }
    }
}

/// Why no endpoint could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The pool has no endpoints at all.
    NoEndpoints,
    /// The breaker holds every endpoint out.
    AllEjected {
        /// How many endpoints the breaker holds out (all of them).
        ejected: usize,
        /// When the first of them is tried again.
        retry_at: Instant,
    },
}

impl Unavailable {
    /// The wire word for it: `no-endpoints` or `all-ejected`.
    pub fn why(&self) -> &'static str {
        match self {
            Unavailable::NoEndpoints => "no-endpoints",
            Unavailable::AllEjected { .. } => "all-ejected",
        }
    }

    /// One sentence for a 503 body or a log line; `what` names the pool.
    pub fn describe(&self, what: &str, now: Instant) -> String {
        match *self {
            Unavailable::NoEndpoints => format!("no healthy instance of {what}"),
            Unavailable::AllEjected { ejected, retry_at } => {
                let wait = retry_at.saturating_duration_since(now).as_secs_f64();
                if ejected == 1 {
                    format!(
                        "the only instance of {what} is ejected by the circuit breaker; \
                         it is tried again in {wait:.1}s"
                    )
                } else {
                    format!(
                        "all {ejected} instances of {what} are ejected by the circuit breaker; \
                         the first is tried again in {wait:.1}s"
                    )
                }
            }
        }
    }
}

/// Endpoint choice and active-request counts for one pool.
#[derive(Debug, Clone)]
pub struct Balancer {
    /// The policy in force; it may change live.
    pub policy: LbPolicy,
    choices: usize,
    cursor: i64,
    active: HashMap<String, usize>,
}

impl Default for Balancer {
    fn default() -> Self {
        Balancer::new(LbPolicy::RoundRobin)
    }
}

impl Balancer {
    /// A balancer with Envoy's two choices for least-request.
    pub fn new(policy: LbPolicy) -> Self {
        Balancer::with_choices(policy, 2)
    }

    /// A balancer drawing `choices` endpoints (at least 1) for least-request.
    pub fn with_choices(policy: LbPolicy, choices: usize) -> Self {
        Balancer {
            policy,
            choices: choices.max(1),
            cursor: -1,
            active: HashMap::new(),
        }
    }

    /// The index in `endpoints` of an endpoint not in `ejected` (instance -> retry time).
    /// `draw` gives floats in [0, 1); it is called only by least-request, only when more
    /// than one endpoint is eligible.
    pub fn pick<S: AsRef<str>>(
        &mut self,
        endpoints: &[S],
        ejected: &HashMap<String, Instant>,
        draw: &mut impl FnMut() -> f64,
    ) -> Result<usize, Unavailable> {
        let eligible: Vec<usize> = (0..endpoints.len())
            .filter(|&i| !ejected.contains_key(endpoints[i].as_ref()))
            .collect();
        if eligible.is_empty() {
            let Some(retry_at) = endpoints
                .iter()
                .filter_map(|e| ejected.get(e.as_ref()).copied())
                .min()
            else {
                return Err(Unavailable::NoEndpoints);
            };
            return Err(Unavailable::AllEjected {
                ejected: endpoints.len(),
                retry_at,
            });
        }
        Ok(match self.policy {
            LbPolicy::LeastRequest => self.least_request(endpoints, &eligible, draw),
            LbPolicy::RoundRobin => self.round_robin(endpoints, ejected),
        })
    }

    /// A request to `instance` begins.
    pub fn started(&mut self, instance: &str) {
        *self.active.entry(instance.to_owned()).or_insert(0) += 1;
    }

    /// A request to `instance` ended (never counts below zero).
    pub fn finished(&mut self, instance: &str) {
        if let Some(count) = self.active.get_mut(instance) {
            if *count > 1 {
                *count -= 1;
            } else {
                self.active.remove(instance);
            }
        }
    }

    /// Requests in flight on `instance`.
    pub fn active(&self, instance: &str) -> usize {
        self.active.get(instance).copied().unwrap_or(0)
    }

    fn round_robin<S: AsRef<str>>(
        &mut self,
        endpoints: &[S],
        ejected: &HashMap<String, Instant>,
    ) -> usize {
        let n = endpoints.len() as i64;
        for step in 1..=n {
            let index = (self.cursor + step).rem_euclid(n);
            if !ejected.contains_key(endpoints[index as usize].as_ref()) {
                self.cursor = index;
                return index as usize;
            }
        }
        unreachable!("pick() checked that an endpoint is eligible")
    }

    fn least_request<S: AsRef<str>>(
        &self,
        endpoints: &[S],
        eligible: &[usize],
        draw: &mut impl FnMut() -> f64,
    ) -> usize {
        let n = eligible.len();
        if n == 1 {
            return eligible[0];
        }
        let mut best: Option<usize> = None;
        for _ in 0..self.choices {
            let drawn = ((draw() * n as f64) as usize).min(n - 1);
            let sampled = eligible[drawn];
            let better = match best {
                None => true,
                Some(b) => {
                    self.active(endpoints[sampled].as_ref()) < self.active(endpoints[b].as_ref())
                }
            };
            if better {
                best = Some(sampled);
            }
        }
        best.unwrap_or(eligible[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use std::time::Duration;

    const ABC: [&str; 3] = ["a", "b", "c"];

    fn sequence(values: &[f64]) -> impl FnMut() -> f64 + '_ {
        let mut it = values.iter();
        move || *it.next().expect("rand was called more often than expected")
    }

    fn no_dice() -> f64 {
        panic!("rand was called")
    }

    fn seeded(seed: u64) -> impl FnMut() -> f64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        move || rng.random::<f64>()
    }

    fn ejected(now: Instant, items: &[(&str, f64)]) -> HashMap<String, Instant> {
        items
            .iter()
            .map(|(i, s)| (i.to_string(), now + Duration::from_secs_f64(*s)))
            .collect()
    }

    fn picks(
        b: &mut Balancer,
        endpoints: &[&str],
        n: usize,
        ejected: &HashMap<String, Instant>,
        draw: &mut impl FnMut() -> f64,
    ) -> Vec<String> {
        (0..n)
            .map(|_| endpoints[b.pick(endpoints, ejected, draw).expect("picks")].to_string())
            .collect()
    }

    fn count(items: &[String]) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for i in items {
            *out.entry(i.clone()).or_insert(0) += 1;
        }
        out
    }

    fn rep(items: &[&str], times: usize) -> Vec<String> {
        (0..times)
            .flat_map(|_| items.iter().map(|s| s.to_string()))
            .collect()
    }

    #[test]
    fn round_robin_takes_each_endpoint_in_turn() {
        let mut b = Balancer::default();
        let none = HashMap::new();
        assert_eq!(picks(&mut b, &ABC, 9, &none, &mut no_dice), rep(&ABC, 3));
    }

    #[test]
    fn round_robin_skips_ejected_endpoints_and_stays_even_over_the_rest() {
        let now = Instant::now();
        let mut b = Balancer::default();
        let out = ejected(now, &[("b", 30.0)]);
        assert_eq!(
            picks(&mut b, &ABC, 6, &out, &mut no_dice),
            rep(&["a", "c"], 3)
        );
        let counts = count(&picks(
            &mut b,
            &["a", "b", "c", "d"],
            3000,
            &out,
            &mut no_dice,
        ));
        assert_eq!(counts.len(), 3);
        for i in ["a", "c", "d"] {
            assert_eq!(counts[i], 1000);
        }
    }

    #[test]
    fn round_robin_takes_an_endpoint_back_when_it_is_no_longer_ejected() {
        let now = Instant::now();
        let mut b = Balancer::default();
        let out = ejected(now, &[("a", 30.0)]);
        assert_eq!(picks(&mut b, &ABC, 2, &out, &mut no_dice), ["b", "c"]);
        assert_eq!(
            picks(&mut b, &ABC, 6, &HashMap::new(), &mut no_dice),
            rep(&ABC, 2)
        );
    }

    #[test]
    fn round_robin_follows_a_changed_endpoint_list() {
        let mut b = Balancer::default();
        let none = HashMap::new();
        picks(&mut b, &ABC, 2, &none, &mut no_dice);
        let counts = count(&picks(
            &mut b,
            &["a", "b", "c", "d"],
            400,
            &none,
            &mut no_dice,
        ));
        for i in ["a", "b", "c", "d"] {
            assert_eq!(counts[i], 100);
        }
    }

    #[test]
    fn least_request_takes_the_drawn_endpoint_with_fewer_active_requests() {
        let mut b = Balancer::new(LbPolicy::LeastRequest);
        let mut draw = sequence(&[0.0, 0.7, 0.7, 0.0]);
        let none = HashMap::new();
        b.started("a");
        assert_eq!(b.pick(&["a", "b"], &none, &mut draw), Ok(1)); // drew a then b
        assert_eq!(b.pick(&["a", "b"], &none, &mut draw), Ok(1)); // drew b then a
    }

    #[test]
    fn least_request_keeps_the_first_drawn_on_a_tie() {
        let mut b = Balancer::new(LbPolicy::LeastRequest);
        let mut draw = sequence(&[0.0, 0.7, 0.7, 0.0]);
        let none = HashMap::new();
        assert_eq!(b.pick(&["a", "b"], &none, &mut draw), Ok(0));
        assert_eq!(b.pick(&["a", "b"], &none, &mut draw), Ok(1));
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        // The busy one of two wins only when both draws are it, 1/4 of the time.
        let mut b = Balancer::new(LbPolicy::LeastRequest);
        let mut draw = seeded(4);
        for _ in 0..3 {
            b.started("busy");
        }
        let counts = count(&picks(
            &mut b,
            &["busy", "idle"],
            10_000,
            &HashMap::new(),
            &mut draw,
        ));
        let idle = counts["idle"] as f64 / 10_000.0;
        assert!((0.73..=0.77).contains(&idle), "{counts:?}");
    }

    #[test]
    fn least_request_avoids_one_busy_endpoint_among_three() {
        let mut b = Balancer::new(LbPolicy::LeastRequest);
        let mut draw = seeded(5);
        b.started("b");
        let counts = count(&picks(&mut b, &ABC, 10_000, &HashMap::new(), &mut draw));
        let busy = counts["b"] as f64 / 10_000.0;
        assert!((0.096..=0.126).contains(&busy), "{counts:?}");
        let diff = (counts["a"] as f64 - counts["c"] as f64).abs() / 10_000.0;
        assert!(diff <= 0.03, "{counts:?}");
    }

    #[test]
    fn least_request_spreads_evenly_over_idle_endpoints() {
        let mut b = Balancer::new(LbPolicy::LeastRequest);
        let mut draw = seeded(6);
        let counts = count(&picks(&mut b, &ABC, 9_000, &HashMap::new(), &mut draw));
        for i in ABC {
            assert!((2_850..=3_150).contains(&counts[i]), "{counts:?}");
        }
    }

    #[test]
    fn least_request_never_picks_an_ejected_endpoint() {
        let now = Instant::now();
        let mut b = Balancer::new(LbPolicy::LeastRequest);
        let mut draw = seeded(7);
        b.started("a");
        let out = ejected(now, &[("b", 10.0), ("c", 10.0)]);
        let counts = count(&picks(&mut b, &ABC, 2_000, &out, &mut draw));
        assert_eq!(counts.len(), 1);
        assert_eq!(counts["a"], 2_000);
    }

    #[test]
    fn least_request_with_one_eligible_endpoint_draws_nothing() {
        let now = Instant::now();
        let mut b = Balancer::new(LbPolicy::LeastRequest);
        let out = ejected(now, &[("a", 1.0), ("c", 1.0)]);
        assert_eq!(b.pick(&ABC, &out, &mut no_dice), Ok(1));
    }

    #[test]
    fn the_policy_can_change_live() {
        let mut b = Balancer::default();
        let mut draw = sequence(&[0.0, 0.9]);
        let none = HashMap::new();
        assert_eq!(picks(&mut b, &["a", "b"], 2, &none, &mut draw), ["a", "b"]);
        b.policy = LbPolicy::LeastRequest;
        b.started("a");
        assert_eq!(b.pick(&["a", "b"], &none, &mut draw), Ok(1));
    }

    #[test]
    fn active_requests_are_counted_and_never_go_below_zero() {
        let mut b = Balancer::default();
        b.started("a");
        b.started("a");
        assert_eq!(b.active("a"), 2);
        b.finished("a");
        b.finished("a");
        b.finished("a");
        assert_eq!(b.active("a"), 0);
        b.started("a");
        assert_eq!(b.active("a"), 1);
    }

    #[test]
    fn no_endpoints_at_all() {
        let now = Instant::now();
        let result = Balancer::default().pick::<&str>(&[], &HashMap::new(), &mut no_dice);
        assert_eq!(result, Err(Unavailable::NoEndpoints));
        assert_eq!(result.unwrap_err().why(), "no-endpoints");
        assert_eq!(
            result.unwrap_err().describe("catalog", now),
            "no healthy instance of catalog"
        );
    }

    #[test]
    fn all_ejected_says_when_the_first_is_tried_again() {
        for policy in [LbPolicy::RoundRobin, LbPolicy::LeastRequest] {
            let now = Instant::now();
            let mut b = Balancer::new(policy);
            let out = ejected(
                now,
                &[("a", 30.0), ("b", 12.5), ("c", 100.0), ("gone", 1.0)],
            );
            let result = b.pick(&ABC, &out, &mut no_dice);
            assert_eq!(
                result,
                Err(Unavailable::AllEjected {
                    ejected: 3,
                    retry_at: now + Duration::from_secs_f64(12.5)
                })
            );
            assert_eq!(
                result.unwrap_err().describe("catalog", now),
                "all 3 instances of catalog are ejected by the circuit breaker; \
                 the first is tried again in 12.5s"
            );
        }
    }

    #[test]
    fn the_only_endpoint_ejected() {
        let now = Instant::now();
        let out = ejected(now, &[("a", 30.0)]);
        let result = Balancer::default().pick(&["a"], &out, &mut no_dice);
        assert_eq!(
            result.unwrap_err().describe("pricing", now),
            "the only instance of pricing is ejected by the circuit breaker; \
             it is tried again in 30.0s"
        );
    }

    #[test]
    fn lb_policies_have_their_wire_names() {
        for name in LB_POLICIES {
            assert_eq!(LbPolicy::from_wire(name).map(LbPolicy::as_str), Some(name));
        }
        assert_eq!(LbPolicy::from_wire("random"), None);
        assert_eq!(LbPolicy::default(), LbPolicy::RoundRobin);
    }
}
