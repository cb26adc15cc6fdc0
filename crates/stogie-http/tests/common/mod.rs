//! Shared helpers for the integration tests: a Rust gateway that answers on plain threads,
//! a server start helper, and a small blocking HTTP/1.1 client over real sockets.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stogie_http::{
    BindAddr, EngineOptions, Gateway, HttpServer, ListenOptions, Listener, LiveConfig, LocalAddr,
    Request, ResponseEvent, ResponseHead, ServerConfig, Stats, StderrLog,
};

/// How long any client read may block: no test can hang on a silent server.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A gateway that runs `handler` on a new thread for every request.
pub struct ThreadGateway<F> {
    handler: Arc<F>,
    queue_timeout: Duration,
}

impl<F> Gateway for ThreadGateway<F>
where
    F: Fn(Request) + Send + Sync + 'static,
{
    fn dispatch(&self, request: Request) -> Result<(), Request> {
        let handler = self.handler.clone();
        std::thread::Builder::new()
            .name("test-gateway".into())
            .spawn(move || handler(request))
            .expect("spawn a gateway thread");
        Ok(())
    }

    fn queue_timeout(&self) -> Duration {
        self.queue_timeout
    }
}

/// A gateway whose queue is always full.
pub struct FullGateway {
    pub queue_timeout: Duration,
}

impl Gateway for FullGateway {
    fn dispatch(&self, request: Request) -> Result<(), Request> {
        Err(request)
    }

    fn queue_timeout(&self) -> Duration {
        self.queue_timeout
    }
}

pub fn gateway<F>(handler: F) -> ThreadGateway<F>
where
    F: Fn(Request) + Send + Sync + 'static,
{
    ThreadGateway {
        handler: Arc::new(handler),
        queue_timeout: Duration::from_secs(10),
    }
}

/// A running server, stopped when dropped.
pub struct TestServer {
    pub server: HttpServer,
}

impl TestServer {
    pub fn addr(&self) -> SocketAddr {
        match self.server.local_addr() {
            LocalAddr::Tcp(a) => *a,
            other => panic!("not a TCP server: {other:?}"),
        }
    }

    pub fn connect(&self) -> Client {
        Client::tcp(self.addr())
    }

    pub fn stop(&mut self, grace: Duration) -> bool {
        self.server.stop(grace)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.stop(Duration::from_secs(1));
    }
}

/// A configuration with a short timeout, so that tests which wait on one stay fast.
pub fn config() -> ServerConfig {
    config_with_timeout(5)
}

/// The test configuration with `timeout` set to `secs`.
pub fn config_with_timeout(secs: u64) -> ServerConfig {
    ServerConfig {
        timeout: Duration::from_secs(secs),
        ..ServerConfig::default()
    }
}

pub fn start_on(bind: &BindAddr, cfg: ServerConfig, gw: impl Gateway) -> TestServer {
    let listener = Listener::bind(bind, ListenOptions::default()).expect("bind");
    start_listener(listener, cfg, gw)
}

pub fn start_listener(listener: Listener, cfg: ServerConfig, gw: impl Gateway) -> TestServer {
    let server = HttpServer::start(
        listener,
        LiveConfig::new(cfg),
        Arc::new(gw),
        Arc::new(StderrLog),
        Arc::new(Stats::default()),
        EngineOptions::default(),
    )
    .expect("start the server");
    TestServer { server }
}

pub fn start_with(cfg: ServerConfig, gw: impl Gateway) -> TestServer {
    start_on(&BindAddr::Tcp("127.0.0.1".into(), 0), cfg, gw)
}

pub fn start(gw: impl Gateway) -> TestServer {
    start_with(config(), gw)
}

pub fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

pub fn head(status: &'static str, headers: &[(&'static str, &'static str)]) -> ResponseHead {
    ResponseHead::new(status, headers.iter().copied())
}

/// Sends a complete response with a Content-Length in one event.
pub fn respond(req: &Request, status: &'static str, body: impl Into<Bytes>) {
    let body = body.into();
    let len = Bytes::from(body.len().to_string());
    let head = ResponseHead::new(
        b(status),
        vec![
            (b("Content-Type"), b("text/plain")),
            (b("Content-Length"), len),
        ],
    );
    let _ = req.response.blocking_send(ResponseEvent::Head {
        head,
        body,
        end: true,
    });
}

/// Reads the whole request body.
pub fn read_body(req: &mut Request) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(piece) = req.body.blocking_next() {
        all.extend_from_slice(&piece.expect("body read failed"));
    }
    all
}

/// Answers every request with `hello` and a Content-Length.
pub fn hello_gateway() -> impl Gateway {
    gateway(|req: Request| respond(&req, "200 OK", b("hello")))
}

/// Answers with the request body (fully read first), plus the method and target in headers.
pub fn echo_gateway() -> impl Gateway {
    gateway(|mut req: Request| {
        let body = read_body(&mut req);
        let method = Bytes::copy_from_slice(&req.head.method);
        let target = Bytes::copy_from_slice(&req.head.target);
        let head = ResponseHead::new(
            b("200 OK"),
            vec![
                (b("Content-Length"), Bytes::from(body.len().to_string())),
                (b("X-Method"), method),
                (b("X-Target"), target),
            ],
        );
        let _ = req.response.blocking_send(ResponseEvent::Head {
            head,
            body: Bytes::from(body),
            end: true,
        });
    })
}

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The raw head, exactly as received.
    pub raw_head: String,
    /// Whether the body was chunked.
    pub chunked: bool,
}

