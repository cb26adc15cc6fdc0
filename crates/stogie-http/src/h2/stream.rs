//! One HTTP/2 stream: its head checked and handed to the gateway (holding one of its
//! connection's job places), its body moved to the app as the app makes room (the window
//! the client sees is what the app has room for), and the app's response sent through the
//! stream's send window, never reserving capacity before the data is in hand.

use std::collections::VecDeque;
use std::fs::File;
use std::future::poll_fn;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use super::head::{error_head, refused_head, request_head, response_head, Refused};
use crate::addr::PeerAddr;
use crate::config::ServerConfig;
use crate::error::{BodyError, HttpError};
use crate::exchange::body::{self, BodyFeed, Demand, Room};
use crate::exchange::dispatch::{dispatch, wait_for_room};
use crate::exchange::forwarded::forwarded;
use crate::exchange::pipe;
use crate::exchange::record::Record;
use crate::exchange::{Request, RequestBody, ResponseEvent, ResponseSender};
use crate::log::LogLevel;
use crate::message::{HeadLimits, HeadRoom};
use crate::shared::Shared;
use crate::tls_env::TlsInfo;

/// The largest DATA frame the response is cut into (the client's frame size limit is the
/// crate's business; this bounds what one send holds).
const SEND_PIECE: usize = 64 * 1024;

/// What a connection's streams share.
pub(crate) struct StreamCtx {
    pub shared: Arc<Shared>,
    pub peer: PeerAddr,
    pub tls: Option<Arc<TlsInfo>>,
    /// Places for the connection's requests queued or running in the pool.
    pub jobs: Arc<Semaphore>,
    /// Whether the peer is a trusted proxy, whose `:scheme` is believed.
    pub trusted: bool,
}

/// The request body on its way from the stream to the app.
struct Pump {
    feed: BodyFeed,
    demand: Demand,
    recv: RecvStream,
}

/// How the response goes out.
struct Out {
    send: Option<SendStream<Bytes>>,
    is_head: bool,
    no_body: bool,
    /// Bytes still owed to the app's Content-Length.
    remaining: Option<u64>,
    /// The stream's end went out (or a reset): nothing more is sent.
    ended: bool,
    /// The app's response is complete (or failed): the exchange is over.
    done: bool,
    record: Record,
}

