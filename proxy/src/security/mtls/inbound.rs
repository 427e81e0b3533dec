//! The inbound listener's gate: a connection's first byte, peeked at, says TLS or
//! plaintext; the service's mode and this sidecar's identity say whether it comes in,
//! and a TLS caller's certificate says who it is.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{server, TlsAcceptor};

use super::{
    describe_io, describe_tls, peer_identity, spiffe_ids, Credentials, CredentialsWatch, Reason,
    Refusal,
};
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

/// Let `stream` in by `gate`, or refuse it and close it (the caller counts the
/// refusal in its [`Refusals`](super::Refusals)): its first byte is peeked at, left
/// unread, within [`SNIFF_TIMEOUT`]; a TLS handshake must end within as long again.
/// The listener runs one `admit` per connection in a task of its own, at most
/// [`MAX_ADMITTING`] at once.
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
