//! TLS profiles (`[tls]` and `[tls.profiles.NAME]`): certificates, keys
//! and trust read from PEM files into rustls configurations, for `tls:` and
//! `wss:` listen entries (server side, chosen by the client's SNI) and
//! `;transport=tls` destinations (client side, chosen by the destination's
//! `tls_profile` attr). rustls with the ring provider only: TLS 1.2 and
//! 1.3, nothing older.

use std::collections::HashMap;
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
    /// Server names (SNI) a listener answers with this profile's
    /// certificate; the default profile answers the rest.
    pub server_names: Vec<String>,
}

/// Every profile wisp.toml names: `[tls]` is the default.
#[derive(Debug, Clone)]
pub struct TlsSpecs {
    pub default: TlsSpec,
    /// `[tls.profiles.NAME]`, by name.
    pub named: Vec<(String, TlsSpec)>,
}

impl TlsSpecs {
    pub fn names(&self) -> Vec<String> {
        self.named.iter().map(|(n, _)| n.clone()).collect()
    }
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
    /// When the leaf certificate expires (Unix seconds).
    pub not_after: i64,
}

/// Every profile, loaded together (a reload swaps them all or none).
#[derive(Debug, Clone)]
pub struct TlsProfiles {
    pub default: TlsProfile,
    pub named: HashMap<String, TlsProfile>,
    /// Lower-case SNI name → profile name.
    by_sni: HashMap<String, String>,
}

impl TlsProfiles {
    pub fn load(specs: &TlsSpecs) -> Result<TlsProfiles, TlsError> {
        let default = TlsProfile::load(&specs.default)?;
        let mut named = HashMap::new();
        let mut by_sni = HashMap::new();
        for (name, spec) in &specs.named {
            named.insert(name.clone(), TlsProfile::load(spec)?);
            for sni in &spec.server_names {
                by_sni.insert(sni.to_ascii_lowercase(), name.clone());
            }
        }
        Ok(TlsProfiles { default, named, by_sni })
    }

    /// The profile a listener uses for a ClientHello's server name, and its
    /// name for the logs (`default` for `[tls]`).
    pub fn for_sni(&self, sni: Option<&str>) -> (&str, &TlsProfile) {
        let named = sni.and_then(|n| self.by_sni.get(&n.to_ascii_lowercase()));
        match named.and_then(|n| self.named.get_key_value(n)) {
            Some((name, p)) => (name, p),
            None => ("default", &self.default),
        }
    }

    /// The profile a destination names (None: the default).
    pub fn named(&self, name: Option<&str>) -> Option<&TlsProfile> {
        match name {
            None => Some(&self.default),
            Some(n) => self.named.get(n),
        }
    }

    /// Every profile with its leaf certificate's expiry, for the metrics.
    pub fn expiries(&self) -> Vec<(String, i64)> {
        let mut all = vec![("default".to_string(), self.default.not_after)];
        all.extend(self.named.iter().map(|(n, p)| (n.clone(), p.not_after)));
        all.sort();
        all
    }
}

/// The profiles in force and where they are read from: listeners and
/// outbound connections take the current ones per handshake, a reload swaps
/// them all at once (a connection keeps what it started with).
#[derive(Debug)]
pub struct TlsStore {
    specs: TlsSpecs,
    current: arc_swap::ArcSwap<TlsProfiles>,
}

impl TlsStore {
    pub fn load(specs: TlsSpecs) -> Result<Arc<TlsStore>, TlsError> {
        let current = arc_swap::ArcSwap::from_pointee(TlsProfiles::load(&specs)?);
        Ok(Arc::new(TlsStore { specs, current }))
    }

    /// Read every file again; a file that does not load changes nothing
    /// (the error names it).
    pub fn reload(&self) -> Result<(), TlsError> {
        self.current.store(Arc::new(TlsProfiles::load(&self.specs)?));
        Ok(())
    }

    pub fn current(&self) -> Arc<TlsProfiles> {
        self.current.load_full()
    }
}

