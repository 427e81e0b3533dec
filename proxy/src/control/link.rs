//! The sidecar's link to the control plane, as `proxy/control.py` has it: one
//! WebSocket to `<control_plane>/v1/sidecar/stream`, dialled by the sidecar with
//! `Authorization: Bearer <project token>` (the token read again before each dial).
//!
//! Each link begins with a `hello` (the node, the snapshot version in force, the
//! health as it stands, so that a sidecar dialling again keeps its place in routing);
//! the messages of the control plane are answered by [`LinkState`], which outlives
//! each link, as the snapshot in force does.
//!
//! Liveness: any frame counts; a ping after [`PING_AFTER`] of silence, the link given up
//! after [`SILENCE_LIMIT`]. A link that drops is dialled again with capped exponential
//! backoff with jitter ([`Backoff`]).
//!
//! With a data plane ([`ControlLink::with_data_plane`]) the link sends its telemetry
//! and breakers, and a hold closes its app gate (see [`LinkState`]). Messages that
//! a link that breaks could not send go back to be sent on the next one (telemetry
//! records to their buffer, breakers to be sent again), as the Python does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Sink, SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{error, info};

use super::health::HealthProbe;
use super::liveness::{Backoff, Liveness, Silence, FLUSH_INTERVAL};
pub use super::liveness::{PING_AFTER, SILENCE_LIMIT};
pub use super::state::LinkState;
use crate::wire::bootstrap::{strerror, Bootstrap};
use crate::wire::messages::ToControl;
use crate::wire::snapshot::Snapshot;

/// The control plane's route for sidecar links.
pub const STREAM_PATH: &str = "/v1/sidecar/stream";
/// How long the WebSocket handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long, on shutdown, saying `leaving` and closing may take.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a link ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Asked to stop: it said `leaving` and closed.
    Stopped,
    /// The control plane closed it.
    Closed,
}

/// The control link: dials, keeps the link alive, dials again.
pub struct ControlLink {
    state: LinkState,
    connected: watch::Sender<bool>,
    ping_after: Duration,
    silence_limit: Duration,
}

impl ControlLink {
    /// A link for `boot`, starting from the last good snapshot and the identity kept on
    /// disk, if any.
    pub fn new(boot: Bootstrap, health: Arc<HealthProbe>) -> Self {
        ControlLink {
            state: LinkState::new(boot, health),
            connected: watch::channel(false).0,
            ping_after: PING_AFTER,
            silence_limit: SILENCE_LIMIT,
        }
    }

    /// Send `data`'s telemetry and breakers, and hold its app gate when asked.
    pub fn with_data_plane(mut self, data: crate::engine::sidecar::DataPlane) -> Self {
        self.state = self.state.with_data_plane(data);
        self
    }

    /// Other limits of silence than [`PING_AFTER`] and [`SILENCE_LIMIT`] (tests).
    pub fn with_silence(mut self, ping_after: Duration, limit: Duration) -> Self {
        self.ping_after = ping_after;
        self.silence_limit = limit;
        self
    }

