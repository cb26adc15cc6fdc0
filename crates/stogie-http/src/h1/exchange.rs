//! One request/response exchange on an HTTP/1 connection: the body read ahead or streamed
//! to the app (chunked or by length, with `100 Continue` on the app's first read), the
//! request handed to the gateway, and its response events framed onto the wire. What is
//! the same whatever the protocol (the hand-over, the body's channel, the record) is
//! [`crate::exchange`]'s.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use super::body::{BodyDecoder, Decoded};
use super::conn::{timed, Conn, READ_CHUNK};
use super::encoder::BodyEncoder;
use super::head::{BodyFraming, ParsedHead};
use super::response::{self, ResponseContext, ResponseFraming};
use crate::config::ServerConfig;
use crate::error::{BodyError, HttpError};
use crate::exchange::body::{self, BodyFeed, Demand, Room};
use crate::exchange::dispatch::{dispatch, wait_for_room};
use crate::exchange::forwarded::{forwarded, Vouched};
use crate::exchange::pipe;
use crate::exchange::record::Record;
use crate::exchange::{Request, RequestBody, ResponseEvent, ResponseSender};
use crate::log::LogLevel;
use crate::message::{HeadRoom, Version};
use crate::stats::Stats;
use crate::transport::Transport;

/// Queued response bytes that make a write happen before the rest of a batch is framed.
const FLUSH_AT: usize = 256 * 1024;

/// How the response in progress goes on the wire, and what it came to.
pub(super) struct Outgoing {
    version: Version,
    is_head: bool,
    keep_alive: bool,
    head_sent: bool,
    body: BodyEncoder,
    close: bool,
    done: bool,
    /// What the access log and the metrics keep of the exchange.
    record: Record,
}

/// A request body on its way from the socket to the app.
struct Pump {
    feed: BodyFeed,
    demand: Demand,
    decoder: BodyDecoder,
    failed: bool,
}

enum Step {
    /// Response events were taken (`true`), or the gateway dropped the response (`false`).
    Events(bool),
    /// The app asked for the body (`true`) or dropped it unread (`false`).
    Demand(bool),
    Pumped(Result<bool, ()>),
}

impl<S: Transport> Conn<S> {
    /// Runs one request/response exchange; returns whether the connection stays open. What
    /// it came to is counted for the metrics and written to the access log.
    pub(super) async fn exchange(&mut self, head: ParsedHead, cfg: &Arc<ServerConfig>) -> bool {
        // As Cheroot, answer in the lower of the request's and the server's protocol; a
        // 1.1 request answered in 1.0 has not asked for 1.0 keep-alive, so it closes.
        let downgrade = head.version == Version::Http11 && cfg.protocol == "HTTP/1.0";
        let version = if downgrade {
            Version::Http10
        } else {
            head.version
        };
        let forwarded = forwarded(&head, &self.peer, cfg);
        let record = Record::begin(
            cfg,
            &head,
            forwarded.as_ref().ok().and_then(|f| f.as_deref()),
        );
        let mut out = Outgoing {
            version,
            is_head: head.is_head(),
            keep_alive: head.keep_alive && !downgrade,
            head_sent: false,
            body: BodyEncoder::new(ResponseFraming::NoBody),
            close: false,
            done: false,
            record,
        };
        let keep = match forwarded {
            Ok(forwarded) => self.answer(head, forwarded, cfg, &mut out).await,
            Err(e) => {
                self.refuse_request(&e, &mut out, cfg).await;
                false
            }
        };
        out.record.finish(cfg, &self.shared.stats, &self.peer);
        keep
    }

    /// Refuses the request in hand before it reaches the app: counted and answered as
    /// `err`, then the connection closes.
    async fn refuse_request(&mut self, err: &HttpError, out: &mut Outgoing, cfg: &ServerConfig) {
        out.record.answer(&self.shared.stats, err.code());
        out.record.sent = err.message().len() as u64;
        self.refuse(err, out.version, cfg).await;
    }

