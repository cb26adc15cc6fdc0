//! One HTTP/2 connection: the handshake (with the server's timeout), the settings that make
//! the `h2` crate safe to face the internet (its defaults allow unlimited streams and
//! 16 MiB of headers), streams handed to their own tasks, and the connection's end:
//! GOAWAY when the server drains or stops, when the connection has been idle for the
//! timeout, or (ENHANCE_YOUR_CALM) when the client floods it with frames of no request.

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use h2::Reason;
use tokio::sync::{Notify, Semaphore};
use tokio::time::{sleep, timeout};

use super::meter::{Metered, Tripped};
use super::stream::{self, StreamCtx};
use crate::addr::PeerAddr;
use crate::log::LogLevel;
use crate::shared::{Open, Shared};
use crate::transport::Transport;

/// Streams of one connection alive (in their tasks), and a wake-up for the connection when
/// the last one ends (its idle time starts then).
#[derive(Default)]
struct Live {
    count: AtomicUsize,
    idle: Notify,
}

/// A stream counted in [`Live`] for as long as its task runs.
struct LiveStream(Arc<Live>);

impl Drop for LiveStream {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_one();
        }
    }
}

/// Serves an HTTP/2 connection until it closes. `open` counts it among the server's open
/// connections for as long as it lives.
pub(crate) async fn serve<S: Transport>(io: S, peer: PeerAddr, shared: Arc<Shared>, open: Open) {
    let _open = open;
    let cfg = shared.config.get();
    let p = &cfg.protocols;
    let tls = io.tls_info().cloned();
    let tripped = Arc::new(Tripped::default());
    let io = Metered::new(io, tripped.clone());
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(p.max_concurrent_streams)
        .initial_window_size(p.initial_window_size)
        // The connection's window spans its streams' (each stream's buffered body is bounded
        // by its own window: capacity goes back only as the app takes the pieces).
        .initial_connection_window_size(
            p.initial_window_size
                .saturating_mul(p.max_concurrent_streams.min(16))
                .max(65_535),
        )
        .max_frame_size(p.max_frame_size)
        .max_header_list_size(p.max_header_list_size);
    let handshake = {
        let stopped = shared.stop.notified();
        if shared.stop.is_set() {
            return;
        }
        tokio::select! {
            r = timeout(cfg.timeout, builder.handshake::<_, Bytes>(io)) => r,
            _ = stopped => return,
        }
    };
    let mut conn = match handshake {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            log_end(&shared, &peer, &e);
            return;
        }
        Err(_) => return,
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
    let live = Arc::new(Live::default());
    let mut closing = false;
    let mut calmed = false;
    loop {
        let ending = shared.stop.ending_notified();
        if shared.stop.is_ending() && !closing {
            // A drain or a stop: streams in flight finish, no new ones start.
            conn.graceful_shutdown();
            closing = true;
        }
        let idle = live.count.load(Ordering::Acquire) == 0;
        let became_idle = live.idle.notified();
        tokio::select! {
            biased;
            refused = tripped.wait(), if !calmed => {
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
            _ = ending, if !closing => {}
            accepted = conn.accept() => match accepted {
                Some(Ok((req, respond))) => {
                    live.count.fetch_add(1, Ordering::AcqRel);
                    let alive = LiveStream(live.clone());
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        stream::serve(req, respond, ctx).await;
                        drop(alive);
                    });
                }
                Some(Err(e)) => {
                    log_end(&shared, &peer, &e);
                    break;
                }
                None => break,
            },
            _ = became_idle, if !idle => {}
            _ = sleep(cfg.timeout), if idle && !closing => {
                // Idle for the timeout: told to go away (and reconnect when it needs to).
                conn.graceful_shutdown();
                closing = true;
            }
        }
    }
    // What the connection still has to send (a GOAWAY) goes before it closes.
    let _ = timeout(cfg.timeout, poll_fn(|cx| conn.poll_closed(cx))).await;
}

fn log_end(shared: &Shared, peer: &PeerAddr, err: &h2::Error) {
    if shared.log.enabled(LogLevel::Debug) {
        shared.log.log(
            LogLevel::Debug,
            &format!("{peer}: HTTP/2 connection ended: {err}"),
        );
    }
}
