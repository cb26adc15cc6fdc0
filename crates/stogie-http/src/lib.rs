//! stogie-http: the HTTP/1.1 server of stogie, in pure Rust.
//!
//! It owns the sockets, the request codec ([`h1`]), body framing, the response writer,
//! timeouts and graceful shutdown. Whatever answers requests sits behind the [`Gateway`]
//! trait, as in Cheroot's `server.Gateway`; the WSGI gateway lives in another crate.

#![warn(missing_docs)]

pub mod accesslog;
pub mod config;
mod conn;
pub mod error;
pub mod exchange;
pub mod h1;
mod idle;
pub mod listener;
pub mod metrics;
mod outbuf;
mod pipe;
pub mod proxy;
pub mod server;
pub mod stats;
pub mod transport;

use std::time::Duration;

pub use config::{LiveConfig, ServerConfig};
pub use error::HttpError;
pub use exchange::{
    ClientGone, LocalAddr, PeerAddr, PeerCred, Request, RequestBody, ResponseEvent, ResponseSender,
};
pub use h1::body::BodyError;
pub use h1::head::{Header, RequestHead, Version};
pub use h1::response::{HeadRoom, ResponseHead};
pub use listener::{BindAddr, ListenOptions, Listener};
pub use pipe::{hold_final_wakes, HeldWakes};
pub use server::{EngineOptions, HttpServer, MetricsEndpoint};
pub use stats::{Stats, StatsSnapshot};

/// Whatever answers requests: takes each request and, sooner or later, sends its response
/// events through `request.response`.
pub trait Gateway: Send + Sync + 'static {
    /// Takes a request. Returns it back when there is no room now (a full queue); the
    /// connection then retries until [`Gateway::queue_timeout`] and answers 503.
    // The request comes back by value: the busy path is rare, and boxing would cost an
    // allocation on every request.
    #[allow(clippy::result_large_err)]
    fn dispatch(&self, request: Request) -> Result<(), Request>;

    /// How long a request may wait for room in the gateway's queue.
    fn queue_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    /// How loaded the gateway is, for the metrics: requests queued, workers busy, workers.
    fn load(&self) -> (usize, usize, usize) {
        (0, 0, 0)
    }
}

/// Severity of an engine log message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Detail for debugging.
    Debug,
    /// Normal events.
    Info,
    /// Something went wrong for one request or connection.
    Warning,
    /// Something the operator must look at.
    Error,
}

/// Where the engine reports errors (the Python side routes this to `logging`).
pub trait ErrorLog: Send + Sync + 'static {
    /// Records one message.
    fn log(&self, level: LogLevel, msg: &str);
}

/// An [`ErrorLog`] that writes to standard error.
#[derive(Debug, Default, Clone, Copy)]
pub struct StderrLog;

impl ErrorLog for StderrLog {
    fn log(&self, level: LogLevel, msg: &str) {
        eprintln!("stogie {level:?}: {msg}");
    }
}