    /// Hands the request to the gateway and sends its response.
    async fn answer(
        &mut self,
        head: ParsedHead,
        forwarded: Vouched,
        cfg: &Arc<ServerConfig>,
        out: &mut Outgoing,
    ) -> bool {
        let (body, mut pump) = match self.take_body(&head, cfg).await {
            Ok(b) => b,
            Err(e) => {
                self.refuse_request(&e.as_http(), out, cfg).await;
                return false;
            }
        };

        let (resp_tx, mut resp_rx) = pipe::pipe();
        let request = Request {
            head: head.head,
            peer: self.peer.clone(),
            local: self.shared.local.clone(),
            scheme: self.shared.scheme,
            can_sendfile: self.stream.can_sendfile(),
            tls: self.stream.tls_info().cloned(),
            forwarded,
            body,
            response: ResponseSender::new(resp_tx),
            head_room: HeadRoom::new(),
        };
        let handed = match dispatch(&*self.shared.gateway, request) {
            Ok(()) => true,
            Err(back) => wait_for_room(&*self.shared.gateway, back).await,
        };
        if !handed {
            self.refuse_request(&HttpError::ServiceUnavailable, out, cfg)
                .await;
            return false;
        }
        let mut batch = VecDeque::new();

        loop {
            let pumping = pump
                .as_ref()
                .is_some_and(|p| p.feed.is_open() && !p.demand.is_waiting());
            let waiting_demand = pump.as_ref().is_some_and(|p| p.demand.is_waiting());
            let step = {
                let stream = &mut self.stream;
                let buf = &mut self.buf;
                let stats = &self.shared.stats;
                let (feed, demand) = match pump.as_mut() {
                    Some(p) => (Some((&mut p.feed, &mut p.decoder)), Some(&mut p.demand)),
                    None => (None, None),
                };
                tokio::select! {
                    biased;
                    got = resp_rx.recv_all(&mut batch) => Step::Events(got),
                    read = async move {
                        match demand {
                            Some(d) => d.wait().await,
                            None => false,
                        }
                    }, if waiting_demand => Step::Demand(read),
                    r = pump_step(stream, buf, feed, stats, cfg.timeout), if pumping => Step::Pumped(r),
                }
            };
            match step {
                Step::Events(got) => {
                    if pump.as_ref().is_some_and(|p| p.demand.is_waiting()) {
                        // Answering an `Expect: 100-continue` request before its body was
                        // asked for: the client may or may not send the body now, so the
                        // connection closes, and the response says so (RFC 9110 §10.1.1).
                        out.keep_alive = false;
                    }
                    if !got {
                        // The gateway dropped the response without finishing it.
                        let _ = self.fail(&HttpError::Internal, out, cfg).await;
                        return false;
                    }
                    // Everything that was waiting is framed, then leaves in as few writes
                    // as possible.
                    while let Some(ev) = batch.pop_front() {
                        if out.done {
                            break;
                        }
                        if self.on_event(ev, out, cfg).await.is_err() {
                            return false;
                        }
                    }
                    batch.clear();
                    if self.flush(cfg).await.is_err() {
                        return false;
                    }
                    if out.done {
                        break;
                    }
                }
                Step::Demand(false) => {
                    // The app dropped the body unread: no 100 Continue, and since the
                    // client may or may not send the body now, the connection closes.
                    let p = pump.as_mut().unwrap();
                    p.demand.settle();
                    p.feed.close();
                    p.failed = true;
                    out.keep_alive = false;
                }
                Step::Demand(true) => {
                    let p = pump.as_mut().unwrap();
                    p.demand.settle();
                    if !out.head_sent {
                        self.wbuf
                            .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        if self.flush(cfg).await.is_err() {
                            return false;
                        }
                    }
                }
                Step::Pumped(r) => {
                    let p = pump.as_mut().unwrap();
                    match r {
                        Ok(true) => p.feed.close(),
                        Ok(false) => {}
                        Err(()) => {
                            p.feed.close();
                            p.failed = true;
                        }
                    }
                }
            }
        }
        drop(resp_rx);

        let mut keep = out.keep_alive && !out.close;
        if let Some(mut p) = pump {
            p.feed.close();
            if p.failed || p.demand.is_waiting() {
                keep = false;
            } else if keep && !p.decoder.is_done() {
                keep = self.drain(&mut p.decoder, cfg).await;
            }
        }
        keep
    }

