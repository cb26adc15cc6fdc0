//! One HTTP/2 connection: the handshake (with the server's timeout), the settings that make
//! the `h2` crate safe to face the internet (its defaults allow unlimited streams and
//! 16 MiB of headers), streams run in the connection's task ([`super::streams`]), and the connection's end:
//! GOAWAY when the server drains or stops, when the connection has been idle for the
//! timeout, or (ENHANCE_YOUR_CALM) when the client floods it with frames of no request.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use h2::Reason;
use tokio::sync::Semaphore;
use tokio::time::{sleep, timeout, Instant};

use super::meter::{Metered, Tripped};
use super::stream::{self, StreamCtx};
use super::streams::StreamSet;
use crate::addr::PeerAddr;
use crate::log::LogLevel;
use crate::shared::{Open, Shared};
use crate::transport::Transport;

/// How long a connection is idle before its streams' storage is freed (it has one request
/// after another, or is idle for long: a browser's, a proxy's spare connection).
const RELEASE_AFTER: Duration = Duration::from_secs(1);

/// Serves an HTTP/2 connection until it closes. `open` counts it among the server's open
/// connections for as long as it lives.
pub(crate) async fn serve<S: Transport>(io: S, peer: PeerAddr, shared: Arc<Shared>, open: Open) {
    let _open = open;
    let cfg = shared.config.get();
    let p = &cfg.protocols;
    let tls = io.tls_info().cloned();
    let tripped = Arc::new(Tripped::default());
    // The handshake's state (a codec of its own, about 1.4 KB) is boxed and gone once it
    // ends: inline, the connection's future would keep room for it beside the connection's
    // own state for as long as the connection lives (an idle connection's memory). The
    // builder is scoped to a block and the result never named: a local in the function's
    // scope keeps its room in the future until the function ends, used or not.
    let handshake = {
        let mut builder = h2::server::Builder::new();
        builder
            .max_concurrent_streams(p.max_concurrent_streams)
            .initial_window_size(p.initial_window_size)
            // The connection's window spans its streams' (each stream's buffered body is
            // bounded by its own window: capacity goes back only as the app takes the
            // pieces).
            .initial_connection_window_size(
                p.initial_window_size
                    .saturating_mul(p.max_concurrent_streams.min(16))
                    .max(65_535),
            )
            .max_frame_size(p.max_frame_size)
            .max_header_list_size(p.max_header_list_size);
        Box::pin(builder.handshake::<_, Bytes>(Metered::new(io, tripped.clone())))
    };
    let mut conn = {
        let stopped = shared.stop.notified();
        if shared.stop.is_set() {
            return;
        }
        match tokio::select! {
            r = timeout(cfg.timeout, handshake) => r,
            _ = stopped => return,
        } {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                log_end(&shared, &peer, &e);
                return;
            }
            Err(_) => return,
        }
    };
    let trusted = match &peer {
        PeerAddr::Tcp(a) => cfg.trusted_proxies.trusts(a.ip()),
        PeerAddr::Unix(_) => true,
    };
    let ctx = Arc::new(StreamCtx {
        shared: shared.clone(),
        peer: peer.clone(),
        tls,
        jobs: Arc::new(Semaphore::new(p.max_concurrent_streams.max(1) as usize)),
        trusted,
    });
    let mut streams = StreamSet::new();
    let mut closing = false;
    let mut calmed = false;
    let mut trip = pin!(tripped.wait());
    let mut ending = pin!(shared.stop.ending_notified());
    // Armed once and moved on only when it fires early: a connection that is never idle
    // for long costs no timer work per request (at most a reset per RELEASE_AFTER).
    let mut idle_timer = pin!(sleep(cfg.timeout.min(RELEASE_AFTER)));
    let mut idle_since = Some(Instant::now());
    let ended = poll_fn(|cx| {
        if !calmed {
            if let Poll::Ready(refused) = trip.as_mut().poll(cx) {
                match refused {
                    None => {
                        shared.log.log(
                            LogLevel::Warning,
                            &format!("{peer}: HTTP/2 connection closed: too many frames that carry no request (PING, SETTINGS, RST_STREAM, PRIORITY, empty DATA)"),
                        );
                        conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                    }
                    Some(reason) => {
                        if shared.log.enabled(LogLevel::Debug) {
                            shared.log.log(
                                LogLevel::Debug,
                                &format!("{peer}: HTTP/2 connection ended: a frame the protocol forbids ({reason:?})"),
                            );
                        }
                        conn.abrupt_shutdown(reason);
                    }
                }
                calmed = true;
                closing = true;
            }
        }
        if !closing && (ending.as_mut().poll(cx).is_ready() || shared.stop.is_ending()) {
            // A drain or a stop: streams in flight finish, no new ones start.
            conn.graceful_shutdown();
            closing = true;
        }
        loop {
            // The streams first, then the connection: it writes what they all queued at
            // once, and reads (and takes) the next requests.
            streams.poll(cx);
            match conn.poll_accept(cx) {
                Poll::Ready(Some(Ok((req, respond)))) => {
                    streams.push(Box::pin(stream::serve(req, respond, ctx.clone())));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(e)),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => break,
            }
        }
        if !streams.is_empty() || closing {
            idle_since = None;
            return Poll::Pending;
        }
        let since = *idle_since.get_or_insert_with(Instant::now);
        while idle_timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if now >= since + cfg.timeout {
                // Idle for the timeout: told to go away (and reconnect when it needs to).
                conn.graceful_shutdown();
                closing = true;
                cx.waker().wake_by_ref();
                break;
            }
            if now >= since + RELEASE_AFTER {
                streams.release();
            }
            let next = if streams.holds_storage() {
                since + RELEASE_AFTER
            } else {
                since + cfg.timeout
            };
            idle_timer.as_mut().reset(next);
        }
        Poll::Pending
    })
    .await;
    if let Some(e) = ended {
        log_end(&shared, &peer, &e);
    }
    // What the connection still has to send (a GOAWAY) goes before it closes; the streams
    // still waiting for their app finish (their answers have nowhere to go, but they are
    // logged and counted).
    let mut closed = false;
    // The idle timer serves as the deadline (one timer's room in the future, not two).
    idle_timer.as_mut().reset(Instant::now() + cfg.timeout);
    poll_fn(|cx| {
        let done = streams.poll_all_ended(cx).is_ready();
        if !closed {
            closed = idle_timer.as_mut().poll(cx).is_ready() || conn.poll_closed(cx).is_ready();
        }
        if done && closed {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

fn log_end(shared: &Shared, peer: &PeerAddr, err: &h2::Error) {
    if shared.log.enabled(LogLevel::Debug) {
        shared.log.log(
            LogLevel::Debug,
            &format!("{peer}: HTTP/2 connection ended: {err}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tls::TlsStream;
    use tokio::net::TcpStream;

    fn future_size<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The connection's future is most of an idle connection's own memory (the `h2` crate's
    /// connection, about 1.3 KB, and ours). It was 4.8 KB while the handshake's state had
    /// room of its own beside the connection's: a change that brings that back fails here.
    #[test]
    fn an_idle_connection_future_stays_small() {
        for size in [
            future_size(serve::<TcpStream>),
            future_size(serve::<TlsStream<TcpStream>>),
        ] {
            assert!(
                size < 3_000,
                "the HTTP/2 connection's future is {size} bytes"
            );
        }
    }
}
