//! The gateway's end of a response's pipe.

use super::event::ResponseEvent;
use super::pipe::{PipeSender, SendError};

/// The client has gone away (or the connection was cut): stop producing the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientGone;

impl std::fmt::Display for ClientGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client connection is closed")
    }
}

impl std::error::Error for ClientGone {}

/// The gateway's end of the response pipe. Bounded by bytes (128 KiB): a slow client
/// slows the producer down instead of growing memory.
#[derive(Clone)]
pub struct ResponseSender {
    tx: PipeSender,
    /// The place this request holds among its connection's jobs (HTTP/2: no more of one
    /// connection's streams queued or running than it may have open), given back when the
    /// gateway is done with the response, whatever became of the stream.
    _job: Option<std::sync::Arc<tokio::sync::OwnedSemaphorePermit>>,
}

impl std::fmt::Debug for ResponseSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseSender")
    }
}

impl ResponseSender {
    pub(crate) fn new(tx: PipeSender) -> Self {
        ResponseSender { tx, _job: None }
    }

    /// A sender that holds `job` until the gateway drops it.
    pub(crate) fn holding(tx: PipeSender, job: tokio::sync::OwnedSemaphorePermit) -> Self {
        ResponseSender {
            tx,
            _job: Some(std::sync::Arc::new(job)),
        }
    }

    /// Sends without waiting when there is room, else reports the event back (with
    /// `true` when the connection is gone).
    pub fn try_send(&self, ev: ResponseEvent) -> Result<(), (ResponseEvent, bool)> {
        self.try_send_as(ev, false)
    }

    /// [`ResponseSender::try_send`]; `last`: the gateway knows that only the response's end
    /// follows this event (its Content-Length is reached), so that a thread holding the
    /// wakes of finished responses ([`crate::hold_final_wakes`]) holds this one too.
    pub fn try_send_as(&self, ev: ResponseEvent, last: bool) -> Result<(), (ResponseEvent, bool)> {
        self.tx.try_send(ev, last).map_err(|e| match e {
            SendError::Full(ev) => (ev, false),
            SendError::Closed(ev) => (ev, true),
        })
    }

    /// Sends, blocking the calling thread while too many bytes wait for the socket.
    /// Must not be called from inside an async runtime.
    pub fn blocking_send(&self, ev: ResponseEvent) -> Result<(), ClientGone> {
        self.blocking_send_as(ev, false)
    }

    /// [`ResponseSender::blocking_send`], with `last` as in [`ResponseSender::try_send_as`].
    pub fn blocking_send_as(&self, ev: ResponseEvent, last: bool) -> Result<(), ClientGone> {
        self.tx.blocking_send(ev, last).map_err(|_| ClientGone)
    }

    /// Sends, waiting while too many bytes wait for the socket.
    pub async fn send(&self, ev: ResponseEvent) -> Result<(), ClientGone> {
        self.tx.send(ev).await.map_err(|_| ClientGone)
    }

    /// Whether the connection has stopped listening for this response.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}
