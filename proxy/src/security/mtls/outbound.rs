//! Calls to other sidecars: over mTLS or not by the destination's mode, and the mTLS
//! connection itself, which takes the server only if it proves the destination's
//! SPIFFE ID.

use std::fmt;
use std::io;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{client, TlsConnector};

use super::verify::{self, Misnamed};
use super::{describe_io, rustls_error, Credentials};
use crate::wire::snapshot::MtlsMode;

/// How to call a sidecar of a service whose mode is `mode` (the Python's
/// `Outbound._tls`).
#[derive(Debug, Clone)]
pub enum Dial {
    /// Plaintext: its mode is `off`, or `permissive` and this sidecar has no identity.
    Plain,
    /// mTLS, with these credentials ([`connect`]).
    Mtls(Arc<Credentials>),
    /// Not at all: it is `strict` and this sidecar has no identity yet. The text is
    /// the Python's `no-identity` answer.
    NoIdentity(String),
}

/// How to call `service`, whose mode is `mode`, with the identity installed now.
pub fn dial(mode: MtlsMode, credentials: Option<&Arc<Credentials>>, service: &str) -> Dial {
    match (mode, credentials) {
        (MtlsMode::Off, _) => Dial::Plain,
        (_, Some(credentials)) => Dial::Mtls(credentials.clone()),
        (MtlsMode::Strict, None) => Dial::NoIdentity(format!(
            "{service} takes only mTLS calls and this sidecar has no identity yet \
             (its control plane gives it one)"
        )),
        (MtlsMode::Permissive, None) => Dial::Plain,
    }
}

/// Why [`connect`] made no connection: nothing was sent (the Python's `ConnectFailed`).
#[derive(Debug)]
pub enum ConnectError {
    /// The handshake failed (the server's certificate is not of the CA, expired, ...).
    Handshake(String),
    /// The server's certificate is of the CA but names another identity.
    Misnamed(Misnamed),
    /// The connection broke during the handshake.
    Io(io::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Handshake(reason) => write!(f, "the mTLS handshake failed: {reason}"),
            ConnectError::Misnamed(misnamed) => misnamed.fmt(f),
            ConnectError::Io(err) => f.write_str(&describe_io(err)),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Make `tcp` (connected to a sidecar of `service`) an mTLS connection with
/// `credentials`: no SNI, ALPN `http/1.1`, and the server must prove it is
/// `credentials.peer_id(service)`. The caller bounds the time it takes.
pub async fn connect(
    tcp: TcpStream,
    credentials: &Credentials,
    service: &str,
) -> Result<client::TlsStream<TcpStream>, ConnectError> {
    // No SNI is sent; the name only keys the resumption cache (per destination).
    let name = ServerName::IpAddress(tcp.peer_addr().map_err(ConnectError::Io)?.ip().into());
    TlsConnector::from(credentials.client_config(service))
        .connect(name, tcp)
        .await
        .map_err(|err| match rustls_error(&err) {
            Some(tls) => match verify::misnamed(tls) {
                Some(misnamed) => ConnectError::Misnamed(misnamed.clone()),
                None => ConnectError::Handshake(tls.to_string()),
            },
            None => ConnectError::Io(err),
        })
}