/// Serves one stream to its end.
pub(crate) async fn serve(
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    ctx: Arc<StreamCtx>,
) {
    let cfg = ctx.shared.config.get();
    let (parts, recv) = req.into_parts();
    let limits = HeadLimits::from(&*cfg);
    let head = match request_head(&parts, &limits) {
        Ok(h) => h,
        Err(refused) => {
            let mut record = Record::begin(&cfg, &refused_head(&parts), None);
            match refused {
                Refused::Answer(e) => answer_error(&mut respond, &e, &cfg, &ctx, &mut record),
                Refused::Malformed(why) => {
                    // Counted and logged as the 400 HTTP/1 would answer; the client gets
                    // the stream error HTTP/2 prescribes (RFC 9113 §8.1.1).
                    let err = HttpError::BadRequest(why);
                    if let Some(r) = err.refusal() {
                        ctx.shared.stats.metrics().refused(r);
                    }
                    record.answer(&ctx.shared.stats, err.code());
                    if ctx.shared.log.enabled(LogLevel::Debug) {
                        ctx.shared.log.log(
                            LogLevel::Debug,
                            &format!("{}: HTTP/2 stream refused: {why}", ctx.peer),
                        );
                    }
                    respond.send_reset(Reason::PROTOCOL_ERROR);
                }
            }
            record.finish(&cfg, &ctx.shared.stats, &ctx.peer);
            return;
        }
    };
    let mut vouched = forwarded(&head.head, &ctx.peer, &cfg);
    if let (Ok(v), true, Some(scheme)) = (&mut vouched, ctx.trusted, head.scheme) {
        // A trusted proxy speaking h2c says in `:scheme` what its client used. The same
        // scheme as the connection's says nothing new: no word from the proxies to carry
        // (and apply to the environ) for it.
        if scheme != ctx.shared.scheme {
            let f = v.get_or_insert_with(Default::default);
            f.scheme.get_or_insert(scheme);
        }
    }
    let mut record = Record::begin(
        &cfg,
        &head.head,
        vouched.as_ref().ok().and_then(|f| f.as_deref()),
    );
    let vouched = match vouched {
        Ok(v) => v,
        Err(e) => {
            answer_error(&mut respond, &e, &cfg, &ctx, &mut record);
            record.finish(&cfg, &ctx.shared.stats, &ctx.peer);
            return;
        }
    };
    // A place among the connection's jobs, unless the client gives up on the stream first:
    // however fast it opens and resets streams, no more of its requests than it may have
    // open reach the pool.
    let job = tokio::select! {
        biased;
        p = ctx.jobs.clone().acquire_owned() => p.ok(),
        _ = poll_fn(|cx| respond.poll_reset(cx)) => None,
    };
    let Some(job) = job else {
        record.finish(&cfg, &ctx.shared.stats, &ctx.peer);
        return;
    };
    let is_head = head.head.is_head();
    let (body, pump) = match take_body(recv, &head, &cfg, &ctx.shared.stats).await {
        Ok(b) => b,
        Err(e) => {
            answer_error(&mut respond, &e.as_http(), &cfg, &ctx, &mut record);
            record.finish(&cfg, &ctx.shared.stats, &ctx.peer);
            return;
        }
    };
    let (resp_tx, resp_rx) = pipe::pipe();
    let request = Request {
        head: head.head,
        peer: ctx.peer.clone(),
        local: ctx.shared.local.clone(),
        scheme: ctx.shared.scheme,
        can_sendfile: false,
        tls: ctx.tls.clone(),
        forwarded: vouched,
        body,
        response: ResponseSender::holding(resp_tx, job),
        head_room: HeadRoom::new(),
    };
    let handed = match dispatch(&*ctx.shared.gateway, request) {
        Ok(()) => true,
        Err(back) => wait_for_room(&*ctx.shared.gateway, back).await,
    };
    if !handed {
        answer_error(
            &mut respond,
            &HttpError::ServiceUnavailable,
            &cfg,
            &ctx,
            &mut record,
        );
        record.finish(&cfg, &ctx.shared.stats, &ctx.peer);
        return;
    }
    let mut out = Out {
        send: None,
        is_head,
        no_body: false,
        remaining: None,
        ended: false,
        done: false,
        record,
    };
    let pump = exchange(&mut respond, resp_rx, pump, &mut out, &cfg, &ctx).await;
    // An answer complete while the client still sends (RFC 9113 §8.1): the crate resets the
    // stream with NO_ERROR when its handles (the body's among them) are dropped, after the
    // answer's frames, and gives the unread window back to the connection. (An explicit
    // send_reset would drop the answer still queued: the client would get the reset alone.)
    drop(pump);
    out.record.finish(&cfg, &ctx.shared.stats, &ctx.peer);
}

/// The engine's own answer (an error before the app), if the stream is still there.
fn answer_error(
    respond: &mut SendResponse<Bytes>,
    err: &HttpError,
    cfg: &ServerConfig,
    ctx: &StreamCtx,
    record: &mut Record,
) {
    if let Some(why) = err.refusal() {
        ctx.shared.stats.metrics().refused(why);
    }
    record.answer(&ctx.shared.stats, err.code());
    let message = Bytes::from_static(err.message().as_bytes());
    if let Ok(mut send) = respond.send_response(error_head(err, &cfg.server_software), false) {
        record.sent = message.len() as u64;
        // Small: it fits the stream's initial window, so it goes without waiting.
        send.reserve_capacity(message.len());
        let _ = send.send_data(message, true);
    }
}

