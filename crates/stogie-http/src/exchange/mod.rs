//! What crosses the `Gateway` seam: a request (head, peer, body) going in, response events
//! coming back. Both sides can be used from plain threads (blocking) or from async code.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::error::BodyError;
use crate::message::{HeadRoom, RequestHead, ResponseHead};
use pipe::{PipeSender, SendError};

pub mod gateway;
pub(crate) mod pipe;

/// Credentials of the process at the other end of a UNIX socket (SO_PEERCRED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id, when the kernel tells it.
    pub pid: Option<i32>,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Who the client is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAddr {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A UNIX socket peer, with its credentials when asked for.
    Unix(Option<PeerCred>),
}

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalAddr {
    /// A TCP address (the port resolved when 0 was asked).
    Tcp(SocketAddr),
    /// A UNIX socket path.
    Unix(PathBuf),
    /// A Linux abstract socket name (without the leading NUL).
    Abstract(Vec<u8>),
}

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

/// A request body: already read, or streamed from the connection as the reader asks.
#[derive(Debug)]
pub struct RequestBody {
    inner: BodyInner,
    demand: Option<oneshot::Sender<()>>,
    terminated: bool,
}

#[derive(Debug)]
enum BodyInner {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Result<Bytes, BodyError>>),
    Failed(BodyError),
}

impl RequestBody {
    /// A body that is already complete (possibly empty).
    pub fn full(data: Bytes) -> Self {
        let data = if data.is_empty() { None } else { Some(data) };
        RequestBody {
            inner: BodyInner::Full(data),
            demand: None,
            terminated: true,
        }
    }

    /// A body that arrives through `rx`; `demand` fires on the first read (for
    /// `Expect: 100-continue`).
    pub(crate) fn stream(
        rx: mpsc::Receiver<Result<Bytes, BodyError>>,
        demand: Option<oneshot::Sender<()>>,
    ) -> Self {
        RequestBody {
            inner: BodyInner::Stream(rx),
            demand,
            terminated: false,
        }
    }

    /// Whether the whole body was in hand when the request was handed over.
    pub fn is_complete(&self) -> bool {
        self.terminated
    }

    fn signal_demand(&mut self) {
        if let Some(d) = self.demand.take() {
            let _ = d.send(());
        }
    }

    /// The next piece of the body, blocking the calling thread; `None` at the end.
    /// Must not be called from inside an async runtime.
    pub fn blocking_next(&mut self) -> Option<Result<Bytes, BodyError>> {
        self.signal_demand();
        match &mut self.inner {
            BodyInner::Full(data) => data.take().map(Ok),
            BodyInner::Stream(rx) => {
                let got = rx.blocking_recv();
                self.finish(got)
            }
            BodyInner::Failed(e) => Some(Err(e.clone())),
        }
    }

    /// The next piece of the body; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<Bytes, BodyError>> {
        self.signal_demand();
        match &mut self.inner {
            BodyInner::Full(data) => data.take().map(Ok),
            BodyInner::Stream(rx) => {
                let got = rx.recv().await;
                self.finish(got)
            }
            BodyInner::Failed(e) => Some(Err(e.clone())),
        }
    }

    /// Keeps an error sticky: once the body failed, every later read fails the same way.
    fn finish(
        &mut self,
        got: Option<Result<Bytes, BodyError>>,
    ) -> Option<Result<Bytes, BodyError>> {
        match got {
            Some(Err(e)) => {
                self.inner = BodyInner::Failed(e.clone());
                Some(Err(e))
            }
            None => {
                self.inner = BodyInner::Full(None);
                None
            }
            ok => ok,
        }
    }
}

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
}

impl std::fmt::Debug for ResponseSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseSender")
    }
}

impl ResponseSender {
    pub(crate) fn new(tx: PipeSender) -> Self {
        ResponseSender { tx }
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
