//! The accept loop and the server's lifecycle: start, graceful stop.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::conn::{self, Open, Shared, Stop};
use crate::exchange::{LocalAddr, PeerAddr, PeerCred};
use crate::listener::Listener;
use crate::metrics::Refusal;
use crate::proxy::{parse_proxy_header, ProxyError, ProxyHeader, TrustedPeers};
use crate::stats::Stats;
use crate::transport::tls::{self, TlsAcceptor};
use crate::transport::Transport;
use crate::{ErrorLog, Gateway, LiveConfig, LogLevel};

/// Options fixed for the server's lifetime.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Threads running the async engine (sockets, parsing, writing).
    pub io_threads: usize,
    /// Read SO_PEERCRED on UNIX sockets.
    pub peercreds: bool,
    /// Serve HTTPS: every connection starts with a TLS handshake.
    pub tls: Option<TlsAcceptor>,
    /// Every connection starts with a PROXY protocol header (v1 or v2), accepted from
    /// these peers only (UNIX socket peers always); anything else is refused.
    pub proxy_protocol: Option<TrustedPeers>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            io_threads: 1,
            peercreds: false,
            tls: None,
            proxy_protocol: None,
        }
    }
}

/// A running HTTP/1.1 server: listeners, an async runtime, and a gateway behind them.
pub struct HttpServer {
    runtime: Option<Runtime>,
    listeners: Vec<Listener>,
    local: LocalAddr,
    stats: Arc<Stats>,
    config: LiveConfig,
    /// One per listener: each knows its own address.
    shared: Vec<Arc<Shared>>,
    /// For each listener: whether stopping removes its socket file (a UNIX path).
    remove_socket_file: Vec<bool>,
    heartbeat: Arc<Heartbeat>,
}

/// When the engine's runtime last ran a task of its own: a watchdog's proof that the engine
/// is alive, as no request, connection or log line is.
#[derive(Debug)]
struct Heartbeat {
    born: std::time::Instant,
    /// Milliseconds after `born`.
    last: AtomicU64,
}