/// Reads a small body whose length was declared before the app runs (so that a Python
/// thread never waits for it), or sets up the stream to the app.
async fn take_body(
    mut recv: RecvStream,
    head: &super::head::StreamHead,
    cfg: &ServerConfig,
    stats: &crate::stats::Stats,
) -> Result<(RequestBody, Option<Pump>), BodyError> {
    if recv.is_end_stream() {
        return Ok((RequestBody::full(Bytes::new()), None));
    }
    match head.content_length {
        Some(n) if n <= cfg.prefetch_body_limit && !head.head.expect_continue => {
            let mut data = BytesMut::with_capacity(n as usize);
            while let Some(piece) = timeout(cfg.timeout, recv.data())
                .await
                .map_err(|_| BodyError::Timeout)?
            {
                let piece = piece.map_err(|_| BodyError::Truncated)?;
                let _ = recv.flow_control().release_capacity(piece.len());
                stats.add_read(piece.len());
                if data.len() + piece.len() > n as usize {
                    return Err(BodyError::Malformed(
                        "The request body is longer than its Content-Length.",
                    ));
                }
                data.extend_from_slice(&piece);
            }
            if (data.len() as u64) < n {
                return Err(BodyError::Truncated);
            }
            Ok((RequestBody::full(data.freeze()), None))
        }
        _ => {
            let (body, feed, demand) = body::streamed(head.head.expect_continue, VecDeque::new());
            Ok((body, Some(Pump { feed, demand, recv })))
        }
    }
}

enum Step {
    Events(bool),
    Demand(bool),
    Pumped(Result<bool, BodyError>),
    Reset,
}

/// Runs the exchange until the response is complete, failed or reset; gives back the body
/// pump, to see whether the client still sends.
async fn exchange(
    respond: &mut SendResponse<Bytes>,
    mut resp_rx: pipe::PipeReceiver,
    mut pump: Option<Pump>,
    out: &mut Out,
    cfg: &ServerConfig,
    ctx: &StreamCtx,
) -> Option<Pump> {
    let mut batch = VecDeque::new();
    let mut received = 0u64;
    loop {
        let pumping = pump
            .as_ref()
            .is_some_and(|p| p.feed.is_open() && !p.demand.is_waiting());
        let waiting_demand = pump.as_ref().is_some_and(|p| p.demand.is_waiting());
        let head_sent = out.send.is_some();
        let step = {
            let (feed, demand) = match pump.as_mut() {
                Some(p) => (Some((&mut p.feed, &mut p.recv)), Some(&mut p.demand)),
                None => (None, None),
            };
            let mut send = out.send.as_mut();
            tokio::select! {
                biased;
                got = resp_rx.recv_all(&mut batch) => Step::Events(got),
                _ = poll_fn(|cx| match send {
                    Some(ref mut s) => s.poll_reset(cx),
                    None => respond.poll_reset(cx),
                }) => Step::Reset,
                read = async move {
                    match demand {
                        Some(d) => d.wait().await,
                        None => false,
                    }
                }, if waiting_demand => Step::Demand(read),
                r = pump_step(feed, cfg, &ctx.shared.stats, &mut received), if pumping => Step::Pumped(r),
            }
        };
        match step {
            Step::Events(false) => {
                // The gateway dropped the response without finishing it.
                let _ = fail(respond, out, &HttpError::Internal, cfg, ctx);
                return pump;
            }
            Step::Events(true) => {
                while let Some(ev) = batch.pop_front() {
                    if out.done {
                        break;
                    }
                    if on_event(respond, ev, out, cfg, ctx).await.is_err() {
                        out.done = true;
                    }
                }
                batch.clear();
                if out.done {
                    return pump;
                }
            }
            Step::Reset => {
                // The client gave up on the stream: the app's next write sees it gone.
                return pump;
            }
            Step::Demand(read) => {
                let p = pump.as_mut().expect("a demand comes with a pump");
                p.demand.settle();
                if !read {
                    p.feed.close();
                } else if !head_sent {
                    let continue_ = http::Response::builder()
                        .status(100)
                        .body(())
                        .unwrap_or_default();
                    let _ = respond.send_informational(continue_);
                }
            }
            Step::Pumped(r) => {
                let p = pump.as_mut().expect("a pump step comes with a pump");
                match r {
                    Ok(true) => p.feed.close(),
                    Ok(false) => {}
                    Err(_) => p.feed.close(),
                }
            }
        }
    }
}

