//! mTLS between sidecars (`proxy/mtls.py`, and the mTLS parts of `proxy/identity.py`,
//! `proxy/httpclient.py` and `proxy/httpserver.py`): what the inbound listener lets
//! in, how a call to another sidecar is made, and the names certificates carry.
//!
//! The inbound listener looks at the first byte of each new connection before it
//! reads anything ([`TcpStream::peek`](tokio::net::TcpStream::peek)): `0x16` opens a
//! TLS handshake, anything else is plaintext HTTP. So one port serves both in
//! `permissive` mode, and in `strict` mode a plaintext client is closed before a byte
//! of it is read. A TLS client must present a certificate of the mesh's CA, unexpired
//! (rustls checks both; in `permissive` mode too: it lets plaintext in beside mTLS,
//! never TLS without a client certificate), naming one SPIFFE ID of this project
//! (checked when the handshake ends, before the first read): otherwise the connection
//! is closed and nothing of it reaches the service.
//!
//! A call to another sidecar ([`connect`]) presents this sidecar's certificate, sends
//! no SNI (peers are named by SPIFFE ID, not by host), and takes the server only if
//! its certificate chains to the CA and names exactly the SPIFFE ID of the destination
//! service (Istio's secure naming).
//!
//! The [`Gate`] is taken for each connection when it arrives, so a new mode or a
//! renewed identity (the [`CredentialsWatch`]) applies to new connections at once
//! while open ones go on with the configuration they began with; a change of mode
//! also closes the open connections it no longer admits ([`keeps_open`], as the
//! Python's `Listener.enforce`).

mod credentials;
mod inbound;
mod outbound;
mod refusals;
mod verify;

#[cfg(test)]
pub(crate) mod tests;

use std::io;
use std::sync::Arc;

use tokio::sync::watch;

pub use credentials::{peer_identity, service_of, spiffe_ids, trust_prefix, Credentials, ALPN};
pub use inbound::{
    admit, keeps_open, Admitted, Gate, MeshStream, MAX_ADMITTING, SNIFF_TIMEOUT, TLS_HANDSHAKE,
};
pub use outbound::{connect, dial, ConnectError, Dial};
pub use refusals::{Reason, Refusal, Refusals};
pub use verify::Misnamed;

/// The identity installed now, and each one after it (`None`: none yet). Published by
/// `control::identity::IdentityStore::credentials`.
pub type CredentialsWatch = watch::Receiver<Option<Arc<Credentials>>>;

fn rustls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}

fn describe_tls(err: &io::Error) -> String {
    match rustls_error(err) {
        Some(tls) => tls.to_string(),
        None => describe_io(err),
    }
}

/// An I/O error as the Python's `os.strerror`: without Rust's ` (os error N)`.
fn describe_io(err: &io::Error) -> String {
    let text = err.to_string();
    match (err.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => text[..at].to_string(),
        _ => text,
    }
}