impl Heartbeat {
    fn beat(&self) {
        self.last
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn age(&self) -> Duration {
        self.born
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// How often the runtime's heartbeat task runs.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);

impl HttpServer {
    /// Starts serving `listener` with `gateway`. Returns once the accept loop runs.
    pub fn start(
        listener: Listener,
        config: LiveConfig,
        gateway: Arc<dyn Gateway>,
        log: Arc<dyn ErrorLog>,
        stats: Arc<Stats>,
        opts: EngineOptions,
    ) -> io::Result<HttpServer> {
        Self::start_many(vec![listener], config, gateway, log, stats, opts)
    }

    /// Starts serving every one of `listeners` (at least one) with one runtime, one gateway
    /// and one set of counters. Returns once the accept loops run.
    pub fn start_many(
        listeners: Vec<Listener>,
        config: LiveConfig,
        gateway: Arc<dyn Gateway>,
        log: Arc<dyn ErrorLog>,
        stats: Arc<Stats>,
        opts: EngineOptions,
    ) -> io::Result<HttpServer> {
        let Some(first) = listeners.first() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no listener to serve",
            ));
        };
        let local = first.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.io_threads.max(1))
            .thread_name("stogie-io")
            .on_thread_park(|| {
                crate::pipe::IO_ASLEEP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
            .on_thread_unpark(|| {
                crate::pipe::IO_ASLEEP.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            })
            .enable_io()
            .enable_time()
            .build()?;
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let heartbeat = Arc::new(Heartbeat {
            born: std::time::Instant::now(),
            last: AtomicU64::new(0),
        });
        let _guard = runtime.enter();
        let mut all_shared = Vec::with_capacity(listeners.len());
        for listener in &listeners {
            let shared = Arc::new(Shared {
                config: config.clone(),
                gateway: gateway.clone(),
                stats: stats.clone(),
                log: log.clone(),
                stop: Stop::default(),
                parked: Arc::default(),
                local: listener.local_addr()?,
                scheme,
                tls: opts.tls.clone(),
                proxy_protocol: opts.proxy_protocol.clone(),
            });
            runtime.spawn(crate::idle::watch(shared.clone()));
            match listener.try_clone()? {
                Listener::Tcp(l) => {
                    let l = tokio::net::TcpListener::from_std(l)?;
                    runtime.spawn(accept_tcp(l, shared.clone()));
                }
                Listener::Unix(l, _) => {
                    let l = tokio::net::UnixListener::from_std(l)?;
                    runtime.spawn(accept_unix(l, shared.clone(), opts.peercreds));
                }
            }
            all_shared.push(shared);
        }
        runtime.spawn(refresh_gauges(all_shared.clone()));
        let beating = heartbeat.clone();
        runtime.spawn(async move {
            loop {
                beating.beat();
                tokio::time::sleep(HEARTBEAT_EVERY).await;
            }
        });
        drop(_guard);
        Ok(HttpServer {
            runtime: Some(runtime),
            listeners,
            local,
            stats,
            config,
            remove_socket_file: vec![true; all_shared.len()],
            shared: all_shared,
            heartbeat,
        })
    }

    /// Whether stopping removes the socket file of a UNIX path listener (the default). Off
    /// in worker processes sharing one inherited listener: one worker stopping must not take
    /// the address away from the others; the process that bound it removes it.
    pub fn set_remove_socket_file(&mut self, remove: bool) {
        self.remove_socket_file.fill(remove);
    }

    /// Leaves the socket file of listener `index` (in the order given to
    /// [`HttpServer::start_many`]) in place on stop: a socket inherited from systemd is
    /// systemd's.
    pub fn keep_socket_file(&mut self, index: usize) {
        if let Some(remove) = self.remove_socket_file.get_mut(index) {
            *remove = false;
        }
    }

    /// The address served (the first listener's).
    pub fn local_addr(&self) -> &LocalAddr {
        &self.local
    }

    /// The live configuration.
    pub fn config(&self) -> &LiveConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The TLS configuration (to reload the certificate), if the server speaks HTTPS.
    pub fn tls(&self) -> Option<&TlsAcceptor> {
        self.shared.first().and_then(|s| s.tls.as_ref())
    }

    /// How long ago the engine's runtime last ran its heartbeat task (every 250 ms while it
    /// runs). A watchdog that pings only while this is short stops pinging when the engine
    /// hangs or has stopped.
    pub fn heartbeat_age(&self) -> Duration {
        self.heartbeat.age()
    }

    /// Brings the gauges of the metrics up to date now (before a scrape served here).
    pub fn refresh_metrics(&self) {
        refresh_now(&self.shared);
    }

    /// The first step of [`HttpServer::stop`], which returns at once: no new connections,
    /// idle ones close, requests in flight go on.
    pub fn stop_accepting(&mut self) {
        if self.runtime.is_none() {
            return;
        }
        for shared in &self.shared {
            shared.stop.set();
        }
        self.close_listeners();
    }

    /// The first step of [`HttpServer::retire`], which returns at once: no new connections,
    /// every response from now on closes its connection, and idle keep-alive connections
    /// stay open until their idle timeout, to answer a request already on its way.
    pub fn drain(&mut self) {
        if self.runtime.is_none() {
            return;
        }
        for shared in &self.shared {
            shared.stop.drain();
        }
        self.close_listeners();
    }

    fn close_listeners(&mut self) {
        // Close the listening sockets now (the accept loops drop their copies as they see
        // the signal): new clients are refused at once instead of waiting in the backlog of
        // a socket nobody accepts on. A socket shared with other processes stays open in
        // them, with the connections waiting in its backlog.
        for (index, listener) in self.listeners.drain(..).enumerate() {
            if self.remove_socket_file.get(index).copied().unwrap_or(false) {
                listener.cleanup();
            }
        }
    }

    /// Stops accepting, lets requests in flight finish for up to `grace`, then closes
    /// everything. Returns whether every connection finished in time.
    pub fn stop(&mut self, grace: Duration) -> bool {
        self.stop_accepting();
        self.finish(grace)
    }

    /// Stops as a worker being replaced does: drains ([`HttpServer::drain`]) for up to
    /// `grace`, so that no client loses a request it has sent or is sending, then closes
    /// whatever is left. Returns whether every connection closed in time.
    pub fn retire(&mut self, grace: Duration) -> bool {
        self.drain();
        self.finish(grace)
    }

    fn finish(&mut self, grace: Duration) -> bool {
        let Some(runtime) = self.runtime.take() else {
            return true;
        };
        let deadline = Instant::now() + grace;
        let mut clean = true;
        while self.stats.snapshot().active_connections > 0 {
            if Instant::now() >= deadline {
                clean = false;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for shared in &self.shared {
            shared.stop.set();
        }
        runtime.shutdown_timeout(Duration::from_millis(200));
        // The last lines reach the log before this returns (the process may exit next).
        if let Some(log) = &self.config.get().access_log {
            log.close();
        }
        // The watcher task may have been dropped before it saw the stop; the connections it
        // watched must close all the same (they hold the server's shared state).
        for shared in &self.shared {
            shared.parked.close_all();
        }
        clean
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

/// Copies what the metrics show of other parts (parked connections, the gateway's load)
/// into the counters every so often, so that a scrape (possibly by another process) reads
/// them without asking anyone.
async fn refresh_gauges(shared: Vec<Arc<Shared>>) {
    let Some(first) = shared.first().cloned() else {
        return;
    };
    loop {
        let stopped = first.stop.notified();
        if first.stop.is_set() {
            return;
        }
        refresh_now(&shared);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stopped => return,
        }
    }
}

/// `shared`: one per listener, all with the same counters and gateway.
fn refresh_now(shared: &[Arc<Shared>]) {
    let Some(first) = shared.first() else {
        return;
    };
    let metrics = first.stats.metrics();
    metrics.set_parked(shared.iter().map(|s| s.parked.len()).sum());
    let (queued, busy, threads) = first.gateway.load();
    metrics.set_load(queued, busy, threads);
}

fn accept_failed(shared: &Shared, err: &io::Error) -> Duration {
    // Out of descriptors or memory: back off instead of spinning; the listener stays.
    shared
        .log
        .log(LogLevel::Warning, &format!("accept() failed: {err}"));
    Duration::from_millis(50)
}

/// Serves an accepted connection on its own task, counted as open until the task ends. A
/// PROXY protocol header and a TLS handshake happen in that task too.
fn spawn_connection<S: Transport>(shared: &Arc<Shared>, stream: S, peer: PeerAddr) {
    shared.stats.add_accept();
    shared.stats.open();
    let open = Open(shared.stats.clone());
    if shared.proxy_protocol.is_none() {
        match &shared.tls {
            Some(acceptor) => {
                tokio::spawn(tls::serve(
                    acceptor.clone(),
                    stream,
                    peer,
                    shared.clone(),
                    open,
                ));
            }
            None => {
                tokio::spawn(conn::serve(stream, peer, shared.clone(), open));
            }
        }
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut stream = stream;
        match read_proxy_header(&mut stream, &peer, &shared).await {
            Ok(peer) => match shared.tls.clone() {
                // The PROXY header comes before the TLS handshake, in plain text.
                Some(acceptor) => tls::serve(acceptor, stream, peer, shared, open).await,
                None => conn::serve(stream, peer, shared, open).await,
            },
            Err((refusal, why)) => {
                if let Some(refusal) = refusal {
                    shared.stats.metrics().refused(refusal);
                }
                shared.log.log(
                    LogLevel::Info,
                    &format!("{}: refused: {why}", peer_text(&peer)),
                );
                drop(open);
            }
        }
    });
}

/// The peer as the logs name it.
pub(crate) fn peer_text(peer: &PeerAddr) -> String {
    match peer {
        PeerAddr::Tcp(a) => a.to_string(),
        PeerAddr::Unix(_) => "a UNIX socket client".to_string(),
    }
}

/// Reads the PROXY protocol header that must open a connection, within the server's
/// timeout, and returns the client it names. The header is peeked at before it is taken,
/// so not a byte of what follows (HTTP, or a TLS handshake) is consumed here.
async fn read_proxy_header<S: Transport>(
    stream: &mut S,
    peer: &PeerAddr,
    shared: &Shared,
) -> Result<PeerAddr, (Option<Refusal>, String)> {
    use tokio::io::AsyncReadExt;
    let allowed = shared
        .proxy_protocol
        .as_ref()
        .expect("checked by the caller");
    if let PeerAddr::Tcp(a) = peer {
        if !allowed.trusts(a.ip()) {
            return Err((
                Some(Refusal::Parse),
                "not a peer allowed to send the PROXY protocol".into(),
            ));
        }
    }
    let timeout = shared.config.get().timeout;
    let mut buf = vec![0u8; 16 + 2048];
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    let parsed = loop {
        // Moved in as `&mut`: a shared borrow would need the stream to be Sync.
        let (s, b) = (&mut *stream, &mut buf[..]);
        let peeked =
            tokio::time::timeout_at(deadline, std::future::poll_fn(move |cx| s.poll_peek(cx, b)))
                .await;
        let n = match peeked {
            Err(_) => {
                return Err((
                    Some(Refusal::Timeout),
                    "no PROXY protocol header in time".into(),
                ))
            }
            Ok(Err(e)) => return Err((None, format!("reading the PROXY protocol header: {e}"))),
            Ok(Ok(0)) => return Err((None, "closed before a PROXY protocol header".into())),
            Ok(Ok(n)) => n,
        };
        match parse_proxy_header(&buf[..n]) {
            Ok(Some(found)) => break found,
            Ok(None) => {
                if n == seen {
                    // The same bytes again: the socket stays readable until they are taken,
                    // so wait a moment for the rest rather than spin.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen = n;
            }
            Err(e) => {
                // Answered, so that whoever set up the proxy (or pointed a client at the
                // wrong port) reads why, then closed.
                let msg = match e {
                    ProxyError::Missing => {
                        "This port expects a PROXY protocol header from the proxy in front."
                            .to_string()
                    }
                    ProxyError::Malformed(why) => {
                        format!("Malformed PROXY protocol header: {why}.")
                    }
                };
                refuse_proxied(stream, &msg, timeout).await;
                return Err((Some(Refusal::Parse), e.to_string()));
            }
        }
    };
    let (header, len) = parsed;
    let mut taken = vec![0u8; len];
    stream
        .read_exact(&mut taken)
        .await
        .map_err(|e| (None, format!("reading the PROXY protocol header: {e}")))?;
    Ok(match header {
        ProxyHeader::Proxied { source, .. } => PeerAddr::Tcp(source),
        ProxyHeader::Local => peer.clone(),
    })
}

/// Answers a connection whose PROXY protocol header is missing or malformed with a 400
/// saying why, and closes it. The bytes after are still unread: taken and dropped (up to 64
/// KiB), so that closing does not reset the connection before the client reads the answer.
async fn refuse_proxied<S: Transport>(stream: &mut S, msg: &str, timeout: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{msg}",
        msg.len()
    );
    let _ = tokio::time::timeout(timeout, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut scratch = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match stream.read(&mut scratch).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

async fn accept_tcp(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let stopped = shared.stop.ending_notified();
        if shared.stop.is_ending() {
            return;
        }
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    spawn_connection(&shared, stream, PeerAddr::Tcp(addr));
                }
                Err(e) => tokio::time::sleep(accept_failed(&shared, &e)).await,
            },
            _ = stopped => return,
        }
    }
}

async fn accept_unix(listener: tokio::net::UnixListener, shared: Arc<Shared>, peercreds: bool) {
    loop {
        let stopped = shared.stop.ending_notified();
        if shared.stop.is_ending() {
            return;
        }
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let cred = if peercreds {
                        stream.peer_cred().ok().map(|c| PeerCred { pid: c.pid(), uid: c.uid(), gid: c.gid() })
                    } else {
                        None
                    };
                    spawn_connection(&shared, stream, PeerAddr::Unix(cred));
                }
                Err(e) => tokio::time::sleep(accept_failed(&shared, &e)).await,
            },
            _ = stopped => return,
        }
    }
}

