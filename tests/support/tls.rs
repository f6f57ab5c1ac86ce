//! TLS peers for the tests: a CA and certificates made with the openssl CLI
//! at test time, a blocking rustls client that speaks SIP over TLS, and a
//! TLS carrier that answers INVITEs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use wisp::sip::{parse, reply, Limits, Message};

/// A test CA, a certificate for 127.0.0.1 and `carrier.test` it signed
/// (server and client use), and their keys, as PEM files in a temporary
/// folder.
pub struct Pki {
    pub dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A new P-256 key with `openssl req`, then `more` (the subject, the
/// output names, `-x509` for a self-signed CA).
const EC_KEY: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

impl Pki {
    pub fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("wisp-pki-{}-{:x}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = ["-x509", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=wisp test CA"];
        openssl(&dir, &[&["req"][..], &EC_KEY, &ca].concat());
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:carrier.test\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        let pki = Pki { dir };
        pki.issue("server");
        pki
    }

    /// A certificate for 127.0.0.1 and `carrier.test` from the CA, as
    /// `STEM.pem` / `STEM.key`.
    fn issue(&self, stem: &str) {
        let (key, csr, pem) = (format!("{stem}.key"), format!("{stem}.csr"), format!("{stem}.pem"));
        let req = ["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"];
        openssl(&self.dir, &[&["req"][..], &EC_KEY, &req].concat());
        let sign = ["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", &pem];
        openssl(&self.dir, &[&sign[..], &["-days", "2", "-extfile", "ext.cnf"]].concat());
    }

    /// A certificate for the DNS name `name` alone from the same CA, as
    /// `STEM.pem` / `STEM.key` (another tenant, another SNI name).
    pub fn issue_for(&self, stem: &str, name: &str) {
        let ext = format!("{stem}.cnf");
        std::fs::write(
            self.dir.join(&ext),
            format!(
                "subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
                 extendedKeyUsage=serverAuth,clientAuth\n"
            ),
        )
        .unwrap();
        let (key, csr, pem) = (format!("{stem}.key"), format!("{stem}.csr"), format!("{stem}.pem"));
        let subject = format!("/CN={name}");
        let req = ["-keyout", &key, "-out", &csr, "-subj", &subject];
        openssl(&self.dir, &[&["req"][..], &EC_KEY, &req].concat());
        let sign = ["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", &pem];
        openssl(&self.dir, &[&sign[..], &["-days", "2", "-extfile", &ext]].concat());
    }

    /// A `[tls.profiles.NAME]` section with `STEM.pem`/`STEM.key`.
    pub fn profile_section(&self, name: &str, stem: &str, server_names: &[&str]) -> String {
        let names: Vec<String> = server_names.iter().map(|n| format!("\"{n}\"")).collect();
        format!(
            "[tls.profiles.{name}]\ncertificate = \"{}\"\nprivate_key = \"{}\"\nca = \"{}\"\nserver_names = [{}]\n",
            self.path(&format!("{stem}.pem")).display(),
            self.path(&format!("{stem}.key")).display(),
            self.path("ca.pem").display(),
            names.join(", ")
        )
    }

    /// Another certificate for the same names from the same CA, as
    /// `server2.pem` / `server2.key` (for reload tests).
    pub fn reissue(&self) {
        self.issue("server2");
    }

    /// The DER of the first certificate in a PEM file.
    pub fn der(&self, name: &str) -> Vec<u8> {
        CertificateDer::pem_file_iter(self.path(name)).unwrap().next().unwrap().unwrap().to_vec()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The `[tls]` section for wisp.
    pub fn section(&self, verify_client: &str) -> String {
        format!(
            "[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\nca = \"{}\"\nverify_client = \"{verify_client}\"\n",
            self.path("server.pem").display(),
            self.path("server.key").display(),
            self.path("ca.pem").display()
        )
    }

    fn chain(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let certs = CertificateDer::pem_file_iter(self.path("server.pem")).unwrap().map(|c| c.unwrap()).collect();
        (certs, PrivateKeyDer::from_pem_file(self.path("server.key")).unwrap())
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.path("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A client config trusting the test CA, with (`with_cert`) or without
    /// a client certificate.
    pub fn client(&self, with_cert: bool) -> Arc<rustls::ClientConfig> {
        let b = rustls::ClientConfig::builder_with_provider(Pki::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots());
        Arc::new(match with_cert {
            true => {
                let (certs, key) = self.chain();
                b.with_client_auth_cert(certs, key).unwrap()
            }
            false => b.with_no_client_auth(),
        })
    }

    fn server(&self) -> Arc<rustls::ServerConfig> {
        let (certs, key) = self.chain();
        let cfg = rustls::ServerConfig::builder_with_provider(Pki::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Arc::new(cfg)
    }

    /// A server that requires a client certificate from the test CA
    /// (a carrier doing mutual TLS, as Teams Direct Routing does).
    fn server_mtls(&self) -> Arc<rustls::ServerConfig> {
        let (certs, key) = self.chain();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()), Pki::provider())
                .build()
                .unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Pki::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap();
        Arc::new(cfg)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type ClientStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A SIP client over one TLS connection to wisp.
pub struct TlsUac {
    pub stream: ClientStream,
    pub local: SocketAddr,
    buf: Vec<u8>,
}

impl TlsUac {
    /// Connect and complete the handshake (an error when wisp refuses it).
    pub fn connect(to: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<TlsUac> {
        let tcp = TcpStream::connect(to)?;
        tcp.set_read_timeout(Some(Duration::from_secs(3)))?;
        let local = tcp.local_addr()?;
        let name = ServerName::IpAddress(to.ip().into());
        let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsUac { stream, local, buf: Vec::new() })
    }

    /// The DER of the certificate the server presented.
    pub fn peer_certificate(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default()
    }

    pub fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).unwrap();
        self.stream.flush().unwrap();
    }

    /// The next whole SIP message (Content-Length framed), or None.
    pub fn recv(&mut self) -> Option<Message> {
        read_message(&mut self.stream, &mut self.buf)
    }

    /// An INVITE from this client (Via `TLS`) to `callee@host`.
    pub fn invite(&self, call_id: &str, host: SocketAddr) -> String {
        format!(
            "INVITE sip:callee@{host} SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bK-{call_id};rport\r\n\
             From: <sip:caller@{me}>;tag=tls-{call_id}\r\nTo: <sip:callee@{host}>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:caller@{me};transport=tls>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            me = self.local
        )
    }
}

/// Read one Content-Length framed message from a stream.
fn read_message(s: &mut impl Read, buf: &mut Vec<u8>) -> Option<Message> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").or_else(|| l.strip_prefix("l:")))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let bytes: Vec<u8> = buf.drain(..end + 4 + len).collect();
                return parse(bytes, &Limits::default()).ok();
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A carrier reached over TLS: accepts connections and answers every
/// INVITE 180 + 200 (Record-Route mirrored), other requests 200.
pub struct TlsUas {
    pub addr: SocketAddr,
    /// Every request received.
    pub received: Arc<Mutex<Vec<Message>>>,
    /// Per connection accepted: the SNI the client sent and the DER of its
    /// certificate (empty without one).
    pub handshakes: Handshakes,
}

impl TlsUas {
    pub fn start(pki: &Pki) -> TlsUas {
        TlsUas::with_config(pki.server())
    }

    /// A carrier that refuses clients without a certificate the CA signed.
    pub fn start_mtls(pki: &Pki) -> TlsUas {
        TlsUas::with_config(pki.server_mtls())
    }

    fn with_config(config: Arc<rustls::ServerConfig>) -> TlsUas {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let (got, seen) = (received.clone(), handshakes.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (config, got, seen) = (config.clone(), got.clone(), seen.clone());
                std::thread::spawn(move || serve(tcp, config, got, seen, addr));
            }
        });
        TlsUas { addr, received, handshakes }
    }

    /// `sip:127.0.0.1:PORT;transport=tls`, for a dispatcher.list line.
    pub fn uri(&self) -> String {
        format!("sip:{};transport=tls", self.addr)
    }
}

pub type Handshakes = Arc<Mutex<Vec<(Option<String>, Vec<u8>)>>>;

fn serve(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    got: Arc<Mutex<Vec<Message>>>,
    seen: Handshakes,
    me: SocketAddr,
) {
    let Ok(conn) = rustls::ServerConnection::new(config) else { return };
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        if stream.conn.complete_io(&mut stream.sock).is_err() {
            return;
        }
    }
    let sni = stream.conn.server_name().map(str::to_string);
    let cert = stream.conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    seen.lock().unwrap().push((sni, cert));
    let mut buf = Vec::new();
    while let Some(req) = read_message(&mut stream, &mut buf) {
        if !req.is_request() {
            continue;
        }
        got.lock().unwrap().push(req.clone());
        let rr: Vec<String> =
            req.values_named(b"Record-Route").map(|v| String::from_utf8_lossy(v).into_owned()).collect();
        let contact = format!("<sip:carrier@{me};transport=tls>");
        let joined = rr.join(", ");
        let mut extra: Vec<(&str, &str)> = vec![("Contact", &contact)];
        if !rr.is_empty() {
            extra.push(("Record-Route", &joined));
        }
        let codes: &[u16] = match req.method() {
            wisp::sip::Method::Ack => &[],
            wisp::sip::Method::Invite => &[180, 200],
            _ => &[200],
        };
        for &code in codes {
            let bytes = reply::response(&req, code, reply::reason_phrase(code), b"tlsuas", &extra);
            if stream.write_all(&bytes).and_then(|_| stream.flush()).is_err() {
                return;
            }
        }
    }
}
