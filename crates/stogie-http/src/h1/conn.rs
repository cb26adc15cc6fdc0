//! One connection: read a head, hand the request to the gateway, stream the body to it and
//! its response back, keep alive or close. The only module besides the listener that
//! touches a socket.

use std::collections::VecDeque;
use std::fs::File;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::BufMut;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};

use tokio::sync::futures::Notified;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::config::LiveConfig;
use crate::config::ServerConfig;
use crate::error::BodyError;
use crate::error::HttpError;
use crate::exchange::gateway::Gateway;
use crate::exchange::pipe;
use crate::exchange::{LocalAddr, PeerAddr, Request, RequestBody, ResponseEvent, ResponseSender};
use crate::h1::body::{BodyDecoder, Decoded};
use crate::h1::head::{self, BodyFraming, ParsedHead};
use crate::h1::outbuf::OutBuf;
use crate::h1::response::{self, ResponseContext, ResponseFraming};
use crate::idle::{Lot, Parkable, PARK_AFTER};
use crate::log::{ErrorLog, LogLevel};
use crate::message::{HeadRoom, RequestHead, Version};
use crate::ops::accesslog::{AccessLog, AccessRecord};
use crate::ops::metrics::{method_index, METHODS};
use crate::ops::proxy::{self, Forwarded};
use crate::stats::Stats;
use crate::transport::Transport;

/// What every connection of one server shares.
pub(crate) struct Shared {
    pub config: LiveConfig,
    pub gateway: Arc<dyn Gateway>,
    pub stats: Arc<Stats>,
    pub log: Arc<dyn ErrorLog>,
    pub stop: Stop,
    pub parked: Arc<Lot>,
    pub local: LocalAddr,
    pub scheme: &'static str,
    pub tls: Option<crate::transport::tls::TlsAcceptor>,
    /// Connections start with a PROXY protocol header from these peers.
    pub proxy_protocol: Option<crate::ops::proxy::TrustedPeers>,
}

/// The server's stop signal, as connections and accept loops see it.
///
/// Two degrees: a drain (no new connections, and every response from now on closes its
/// connection, while a keep-alive connection that is idle keeps its idle timeout, so that a
/// client whose next request is already on its way gets it answered), and a stop (idle
/// connections close at once too). A worker process being replaced drains: another process
/// takes the new connections, and the clients of this one lose no request. A server that
/// stops for good has nobody to hand its clients to, so it stops.
#[derive(Default)]
pub(crate) struct Stop {
    stopping: AtomicBool,
    ending: AtomicBool,
    notify: Notify,
    ending_notify: Notify,
}

impl Stop {
    /// Whether the server is stopping: idle connections close now.
    pub fn is_set(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Whether the server drains or stops: no new connections, no more keep-alive.
    pub fn is_ending(&self) -> bool {
        self.ending.load(Ordering::Acquire)
    }

    /// Signals the stop to everyone waiting, and to everyone who looks later.
    pub fn set(&self) {
        self.ending.store(true, Ordering::Release);
        self.stopping.store(true, Ordering::Release);
        self.ending_notify.notify_waiters();
        self.notify.notify_waiters();
    }

    /// Signals the drain to the accept loops.
    pub fn drain(&self) {
        self.ending.store(true, Ordering::Release);
        self.ending_notify.notify_waiters();
    }

    /// Resolves at the drain or the stop; as [`Stop::notified`], for [`Stop::is_ending`].
    pub fn ending_notified(&self) -> Notified<'_> {
        self.ending_notify.notified()
    }

    /// Resolves at the stop. Take it before looking at [`Stop::is_set`]: a `Notified` sees
    /// every signal sent after it was made, polled or not, so none falls in between.
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }
}

