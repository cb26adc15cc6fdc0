//! TLS over the plain transports, with rustls (the ring provider).
//!
//! A byte stream, and nothing of HTTP: the accept pipeline (`accept.rs`) runs a connection's
//! handshake in the connection's own task, bounded by the server's `timeout`. Before it, one
//! byte is peeked: a TLS record starts with 0x16, and a plain HTTP request on the TLS port is
//! handed back, for the pipeline to answer (Cheroot's 400) at once. The certificate and key come through a resolver that can be swapped
//! while the server runs ([`TlsAcceptor::reload`]): new handshakes use the new pair, open
//! connections go on with theirs.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, SupportedCipherSuite};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::Transport;
use crate::addr::PeerAddr;
use crate::log::{ErrorLog, LogLevel};
use crate::tls_env::{self, ServerVars, TlsInfo};

mod refusal;

/// The command that makes a self-signed X.509 version 3 certificate for testing (what a
/// refusal of a version 1 certificate suggests).
pub const MAKE_V3_CERTIFICATE: &str = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 365 -nodes -subj /CN=localhost -addext subjectAltName=DNS:localhost -keyout key.pem -out cert.pem";

/// What the client gets when it speaks plain HTTP to the TLS port (Cheroot's words).
pub const PLAIN_HTTP_ON_TLS_PORT: &str =
    "The client sent a plain HTTP request, but this server only speaks HTTPS on this port.";

/// A certificate, key or setting that cannot be served. The message names the file (or
/// setting) and the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsError(String);

impl TlsError {
    fn new(msg: impl Into<String>) -> Self {
        TlsError(msg.into())
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// A protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// Whether and how clients present certificates.
#[derive(Clone, Debug, Default)]
pub enum ClientAuth {
    /// Clients are not asked for a certificate.
    #[default]
    None,
    /// Clients are asked; one that sends a certificate must have it signed by one of these
    /// CAs, one that sends none is served all the same.
    Optional(Vec<CertificateDer<'static>>),
    /// Clients must send a certificate signed by one of these CAs.
    Required(Vec<CertificateDer<'static>>),
}

/// The server's certificate chain and private key, read and checked.
#[derive(Debug)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_name: String,
    key_name: String,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            cert_name: self.cert_name.clone(),
            key_name: self.key_name.clone(),
        }
    }
}

/// Every PEM section of `data`, in order.
fn pem_sections(data: &[u8], name: &str) -> Result<Vec<(SectionKind, Vec<u8>)>, TlsError> {
    <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(format!("{name}: not a valid PEM file: {e}")))
}

fn parse_cert<'a>(der: &'a [u8], name: &str) -> Result<X509Certificate<'a>, TlsError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| TlsError::new(format!("{name}: the certificate is malformed: {e}")))
}

