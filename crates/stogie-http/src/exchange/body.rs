//! A request body on its way to the app: the app's end ([`RequestBody`]), and the
//! connection's end ([`BodyFeed`]: the channel the pieces go through, and the app's first
//! read, which a `100 Continue` waits for). Which bytes are body is the protocol's business;
//! moving them to the app at the pace it reads is this module's.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::sync::mpsc::{self, Permit};
use tokio::sync::oneshot;

use crate::error::BodyError;

/// Pieces of a streamed request body waiting for the app.
const BODY_CHANNEL: usize = 4;

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

/// A piece of body, or the error that ended it, as the app receives it.
type Piece = Result<Bytes, BodyError>;

/// The connection's end of a body streamed to the app.
pub(crate) struct BodyFeed {
    /// `None` once the body is complete, failed, or dropped by the app.
    tx: Option<mpsc::Sender<Piece>>,
    /// Pieces read before the body was handed over, sent first.
    pending: VecDeque<Bytes>,
}

/// What [`BodyFeed::room`] found.
pub(crate) enum Room<'a> {
    /// The feed is closed, or the app dropped the body: nothing more goes to the app.
    Closed,
    /// A piece read ahead went to the app.
    SentPending,
    /// Room for the next piece.
    Free(Permit<'a, Piece>),
}

impl BodyFeed {
    /// Waits until the app has room for a piece (the wait for the app is not timed: it may
    /// take its time before it reads).
    pub async fn room(&mut self) -> Room<'_> {
        let Some(tx) = self.tx.as_ref() else {
            return Room::Closed;
        };
        let Ok(permit) = tx.reserve().await else {
            return Room::Closed;
        };
        match self.pending.pop_front() {
            Some(piece) => {
                permit.send(Ok(piece));
                Room::SentPending
            }
            None => Room::Free(permit),
        }
    }

    /// Whether pieces may still go to the app.
    pub fn is_open(&self) -> bool {
        self.tx.is_some()
    }

    /// Ends the feed: the app's next read after what it has is the body's end (or the
    /// error it was sent).
    pub fn close(&mut self) {
        self.tx = None;
    }
}

/// The app's first read of a body it has not been sent yet (`Expect: 100-continue`): the
/// client sends the body only after a `100 Continue`, and that goes out only once the app
/// asks, so that an app that refuses the upload costs the client nothing.
pub(crate) struct Demand {
    rx: Option<oneshot::Receiver<()>>,
}

impl Demand {
    /// Whether the app has neither read nor dropped the body yet.
    pub fn is_waiting(&self) -> bool {
        self.rx.is_some()
    }

    /// Waits for the app's first read (`true`), or for the body to be dropped unread
    /// (`false`). Call only while [`Demand::is_waiting`].
    pub async fn wait(&mut self) -> bool {
        match self.rx.as_mut() {
            Some(rx) => rx.await.is_ok(),
            None => false,
        }
    }

    /// The app has answered; nothing more to wait for.
    pub fn settle(&mut self) {
        self.rx = None;
    }
}

/// A body that streams to the app: the app's end, the connection's end, and, when the
/// client waits for `100 Continue` (`expect_continue`), the app's first read. `pending`:
/// pieces already read, which go first.
pub(crate) fn streamed(
    expect_continue: bool,
    pending: VecDeque<Bytes>,
) -> (RequestBody, BodyFeed, Demand) {
    let (tx, rx) = mpsc::channel(BODY_CHANNEL);
    let (demand_tx, demand_rx) = if expect_continue {
        let (a, b) = oneshot::channel();
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    (
        RequestBody::stream(rx, demand_tx),
        BodyFeed {
            tx: Some(tx),
            pending,
        },
        Demand { rx: demand_rx },
    )
}
