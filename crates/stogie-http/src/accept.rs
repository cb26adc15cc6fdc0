//! One pipeline per accepted socket: the PROXY protocol header (when the listener expects
//! one), the TLS handshake (when it serves HTTPS), then the protocol and its connection
//! driver. Each step runs in the connection's own task, bounded by the server's timeout, so
//! a slow or silent client delays nobody else.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::addr::{PeerAddr, PeerCred};
use crate::error::{HttpError, Refusal};
use crate::exchange::record::Record;
use crate::exchange::refuse;
use crate::h1::{conn, response};
use crate::h2;
use crate::log::LogLevel;
use crate::message::Version;
use crate::ops::proxy::{parse_proxy_header, ProxyError, ProxyHeader};
use crate::shared::{Open, Shared};
use crate::stop::Accepting;
use crate::transport::tls::{self, Handshake, TlsAcceptor, PLAIN_HTTP_ON_TLS_PORT};
use crate::transport::Transport;

/// Accepts TCP connections until the drain or the stop; `_running` counts the loop as
/// running from before it was spawned (see `Stop::accepting`).
pub(crate) async fn accept_tcp(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    _running: Accepting,
) {
    loop {
        let stopped = shared.stop.ending_notified();
        if shared.stop.is_ending() {
            return;
        }
        tokio::select! {
            // The signal first: no connection is taken once it came.
            biased;
            _ = stopped => return,
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    spawn_connection(&shared, stream, PeerAddr::Tcp(addr));
                }
                Err(e) => tokio::time::sleep(accept_failed(&shared, &e)).await,
            },
        }
    }
}

/// Accepts UNIX socket connections, as [`accept_tcp`].
pub(crate) async fn accept_unix(
    listener: tokio::net::UnixListener,
    shared: Arc<Shared>,
    peercreds: bool,
    _running: Accepting,
) {
    loop {
        let stopped = shared.stop.ending_notified();
        if shared.stop.is_ending() {
            return;
        }
        tokio::select! {
            biased;
            _ = stopped => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let cred = if peercreds {
                        stream.peer_cred().ok().map(|c| PeerCred { pid: c.pid(), uid: c.uid(), gid: c.gid() })
                    } else {
                        None
                    };
                    spawn_connection(&shared, stream, PeerAddr::Unix(cred));
                }
                Err(e) => tokio::time::sleep(accept_failed(&shared, &e)).await,
            },
        }
    }
}

fn accept_failed(shared: &Shared, err: &io::Error) -> Duration {
    // Out of descriptors or memory: back off instead of spinning; the listener stays.
    shared
        .log
        .log(LogLevel::Warning, &format!("accept() failed: {err}"));
    Duration::from_millis(50)
}

/// Serves an accepted connection on its own task, counted as open until the task ends. A
/// PROXY protocol header and a TLS handshake happen in that task too.
fn spawn_connection<S: Transport>(shared: &Arc<Shared>, stream: S, peer: PeerAddr) {
    shared.stats.add_accept();
    shared.stats.open();
    let open = Open(shared.stats.clone());
    // Spawned as they are, with no future around them: a connection's task is its memory.
    if shared.proxy_protocol.is_none() {
        match &shared.tls {
            Some(acceptor) => {
                tokio::spawn(over_tls(
                    acceptor.clone(),
                    stream,
                    peer,
                    shared.clone(),
                    open,
                ));
            }
            None => spawn_plain(stream, peer, shared.clone(), open),
        }
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut stream = stream;
        match read_proxy_header(&mut stream, &peer, &shared).await {
            Ok(peer) => match shared.tls.clone() {
                // The PROXY header comes before the TLS handshake, in plain text.
                Some(acceptor) => over_tls(acceptor, stream, peer, shared, open).await,
                None => drive(stream, peer, shared, open).await,
            },
            Err((refusal, why)) => {
                if let Some(refusal) = refusal {
                    shared.stats.metrics().refused(refusal);
                }
                shared
                    .log
                    .log(LogLevel::Info, &format!("{peer}: refused: {why}"));
                drop(open);
            }
        }
    });
}

/// Handshakes on an accepted connection within the server's timeout, then serves it.
async fn over_tls<S: Transport>(
    acceptor: TlsAcceptor,
    stream: S,
    peer: PeerAddr,
    shared: Arc<Shared>,
    open: Open,
) {
    let cfg = shared.config.get();
    let outcome = {
        let stopped = shared.stop.notified();
        if shared.stop.is_set() {
            return;
        }
        // Boxed: the handshake's state (a rustls connection) is large, and only needed
        // until the handshake ends.
        let work = Box::pin(async {
            match tls::handshake(&acceptor, stream).await {
                Ok(Handshake::PlainHttp(s)) => {
                    answer_plain_http(s, &peer, &shared).await;
                    Ok(Handshake::Closed)
                }
                other => other,
            }
        });
        tokio::select! {
            r = tokio::time::timeout(cfg.timeout, work) => r,
            _ = stopped => return,
        }
    };
    let failure = match outcome {
        Ok(Ok(Handshake::Done(tls))) => {
            shared.stats.metrics().tls_handshake(true);
            return drive(tls, peer, shared, open).await;
        }
        // The client left before a byte, or spoke plain HTTP (answered): no handshake.
        Ok(Ok(_)) => return,
        Ok(Err(e)) => Some(e),
        Err(_) => None,
    };
    shared.stats.metrics().tls_handshake(false);
    acceptor.log_failure(failure.as_ref(), cfg.timeout, &peer, &*shared.log);
}

