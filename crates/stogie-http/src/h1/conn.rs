//! One HTTP/1 connection: wait for a request (parking when idle long), read its head, run
//! the exchange (`h1/exchange.rs`), then keep alive or close the way a client can still read
//! the answer (linger).

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::sync::futures::OwnedNotified;
use tokio::time::{sleep_until, timeout, Instant, Sleep};

use super::head::{self, ParsedHead};
use super::outbuf::OutBuf;
use super::response;
use crate::addr::PeerAddr;
use crate::config::ServerConfig;
use crate::error::HttpError;
use crate::exchange::record::Record;
use crate::exchange::refuse;
use crate::idle::{Parkable, PARK_AFTER};
use crate::message::{HeadLimits, Version};
use crate::shared::{Open, Shared};
use crate::transport::Transport;

/// Bytes read per read call while a head or body is coming in.
pub(super) const READ_CHUNK: usize = 16 * 1024;
/// The least a request head's buffer grows by while the head trickles in.
const HEAD_CHUNK: usize = 2 * 1024;
/// The I/O thread's buffer for the first read of a request: a head with a body of up to
/// the prefetch size comes in whole.
const SCRATCH_SIZE: usize = 64 * 1024;

thread_local! {
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; SCRATCH_SIZE].into_boxed_slice());
}

/// What a partial head already passed through the parser, so that a client trickling a long
/// head byte by byte does not cost a full parse per byte: the parser's answer can only
/// change when a line ends or when the line being received (or the whole head) nears a limit.
#[derive(Default)]
struct HeadScan {
    /// Bytes of the buffer the last parse saw.
    parsed: usize,
    /// Where the line being received starts.
    line_start: usize,
}

impl HeadScan {
    fn worth_parsing(&self, buf: &[u8], cfg: &HeadLimits) -> bool {
        if self.parsed == 0 || self.parsed > buf.len() || buf[self.parsed..].contains(&b'\n') {
            return true;
        }
        let line = buf.len() - self.line_start;
        line >= cfg.max_request_line.min(cfg.max_header_field) || buf.len() >= cfg.head_limit()
    }

    fn parsed(&mut self, buf: &[u8]) {
        self.parsed = buf.len();
        self.line_start = buf.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    }
}

enum HeadOutcome {
    Head(ParsedHead),
    Closed,
    /// Refused, with the start of the first line for the access log (when it is kept).
    Refused(HttpError, Option<Bytes>),
}

/// Serves one connection until it closes.
///
/// Not an `async fn`: its arguments would stay in the future beside the `Conn` made of
/// them, for the connection's whole life.
pub(crate) fn serve<S: Transport>(
    stream: S,
    peer: PeerAddr,
    shared: Arc<Shared>,
    open: Open,
) -> impl std::future::Future<Output = ()> + Send {
    drive(Conn {
        stream,
        peer,
        shared,
        buf: BytesMut::new(),
        wbuf: OutBuf::default(),
        _open: open,
        first: true,
        idle: None,
    })
}

/// Runs a connection until it closes, or until it has been idle long enough to park.
///
/// Not an `async fn`, for the reason given at [`serve`] (measured: 528 bytes against 376).
#[allow(clippy::manual_async_fn)]
fn drive<S: Transport>(mut conn: Conn<S>) -> impl std::future::Future<Output = ()> + Send {
    async move {
        if let Some(deadline) = conn.run().await {
            let lot = conn.shared.parked.clone();
            lot.park(Box::new(conn), deadline);
        }
    }
}

impl<S: Transport> Parkable for Conn<S> {
    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        self.stream.poll_read_ready(cx)
    }

    fn resume(self: Box<Self>) {
        tokio::spawn(drive(*self));
    }
}

pub(super) struct Conn<S> {
    pub(super) stream: S,
    pub(super) peer: PeerAddr,
    pub(super) shared: Arc<Shared>,
    /// Bytes read and not yet taken (a head, body bytes, a pipelined request).
    pub(super) buf: BytesMut,
    pub(super) wbuf: OutBuf,
    _open: Open,
    /// No request has come on this connection yet.
    first: bool,
    /// What it waits on between requests, made at its first wait (none while parked).
    idle: Option<Pin<Box<IdleWait>>>,
}

/// What a connection waits on between requests: its idle timer and the server's stop.
/// Made once and re-armed for each request: a timer and a notification made anew for every
/// request cost about 1,000 instructions of the I/O thread (callgrind), where moving a
/// timer that is still registered to a later deadline is one compare-and-swap.
struct IdleWait {
    sleep: Sleep,
    stopped: OwnedNotified,
}