/// Bytes read per read call while a head or body is coming in.
const READ_CHUNK: usize = 16 * 1024;
/// The first read buffer of a request head.
const HEAD_CHUNK: usize = 2 * 1024;
/// Queued response bytes that make a write happen before the rest of a batch is framed.
const FLUSH_AT: usize = 256 * 1024;
/// Chunks of a streamed request body waiting for the app.
const BODY_CHANNEL: usize = 4;
/// What a closing connection reads and throws away so the client sees the answer, not a reset.
const LINGER_BYTES: usize = 256 * 1024;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);

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
    fn worth_parsing(&self, buf: &[u8], cfg: &ServerConfig) -> bool {
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

/// Counts a connection as open for as long as it lives, in a task or parked.
pub(crate) struct Open(pub Arc<Stats>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.close();
    }
}

struct Conn<S> {
    stream: S,
    peer: PeerAddr,
    shared: Arc<Shared>,
    buf: BytesMut,
    wbuf: OutBuf,
    _open: Open,
    /// No request has come on this connection yet.
    first: bool,
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

/// How the response in progress is framed on the wire, and what it came to.
struct Outgoing {
    version: Version,
    is_head: bool,
    keep_alive: bool,
    head_sent: bool,
    framing: ResponseFraming,
    remaining: u64,
    close: bool,
    done: bool,
    /// Where the request's method is counted in the metrics.
    method: usize,
    /// The status sent (0 until one is).
    status: u16,
    /// Body bytes sent.
    sent: u64,
    /// The response headers the access log shows.
    logged_headers: Vec<(String, Vec<u8>)>,
}

/// What the metrics and the access log keep of a request while it is served.
struct Observed {
    /// When the request began, when it is timed.
    started: Option<Instant>,
    /// What of the head the access log's line shows (the request line and only the fields
    /// its format names: no copy of the whole head).
    head: Option<RequestHead>,
    /// The client the proxies in front vouch for.
    forwarded: Option<Box<Forwarded>>,
}

/// The parts of `head` a line of `log` shows.
fn for_the_log(head: &RequestHead, log: &AccessLog) -> RequestHead {
    let wanted = log.wanted_request_headers();
    RequestHead {
        method: head.method.clone(),
        target: head.target.clone(),
        path: head.path.clone(),
        query: head.query.clone(),
        version: head.version,
        headers: head
            .headers
            .iter()
            .filter(|h| {
                wanted
                    .iter()
                    .any(|w| h.name.eq_ignore_ascii_case(w.as_bytes()))
            })
            .cloned()
            .collect(),
        ..RequestHead::empty()
    }
}

/// A request body on its way from the socket to the app.
struct Pump {
    pipe: Pipe,
    demand: Option<oneshot::Receiver<()>>,
    failed: bool,
}

/// The part of a [`Pump`] that moves bytes.
struct Pipe {
    tx: Option<mpsc::Sender<Result<Bytes, BodyError>>>,
    decoder: BodyDecoder,
    pending: VecDeque<Bytes>,
}

enum Step {
    /// Response events were taken (`true`), or the gateway dropped the response (`false`).
    Events(bool),
    /// The app asked for the body (`true`) or dropped it unread (`false`).
    Demand(bool),
    Pumped(Result<bool, ()>),
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
                        Idle::Park(deadline) => return Some(deadline),
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
        let stopped = shared.stop.notified();
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
        let wait = if park { PARK_AFTER } else { cfg.timeout };
        tokio::select! {
            r = std::future::poll_fn(move |cx| stream.poll_read_ready(cx)) => {
                if r.is_ok() { Idle::Ready } else { Idle::Close }
            }
            _ = sleep(wait) => if park {
                Idle::Park(Instant::now() + cfg.timeout.saturating_sub(PARK_AFTER))
            } else {
                Idle::Close
            },
            _ = stopped => Idle::Close,
        }
    }