impl Identity {
    /// Reads a certificate chain (the server's certificate first, then intermediates) and
    /// a private key (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or Ed25519) from PEM text. `key`
    /// may be the certificate file itself, when it holds the key too. The names are used in
    /// error messages (file names, usually). The key's match with the certificate is
    /// checked when an acceptor is made of it.
    pub fn from_pem(
        cert: &[u8],
        cert_name: &str,
        key: &[u8],
        key_name: &str,
    ) -> Result<Identity, TlsError> {
        let chain: Vec<CertificateDer<'static>> = pem_sections(cert, cert_name)?
            .into_iter()
            .filter(|(kind, _)| *kind == SectionKind::Certificate)
            .map(|(_, der)| CertificateDer::from(der))
            .collect();
        let Some(leaf) = chain.first() else {
            return Err(TlsError::new(format!(
                "{cert_name}: no certificate found (a PEM \"BEGIN CERTIFICATE\" block)"
            )));
        };
        let parsed = parse_cert(leaf, cert_name)?;
        // rustls (webpki) refuses version 1 certificates, which `openssl x509 -req` makes
        // when it is given no extensions; OpenSSL serves them, so people have them.
        if parsed.version().0 < 2 {
            return Err(TlsError::new(format!(
                "{cert_name}: the certificate is X.509 version {} (as `openssl x509 -req` makes without extensions); stogie (rustls) serves version 3 certificates only. A self-signed one for testing: {MAKE_V3_CERTIFICATE} (a CA's `openssl x509 -req` makes version 3 when given -extfile with a subjectAltName)",
                parsed.version().0 + 1
            )));
        }
        let not_after = parsed.validity().not_after.timestamp();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if not_after < now {
            return Err(TlsError::new(format!(
                "{cert_name}: the certificate expired on {}",
                tls_env::openssl_time(not_after)
            )));
        }
        for (i, der) in chain.iter().enumerate().skip(1) {
            parse_cert(der, &format!("{cert_name} (certificate {})", i + 1))?;
        }
        let text = String::from_utf8_lossy(key);
        if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(TlsError::new(format!(
                "{key_name}: the private key is encrypted: it must be decrypted first (a password is needed)"
            )));
        }
        let key_der = pem_sections(key, key_name)?
            .into_iter()
            .find_map(|(kind, der)| PrivateKeyDer::from_pem(kind, der))
            .ok_or_else(|| {
                TlsError::new(format!(
                    "{key_name}: no private key found (a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block)"
                ))
            })?;
        Ok(Identity {
            chain,
            key: key_der,
            cert_name: cert_name.to_owned(),
            key_name: key_name.to_owned(),
        })
    }

    /// Completes the chain sent to clients with intermediate CA certificates from a bundle
    /// (Cheroot's `certificate_chain`): each certificate whose subject is the issuer of the
    /// last one in the chain is added, up to (not including) a self-signed root.
    pub fn with_chain(mut self, bundle: &[u8], bundle_name: &str) -> Result<Identity, TlsError> {
        let extra: Vec<CertificateDer<'static>> = pem_sections(bundle, bundle_name)?
            .into_iter()
            .filter(|(kind, _)| *kind == SectionKind::Certificate)
            .map(|(_, der)| CertificateDer::from(der))
            .collect();
        let mut parsed = Vec::with_capacity(extra.len());
        for der in &extra {
            parsed.push(parse_cert(der, bundle_name)?);
        }
        for _ in 0..8 {
            let last = self.chain.last().expect("a chain has a leaf");
            let last = parse_cert(last, &self.cert_name)?;
            let issuer = last.issuer().as_raw();
            if last.subject().as_raw() == issuer {
                break;
            }
            let next = parsed.iter().position(|c| {
                c.subject().as_raw() == issuer && c.subject().as_raw() != c.issuer().as_raw()
            });
            match next {
                Some(i) if !self.chain.contains(&extra[i]) => self.chain.push(extra[i].clone()),
                _ => break,
            }
        }
        Ok(self)
    }

    /// Reads the certificate file, the key file (`None`: the key is in the certificate
    /// file) and an optional intermediate bundle.
    pub fn from_files(
        cert: &Path,
        key: Option<&Path>,
        chain: Option<&Path>,
    ) -> Result<Identity, TlsError> {
        let read = |p: &Path, what: &str| {
            std::fs::read(p).map_err(|e| {
                TlsError::new(format!("{what} file {}: cannot be read: {e}", p.display()))
            })
        };
        let cert_name = format!("certificate file {}", cert.display());
        let cert_pem = read(cert, "certificate")?;
        let (key_pem, key_name) = match key {
            Some(k) => (
                read(k, "private key")?,
                format!("private key file {}", k.display()),
            ),
            None => (cert_pem.clone(), cert_name.clone()),
        };
        let identity = Identity::from_pem(&cert_pem, &cert_name, &key_pem, &key_name)?;
        match chain {
            Some(c) => identity.with_chain(
                &read(c, "certificate chain")?,
                &format!("certificate chain file {}", c.display()),
            ),
            None => Ok(identity),
        }
    }

    /// The certificates sent to clients, the server's first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }
}

/// Everything a TLS listener needs.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// Certificate chain and key.
    pub identity: Identity,
    /// Client certificates.
    pub client_auth: ClientAuth,
    /// The lowest protocol version accepted.
    pub min_version: TlsVersion,
    /// The highest protocol version accepted.
    pub max_version: TlsVersion,
    /// The cipher suites allowed, by OpenSSL or IANA name; `None`: all of rustls's. Names
    /// rustls does not have are passed over (an OpenSSL cipher list names many); a
    /// selection that leaves an enabled protocol version without a suite is refused.
    pub cipher_suites: Option<Vec<String>>,
    /// ALPN protocols offered, in order of preference.
    pub alpn: Vec<Vec<u8>>,
    /// TLS 1.3 session tickets and TLS 1.2 stateless resumption (TLS 1.2 resumption by
    /// session ID works without them).
    pub session_tickets: bool,
    /// Pick the cipher suite by the server's order of preference, not the client's.
    pub prefer_server_ciphers: bool,
    /// `SSL_VERSION_INTERFACE`: the server's name and version.
    pub interface: String,
    /// A client certificate refused in a handshake is logged as a warning once per reason
    /// per client address in this interval; the ones in between are counted, and the count
    /// is said with the next warning for the same reason and address.
    pub refusal_log_interval: Duration,
}