/// Moves one piece of body from the stream to the app, once the app has room; the window
/// given back to the client is what went to the app. `Ok(true)`: the body is complete.
async fn pump_step(
    feed: Option<(&mut BodyFeed, &mut RecvStream)>,
    cfg: &ServerConfig,
    stats: &crate::stats::Stats,
    received: &mut u64,
) -> Result<bool, BodyError> {
    let Some((feed, recv)) = feed else {
        return Ok(false);
    };
    let permit = match feed.room().await {
        Room::Closed => return Ok(true),
        Room::SentPending => return Ok(false),
        Room::Free(permit) => permit,
    };
    match timeout(cfg.timeout, recv.data()).await {
        Err(_) => {
            permit.send(Err(BodyError::Timeout));
            Err(BodyError::Timeout)
        }
        Ok(None) => Ok(true),
        Ok(Some(Err(_))) => {
            permit.send(Err(BodyError::Truncated));
            Err(BodyError::Truncated)
        }
        Ok(Some(Ok(piece))) => {
            let _ = recv.flow_control().release_capacity(piece.len());
            stats.add_read(piece.len());
            *received += piece.len() as u64;
            if cfg.max_request_body_size > 0 && *received > cfg.max_request_body_size {
                permit.send(Err(BodyError::TooLarge));
                return Err(BodyError::TooLarge);
            }
            permit.send(Ok(piece));
            Ok(recv.is_end_stream())
        }
    }
}

/// Applies one response event; `Err` ends the exchange.
async fn on_event(
    respond: &mut SendResponse<Bytes>,
    ev: ResponseEvent,
    out: &mut Out,
    cfg: &ServerConfig,
    ctx: &StreamCtx,
) -> Result<(), ()> {
    match ev {
        ResponseEvent::Abort => fail(respond, out, &HttpError::Internal, cfg, ctx),
        ResponseEvent::Drop => {
            // The app asked the server to stop: no answer, as HTTP/1 closes without one.
            reset(respond, out, Reason::CANCEL);
            Err(())
        }
        ResponseEvent::Refuse(err) => {
            if let Some(why) = err.refusal() {
                ctx.shared.stats.metrics().refused(why);
            }
            fail(respond, out, &err, cfg, ctx)
        }
        ResponseEvent::Head { head, body, end } => {
            if out.send.is_some() {
                return fail(respond, out, &HttpError::Internal, cfg, ctx);
            }
            let frame = match response_head(&head, out.is_head, &cfg.server_software) {
                Ok(f) => f,
                Err(msg) => {
                    ctx.shared.log.log(
                        LogLevel::Error,
                        &format!("Refused to send the response: {msg}"),
                    );
                    return fail(respond, out, &HttpError::Internal, cfg, ctx);
                }
            };
            if frame.content_length.is_some_and(|n| body.len() as u64 > n) && !frame.no_body {
                ctx.shared.log.log(
                    LogLevel::Warning,
                    "Response body exceeds the declared Content-Length; answering 500",
                );
                return fail(respond, out, &HttpError::ContentLengthExceeded, cfg, ctx);
            }
            out.record.answer(&ctx.shared.stats, frame.code);
            out.record.response_head(cfg, &head);
            out.no_body = frame.no_body;
            out.remaining = frame.content_length;
            // HEAD, 204 and 304 end with their head; so does an empty answer that is all
            // there is (unless it falls short of a Content-Length, which ends in a reset).
            let ends_now =
                frame.no_body || (end && body.is_empty() && out.remaining.is_none_or(|n| n == 0));
            match respond.send_response(frame.head, ends_now) {
                Ok(send) => out.send = Some(send),
                Err(_) => return Err(()),
            }
            out.ended = ends_now;
            // A body-less answer's body is still taken from the app (and dropped) to its end.
            push(out, body, cfg).await?;
            if end {
                finish(out, ctx).await;
            }
            Ok(())
        }
        _ if out.send.is_none() => fail(respond, out, &HttpError::Internal, cfg, ctx),
        ResponseEvent::Body(b) => push(out, b, cfg).await,
        ResponseEvent::Bodies(v) => {
            for b in v {
                push(out, b, cfg).await?;
            }
            Ok(())
        }
        ResponseEvent::File { file, offset, len } => send_file(out, file, offset, len, cfg).await,
        ResponseEvent::End => {
            finish(out, ctx).await;
            Ok(())
        }
    }
}

