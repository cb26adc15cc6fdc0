//! The steps of a response, as the gateway sends them to the connection.

use std::fs::File;

use bytes::Bytes;

use crate::message::ResponseHead;

/// One step of a response, sent by the gateway to the connection.
#[derive(Debug)]
pub enum ResponseEvent {
    /// The head, optionally with the first body bytes, and whether that is all.
    Head {
        /// Status and headers.
        head: ResponseHead,
        /// Body bytes to send with the head (one write for small responses).
        body: Bytes,
        /// Whether the response is complete.
        end: bool,
    },
    /// More body bytes.
    Body(Bytes),
    /// Several body pieces, written together.
    Bodies(Vec<Bytes>),
    /// Part of a file, sent with sendfile where the transport allows it.
    File {
        /// The open file.
        file: File,
        /// Where to start.
        offset: u64,
        /// How many bytes; `None` up to the end of the file.
        len: Option<u64>,
    },
    /// The response is complete.
    End,
    /// The application failed: a 500 if nothing was sent yet, else the connection closes.
    Abort,
    /// The application asked the server to stop (Python's `KeyboardInterrupt` or
    /// `SystemExit`): the connection closes without an answer, as Cheroot's does.
    Drop,
    /// Answer with this error (if nothing was sent yet) and close: a body framing error
    /// surfaced through the app's read gets its 400/413, not a 500.
    Refuse(crate::error::HttpError),
}