impl Response {
    pub fn code(&self) -> u16 {
        self.status_line[9..12].parse().expect("status code")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub trait Stream: Read + Write {
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Stream for TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Stream for UnixStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// A blocking client that keeps bytes read past one response for the next.
pub struct Client<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

impl Client<TcpStream> {
    pub fn tcp(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client::new(stream)
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }
}

impl Client<UnixStream> {
    pub fn unix(stream: UnixStream) -> Self {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        Client::new(stream)
    }
}

impl<S: Stream> Client<S> {
    pub fn new(stream: S) -> Self {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, data: impl AsRef<[u8]>) {
        self.stream.write_all(data.as_ref()).expect("send");
    }

    pub fn shutdown_write(&self) {
        self.stream.shutdown_write().expect("shutdown(Write)");
    }

    /// Reads more bytes into the buffer; 0 at EOF. Panics on a timeout.
    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 64 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                n
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!(
                "read failed ({e}); got so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            if self.fill() == 0 {
                panic!(
                    "connection closed {} bytes short; have {:?}",
                    n - self.buf.len(),
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
        self.buf.drain(..n).collect()
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.take(pos + 2);
                return String::from_utf8(line[..pos].to_vec()).expect("utf-8 line");
            }
            if self.fill() == 0 {
                panic!(
                    "connection closed in the middle of a line: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        self.take(n)
    }

    /// Reads one response head (status line and headers).
    pub fn read_head(&mut self) -> (String, Vec<(String, String)>, String) {
        let status_line = self.line();
        let mut raw = format!("{status_line}\r\n");
        let mut headers = Vec::new();
        loop {
            let line = self.line();
            raw.push_str(&line);
            raw.push_str("\r\n");
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':').expect("header line has a colon");
            headers.push((n.to_string(), v.trim().to_string()));
        }
        (status_line, headers, raw)
    }

    /// Reads one response to a request that was not HEAD.
    pub fn read_response(&mut self) -> Response {
        self.read_response_to(false)
    }

    /// Reads one response; `no_body` for HEAD requests (and 1xx/204/304 answers).
    pub fn read_response_to(&mut self, head_request: bool) -> Response {
        let (status_line, headers, raw_head) = self.read_head();
        assert!(
            status_line.starts_with("HTTP/1."),
            "bad status line {status_line:?}"
        );
        let mut resp = Response {
            status_line,
            headers,
            body: Vec::new(),
            raw_head,
            chunked: false,
        };
        let code = resp.code();
        if head_request || code < 200 || code == 204 || code == 304 {
            return resp;
        }
        let te = resp.header("Transfer-Encoding").map(str::to_owned);
        let cl = resp.header("Content-Length").map(str::to_owned);
        if let Some(te) = te {
            assert_eq!(te, "chunked");
            resp.chunked = true;
            loop {
                let size_line = self.line();
                let size = usize::from_str_radix(size_line.split(';').next().unwrap(), 16)
                    .expect("chunk size");
                if size == 0 {
                    // trailers
                    while !self.line().is_empty() {}
                    break;
                }
                let data = self.take(size);
                resp.body.extend_from_slice(&data);
                assert_eq!(self.take(2), b"\r\n", "chunk data ends with CRLF");
            }
        } else if let Some(cl) = cl {
            let n: usize = cl.parse().expect("Content-Length");
            resp.body = self.take(n);
        } else {
            resp.body = self.read_to_end();
        }
        resp
    }

    /// Reads until the server closes the connection.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill() > 0 {}
        std::mem::take(&mut self.buf)
    }

    /// Asserts that the server closes the connection without sending anything more.
    pub fn expect_closed(&mut self) {
        let rest = self.read_to_end();
        assert!(
            rest.is_empty(),
            "expected the connection to close, got {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// Whether anything (bytes or EOF) arrives within `wait`; restores the read timeout.
    pub fn nothing_within(&mut self, wait: Duration) -> bool
    where
        S: SetTimeout,
    {
        self.stream.set_timeout(wait);
        let mut tmp = [0u8; 1024];
        let quiet = match self.stream.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                false
            }
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        };
        self.stream.set_timeout(READ_TIMEOUT);
        quiet && self.buf.is_empty()
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }
}

pub trait SetTimeout {
    fn set_timeout(&self, t: Duration);
}

impl SetTimeout for TcpStream {
    fn set_timeout(&self, t: Duration) {
        self.set_read_timeout(Some(t)).unwrap();
    }
}

impl SetTimeout for UnixStream {
    fn set_timeout(&self, t: Duration) {
        self.set_read_timeout(Some(t)).unwrap();
    }
}

/// Sends `request` on a new connection and reads everything until the server closes.
pub fn roundtrip_to_close(server: &TestServer, request: impl AsRef<[u8]>) -> (Response, Vec<u8>) {
    let mut c = server.connect();
    c.send(request);
    let resp = c.read_response();
    let rest = c.read_to_end();
    (resp, rest)
}

/// Waits until `cond` holds, for up to `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Checks the shape every engine error answer has.
pub fn assert_error_answer(resp: &Response, code: u16) {
    assert_eq!(resp.code(), code, "{:?}", resp.raw_head);
    assert_eq!(
        resp.header("Content-Type"),
        Some("text/plain; charset=utf-8"),
        "{:?}",
        resp.raw_head
    );
    let cl: usize = resp
        .header("Content-Length")
        .expect("error answers have a Content-Length")
        .parse()
        .unwrap();
    assert_eq!(cl, resp.body.len());
    assert!(!resp.body.is_empty(), "error answers have a text body");
    assert_eq!(resp.header("Connection"), Some("close"));
}