impl IdleWait {
    fn project(self: Pin<&mut Self>) -> (Pin<&mut Sleep>, Pin<&mut OwnedNotified>) {
        // SAFETY: the fields are pinned with the struct and never moved out of it (it has
        // no `Drop`, and nothing else touches its fields).
        unsafe {
            let this = self.get_unchecked_mut();
            (
                Pin::new_unchecked(&mut this.sleep),
                Pin::new_unchecked(&mut this.stopped),
            )
        }
    }
}

/// What an idle connection does next.
enum Idle {
    /// Bytes came: read the request.
    Ready,
    /// Close (idle timeout, stop, or the client went away).
    Close,
    /// Idle for [`PARK_AFTER`]: park, closing at this deadline unless bytes come.
    Park(Instant),
}

impl<S: Transport> Conn<S> {
    /// Serves requests until the connection closes (`None`) or should park (its deadline).
    async fn run(&mut self) -> Option<Instant> {
        loop {
            let cfg = self.shared.config.get();
            let first = self.first;
            if self.buf.is_empty() {
                // An idle keep-alive connection holds no read or write buffer.
                self.wbuf.release();
                loop {
                    self.buf = BytesMut::new();
                    self.shared.stats.metrics().idle(1);
                    let idle = self.wait_idle(&cfg, first).await;
                    self.shared.stats.metrics().idle(-1);
                    match idle {
                        Idle::Ready => {}
                        Idle::Close => return None,
                        Idle::Park(deadline) => {
                            // A parked connection holds no timer and no place among the
                            // stop's waiters: the parking lot watches for both.
                            self.idle = None;
                            return Some(deadline);
                        }
                    }
                    // Readiness can be a guess (tokio takes a new connection for readable):
                    // only bytes in hand make the connection busy.
                    match self.read_now().await {
                        Some(Ok(0)) | Some(Err(_)) => return None,
                        Some(Ok(_)) => break,
                        None => continue,
                    }
                }
            }
            // Boxed: a request's state (head, exchange, body pump) lives on the heap only
            // while the request is in progress, so that the future of a connection waiting
            // for its next request stays small (10,000 idle connections must cost next to
            // nothing; see the size test below).
            if !Box::pin(self.serve_one(&cfg)).await {
                return None;
            }
            self.first = false;
        }
    }

    /// Waits, holding no buffer, until the client sends something, the idle timeout (or the
    /// server's stop) closes the connection, or it has been idle long enough to park. When
    /// the server is stopping, a new connection whose first request is already there still
    /// gets it answered.
    async fn wait_idle(&mut self, cfg: &ServerConfig, first: bool) -> Idle {
        let shared = &*self.shared;
        let stream = &mut self.stream;
        // The notification is made before the stop is looked at (on the connection's first
        // wait), so that no signal falls in between.
        let wait = self.idle.get_or_insert_with(|| {
            Box::pin(IdleWait {
                sleep: sleep_until(Instant::now()),
                stopped: shared.stop.notified_owned(),
            })
        });
        if shared.stop.is_set() {
            let ready =
                std::future::poll_fn(move |cx| Poll::Ready(stream.poll_read_ready(cx).is_ready()));
            return if first && ready.await {
                Idle::Ready
            } else {
                Idle::Close
            };
        }
        // Parking is for long waits; with a short timeout the connection just waits it out.
        let park = cfg.timeout > 2 * PARK_AFTER;
        let (mut sleep, stopped) = wait.as_mut().project();
        sleep
            .as_mut()
            .reset(Instant::now() + if park { PARK_AFTER } else { cfg.timeout });
        tokio::select! {
            r = std::future::poll_fn(move |cx| stream.poll_read_ready(cx)) => {
                if r.is_ok() { Idle::Ready } else { Idle::Close }
            }
            _ = sleep => if park {
                Idle::Park(Instant::now() + cfg.timeout.saturating_sub(PARK_AFTER))
            } else {
                Idle::Close
            },
            _ = stopped => Idle::Close,
        }
    }

