//! Every setting of the engine in one place, with defaults that protect a server on the
//! open internet.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::message::HeadLimits;
use crate::ops::accesslog::AccessLog;
use crate::ops::proxy::TrustedPeers;

/// Settings read by connections. A running server reads them per connection and per
/// request, so a change made through [`LiveConfig`] takes effect for the next request.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Seconds a client may take to send a request head, to keep a body or the response
    /// moving, or to stay idle between keep-alive requests (Cheroot's `timeout`).
    pub timeout: Duration,
    /// Largest whole request head in bytes; 0 means only the per-line limits apply.
    pub max_request_header_size: usize,
    /// Largest request body in bytes; 0 means no limit.
    pub max_request_body_size: u64,
    /// Longest request line (414 past it).
    pub max_request_line: usize,
    /// Most header fields in one request (431 past it).
    pub max_header_count: usize,
    /// Longest single header field line (431 past it).
    pub max_header_field: usize,
    /// Bodies up to this size are read completely before the app is called, so a Python
    /// thread never waits on a slow client for them.
    pub prefetch_body_limit: u64,
    /// How much of a body the app left unread is drained to keep the connection alive;
    /// past it the connection is closed instead.
    pub drain_limit: u64,
    /// The `Server` response header, unless the app sets its own.
    pub server_software: String,
    /// The protocol the server speaks, as in the status line (`HTTP/1.1`).
    pub protocol: String,
    /// Whether request header names containing `_` are kept (they alias `-` names).
    pub allow_underscore_headers: bool,
    /// Whether stats counters are kept.
    pub stats_enabled: bool,
    /// Where each request's line goes, if anywhere.
    pub access_log: Option<Arc<AccessLog>>,
    /// Peers whose forwarded headers are believed (gunicorn's `forwarded_allow_ips`).
    pub trusted_proxies: TrustedPeers,
    /// Whether requests are timed for the duration histogram (metrics served).
    pub time_requests: bool,
    /// Which protocols are served, and HTTP/2's settings.
    pub protocols: Protocols,
}

/// The protocols a server speaks (gunicorn's `--http-protocols`), and HTTP/2's settings
/// (gunicorn's names and defaults; the `h2` crate's own defaults allow unlimited streams
/// and 16 MiB of headers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protocols {
    /// HTTP/1.1 (and 1.0).
    pub http1: bool,
    /// HTTP/2: over TLS when the client's ALPN chooses `h2`, and in cleartext (h2c by prior
    /// knowledge) when [`Protocols::h2c`] is on.
    pub http2: bool,
    /// Whether HTTP/1 is preferred when a TLS client offers both.
    pub prefer_http1: bool,
    /// Cleartext HTTP/2 by prior knowledge, from trusted peers only (the forwarded-header
    /// proxies, or a UNIX socket client): what a proxy in front speaks to its upstream.
    /// `Upgrade: h2c` is never honoured (it lets a client smuggle requests past a proxy).
    pub h2c: bool,
    /// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); also the
    /// most requests of one connection queued or running in the pool at once.
    pub max_concurrent_streams: u32,
    /// The flow-control window the client gets per stream (SETTINGS_INITIAL_WINDOW_SIZE):
    /// how much of a request body it may send before the app reads.
    pub initial_window_size: u32,
    /// The largest frame payload the client may send (SETTINGS_MAX_FRAME_SIZE).
    pub max_frame_size: u32,
    /// The largest header list the client may send (SETTINGS_MAX_HEADER_LIST_SIZE); larger
    /// gets a 431.
    pub max_header_list_size: u32,
}

impl Default for Protocols {
    fn default() -> Self {
        Protocols {
            http1: true,
            http2: true,
            prefer_http1: false,
            h2c: false,
            max_concurrent_streams: 100,
            initial_window_size: 65_535,
            max_frame_size: 16_384,
            max_header_list_size: 65_536,
        }
    }
}

impl Protocols {
    /// The ALPN protocol names a TLS server offers, in its order of preference.
    pub fn alpn(&self) -> Vec<Vec<u8>> {
        let mut names = Vec::new();
        if self.http2 {
            names.push(b"h2".to_vec());
        }
        if self.http1 {
            let at = if self.prefer_http1 { 0 } else { names.len() };
            names.insert(at, b"http/1.1".to_vec());
        }
        names
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        let limits = HeadLimits::default();
        ServerConfig {
            timeout: Duration::from_secs(10),
            max_request_header_size: limits.max_request_header_size,
            max_request_body_size: limits.max_request_body_size,
            max_request_line: limits.max_request_line,
            max_header_count: limits.max_header_count,
            max_header_field: limits.max_header_field,
            prefetch_body_limit: 64 * 1024,
            drain_limit: 256 * 1024,
            server_software: concat!("Stogie/", env!("CARGO_PKG_VERSION")).to_string(),
            protocol: "HTTP/1.1".to_string(),
            allow_underscore_headers: limits.allow_underscore_headers,
            stats_enabled: false,
            access_log: None,
            trusted_proxies: TrustedPeers::parse("127.0.0.1,::1").expect("a valid list"),
            time_requests: false,
            protocols: Protocols::default(),
        }
    }
}

impl ServerConfig {
    /// The largest head the reader will buffer before answering 431.
    pub fn head_limit(&self) -> usize {
        HeadLimits::from(self).head_limit()
    }
}

impl From<&ServerConfig> for HeadLimits {
    fn from(cfg: &ServerConfig) -> HeadLimits {
        HeadLimits {
            max_request_line: cfg.max_request_line,
            max_header_count: cfg.max_header_count,
            max_header_field: cfg.max_header_field,
            max_request_header_size: cfg.max_request_header_size,
            max_request_body_size: cfg.max_request_body_size,
            allow_underscore_headers: cfg.allow_underscore_headers,
        }
    }
}

/// A [`ServerConfig`] that can be replaced while the server runs.
#[derive(Clone, Debug, Default)]
pub struct LiveConfig {
    inner: Arc<RwLock<Arc<ServerConfig>>>,
}

impl LiveConfig {
    /// Wraps a starting configuration.
    pub fn new(config: ServerConfig) -> Self {
        LiveConfig {
            inner: Arc::new(RwLock::new(Arc::new(config))),
        }
    }

    /// The configuration in force now.
    pub fn get(&self) -> Arc<ServerConfig> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes the configuration for every request that starts after this call.
    pub fn update(&self, change: impl FnOnce(&mut ServerConfig)) {
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut next = (**guard).clone();
        change(&mut next);
        *guard = Arc::new(next);
    }
}
