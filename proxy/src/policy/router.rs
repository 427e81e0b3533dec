//! Which service and version a call goes to, under the snapshot in force. Pure logic.
//!
//! In order: a `catalog-v2` host names a version ([`resolve`]), else the
//! `x-devmesh-version` header pins one ([`requested_version`]), else the route's
//! weighted split draws one ([`target`], the draw passed in). Which endpoint of that
//! version takes the call is the destination's balancer's and breaker's choice.
//!
//! The route data comes in as minimal views of this module's own ([`RouteView`],
//! [`VersionedEndpoint`]); the snapshot's types implement or build them. Holding
//! the snapshot in force and swapping it is the engine's business.

pub use crate::wire::mesh_headers::VERSION_HEADER;

/// What the router needs of an endpoint.
pub trait VersionedEndpoint {
    fn instance(&self) -> &str;
    fn version(&self) -> &str;
}

/// What the router needs of a service's route.
#[derive(Debug, Clone, Copy)]
pub struct RouteView<'a, E> {
    /// The service's endpoints, in the snapshot's order.
    pub endpoints: &'a [E],
    /// The weighted split (version, percent), in the snapshot's order (the order sets
    /// the bands of the draw); empty: no split.
    pub split: &'a [(String, f64)],
    /// The versions the service declares (those a host or a pin may name).
    pub versions: &'a [String],
}

/// Why no endpoint could be picked; `reason` is shown to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoEndpoint {
    pub reason: String,
}

/// The service (and version) a host name means: `catalog`, or `catalog-v2`.
/// `versions_of(service)` is the service's declared versions, `None` when the mesh has
/// no such service. A version may itself hold dashes (`catalog-rc-2`).
pub fn resolve<'h, 'r>(
    host: &'h str,
    versions_of: impl Fn(&str) -> Option<&'r [String]>,
) -> Option<(&'h str, Option<&'h str>)> {
    if versions_of(host).is_some() {
        return Some((host, None));
    }
    let mut cut = host.len();
    while let Some(dash) = host[..cut].rfind('-') {
        let (service, version) = (&host[..dash], &host[dash + 1..]);
        if let Some(versions) = versions_of(service) {
            if versions.iter().any(|v| v == version) {
                return Some((service, Some(version)));
            }
        }
        cut = dash;
    }
    None
}

/// The version a call asks for: the one its host named, else the pinning header's
/// (an empty header pins nothing).
pub fn requested_version<'a>(
    host_version: Option<&'a str>,
    header: Option<&'a str>,
) -> Option<&'a str> {
    host_version
        .filter(|v| !v.is_empty())
        .or(header.filter(|v| !v.is_empty()))
}

/// The version a call goes to (the one asked for, else the split's draw) and that
/// version's endpoints; `route` is `None` when the mesh has no such service. `draw` is a
/// float in [0, 1) for the split (unused without one).
pub fn target<'a, E: VersionedEndpoint>(
    service: &str,
    route: Option<RouteView<'a, E>>,
    version: Option<&str>,
    draw: f64,
) -> Result<(Option<String>, Vec<&'a E>), NoEndpoint> {
    let Some(route) = route else {
        return Err(NoEndpoint {
            reason: format!("{service} is not a service of this mesh"),
        });
    };
    let version = match version {
        None => pick_version(route.split, draw).map(str::to_owned),
        Some(v) if route.versions.iter().any(|known| known == v) => Some(v.to_owned()),
        Some(v) => {
            let known = if route.versions.is_empty() {
                "none".to_owned()
            } else {
                route.versions.join(", ")
            };
            return Err(NoEndpoint {
                reason: format!(
                    "{service} has no version {} (its versions: {known})",
                    crate::policy::faults::py_str_repr(v)
                ),
            });
        }
    };
    let candidates: Vec<&E> = match &version {
        None => route.endpoints.iter().collect(),
        Some(v) => route
            .endpoints
            .iter()
            .filter(|e| e.version() == v)
            .collect(),
    };
    if candidates.is_empty() {
        let which = match &version {
            None => service.to_owned(),
            Some(v) => format!("{service} version {v}"),
        };
        return Err(NoEndpoint {
            reason: format!("no healthy instance of {which}"),
        });
    }
    Ok((version, candidates))
}

