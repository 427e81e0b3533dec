//! This sidecar's identity made ready for mTLS: the TLS server configuration its
//! inbound listener presents, and for each destination service the client
//! configuration its calls present (as `proxy/identity.py`'s `Installed` holds its two
//! `SSLContext`s), with the SPIFFE names both sides check.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::Resumption;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::verify::{Chains, SpiffeServerVerifier};
use crate::control::identity::Installed;

/// The ALPN protocols offered and accepted: HTTP/1.1 only for now (`h2` comes with
/// issue 18).
pub const ALPN: [&[u8]; 1] = [b"http/1.1"];

/// An installed identity, loaded into TLS configurations. Built once per identity;
/// connections hold the `Arc`s of the configuration they began with, so a renewal
/// changes only the connections made after it.
pub struct Credentials {
    spiffe_id: String,
    fingerprint: String,
    not_after: f64,
    trust_prefix: String,
    server: Arc<ServerConfig>,
    /// The CA's chain check, shared by every destination's verifier.
    chains: Arc<Chains>,
    /// The client configuration, less the destination's verifier.
    client: ClientConfig,
    clients: Mutex<HashMap<String, Arc<ClientConfig>>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("spiffe_id", &self.spiffe_id)
            .field("fingerprint", &self.fingerprint)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Load `installed`: fails, with a text naming the part, on a CA that does not
    /// load, or a certificate and key rustls refuses (a key that is not the
    /// certificate's, a key of a kind it does not know).
    pub fn from_installed(installed: &Installed) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in &installed.ca {
            roots
                .add(cert.clone())
                .map_err(|err| format!("the CA: {err}"))?;
        }
        let roots = Arc::new(roots);
        // A TLS caller must present a certificate of the CA, in `permissive` mode too
        // (as the Python's context, CERT_REQUIRED): permissive lets plaintext in
        // beside mTLS, not TLS without a client certificate.
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|err| format!("the CA: {err}"))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(installed.chain.clone(), installed.key.clone_key())
            .map_err(|err| err.to_string())?;
        server.alpn_protocols = alpn();
        let chains =
            Arc::new(Chains::new(roots, &provider).map_err(|err| format!("the CA: {err}"))?);
        let own = SpiffeServerVerifier::new(chains.clone(), installed.spiffe_id.clone());
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(own))
            .with_client_auth_cert(installed.chain.clone(), installed.key.clone_key())
            .map_err(|err| err.to_string())?;
        // Peers are named by SPIFFE ID, not by host: no SNI (the Python's
        // `server_hostname=""`).
        client.enable_sni = false;
        client.alpn_protocols = alpn();
        Ok(Credentials {
            spiffe_id: installed.spiffe_id.clone(),
            fingerprint: installed.fingerprint.clone(),
            not_after: installed.not_after,
            trust_prefix: trust_prefix(&installed.spiffe_id),
            server: Arc::new(server),
            chains,
            client,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// This sidecar's SPIFFE ID.
    pub fn spiffe_id(&self) -> &str {
        &self.spiffe_id
    }

    /// The certificate's SHA-256 fingerprint, as the control plane gave it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// When the certificate expires, in seconds since the epoch.
    pub fn not_after(&self) -> f64 {
        self.not_after
    }

    /// `spiffe://devmesh.local/<project>/`: the IDs of this identity's mesh.
    pub fn trust_prefix(&self) -> &str {
        &self.trust_prefix
    }

    /// The SPIFFE ID a sidecar of `service` in this mesh must present.
    pub fn peer_id(&self, service: &str) -> String {
        format!("{}{service}", self.trust_prefix)
    }

    /// What the inbound listener presents: this identity, and a client certificate of
    /// the CA required of every TLS caller.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// What a call to a sidecar of `service` presents: this identity; and the server
    /// must chain to the CA and name exactly [`peer_id`](Self::peer_id)`(service)`.
    /// Built once per service.
    pub fn client_config(&self, service: &str) -> Arc<ClientConfig> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(config) = clients.get(service) {
            return config.clone();
        }
        let mut config = self.client.clone();
        let verifier = SpiffeServerVerifier::new(self.chains.clone(), self.peer_id(service));
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(verifier));
        // A session of its own per destination: a resumed session skips the server's
        // certificate, so one proven for a service is never offered for another.
        config.resumption = Resumption::default();
        let config = Arc::new(config);
        clients.insert(service.to_string(), config.clone());
        config
    }
}

fn alpn() -> Vec<Vec<u8>> {
    ALPN.iter().map(|p| p.to_vec()).collect()
}

/// `spiffe://devmesh.local/<project>/` of `spiffe://devmesh.local/<project>/<service>`:
/// all up to and with its last `/`.
pub fn trust_prefix(spiffe_id: &str) -> String {
    let head = spiffe_id.rsplit_once('/').map_or("", |(head, _)| head);
    format!("{head}/")
}

/// `frontend` of `spiffe://devmesh.local/shop/frontend`.
pub fn service_of(spiffe_id: &str) -> &str {
    spiffe_id
        .rsplit_once('/')
        .map_or(spiffe_id, |(_, last)| last)
}

/// The SPIFFE IDs (URI SANs beginning `spiffe://`) of a DER certificate; none if it
/// does not parse.
pub fn spiffe_ids(cert: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(cert) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(uri.to_string()),
            _ => None,
        })
        .collect()
}

/// The caller's one SPIFFE ID if it is of the mesh of `trust_prefix` (one service
/// below it, no deeper), else `None`; `ids` are those its certificate names.
pub fn peer_identity(ids: &[String], trust_prefix: Option<&str>) -> Option<String> {
    let (Some(prefix), [id]) = (trust_prefix, ids) else {
        return None;
    };
    let service = id.strip_prefix(prefix)?;
    (!service.is_empty() && !service.contains('/')).then(|| id.clone())
}
