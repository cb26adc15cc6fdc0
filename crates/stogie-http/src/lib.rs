//! stogie-http: the HTTP server of stogie, in pure Rust.
//!
//! It owns the sockets, the request codec ([`h1`]), body framing, the response writer,
//! timeouts and graceful shutdown. Whatever answers requests sits behind the [`Gateway`]
//! trait, as in Cheroot's `server.Gateway`; the WSGI gateway lives in another crate.
//!
//! Every accepted socket goes through one pipeline (a PROXY protocol header, a TLS
//! handshake, then the protocol's connection driver). A request is the same whatever
//! protocol carries it ([`message`], [`exchange`]); only the framing is per protocol
//! ([`h1`], and HTTP/2 over the `h2` crate in `h2`). The operations side ([`ops`]: access log, metrics, proxies) is called by the
//! engine and never calls back.

#![warn(missing_docs)]

mod accept;
pub mod addr;
pub mod config;
pub mod error;
pub mod exchange;
pub mod h1;
mod h2;
mod idle;
pub mod listener;
mod log;
pub mod message;
pub mod ops;
pub mod server;
mod shared;
pub mod stats;
mod stop;
pub mod tls_env;
pub mod transport;

pub use addr::{LocalAddr, PeerAddr, PeerCred};
pub use config::{LiveConfig, Protocols, ServerConfig};
pub use error::{BodyError, HttpError};
pub use exchange::gateway::Gateway;
pub use exchange::pipe::{hold_final_wakes, HeldWakes};
pub use exchange::{ClientGone, Request, RequestBody, ResponseEvent, ResponseSender};
pub use listener::{BindAddr, ListenOptions, Listener};
pub use log::{ErrorLog, LogLevel, StderrLog};
pub use message::{HeadRoom, Header, RequestHead, ResponseHead, Version};
pub use ops::metrics::MetricsEndpoint;
pub use server::{EngineOptions, HttpServer};
pub use stats::{Stats, StatsSnapshot};
pub use tls_env::TlsInfo;
pub use transport::tls::{ClientAuth, Identity, TlsAcceptor, TlsConfig, TlsError, TlsVersion};
