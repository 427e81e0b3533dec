//! mTLS between sidecars (`proxy/mtls.py`, and the mTLS parts of `proxy/identity.py`,
//! `proxy/httpclient.py` and `proxy/httpserver.py`): what the inbound listener lets
//! in, how a call to another sidecar is made, and the names certificates carry.
//!
//! The inbound listener looks at the first byte of each new connection before it
//! reads anything ([`TcpStream::peek`]): `0x16` opens a TLS handshake, anything else is
//! plaintext HTTP. So one port serves both in `permissive` mode, and in `strict` mode
//! a plaintext client is closed before a byte of it is read. A TLS client must present
//! a certificate of the mesh's CA, unexpired (rustls checks both), naming one SPIFFE ID
//! of this project (checked when the handshake ends, before the first read): otherwise
//! the connection is closed and nothing of it reaches the service.
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
mod verify;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};
use tracing::{debug, info};

pub use credentials::{peer_identity, service_of, spiffe_ids, trust_prefix, Credentials, ALPN};
pub use verify::Misnamed;

use crate::wire::snapshot::MtlsMode;

/// The first byte of a TLS record carrying a handshake (a ClientHello, first).
pub const TLS_HANDSHAKE: u8 = 0x16;

/// A new connection that sends nothing for this long is closed (as a head's timeout);
/// a TLS handshake gets as long again.
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections waiting for their first byte at once; more are closed
/// ([`Reason::Busy`]): a client that opens connections and sends nothing cannot use
/// up the sidecar's file descriptors. The listener counts them.
pub const MAX_ADMITTING: usize = 512;

/// The identity installed now, and each one after it (`None`: none yet). Published by
/// `control::identity::IdentityStore::credentials`.
pub type CredentialsWatch = watch::Receiver<Option<Arc<Credentials>>>;

/// What the inbound listener applies to a connection arriving now.
#[derive(Debug, Clone)]
pub struct Gate {
    /// The service's mode.
    pub mode: MtlsMode,
    /// This sidecar's identity, to present; `None`: it has none yet (TLS is refused).
    pub credentials: Option<Arc<Credentials>>,
}

impl Gate {
    /// The gate of `mode` with the identity `credentials` holds now.
    pub fn now(mode: MtlsMode, credentials: &CredentialsWatch) -> Gate {
        Gate {
            mode,
            credentials: credentials.borrow().clone(),
        }
    }
}

/// Whether a connection open under another mode stays open under `mode` (`mtls`: it
/// came over mTLS): plaintext ones close under `strict`, mTLS ones under `off`, each
/// once the request in hand is answered (the Python's `Listener.enforce`, as Envoy
/// drains connections when a change of mode changes its filter chain). The engine
/// asks when the mode of its service changes.
pub fn keeps_open(mode: MtlsMode, mtls: bool) -> bool {
    match mode {
        MtlsMode::Strict => mtls,
        MtlsMode::Permissive => true,
        MtlsMode::Off => !mtls,
    }
}

/// Why the gate closed a connection: the Python's `Refusals` reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// [`MAX_ADMITTING`] connections waited for a first byte already.
    Busy,
    /// A plaintext client, and the service is mTLS `strict`.
    Plaintext,
    /// A TLS client, and mTLS is `off` or the sidecar has no identity yet.
    TlsUnavailable,
    /// The TLS handshake failed (or did not end within [`SNIFF_TIMEOUT`]).
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
    fn new(reason: Reason, detail: impl Into<String>) -> Self {
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

/// An inbound connection, plaintext or mTLS, as one stream.
#[derive(Debug)]
pub enum MeshStream {
    Plain(TcpStream),
    Tls(Box<server::TlsStream<TcpStream>>),
}

impl MeshStream {
    /// The protocol agreed by ALPN (`http/1.1`), on an mTLS connection whose client
    /// offered one.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            MeshStream::Plain(_) => None,
            MeshStream::Tls(tls) => tls.get_ref().1.alpn_protocol(),
        }
    }

    /// The TCP connection under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            MeshStream::Plain(tcp) => tcp,
            MeshStream::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for MeshStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MeshStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MeshStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MeshStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MeshStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MeshStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MeshStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MeshStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MeshStream::Plain(s) => s.is_write_vectored(),
            MeshStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MeshStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MeshStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MeshStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MeshStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection the gate let in.
#[derive(Debug)]
pub struct Admitted {
    pub stream: MeshStream,
    /// The caller's SPIFFE ID, proven by mTLS; `None` on a plaintext connection.
    pub principal: Option<String>,
}

impl Admitted {
    /// Whether it came over mTLS (what [`keeps_open`] asks).
    pub fn mtls(&self) -> bool {
        self.principal.is_some()
    }
}

/// Let `stream` in by `gate`, or refuse it (the caller counts the refusal in its
/// [`Refusals`] and drops the stream, which closes it): its first byte is peeked at,
/// left unread, within [`SNIFF_TIMEOUT`]; a TLS handshake must end within as long
/// again.
pub async fn admit(stream: TcpStream, gate: &Gate) -> Result<Admitted, Refusal> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(SNIFF_TIMEOUT, stream.peek(&mut first)).await {
        Err(_) => {
            let wait = SNIFF_TIMEOUT.as_secs_f64();
            return Err(Refusal::new(
                Reason::Gone,
                format!("nothing came within {wait}s"),
            ));
        }
        Ok(Err(err)) => return Err(Refusal::new(Reason::Gone, describe_io(&err))),
        Ok(Ok(0)) => return Err(Refusal::new(Reason::Gone, "it closed")),
        Ok(Ok(_)) => {}
    }
    let tls = first[0] == TLS_HANDSHAKE;
    if !tls {
        if gate.mode == MtlsMode::Strict {
            return Err(Refusal::new(
                Reason::Plaintext,
                "a plaintext client, and this service is mTLS strict",
            ));
        }
        return Ok(Admitted {
            stream: MeshStream::Plain(stream),
            principal: None,
        });
    }
    let credentials = match (&gate.credentials, gate.mode) {
        (_, MtlsMode::Off) => None,
        (credentials, _) => credentials.as_ref(),
    };
    let Some(credentials) = credentials else {
        let why = if gate.mode == MtlsMode::Off {
            "mTLS is off for this service"
        } else {
            "no identity yet"
        };
        return Err(Refusal::new(
            Reason::TlsUnavailable,
            format!("a TLS client, and {why}"),
        ));
    };
    let accept = TlsAcceptor::from(credentials.server_config()).accept(stream);
    let tls = match tokio::time::timeout(SNIFF_TIMEOUT, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            return Err(Refusal::new(
                Reason::Handshake,
                format!("the TLS handshake failed: {}", describe_tls(&err)),
            ))
        }
        Err(_) => {
            let wait = SNIFF_TIMEOUT.as_secs_f64();
            return Err(Refusal::new(
                Reason::Handshake,
                format!("the TLS handshake failed: it did not end within {wait}s"),
            ));
        }
    };
    // The handshake has ended and nothing has been read: a certificate of the mesh's
    // CA that names no identity of this project ends the connection here.
    let ids = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| spiffe_ids(leaf))
        .unwrap_or_default();
    match peer_identity(&ids, Some(credentials.trust_prefix())) {
        Some(principal) => Ok(Admitted {
            stream: MeshStream::Tls(Box::new(tls)),
            principal: Some(principal),
        }),
        None => Err(Refusal::new(
            Reason::Identity,
            "its certificate names no identity of this mesh",
        )),
    }
}

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
