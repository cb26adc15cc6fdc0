//! `NativeServer`: the engine, the worker pool and the app behind `stogie.wsgi.Server` and
//! `stogie.server.HTTPServer`. The Python classes keep Cheroot's API; this holds the parts.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use stogie_http::ops::accesslog::{AccessFormat, AccessLog, Destination};
use stogie_http::ops::metrics::{Metrics, MetricsRegion, SupervisorCounts};
use stogie_http::ops::proxy::TrustedPeers;
use stogie_http::{
    BindAddr, EngineOptions, HttpServer, ListenOptions, Listener, LiveConfig, LocalAddr,
    MetricsEndpoint, ServerConfig, Stats, TlsAcceptor, TlsConfig,
};

mod listen;
mod metrics;
mod pylog;
mod settings;

use listen::{local_to_py, os_error, ListenerGroup};
use pylog::PyLog;
use settings::{bounded, header_text, limits, parse_mode, secs, size_setting};

use crate::gil;
use crate::handler::AppHandler;
use crate::pool::{Pool, PoolStats};
use crate::wsgi::environ;

/// The engine, pool and app of one server.
#[pyclass(module = "stogie._native")]
pub struct NativeServer {
    app: Arc<AppHandler>,
    config: LiveConfig,
    stats: Arc<Stats>,
    log: Arc<PyLog>,
    /// Bound listeners not yet serving, one group per address bound: one listener shared by
    /// every worker process, or (TCP with several workers) one per worker slot in an
    /// SO_REUSEPORT group.
    groups: Vec<ListenerGroup>,
    engine: Option<HttpServer>,
    pool: Option<Pool<Arc<AppHandler>>>,
    /// HTTPS: the TLS configuration the engine starts with (and reloads through).
    tls: Option<stogie_http::TlsAcceptor>,
    /// Worker processes' metrics, one slot each, mapped before they fork.
    region: Option<Arc<MetricsRegion>>,
    /// The `/metrics` listener, when this process serves one.
    metrics_endpoint: Option<MetricsEndpoint>,
    /// Supervisor counts for its `/metrics` (worker restarts, workers running).
    supervisor_counts: Arc<std::sync::Mutex<SupervisorCounts>>,
    /// The requests the pool served in all, once it stopped (a worker's true total).
    served_when_stopped: Arc<std::sync::atomic::AtomicU64>,
}

