//! Whether the instance behind this sidecar is ready to take traffic, as
//! `proxy/health.py` decides it: the sidecar probes its own app on localhost (a TCP
//! connect, or `GET health_path` where one is given: any answer below 500 passes) and
//! reports each change of state to the control plane. No port: always ready.
//!
//! The decision ([`Tracker`]) is pure; [`HealthProbe`] does the probing and publishes
//! the tracker on a `watch` channel, which the control link follows.
//! Traffic reports failures too ([`HealthProbe::observed_failure`]): when the app
//! refuses a connection the inbound listener opens for a request, a ready instance
//! turns unhealthy at once instead of after [`FAILURES_BEFORE_UNHEALTHY`] probes.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::wire::bootstrap::strerror;
use crate::wire::messages::{Health, HealthState};

/// A ready instance turns unhealthy after this many failed probes in a row.
pub const FAILURES_BEFORE_UNHEALTHY: u32 = 3;
/// How long one probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Between probes while the instance is not ready.
pub const INTERVAL_STARTING: Duration = Duration::from_millis(100);
/// Between probes while it is ready.
pub const INTERVAL_READY: Duration = Duration::from_secs(1);

/// What is probed: the app's port on localhost, and the path to GET if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub app_port: Option<u16>,
    pub path: Option<String>,
}

impl Target {
    /// The probe in words, as the hello's `health_check` says it.
    pub fn describe(&self) -> String {
        match (self.app_port, &self.path) {
            (None, _) => "none".to_string(),
            (Some(port), Some(path)) if !path.is_empty() => {
                format!("GET http://127.0.0.1:{port}{path}")
            }
            (Some(port), _) => format!("TCP connect to 127.0.0.1:{port}"),
        }
    }
}

/// The health state and the probes' run of failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    pub state: HealthState,
    pub detail: String,
    failures: u32,
    /// How many failures traffic has reported: a probe under way when one came has
    /// its result ignored (it may have passed just before the app went away).
    observed: u32,
}

impl Tracker {
    /// `ready` with no port to probe, else `starting` until a probe passes.
    pub fn new(app_port: Option<u16>) -> Self {
        match app_port {
            None => Tracker {
                state: HealthState::Ready,
                detail: "no port to probe".into(),
                failures: 0,
                observed: 0,
            },
            Some(_) => Tracker {
                state: HealthState::Starting,
                detail: "not probed yet".into(),
                failures: 0,
                observed: 0,
            },
        }
    }

    /// The health to report.
    pub fn health(&self) -> Health {
        Health {
            state: self.state,
            detail: self.detail.clone(),
        }
    }

    /// Take one probe's result; true if what is reported changed (the state, or the
    /// detail of a state other than ready).
    pub fn observe(&mut self, passed: bool, detail: String) -> bool {
        let before = self.reported();
        self.detail = detail;
        if passed {
            self.failures = 0;
            self.state = HealthState::Ready;
        } else {
            self.failures += 1;
            if self.state == HealthState::Ready && self.failures >= FAILURES_BEFORE_UNHEALTHY {
                self.state = HealthState::Unhealthy;
            }
        }
        self.reported() != before
    }

    /// Traffic found the app not answering (`proxy/health.py`'s `observed_failure`):
    /// a ready instance turns unhealthy now with `detail` (true: report it); a
    /// starting or unhealthy one is left to the probes (`has_port`: false when there
    /// is no app to probe, and nothing changes).
    pub fn observed_failure(&mut self, has_port: bool, detail: String) -> bool {
        if !has_port || self.state != HealthState::Ready {
            return false;
        }
        self.observed += 1;
        self.failures = FAILURES_BEFORE_UNHEALTHY;
        self.state = HealthState::Unhealthy;
        self.detail = detail;
        true
    }

    fn reported(&self) -> (HealthState, String) {
        let detail = if self.state == HealthState::Ready {
            ""
        } else {
            self.detail.as_str()
        };
        (self.state, detail.to_string())
    }
}

/// Probes the app and publishes the [`Tracker`].
#[derive(Debug)]
pub struct HealthProbe {
    target: Target,
    tracker: watch::Sender<Tracker>,
}

