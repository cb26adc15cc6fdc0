//! Operations: the access log, the metrics (and their `/metrics` endpoint), and what proxies
//! in front say of the client. Bytes or values in, values out: the engine calls them, and
//! they never call back into a protocol or a connection.

pub mod accesslog;
pub mod metrics;
pub mod proxy;