    /// Decides how the body reaches the app: read now (small), or streamed.
    async fn take_body(
        &mut self,
        head: &ParsedHead,
        cfg: &ServerConfig,
    ) -> Result<(RequestBody, Option<Pump>), BodyError> {
        let mut decoder = match head.framing {
            BodyFraming::None => return Ok((RequestBody::full(Bytes::new()), None)),
            BodyFraming::Length(n) => {
                if n <= cfg.prefetch_body_limit && !head.expect_continue {
                    self.fill(n as usize, cfg).await?;
                    return Ok((
                        RequestBody::full(self.buf.split_to(n as usize).freeze()),
                        None,
                    ));
                }
                BodyDecoder::length(n)
            }
            BodyFraming::Chunked => BodyDecoder::chunked(cfg.max_request_body_size),
        };
        let mut pending = VecDeque::new();
        if matches!(head.framing, BodyFraming::Chunked) && !head.expect_continue {
            let (pieces, complete) = self.prefetch_chunked(&mut decoder, cfg).await?;
            if complete {
                let data = match pieces.len() {
                    0 => Bytes::new(),
                    1 => pieces.into_iter().next().unwrap_or_default(),
                    _ => Bytes::from(pieces.concat()),
                };
                return Ok((RequestBody::full(data), None));
            }
            pending.extend(pieces);
        }
        let (body, feed, demand) = body::streamed(head.expect_continue, pending);
        let pump = Pump {
            feed,
            demand,
            decoder,
            failed: false,
        };
        Ok((body, Some(pump)))
    }

    /// Reads more body bytes into the buffer, waiting at most `timeout` for the client.
    async fn read_body(&mut self, want: usize, cfg: &ServerConfig) -> Result<(), BodyError> {
        read_body(
            &mut self.stream,
            &mut self.buf,
            &self.shared.stats,
            cfg.timeout,
            want,
        )
        .await
    }

    /// Reads `n` body bytes into the buffer (for bodies read before the app runs).
    async fn fill(&mut self, n: usize, cfg: &ServerConfig) -> Result<(), BodyError> {
        while self.buf.len() < n {
            self.read_body((n - self.buf.len()).min(READ_CHUNK * 4), cfg)
                .await?;
        }
        Ok(())
    }

    /// Reads a chunked body ahead while it stays small; returns the pieces and whether
    /// the body is complete.
    async fn prefetch_chunked(
        &mut self,
        dec: &mut BodyDecoder,
        cfg: &ServerConfig,
    ) -> Result<(Vec<Bytes>, bool), BodyError> {
        let mut pieces = Vec::new();
        let mut total = 0u64;
        loop {
            match dec.decode(&mut self.buf)? {
                Decoded::Data(b) => {
                    total += b.len() as u64;
                    pieces.push(b);
                    if total > cfg.prefetch_body_limit {
                        return Ok((pieces, false));
                    }
                }
                Decoded::Done => return Ok((pieces, true)),
                Decoded::NeedMore => self.read_body(READ_CHUNK, cfg).await?,
            }
        }
    }