    /// Reads what the socket has, without waiting: `None` if nothing yet, `Some(Ok(0))` at
    /// the client's end.
    ///
    /// The bytes land in the I/O thread's scratch buffer first and are copied into a buffer
    /// of their size: a request with its body (a 4 KiB POST) comes in with one read, where
    /// a small first buffer took three (one of them only to learn that nothing was left),
    /// and an idle connection still holds no buffer until its client sends something.
    async fn read_now(&mut self) -> Option<std::io::Result<usize>> {
        let stream = &mut self.stream;
        let buf = &mut self.buf;
        let got = std::future::poll_fn(move |cx| {
            SCRATCH.with_borrow_mut(|scratch| {
                let mut rb = ReadBuf::new(&mut scratch[..]);
                Poll::Ready(match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let got = rb.filled();
                        buf.extend_from_slice(got);
                        Some(Ok(got.len()))
                    }
                    Poll::Ready(Err(e)) => Some(Err(e)),
                    Poll::Pending => None,
                })
            })
        })
        .await;
        if let Some(Ok(n)) = got {
            self.shared.stats.add_read(n);
        }
        got
    }

    /// Reads one request and answers it; returns whether the connection stays open.
    async fn serve_one(&mut self, cfg: &Arc<ServerConfig>) -> bool {
        let head = match self.read_head(cfg).await {
            HeadOutcome::Head(h) => h,
            HeadOutcome::Closed => return false,
            HeadOutcome::Refused(e, line) => {
                let mut record = Record::unread(cfg, line);
                record.answer(&self.shared.stats, e.code());
                record.sent = e.message().len() as u64;
                Box::pin(self.refuse(&e, Version::Http11, cfg)).await;
                record.finish(cfg, &self.shared.stats, &self.peer);
                return false;
            }
        };
        let keep = self.exchange(head, cfg).await;
        if keep && self.buf.is_empty() && self.shared.stop.is_set() {
            // Idle now, as in read_head: nothing of the client's is left unread, so a
            // plain close loses nothing, and stop() need not wait out a linger.
            return false;
        }
        if !keep || self.shared.stop.is_set() {
            Box::pin(refuse::linger(&mut self.stream)).await;
            return false;
        }
        true
    }

    /// Reads one request head, the first bytes of which [`Conn::run`] has read. Once a
    /// request's first byte is in, its whole head must follow within `timeout`, however the
    /// bytes trickle in (else 408); blank lines before it do not count as a request.
    async fn read_head(&mut self, cfg: &ServerConfig) -> HeadOutcome {
        // The clock is read only when a head has to be waited for (usually the whole head
        // came in the first read), and again once its first byte is in.
        let mut deadline: Option<Instant> = None;
        let mut begun = false;
        let mut scan = HeadScan::default();
        let limits = HeadLimits::from(cfg);
        loop {
            if self.buf.starts_with(b"\r\n") {
                // RFC 9112 §2.2: empty lines before a request line are ignored. They do not
                // make an idle connection busy, so they cannot hold it open either.
                let _ = self.buf.split_to(2);
                scan = HeadScan::default();
                continue;
            }
            if !self.buf.is_empty() {
                if !begun {
                    begun = true;
                    deadline = None;
                }
                if scan.worth_parsing(&self.buf, &limits) {
                    match head::parse(&mut self.buf, limits) {
                        Ok(Some(h)) => return HeadOutcome::Head(h),
                        Ok(None) => scan.parsed(&self.buf),
                        // The parser leaves a head it refuses in the buffer.
                        Err(e) => {
                            let line = cfg.access_log.is_some().then(|| first_line(&self.buf));
                            return HeadOutcome::Refused(e, line);
                        }
                    }
                }
            }
            let idle = self.buf.is_empty();
            let stopped = self.shared.stop.notified();
            if idle && self.shared.stop.is_set() {
                // Nothing of a request is here (blank lines at most): close, first or not.
                return HeadOutcome::Closed;
            }
            // Heads are small: start with a small buffer and double it while a head grows
            // (the limits bound it), so that many connections cost little memory.
            if self.buf.capacity() - self.buf.len() < HEAD_CHUNK / 2 {
                self.buf.reserve(self.buf.len().max(HEAD_CHUNK));
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + cfg.timeout);
            tokio::select! {
                r = self.stream.read_buf(&mut self.buf) => match r {
                    // The client ended its side inside a head: what came cannot be a request.
                    Ok(0) if !idle => {
                        let line = cfg.access_log.is_some().then(|| first_line(&self.buf));
                        return HeadOutcome::Refused(HttpError::BadRequest("Illegal end of headers."), line);
                    }
                    Ok(0) | Err(_) => return HeadOutcome::Closed,
                    Ok(n) => self.shared.stats.add_read(n),
                },
                _ = sleep_until(deadline) => {
                    let line = cfg.access_log.is_some().then(|| first_line(&self.buf));
                    return if idle { HeadOutcome::Closed } else { HeadOutcome::Refused(HttpError::RequestTimeout, line) };
                }
                _ = stopped, if idle => return HeadOutcome::Closed,
            }
        }
    }

    /// Sends an error answer and closes.
    pub(super) async fn refuse(&mut self, err: &HttpError, version: Version, cfg: &ServerConfig) {
        if let Some(why) = err.refusal() {
            self.shared.stats.metrics().refused(why);
        }
        self.wbuf.clear();
        let answer = response::error_response(err, version, &cfg.server_software);
        refuse::refuse(&mut self.stream, &answer, cfg.timeout, &self.shared.stats).await;
    }

    /// Writes a short error answer in place of anything queued.
    pub(super) async fn write_error(
        &mut self,
        err: &HttpError,
        version: Version,
        cfg: &ServerConfig,
    ) {
        self.wbuf.clear();
        let bytes = response::error_response(err, version, &cfg.server_software);
        self.wbuf.extend_from_slice(&bytes);
        let _ = self.flush(cfg).await;
    }

    /// Writes everything queued, in vectored writes when large pieces are queued by
    /// reference. A client that takes nothing for `timeout` is cut off; one that keeps
    /// reading, however slowly, is not.
    pub(super) async fn flush(&mut self, cfg: &ServerConfig) -> Result<(), ()> {
        while !self.wbuf.is_empty() {
            let wrote = match self.wbuf.contiguous() {
                Some(data) => timed(cfg.timeout, self.stream.write(data)).await,
                None => {
                    // A response of a few pieces (a head and a body referenced, the usual
                    // case) lists them on the stack: a Vec per write was an allocation per
                    // response on the I/O thread.
                    let mut stack = [IoSlice::new(&[]); 8];
                    let mut heap: Vec<IoSlice<'_>>;
                    let slices = match self.wbuf.slices_into(&mut stack) {
                        Some(n) => &stack[..n],
                        None => {
                            heap = Vec::with_capacity(16);
                            self.wbuf.slices(&mut heap);
                            &heap[..]
                        }
                    };
                    timed(cfg.timeout, self.stream.write_vectored(slices)).await
                }
            };
            match wrote {
                Ok(Ok(n)) if n > 0 => {
                    self.wbuf.advance(n);
                    self.shared.stats.add_written(n);
                }
                _ => {
                    self.wbuf.clear();
                    self.shared.stats.add_socket_error();
                    return Err(());
                }
            }
        }
        // A TLS stream may hold records it could not write yet.
        if self.stream.buffers_writes()
            && !matches!(timed(cfg.timeout, self.stream.flush()).await, Ok(Ok(())))
        {
            self.shared.stats.add_socket_error();
            return Err(());
        }
        Ok(())
    }
}

