//! What the access log and the metrics keep of one request while it is served, and the one
//! place where a finished request is counted, timed and written to the access log.

use bytes::Bytes;
use tokio::time::Instant;

use crate::addr::PeerAddr;
use crate::config::ServerConfig;
use crate::message::{RequestHead, ResponseHead, Version};
use crate::ops::accesslog::{AccessLog, AccessRecord};
use crate::ops::metrics::{method_index, METHODS};
use crate::ops::proxy::Forwarded;
use crate::stats::Stats;

/// One request's record, from its head (or its refusal) to its access log line.
pub(crate) struct Record {
    /// When the request began, when it is timed.
    started: Option<Instant>,
    /// What of the head the access log's line shows (the request line and only the fields
    /// its format names: no copy of the whole head).
    head: Option<RequestHead>,
    /// The client the proxies in front vouch for.
    forwarded: Option<Box<Forwarded>>,
    /// Where the request's method is counted in the metrics.
    method: usize,
    /// Where its protocol is (`PROTOCOLS`: 0 for HTTP/1.x, 1 for HTTP/2).
    protocol: usize,
    /// The status sent (0 until one is).
    pub status: u16,
    /// Body bytes sent.
    pub sent: u64,
    /// The response headers the access log shows.
    response_headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// The record of a request whose head was read; `forwarded`: what the trusted proxies
    /// in front say of the client.
    #[inline]
    pub fn begin(cfg: &ServerConfig, head: &RequestHead, forwarded: Option<&Forwarded>) -> Record {
        let log = cfg.access_log.as_deref();
        Record {
            started: clock(cfg),
            head: log.map(|log| for_the_log(head, log)),
            forwarded: log.and_then(|_| forwarded.map(|f| Box::new(f.clone()))),
            method: method_index(&head.method),
            protocol: usize::from(head.version == Version::Http2),
            status: 0,
            sent: 0,
            response_headers: Vec::new(),
        }
    }

    /// The record of a request refused before its head could be read: the start of its
    /// first line (`line`, when the access log wants it) stands as its target, and its
    /// method is counted as `other`.
    #[inline]
    pub fn unread(cfg: &ServerConfig, line: Option<Bytes>) -> Record {
        Record {
            started: clock(cfg),
            head: line.map(|target| RequestHead {
                target,
                ..RequestHead::empty()
            }),
            forwarded: None,
            method: METHODS.len() - 1,
            protocol: 0,
            status: 0,
            sent: 0,
            response_headers: Vec::new(),
        }
    }

    /// Counts the request as answered with `status`, before the answer goes out.
    #[inline]
    pub fn answer(&mut self, stats: &Stats, status: u16) {
        self.status = status;
        stats
            .metrics()
            .request_on(self.protocol, self.method, status);
    }

    /// Keeps the fields of the response head that the access log shows.
    #[inline]
    pub fn response_head(&mut self, cfg: &ServerConfig, head: &ResponseHead) {
        let Some(log) = &cfg.access_log else { return };
        for name in log.wanted_response_headers() {
            if let Some((_, v)) = head
                .headers()
                .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            {
                self.response_headers.push((name.clone(), v.to_vec()));
            }
        }
    }

    /// Ends the record: times the request and writes its access log line. A request whose
    /// client left before any answer is counted and logged as nginx's 499, under its method.
    pub fn finish(self, cfg: &ServerConfig, stats: &Stats, peer: &PeerAddr) {
        let status = if self.status == 0 {
            stats.metrics().request_on(self.protocol, self.method, 499);
            499
        } else {
            self.status
        };
        let took = self.started.map(|at| at.elapsed());
        if let Some(took) = took {
            stats.metrics().observe(took);
        }
        let Some(log) = &cfg.access_log else { return };
        let client = match (&self.forwarded, peer) {
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
        let head = self.head.as_ref().unwrap_or(&empty);
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
            body_bytes: self.sent,
            request_headers: &head.headers,
            response_headers: &self.response_headers,
        });
    }
}

/// The clock, read when requests are timed (for the histogram or the access log).
fn clock(cfg: &ServerConfig) -> Option<Instant> {
    (cfg.time_requests || cfg.access_log.is_some()).then(Instant::now)
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
