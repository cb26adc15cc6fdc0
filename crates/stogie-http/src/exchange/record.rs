//! What the access log and the metrics keep of one request while it is served, and the one
//! place where a finished request is counted, timed and written to the access log.

use std::net::IpAddr;

use bytes::Bytes;
use tokio::time::Instant;

use crate::addr::PeerAddr;
use crate::config::ServerConfig;
use crate::message::{RequestHead, ResponseHead, Version};
use crate::ops::accesslog::{AccessOutcome, AccessRequest, Draft};
use crate::ops::metrics::{method_index, METHODS};
use crate::ops::proxy::Forwarded;
use crate::stats::Stats;

/// One request's record, from its head (or its refusal) to its access log line.
pub(crate) struct Record {
    /// When the request began, when it is timed.
    started: Option<Instant>,
    /// The access log's line, begun with what it shows of the head (no copy of the head).
    draft: Option<Draft>,
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
            draft: log.map(|log| log.begin(&seen(head))),
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
            draft: cfg.access_log.as_deref().zip(line).map(|(log, target)| {
                log.begin(&seen(&RequestHead {
                    target,
                    ..RequestHead::empty()
                }))
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
            Some(ip) => ip_text(ip, &mut text),
            None => b"-",
        };
        let draft = self
            .draft
            .unwrap_or_else(|| log.begin(&seen(&RequestHead::empty())));
        log.end(
            &draft,
            &AccessOutcome {
                client,
                // gunicorn's %(t)s: when the line is made.
                time: std::time::SystemTime::now(),
                duration: took.unwrap_or_default(),
                status,
                body_bytes: self.sent,
                response_headers: &self.response_headers,
            },
        );
    }
}

/// `ip` as text, in `buf`. IPv4 without `core::fmt`, which cost a quarter of the access
/// log's time per request.
fn ip_text(ip: IpAddr, buf: &mut [u8; 48]) -> &[u8] {
    let IpAddr::V4(v4) = ip else {
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{ip}"));
        let n = cursor.position() as usize;
        return &buf[..n];
    };
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    &buf[..n]
}

/// The clock, read when requests are timed (for the histogram or the access log).
fn clock(cfg: &ServerConfig) -> Option<Instant> {
    (cfg.time_requests || cfg.access_log.is_some()).then(Instant::now)
}

/// What the access log's line shows of `head`.
fn seen(head: &RequestHead) -> AccessRequest<'_> {
    AccessRequest {
        method: &head.method,
        target: &head.target,
        path: &head.path,
        query: &head.query,
        protocol: head.version.as_str(),
        request_headers: &head.headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_as_core_fmt_writes_it() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.9.100.1",
            "192.0.2.7",
            "::1",
            "2001:db8::7",
        ] {
            let mut buf = [0u8; 48];
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip, &mut buf), ip.to_string().as_bytes());
        }
    }
}
