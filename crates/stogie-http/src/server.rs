//! The server's lifecycle: start (a runtime, and an accept loop per listener), graceful stop.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::accept::{accept_tcp, accept_unix};
use crate::addr::LocalAddr;
use crate::config::LiveConfig;
use crate::exchange::gateway::Gateway;
use crate::listener::Listener;
use crate::log::ErrorLog;
use crate::ops::proxy::TrustedPeers;
use crate::shared::Shared;
use crate::stats::Stats;
use crate::stop::Stop;
use crate::transport::tls::TlsAcceptor;

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
                crate::exchange::pipe::IO_ASLEEP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
            .on_thread_unpark(|| {
                crate::exchange::pipe::IO_ASLEEP.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
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
            let watched = shared.clone();
            runtime.spawn(async move { crate::idle::watch(&watched.parked, &watched.stop).await });
            match listener.try_clone()? {
                Listener::Tcp(l) => {
                    let l = tokio::net::TcpListener::from_std(l)?;
                    runtime.spawn(accept_tcp(l, shared.clone(), shared.stop.accept_loop()));
                }
                Listener::Unix(l, _) => {
                    let l = tokio::net::UnixListener::from_std(l)?;
                    let running = shared.stop.accept_loop();
                    runtime.spawn(accept_unix(l, shared.clone(), opts.peercreds, running));
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
        // No connection is counted before every accept loop has seen the signal: one taken
        // meanwhile is answered too.
        while self.shared.iter().any(|s| s.stop.accepting()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
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
