//! How a response body is framed on an HTTP/1 connection (by its length, in chunks, or up to
//! the close) and how much of a declared length is left. The connection queues and writes;
//! this only says what goes around each piece and how much of it may go.

use super::outbuf::OutBuf;
use super::response::{chunk_header, ResponseFraming};

/// The framing of the response in progress.
pub(crate) struct BodyEncoder {
    framing: ResponseFraming,
    /// Bytes the app's Content-Length still allows.
    remaining: u64,
}

impl BodyEncoder {
    /// An encoder for a body framed as `framing`.
    pub fn new(framing: ResponseFraming) -> Self {
        let remaining = match framing {
            ResponseFraming::Length(n) => n,
            _ => 0,
        };
        BodyEncoder { framing, remaining }
    }

    /// Whether the body goes in chunks.
    pub fn is_chunked(&self) -> bool {
        self.framing == ResponseFraming::Chunked
    }

    /// Whether a declared length has been sent in full.
    pub fn is_length_done(&self) -> bool {
        matches!(self.framing, ResponseFraming::Length(_)) && self.remaining == 0
    }

    /// How much of `len` more body bytes may go, and whether they were cut to the declared
    /// length; `None` when the response carries no body. What is allowed is counted off.
    pub fn admit(&mut self, len: u64) -> Option<(u64, bool)> {
        match self.framing {
            ResponseFraming::NoBody => None,
            ResponseFraming::Length(_) => {
                let n = len.min(self.remaining);
                self.remaining -= n;
                Some((n, n < len))
            }
            ResponseFraming::Chunked | ResponseFraming::Close => Some((len, false)),
        }
    }

    /// Queues what goes before a piece of `len` bytes (a chunk's size line).
    pub fn before(&self, out: &mut OutBuf, len: usize) {
        if self.is_chunked() {
            chunk_header(out.buf_mut(), len);
        }
    }

    /// Queues what goes after a piece (a chunk's CRLF).
    pub fn after(&self, out: &mut OutBuf) {
        if self.is_chunked() {
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Ends the body: queues the last chunk, or returns how many bytes short of its
    /// declared length it ended (the client can only tell by the connection's close).
    pub fn finish(&self, out: &mut OutBuf) -> u64 {
        match self.framing {
            ResponseFraming::Chunked => {
                out.extend_from_slice(b"0\r\n\r\n");
                0
            }
            ResponseFraming::Length(_) => self.remaining,
            _ => 0,
        }
    }
}
