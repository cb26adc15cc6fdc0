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