/// The version whose weight band holds `draw * 100`; versions weighing 0 or less are
/// never picked; `None` without a split.
pub fn pick_version(split: &[(String, f64)], draw: f64) -> Option<&str> {
    if split.is_empty() {
        return None;
    }
    let point = draw * 100.0;
    let mut total = 0.0;
    let mut chosen = None;
    for (version, weight) in split {
        if *weight <= 0.0 {
            continue;
        }
        chosen = Some(version.as_str());
        total += weight;
        if point < total {
            break;
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use std::collections::{BTreeMap, HashMap};

    #[derive(Debug, Clone)]
    struct Ep {
        instance: String,
        version: String,
    }

    impl VersionedEndpoint for Ep {
        fn instance(&self) -> &str {
            &self.instance
        }
        fn version(&self) -> &str {
            &self.version
        }
    }

    fn ep(instance: &str, version: &str) -> Ep {
        Ep {
            instance: instance.into(),
            version: version.into(),
        }
    }

    #[derive(Default)]
    struct Route {
        endpoints: Vec<Ep>,
        split: Vec<(String, f64)>,
        versions: Vec<String>,
    }

    impl Route {
        fn of(endpoints: Vec<Ep>) -> Self {
            Route {
                endpoints,
                ..Route::default()
            }
        }
        fn split(mut self, split: &[(&str, f64)]) -> Self {
            self.split = split.iter().map(|(v, w)| (v.to_string(), *w)).collect();
            self
        }
        fn versions(mut self, versions: &[&str]) -> Self {
            self.versions = versions.iter().map(|v| v.to_string()).collect();
            self
        }
        fn view(&self) -> RouteView<'_, Ep> {
            RouteView {
                endpoints: &self.endpoints,
                split: &self.split,
                versions: &self.versions,
            }
        }
    }

    type Routes = BTreeMap<String, Route>;

    fn chosen(
        routes: &Routes,
        service: &str,
        version: Option<&str>,
        draw: f64,
    ) -> (Option<String>, Vec<String>) {
        let (v, eps) = target(service, routes.get(service).map(Route::view), version, draw)
            .expect("an endpoint");
        (v, eps.iter().map(|e| e.instance.clone()).collect())
    }

    fn no_endpoint(routes: &Routes, service: &str, version: Option<&str>, draw: f64) -> String {
        target(service, routes.get(service).map(Route::view), version, draw)
            .expect_err("no endpoint")
            .reason
    }

    fn one(service: &str, route: Route) -> Routes {
        [(service.to_string(), route)].into_iter().collect()
    }

    fn split_route() -> Route {
        Route::of(vec![
            ep("c-v1-1", "v1"),
            ep("c-v2-1", "v2"),
            ep("c-v1-2", "v1"),
        ])
        .split(&[("v1", 90.0), ("v2", 10.0)])
    }

    #[test]
    fn without_a_split_every_endpoint_may_take_the_call() {
        let routes = one(
            "catalog",
            Route::of(vec![ep("a-1", "v1"), ep("a-2", "v1"), ep("a-3", "v1")]),
        );
        assert_eq!(
            chosen(&routes, "catalog", None, 0.5),
            (None, vec!["a-1".into(), "a-2".into(), "a-3".into()])
        );
    }

    #[test]
    fn unknown_service_is_no_endpoint_naming_it() {
        let routes = one("catalog", Route::of(vec![ep("c-1", "v1")]));
        assert_eq!(
            no_endpoint(&routes, "billing", None, 0.0),
            "billing is not a service of this mesh"
        );
        assert_eq!(
            chosen(&routes, "catalog", None, 0.0),
            (None, vec!["c-1".into()])
        );
    }

    #[test]
    fn known_service_without_endpoints_is_no_endpoint() {
        let routes = one("catalog", Route::of(vec![]));
        assert_eq!(
            no_endpoint(&routes, "catalog", None, 0.0),
            "no healthy instance of catalog"
        );
    }

    #[test]
    fn split_picks_the_version_whose_weight_band_holds_the_random_point() {
        let routes = one("catalog", split_route());
        let versions: Vec<_> = [0.0, 0.5, 0.8999, 0.9, 0.95, 0.9999, 0.1]
            .into_iter()
            .map(|d| chosen(&routes, "catalog", None, d).0.unwrap())
            .collect();
        assert_eq!(versions, ["v1", "v1", "v1", "v2", "v2", "v2", "v1"]);
    }

    #[test]
    fn split_offers_only_the_chosen_versions_endpoints() {
        let routes = one("catalog", split_route());
        assert_eq!(
            chosen(&routes, "catalog", None, 0.0),
            (Some("v1".into()), vec!["c-v1-1".into(), "c-v1-2".into()])
        );
    }

    #[test]
    fn a_zero_weight_version_is_never_picked() {
        let routes = one(
            "catalog",
            Route::of(vec![ep("a", "v1"), ep("b", "v2")]).split(&[("v1", 0.0), ("v2", 100.0)]),
        );
        for draw in [0.0, 0.5, 0.99999] {
            assert_eq!(
                chosen(&routes, "catalog", None, draw),
                (Some("v2".into()), vec!["b".into()])
            );
        }
    }

    #[test]
    fn the_split_order_sets_the_bands() {
        let split: Vec<(String, f64)> = vec![("v2".into(), 10.0), ("v1".into(), 90.0)];
        assert_eq!(pick_version(&split, 0.05), Some("v2"));
        assert_eq!(pick_version(&split, 0.1), Some("v1"));
        assert_eq!(pick_version(&[], 0.1), None);
    }

    #[test]
    fn split_shares_match_the_weights_statistically() {
        for weights in [
            vec![("v1", 70.0), ("v2", 20.0), ("v3", 10.0)],
            vec![("v1", 50.0), ("v2", 50.0)],
            vec![("v1", 99.0), ("v2", 1.0)],
        ] {
            let endpoints = weights
                .iter()
                .map(|(v, _)| ep(&format!("c-{v}-1"), v))
                .collect();
            let routes = one("catalog", Route::of(endpoints).split(&weights));
            let mut rng = rand::rngs::StdRng::seed_from_u64(1234);
            let n = 10_000;
            let mut counts: HashMap<String, usize> = HashMap::new();
            for _ in 0..n {
                let v = chosen(&routes, "catalog", None, rng.random::<f64>())
                    .0
                    .unwrap();
                *counts.entry(v).or_insert(0) += 1;
            }
            assert_eq!(counts.values().sum::<usize>(), n);
            for (version, weight) in &weights {
                let share = 100.0 * counts.get(*version).copied().unwrap_or(0) as f64 / n as f64;
                assert!(
                    (share - weight).abs() <= 1.5,
                    "{version}: {share:.2}% for weight {weight}%"
                );
            }
        }
    }

    #[test]
    fn split_naming_a_version_without_endpoints_is_no_endpoint_naming_the_version() {
        let routes = one(
            "catalog",
            Route::of(vec![ep("c-v1-1", "v1")]).split(&[("v1", 50.0), ("v2", 50.0)]),
        );
        assert_eq!(
            no_endpoint(&routes, "catalog", None, 0.75),
            "no healthy instance of catalog version v2"
        );
        assert_eq!(
            chosen(&routes, "catalog", None, 0.25),
            (Some("v1".into()), vec!["c-v1-1".into()])
        );
    }

    fn versioned() -> Routes {
        let mut routes = one(
            "catalog",
            Route::of(vec![ep("c-v1-1", "v1"), ep("c-rc-2-1", "rc-2")])
                .split(&[("v1", 100.0), ("rc-2", 0.0)])
                .versions(&["v1", "rc-2"]),
        );
        routes.insert("pricing".into(), Route::of(vec![ep("p-1", "default")]));
        routes
    }

    #[test]
    fn a_host_names_a_service_or_one_of_its_versions() {
        let routes = versioned();
        let versions_of = |s: &str| routes.get(s).map(|r| r.versions.as_slice());
        type Resolved<'a> = Option<(&'a str, Option<&'a str>)>;
        let cases: [(&str, Resolved); 8] = [
            ("catalog", Some(("catalog", None))),
            ("catalog-v1", Some(("catalog", Some("v1")))),
            ("catalog-rc-2", Some(("catalog", Some("rc-2")))),
            ("pricing", Some(("pricing", None))),
            ("pricing-default", None), // an unversioned service has no version hosts
            ("catalog-v3", None),
            ("elsewhere", None),
            ("", None),
        ];
        for (host, expected) in cases {
            assert_eq!(resolve(host, versions_of), expected, "{host}");
        }
    }

    #[test]
    fn a_version_host_goes_to_that_version_whatever_the_split() {
        let routes = versioned();
        for draw in [0.0, 0.5, 0.99] {
            assert_eq!(
                chosen(&routes, "catalog", Some("rc-2"), draw),
                (Some("rc-2".into()), vec!["c-rc-2-1".into()])
            );
        }
    }

    #[test]
    fn a_version_the_service_does_not_have_is_no_endpoint_naming_its_versions() {
        let routes = versioned();
        assert_eq!(
            no_endpoint(&routes, "catalog", Some("v9"), 0.0),
            "catalog has no version 'v9' (its versions: v1, rc-2)"
        );
        assert_eq!(
            no_endpoint(&routes, "pricing", Some("v1"), 0.0),
            "pricing has no version 'v1' (its versions: none)"
        );
    }

    #[test]
    fn the_host_s_version_comes_before_the_pinning_header() {
        assert_eq!(requested_version(Some("v2"), Some("v1")), Some("v2"));
        assert_eq!(requested_version(None, Some("v1")), Some("v1"));
        assert_eq!(requested_version(None, Some("")), None);
        assert_eq!(requested_version(None, None), None);
    }
}
