//! The inbound sidecar's gate in front of its app, held while the app restarts
//! (`proxy/appgate.py`).
//!
//! A restart asks the sidecar, through the control plane, to *hold*: calls already with
//! the app finish, new ones wait here instead of finding the app gone, and the sidecar
//! says `held` when none is in flight (or after [`DRAIN_LIMIT`]). A *release* lets the
//! waiting calls go on. A hold ends by itself after [`HOLD_LIMIT`]; a call that waited
//! that long is answered 503 (`app-restarting`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub use crate::control::liveness::HOLD_LIMIT;

/// At most this long the answer to a hold waits for the calls in flight to end.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct State {
    held_since: Option<Instant>,
    in_flight: usize,
}

impl State {
    /// Whether the gate is closed at `now` (a hold past its limit has ended by itself).
    fn held(&mut self, now: Instant) -> bool {
        if let Some(since) = self.held_since {
            if now.saturating_duration_since(since) >= HOLD_LIMIT {
                self.held_since = None;
            }
        }
        self.held_since.is_some()
    }
}

/// The gate: open, or held (with the calls in flight counted either way).
#[derive(Debug)]
pub struct AppGate {
    state: Mutex<State>,
    open: watch::Sender<bool>,
}

impl Default for AppGate {
    fn default() -> Self {
        AppGate {
            state: Mutex::new(State::default()),
            open: watch::channel(true).0,
        }
    }
}

/// A call with the app: counted in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<AppGate>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().expect("app gate");
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

impl AppGate {
    /// Wait until the gate is open (at most [`HOLD_LIMIT`]), then count a call in flight;
    /// `None` if it stayed closed that long (answer 503).
    pub async fn enter(self: &Arc<Self>) -> Option<InFlight> {
        let mut open = self.open.subscribe();
        let deadline = tokio::time::Instant::now() + HOLD_LIMIT;
        loop {
            {
                let mut state = self.state.lock().expect("app gate");
                if !state.held(Instant::now()) {
                    state.in_flight += 1;
                    return Some(InFlight(self.clone()));
                }
            }
            tokio::select! {
                _ = open.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    let mut state = self.state.lock().expect("app gate");
                    if state.held(Instant::now()) {
                        return None;
                    }
                    state.in_flight += 1;
                    return Some(InFlight(self.clone()));
                }
            }
        }
    }

    /// Close the gate at `now` (a hold already on keeps its start).
    pub fn hold(&self, now: Instant) {
        let mut state = self.state.lock().expect("app gate");
        state.held_since.get_or_insert(now);
        self.open.send_replace(false);
    }

    /// Open the gate: the calls that wait go on.
    pub fn release(&self) {
        self.state.lock().expect("app gate").held_since = None;
        self.open.send_replace(true);
    }

    /// Whether the gate is closed now.
    pub fn held(&self) -> bool {
        self.state.lock().expect("app gate").held(Instant::now())
    }

    /// Calls with the app now.
    pub fn in_flight(&self) -> usize {
        self.state.lock().expect("app gate").in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_open_gate_counts_calls_in_flight() {
        let gate = Arc::new(AppGate::default());
        let call = gate.enter().await.unwrap();
        assert_eq!(gate.in_flight(), 1);
        drop(call);
        assert_eq!(gate.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_held_gate_keeps_calls_waiting_until_the_release() {
        let gate = Arc::new(AppGate::default());
        gate.hold(Instant::now());
        assert!(gate.held());
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter().await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        gate.release();
        assert_eq!(waiting.await.unwrap(), Some(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_held_past_the_limit_is_refused() {
        let gate = Arc::new(AppGate::default());
        // Held "now" by the std clock, which a paused tokio clock does not move: the hold
        // stays on, and the wait at the gate gives up at the limit.
        gate.hold(Instant::now());
        assert!(gate.enter().await.is_none());
    }

    #[test]
    fn a_hold_ends_by_itself_after_the_limit() {
        let mut state = State {
            held_since: Some(Instant::now()),
            in_flight: 0,
        };
        assert!(state.held(Instant::now()));
        assert!(!state.held(Instant::now() + HOLD_LIMIT));
        assert_eq!(state.held_since, None);
    }
}