    /// Discards the rest of a body the app did not read, within the drain limit.
    async fn drain(&mut self, decoder: &mut BodyDecoder, cfg: &ServerConfig) -> bool {
        let mut drained = 0u64;
        loop {
            match decoder.decode(&mut self.buf) {
                Ok(Decoded::Data(b)) => {
                    drained += b.len() as u64;
                    if drained > cfg.drain_limit {
                        return false;
                    }
                }
                Ok(Decoded::Done) => return true,
                Ok(Decoded::NeedMore) => {
                    if self.read_body(READ_CHUNK, cfg).await.is_err() {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Applies one response event; `Err` means the connection must close now.
    async fn on_event(
        &mut self,
        ev: ResponseEvent,
        out: &mut Outgoing,
        cfg: &ServerConfig,
    ) -> Result<(), ()> {
        match ev {
            ResponseEvent::Abort => return self.fail(&HttpError::Internal, out, cfg).await,
            ResponseEvent::Drop => {
                if out.head_sent {
                    let _ = self.flush(cfg).await;
                }
                return Err(());
            }
            ResponseEvent::Refuse(err) => {
                if let Some(why) = err.refusal() {
                    self.shared.stats.metrics().refused(why);
                }
                return self.fail(&err, out, cfg).await;
            }
            ResponseEvent::Head { head, body, end } => {
                if out.head_sent {
                    return self.fail(&HttpError::Internal, out, cfg).await;
                }
                let ctx = ResponseContext {
                    version: out.version,
                    is_head: out.is_head,
                    keep_alive: out.keep_alive && !self.shared.stop.is_ending(),
                    server: &cfg.server_software,
                    keep_alive_timeout: cfg.timeout,
                };
                let encoded = response::encode_head(self.wbuf.buf_mut(), &head, &ctx);
                match encoded {
                    Ok(e) if matches!(e.framing, ResponseFraming::Length(n) if body.len() as u64 > n) =>
                    {
                        // The first bytes already overrun the app's Content-Length, and
                        // nothing went out yet: a 500 (Cheroot's answer) is still possible.
                        self.shared.log.log(
                            LogLevel::Warning,
                            "Response body exceeds the declared Content-Length; answering 500",
                        );
                        return self.fail(&HttpError::ContentLengthExceeded, out, cfg).await;
                    }
                    Ok(e) => {
                        out.head_sent = true;
                        out.record.answer(&self.shared.stats, e.code);
                        out.body = BodyEncoder::new(e.framing);
                        out.close = e.close;
                        out.record.response_head(cfg, &head);
                    }
                    Err(msg) => {
                        self.shared.log.log(
                            LogLevel::Error,
                            &format!("Refused to send the response: {msg}"),
                        );
                        return self.fail(&HttpError::Internal, out, cfg).await;
                    }
                }
                self.push_body(body, out, cfg).await?;
                if end {
                    self.finish(out);
                }
            }
            // Body events before a head are a gateway bug: answer 500 rather than send them.
            _ if !out.head_sent => return self.fail(&HttpError::Internal, out, cfg).await,
            ResponseEvent::Body(b) => self.push_body(b, out, cfg).await?,
            ResponseEvent::Bodies(v) => {
                for b in v {
                    self.push_body(b, out, cfg).await?;
                }
            }
            ResponseEvent::File { file, offset, len } => {
                self.send_file(file, offset, len, out, cfg).await?;
            }
            ResponseEvent::End => self.finish(out),
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Outgoing) {
        let short = out.body.finish(&mut self.wbuf);
        if short > 0 {
            self.shared.log.log(
                LogLevel::Warning,
                &format!("Response ended {short} bytes short of its Content-Length; closing the connection"),
            );
            out.close = true;
        }
        out.done = true;
    }

    /// Ends the exchange with an error: its answer if nothing was sent yet, else whatever
    /// is queued; the connection then closes.
    async fn fail(
        &mut self,
        err: &HttpError,
        out: &mut Outgoing,
        cfg: &ServerConfig,
    ) -> Result<(), ()> {
        if out.head_sent {
            let _ = self.flush(cfg).await;
        } else {
            out.record.answer(&self.shared.stats, err.code());
            out.record.sent = err.message().len() as u64;
            self.write_error(err, out.version, cfg).await;
        }
        Err(())
    }

    /// Frames body bytes and queues them (copying small ones, writing large ones).
    async fn push_body(
        &mut self,
        mut data: Bytes,
        out: &mut Outgoing,
        cfg: &ServerConfig,
    ) -> Result<(), ()> {
        if data.is_empty() || out.done {
            return Ok(());
        }
        let Some((len, cut)) = out.body.admit(data.len() as u64) else {
            return Ok(());
        };
        if cut {
            self.shared.log.log(
                LogLevel::Warning,
                "Response has more bytes than its Content-Length; truncating and closing the connection",
            );
            data.truncate(len as usize);
            out.close = true;
        }
        out.record.sent += len;
        out.body.before(&mut self.wbuf, data.len());
        self.queue(data, cfg).await?;
        out.body.after(&mut self.wbuf);
        if out.close && out.body.is_length_done() {
            out.done = true;
        }
        Ok(())
    }

    async fn queue(&mut self, data: Bytes, cfg: &ServerConfig) -> Result<(), ()> {
        self.wbuf.push(data);
        if self.wbuf.len() >= FLUSH_AT || self.wbuf.is_full() {
            self.flush(cfg).await?;
        }
        Ok(())
    }

    async fn send_file(
        &mut self,
        file: File,
        offset: u64,
        len: Option<u64>,
        out: &mut Outgoing,
        cfg: &ServerConfig,
    ) -> Result<(), ()> {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let len = len
            .unwrap_or(size.saturating_sub(offset))
            .min(size.saturating_sub(offset));
        let Some((len, cut)) = out.body.admit(len) else {
            return Ok(());
        };
        if cut {
            out.close = true;
        }
        if len == 0 && out.body.is_chunked() {
            return Ok(());
        }
        out.body.before(&mut self.wbuf, len as usize);
        self.flush(cfg).await?;
        out.record.sent += len;
        let mut off = offset;
        let end = offset + len;
        while off < end {
            let want = (end - off).min(1 << 30) as usize;
            match timed(cfg.timeout, self.stream.sendfile(&file, off, want)).await {
                Ok(Ok(0)) => return Err(()),
                Ok(Ok(n)) => {
                    off += n as u64;
                    self.shared.stats.add_written(n);
                }
                _ => {
                    self.shared.stats.add_socket_error();
                    return Err(());
                }
            }
        }
        out.body.after(&mut self.wbuf);
        Ok(())
    }
}

/// Reads more request-body bytes into `buf` (room for `want` more), waiting at most `wait`
/// for the client: its end is a truncated body, its silence a timeout.
async fn read_body<S: Transport>(
    stream: &mut S,
    buf: &mut BytesMut,
    stats: &Stats,
    wait: std::time::Duration,
    want: usize,
) -> Result<(), BodyError> {
    buf.reserve(want);
    match timed(wait, stream.read_buf(buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Err(BodyError::Truncated),
        Ok(Ok(n)) => {
            stats.add_read(n);
            Ok(())
        }
        Err(_) => Err(BodyError::Timeout),
    }
}

/// Moves one piece of request body from the socket to the app. `Ok(true)`: the body is
/// complete (or the app dropped it: what is left is drained after the response). `Err`:
/// the body failed (the error was sent to the app).
///
/// Only the wait for the client's bytes is timed: waiting for room in the channel is
/// waiting for the app, which may take its time before reading.
async fn pump_step<S: Transport>(
    stream: &mut S,
    buf: &mut BytesMut,
    pump: Option<(&mut BodyFeed, &mut BodyDecoder)>,
    stats: &Stats,
    wait: std::time::Duration,
) -> Result<bool, ()> {
    let Some((feed, decoder)) = pump else {
        return Ok(false);
    };
    let permit = match feed.room().await {
        Room::Closed => return Ok(true),
        Room::SentPending => return Ok(false),
        Room::Free(permit) => permit,
    };
    loop {
        match decoder.decode(buf) {
            Ok(Decoded::Data(b)) => {
                permit.send(Ok(b));
                return Ok(false);
            }
            Ok(Decoded::Done) => return Ok(true),
            Ok(Decoded::NeedMore) => {
                if let Err(e) = read_body(stream, buf, stats, wait, READ_CHUNK).await {
                    permit.send(Err(e));
                    return Err(());
                }
            }
            Err(e) => {
                permit.send(Err(e));
                return Err(());
            }
        }
    }
}
