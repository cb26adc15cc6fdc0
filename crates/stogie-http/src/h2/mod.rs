//! HTTP/2 over the `h2` crate (hyperium's; never a codec of our own): the connection and
//! its settings ([`conn`]), a stream's head into the protocol-neutral head under HTTP/1's
//! rules ([`head`]), one stream's exchange with flow control both ways ([`stream`]), and a
//! meter on frames that carry no request ([`meter`]). What a request is, and how it reaches
//! the gateway and comes back, is [`crate::exchange`]'s, as for HTTP/1.

mod conn;
mod head;
mod meter;
mod stream;
mod streams;

pub(crate) use conn::serve;

/// What an HTTP/2 connection opens with (RFC 9113 §3.4): how a cleartext one is told from
/// HTTP/1.
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