impl TlsConfig {
    /// TLS 1.2 and 1.3, rustls's suites, ALPN `http/1.1`, tickets on, no client certificates.
    pub fn new(identity: Identity) -> Self {
        TlsConfig {
            identity,
            client_auth: ClientAuth::None,
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
            cipher_suites: None,
            alpn: vec![b"http/1.1".to_vec()],
            session_tickets: true,
            prefer_server_ciphers: false,
            interface: concat!("stogie-http/", env!("CARGO_PKG_VERSION")).to_owned(),
            refusal_log_interval: Duration::from_secs(60),
        }
    }
}

/// The certificate in use and its `SSL_SERVER_*` variables.
#[derive(Clone, Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    vars: Arc<ServerVars>,
}

#[derive(Debug)]
struct Resolver {
    current: RwLock<Loaded>,
}

impl Resolver {
    fn current(&self) -> Loaded {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key)
    }
}

/// A TLS server configuration, ready for handshakes; cheap to clone.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: Arc<Inner>,
}

struct Inner {
    /// Replaced whole when the protocols offered change (ALPN is the config's).
    acceptor: RwLock<tokio_rustls::TlsAcceptor>,
    config: RwLock<Arc<rustls::ServerConfig>>,
    resolver: Arc<Resolver>,
    provider: Arc<CryptoProvider>,
    client_auth: bool,
    interface: String,
    refusals: refusal::RefusalLog,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("client_auth", &self.inner.client_auth)
            .finish_non_exhaustive()
    }
}

fn suite_name_matches(suite: SupportedCipherSuite, name: &str) -> bool {
    let id = suite.suite();
    tls_env::SUITES
        .iter()
        .any(|s| s.0 == id && (s.1.eq_ignore_ascii_case(name) || s.2.eq_ignore_ascii_case(name)))
}

fn suite_version(suite: SupportedCipherSuite) -> TlsVersion {
    match suite {
        SupportedCipherSuite::Tls13(_) => TlsVersion::Tls13,
        _ => TlsVersion::Tls12,
    }
}

fn version_name(v: TlsVersion) -> &'static str {
    match v {
        TlsVersion::Tls12 => "TLS 1.2",
        TlsVersion::Tls13 => "TLS 1.3",
    }
}

fn certified(identity: Identity, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let Identity {
        chain,
        key,
        cert_name,
        key_name,
    } = identity;
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::new(format!(
                "{key_name}: the private key does not match the certificate in {cert_name}"
            )),
            rustls::Error::InvalidCertificate(e) => TlsError::new(format!(
                "{cert_name}: the certificate cannot be served: {}",
                refusal::certificate_problem(&e).1
            )),
            other => TlsError::new(format!(
                "{key_name}: the private key cannot be used: {other}"
            )),
        })
}