/// `wisp_tls_certificate_expiry_seconds{profile}`: seconds until each
/// profile's certificate expires (negative once it has), at scrape time.
#[derive(Debug)]
pub struct ExpiryCollector(pub Arc<TlsStore>);

impl prometheus_client::collector::Collector for ExpiryCollector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let mut m = encoder.encode_descriptor(
            "tls_certificate_expiry_seconds",
            "Seconds until the TLS profile's certificate expires",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (profile, not_after) in self.0.current().expiries() {
            let labels = vec![("profile".to_string(), profile)];
            prometheus_client::metrics::gauge::ConstGauge::new(not_after - now).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The leaf certificate's notAfter, as Unix seconds.
fn not_after(leaf: &CertificateDer<'_>, file: &Path) -> Result<i64, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| TlsError::File {
        file: file.display().to_string(),
        reason: format!("not an X.509 certificate: {e}"),
    })?;
    Ok(cert.validity().not_after.timestamp())
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
        let not_after = not_after(&chain[0], &spec.certificate)?;
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
        Ok(TlsProfile { server: Arc::new(server), client: Arc::new(client), not_after })
    }
}

/// How wisp opens a TLS connection to one destination: the profile (its
/// client certificate and trust) and the server name to verify and send as
/// SNI. Connections are pooled per target too, so two tenants of one
/// address (Teams Direct Routing) never share a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsTarget {
    /// `tls_profile` attr; None: `[tls]`.
    pub profile: Option<String>,
    /// `tls_server_name` attr, else the URI's host when it is a name;
    /// None: verify the IP address.
    pub server_name: Option<String>,
    /// Tells pool entries apart: 0 for the default profile without a name
    /// (the plain peer address, shared with accepted connections).
    pub tag: u64,
}

impl TlsTarget {
    pub fn new(profile: Option<String>, server_name: Option<String>) -> TlsTarget {
        let tag = match (&profile, &server_name) {
            (None, None) => 0,
            (p, n) => {
                let (p, n) = (p.as_deref().unwrap_or(""), n.as_deref().unwrap_or(""));
                crate::hash::fnv1a_64(&[p.as_bytes(), b"\0", n.as_bytes()]).max(1)
            }
        };
        TlsTarget { profile, server_name, tag }
    }
}

/// Why a TLS handshake failed, as `wisp_tls_handshakes_total{reason}` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The peer's certificate was refused (unknown CA, expired, wrong name).
    Certificate,
    /// A client certificate was required and none came.
    NoCertificate,
    /// No protocol version or cipher suite in common (TLS 1.1, say).
    Incompatible,
    /// The peer sent an alert (it refused something of ours).
    Alert,
    /// Not finished within the handshake timeout.
    Timeout,
    /// The connection broke, or the bytes were not TLS.
    Io,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 6] = [
        HandshakeFailure::Certificate,
        HandshakeFailure::NoCertificate,
        HandshakeFailure::Incompatible,
        HandshakeFailure::Alert,
        HandshakeFailure::Timeout,
        HandshakeFailure::Io,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Certificate => "certificate",
            HandshakeFailure::NoCertificate => "no_certificate",
            HandshakeFailure::Incompatible => "incompatible",
            HandshakeFailure::Alert => "alert",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Io => "io",
        }
    }

    /// Classify the error a tokio-rustls handshake ended with.
    pub fn of(e: &std::io::Error) -> HandshakeFailure {
        let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
            return HandshakeFailure::Io;
        };
        match tls {
            rustls::Error::InvalidCertificate(_) => HandshakeFailure::Certificate,
            rustls::Error::NoCertificatesPresented => HandshakeFailure::NoCertificate,
            rustls::Error::PeerIncompatible(_) => HandshakeFailure::Incompatible,
            rustls::Error::AlertReceived(_) => HandshakeFailure::Alert,
            _ => HandshakeFailure::Io,
        }
    }
}
