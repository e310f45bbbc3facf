//! mTLS: client certificates, verified twice.
//!
//! 1. **At the handshake**, by the server's rustls configuration: a client may present a
//!    certificate (it is optional: token and SigV4 callers present none), and if it does, the
//!    certificate must chain to one of the CA certificates of *some* zero-trust role (the
//!    union of every role's `client_ca_pem`, kept in [`ClientCaRegistry`] and rebuilt whenever
//!    a role changes). Anything else fails the handshake. The verified chain is handed to the
//!    handlers as a request extension ([`PeerCertificates`]).
//! 2. **For the role**, by [`verify_for_role`]: the chain is verified again, with webpki,
//!    against that role's bundle alone. A certificate from another role's CA passed step 1 and
//!    fails here, so a role's CA bundle is a real boundary. The subject's common name and the
//!    subject alternative names are then read with `x509-parser` and mapped to an identity by
//!    the role's `identity_map`; a certificate no rule maps is refused.
//!
//! While the store is sealed the registry is empty (roles cannot be read), so client
//! certificates are refused at the handshake; tokens still work for the unseal endpoints.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error as TlsError, SignatureScheme};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::role::{CertField, Role};

/// The certificate chain a client presented and the handshake verified (leaf first). Set as a
/// request extension by the TLS accept loop; absent on plain HTTP and without a client
/// certificate.
#[derive(Clone)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

impl fmt::Debug for PeerCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerCertificates({} certificates)", self.0.len())
    }
}

/// The union of every role's client CAs, as the TLS layer's verifier.
pub struct ClientCaRegistry {
    provider: Arc<CryptoProvider>,
    inner: RwLock<Option<Arc<dyn ClientCertVerifier>>>,
    loaded: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for ClientCaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCaRegistry")
            .field("configured", &self.current().is_some())
            .finish()
    }
}

impl Default for ClientCaRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientCaRegistry {
    /// An empty registry (every client certificate refused).
    #[must_use]
    pub fn new() -> Self {
        Self {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            inner: RwLock::new(None),
            loaded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn current(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the registry reflects the stored roles (set by [`ClientCaRegistry::rebuild`],
    /// cleared by [`ClientCaRegistry::clear`]).
    #[must_use]
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Replaces the union with the CAs of `roles`.
    pub fn rebuild(&self, roles: &[Arc<Role>]) {
        let mut store = rustls::RootCertStore::empty();
        for role in roles {
            for cert in role.client_cas() {
                // Bundles were checked when the role was written.
                let _ = store.add(cert.clone());
            }
        }
        let verifier = if store.is_empty() {
            None
        } else {
            WebPkiClientVerifier::builder_with_provider(Arc::new(store), Arc::clone(&self.provider))
                .allow_unauthenticated()
                .build()
                .map_err(|err| tracing::error!(error = %err, "cannot build the client-CA verifier"))
                .ok()
        };
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = verifier;
        self.loaded
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Forgets every CA (on seal).
    pub fn clear(&self) {
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = None;
        self.loaded
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// The rustls verifier over this registry, for the server configuration.
    #[must_use]
    pub fn verifier(self: &Arc<Self>) -> Arc<dyn ClientCertVerifier> {
        Arc::new(UnionVerifier {
            registry: Arc::clone(self),
            algorithms: self.provider.signature_verification_algorithms,
        })
    }
}

/// The handshake-time verifier: optional client certificates, checked against the registry.
struct UnionVerifier {
    registry: Arc<ClientCaRegistry>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for UnionVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnionVerifier")
    }
}

impl ClientCertVerifier for UnionVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: a client then offers whatever certificate it has.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        match self.registry.current() {
            Some(inner) => inner.verify_client_cert(end_entity, intermediates, now),
            None => Err(TlsError::General(
                "no zero-trust role accepts client certificates".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What a certificate proved for a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateIdentity {
    /// The identity the role's mapping gave.
    pub identity: String,
    /// The field and value that matched, for the explanation.
    pub matched: String,
}

/// Verifies `chain` (leaf first) against `role`'s CA bundle at `now` and maps it to an
/// identity.
///
/// # Errors
/// A reason, for the decision: the role has no CA bundle, the chain does not verify under it,
/// the certificate does not parse, or no identity rule matches.
pub fn verify_for_role(
    role: &Role,
    chain: &[CertificateDer<'static>],
    now: UnixTime,
) -> Result<CertificateIdentity, String> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err("no client certificate".into());
    };
    if role.client_cas().is_empty() {
        return Err(format!(
            "role {} accepts no client certificate (no client_ca_pem)",
            role.name()
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in role.client_cas() {
        let _ = roots.add(cert.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("the role's CA bundle is unusable: {e}"))?;
    verifier
        .verify_client_cert(leaf, intermediates, now)
        .map_err(|e| {
            format!(
                "the client certificate does not chain to role {}'s CA bundle ({e})",
                role.name()
            )
        })?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|_| "the client certificate does not parse as X.509".to_owned())?;
    let mut values: Vec<(CertField, String)> = Vec::new();
    for cn in cert.subject().iter_common_name() {
        if let Ok(text) = cn.as_str() {
            values.push((CertField::SubjectCn, text.to_owned()));
        }
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => values.push((CertField::SanDns, (*d).to_owned())),
                GeneralName::URI(u) => values.push((CertField::SanUri, (*u).to_owned())),
                GeneralName::RFC822Name(e) => {
                    values.push((CertField::SanEmail, (*e).to_owned()));
                }
                _ => {}
            }
        }
    }
    for rule in &role.definition().identity_map {
        if let Some((field, value)) = values
            .iter()
            .find(|(field, value)| *field == rule.field && *value == rule.value)
        {
            return Ok(CertificateIdentity {
                identity: rule.identity.clone(),
                matched: format!("{} {value}", field_name(*field)),
            });
        }
    }
    Err(format!(
        "the client certificate matches no identity rule of role {}",
        role.name()
    ))
}

fn field_name(field: CertField) -> &'static str {
    match field {
        CertField::SubjectCn => "subject CN",
        CertField::SanDns => "SAN DNS",
        CertField::SanUri => "SAN URI",
        CertField::SanEmail => "SAN e-mail",
    }
}
