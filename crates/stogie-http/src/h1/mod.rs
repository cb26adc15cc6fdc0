//! The HTTP/1.1 codec: bytes in, values out. Nothing here touches a socket, so all of it can
//! be unit-tested and fuzzed.

pub mod body;
pub mod head;
pub mod response;
