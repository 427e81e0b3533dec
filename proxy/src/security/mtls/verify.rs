//! Secure naming on calls to other sidecars: a server certificate is taken only if it
//! chains to the mesh's CA (rustls's webpki check) and its SPIFFE ID is exactly the
//! one expected of the destination service (Istio's secure naming; `Tls.peer_id` and
//! the check after the handshake in `proxy/httpclient.py`).

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, WebPkiServerVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::SignatureScheme;
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, RootCertStore};

use super::credentials::spiffe_ids;

/// A server certificate of the CA that names other SPIFFE IDs than the one expected:
/// the Python's "its certificate names …, not …".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misnamed {
    /// The SPIFFE IDs the certificate names.
    pub named: Vec<String>,
    /// The one expected of the destination.
    pub expected: String,
}

impl fmt::Display for Misnamed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let named = if self.named.is_empty() {
            "no SPIFFE ID".to_string()
        } else {
            self.named.join(", ")
        };
        write!(f, "its certificate names {named}, not {}", self.expected)
    }
}

impl StdError for Misnamed {}

/// The mesh's chain check, shared by every destination's [`SpiffeServerVerifier`].
#[derive(Debug)]
pub struct Chains {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    /// For the handshake's signatures and the schemes offered.
    webpki: Arc<WebPkiServerVerifier>,
}

impl Chains {
    /// The chain check against `roots` with `provider`'s algorithms.
    pub fn new(
        roots: Arc<RootCertStore>,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, String> {
        let webpki = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|err| err.to_string())?;
        Ok(Chains {
            roots,
            algorithms: provider.signature_verification_algorithms,
            webpki,
        })
    }
}

/// Takes a server certificate of the CA that names exactly `expected`.
///
/// The chain is checked by rustls's `verify_server_cert_signed_by_trust_anchor`, the
/// check `WebPkiServerVerifier::verify_server_cert` makes before it matches a DNS
/// name: mesh certificates have no DNS name (their only name is a SPIFFE ID), so the
/// name matched is the SPIFFE ID, here. Signatures are `WebPkiServerVerifier`'s.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    chains: Arc<Chains>,
    expected: String,
}

impl SpiffeServerVerifier {
    /// A verifier for a server that must be `expected`.
    pub fn new(chains: Arc<Chains>, expected: String) -> Self {
        SpiffeServerVerifier { chains, expected }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.chains.roots,
            intermediates,
            now,
            self.chains.algorithms.all,
        )?;
        let named = spiffe_ids(end_entity);
        if named != [self.expected.as_str()] {
            let misnamed = Misnamed {
                named,
                expected: self.expected.clone(),
            };
            return Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(misnamed)),
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.chains
            .webpki
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.chains
            .webpki
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chains.webpki.supported_verify_schemes()
    }
}

/// The [`Misnamed`] in a rustls error, if that is what it is.
pub fn misnamed(err: &Error) -> Option<&Misnamed> {
    match err {
        Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<Misnamed>()
        }
        _ => None,
    }
}
