//! The accept loop and the server's lifecycle: start, graceful stop.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::conn::{self, Open, Shared, Stop};
use crate::exchange::{LocalAddr, PeerAddr, PeerCred};
use crate::listener::Listener;
use crate::stats::Stats;
use crate::transport::tls::{self, Plain, TlsAcceptor};
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
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            io_threads: 1,
            peercreds: false,
            tls: None,
        }
    }
}

/// A running HTTP/1.1 server: a listener, an async runtime, and a gateway behind them.
pub struct HttpServer {
    runtime: Option<Runtime>,
    listener: Option<Listener>,
    local: LocalAddr,
    stats: Arc<Stats>,
    config: LiveConfig,
    shared: Arc<Shared>,
    remove_socket_file: bool,
}

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
        let local = listener.local_addr()?;
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
        let shared = Arc::new(Shared {
            config: config.clone(),
            gateway,
            stats: stats.clone(),
            log,
            stop: Stop::default(),
            parked: Arc::default(),
            local: local.clone(),
            scheme,
            tls: opts.tls.clone(),
        });
        let accept_from = listener.try_clone()?;
        let _guard = runtime.enter();
        runtime.spawn(crate::idle::watch(shared.clone()));
        match accept_from {
            Listener::Tcp(l) => {
                let l = tokio::net::TcpListener::from_std(l)?;
                runtime.spawn(accept_tcp(l, shared.clone()));
            }
            Listener::Unix(l, _) => {
                let l = tokio::net::UnixListener::from_std(l)?;
                runtime.spawn(accept_unix(l, shared.clone(), opts.peercreds));
            }
        }
        drop(_guard);
        Ok(HttpServer {
            runtime: Some(runtime),
            listener: Some(listener),
            local,
            stats,
            config,
            shared,
            remove_socket_file: true,
        })
    }

    /// Whether stopping removes the socket file of a UNIX path listener (the default). Off
    /// in worker processes sharing one inherited listener: one worker stopping must not take
    /// the address away from the others; the process that bound it removes it.
    pub fn set_remove_socket_file(&mut self, remove: bool) {
        self.remove_socket_file = remove;
    }

    /// The address served.
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
        self.shared.tls.as_ref()
    }

    /// The first step of [`HttpServer::stop`], which returns at once: no new connections,
    /// idle ones close, requests in flight go on.
    pub fn stop_accepting(&mut self) {
        if self.runtime.is_none() {
            return;
        }
        self.shared.stop.set();
        // Close the listening socket now (the accept loop drops its copy as it sees the
        // signal): new clients are refused at once instead of waiting in the backlog of
        // a socket nobody accepts on.
        if let Some(listener) = self.listener.take() {
            if self.remove_socket_file {
                listener.cleanup();
            }
        }
    }

    /// Stops accepting, lets requests in flight finish for up to `grace`, then closes
    /// everything. Returns whether every connection finished in time.
    pub fn stop(&mut self, grace: Duration) -> bool {
        self.stop_accepting();
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
        runtime.shutdown_timeout(Duration::from_millis(200));
        // The watcher task may have been dropped before it saw the stop; the connections it
        // watched must close all the same (they hold the server's shared state).
        self.shared.parked.close_all();
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

/// Serves an accepted connection on its own task, counted as open until the task ends. A
/// TLS handshake happens in that task too.
fn spawn_connection<S: Plain>(shared: &Arc<Shared>, stream: S, peer: PeerAddr) {
    shared.stats.add_accept();
    shared.stats.open();
    let open = Open(shared.stats.clone());
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
}

async fn accept_tcp(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let stopped = shared.stop.notified();
        if shared.stop.is_set() {
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
        let stopped = shared.stop.notified();
        if shared.stop.is_set() {
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