impl HealthProbe {
    pub fn new(target: Target) -> Self {
        let (tracker, _) = watch::channel(Tracker::new(target.app_port));
        HealthProbe { target, tracker }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The health as it stands.
    pub fn health(&self) -> Health {
        self.tracker.borrow().health()
    }

    /// Follow the changes of what is reported.
    pub fn subscribe(&self) -> watch::Receiver<Tracker> {
        self.tracker.subscribe()
    }

    /// One probe: `(passed, what was seen)`.
    pub async fn check(&self) -> (bool, String) {
        let Some(port) = self.target.app_port else {
            return (true, "no port to probe".into());
        };
        let describe = self.target.describe();
        let path = self.target.path.as_deref().filter(|p| !p.is_empty());
        let outcome = tokio::time::timeout(PROBE_TIMEOUT, probe(port, path)).await;
        match outcome {
            Err(_) => (false, format!("{describe} failed: timed out")),
            Ok(Err(err)) => (false, format!("{describe} failed: {}", strerror(&err))),
            Ok(Ok(None)) => (true, format!("{describe} succeeded")),
            Ok(Ok(Some(status))) => (status < 500, format!("{describe} answered {status}")),
        }
    }

    /// One probe now, taken as any probe is (when a hold of the app ends).
    pub async fn probe_now(&self) {
        if self.target.app_port.is_none() {
            return;
        }
        let observed = self.tracker.borrow().observed;
        let (passed, detail) = self.check().await;
        self.tracker
            .send_if_modified(|t| t.observed == observed && t.observe(passed, detail));
    }

    /// The app refused a connection a request opened (passive health): a ready
    /// instance turns unhealthy at once, and the control link reports it.
    pub fn observed_failure(&self, detail: String) {
        let has_port = self.target.app_port.is_some();
        self.tracker
            .send_if_modified(|t| t.observed_failure(has_port, detail));
    }

    /// Probe forever (drop the future to stop).
    pub async fn run(&self) {
        if self.target.app_port.is_none() {
            return;
        }
        loop {
            self.probe_now().await;
            let ready = self.tracker.borrow().state == HealthState::Ready;
            tokio::time::sleep(if ready {
                INTERVAL_READY
            } else {
                INTERVAL_STARTING
            })
            .await;
        }
    }
}

/// Connect to the app (and GET `path` if given): `None` for a bare connect, else the
/// status the app answered.
async fn probe(port: u16, path: Option<&str>) -> std::io::Result<Option<u16>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let Some(path) = path else {
        return Ok(None);
    };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await?;
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response")
        })?;
    Ok(Some(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_as_the_python() {
        let t = |app_port, path: Option<&str>| Target {
            app_port,
            path: path.map(String::from),
        };
        assert_eq!(t(None, None).describe(), "none");
        assert_eq!(
            t(Some(8000), None).describe(),
            "TCP connect to 127.0.0.1:8000"
        );
        assert_eq!(
            t(Some(8000), Some("/healthz")).describe(),
            "GET http://127.0.0.1:8000/healthz"
        );
    }

    #[test]
    fn starting_until_a_probe_passes_then_unhealthy_after_three_failures() {
        let mut tracker = Tracker::new(Some(8000));
        assert_eq!(tracker.state, HealthState::Starting);
        assert!(
            tracker.observe(false, "refused".into()),
            "a new detail is reported"
        );
        assert!(!tracker.observe(false, "refused".into()));
        assert_eq!(
            tracker.state,
            HealthState::Starting,
            "starting does not turn unhealthy"
        );
        assert!(tracker.observe(true, "ok".into()));
        assert_eq!(tracker.state, HealthState::Ready);
        assert!(
            !tracker.observe(true, "ok again".into()),
            "a ready detail is not news"
        );
        assert!(!tracker.observe(false, "refused".into()));
        assert!(!tracker.observe(false, "refused".into()));
        assert!(tracker.observe(false, "refused".into()));
        assert_eq!(tracker.state, HealthState::Unhealthy);
        assert!(tracker.observe(true, "ok".into()));
    }

    #[test]
    fn a_failure_traffic_sees_turns_a_ready_instance_unhealthy_at_once() {
        let mut tracker = Tracker::new(Some(8000));
        assert!(
            !tracker.observed_failure(true, "refused".into()),
            "starting: left to the probes"
        );
        assert_eq!(tracker.state, HealthState::Starting);
        tracker.observe(true, "ok".into());
        assert!(!tracker.observed_failure(false, "refused".into()));
        assert!(tracker.observed_failure(true, "refused by a request".into()));
        assert_eq!(tracker.state, HealthState::Unhealthy);
        assert_eq!(tracker.detail, "refused by a request");
        assert!(!tracker.observed_failure(true, "again".into()));
        assert!(
            tracker.observe(true, "ok".into()),
            "a passing probe heals it"
        );
        assert_eq!(tracker.state, HealthState::Ready);
    }

    #[tokio::test]
    async fn a_failure_traffic_reports_is_heard_at_once_and_a_passing_probe_heals_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = HealthProbe::new(Target {
            app_port: Some(port),
            path: None,
        });
        probe.probe_now().await;
        assert_eq!(probe.health().state, HealthState::Ready);
        let mut changes = probe.subscribe();
        changes.mark_unchanged();
        probe.observed_failure(format!(
            "connection refused on 127.0.0.1:{port} by a request"
        ));
        assert!(changes.has_changed().unwrap());
        assert_eq!(probe.health().state, HealthState::Unhealthy);
        probe.probe_now().await;
        assert_eq!(probe.health().state, HealthState::Ready);
    }

    #[test]
    fn without_a_port_it_is_ready() {
        let tracker = Tracker::new(None);
        assert_eq!(tracker.health().state, HealthState::Ready);
        assert_eq!(tracker.health().detail, "no port to probe");
    }

    #[tokio::test]
    async fn a_tcp_probe_passes_on_a_listening_port_and_fails_on_a_closed_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = HealthProbe::new(Target {
            app_port: Some(port),
            path: None,
        });
        let (passed, detail) = probe.check().await;
        assert!(passed, "{detail}");
        assert_eq!(detail, format!("TCP connect to 127.0.0.1:{port} succeeded"));
        drop(listener);
        let (passed, detail) = probe.check().await;
        assert!(!passed);
        assert_eq!(
            detail,
            format!("TCP connect to 127.0.0.1:{port} failed: Connection refused")
        );
    }

    #[tokio::test]
    async fn an_http_probe_reads_the_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
            socket
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
                .await
                .unwrap();
        });
        let probe = HealthProbe::new(Target {
            app_port: Some(port),
            path: Some("/healthz".into()),
        });
        let (passed, detail) = probe.check().await;
        server.await.unwrap();
        assert!(!passed);
        assert_eq!(
            detail,
            format!("GET http://127.0.0.1:{port}/healthz answered 503")
        );
    }
}
