//! The accept loop and the server's lifecycle: start, graceful stop.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::conn::{self, Open, Shared, Stop};
use crate::exchange::{LocalAddr, PeerAddr, PeerCred};
use crate::listener::Listener;
use crate::stats::Stats;
use crate::transport::Transport;
use crate::{ErrorLog, Gateway, LiveConfig, LogLevel};

/// Options fixed for the server's lifetime.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Threads running the async engine (sockets, parsing, writing).
    pub io_threads: usize,
    /// Read SO_PEERCRED on UNIX sockets.
    pub peercreds: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            io_threads: 1,
            peercreds: false,
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
        let scheme = "http";
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

    /// How long ago the engine's runtime last ran its heartbeat task (every 250 ms while it
    /// runs). A watchdog that pings only while this is short stops pinging when the engine
    /// hangs or has stopped.
    pub fn heartbeat_age(&self) -> Duration {
        self.heartbeat.age()
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

fn accept_failed(shared: &Shared, err: &io::Error) -> Duration {
    // Out of descriptors or memory: back off instead of spinning; the listener stays.
    shared
        .log
        .log(LogLevel::Warning, &format!("accept() failed: {err}"));
    Duration::from_millis(50)
}

/// Serves an accepted connection on its own task, counted as open until the task ends.
fn spawn_connection<S: Transport>(shared: &Arc<Shared>, stream: S, peer: PeerAddr) {
    shared.stats.add_accept();
    shared.stats.open();
    let open = Open(shared.stats.clone());
    tokio::spawn(conn::serve(stream, peer, shared.clone(), open));
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
