//! The connections the inbound gate closed, and why (the Python's `Refusals`).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{debug, info};

use super::MAX_ADMITTING;

/// Why the gate closed a connection: the Python's `Refusals` reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// [`MAX_ADMITTING`] connections waited for a first byte already.
    Busy,
    /// A plaintext client, and the service is mTLS `strict`.
    Plaintext,
    /// A TLS client, and mTLS is `off` or the sidecar has no identity yet.
    TlsUnavailable,
    /// The TLS handshake failed (or did not end within [`SNIFF_TIMEOUT`](super::SNIFF_TIMEOUT)).
    Handshake,
    /// A certificate of the CA naming no identity of this mesh.
    Identity,
    /// The connection ended, or sent nothing, before its first byte: not counted (the
    /// Python logs it at debug level only).
    Gone,
}

const COUNTED: [Reason; 5] = [
    Reason::Busy,
    Reason::Plaintext,
    Reason::TlsUnavailable,
    Reason::Handshake,
    Reason::Identity,
];

impl Reason {
    /// The name counted: `busy`, `plaintext`, `tls-unavailable`, `handshake`,
    /// `identity` (and `gone`, never counted).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Busy => "busy",
            Reason::Plaintext => "plaintext",
            Reason::TlsUnavailable => "tls-unavailable",
            Reason::Handshake => "handshake",
            Reason::Identity => "identity",
            Reason::Gone => "gone",
        }
    }
}

/// A connection the gate did not let in: why, and what to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    /// The Python's texts, e.g. `a plaintext client, and this service is mTLS strict`.
    pub detail: String,
}

impl Refusal {
    pub(crate) fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Refusal {
            reason,
            detail: detail.into(),
        }
    }

    /// The refusal of a connection over [`MAX_ADMITTING`], for the listener.
    pub fn busy() -> Self {
        Refusal::new(
            Reason::Busy,
            format!("{MAX_ADMITTING} connections wait for a first byte"),
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Connections the gate closed, counted by reason.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; COUNTED.len()],
}

impl Refusals {
    /// Count and log `refusal` of a connection from `peer` (a [`Reason::Gone`] is
    /// logged at debug level, not counted).
    pub fn add(&self, peer: SocketAddr, refusal: &Refusal) {
        match COUNTED.iter().position(|r| *r == refusal.reason) {
            Some(i) => {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
                info!("refused a connection from {peer}: {}", refusal.detail);
            }
            None => debug!(
                "a connection from {peer} ended before a byte: {}",
                refusal.detail
            ),
        }
    }

    /// How many were refused for `reason`.
    pub fn count(&self, reason: Reason) -> u64 {
        COUNTED
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    /// The counts by name, those not zero, in the order of [`Reason`].
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        COUNTED
            .iter()
            .map(|r| (r.as_str(), self.count(*r)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}