/// Ends the exchange with an error: its answer if nothing was sent yet, else a reset.
fn fail(
    respond: &mut SendResponse<Bytes>,
    out: &mut Out,
    err: &HttpError,
    cfg: &ServerConfig,
    ctx: &StreamCtx,
) -> Result<(), ()> {
    if out.send.is_none() {
        answer_error(respond, err, cfg, ctx, &mut out.record);
    } else {
        reset(respond, out, Reason::INTERNAL_ERROR);
    }
    Err(())
}

fn reset(respond: &mut SendResponse<Bytes>, out: &mut Out, reason: Reason) {
    match out.send.as_mut() {
        Some(s) => s.send_reset(reason),
        None => respond.send_reset(reason),
    }
    out.ended = true;
    out.done = true;
}

/// The response is complete: its end goes out, or a reset when it fell short of its
/// Content-Length (a clean end would tell the client a short body is whole).
async fn finish(out: &mut Out, ctx: &StreamCtx) {
    out.done = true;
    if out.ended {
        return;
    }
    out.ended = true;
    let Some(send) = out.send.as_mut() else {
        return;
    };
    match out.remaining {
        Some(n) if n > 0 => {
            ctx.shared.log.log(
                LogLevel::Warning,
                &format!(
                    "Response ended {n} bytes short of its Content-Length; resetting the stream"
                ),
            );
            // A reset drops the stream's frames not yet written: the connection's task is
            // let run first, so that the head and the bytes sent reach the client (which
            // then sees a status and a body cut short, not a bare reset).
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            send.send_reset(Reason::INTERNAL_ERROR);
        }
        _ => {
            let _ = send.send_data(Bytes::new(), true);
        }
    }
}

/// Sends body bytes through the stream's window, as the client gives room: a client that
/// gives none for `timeout` gets its stream reset (so the app's thread is let go).
async fn push(out: &mut Out, mut data: Bytes, cfg: &ServerConfig) -> Result<(), ()> {
    if out.no_body || out.ended || data.is_empty() {
        return Ok(());
    }
    if let Some(n) = out.remaining.as_mut() {
        if data.len() as u64 > *n {
            // More than the app declared: what fits goes, and the stream ends there.
            data.truncate(*n as usize);
        }
        *n -= data.len() as u64;
    }
    let end = out.remaining == Some(0);
    out.record.sent += data.len() as u64;
    let Some(send) = out.send.as_mut() else {
        return Err(());
    };
    send_all(send, data, end, cfg).await?;
    // At the declared length the stream ends with the last piece; the app's End then
    // finds nothing more to send.
    out.ended |= end;
    Ok(())
}

async fn send_all(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
    cfg: &ServerConfig,
) -> Result<(), ()> {
    while !data.is_empty() {
        let want = data.len().min(SEND_PIECE);
        send.reserve_capacity(want);
        let room = match send.capacity() {
            0 => match timeout(cfg.timeout, poll_fn(|cx| send.poll_capacity(cx))).await {
                Ok(Some(Ok(n))) => n,
                Ok(_) => return Err(()),
                Err(_) => {
                    send.send_reset(Reason::CANCEL);
                    return Err(());
                }
            },
            n => n,
        };
        if room == 0 {
            continue;
        }
        let piece = data.split_to(room.min(data.len()));
        let last = end && data.is_empty();
        send.send_data(piece, last).map_err(|_| ())?;
    }
    Ok(())
}

/// Sends part of a file (HTTP/2 has no sendfile: read, then sent as DATA).
async fn send_file(
    out: &mut Out,
    file: File,
    offset: u64,
    len: Option<u64>,
    cfg: &ServerConfig,
) -> Result<(), ()> {
    use std::os::unix::fs::FileExt;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let len = len
        .unwrap_or(size.saturating_sub(offset))
        .min(size.saturating_sub(offset));
    let mut off = offset;
    let end = offset + len;
    while off < end && !out.ended {
        let mut piece = vec![0u8; ((end - off) as usize).min(SEND_PIECE)];
        let n = file.read_at(&mut piece, off).map_err(|_| ())?;
        if n == 0 {
            break;
        }
        piece.truncate(n);
        off += n as u64;
        push(out, Bytes::from(piece), cfg).await?;
    }
    Ok(())
}