impl TlsAcceptor {
    /// Checks everything and builds the rustls configuration.
    pub fn new(config: TlsConfig) -> Result<TlsAcceptor, TlsError> {
        if config.min_version > config.max_version {
            return Err(TlsError::new(format!(
                "the minimum TLS version ({}) is above the maximum ({})",
                version_name(config.min_version),
                version_name(config.max_version)
            )));
        }
        let base = rustls::crypto::ring::default_provider();
        let in_range = |s: &SupportedCipherSuite| {
            (config.min_version..=config.max_version).contains(&suite_version(*s))
        };
        let suites: Vec<SupportedCipherSuite> = base
            .cipher_suites
            .iter()
            .copied()
            .filter(|s| {
                config
                    .cipher_suites
                    .as_ref()
                    .is_none_or(|names| names.iter().any(|n| suite_name_matches(*s, n.trim())))
            })
            .collect();
        for v in [TlsVersion::Tls12, TlsVersion::Tls13] {
            if (config.min_version..=config.max_version).contains(&v)
                && !suites.iter().any(|s| suite_version(*s) == v)
            {
                let offered: Vec<&str> = tls_env::SUITES.iter().map(|s| s.1).collect();
                return Err(TlsError::new(format!(
                    "ciphers: none of the {} cipher suites selected ({}) is one rustls has; it has {}",
                    version_name(v),
                    config.cipher_suites.as_deref().unwrap_or_default().join(":"),
                    offered.join(":")
                )));
            }
        }
        let provider = Arc::new(CryptoProvider {
            cipher_suites: suites.into_iter().filter(in_range).collect(),
            ..base
        });
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
            (TlsVersion::Tls12, &rustls::version::TLS12),
            (TlsVersion::Tls13, &rustls::version::TLS13),
        ]
        .into_iter()
        .filter(|(v, _)| (config.min_version..=config.max_version).contains(v))
        .map(|(_, p)| p)
        .collect();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| TlsError::new(format!("TLS settings: {e}")))?;
        let (roots, optional) = match &config.client_auth {
            ClientAuth::None => (None, false),
            ClientAuth::Optional(cas) => (Some(cas), true),
            ClientAuth::Required(cas) => (Some(cas), false),
        };
        let builder = match roots {
            None => builder.with_no_client_auth(),
            Some(cas) => {
                let mut store = RootCertStore::empty();
                for (i, ca) in cas.iter().enumerate() {
                    store.add(ca.clone()).map_err(|e| {
                        TlsError::new(format!(
                            "client CA certificate {}: cannot be used as a trust anchor: {e}",
                            i + 1
                        ))
                    })?;
                }
                if store.is_empty() {
                    return Err(TlsError::new(
                        "client certificate verification is on, but no CA certificates were given to verify them with",
                    ));
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone());
                let verifier = if optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| TlsError::new(format!("client certificate verification: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let leaf = config.identity.chain[0].clone();
        let key = certified(config.identity, &provider)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(Loaded {
                key,
                vars: Arc::new(ServerVars::new(&leaf, &config.interface)),
            }),
        });
        let mut server = builder.with_cert_resolver(resolver.clone());
        server.alpn_protocols = config.alpn;
        server.ignore_client_order = config.prefer_server_ciphers;
        if config.session_tickets {
            server.ticketer = rustls::crypto::ring::Ticketer::new()
                .map_err(|e| TlsError::new(format!("session tickets: {e}")))?;
        } else {
            server.send_tls13_tickets = 0;
        }
        Ok(TlsAcceptor {
            inner: Arc::new(Inner {
                acceptor: RwLock::new(tokio_rustls::TlsAcceptor::from(Arc::new(server.clone()))),
                config: RwLock::new(Arc::new(server)),
                resolver,
                provider,
                client_auth: roots.is_some(),
                interface: config.interface,
                refusals: refusal::RefusalLog::new(config.refusal_log_interval),
            }),
        })
    }

    /// Replaces the certificate and key for new handshakes (open connections keep theirs).
    /// On an error nothing changes.
    pub fn reload(&self, identity: Identity) -> Result<(), TlsError> {
        let leaf = identity.chain[0].clone();
        let key = certified(identity, &self.inner.provider)?;
        let vars = Arc::new(ServerVars::new(&leaf, &self.inner.interface));
        *self
            .inner
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Loaded { key, vars };
        Ok(())
    }

    /// Offers `alpn` (protocol names, in the server's order of preference) to new
    /// handshakes: the protocols a server speaks are settled when it starts, after its
    /// certificate.
    pub fn set_alpn(&self, alpn: Vec<Vec<u8>>) {
        let mut config = self.inner.config.write().unwrap_or_else(|e| e.into_inner());
        if config.alpn_protocols == alpn {
            return;
        }
        let mut next = (**config).clone();
        next.alpn_protocols = alpn;
        let next = Arc::new(next);
        *self
            .inner
            .acceptor
            .write()
            .unwrap_or_else(|e| e.into_inner()) = tokio_rustls::TlsAcceptor::from(next.clone());
        *config = next;
    }

    /// The certificate chain new handshakes send.
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.inner.resolver.current().key.cert.clone()
    }

    /// Completes a TLS handshake on a connected stream (for servers of one's own; the
    /// engine does this itself). Plain HTTP or garbage instead of a ClientHello is an error.
    pub async fn accept<S: Transport>(&self, stream: S) -> io::Result<TlsStream<S>> {
        match handshake(self, stream).await? {
            Handshake::Done(s) => Ok(s),
            Handshake::Closed => Err(io::ErrorKind::UnexpectedEof.into()),
            Handshake::PlainHttp(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "plain HTTP instead of a TLS handshake",
            )),
        }
    }
}

/// What came of a connection's start on the TLS port.
pub(crate) enum Handshake<S> {
    /// The handshake is done: the stream, ready for HTTP.
    Done(TlsStream<S>),
    /// The client left before sending anything.
    Closed,
    /// A plain HTTP request came: the stream, to answer it.
    PlainHttp(S),
}