#[pymethods]
impl NativeServer {
    #[new]
    fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        template: Py<PyDict>,
        mode: &str,
        on_error: Py<PyAny>,
        log: Py<PyAny>,
    ) -> PyResult<Self> {
        let template = environ::with_room(template.bind(py))?;
        Ok(NativeServer {
            app: Arc::new(AppHandler {
                app: RwLock::new(app),
                template: RwLock::new(template),
                mode: RwLock::new(parse_mode(mode)?),
                on_error,
                peercreds: AtomicBool::new(false),
                resolve_peer: AtomicBool::new(false),
                main_port: std::sync::atomic::AtomicU32::new(0),
            }),
            config: LiveConfig::new(ServerConfig::default()),
            stats: Arc::new(Stats::default()),
            log: Arc::new(PyLog(log, Default::default())),
            groups: Vec::new(),
            engine: None,
            pool: None,
            tls: None,
            region: None,
            metrics_endpoint: None,
            supervisor_counts: Arc::default(),
            served_when_stopped: Arc::default(),
        })
    }

    /// Binds and listens, in addition to any address bound before. `kind` is "tcp" (host,
    /// port), "unix" (path), "abstract" (name) or "fd" (descriptor). Returns the bound
    /// address: (host, port) or a path string.
    ///
    /// `slots` > 1 (worker processes) binds a TCP address that many times in one
    /// SO_REUSEPORT group, so that the kernel spreads connections evenly over the workers;
    /// each worker then starts on its own slot. Other kinds bind once and are shared.
    #[pyo3(signature = (kind, target, port = 0, backlog = 5, reuse_port = false, slots = 1))]
    #[allow(clippy::too_many_arguments)]
    fn bind<'py>(
        &mut self,
        py: Python<'py>,
        kind: &str,
        target: &Bound<'py, PyAny>,
        port: u16,
        backlog: i32,
        reuse_port: bool,
        slots: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let addr = match kind {
            "tcp" => BindAddr::Tcp(target.extract()?, port),
            "unix" => BindAddr::Unix(target.extract::<String>()?.into()),
            "abstract" => BindAddr::Abstract(target.extract::<Vec<u8>>()?),
            "fd" => BindAddr::Fd(target.extract()?),
            _ => {
                return Err(PyValueError::new_err(format!(
                    "unknown address kind {kind:?}"
                )))
            }
        };
        let grouped = slots > 1 && matches!(addr, BindAddr::Tcp(..));
        let opts = ListenOptions {
            backlog,
            reuse_port: reuse_port || grouped,
        };
        let listeners = gil::detach(py, || {
            let first = Listener::bind(&addr, opts)?;
            let mut all = Vec::with_capacity(slots.max(1));
            for _ in 1..if grouped { slots } else { 1 } {
                all.extend(first.reuse_port_sibling(opts)?);
            }
            all.insert(0, first);
            Ok::<_, std::io::Error>(all)
        })
        .map_err(os_error)?;
        let local = listeners[0].local_addr().map_err(os_error)?;
        self.groups.push(ListenerGroup {
            listeners: listeners.into_iter().map(Some).collect(),
            grouped,
            inherited: kind == "fd",
            opts,
        });
        local_to_py(py, &local)
    }

    /// Maps the metrics region that worker processes forked after this count in, with
    /// `capacity` slots: one per worker process alive at a time (a reload runs two
    /// generations at once), each handed out by the supervisor (`start(metrics_slot=...)`).
    fn share_metrics(&mut self, capacity: usize) -> PyResult<()> {
        if self.region.is_none() {
            self.region = Some(MetricsRegion::shared(capacity.max(1)).map_err(os_error)?);
        }
        Ok(())
    }

    /// Adds a worker slot: one more listener in each SO_REUSEPORT group. Returns the new
    /// slot's number (the slots of shared listeners need nothing).
    fn add_slot(&mut self, py: Python<'_>) -> PyResult<usize> {
        let groups = &mut self.groups;
        gil::detach(py, || {
            for group in groups.iter_mut().filter(|g| g.grouped) {
                let model = group.listeners.iter().flatten().next().ok_or_else(|| {
                    std::io::Error::other("no listener left in the group to copy")
                })?;
                let sibling = model
                    .reuse_port_sibling(group.opts)?
                    .ok_or_else(|| std::io::Error::other("not a TCP listener"))?;
                group.listeners.push(Some(sibling));
            }
            Ok::<_, std::io::Error>(())
        })
        .map_err(os_error)?;
        Ok(self.slot_count().saturating_sub(1))
    }

    /// Closes this process's listeners of worker slot `slot` in each SO_REUSEPORT group
    /// (the slot stays numbered; the socket is gone once no process holds it).
    fn drop_slot(&mut self, slot: usize) {
        for group in self.groups.iter_mut().filter(|g| g.grouped) {
            if let Some(l) = group.listeners.get_mut(slot) {
                *l = None;
            }
            // The kernel numbers a group's sockets in order and closing the last renumbers
            // nothing: slots stay numbered as the kernel numbers them.
            while group.listeners.len() > 1 && matches!(group.listeners.last(), Some(None)) {
                group.listeners.pop();
            }
        }
    }

    /// Keeps only what worker slot `slot` serves (in a worker process, before anything else:
    /// the other slots' sockets belong to other workers, and the `/metrics` listener to the
    /// supervisor, whose thread serving it was not copied by fork).
    fn keep_slot(&mut self, slot: usize) {
        // Its drop in a forked process closes the socket without joining the thread.
        self.metrics_endpoint = None;
        for group in self.groups.iter_mut().filter(|g| g.grouped) {
            for (i, l) in group.listeners.iter_mut().enumerate() {
                if i != slot {
                    *l = None;
                }
            }
        }
    }

    /// The descriptor of the `index`th bound address's first listener (None once it is
    /// gone), for Cheroot's `HTTPServer.socket`. It stays owned here.
    fn listener_fd(&self, index: usize) -> Option<i32> {
        self.groups
            .get(index)?
            .listeners
            .iter()
            .flatten()
            .next()
            .map(Listener::as_raw_fd)
    }

    /// The descriptors of worker slot `slot`'s own listeners (one per SO_REUSEPORT group),
    /// for socket options set from Python. They stay owned here.
    fn slot_fds(&self, slot: usize) -> Vec<i32> {
        self.groups
            .iter()
            .filter(|g| g.grouped)
            .filter_map(|g| g.listeners.get(slot).and_then(|l| l.as_ref()))
            .map(Listener::as_raw_fd)
            .collect()
    }

    /// How many worker slots the SO_REUSEPORT groups have (1 when there is none).
    fn slot_count(&self) -> usize {
        self.groups
            .iter()
            .filter(|g| g.grouped)
            .map(|g| g.listeners.len())
            .max()
            .unwrap_or(1)
    }

    /// Starts the pool and the engine on the bound sockets. `remove_socket_file=False`
    /// leaves a UNIX socket file in place on stop (worker processes sharing an inherited
    /// listener). `slot` picks a worker's own listener where `bind` made one per slot (the
    /// others are closed in this process).
    /// `metrics_slot` is this worker process's slot in the metrics region (default: `slot`).
    #[pyo3(signature = (minthreads, maxthreads, queue_size, queue_timeout, io_threads = 1, peercreds = false, peercreds_resolve = false, remove_socket_file = true, idle_timeout = 30.0, slot = 0, proxy_protocol = None, metrics_slot = None))]
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        py: Python<'_>,
        minthreads: isize,
        maxthreads: isize,
        queue_size: isize,
        queue_timeout: f64,
        io_threads: usize,
        peercreds: bool,
        peercreds_resolve: bool,
        remove_socket_file: bool,
        idle_timeout: f64,
        slot: usize,
        proxy_protocol: Option<&str>,
        metrics_slot: Option<usize>,
    ) -> PyResult<()> {
        let proxy_protocol = proxy_protocol
            .map(TrustedPeers::parse)
            .transpose()
            .map_err(|e| PyValueError::new_err(format!("proxy_allow_from: {e}")))?;
        if self.engine.is_some() {
            return Err(PyRuntimeError::new_err("the server is already running"));
        }
        if self.groups.is_empty() {
            return Err(PyRuntimeError::new_err("bind() must come before start()"));
        }
        if let Some(region) = &self.region {
            // A worker process: count in its own slot of the shared region.
            let index = metrics_slot.unwrap_or(slot);
            let stats = Stats::with_metrics(Metrics::new(region.clone(), index));
            // Cheroot's stats switched on before the start stay on.
            stats.set_enabled(self.stats.enabled());
            self.stats = Arc::new(stats);
        }
        let mut listeners = Vec::with_capacity(self.groups.len());
        let inherited: Vec<bool> = self.groups.iter().map(|g| g.inherited).collect();
        for mut group in self.groups.drain(..) {
            let pick = if group.grouped {
                slot.min(group.listeners.len() - 1)
            } else {
                0
            };
            match group.listeners.get_mut(pick).and_then(Option::take) {
                Some(l) => listeners.push(l),
                None => {
                    return Err(PyRuntimeError::new_err(format!(
                        "worker slot {slot} has no listener"
                    )))
                }
            }
        }
        self.set_peercreds(peercreds, peercreds_resolve);
        let main_port = match listeners[0].local_addr() {
            Ok(LocalAddr::Tcp(a)) => a.port(),
            _ => 0,
        };
        self.app
            .main_port
            .store(u32::from(main_port), std::sync::atomic::Ordering::Relaxed);
        let pool = Pool::start(
            self.app.clone(),
            limits(
                minthreads,
                maxthreads,
                queue_size,
                queue_timeout,
                idle_timeout,
            ),
            self.stats.clone(),
        );
        let gateway = Arc::new(pool.clone());
        let (config, log, stats) = (self.config.clone(), self.log.clone(), self.stats.clone());
        let tls = self.tls.clone();
        if let Some(tls) = &tls {
            // The protocols are settings, made after the certificate: ALPN follows them.
            tls.set_alpn(self.config.get().protocols.alpn());
        }
        let mut engine = gil::detach(py, || {
            HttpServer::start_many(
                listeners,
                config,
                gateway,
                log,
                stats,
                EngineOptions {
                    io_threads,
                    // Always read on UNIX sockets (one getsockopt per connection):
                    // `peercreds_enabled` may be turned on while the server runs.
                    peercreds: true,
                    tls,
                    proxy_protocol,
                },
            )
        })
        .map_err(|e| PyOSError::new_err(e.to_string()))?;
        engine.set_remove_socket_file(remove_socket_file);
        for (index, _) in inherited.iter().enumerate().filter(|(_, i)| **i) {
            engine.keep_socket_file(index);
        }
        self.pool = Some(pool);
        self.engine = Some(engine);
        Ok(())
    }

    /// Seconds since the engine's runtime last ran its heartbeat (every 0.25 s while it
    /// runs), or None when no engine runs here.
    fn heartbeat_age(&self) -> Option<f64> {
        self.engine
            .as_ref()
            .map(|e| e.heartbeat_age().as_secs_f64())
    }

    /// Stops gracefully: no new connections, in-flight requests get up to `grace` seconds.
    /// With `drain`, as a worker being replaced: keep-alive connections stay open until
    /// their idle timeout (within `grace`) to answer a request already on its way, with
    /// `Connection: close`. Returns whether everything finished in time (false when the app
    /// itself calls it: the waiting then goes on in the background). Safe to call more than
    /// once.
    #[pyo3(signature = (grace, drain = false))]
    fn stop(&mut self, py: Python<'_>, grace: f64, drain: bool) -> bool {
        let engine = self.engine.take();
        let pool = self.pool.take();
        self.groups.clear();
        let grace = secs(grace);
        let in_request = pool.as_ref().is_some_and(|p| p.is_current_worker());
        let served_when_stopped = self.served_when_stopped.clone();
        let finish = move |mut engine: Option<HttpServer>| {
            let started = std::time::Instant::now();
            let clean = engine
                .as_mut()
                .map(|e| {
                    if drain {
                        e.retire(grace)
                    } else {
                        e.stop(grace)
                    }
                })
                .unwrap_or(true);
            if let Some(p) = pool {
                p.shutdown(
                    grace
                        .saturating_sub(started.elapsed())
                        .max(Duration::from_millis(100)),
                );
                served_when_stopped.store(p.stats().served, std::sync::atomic::Ordering::Relaxed);
            }
            clean
        };
        if in_request {
            // The app called stop() (CherryPy's engine.exit() does): its own request can only
            // finish once this returns. Stop accepting now and wait for the rest elsewhere,
            // as Cheroot's stop() does not join the thread that called it.
            let mut engine = engine;
            if let Some(e) = engine.as_mut() {
                e.stop_accepting();
            }
            let _ = std::thread::Builder::new()
                .name("stogie-stop".into())
                .spawn(move || finish(engine));
            return false;
        }
        gil::detach(py, move || finish(engine))
    }

    /// Serves HTTPS from the next start() on: the certificate chain and key (PEM), an
    /// optional bundle of intermediates, client verification ("none", "optional",
    /// "required") with the CA certificates (DER), protocol versions ("TLSv1.2",
    /// "TLSv1.3"), cipher suites by name (None: all), session tickets, the server's cipher
    /// order, SSL_VERSION_INTERFACE, and the seconds between two warnings about refused
    /// client certificates for the same reason and address. Everything is checked now:
    /// TLSError names the file or setting at fault. `cert=None` turns TLS off.
    #[pyo3(signature = (cert, cert_name, key, key_name, chain = None, chain_name = None, client_verify = "none", client_cas = Vec::new(), min_version = "TLSv1.2", max_version = "TLSv1.3", ciphers = None, session_tickets = true, prefer_server_ciphers = false, interface = String::new(), refusal_log_interval = 60.0))]
    #[allow(clippy::too_many_arguments)]
    fn set_tls(
        &mut self,
        py: Python<'_>,
        cert: Option<Vec<u8>>,
        cert_name: &str,
        key: Vec<u8>,
        key_name: &str,
        chain: Option<Vec<u8>>,
        chain_name: Option<&str>,
        client_verify: &str,
        client_cas: Vec<Vec<u8>>,
        min_version: &str,
        max_version: &str,
        ciphers: Option<Vec<String>>,
        session_tickets: bool,
        prefer_server_ciphers: bool,
        interface: String,
        refusal_log_interval: f64,
    ) -> PyResult<()> {
        if self.engine.is_some() {
            return Err(PyRuntimeError::new_err(
                "TLS is set before start(); reload_tls() changes the certificate of a running server",
            ));
        }
        let Some(cert) = cert else {
            self.tls = None;
            return Ok(());
        };
        let chain = chain
            .as_deref()
            .map(|c| (c, chain_name.unwrap_or("certificate chain")));
        let acceptor = gil::detach(py, || {
            let identity = crate::tls::identity(&cert, cert_name, &key, key_name, chain)?;
            let mut config = TlsConfig::new(identity);
            config.client_auth = crate::tls::client_auth(client_verify, client_cas)?;
            config.min_version = crate::tls::version("minimum_version", min_version)?;
            config.max_version = crate::tls::version("maximum_version", max_version)?;
            config.cipher_suites = ciphers;
            config.session_tickets = session_tickets;
            config.prefer_server_ciphers = prefer_server_ciphers;
            config.interface = interface;
            config.refusal_log_interval = Duration::try_from_secs_f64(refusal_log_interval)
                .map_err(|_| {
                    PyValueError::new_err("refusal_log_interval must be a number of seconds")
                })?;
            TlsAcceptor::new(config).map_err(crate::tls::err)
        })?;
        self.tls = Some(acceptor);
        Ok(())
    }

    /// Replaces the certificate chain and key for new handshakes (open connections keep
    /// theirs). On an error (TLSError) the server keeps the pair it has.
    #[pyo3(signature = (cert, cert_name, key, key_name, chain = None, chain_name = None))]
    #[allow(clippy::too_many_arguments)]
    fn reload_tls(
        &self,
        py: Python<'_>,
        cert: Vec<u8>,
        cert_name: &str,
        key: Vec<u8>,
        key_name: &str,
        chain: Option<Vec<u8>>,
        chain_name: Option<&str>,
    ) -> PyResult<()> {
        let Some(acceptor) = &self.tls else {
            return Err(PyRuntimeError::new_err("the server does not serve TLS"));
        };
        let chain = chain
            .as_deref()
            .map(|c| (c, chain_name.unwrap_or("certificate chain")));
        gil::detach(py, || {
            let identity = crate::tls::identity(&cert, cert_name, &key, key_name, chain)?;
            acceptor
                .reload(identity)
                .map_err(|e| crate::tls::TLSError::new_err(e.to_string()))
        })
    }

    /// Engine messages below this `logging` level are dropped before they reach Python.
    fn set_log_level(&self, levelno: u8) {
        self.log.1.store(levelno, Relaxed);
    }

    /// Whether the server serves TLS.
    #[getter]
    fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether requests from UNIX socket clients carry their credentials, and whether
    /// those are resolved to user and group names; for the next request.
    fn set_peercreds(&self, enabled: bool, resolve: bool) {
        self.app.peercreds.store(enabled, Relaxed);
        self.app.resolve_peer.store(enabled && resolve, Relaxed);
    }

    /// Whether the engine is running.
    #[getter]
    fn running(&self) -> bool {
        self.engine.is_some()
    }

    /// Replaces the app (or native dispatcher) for the next request.
    fn set_app(&self, app: Py<PyAny>) {
        *self.app.app.write().unwrap_or_else(|e| e.into_inner()) = app;
    }

    /// Replaces the environ template for the next request.
    fn set_template(&self, template: &Bound<'_, PyDict>) -> PyResult<()> {
        let template = environ::with_room(template)?;
        *self.app.template.write().unwrap_or_else(|e| e.into_inner()) = template;
        Ok(())
    }

    /// Switches between "wsgi", "wsgi_u0" and "native".
    fn set_mode(&self, mode: &str) -> PyResult<()> {
        *self.app.mode.write().unwrap_or_else(|e| e.into_inner()) = parse_mode(mode)?;
        Ok(())
    }

    /// Changes engine settings for the next connection or request.
    #[pyo3(signature = (**kwargs))]
    fn configure(&self, py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let Some(kwargs) = kwargs else { return Ok(()) };
        // Every value is checked before anything changes, so a bad call changes nothing.
        let mut next = (*self.config.get()).clone();
        let mut stats_enabled = None;
        for (k, v) in kwargs.iter() {
            let key: String = k.extract()?;
            match key.as_str() {
                "timeout" => next.timeout = secs(v.extract()?),
                "max_request_header_size" => {
                    next.max_request_header_size = v.extract::<i64>()?.max(0) as usize
                }
                "max_request_body_size" => {
                    next.max_request_body_size = v.extract::<i64>()?.max(0) as u64
                }
                "server_header" => next.server_software = header_text(&key, v.extract()?)?,
                "protocol" => {
                    let p: String = v.extract()?;
                    if p != "HTTP/1.1" && p != "HTTP/1.0" {
                        return Err(PyValueError::new_err(format!(
                            "protocol must be 'HTTP/1.1' or 'HTTP/1.0', not {p:?}"
                        )));
                    }
                    next.protocol = p;
                }
                "allow_underscore_headers" => next.allow_underscore_headers = v.extract()?,
                "max_request_line" => next.max_request_line = size_setting(&key, &v, 1)?,
                "max_header_count" => next.max_header_count = size_setting(&key, &v, 0)?,
                "max_header_field" => next.max_header_field = size_setting(&key, &v, 1)?,
                "stats_enabled" => stats_enabled = Some(v.extract::<bool>()?),
                "access_log" => {
                    next.access_log = match v.extract::<Option<(String, String)>>()? {
                        None => None,
                        Some((dest, format)) => {
                            let format = AccessFormat::parse(&format).map_err(|e| {
                                PyValueError::new_err(format!("access_log_format: {e}"))
                            })?;
                            let log = gil::detach(py, || {
                                AccessLog::open(Destination::parse(&dest), format, self.log.clone())
                            });
                            Some(Arc::new(log.map_err(|e| {
                                PyOSError::new_err(format!("cannot open the access log {e}"))
                            })?))
                        }
                    }
                }
                "forwarded_allow_ips" => {
                    next.trusted_proxies = TrustedPeers::parse(&v.extract::<String>()?)
                        .map_err(|e| PyValueError::new_err(format!("forwarded_allow_ips: {e}")))?
                }
                "time_requests" => next.time_requests = v.extract()?,
                "http_protocols" => {
                    let names: Vec<String> = v.extract()?;
                    let p = &mut next.protocols;
                    p.http1 = names.iter().any(|n| n == "h1");
                    p.http2 = names.iter().any(|n| n == "h2");
                    p.prefer_http1 = names.first().is_some_and(|n| n == "h1");
                    if names.is_empty() || names.iter().any(|n| n != "h1" && n != "h2") {
                        return Err(PyValueError::new_err(format!(
                            "http_protocols: {names:?}: use 'h1', 'h2' or both, in order of preference"
                        )));
                    }
                }
                "http2_cleartext" => next.protocols.h2c = v.extract()?,
                "http2_max_concurrent_streams" => {
                    next.protocols.max_concurrent_streams =
                        bounded(&key, &v, 1, u32::MAX as u64)? as u32
                }
                "http2_initial_window_size" => {
                    next.protocols.initial_window_size = bounded(&key, &v, 1, (1 << 31) - 1)? as u32
                }
                "http2_max_frame_size" => {
                    next.protocols.max_frame_size = bounded(&key, &v, 16_384, (1 << 24) - 1)? as u32
                }
                "http2_max_header_list_size" => {
                    next.protocols.max_header_list_size =
                        bounded(&key, &v, 1, u32::MAX as u64)? as u32
                }
                _ => return Err(PyValueError::new_err(format!("unknown setting {key:?}"))),
            }
        }
        if let Some(on) = stats_enabled {
            self.stats.set_enabled(on);
        }
        let alpn = next.protocols.alpn();
        self.config.update(|c| *c = next);
        if let Some(tls) = &self.tls {
            // What new handshakes offer follows the protocols (`http_protocols` is live).
            tls.set_alpn(alpn);
        }
        Ok(())
    }

    /// Changes the pool's sizes on a running server.
    #[pyo3(signature = (minthreads, maxthreads, queue_size, queue_timeout, idle_timeout = 30.0))]
    fn set_pool_limits(
        &self,
        minthreads: isize,
        maxthreads: isize,
        queue_size: isize,
        queue_timeout: f64,
        idle_timeout: f64,
    ) {
        if let Some(p) = &self.pool {
            p.set_limits(limits(
                minthreads,
                maxthreads,
                queue_size,
                queue_timeout,
                idle_timeout,
            ));
        }
    }

    /// Closes and reopens the access log file (after logrotate moved it away).
    fn reopen_access_log(&self) {
        if let Some(log) = &self.config.get().access_log {
            log.reopen();
        }
    }

    /// Serves Prometheus' `/metrics` on its own listener at (`host`, `port`); returns the
    /// address bound. In a supervisor (worker processes), the sum of every worker's slot.
    fn serve_metrics<'py>(
        &mut self,
        py: Python<'py>,
        host: &str,
        port: u16,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.metrics_endpoint = None;
        let listener = gil::detach(py, || {
            let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
                .next()
                .ok_or_else(|| std::io::Error::other("the address did not resolve"))?;
            std::net::TcpListener::bind(addr)
        })
        .map_err(|e| {
            PyOSError::new_err((
                e.raw_os_error().unwrap_or(0),
                format!("cannot listen for metrics on {host}:{port}: {e}"),
            ))
        })?;
        let render = self.metrics_renderer();
        let endpoint = MetricsEndpoint::start(listener, render)
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let local = LocalAddr::Tcp(endpoint.local_addr());
        self.metrics_endpoint = Some(endpoint);
        local_to_py(py, &local)
    }

    /// Stops serving `/metrics`.
    fn stop_metrics(&mut self, py: Python<'_>) {
        let endpoint = self.metrics_endpoint.take();
        gil::detach(py, move || drop(endpoint));
    }

    /// The metrics text now (what `/metrics` serves).
    fn render_metrics(&self) -> String {
        (self.metrics_renderer())()
    }

    /// A worker process ended (in a supervisor): its counts move to the retired slot, and
    /// with `replaced`, a worker restart is counted.
    #[pyo3(signature = (slot, replaced = true))]
    fn retire_worker(&self, slot: usize, replaced: bool) {
        if let Some(region) = &self.region {
            region.retire(slot);
        }
        if replaced {
            let mut c = self
                .supervisor_counts
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            c.worker_restarts += 1;
        }
    }

    /// Tells the supervisor's `/metrics` how many workers run now.
    fn set_workers_running(&self, n: usize) {
        self.supervisor_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .workers = n;
    }

    /// Raw counters for `stats`.
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.stats.snapshot();
        let d = PyDict::new(py);
        d.set_item("accepts", s.accepts)?;
        d.set_item("requests", s.requests)?;
        d.set_item("bytes_read", s.bytes_read)?;
        d.set_item("bytes_written", s.bytes_written)?;
        d.set_item("socket_errors", s.socket_errors)?;
        d.set_item("connections", s.active_connections)?;
        let p = self
            .pool
            .as_ref()
            .map(|p| p.stats())
            .unwrap_or_else(|| PoolStats {
                served: self
                    .served_when_stopped
                    .load(std::sync::atomic::Ordering::Relaxed),
                ..PoolStats::default()
            });
        d.set_item("queued", p.queued)?;
        d.set_item("threads", p.threads)?;
        d.set_item("idle", p.idle)?;
        d.set_item("served", p.served)?;
        d.set_item("work_time", p.work_seconds)?;
        Ok(d)
    }

    /// Writes `message` to the socket `fd` (kept open while the engine runs) the moment the
    /// requests served reach `limit` (counted while the stats are enabled): a worker
    /// process's recycling limit, told to its supervisor when it is reached. Needs a running
    /// engine.
    fn announce_at_requests(&self, limit: u64, fd: i32, message: Vec<u8>) -> PyResult<()> {
        let pool = self
            .pool
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("the engine is not running"))?;
        pool.announce_at(limit, fd, message);
        Ok(())
    }

    /// Sets the counters back to zero.
    fn clear_counters(&self) {
        self.stats.clear();
        self.served_when_stopped
            .store(0, std::sync::atomic::Ordering::Relaxed);
        if let Some(p) = &self.pool {
            p.clear_stats();
        }
    }
}
