//! What the trusted proxies in front say of the client, read once per request.

use crate::addr::PeerAddr;
use crate::config::ServerConfig;
use crate::error::HttpError;
use crate::message::RequestHead;
use crate::ops::proxy::{self, Forwarded};

/// What a request carries of what the proxies say: nothing, mostly (boxed: it is rare).
pub(crate) type Vouched = Option<Box<Forwarded>>;

/// What the trusted proxies in front of `peer` say of the client, if they say anything; an
/// error when what they say contradicts itself (answered 400, before the app).
pub(crate) fn forwarded(
    head: &RequestHead,
    peer: &PeerAddr,
    cfg: &ServerConfig,
) -> Result<Vouched, HttpError> {
    let peer = match peer {
        PeerAddr::Tcp(a) => Some(a.ip()),
        PeerAddr::Unix(_) => None,
    };
    let f = proxy::forwarded(head, peer, &cfg.trusted_proxies)?;
    Ok((!f.is_empty()).then(|| Box::new(f)))
}