/// Cheroot's answer to plain HTTP on the TLS port, then a close that lets the client read
/// it. Counted as a refused request, and logged as one (the request itself is not read).
async fn answer_plain_http<S: Transport>(mut stream: S, peer: &PeerAddr, shared: &Shared) {
    let cfg = shared.config.get();
    let err = HttpError::BadRequest(PLAIN_HTTP_ON_TLS_PORT);
    let mut record = Record::unread(&cfg, None);
    record.answer(&shared.stats, err.code());
    if let Some(why) = err.refusal() {
        shared.stats.metrics().refused(why);
    }
    let answer = response::error_response(&err, Version::Http11, &cfg.server_software);
    if refuse::refuse(&mut stream, &answer, cfg.timeout, &shared.stats).await {
        record.sent = err.message().len() as u64;
    }
    record.finish(&cfg, &shared.stats, peer);
}

/// The protocol's connection driver for a stream ready for HTTP (after any PROXY header
/// and TLS handshake): HTTP/2 for a TLS stream whose ALPN chose `h2`, and, from a peer
/// allowed cleartext HTTP/2, for a stream that opens with its preface; HTTP/1 otherwise.
async fn drive<S: Transport>(stream: S, peer: PeerAddr, shared: Arc<Shared>, open: Open) {
    if stream
        .tls_info()
        .is_some_and(|t| t.alpn.as_deref() == Some(b"h2"))
    {
        // Boxed, as every HTTP/2 connection: an HTTP/1 connection's future stays small.
        return Box::pin(h2::serve(stream, peer, shared, open)).await;
    }
    if h2c_allowed(&shared, &peer) {
        return Box::pin(h2c_or_http1(stream, peer, shared, open)).await;
    }
    // Boxed too: the task around this (a TLS handshake's, a PROXY header's) then keeps no
    // room for the protocol not chosen, for the connection's life (an HTTP/2 connection over
    // TLS kept 0.8 KB for HTTP/1's). A connection costs one allocation more, a request none.
    Box::pin(http1(stream, peer, shared, open)).await
}

/// A plain (not TLS) connection's driver, spawned as it is: the common case spawns the
/// HTTP/1 connection itself, with no future around it.
fn spawn_plain<S: Transport>(stream: S, peer: PeerAddr, shared: Arc<Shared>, open: Open) {
    if h2c_allowed(&shared, &peer) {
        tokio::spawn(h2c_or_http1(stream, peer, shared, open));
    } else if shared.config.get().protocols.http1 {
        tokio::spawn(conn::serve(stream, peer, shared, open));
    } else {
        tokio::spawn(http1(stream, peer, shared, open));
    }
}

/// HTTP/1, unless the server speaks HTTP/2 only: then a 505 saying so.
async fn http1<S: Transport>(stream: S, peer: PeerAddr, shared: Arc<Shared>, open: Open) {
    if shared.config.get().protocols.http1 {
        return conn::serve(stream, peer, shared, open).await;
    }
    // Boxed: its future (a write with a timeout) is twice a served connection's; inline,
    // every HTTP/1 connection's future here would keep room for it.
    Box::pin(refuse_http1(stream, &peer, &shared)).await;
}

/// Whether a peer may speak cleartext HTTP/2 (h2c by prior knowledge): only when it is on,
/// and only from the proxies whose forwarded headers are believed (or a UNIX socket
/// client), as what a proxy speaks to its upstream. Anyone else gets HTTP/1.
fn h2c_allowed(shared: &Shared, peer: &PeerAddr) -> bool {
    let cfg = shared.config.get();
    let p = &cfg.protocols;
    p.http2
        && p.h2c
        && shared.tls.is_none()
        && match peer {
            PeerAddr::Tcp(a) => cfg.trusted_proxies.trusts(a.ip()),
            PeerAddr::Unix(_) => true,
        }
}