/// The `/metrics` listener: its own socket and thread, never the app's port, so that a busy
/// or stuck app never keeps a scrape waiting (and the app never sees scrapes).
pub struct MetricsEndpoint {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    local: std::net::SocketAddr,
    /// The listening socket, for a forked copy of this value to close (see [`Drop`]).
    fd: std::os::fd::RawFd,
    /// The process that started the thread: only it can stop and join it.
    owner: u32,
}

impl MetricsEndpoint {
    /// Serves `GET /metrics` on `listener` with the text `render` makes for each scrape.
    pub fn start(
        listener: std::net::TcpListener,
        render: Arc<dyn Fn() -> String + Send + Sync>,
    ) -> io::Result<MetricsEndpoint> {
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("stogie-metrics".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = stopped => {}
                        _ = async {
                            loop {
                                if let Ok((stream, _)) = listener.accept().await {
                                    tokio::spawn(scrape(stream, render.clone()));
                                }
                            }
                        } => {}
                    }
                });
            })?;
        Ok(MetricsEndpoint {
            stop: Some(stop),
            thread: Some(thread),
            local,
            fd,
            owner: std::process::id(),
        })
    }

    /// The address served.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local
    }
}

impl Drop for MetricsEndpoint {
    /// Stops the endpoint's thread and waits for it. In a process forked from the one that
    /// started it (a worker forked by its supervisor), that thread does not exist: joining
    /// it would wait forever. There the copy only closes its listening socket, so that the
    /// port is not held by the workers after the supervisor is gone.
    fn drop(&mut self) {
        if std::process::id() != self.owner {
            // SAFETY: the descriptor was inherited by fork and nothing in this process
            // uses it (the runtime that polled it did not cross the fork).
            unsafe { libc::close(self.fd) };
            // Dropping the handle would detach a thread of another process, and dropping the
            // sender would wake a runtime of another process (through a shared eventfd).
            std::mem::forget(self.thread.take());
            std::mem::forget(self.stop.take());
            return;
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one scrape and closes.
async fn scrape(mut stream: tokio::net::TcpStream, render: Arc<dyn Fn() -> String + Send + Sync>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = bytes::BytesMut::with_capacity(1024);
    let cfg = crate::config::ServerConfig::default();
    let head = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match crate::h1::head::parse(&mut buf, &cfg) {
                Ok(Some(h)) => return Some(h),
                Ok(None) if buf.len() < 16 * 1024 => {}
                _ => return None,
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .flatten();
    let (status, body) = match &head {
        None => ("400 Bad Request", "Bad request\n".to_string()),
        Some(h) if &h.method[..] != b"GET" && !h.is_head() => (
            "405 Method Not Allowed",
            "Only GET is served here\n".to_string(),
        ),
        Some(h) if &h.path[..] != b"/metrics" => {
            ("404 Not Found", "Metrics are at /metrics\n".to_string())
        }
        Some(_) => ("200 OK", render()),
    };
    let kind = if status.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head.as_ref().is_some_and(|h| h.is_head()) {
        out.extend_from_slice(body.as_bytes());
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
