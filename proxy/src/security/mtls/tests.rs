//! mTLS over real loopback connections, with certificates made as `devmesh/pki.py`
//! makes them (an ECDSA P-256 CA, leaves whose only name is a SPIFFE URI SAN).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use std::net::SocketAddr;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{client, TlsConnector};

use super::*;
use crate::control::identity::IdentityStore;
use crate::wire::messages::Identity;
use crate::wire::snapshot::MtlsMode;

pub(crate) const PROJECT: &str = "spiffe://devmesh.local/demo/";

/// A project's CA, issuing identities.
pub(crate) struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

static SERIAL: AtomicU32 = AtomicU32::new(1);

impl Pki {
    pub(crate) fn new(project: &str) -> Pki {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "devmesh");
        name.push(DnType::CommonName, format!("devmesh {project} local CA"));
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Pki {
            issuer: Issuer::new(params, key),
            ca_pem,
        }
    }

    /// An identity naming `ids` (URI SANs), as the control plane sends it.
    pub(crate) fn issue_named(&self, ids: &[String]) -> Identity {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = ids
            .iter()
            .map(|id| SanType::URI(id.as_str().try_into().unwrap()))
            .collect();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        Identity {
            spiffe_id: ids.first().cloned().unwrap_or_default(),
            cert: cert.pem(),
            key: key.serialize_pem(),
            ca: self.ca_pem.clone(),
            not_before: None,
            not_after: 4e9,
            fingerprint: format!("{serial:08x}0123456789abcdef"),
        }
    }

    pub(crate) fn issue(&self, service: &str) -> Identity {
        self.issue_named(&[format!("{PROJECT}{service}")])
    }

    /// The identity, installed by a store of its own (as from the control plane).
    pub(crate) fn credentials(&self, service: &str) -> Arc<Credentials> {
        installed(&self.issue(service))
    }
}

fn installed(identity: &Identity) -> Arc<Credentials> {
    let (mut store, _dir) = store();
    store.install(identity).unwrap();
    let credentials = store.credentials().borrow().clone();
    credentials.unwrap()
}

/// A store in a folder of its own (removed when the guard drops).
fn store() -> (IdentityStore, Folder) {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("mtls-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    (IdentityStore::new(dir.clone()), Folder(dir))
}

struct Folder(std::path::PathBuf);

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gate(mode: MtlsMode, credentials: Option<&Arc<Credentials>>) -> Gate {
    Gate {
        mode,
        credentials: credentials.cloned(),
    }
}

/// A listener on a port of its own that admits one connection by `gate` and, if
/// admitted, echoes what it reads until the end; the admission's principal, or the
/// refusal.
async fn serve_one(gate: Gate) -> (SocketAddr, JoinHandle<Result<Option<String>, Refusal>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let admitted = admit(tcp, &gate).await?;
        let principal = admitted.principal.clone();
        tokio::spawn(echo(admitted.stream));
        Ok(principal)
    });
    (addr, task)
}

async fn echo(mut stream: MeshStream) {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Send `text` and read as many bytes back.
async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, text: &str) -> String {
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut back = vec![0u8; text.len()];
    stream.read_exact(&mut back).await.unwrap();
    String::from_utf8(back).unwrap()
}

async fn mtls_call(
    addr: SocketAddr,
    credentials: &Credentials,
    service: &str,
) -> Result<client::TlsStream<TcpStream>, ConnectError> {
    connect(
        TcpStream::connect(addr).await.unwrap(),
        credentials,
        service,
    )
    .await
}

#[tokio::test]
async fn strict_refuses_plaintext_before_reading_it() {
    let pki = Pki::new("demo");
    let catalog = pki.credentials("catalog");
    let (addr, server) = serve_one(gate(MtlsMode::Strict, Some(&catalog))).await;
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let refusal = server.await.unwrap().unwrap_err();
    assert_eq!(refusal.reason, Reason::Plaintext);
    assert_eq!(
        refusal.detail,
        "a plaintext client, and this service is mTLS strict"
    );
    let mut rest = Vec::new();
    assert!(
        plain.read_to_end(&mut rest).await.is_err() || rest.is_empty(),
        "closed"
    );
}

