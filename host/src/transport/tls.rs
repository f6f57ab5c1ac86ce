//! TLS profiles (`[tls.NAME]`): certificates, keys and trust read from PEM
//! files into rustls configurations, for `tls:` listen entries (server side)
//! and `;transport=tls` destinations (client side). rustls with the ring
//! provider only: TLS 1.2 and 1.3, nothing older.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How a listener treats client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyClient {
    None,
    /// Asked for; checked against `ca` when given.
    Optional,
    /// A client without a certificate `ca` trusts is refused in the handshake.
    Required,
}

/// A profile as wisp.toml names it.
#[derive(Debug, Clone)]
pub struct TlsSpec {
    /// PEM: the certificate and its chain (leaf first).
    pub certificate: PathBuf,
    /// PEM: its private key.
    pub private_key: PathBuf,
    /// PEM: the CAs trusted for peers (client certificates on listeners,
    /// server certificates on outbound connections). Without it, outbound
    /// connections trust nothing and fail.
    pub ca: Option<PathBuf>,
    pub verify_client: VerifyClient,
}

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{file}: {reason}")]
    File { file: String, reason: String },
    #[error("tls profile: {0}")]
    Config(String),
}

/// A loaded profile: what listeners accept with and connections open with.
#[derive(Clone)]
pub struct TlsProfile {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TlsProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsProfile")
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::File { file: path.display().to_string(), reason };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in it (PEM `BEGIN CERTIFICATE`)".into()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsError::File { file: path.display().to_string(), reason: format!("no private key: {e}") })
}

fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs(path)? {
        store
            .add(c)
            .map_err(|e| TlsError::File { file: path.display().to_string(), reason: format!("not a CA: {e}") })?;
    }
    Ok(store)
}

impl TlsProfile {
    /// Read the files and build both sides; any bad file is named.
    pub fn load(spec: &TlsSpec) -> Result<TlsProfile, TlsError> {
        let chain = certs(&spec.certificate)?;
        let key = key(&spec.private_key)?;
        let roots = spec.ca.as_deref().map(roots).transpose()?;
        let versions = &[&rustls::version::TLS13, &rustls::version::TLS12];
        let verifier = match (spec.verify_client, &roots) {
            (VerifyClient::None, _) => rustls::server::WebPkiClientVerifier::no_client_auth(),
            (mode, Some(roots)) => {
                let b =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider());
                let b = if mode == VerifyClient::Optional { b.allow_unauthenticated() } else { b };
                b.build().map_err(|e| TlsError::Config(e.to_string()))?
            }
            (_, None) => return Err(TlsError::Config("verify_client needs `ca`".into())),
        };
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| TlsError::File { file: spec.private_key.display().to_string(), reason: e.to_string() })?;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots.unwrap_or_else(rustls::RootCertStore::empty))
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::File { file: spec.private_key.display().to_string(), reason: e.to_string() })?;
        Ok(TlsProfile { server: Arc::new(server), client: Arc::new(client) })
    }
}
