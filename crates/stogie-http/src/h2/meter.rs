//! A meter on the frames a client sends: frames that cost the server work but carry no
//! request (PING, SETTINGS, RST_STREAM, PRIORITY, empty DATA) are counted as they pass on
//! their way to the `h2` codec, and past a budget the connection ends with GOAWAY
//! ENHANCE_YOUR_CALM. The codec answers every PING and SETTINGS it is sent, so a flood of
//! them costs the server as much as the client; this reads only the 9-byte frame headers
//! (the codec still decodes everything), and decides nothing else.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::PREFACE;
use crate::transport::Transport;

/// Frames of no request a connection may send in one window before it must request
/// something: far above what browsers and proxies send (a handful of SETTINGS, a PING now
/// and then, a reset per cancelled stream), far below a flood (100,000 PINGs).
const BUDGET: u32 = 1_000;
/// Each request (HEADERS frame) raises the budget: a client that cancels a stream it opened
/// (one RST_STREAM, maybe an empty DATA) is working normally.
const PER_REQUEST: u32 = 4;
const WINDOW: Duration = Duration::from_secs(10);

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_STREAM: u8 = 0x1;

/// Whether a connection went over its budget; the connection's driver waits on it.
#[derive(Default)]
pub(crate) struct Tripped {
    tripped: AtomicBool,
    notify: Notify,
}

impl Tripped {
    /// Resolves once the budget was exceeded.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.tripped.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    fn trip(&self) {
        if !self.tripped.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }
}

/// Where a connection's incoming bytes stand in the frame sequence.
struct Scan {
    /// Bytes of the connection preface still to pass.
    preface_left: usize,
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    skip: u64,
    window_start: Instant,
    spent: u32,
    allowance: u32,
}

impl Scan {
    fn new() -> Scan {
        Scan {
            preface_left: PREFACE.len(),
            header: [0; 9],
            have: 0,
            skip: 0,
            window_start: Instant::now(),
            spent: 0,
            allowance: BUDGET,
        }
    }

    /// Reads `bytes` (the next ones the client sent); whether the budget was exceeded.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let mut over = false;
        while !bytes.is_empty() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                self.preface_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            if self.skip > 0 {
                let n = (self.skip.min(bytes.len() as u64)) as usize;
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                self.have = 0;
                let h = self.header;
                let len = u64::from(h[0]) << 16 | u64::from(h[1]) << 8 | u64::from(h[2]);
                self.skip = len;
                over |= self.count(h[3], h[4], len);
            }
        }
        over
    }

    fn count(&mut self, kind: u8, flags: u8, len: u64) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window_start) >= WINDOW {
            self.window_start = now;
            self.spent = 0;
            self.allowance = BUDGET;
        }
        let costly = match kind {
            HEADERS => {
                self.allowance = self.allowance.saturating_add(PER_REQUEST);
                false
            }
            PING | SETTINGS => flags & FLAG_ACK == 0,
            RST_STREAM | PRIORITY => true,
            DATA => len == 0 && flags & FLAG_END_STREAM == 0,
            _ => false,
        };
        if costly {
            self.spent += 1;
        }
        self.spent > self.allowance
    }
}

/// A transport whose incoming frames are metered.
pub(crate) struct Metered<S> {
    inner: S,
    scan: Scan,
    tripped: Arc<Tripped>,
}

impl<S> Metered<S> {
    /// Meters `inner`; `tripped` is told when the budget is exceeded.
    pub fn new(inner: S, tripped: Arc<Tripped>) -> Self {
        Metered {
            inner,
            scan: Scan::new(),
            tripped,
        }
    }
}

impl<S: Transport> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if this.scan.feed(&buf.filled()[before..]) {
                this.tripped.trip();
            }
        }
        polled
    }
}

impl<S: Transport> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![
            (payload >> 16) as u8,
            (payload >> 8) as u8,
            payload as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.resize(9 + payload, 0);
        f
    }

    #[test]
    fn pings_past_the_budget_trip_it_whatever_the_splits() {
        let mut scan = Scan::new();
        let mut bytes = PREFACE.to_vec();
        for _ in 0..BUDGET {
            bytes.extend(frame(PING, 0, 8));
        }
        // Fed in odd pieces: frame headers split across reads.
        let mut over = false;
        for piece in bytes.chunks(7) {
            over |= scan.feed(piece);
        }
        assert!(!over, "the budget itself is allowed");
        assert!(scan.feed(&frame(PING, 0, 8)));
    }

    #[test]
    fn requests_and_acks_cost_nothing() {
        let mut scan = Scan::new();
        let mut bytes = PREFACE.to_vec();
        for _ in 0..5 * BUDGET {
            bytes.extend(frame(HEADERS, 0x5, 20));
            bytes.extend(frame(DATA, FLAG_END_STREAM, 100));
            bytes.extend(frame(PING, FLAG_ACK, 8));
            bytes.extend(frame(0x8, 0, 4)); // WINDOW_UPDATE
        }
        assert!(!scan.feed(&bytes));
    }

    #[test]
    fn requests_that_are_reset_are_allowed_for() {
        let mut scan = Scan::new();
        let mut bytes = PREFACE.to_vec();
        for _ in 0..3 * BUDGET {
            bytes.extend(frame(HEADERS, 0x4, 20));
            bytes.extend(frame(RST_STREAM, 0, 4));
        }
        assert!(!scan.feed(&bytes));
    }

    #[test]
    fn empty_data_frames_past_the_budget_trip_it() {
        let mut scan = Scan::new();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(HEADERS, 0x4, 20));
        for _ in 0..BUDGET + PER_REQUEST + 1 {
            bytes.extend(frame(DATA, 0, 0));
        }
        assert!(scan.feed(&bytes));
    }
}