/// Peeks at what a cleartext connection opens with: the HTTP/2 preface, or HTTP/1.
async fn h2c_or_http1<S: Transport>(
    mut stream: S,
    peer: PeerAddr,
    shared: Arc<Shared>,
    open: Open,
) {
    let wait = shared.config.get().timeout;
    let mut buf = [0u8; h2::PREFACE.len()];
    let deadline = tokio::time::Instant::now() + wait;
    let mut seen = 0;
    let is_h2 = loop {
        let stopped = shared.stop.notified();
        if shared.stop.is_set() {
            return;
        }
        // Moved in as `&mut`: a shared borrow would need the stream to be Sync.
        let s = &mut stream;
        let b = &mut buf[..];
        let peeked = tokio::select! {
            r = tokio::time::timeout_at(deadline, std::future::poll_fn(move |cx| s.poll_peek(cx, b))) => r,
            _ = stopped => return,
        };
        let n = match peeked {
            Ok(Ok(n)) if n > 0 => n,
            // Silent for the timeout, gone, or broken: nothing to answer.
            _ => return,
        };
        if buf[..n] != h2::PREFACE[..n] {
            break false;
        }
        if n == h2::PREFACE.len() {
            break true;
        }
        if n == seen {
            // The same bytes again: the socket stays readable until they are taken, so
            // wait a moment for the rest rather than spin.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen = n;
    };
    if is_h2 {
        h2::serve(stream, peer, shared, open).await;
    } else {
        http1(stream, peer, shared, open).await;
    }
}

/// The answer to HTTP/1 on a server that speaks HTTP/2 only.
async fn refuse_http1<S: Transport>(mut stream: S, peer: &PeerAddr, shared: &Shared) {
    let cfg = shared.config.get();
    let mut record = Record::unread(&cfg, None);
    record.answer(&shared.stats, 505);
    let body = b"This server speaks HTTP/2 only.";
    let answer = response::closing_response(
        Version::Http11,
        "505 HTTP Version Not Supported",
        response::TEXT,
        body,
        true,
        &cfg.server_software,
    );
    if refuse::refuse(&mut stream, &answer, cfg.timeout, &shared.stats).await {
        record.sent = body.len() as u64;
    }
    record.finish(&cfg, &shared.stats, peer);
}

/// Reads the PROXY protocol header that must open a connection, within the server's
/// timeout, and returns the client it names. The header is peeked at before it is taken,
/// so not a byte of what follows (HTTP, or a TLS handshake) is consumed here.
async fn read_proxy_header<S: Transport>(
    stream: &mut S,
    peer: &PeerAddr,
    shared: &Shared,
) -> Result<PeerAddr, (Option<Refusal>, String)> {
    use tokio::io::AsyncReadExt;
    let allowed = shared
        .proxy_protocol
        .as_ref()
        .expect("checked by the caller");
    if let PeerAddr::Tcp(a) = peer {
        if !allowed.trusts(a.ip()) {
            return Err((
                Some(Refusal::Parse),
                "not a peer allowed to send the PROXY protocol".into(),
            ));
        }
    }
    let timeout = shared.config.get().timeout;
    let mut buf = vec![0u8; 16 + 2048];
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    let parsed = loop {
        // Moved in as `&mut`: a shared borrow would need the stream to be Sync.
        let (s, b) = (&mut *stream, &mut buf[..]);
        let peeked =
            tokio::time::timeout_at(deadline, std::future::poll_fn(move |cx| s.poll_peek(cx, b)))
                .await;
        let n = match peeked {
            Err(_) => {
                return Err((
                    Some(Refusal::Timeout),
                    "no PROXY protocol header in time".into(),
                ))
            }
            Ok(Err(e)) => return Err((None, format!("reading the PROXY protocol header: {e}"))),
            Ok(Ok(0)) => return Err((None, "closed before a PROXY protocol header".into())),
            Ok(Ok(n)) => n,
        };
        match parse_proxy_header(&buf[..n]) {
            Ok(Some(found)) => break found,
            Ok(None) => {
                if n == seen {
                    // The same bytes again: the socket stays readable until they are taken,
                    // so wait a moment for the rest rather than spin.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen = n;
            }
            Err(e) => {
                // Answered, so that whoever set up the proxy (or pointed a client at the
                // wrong port) reads why, then closed.
                let msg = match e {
                    ProxyError::Missing => {
                        "This port expects a PROXY protocol header from the proxy in front."
                            .to_string()
                    }
                    ProxyError::Malformed(why) => {
                        format!("Malformed PROXY protocol header: {why}.")
                    }
                };
                // Answered in HTTP/1 (what comes next is not known yet): the answer is
                // for a person reading what a client got.
                let answer = response::closing_response(
                    Version::Http11,
                    "400 Bad Request",
                    response::TEXT,
                    msg.as_bytes(),
                    true,
                    &shared.config.get().server_software,
                );
                refuse::refuse(stream, &answer, timeout, &shared.stats).await;
                return Err((Some(Refusal::Parse), e.to_string()));
            }
        }
    };
    let (header, len) = parsed;
    let mut taken = vec![0u8; len];
    stream
        .read_exact(&mut taken)
        .await
        .map_err(|e| (None, format!("reading the PROXY protocol header: {e}")))?;
    Ok(match header {
        ProxyHeader::Proxied { source, .. } => PeerAddr::Tcp(source),
        ProxyHeader::Local => peer.clone(),
    })
}