/// `timeout(wait, fut)`, with no timer made when `fut` is ready at its first poll (a write
/// the socket takes at once, bytes already there): a timeout that never fires still cost
/// a clock read and a runtime handle per call, on every response (callgrind).
pub(super) async fn timed<F: std::future::Future>(
    wait: std::time::Duration,
    fut: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut fut = std::pin::pin!(fut);
    if let Poll::Ready(out) = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        return Ok(out);
    }
    timeout(wait, fut).await
}

/// What the access log shows of a request refused before its head could be read: the
/// start of its first line (at most 256 bytes), as the request line.
fn first_line(buf: &[u8]) -> Bytes {
    let end = buf
        .iter()
        .take(256)
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(buf.len().min(256));
    Bytes::copy_from_slice(&buf[..end])
}

/// Reads more request-body bytes into `buf` (room for `want` more), waiting at most `wait`
#[cfg(test)]
mod size_tests {
    use super::*;

    fn size_of_future<F, Fut>(_: F) -> usize
    where
        F: FnOnce(tokio::net::TcpStream, PeerAddr, Arc<Shared>, Open) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// A connection waiting for its next request costs its task (this future plus tokio's
    /// header) and its I/O registration until it parks (`idle`), a moment later. Many
    /// connections come and go within that moment, so the future must not grow unnoticed.
    #[test]
    fn connection_future_stays_small() {
        let n = size_of_future(serve::<tokio::net::TcpStream>);
        // 376 bytes in release builds (a 512-byte task: tasks are 128-byte aligned), 408 in
        // debug builds.
        assert!(n <= 416, "the connection future grew to {n} bytes");
    }
}
