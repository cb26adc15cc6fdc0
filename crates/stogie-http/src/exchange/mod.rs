//! A request from its head to the gateway and back, whatever protocol carries it: what
//! crosses the `Gateway` seam (a request going in, response events coming back; both sides
//! usable from plain threads or async code), the hand-over with its back-off (`dispatch.rs`),
//! the body on its way to the app (`body.rs`), and the record the access log and the metrics
//! read (`record.rs`). A protocol's connection drives these; they never call into it.

use crate::addr::{LocalAddr, PeerAddr};
use crate::message::{HeadRoom, RequestHead};

pub(crate) mod body;
pub(crate) mod dispatch;
mod event;
pub(crate) mod forwarded;
pub mod gateway;
pub(crate) mod pipe;
pub(crate) mod record;
pub(crate) mod refuse;
mod response;

pub use body::RequestBody;
pub use event::ResponseEvent;
pub use response::{ClientGone, ResponseSender};

/// One request handed to a [`crate::Gateway`].
#[derive(Debug)]
pub struct Request {
    /// The validated head.
    pub head: RequestHead,
    /// The client.
    pub peer: PeerAddr,
    /// The listening address the request came in on.
    pub local: LocalAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Whether [`ResponseEvent::File`] may be used (plain TCP or UNIX, not TLS).
    pub can_sendfile: bool,
    /// The connection's TLS facts (`None` over plain TCP or UNIX), shared by its requests.
    pub tls: Option<std::sync::Arc<crate::tls_env::TlsInfo>>,
    /// What trusted proxies in front say of the client (its address, the scheme, host and
    /// port it used), when they say anything.
    pub forwarded: Option<Box<crate::ops::proxy::Forwarded>>,
    /// The request body.
    pub body: RequestBody,
    /// Where the response goes.
    pub response: ResponseSender,
    /// Buffers to build the response head in.
    pub head_room: HeadRoom,
}