#[tokio::test]
async fn strict_admits_a_mesh_client_and_names_it() {
    let pki = Pki::new("demo");
    let catalog = pki.credentials("catalog");
    let frontend = pki.credentials("frontend");
    let (addr, server) = serve_one(gate(MtlsMode::Strict, Some(&catalog))).await;
    let mut call = mtls_call(addr, &frontend, "catalog").await.unwrap();
    assert_eq!(call.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(round_trip(&mut call, "hello").await, "hello");
    let principal = server.await.unwrap().unwrap();
    assert_eq!(
        principal.as_deref(),
        Some("spiffe://devmesh.local/demo/frontend")
    );
    assert_eq!(service_of(principal.as_deref().unwrap()), "frontend");
}

#[tokio::test]
async fn permissive_admits_plaintext_without_a_principal() {
    let pki = Pki::new("demo");
    let catalog = pki.credentials("catalog");
    let (addr, server) = serve_one(gate(MtlsMode::Permissive, Some(&catalog))).await;
    let mut plain = TcpStream::connect(addr).await.unwrap();
    assert_eq!(round_trip(&mut plain, "GET / ").await, "GET / ");
    assert_eq!(server.await.unwrap().unwrap(), None);
}

#[tokio::test]
async fn permissive_admits_mtls_with_its_principal() {
    let pki = Pki::new("demo");
    let catalog = pki.credentials("catalog");
    let frontend = pki.credentials("frontend");
    let (addr, server) = serve_one(gate(MtlsMode::Permissive, Some(&catalog))).await;
    let mut call = mtls_call(addr, &frontend, "catalog").await.unwrap();
    assert_eq!(round_trip(&mut call, "x").await, "x");
    assert_eq!(
        server.await.unwrap().unwrap().as_deref(),
        Some("spiffe://devmesh.local/demo/frontend")
    );
}

#[tokio::test]
async fn permissive_still_requires_a_client_certificate_of_tls_callers() {
    let pki = Pki::new("demo");
    let catalog = pki.credentials("catalog");
    let (addr, server) = serve_one(gate(MtlsMode::Permissive, Some(&catalog))).await;
    // A TLS client that presents no certificate (and trusts the CA).
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chains = verify::Chains::new(Arc::new(roots), &provider).unwrap();
    let verifier = verify::SpiffeServerVerifier::new(Arc::new(chains), format!("{PROJECT}catalog"));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    // TLS 1.3: the client's side may end before the server refuses; either way no
    // byte goes through.
    if let Ok(mut tls) = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    {
        let _ = tls.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
        let mut buf = [0u8; 1];
        assert!(!matches!(tls.read(&mut buf).await, Ok(1)));
    }
    let refusal = server.await.unwrap().unwrap_err();
    assert_eq!(refusal.reason, Reason::Handshake);
    assert!(
        refusal.detail.starts_with("the TLS handshake failed: "),
        "{}",
        refusal.detail
    );
}

#[tokio::test]
async fn off_refuses_tls_and_admits_plaintext() {
    let pki = Pki::new("demo");
    let catalog = pki.credentials("catalog");
    let frontend = pki.credentials("frontend");
    let (addr, server) = serve_one(gate(MtlsMode::Off, Some(&catalog))).await;
    assert!(mtls_call(addr, &frontend, "catalog").await.is_err());
    let refusal = server.await.unwrap().unwrap_err();
    assert_eq!(refusal.reason, Reason::TlsUnavailable);
    assert_eq!(
        refusal.detail,
        "a TLS client, and mTLS is off for this service"
    );

    let (addr, server) = serve_one(gate(MtlsMode::Off, Some(&catalog))).await;
    let mut plain = TcpStream::connect(addr).await.unwrap();
    assert_eq!(round_trip(&mut plain, "GET").await, "GET");
    assert_eq!(server.await.unwrap().unwrap(), None);
}

#[tokio::test]
async fn without_an_identity_tls_is_refused() {
    let pki = Pki::new("demo");
    let frontend = pki.credentials("frontend");
    let (addr, server) = serve_one(gate(MtlsMode::Strict, None)).await;
    assert!(mtls_call(addr, &frontend, "catalog").await.is_err());
    let refusal = server.await.unwrap().unwrap_err();
    assert_eq!(refusal.reason, Reason::TlsUnavailable);
    assert_eq!(refusal.detail, "a TLS client, and no identity yet");
}

#[tokio::test]
async fn a_client_refuses_a_server_that_is_another_service() {
    let pki = Pki::new("demo");
    let orders = pki.credentials("orders");
    let frontend = pki.credentials("frontend");
    let (addr, server) = serve_one(gate(MtlsMode::Strict, Some(&orders))).await;
    let err = mtls_call(addr, &frontend, "catalog").await.unwrap_err();
    assert!(matches!(err, ConnectError::Misnamed(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "its certificate names spiffe://devmesh.local/demo/orders, \
         not spiffe://devmesh.local/demo/catalog"
    );
    assert_eq!(server.await.unwrap().unwrap_err().reason, Reason::Handshake);
}

#[tokio::test]
async fn a_client_refuses_a_server_naming_more_than_its_id() {
    let pki = Pki::new("demo");
    let both =
        installed(&pki.issue_named(&[format!("{PROJECT}catalog"), format!("{PROJECT}orders")]));
    let frontend = pki.credentials("frontend");
    let (addr, _server) = serve_one(gate(MtlsMode::Strict, Some(&both))).await;
    let err = mtls_call(addr, &frontend, "catalog").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "its certificate names spiffe://devmesh.local/demo/catalog, \
         spiffe://devmesh.local/demo/orders, not spiffe://devmesh.local/demo/catalog"
    );
}

#[tokio::test]
async fn a_client_refuses_a_server_of_another_ca() {
    let ours = Pki::new("demo");
    let theirs = Pki::new("demo");
    let impostor = theirs.credentials("catalog");
    let frontend = ours.credentials("frontend");
    let (addr, server) = serve_one(gate(MtlsMode::Strict, Some(&impostor))).await;
    let err = mtls_call(addr, &frontend, "catalog").await.unwrap_err();
    match &err {
        // The other CA has the same name (the same project's, made elsewhere): its
        // signature does not verify.
        ConnectError::Handshake(reason) => {
            assert!(reason.starts_with("invalid peer certificate"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().starts_with("the mTLS handshake failed: "));
    assert_eq!(server.await.unwrap().unwrap_err().reason, Reason::Handshake);
}

#[tokio::test]
async fn a_server_refuses_a_client_of_another_ca() {
    let ours = Pki::new("demo");
    let theirs = Pki::new("demo");
    let catalog = ours.credentials("catalog");
    let impostor = theirs.credentials("frontend");
    // The impostor trusts our CA, as one that stole our CA certificate would.
    let mut trusting = theirs.issue("frontend");
    trusting.ca = ours.ca_pem.clone();
    let impostor_trusting = installed(&trusting);
    drop(impostor);
    let (addr, server) = serve_one(gate(MtlsMode::Strict, Some(&catalog))).await;
    if let Ok(mut call) = mtls_call(addr, &impostor_trusting, "catalog").await {
        let _ = call.write_all(b"x").await;
        let mut buf = [0u8; 1];
        assert!(!matches!(call.read(&mut buf).await, Ok(1)));
    }
    let refusal = server.await.unwrap().unwrap_err();
    assert_eq!(refusal.reason, Reason::Handshake);
    assert!(
        refusal
            .detail
            .starts_with("the TLS handshake failed: invalid peer certificate"),
        "{}",
        refusal.detail
    );
}

#[tokio::test]
async fn a_server_refuses_a_certificate_of_the_ca_naming_no_identity_of_this_mesh() {
    let pki = Pki::new("demo");
    let catalog = pki.credentials("catalog");
    for ids in [
        vec!["spiffe://devmesh.local/other/frontend".to_string()],
        vec![format!("{PROJECT}team/frontend")],
        vec![],
    ] {
        let stranger = client_of(&pki, &pki.issue_named(&ids), "catalog");
        let (addr, server) = serve_one(gate(MtlsMode::Permissive, Some(&catalog))).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::IpAddress(addr.ip().into());
        if let Ok(mut call) = TlsConnector::from(stranger).connect(name, tcp).await {
            let _ = call.write_all(b"x").await;
            let mut buf = [0u8; 1];
            assert!(!matches!(call.read(&mut buf).await, Ok(1)));
        }
        let refusal = server.await.unwrap().unwrap_err();
        assert_eq!(refusal.reason, Reason::Identity, "{ids:?}");
        assert_eq!(
            refusal.detail,
            "its certificate names no identity of this mesh"
        );
    }
}

/// A client presenting `identity` (whatever it names) that takes a server of `pki`
/// naming `service` of this project.
fn client_of(pki: &Pki, identity: &Identity, service: &str) -> Arc<rustls::ClientConfig> {
    let pem = |text: &str| {
        rustls::pki_types::CertificateDer::pem_slice_iter(text.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem(&pki.ca_pem) {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chains = verify::Chains::new(Arc::new(roots), &provider).unwrap();
    let verifier =
        verify::SpiffeServerVerifier::new(Arc::new(chains), format!("{PROJECT}{service}"));
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(identity.key.as_bytes()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(pem(&identity.cert), key)
        .unwrap();
    Arc::new(config)
}

#[tokio::test(start_paused = true)]
async fn a_client_that_sends_nothing_is_closed_after_the_sniff_timeout() {
    let (addr, server) = serve_one(gate(MtlsMode::Permissive, None)).await;
    let _silent = TcpStream::connect(addr).await.unwrap();
    let refusal = server.await.unwrap().unwrap_err();
    assert_eq!(refusal.reason, Reason::Gone);
    assert_eq!(refusal.detail, "nothing came within 10s");
}

#[tokio::test]
async fn a_client_that_closes_at_once_is_gone_not_refused() {
    let (addr, server) = serve_one(gate(MtlsMode::Strict, None)).await;
    drop(TcpStream::connect(addr).await.unwrap());
    let refusal = server.await.unwrap().unwrap_err();
    assert_eq!(refusal.reason, Reason::Gone);
    let refusals = Refusals::default();
    refusals.add(addr, &refusal);
    refusals.add(addr, &Refusal::busy());
    refusals.add(addr, &Refusal::busy());
    assert_eq!(refusals.count(Reason::Gone), 0);
    assert_eq!(refusals.counts(), vec![("busy", 2)]);
}

/// A renewal drops no connection: one opened before it goes on with the old
/// certificate, new ones get the new one.
#[tokio::test]
async fn a_renewal_keeps_open_connections_and_new_ones_take_the_new_certificate() {
    let pki = Pki::new("demo");
    let frontend = pki.credentials("frontend");
    let (mut store, _dir) = store();
    let first = pki.issue("catalog");
    store.install(&first).unwrap();
    let watch = store.credentials();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepting = watch.clone();
    let server = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let gate = Gate::now(MtlsMode::Strict, &accepting);
            let admitted = admit(tcp, &gate).await.unwrap();
            tokio::spawn(echo(admitted.stream));
        }
    });
    let presented = |call: &client::TlsStream<TcpStream>| {
        call.get_ref().1.peer_certificates().unwrap()[0].clone()
    };
    let pem = |text: &str| {
        rustls::pki_types::CertificateDer::pem_slice_iter(text.as_bytes())
            .next()
            .unwrap()
            .unwrap()
    };

    let mut before = mtls_call(addr, &frontend, "catalog").await.unwrap();
    assert_eq!(round_trip(&mut before, "one").await, "one");
    assert_eq!(presented(&before), pem(&first.cert));

    let second = pki.issue("catalog");
    store.install(&second).unwrap();
    assert_eq!(
        watch.borrow().as_ref().unwrap().fingerprint(),
        second.fingerprint
    );

    let mut after = mtls_call(addr, &frontend, "catalog").await.unwrap();
    assert_eq!(round_trip(&mut after, "two").await, "two");
    assert_eq!(presented(&after), pem(&second.cert));
    assert_eq!(round_trip(&mut before, "still").await, "still");
    server.abort();
}

#[test]
fn an_identity_that_does_not_load_leaves_the_published_one() {
    let pki = Pki::new("demo");
    let (mut store, _dir) = store();
    let watch = store.credentials();
    assert!(watch.borrow().is_none());
    let good = pki.issue("catalog");
    store.install(&good).unwrap();
    let mut bad = pki.issue("catalog");
    bad.key = pki.issue("catalog").key; // a key that is not the certificate's
    assert!(store.install(&bad).is_err());
    let now = watch.borrow().clone().unwrap();
    assert_eq!(now.fingerprint(), good.fingerprint);
    assert_eq!(now.spiffe_id(), "spiffe://devmesh.local/demo/catalog");
    assert_eq!(now.trust_prefix(), PROJECT);
    assert_eq!(now.peer_id("orders"), "spiffe://devmesh.local/demo/orders");
    assert!(Arc::ptr_eq(
        &now.client_config("orders"),
        &now.client_config("orders")
    ));
}

#[test]
fn open_connections_a_new_mode_keeps() {
    use MtlsMode::*;
    let table = [
        (Strict, false, false),
        (Strict, true, true),
        (Permissive, false, true),
        (Permissive, true, true),
        (Off, false, true),
        (Off, true, false),
    ];
    for (mode, mtls, kept) in table {
        assert_eq!(keeps_open(mode, mtls), kept, "{mode:?} mtls={mtls}");
    }
}

#[test]
fn how_a_call_is_made_by_the_destination_mode() {
    let pki = Pki::new("demo");
    let creds = pki.credentials("frontend");
    assert!(matches!(
        dial(MtlsMode::Off, Some(&creds), "catalog"),
        Dial::Plain
    ));
    assert!(matches!(
        dial(MtlsMode::Permissive, Some(&creds), "catalog"),
        Dial::Mtls(_)
    ));
    assert!(matches!(
        dial(MtlsMode::Permissive, None, "catalog"),
        Dial::Plain
    ));
    match dial(MtlsMode::Strict, None, "catalog") {
        Dial::NoIdentity(text) => assert_eq!(
            text,
            "catalog takes only mTLS calls and this sidecar has no identity yet \
             (its control plane gives it one)"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn peer_identity_takes_one_id_one_service_below_the_prefix() {
    let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let prefix = Some(PROJECT);
    let frontend = "spiffe://devmesh.local/demo/frontend";
    assert_eq!(
        peer_identity(&ids(&[frontend]), prefix).as_deref(),
        Some(frontend)
    );
    assert_eq!(peer_identity(&ids(&[frontend]), None), None);
    assert_eq!(peer_identity(&ids(&[frontend, frontend]), prefix), None);
    assert_eq!(peer_identity(&ids(&[]), prefix), None);
    assert_eq!(peer_identity(&ids(&[PROJECT]), prefix), None);
    assert_eq!(
        peer_identity(&ids(&["spiffe://devmesh.local/demo/a/b"]), prefix),
        None
    );
    assert_eq!(
        peer_identity(&ids(&["spiffe://devmesh.local/other/frontend"]), prefix),
        None
    );
    assert_eq!(trust_prefix(frontend), PROJECT);
    assert_eq!(service_of(frontend), "frontend");
}
