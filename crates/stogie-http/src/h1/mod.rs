//! HTTP/1.1: the codec (bytes in, values out: nothing in [`head`] (with `scan`), [`body`] or [`response`]
//! touches a socket, so all of it can be unit-tested and fuzzed) and the connection that
//! drives it.

pub mod body;
pub(crate) mod conn;
mod encoder;
mod exchange;
pub mod head;
pub(crate) mod outbuf;
pub mod response;
mod scan;