    /// Reads what the socket has, without waiting: `None` if nothing yet, `Some(Ok(0))` at
    /// the client's end.
    async fn read_now(&mut self) -> Option<std::io::Result<usize>> {
        self.buf.reserve(HEAD_CHUNK);
        let stream = &mut self.stream;
        let buf = &mut self.buf;
        let got = std::future::poll_fn(move |cx| {
            let mut rb = ReadBuf::uninit(buf.spare_capacity_mut());
            Poll::Ready(match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    // SAFETY: poll_read initialised the first `n` bytes of the spare capacity.
                    unsafe { buf.advance_mut(n) };
                    Some(Ok(n))
                }
                Poll::Ready(Err(e)) => Some(Err(e)),
                Poll::Pending => None,
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
                let observed = Observed {
                    started: Self::clock(cfg),
                    head: line.map(|target| RequestHead {
                        target,
                        ..RequestHead::empty()
                    }),
                    forwarded: None,
                };
                self.count(METHODS.len() - 1, e.code());
                Box::pin(self.refuse(&e, Version::Http11, cfg)).await;
                self.record(cfg, &observed, e.code(), e.message().len() as u64, &[]);
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
            Box::pin(self.linger()).await;
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
                if scan.worth_parsing(&self.buf, cfg) {
                    // The parser consumes a head it refuses: the access log's copy of its
                    // line is taken first.
                    let line = cfg.access_log.is_some().then(|| first_line(&self.buf));
                    match head::parse(&mut self.buf, cfg) {
                        Ok(Some(h)) => return HeadOutcome::Head(h),
                        Ok(None) => scan.parsed(&self.buf),
                        Err(e) => return HeadOutcome::Refused(e, line),
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
    async fn refuse(&mut self, err: &HttpError, version: Version, cfg: &ServerConfig) {
        if let Some(why) = err.refusal() {
            self.shared.stats.metrics().refused(why);
        }
        self.write_error(err, version, cfg).await;
        self.linger().await;
    }

    /// Refuses the request in hand before it reaches the app: counted and answered as
    /// `err`, then the connection closes.
    async fn refuse_request(&mut self, err: &HttpError, out: &mut Outgoing, cfg: &ServerConfig) {
        out.status = err.code();
        out.sent = err.message().len() as u64;
        self.count(out.method, out.status);
        self.refuse(err, out.version, cfg).await;
    }

    /// The clock, read when requests are timed (for the histogram or the access log).
    fn clock(cfg: &ServerConfig) -> Option<Instant> {
        (cfg.time_requests || cfg.access_log.is_some()).then(Instant::now)
    }

    /// Counts a request answered with `status`, before the answer goes out.
    fn count(&self, method: usize, status: u16) {
        self.shared.stats.metrics().request(method, status);
    }

    /// Times a finished request and writes its access log line. A request whose client
    /// left before any answer (status 0) is logged as nginx's 499.
    fn record(
        &self,
        cfg: &ServerConfig,
        observed: &Observed,
        status: u16,
        sent: u64,
        response_headers: &[(String, Vec<u8>)],
    ) {
        let status = if status == 0 { 499 } else { status };
        let took = observed.started.map(|at| at.elapsed());
        if let Some(took) = took {
            self.shared.stats.metrics().observe(took);
        }
        let Some(log) = &cfg.access_log else { return };
        let client = match (&observed.forwarded, &self.peer) {
            (Some(f), _) if f.client.is_some() => f.client.map(|(ip, _)| ip),
            (_, PeerAddr::Tcp(a)) => Some(a.ip().to_canonical()),
            (_, PeerAddr::Unix(_)) => None,
        };
        // Written on the stack: no allocation per line for the address.
        let mut text = [0u8; 48];
        let client = match client {
            Some(ip) => {
                let mut cursor = std::io::Cursor::new(&mut text[..]);
                let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{ip}"));
                let n = cursor.position() as usize;
                std::str::from_utf8(&text[..n]).unwrap_or("-")
            }
            None => "-",
        };
        let empty = RequestHead::empty();
        let head = observed.head.as_ref().unwrap_or(&empty);
        log.log(&AccessRecord {
            client,
            // gunicorn's %(t)s: when the line is made.
            time: std::time::SystemTime::now(),
            duration: took.unwrap_or_default(),
            method: &head.method,
            target: &head.target,
            path: &head.path,
            query: &head.query,
            protocol: head.version.as_str(),
            status,
            body_bytes: sent,
            request_headers: &head.headers,
            response_headers,
        });
    }

    /// What the trusted proxies in front say of the client, if they say anything; an error
    /// when what they say contradicts itself.
    fn forwarded(
        &self,
        head: &RequestHead,
        cfg: &ServerConfig,
    ) -> Result<Option<Box<Forwarded>>, HttpError> {
        let peer = match &self.peer {
            PeerAddr::Tcp(a) => Some(a.ip()),
            PeerAddr::Unix(_) => None,
        };
        let f = proxy::forwarded(head, peer, &cfg.trusted_proxies)?;
        Ok((!f.is_empty()).then(|| Box::new(f)))
    }

    /// Writes a short error answer in place of anything queued.
    async fn write_error(&mut self, err: &HttpError, version: Version, cfg: &ServerConfig) {
        self.wbuf.clear();
        let bytes = response::error_response(err, version, &cfg.server_software);
        self.wbuf.extend_from_slice(&bytes);
        let _ = self.flush(cfg).await;
    }

    /// Writes everything queued, in vectored writes when large pieces are queued by
    /// reference. A client that takes nothing for `timeout` is cut off; one that keeps
    /// reading, however slowly, is not.
    async fn flush(&mut self, cfg: &ServerConfig) -> Result<(), ()> {
        while !self.wbuf.is_empty() {
            let wrote = match self.wbuf.contiguous() {
                Some(data) => timeout(cfg.timeout, self.stream.write(data)).await,
                None => {
                    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(16);
                    self.wbuf.slices(&mut slices);
                    timeout(cfg.timeout, self.stream.write_vectored(&slices)).await
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
            && !matches!(timeout(cfg.timeout, self.stream.flush()).await, Ok(Ok(())))
        {
            self.shared.stats.add_socket_error();
            return Err(());
        }
        Ok(())
    }

    /// Closes the way a client can still read what was sent: FIN first, then read and
    /// drop what the client still sends, for a bounded time and size.
    async fn linger(&mut self) {
        let _ = timeout(LINGER_TIME, self.stream.shutdown()).await;
        // On the heap: inline, it made every request's boxed state 4 KiB larger.
        let mut scratch = vec![0u8; 4096];
        let mut total = 0;
        let _ = timeout(LINGER_TIME, async {
            while total < LINGER_BYTES {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        })
        .await;
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

    /// Runs one request/response exchange; returns whether the connection stays open. What
    /// it came to is counted for the metrics and written to the access log.
    async fn exchange(&mut self, head: ParsedHead, cfg: &Arc<ServerConfig>) -> bool {
        // As Cheroot, answer in the lower of the request's and the server's protocol; a
        // 1.1 request answered in 1.0 has not asked for 1.0 keep-alive, so it closes.
        let downgrade = head.version == Version::Http11 && cfg.protocol == "HTTP/1.0";
        let version = if downgrade {
            Version::Http10
        } else {
            head.version
        };
        let mut out = Outgoing {
            version,
            is_head: head.is_head(),
            keep_alive: head.keep_alive && !downgrade,
            head_sent: false,
            framing: ResponseFraming::NoBody,
            remaining: 0,
            close: false,
            done: false,
            method: method_index(&head.method),
            status: 0,
            sent: 0,
            logged_headers: Vec::new(),
        };
        let forwarded = self.forwarded(&head, cfg);
        let observed = Observed {
            started: Self::clock(cfg),
            head: cfg.access_log.as_ref().map(|log| for_the_log(&head, log)),
            forwarded: match &forwarded {
                Ok(f) if cfg.access_log.is_some() => f.clone(),
                _ => None,
            },
        };
        let keep = match forwarded {
            Ok(forwarded) => self.answer(head, forwarded, cfg, &mut out).await,
            Err(e) => {
                self.refuse_request(&e, &mut out, cfg).await;
                false
            }
        };
        if out.status == 0 {
            // The client left before any answer: nginx's 499, under the request's method.
            self.count(out.method, 499);
        }
        let logged = std::mem::take(&mut out.logged_headers);
        self.record(cfg, &observed, out.status, out.sent, &logged);
        keep
    }

    /// Hands the request to the gateway and sends its response.
    async fn answer(
        &mut self,
        head: ParsedHead,
        forwarded: Option<Box<Forwarded>>,
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
        if !self.dispatch(request).await {
            self.refuse_request(&HttpError::ServiceUnavailable, out, cfg)
                .await;
            return false;
        }
        let mut batch = VecDeque::new();

        loop {
            let pumping = pump
                .as_ref()
                .is_some_and(|p| p.pipe.tx.is_some() && p.demand.is_none());
            let waiting_demand = pump.as_ref().is_some_and(|p| p.demand.is_some());
            let step = {
                let stream = &mut self.stream;
                let buf = &mut self.buf;
                let stats = &self.shared.stats;
                let (pipe, demand) = match pump.as_mut() {
                    Some(p) => (Some(&mut p.pipe), p.demand.as_mut()),
                    None => (None, None),
                };
                tokio::select! {
                    biased;
                    got = resp_rx.recv_all(&mut batch) => Step::Events(got),
                    read = async move {
                        match demand {
                            Some(d) => d.await.is_ok(),
                            None => false,
                        }
                    }, if waiting_demand => Step::Demand(read),
                    r = pump_step(stream, buf, pipe, stats, cfg.timeout), if pumping => Step::Pumped(r),
                }
            };
            match step {
                Step::Events(got) => {
                    if pump.as_ref().is_some_and(|p| p.demand.is_some()) {
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
                    p.demand = None;
                    p.pipe.tx = None;
                    p.failed = true;
                    out.keep_alive = false;
                }
                Step::Demand(true) => {
                    let p = pump.as_mut().unwrap();
                    p.demand = None;
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
                        Ok(true) => p.pipe.tx = None,
                        Ok(false) => {}
                        Err(()) => {
                            p.pipe.tx = None;
                            p.failed = true;
                        }
                    }
                }
            }
        }
        drop(resp_rx);

        let mut keep = out.keep_alive && !out.close;
        if let Some(mut p) = pump {
            p.pipe.tx = None;
            if p.failed || p.demand.is_some() {
                keep = false;
            } else if keep && !p.pipe.decoder.is_done() {
                keep = self.drain(&mut p.pipe.decoder, cfg).await;
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
        let (tx, rx) = mpsc::channel(BODY_CHANNEL);
        let (demand_tx, demand_rx) = if head.expect_continue {
            let (a, b) = oneshot::channel();
            (Some(a), Some(b))
        } else {
            (None, None)
        };
        let pump = Pump {
            pipe: Pipe {
                tx: Some(tx),
                decoder,
                pending,
            },
            demand: demand_rx,
            failed: false,
        };
        Ok((RequestBody::stream(rx, demand_tx), Some(pump)))
    }

    /// Hands the request over, waiting up to the gateway's queue timeout for room.
    async fn dispatch(&mut self, mut request: Request) -> bool {
        let gateway = &self.shared.gateway;
        match gateway.dispatch(request) {
            Ok(()) => return true,
            Err(back) => request = back,
        }
        // A full queue: the clock starts only now.
        let deadline = Instant::now() + gateway.queue_timeout();
        let mut wait = std::time::Duration::from_millis(1);
        loop {
            if Instant::now() >= deadline {
                return false;
            }
            sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_millis(20));
            match gateway.dispatch(request) {
                Ok(()) => return true,
                Err(back) => request = back,
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
                        out.status = e.code;
                        self.count(out.method, e.code);
                        out.framing = e.framing;
                        out.close = e.close;
                        if let Some(log) = &cfg.access_log {
                            for name in log.wanted_response_headers() {
                                if let Some((_, v)) = head
                                    .headers()
                                    .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                                {
                                    out.logged_headers.push((name.clone(), v.to_vec()));
                                }
                            }
                        }
                        if let ResponseFraming::Length(n) = e.framing {
                            out.remaining = n;
                        }
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
        match out.framing {
            ResponseFraming::Chunked => self.wbuf.extend_from_slice(b"0\r\n\r\n"),
            ResponseFraming::Length(_) if out.remaining > 0 => {
                // Fewer bytes than the app declared: the client can only tell by the close.
                self.shared.log.log(
                    LogLevel::Warning,
                    &format!("Response ended {} bytes short of its Content-Length; closing the connection", out.remaining),
                );
                out.close = true;
            }
            _ => {}
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
            out.status = err.code();
            out.sent = err.message().len() as u64;
            self.count(out.method, out.status);
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
        match out.framing {
            ResponseFraming::NoBody => return Ok(()),
            ResponseFraming::Length(_) => {
                if data.len() as u64 > out.remaining {
                    self.shared.log.log(
                        LogLevel::Warning,
                        "Response has more bytes than its Content-Length; truncating and closing the connection",
                    );
                    data.truncate(out.remaining as usize);
                    out.close = true;
                }
                out.remaining -= data.len() as u64;
                out.sent += data.len() as u64;
                self.queue(data, cfg).await?;
                if out.close && out.remaining == 0 {
                    out.done = true;
                }
            }
            ResponseFraming::Chunked => {
                out.sent += data.len() as u64;
                response::chunk_header(self.wbuf.buf_mut(), data.len());
                self.queue(data, cfg).await?;
                self.wbuf.extend_from_slice(b"\r\n");
            }
            ResponseFraming::Close => {
                out.sent += data.len() as u64;
                self.queue(data, cfg).await?
            }
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
        let mut len = len
            .unwrap_or(size.saturating_sub(offset))
            .min(size.saturating_sub(offset));
        match out.framing {
            ResponseFraming::NoBody => return Ok(()),
            ResponseFraming::Length(_) => {
                if len > out.remaining {
                    len = out.remaining;
                    out.close = true;
                }
                out.remaining -= len;
            }
            ResponseFraming::Chunked => {
                if len == 0 {
                    return Ok(());
                }
                response::chunk_header(self.wbuf.buf_mut(), len as usize);
            }
            ResponseFraming::Close => {}
        }
        self.flush(cfg).await?;
        out.sent += len;
        let mut off = offset;
        let end = offset + len;
        while off < end {
            let want = (end - off).min(1 << 30) as usize;
            match timeout(cfg.timeout, self.stream.sendfile(&file, off, want)).await {
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
        if out.framing == ResponseFraming::Chunked {
            self.wbuf.extend_from_slice(b"\r\n");
        }
        Ok(())
    }
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
/// for the client: its end is a truncated body, its silence a timeout.
async fn read_body<S: Transport>(
    stream: &mut S,
    buf: &mut BytesMut,
    stats: &Stats,
    wait: std::time::Duration,
    want: usize,
) -> Result<(), BodyError> {
    buf.reserve(want);
    match timeout(wait, stream.read_buf(buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Err(BodyError::Truncated),
        Ok(Ok(n)) => {
            stats.add_read(n);
            Ok(())
        }
        Err(_) => Err(BodyError::Timeout),
    }
}

/// Moves one piece of request body from the socket to the app. `Ok(true)`: the body is
/// complete. `Err`: the body failed (the error was sent to the app).
///
/// Only the wait for the client's bytes is timed: waiting for room in the channel is
/// waiting for the app, which may take its time before reading.
async fn pump_step<S: Transport>(
    stream: &mut S,
    buf: &mut BytesMut,
    pump: Option<&mut Pipe>,
    stats: &Stats,
    wait: std::time::Duration,
) -> Result<bool, ()> {
    let Some(pump) = pump else { return Ok(false) };
    let Some(tx) = pump.tx.as_ref() else {
        return Ok(true);
    };
    let Ok(permit) = tx.reserve().await else {
        // The app dropped the body; what is left is drained after the response.
        return Ok(true);
    };
    if let Some(piece) = pump.pending.pop_front() {
        permit.send(Ok(piece));
        return Ok(false);
    }
    loop {
        match pump.decoder.decode(buf) {
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