/// Peeks at the connection's first byte, then handshakes. Plain HTTP is handed back, for
/// the caller to answer in HTTP.
pub(crate) async fn handshake<S: Transport>(
    acceptor: &TlsAcceptor,
    mut stream: S,
) -> io::Result<Handshake<S>> {
    let mut first = [0u8; 1];
    // Through `&mut`: a shared borrow held across the await would ask S to be Sync.
    let (peeking, byte) = (&mut stream, &mut first);
    if poll_fn(move |cx| peeking.poll_peek(cx, byte)).await? == 0 {
        return Ok(Handshake::Closed);
    }
    match first[0] {
        // A TLS handshake record.
        0x16 => {}
        // A request line starts with a method: letters.
        b if b.is_ascii_alphabetic() => return Ok(Handshake::PlainHttp(stream)),
        b => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a TLS handshake (first byte 0x{b:02x})"),
            ))
        }
    }
    let inner = &acceptor.inner;
    let current = inner
        .acceptor
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let tls = current.accept(stream).await?;
    let vars = inner.resolver.current().vars;
    let info = TlsInfo::new(tls.get_ref().1, vars, inner.client_auth);
    Ok(Handshake::Done(TlsStream {
        inner: Box::new(tls),
        info: Arc::new(info),
    }))
}

impl TlsAcceptor {
    /// Logs a handshake that failed (`failure`), or timed out after `timeout` (`None`): a
    /// refused client certificate as a warning, rate-limited (`log_refusal`); any
    /// other failure at debug level.
    pub(crate) fn log_failure(
        &self,
        failure: Option<&io::Error>,
        timeout: Duration,
        peer: &PeerAddr,
        log: &dyn ErrorLog,
    ) {
        if let Some(e) = failure {
            if log_refusal(self, e, peer, log) {
                return;
            }
        }
        // Per connection, and scanners make many: at debug level, formatted only if kept.
        if !log.enabled(LogLevel::Debug) {
            return;
        }
        let why = match failure {
            Some(e) => format!("failed: {e}"),
            None => format!("timed out after {timeout:?}"),
        };
        log.log(LogLevel::Debug, &format!("TLS handshake with {peer} {why}"));
    }
}

/// Logs a handshake that failed on the client's certificate as a warning that says what
/// is wrong with it, rate-limited; the ones over the limit at debug level. False when the
/// handshake failed for another reason.
fn log_refusal(
    acceptor: &TlsAcceptor,
    err: &io::Error,
    peer: &PeerAddr,
    log: &dyn ErrorLog,
) -> bool {
    let Some(tls_err) = refusal::rustls_error(err) else {
        return false;
    };
    let Some((reason, text)) = refusal::describe(tls_err, &peer.to_string()) else {
        return false;
    };
    if !log.enabled(LogLevel::Warning) {
        return true;
    }
    let ip = match peer {
        PeerAddr::Tcp(a) => Some(a.ip().to_canonical()),
        PeerAddr::Unix(_) => None,
    };
    let refusals = &acceptor.inner.refusals;
    match refusals.admit(ip, reason, std::time::Instant::now()) {
        Some(admitted) => log.log(LogLevel::Warning, &format!("{text}{}", admitted.suffix())),
        None if log.enabled(LogLevel::Debug) => log.log(LogLevel::Debug, &text),
        None => {}
    }
    true
}

/// A connection after its TLS handshake.
pub struct TlsStream<S> {
    // Boxed: a rustls connection is large, and the connection's future holds its stream.
    inner: Box<tokio_rustls::server::TlsStream<S>>,
    info: Arc<TlsInfo>,
}

impl<S> fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl<S> TlsStream<S> {
    /// The connection's TLS facts.
    pub fn info(&self) -> &Arc<TlsInfo> {
        &self.info
    }
}

impl<S: Transport> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: Transport> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: Transport> Transport for TlsStream<S> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (io, session) = self.inner.get_ref();
        // Records already read may hold a request (pipelined, or a read that took more than
        // the head): the socket would not say so.
        if !session.wants_read() {
            return Poll::Ready(Ok(()));
        }
        io.poll_read_ready(cx)
    }

    fn tls_info(&self) -> Option<&Arc<TlsInfo>> {
        Some(&self.info)
    }

    fn buffers_writes(&self) -> bool {
        true
    }
}