    /// The snapshot in force, and each one taken after it.
    pub fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.state.snapshots()
    }

    /// This sidecar's identity as the control plane installs it.
    pub fn credentials(&self) -> crate::security::mtls::CredentialsWatch {
        self.state.credentials()
    }

    /// Whether a link is up now.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    /// Stay linked until `stop` turns true; then say `leaving` (if linked) and close.
    pub async fn run(&mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::default();
        loop {
            if *stop.borrow() {
                return;
            }
            match self.state.boot().token() {
                Err(err) => error!("{err}"),
                Ok(token) => {
                    let ended = self.session(&token, &mut stop).await;
                    self.connected.send_replace(false);
                    match ended {
                        Ok(Ended::Stopped) => return,
                        Ok(Ended::Closed) => {
                            info!("the control plane closed the link; dialling again");
                            backoff.reset();
                        }
                        Err(why) => info!("control plane unreachable ({why}); retrying"),
                    }
                }
            }
            let delay = backoff.next_delay(rand::random::<f64>());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One link, from the dial until it ends.
    async fn session(
        &mut self,
        token: &str,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Ended, String> {
        let url = format!(
            "{}{STREAM_PATH}",
            websocket_base(&self.state.boot().control_plane)
        );
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the project token is not a valid header value".to_string())?;
        request.headers_mut().insert("Authorization", bearer);
        let dialled =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::connect_async(request));
        let dialled = tokio::select! {
            dialled = dialled => dialled,
            _ = stop.changed() => return Ok(Ended::Stopped),
        };
        let (ws, _) = match dialled {
            Err(_) => return Err("the WebSocket handshake timed out".into()),
            Ok(Err(err)) => return Err(link_error(&err)),
            Ok(Ok(ws)) => ws,
        };
        let (mut sink, mut frames) = ws.split();
        send(&mut sink, &self.state.hello()).await?;
        self.state.health_changed();
        self.connected.send_replace(true);
        info!(
            "connected to control plane {}",
            self.state.boot().control_plane
        );
        let mut health = self.state.health_changes();
        health.mark_unchanged();
        let mut live = Liveness::with_limits(Instant::now(), self.ping_after, self.silence_limit);
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    let leave = async {
                        send(&mut sink, &ToControl::Leaving).await?;
                        for message in self.state.pending(Instant::now()) {
                            send(&mut sink, &message).await?;
                        }
                        sink.close().await.map_err(|e| e.to_string())?;
                        // Read on until the control plane's close answers ours.
                        while let Some(Ok(_)) = frames.next().await {}
                        Ok::<(), String>(())
                    };
                    if let Ok(Err(err)) = tokio::time::timeout(LEAVE_TIMEOUT, leave).await {
                        info!("could not say goodbye to the control plane: {err}");
                    }
                    return Ok(Ended::Stopped);
                }
                frame = frames.next() => {
                    let frame = match frame {
                        None => return Ok(Ended::Closed),
                        Some(Err(err)) => return Err(link_error(&err)),
                        Some(Ok(frame)) => frame,
                    };
                    live.heard(Instant::now());
                    match frame {
                        Message::Text(text) => {
                            for reply in self.state.handle(text.as_str()).await {
                                send(&mut sink, &reply).await?;
                            }
                        }
                        Message::Close(Some(close)) if close.code == CloseCode::Policy => {
                            let reason = match close.reason.as_str() {
                                "" => "bad token",
                                reason => reason,
                            };
                            error!("control plane refused this sidecar: {reason}");
                        }
                        _ => {}
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    let mut pending = self.state.pending(now).into_iter();
                    while let Some(message) = pending.next() {
                        if let Err(err) = send(&mut sink, &message).await {
                            // Kept for the next link: this message and those after it.
                            self.state.put_back(std::iter::once(message).chain(pending).collect());
                            return Err(err);
                        }
                    }
                    match live.check(now) {
                        Silence::Fine => {}
                        Silence::Ping => {
                            let ping = Message::Ping(Default::default());
                            sink.send(ping).await.map_err(|e| link_error(&e))?;
                        }
                        Silence::GiveUp => {
                            let _ = sink.close().await;
                            let limit = live.limit().as_secs_f64();
                            return Err(format!("no word from the control plane in {limit}s"));
                        }
                    }
                }
                changed = health.changed() => {
                    if changed.is_ok() {
                        self.state.health_changed();
                    }
                }
            }
        }
    }
}

async fn send<S>(sink: &mut S, message: &ToControl) -> Result<(), String>
where
    S: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    sink.send(Message::text(message.to_text()))
        .await
        .map_err(|e| link_error(&e))
}

/// What a failed dial or link says, in the Python's words where it has them.
fn link_error(err: &tungstenite::Error) -> String {
    match err {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            format!(
                "the server answered {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_string()
        }
        tungstenite::Error::Io(io) => strerror(io),
        other => other.to_string(),
    }
}

/// `http://host:port` as `ws://host:port` (`https` as `wss`); `ws://` stays.
pub fn websocket_base(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            websocket_base("http://127.0.0.1:41000"),
            "ws://127.0.0.1:41000"
        );
        assert_eq!(websocket_base("https://cp:1"), "wss://cp:1");
        assert_eq!(websocket_base("ws://cp:1"), "ws://cp:1");
    }

    #[test]
    fn errors_in_the_python_words() {
        let refused = std::io::Error::from_raw_os_error(111);
        assert_eq!(
            link_error(&tungstenite::Error::Io(refused)),
            "Connection refused"
        );
        let response = tungstenite::http::Response::builder()
            .status(401)
            .body(None)
            .unwrap();
        assert_eq!(
            link_error(&tungstenite::Error::Http(Box::new(response))),
            "the server answered 401 Unauthorized"
        );
    }
}
