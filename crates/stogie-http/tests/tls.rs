//! HTTPS: handshakes, the HTTP/1.1 features over TLS, client certificates, reload, and the
//! wrong protocol on the port. Real sockets, certificates made by rcgen, rustls as client.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use stogie_http::{
    BindAddr, ClientAuth, EngineOptions, ErrorLog, Gateway, HttpServer, Identity, ListenOptions,
    Listener, LiveConfig, LocalAddr, LogLevel, Request, ResponseEvent, ResponseHead, Stats,
    StderrLog, TlsAcceptor, TlsConfig, TlsVersion,
};

/// A CA and what it issued, as PEM.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca }
    }

    fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    fn issue(&self, names: &[&str], cn: &str) -> Leaf {
        self.issue_with(names, cn, |_| {})
    }

    fn issue_with(
        &self,
        names: &[&str],
        cn: &str,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CountryName, "UA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Stogie Test");
        params.distinguished_name.push(DnType::CommonName, cn);
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

impl Leaf {
    fn identity(&self) -> Identity {
        Identity::from_pem(
            self.cert_pem.as_bytes(),
            "cert.pem",
            self.key_pem.as_bytes(),
            "key.pem",
        )
        .unwrap()
    }

    fn client_auth(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        use rustls::pki_types::pem::PemObject;
        (
            vec![self.der.clone()],
            PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap(),
        )
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(ca: &Pki, versions: &[TlsVersion], client: Option<&Leaf>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.ca_der()).unwrap();
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = versions
        .iter()
        .map(|v| match v {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some(leaf) => {
            let (chain, key) = leaf.client_auth();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

type Tls<S> = StreamOwned<ClientConnection, S>;

impl Stream for Tls<TcpStream> {
    fn shutdown_write(&self) -> std::io::Result<()> {
        self.sock.shutdown(Shutdown::Write)
    }
}

impl Stream for Tls<UnixStream> {
    fn shutdown_write(&self) -> std::io::Result<()> {
        self.sock.shutdown(Shutdown::Write)
    }
}

fn tls_over<S: Read + Write>(config: &Arc<ClientConfig>, name: &str, sock: S) -> Tls<S> {
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let conn = ClientConnection::new(config.clone(), server_name).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    // Complete the handshake now, so that failures show here.
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
    }
    tls
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn connect(server: &TestServer, config: &Arc<ClientConfig>) -> Client<Tls<TcpStream>> {
    Client::new(tls_over(config, "localhost", tcp(server.addr())))
}

fn start_tls_on(bind: &BindAddr, cfg: TlsConfig, timeout: u64, gw: impl Gateway) -> TestServer {
    let listener = Listener::bind(bind, ListenOptions::default()).expect("bind");
    let server = HttpServer::start(
        listener,
        LiveConfig::new(config_with_timeout(timeout)),
        Arc::new(gw),
        Arc::new(StderrLog),
        Arc::new(Stats::default()),
        EngineOptions {
            tls: Some(TlsAcceptor::new(cfg).expect("a valid TLS configuration")),
            ..EngineOptions::default()
        },
    )
    .expect("start the server");
    TestServer { server }
}

/// The engine's log lines, kept.
#[derive(Default)]
struct Lines(Mutex<Vec<(LogLevel, String)>>);

impl ErrorLog for Lines {
    fn log(&self, level: LogLevel, msg: &str) {
        self.0.lock().unwrap().push((level, msg.to_owned()));
    }

    fn enabled(&self, level: LogLevel) -> bool {
        level >= LogLevel::Warning
    }
}

impl Lines {
    fn warnings(&self) -> Vec<String> {
        let lines = self.0.lock().unwrap();
        lines
            .iter()
            .filter(|(l, _)| *l == LogLevel::Warning)
            .map(|(_, m)| m.clone())
            .collect()
    }
}

fn start_tls_logged(cfg: TlsConfig, log: Arc<Lines>) -> TestServer {
    let listener = Listener::bind(
        &BindAddr::Tcp("127.0.0.1".into(), 0),
        ListenOptions::default(),
    )
    .expect("bind");
    let server = HttpServer::start(
        listener,
        LiveConfig::new(config_with_timeout(5)),
        Arc::new(environ_gateway()),
        log,
        Arc::new(Stats::default()),
        EngineOptions {
            tls: Some(TlsAcceptor::new(cfg).expect("a valid TLS configuration")),
            ..EngineOptions::default()
        },
    )
    .expect("start the server");
    TestServer { server }
}

fn start_tls(cfg: TlsConfig, gw: impl Gateway) -> TestServer {
    start_tls_on(&BindAddr::Tcp("127.0.0.1".into(), 0), cfg, 5, gw)
}

/// Answers with the connection's TLS variables as `KEY=value` lines.
fn environ_gateway() -> impl Gateway {
    gateway(|req: Request| {
        let mut text = format!("scheme={}\nsendfile={}\n", req.scheme, req.can_sendfile);
        if let Some(info) = &req.tls {
            for (k, v) in info.environ() {
                text.push_str(&format!("{k}={v}\n"));
            }
            text.push_str(&format!(
                "alpn={:?}\n",
                info.alpn.as_deref().map(String::from_utf8_lossy)
            ));
        }
        respond(&req, "200 OK", Bytes::from(text));
    })
}

fn vars(resp: &Response) -> Vec<(String, String)> {
    resp.body_str()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn var(resp: &Response, key: &str) -> Option<String> {
    vars(resp)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

const GET: &str = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

#[test]
fn https_keep_alive_on_tls13_and_tls12() {
    let pki = Pki::new("Test CA");
    let leaf = pki.issue(&["localhost"], "localhost");
    let server = start_tls(TlsConfig::new(leaf.identity()), environ_gateway());
    for (version, name) in [
        (TlsVersion::Tls13, "TLSv1.3"),
        (TlsVersion::Tls12, "TLSv1.2"),
    ] {
        let mut c = connect(&server, &client_config(&pki, &[version], None));
        for _ in 0..3 {
            c.send(GET);
            let r = c.read_response();
            assert_eq!(r.code(), 200);
            assert_eq!(var(&r, "scheme").as_deref(), Some("https"));
            assert_eq!(var(&r, "sendfile").as_deref(), Some("false"));
            assert_eq!(var(&r, "HTTPS").as_deref(), Some("on"));
            assert_eq!(var(&r, "SSL_PROTOCOL").as_deref(), Some(name));
            assert_eq!(var(&r, "SSL_TLS_SNI").as_deref(), Some("localhost"));
            assert_eq!(var(&r, "SSL_CLIENT_VERIFY").as_deref(), Some("NONE"));
            assert_eq!(var(&r, "SSL_SERVER_S_DN_CN").as_deref(), Some("localhost"));
            assert_eq!(
                var(&r, "SSL_SERVER_S_DN").as_deref(),
                // rcgen puts the common name first.
                Some("CN=localhost,C=UA,O=Stogie Test")
            );
            assert_eq!(var(&r, "SSL_SERVER_I_DN_CN").as_deref(), Some("Test CA"));
            assert_eq!(
                var(&r, "SSL_SERVER_SAN_DNS_0").as_deref(),
                Some("localhost")
            );
            assert_eq!(var(&r, "SSL_SERVER_M_VERSION").as_deref(), Some("3"));
            assert_eq!(var(&r, "alpn").as_deref(), Some("Some(\"http/1.1\")"));
            assert!(var(&r, "SSL_CIPHER").is_some_and(|c| !c.is_empty()));
            assert!(var(&r, "SSL_SESSION_ID").is_some_and(|c| c.len() == 64));
            assert!(var(&r, "SSL_CIPHER_USEKEYSIZE").is_some_and(|c| c == "128" || c == "256"));
        }
        assert_eq!(c.stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    }
}

#[test]
fn pipelined_requests_in_one_record_are_all_answered() {
    // The whole batch arrives in one TLS record: the requests after the first wait in
    // rustls's buffer, where the socket's readiness cannot tell of them.
    let pki = Pki::new("CA");
    let leaf = pki.issue(&["localhost"], "localhost");
    let server = start_tls(TlsConfig::new(leaf.identity()), hello_gateway());
    let mut c = connect(&server, &client_config(&pki, &[TlsVersion::Tls13], None));
    c.send(GET.repeat(50));
    for _ in 0..50 {
        let r = c.read_response();
        assert_eq!((r.code(), r.body_str().as_str()), (200, "hello"));
    }
}

#[test]
fn large_bodies_both_ways_and_chunked_and_continue() {
    let pki = Pki::new("CA");
    let leaf = pki.issue(&["localhost"], "localhost");
    let server = start_tls(TlsConfig::new(leaf.identity()), echo_gateway());
    let mut c = connect(&server, &client_config(&pki, &[TlsVersion::Tls13], None));
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    c.send(format!(
        "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    c.send(&body);
    let r = c.read_response();
    assert_eq!(r.code(), 200);
    assert!(r.body == body, "the 3 MB body came back changed");

    c.send("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.body_str(), "hello world");

    c.send("POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    let (status, _, _) = c.read_head();
    assert_eq!(status, "HTTP/1.1 100 Continue");
    c.send("abc");
    let r = c.read_response();
    assert_eq!(r.body_str(), "abc");
}

#[test]
fn large_streamed_response_to_a_slow_reader() {
    // 8 MB through a client that reads late: the TLS records that did not fit in the
    // socket must still go out once it drains, and the connection stays usable.
    let pki = Pki::new("CA");
    let leaf = pki.issue(&["localhost"], "localhost");
    let server = start_tls(
        TlsConfig::new(leaf.identity()),
        gateway(|req: Request| {
            let head = ResponseHead::new(b("200 OK"), vec![(b("Content-Length"), b("8388608"))]);
            let piece = Bytes::from(vec![b'x'; 64 * 1024]);
            let _ = req.response.blocking_send(ResponseEvent::Head {
                head,
                body: Bytes::new(),
                end: false,
            });
            for _ in 0..128 {
                if req
                    .response
                    .blocking_send(ResponseEvent::Body(piece.clone()))
                    .is_err()
                {
                    return;
                }
            }
            let _ = req.response.blocking_send(ResponseEvent::End);
        }),
    );
    let mut c = connect(&server, &client_config(&pki, &[TlsVersion::Tls13], None));
    c.send(GET);
    std::thread::sleep(Duration::from_millis(300));
    let r = c.read_response();
    assert_eq!(r.body.len(), 8 << 20);
    c.send(GET);
    assert_eq!(c.read_response().body.len(), 8 << 20);
}

#[test]
fn file_responses_fall_back_to_writes() {
    let pki = Pki::new("CA");
    let leaf = pki.issue(&["localhost"], "localhost");
    let path = std::env::temp_dir().join(format!("stogie-tls-file-{}", std::process::id()));
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 256) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    let p = path.clone();
    let server = start_tls(
        TlsConfig::new(leaf.identity()),
        gateway(move |req: Request| {
            assert!(!req.can_sendfile);
            let head = ResponseHead::new(b("200 OK"), vec![(b("Content-Length"), b("100000"))]);
            let _ = req.response.blocking_send(ResponseEvent::Head {
                head,
                body: Bytes::new(),
                end: false,
            });
            let file = std::fs::File::open(&p).unwrap();
            let _ = req.response.blocking_send(ResponseEvent::File {
                file,
                offset: 50_000,
                len: Some(100_000),
            });
            let _ = req.response.blocking_send(ResponseEvent::End);
        }),
    );
    let mut c = connect(&server, &client_config(&pki, &[TlsVersion::Tls12], None));
    c.send(GET);
    let r = c.read_response();
    assert!(r.body == content[50_000..150_000]);
    let _ = std::fs::remove_file(path);
}

#[test]
fn unix_socket_tls() {
    let pki = Pki::new("CA");
    let leaf = pki.issue(&["localhost"], "localhost");
    let path = std::env::temp_dir().join(format!("stogie-tls-{}.sock", std::process::id()));
    let server = start_tls_on(
        &BindAddr::Unix(path.clone()),
        TlsConfig::new(leaf.identity()),
        5,
        environ_gateway(),
    );
    assert!(matches!(server.server.local_addr(), LocalAddr::Unix(_)));
    let sock = UnixStream::connect(&path).unwrap();
    sock.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let cfg = client_config(&pki, &[TlsVersion::Tls13], None);
    let mut c = Client::new(tls_over(&cfg, "localhost", sock));
    c.send(GET);
    let r = c.read_response();
    assert_eq!(var(&r, "SSL_PROTOCOL").as_deref(), Some("TLSv1.3"));
}

#[test]
fn plain_http_on_the_tls_port_gets_a_400_at_once() {
    let pki = Pki::new("CA");
    let leaf = pki.issue(&["localhost"], "localhost");
    let server = start_tls_on(
        &BindAddr::Tcp("127.0.0.1".into(), 0),
        TlsConfig::new(leaf.identity()),
        30,
        hello_gateway(),
    );
    let started = Instant::now();
    let mut c = Client::tcp(server.addr());
    c.send(GET);
    let r = c.read_response();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(r.code(), 400);
    assert_eq!(
        r.body_str(),
        "The client sent a plain HTTP request, but this server only speaks HTTPS on this port."
    );
    assert!(r.header("Content-Type").unwrap().starts_with("text/plain"));
    c.expect_closed();
    // The server goes on serving HTTPS.
    let mut c = connect(&server, &client_config(&pki, &[TlsVersion::Tls13], None));
    c.send(GET);
    assert_eq!(c.read_response().code(), 200);
}

#[test]
fn garbage_and_truncated_handshakes_are_closed_and_harmless() {
    let pki = Pki::new("CA");
    let leaf = pki.issue(&["localhost"], "localhost");
    let server = start_tls_on(
        &BindAddr::Tcp("127.0.0.1".into(), 0),
        TlsConfig::new(leaf.identity()),
        30,
        hello_gateway(),
    );
    // Not a TLS record at all: closed at once.
    let mut s = tcp(server.addr());
    s.write_all(&[0x00, 0xff, 0x13, 0x37]).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    assert!(started.elapsed() < Duration::from_secs(2));
    // A handshake record with nonsense inside: an alert, then the close.
    let mut s = tcp(server.addr());
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00])
        .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        got.is_empty() || got[0] == 0x15,
        "an alert or nothing: {got:?}"
    );
    // A client that stops mid-handshake and leaves.
    let mut s = tcp(server.addr());
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    drop(s);
    let mut c = connect(&server, &client_config(&pki, &[TlsVersion::Tls13], None));
    c.send(GET);
    assert_eq!(c.read_response().code(), 200);
}

#[test]
fn stalled_handshakes_delay_nobody_and_time_out() {
    let pki = Pki::new("CA");
    let leaf = pki.issue(&["localhost"], "localhost");
    let server = start_tls_on(
        &BindAddr::Tcp("127.0.0.1".into(), 0),
        TlsConfig::new(leaf.identity()),
        2,
        hello_gateway(),
    );
    // Silent clients, and clients that sent half a ClientHello.
    let mut stalled = Vec::new();
    for i in 0..200 {
        let mut s = tcp(server.addr());
        if i % 2 == 1 {
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
                .unwrap();
        }
        stalled.push(s);
    }
    let cfg = client_config(&pki, &[TlsVersion::Tls13], None);
    let started = Instant::now();
    let mut c = connect(&server, &cfg);
    c.send(GET);
    assert_eq!(c.read_response().code(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "served in {:?} behind stalled handshakes",
        started.elapsed()
    );
    // The server's timeout ends them.
    let mut s = stalled.pop().unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let _ = s.read(&mut buf);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(4), "closed after {waited:?}");
}

#[test]
fn client_certificates_required() {
    let pki = Pki::new("Client CA");
    let leaf = pki.issue(&["localhost"], "localhost");
    let mut cfg = TlsConfig::new(leaf.identity());
    cfg.client_auth = ClientAuth::Required(vec![pki.ca_der()]);
    let server = start_tls(cfg, environ_gateway());
    let alice = pki.issue_with(&["alice.example"], "alice", |p| {
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, "Eng");
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, "Ops");
        p.subject_alt_names.push(rcgen::SanType::Rfc822Name(
            "alice@example.com".try_into().unwrap(),
        ));
    });
    for version in [TlsVersion::Tls13, TlsVersion::Tls12] {
        let mut c = connect(&server, &client_config(&pki, &[version], Some(&alice)));
        c.send(GET);
        let r = c.read_response();
        assert_eq!(var(&r, "SSL_CLIENT_VERIFY").as_deref(), Some("SUCCESS"));
        assert_eq!(var(&r, "SSL_CLIENT_S_DN_CN").as_deref(), Some("alice"));
        assert_eq!(var(&r, "SSL_CLIENT_S_DN_OU").as_deref(), Some("Ops"));
        assert_eq!(
            var(&r, "SSL_CLIENT_S_DN").as_deref(),
            Some("CN=alice,C=UA,O=Stogie Test,OU=Ops")
        );
        assert_eq!(var(&r, "SSL_CLIENT_I_DN_CN").as_deref(), Some("Client CA"));
        assert_eq!(
            var(&r, "SSL_CLIENT_SAN_DNS_0").as_deref(),
            Some("alice.example")
        );
        assert_eq!(
            var(&r, "SSL_CLIENT_SAN_Email_0").as_deref(),
            Some("alice@example.com")
        );
        assert!(var(&r, "SSL_CLIENT_V_END").is_some_and(|v| v.ends_with(" GMT")));
        assert!(r
            .body_str()
            .contains("SSL_CLIENT_CERT=-----BEGIN CERTIFICATE-----"));
    }
    // Without a certificate, or with one from another CA: no handshake.
    let stranger = Pki::new("Other CA").issue(&["x"], "mallory");
    for client in [None, Some(&stranger)] {
        let cfg = client_config(&pki, &[TlsVersion::Tls13], client);
        let server_name = ServerName::try_from("localhost").unwrap();
        let mut conn = ClientConnection::new(cfg, server_name).unwrap();
        let mut sock = tcp(server.addr());
        let mut failed = false;
        for _ in 0..20 {
            match conn.complete_io(&mut sock) {
                Err(_) => {
                    failed = true;
                    break;
                }
                Ok(_) if !conn.is_handshaking() => {
                    // TLS 1.3: the client finishes first; the refusal comes with the next read.
                    let _ = conn.writer().write_all(GET.as_bytes());
                    let _ = conn.complete_io(&mut sock);
                    let mut buf = [0u8; 64];
                    failed = conn.complete_io(&mut sock).is_err()
                        || matches!(conn.reader().read(&mut buf), Err(_) | Ok(0));
                    break;
                }
                Ok(_) => {}
            }
        }
        assert!(failed, "a client without a valid certificate was served");
    }
}

/// A handshake with `client` (TLS 1.3, so that the refusal comes after the client's
/// Finished: read until it does). True when the server refused it.
fn refused(server: &TestServer, pki: &Pki, client: Option<&Leaf>) -> bool {
    let cfg = client_config(pki, &[TlsVersion::Tls13], client);
    let server_name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(cfg, server_name).unwrap();
    let mut sock = tcp(server.addr());
    for _ in 0..20 {
        match conn.complete_io(&mut sock) {
            Err(_) => return true,
            Ok(_) if !conn.is_handshaking() => {
                let _ = conn.writer().write_all(GET.as_bytes());
                let _ = conn.complete_io(&mut sock);
                let mut buf = [0u8; 64];
                return conn.complete_io(&mut sock).is_err()
                    || matches!(conn.reader().read(&mut buf), Err(_) | Ok(0));
            }
            Ok(_) => {}
        }
    }
    false
}

fn wait_for_warnings(log: &Lines, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.warnings().len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    log.warnings()
}

#[test]
fn refused_client_certificates_are_warnings_that_say_why() {
    let pki = Pki::new("Client CA");
    let leaf = pki.issue(&["localhost"], "localhost");
    let mut cfg = TlsConfig::new(leaf.identity());
    cfg.client_auth = ClientAuth::Required(vec![pki.ca_der()]);
    let log = Arc::new(Lines::default());
    let server = start_tls_logged(cfg, log.clone());
    let stranger = Pki::new("Other CA").issue(&["x"], "mallory");
    let expired = pki.issue_with(&["x"], "old", |p| {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    let future = pki.issue_with(&["x"], "future", |p| {
        p.not_before = rcgen::date_time_ymd(2999, 1, 1);
        p.not_after = rcgen::date_time_ymd(3000, 1, 1);
    });
    let server_only = pki.issue_with(&["x"], "server-only", |p| {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    });
    let cases: [(Option<&Leaf>, &str); 5] = [
        (
            Some(&stranger),
            "it is not signed by a CA the server trusts for client certificates (unknown issuer)",
        ),
        (Some(&expired), "it expired on Jan  1 00:00:00 2001 GMT"),
        (
            Some(&future),
            "it is not valid before Jan  1 00:00:00 2999 GMT",
        ),
        (
            Some(&server_only),
            "it is not valid for client authentication",
        ),
        (None, "it sent no certificate, and one is required"),
    ];
    for (i, (client, why)) in cases.iter().enumerate() {
        assert!(refused(&server, &pki, *client), "case {i} was served");
        let warnings = wait_for_warnings(&log, i + 1);
        assert_eq!(warnings.len(), i + 1, "{warnings:?}");
        let line = &warnings[i];
        let who = if client.is_some() {
            "client certificate from 127.0.0.1:"
        } else {
            "client 127.0.0.1:"
        };
        assert!(line.starts_with(who), "{line}");
        assert!(line.contains(&format!(" refused: {why}")), "{line}");
    }
    // A good certificate is still served, and logs nothing.
    let alice = pki.issue(&["alice"], "alice");
    let mut c = connect(
        &server,
        &client_config(&pki, &[TlsVersion::Tls13], Some(&alice)),
    );
    c.send(GET);
    assert_eq!(
        var(&c.read_response(), "SSL_CLIENT_S_DN_CN").as_deref(),
        Some("alice")
    );
    assert_eq!(log.warnings().len(), cases.len());
}

#[test]
fn refusals_are_rate_limited_per_reason_and_address() {
    let pki = Pki::new("Client CA");
    let leaf = pki.issue(&["localhost"], "localhost");
    let mut cfg = TlsConfig::new(leaf.identity());
    cfg.client_auth = ClientAuth::Required(vec![pki.ca_der()]);
    cfg.refusal_log_interval = Duration::from_secs(2);
    let log = Arc::new(Lines::default());
    let server = start_tls_logged(cfg, log.clone());
    let stranger = Pki::new("Other CA").issue(&["x"], "mallory");
    let started = Instant::now();
    for _ in 0..30 {
        assert!(refused(&server, &pki, Some(&stranger)));
    }
    // Another reason from the same address has a line of its own.
    assert!(refused(&server, &pki, None));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "too slow to test the window"
    );
    let warnings = wait_for_warnings(&log, 2);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("unknown issuer"), "{warnings:?}");
    assert!(warnings[1].contains("sent no certificate"), "{warnings:?}");
    std::thread::sleep(
        Duration::from_secs(2).saturating_sub(started.elapsed()) + Duration::from_millis(100),
    );
    assert!(refused(&server, &pki, Some(&stranger)));
    let warnings = wait_for_warnings(&log, 3);
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings[2].ends_with("(unknown issuer) (and 29 more like it since the last such line)"),
        "{}",
        warnings[2]
    );
}

#[test]
fn client_certificates_optional() {
    let pki = Pki::new("Client CA");
    let leaf = pki.issue(&["localhost"], "localhost");
    let mut cfg = TlsConfig::new(leaf.identity());
    cfg.client_auth = ClientAuth::Optional(vec![pki.ca_der()]);
    let server = start_tls(cfg, environ_gateway());
    let bob = pki.issue(&["bob"], "bob");
    let mut c = connect(
        &server,
        &client_config(&pki, &[TlsVersion::Tls13], Some(&bob)),
    );
    c.send(GET);
    let r = c.read_response();
    assert_eq!(var(&r, "SSL_CLIENT_VERIFY").as_deref(), Some("SUCCESS"));
    assert_eq!(var(&r, "SSL_CLIENT_S_DN_CN").as_deref(), Some("bob"));
    let mut c = connect(&server, &client_config(&pki, &[TlsVersion::Tls13], None));
    c.send(GET);
    let r = c.read_response();
    assert_eq!(var(&r, "SSL_CLIENT_VERIFY").as_deref(), Some("NONE"));
    assert!(var(&r, "SSL_CLIENT_S_DN").is_none());
}

#[test]
fn reload_serves_new_handshakes_with_the_new_certificate() {
    let pki = Pki::new("CA");
    let first = pki.issue(&["localhost"], "first");
    let second = pki.issue(&["localhost"], "second");
    let server = start_tls(TlsConfig::new(first.identity()), environ_gateway());
    let cfg = client_config(&pki, &[TlsVersion::Tls13], None);
    let mut old = connect(&server, &cfg);
    old.send(GET);
    assert_eq!(
        var(&old.read_response(), "SSL_SERVER_S_DN_CN").as_deref(),
        Some("first")
    );

    let acceptor = server.server.tls().unwrap();
    // A bad pair changes nothing.
    let mismatched = Identity::from_pem(
        second.cert_pem.as_bytes(),
        "second.pem",
        first.key_pem.as_bytes(),
        "first.key",
    )
    .unwrap();
    let err = acceptor.reload(mismatched).unwrap_err().to_string();
    assert!(err.contains("does not match"), "{err}");
    assert_eq!(acceptor.current_chain()[0], first.der);

    acceptor.reload(second.identity()).unwrap();
    // A new client: one with a session ticket would resume without a certificate.
    let mut new = connect(&server, &client_config(&pki, &[TlsVersion::Tls13], None));
    new.send(GET);
    assert_eq!(
        var(&new.read_response(), "SSL_SERVER_S_DN_CN").as_deref(),
        Some("second")
    );
    assert_eq!(new.stream.conn.peer_certificates().unwrap()[0], second.der);
    // The open connection goes on.
    old.send(GET);
    assert_eq!(old.read_response().code(), 200);
}

#[test]
fn sessions_resume() {
    let pki = Pki::new("CA");
    let leaf = pki.issue(&["localhost"], "localhost");
    let server = start_tls(TlsConfig::new(leaf.identity()), environ_gateway());
    for version in [TlsVersion::Tls13, TlsVersion::Tls12] {
        let cfg = client_config(&pki, &[version], None);
        let mut seen = Vec::new();
        for _ in 0..2 {
            let mut c = connect(&server, &cfg);
            c.send(GET);
            let r = c.read_response();
            seen.push(var(&r, "SSL_SESSION_RESUMED").unwrap());
            // TLS 1.3 tickets come after the handshake: read them before leaving.
            c.stream.conn.send_close_notify();
            let _ = c.stream.flush();
        }
        assert_eq!(seen, ["Initial", "Resumed"], "{version:?}");
    }
}

#[test]
fn cipher_and_version_settings() {
    let pki = Pki::new("CA");
    let leaf = pki.issue(&["localhost"], "localhost");
    let mut cfg = TlsConfig::new(leaf.identity());
    cfg.cipher_suites = Some(vec![
        "ECDHE-ECDSA-CHACHA20-POLY1305".into(),
        "DHE-RSA-AES256-SHA".into(),
        "TLS_AES_128_GCM_SHA256".into(),
    ]);
    let server = start_tls(cfg, environ_gateway());
    let mut c = connect(&server, &client_config(&pki, &[TlsVersion::Tls12], None));
    c.send(GET);
    let r = c.read_response();
    assert_eq!(
        var(&r, "SSL_CIPHER").as_deref(),
        Some("ECDHE-ECDSA-CHACHA20-POLY1305")
    );
    assert_eq!(var(&r, "SSL_CIPHER_ALGKEYSIZE").as_deref(), Some("256"));
    let mut c = connect(&server, &client_config(&pki, &[TlsVersion::Tls13], None));
    c.send(GET);
    assert_eq!(
        var(&c.read_response(), "SSL_CIPHER").as_deref(),
        Some("TLS_AES_128_GCM_SHA256")
    );

    // TLS 1.3 only: a TLS 1.2 client is refused.
    let mut cfg = TlsConfig::new(leaf.identity());
    cfg.min_version = TlsVersion::Tls13;
    let server = start_tls(cfg, hello_gateway());
    let client = client_config(&pki, &[TlsVersion::Tls12], None);
    let mut conn =
        ClientConnection::new(client, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut sock = tcp(server.addr());
    assert!(
        (0..10).any(|_| conn.complete_io(&mut sock).is_err()),
        "a TLS 1.2 client got through"
    );

    // A selection with nothing for an enabled version is refused, naming it.
    let mut cfg = TlsConfig::new(leaf.identity());
    cfg.cipher_suites = Some(vec!["DHE-RSA-AES256-GCM-SHA384".into()]);
    let err = TlsAcceptor::new(cfg).unwrap_err().to_string();
    assert!(
        err.contains("TLS 1.2") && err.contains("DHE-RSA-AES256-GCM-SHA384"),
        "{err}"
    );
    let mut cfg = TlsConfig::new(leaf.identity());
    cfg.min_version = TlsVersion::Tls13;
    cfg.max_version = TlsVersion::Tls12;
    assert!(TlsAcceptor::new(cfg).is_err());
}

#[test]
fn certificate_and_key_errors_name_the_file() {
    let pki = Pki::new("CA");
    let a = pki.issue(&["localhost"], "a");
    let b_ = pki.issue(&["localhost"], "b");
    let mismatched = Identity::from_pem(
        a.cert_pem.as_bytes(),
        "a.pem",
        b_.key_pem.as_bytes(),
        "b.key",
    )
    .unwrap();
    let err = TlsAcceptor::new(TlsConfig::new(mismatched))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "b.key: the private key does not match the certificate in a.pem"
    );

    let err = Identity::from_pem(b"", "empty.pem", a.key_pem.as_bytes(), "a.key")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("empty.pem: no certificate found"), "{err}");
    let err = Identity::from_pem(
        a.cert_pem.as_bytes(),
        "a.pem",
        a.cert_pem.as_bytes(),
        "a.pem",
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("a.pem: no private key found"), "{err}");
    let encrypted =
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let err = Identity::from_pem(
        a.cert_pem.as_bytes(),
        "a.pem",
        encrypted.as_bytes(),
        "enc.key",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("enc.key: the private key is encrypted"),
        "{err}"
    );
    let broken = a.cert_pem.replace("MII", "MIX");
    let err = Identity::from_pem(
        broken.as_bytes(),
        "broken.pem",
        a.key_pem.as_bytes(),
        "a.key",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("broken.pem: the certificate is malformed"),
        "{err}"
    );
    let expired = pki.issue_with(&["localhost"], "old", |p| {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    let err = Identity::from_pem(
        expired.cert_pem.as_bytes(),
        "old.pem",
        expired.key_pem.as_bytes(),
        "old.key",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "old.pem: the certificate expired on Jan  1 00:00:00 2001 GMT"
    );
    // What `openssl x509 -req -signkey` makes without extensions: X.509 version 1.
    let err = Identity::from_pem(V1_CERT.as_bytes(), "v1.pem", V1_KEY.as_bytes(), "v1.key")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("v1.pem: the certificate is X.509 version 1 "),
        "{err}"
    );
    assert!(
        err.contains(stogie_http::transport::tls::MAKE_V3_CERTIFICATE),
        "{err}"
    );
    let err = Identity::from_files(std::path::Path::new("/nonexistent/cert.pem"), None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("certificate file /nonexistent/cert.pem: cannot be read"),
        "{err}"
    );
}

/// A self-signed X.509 version 1 certificate (valid for a century) and its key, made with
/// `openssl req -new` and `openssl x509 -req -signkey` (a test key, nothing else).
const V1_CERT: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBJzCBzQIUeSWW41XbIi4fxXqhJEJ7DG9IM2owCgYIKoZIzj0EAwIwFTETMBEG\n\
A1UEAwwKdjEuZXhhbXBsZTAgFw0yNjEyMDcxNzE2NDFaGA8yMTI2MTExMzE3MTY0\n\
MVowFTETMBEGA1UEAwwKdjEuZXhhbXBsZTBZMBMGByqGSM49AgEGCCqGSM49AwEH\n\
A0IABNcKeAX0rClJHaUJqSwHPJYbkZ39j7Opmytip840Mzy5GI+Wzd1VbLALmr9U\n\
NDYJEwFzfGDC09NBjP2+kFkjzJcwCgYIKoZIzj0EAwIDSQAwRgIhAL2RxbYEU4I6\n\
E3I12qj7ScnWdhD/yU5k/Jtsxy6rJkytAiEAqi3jFLbTMzTeRwBM2fizGfJkendV\n\
LdYtjjPn2T17NOc=\n\
-----END CERTIFICATE-----\n\
";
const V1_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg1J1E1kuBy8rrJGE7\n\
hTmP3UMEhjCY8nZn+C8ynGcYv12hRANCAATXCngF9KwpSR2lCaksBzyWG5Gd/Y+z\n\
qZsrYqfONDM8uRiPls3dVWywC5q/VDQ2CRMBc3xgwtPTQYz9vpBZI8yX\n\
-----END PRIVATE KEY-----\n\
";

#[test]
fn key_formats_and_chain_bundles() {
    let pki = Pki::new("Root CA");
    // An intermediate CA between the root and the server.
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Intermediate CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let inter = CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &pki.ca).unwrap();
    for alg in [
        &rcgen::PKCS_ED25519,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ECDSA_P256_SHA256,
    ] {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "leaf");
        let cert = params.signed_by(&key, &inter).unwrap();
        let bundle = format!("{}{}", inter.pem(), pki.ca_pem());
        let identity = Identity::from_pem(
            cert.pem().as_bytes(),
            "leaf.pem",
            key.serialize_pem().as_bytes(),
            "leaf.key",
        )
        .unwrap()
        .with_chain(bundle.as_bytes(), "chain.pem")
        .unwrap();
        assert_eq!(
            identity.chain().len(),
            2,
            "the leaf and the intermediate, not the root"
        );
        let server = start_tls(TlsConfig::new(identity), hello_gateway());
        let mut c = connect(&server, &client_config(&pki, &[TlsVersion::Tls13], None));
        c.send(GET);
        assert_eq!(c.read_response().code(), 200, "{alg:?}");
    }
    // An EC key in SEC1 form ("BEGIN EC PRIVATE KEY"), from its PKCS#8 DER.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &pki.ca)
        .unwrap();
    let sec1 = sec1_from_pkcs8(&key.serialize_der());
    let pem = pem_block("EC PRIVATE KEY", &sec1);
    let identity =
        Identity::from_pem(cert.pem().as_bytes(), "c.pem", pem.as_bytes(), "sec1.key").unwrap();
    let server = start_tls(TlsConfig::new(identity), hello_gateway());
    let mut c = connect(&server, &client_config(&pki, &[TlsVersion::Tls12], None));
    c.send(GET);
    assert_eq!(c.read_response().code(), 200);
}

/// The ECPrivateKey inside a PKCS#8 PrivateKeyInfo: the OCTET STRING after the version and
/// the algorithm (test-only DER walking; the server side uses real parsers).
fn sec1_from_pkcs8(der: &[u8]) -> Vec<u8> {
    fn tlv(d: &[u8]) -> (usize, usize) {
        let len0 = d[1] as usize;
        if len0 < 0x80 {
            (2, len0)
        } else {
            let n = len0 & 0x7f;
            let len = d[2..2 + n].iter().fold(0usize, |a, &b| a << 8 | b as usize);
            (2 + n, len)
        }
    }
    let (h, _) = tlv(der);
    let mut rest = &der[h..];
    for _ in 0..2 {
        let (h, l) = tlv(rest);
        rest = &rest[h + l..];
    }
    let (h, l) = tlv(rest);
    rest[h..h + l].to_vec()
}

fn pem_block(label: &str, der: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in der.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            s.push(if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    let body: String = s
        .as_bytes()
        .chunks(64)
        .map(|l| format!("{}\n", std::str::from_utf8(l).unwrap()))
        .collect();
    format!("-----BEGIN {label}-----\n{body}-----END {label}-----\n")
}

#[test]
fn a_tls_client_that_leaves_without_close_notify_costs_nothing() {
    let pki = Pki::new("CA");
    let leaf = pki.issue(&["localhost"], "localhost");
    let seen = Arc::new(Mutex::new(0));
    let counter = seen.clone();
    let server = start_tls(
        TlsConfig::new(leaf.identity()),
        gateway(move |req: Request| {
            *counter.lock().unwrap() += 1;
            respond(&req, "200 OK", b("ok"));
        }),
    );
    let cfg = client_config(&pki, &[TlsVersion::Tls13], None);
    for _ in 0..20 {
        let mut c = connect(&server, &cfg);
        c.send(GET);
        assert_eq!(c.read_response().code(), 200);
        // Dropped: the TCP connection closes without a close_notify.
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.server.stats().snapshot().active_connections > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.server.stats().snapshot().active_connections, 0);
    assert_eq!(*seen.lock().unwrap(), 20);
}

#[test]
fn parked_tls_connections_answer_their_next_requests() {
    // Idle past the moment a connection parks (its task ends; the lot watches the socket):
    // the next request, and a pipelined pair, still come through rustls.
    let pki = Pki::new("CA");
    let leaf = pki.issue(&["localhost"], "localhost");
    let server = start_tls(TlsConfig::new(leaf.identity()), hello_gateway());
    let mut c = connect(&server, &client_config(&pki, &[TlsVersion::Tls13], None));
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        c.send(GET.repeat(round + 1));
        for _ in 0..=round {
            assert_eq!(c.read_response().body_str(), "hello");
        }
    }
    assert_eq!(server.server.stats().snapshot().active_connections, 1);
}
