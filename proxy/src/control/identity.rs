//! This sidecar's identity: the certificate and key the control plane issued to its
//! service, kept as `proxy/identity.py` keeps it.
//!
//! Each new one is written under `<state_dir>/identity/` in files of its own
//! (`<fingerprint[:16]>.crt`, `.key`, `.ca.crt`, owner-only, each written to a `.tmp`
//! and renamed), then loaded into a TLS server configuration: one that does not load
//! is refused and the one the sidecar had stays. Only then does `identity.json` (what
//! the folder holds) change, and the previous identity's files go. A sidecar that
//! restarts while the control plane is away starts with the identity it kept, until
//! that one expires.
//!
//! Each identity installed is published, loaded for mTLS ([`Credentials`]), on a
//! `watch` ([`IdentityStore::credentials`]): new connections take the newest, open
//! ones keep the one they began with.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::invalid::Invalid;
use crate::security::mtls::{Credentials, CredentialsWatch};
use crate::wire::messages::Identity;

const KEPT: &str = "identity.json";

/// An identity that loaded.
#[derive(Debug)]
pub struct Installed {
    pub spiffe_id: String,
    pub fingerprint: String,
    /// Seconds since the epoch.
    pub not_after: f64,
    /// The certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The project's CA: whom peers' certificates must chain to.
    pub ca: Vec<CertificateDer<'static>>,
}

/// The identity folder and what is installed from it.
#[derive(Debug)]
pub struct IdentityStore {
    folder: PathBuf,
    current: Option<Installed>,
    published: watch::Sender<Option<Arc<Credentials>>>,
}

impl IdentityStore {
    pub fn new(folder: PathBuf) -> Self {
        IdentityStore {
            folder,
            current: None,
            published: watch::channel(None).0,
        }
    }

    /// The identity installed now, loaded for mTLS, and each one installed after it.
    pub fn credentials(&self) -> CredentialsWatch {
        self.published.subscribe()
    }

    /// The identity installed now, if any.
    pub fn current(&self) -> Option<&Installed> {
        self.current.as_ref()
    }

    /// Install the identity kept in the folder by an earlier run, if it is still valid
    /// at `now` (seconds since the epoch); its fingerprint if so.
    pub fn load_kept(&mut self, now: f64) -> Option<String> {
        let kept: Value =
            serde_json::from_str(&fs::read_to_string(self.folder.join(KEPT)).ok()?).ok()?;
        let not_after = kept.get("not_after")?.as_f64()?;
        if not_after <= now {
            return None;
        }
        let text = |part: &str| -> Option<String> {
            let name = kept.get("files")?.get(part)?.as_str()?;
            fs::read_to_string(self.folder.join(name)).ok()
        };
        let identity = Identity {
            spiffe_id: kept.get("spiffe_id")?.as_str()?.to_string(),
            cert: text("cert")?,
            key: text("key")?,
            ca: text("ca")?,
            not_before: None,
            not_after,
            fingerprint: kept.get("fingerprint")?.as_str()?.to_string(),
        };
        self.install(&identity).ok().map(|i| i.fingerprint.clone())
    }

    /// Write and load `identity`; the one installed before stays if it does not load.
    pub fn install(&mut self, identity: &Identity) -> Result<&Installed, Invalid> {
        let prefix: String = identity.fingerprint.chars().take(16).collect();
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Invalid::new(
                "the identity's fingerprint is not a hex digest",
            ));
        }
        let io = |err: std::io::Error| {
            Invalid(format!(
                "the identity cannot be written under {}: {err}",
                self.folder.display()
            ))
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.folder)
            .map_err(io)?;
        let names = [
            ("cert", format!("{prefix}.crt"), &identity.cert),
            ("key", format!("{prefix}.key"), &identity.key),
            ("ca", format!("{prefix}.ca.crt"), &identity.ca),
        ];
        for (_, name, text) in &names {
            write_private(&self.folder.join(name), text.as_bytes()).map_err(io)?;
        }
        let (installed, credentials) =
            load(identity).map_err(|err| Invalid(format!("the identity does not load: {err}")))?;
        let kept = json!({
            "spiffe_id": identity.spiffe_id,
            "fingerprint": identity.fingerprint,
            "not_after": identity.not_after,
            "files": {"cert": names[0].1, "key": names[1].1, "ca": names[2].1},
        });
        write_private(&self.folder.join(KEPT), kept.to_string().as_bytes()).map_err(io)?;
        if let Some(previous) = self.current.take() {
            if previous.fingerprint != identity.fingerprint {
                let old: String = previous.fingerprint.chars().take(16).collect();
                for suffix in [".crt", ".key", ".ca.crt"] {
                    let _ = fs::remove_file(self.folder.join(format!("{old}{suffix}")));
                }
            }
        }
        self.published.send_replace(Some(Arc::new(credentials)));
        Ok(self.current.insert(installed))
    }
}

/// Parse the PEMs and load them for mTLS ([`Credentials::from_installed`]): it fails
/// as the Python's `SSLContext` does on a bad certificate, key or CA, or a key that is
/// not the certificate's.
fn load(identity: &Identity) -> Result<(Installed, Credentials), String> {
    let chain = CertificateDer::pem_slice_iter(identity.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("the certificate: {err}"))?;
    if chain.is_empty() {
        return Err("the certificate: no certificate in the PEM".into());
    }
    let key = PrivateKeyDer::from_pem_slice(identity.key.as_bytes())
        .map_err(|err| format!("the key: {err}"))?;
    let ca = CertificateDer::pem_slice_iter(identity.ca.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("the CA: {err}"))?;
    let installed = Installed {
        spiffe_id: identity.spiffe_id.clone(),
        fingerprint: identity.fingerprint.clone(),
        not_after: identity.not_after,
        chain,
        key,
        ca,
    };
    let credentials = Credentials::from_installed(&installed)?;
    Ok((installed, credentials))
}

/// Write `data` to `path` readable by its owner only, atomically (a `.tmp`, renamed).
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rlink-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn identity(cert: &str) -> Identity {
        Identity {
            spiffe_id: "spiffe://devmesh.local/demo/catalog".into(),
            cert: cert.into(),
            key: "not a key".into(),
            ca: String::new(),
            not_before: None,
            not_after: 4e9,
            fingerprint: "0123456789abcdef0123".into(),
        }
    }

    #[test]
    fn an_identity_that_does_not_load_is_refused_and_nothing_is_kept() {
        let dir = folder("refused");
        let mut store = IdentityStore::new(dir.clone());
        let err = store.install(&identity("not a certificate")).unwrap_err();
        assert!(
            err.0
                .starts_with("the identity does not load: the certificate"),
            "{err}"
        );
        assert!(store.current().is_none());
        assert!(
            !dir.join(KEPT).exists(),
            "identity.json changes only once it loaded"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.join("0123456789abcdef.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(store.load_kept(0.0), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_fingerprint_that_is_not_a_digest_is_refused_before_anything_is_written() {
        let dir = folder("badprint");
        let mut store = IdentityStore::new(dir.clone());
        let mut bad = identity("x");
        bad.fingerprint = "../../etc".into();
        assert!(store.install(&bad).is_err());
        assert!(!dir.exists());
    }
}
