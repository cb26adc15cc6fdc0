//! A meter on the frames a client sends: frames that cost the server work but carry no
//! request (PING, SETTINGS, RST_STREAM, PRIORITY, empty DATA) are counted as they pass on
//! their way to the `h2` codec, and past a budget the connection ends with GOAWAY
//! ENHANCE_YOUR_CALM. The codec answers every PING and SETTINGS it is sent, so a flood of
//! them costs the server as much as the client; this reads only the 9-byte frame headers
//! (the codec still decodes everything).
//!
//! The headers also tell two errors the codec reports with another code than RFC 9113's:
//! a frame of fixed size with another size (FRAME_SIZE_ERROR, §4.2; the codec says
//! PROTOCOL_ERROR) and a PUSH_PROMISE from a client (PROTOCOL_ERROR, §8.4; the codec waits
//! for the rest of its header block). Such a frame never reaches the codec: the connection
//! ends there with the right GOAWAY.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use h2::Reason;
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
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_STREAM: u8 = 0x1;

/// Whether a connection went over its budget, or sent a frame it must not; the
/// connection's driver waits on it.
#[derive(Default)]
pub(crate) struct Tripped {
    tripped: AtomicBool,
    /// The GOAWAY's error code: ENHANCE_YOUR_CALM (0) unless a frame broke the protocol.
    reason: AtomicU32,
    notify: Notify,
}

impl Tripped {
    /// Resolves once the budget was exceeded (`None`) or a frame refused (its error code).
    pub async fn wait(&self) -> Option<Reason> {
        loop {
            let notified = self.notify.notified();
            if self.tripped.load(Ordering::Acquire) {
                return match self.reason.load(Ordering::Acquire) {
                    0 => None,
                    code => Some(Reason::from(code)),
                };
            }
            notified.await;
        }
    }

    fn trip(&self, refused: Option<Reason>) {
        if let Some(r) = refused {
            let _ =
                self.reason
                    .compare_exchange(0, u32::from(r), Ordering::AcqRel, Ordering::Acquire);
        }
        if !self.tripped.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }
}

/// The error a frame is, by its header alone (RFC 9113 §6): a frame of fixed size with
/// another size, a SETTINGS acknowledgement with a payload, a PUSH_PROMISE from a client.
fn refused(kind: u8, flags: u8, len: u64) -> Option<Reason> {
    let size_ok = match kind {
        PRIORITY => len == 5,
        RST_STREAM | WINDOW_UPDATE => len == 4,
        PING => len == 8,
        SETTINGS if flags & FLAG_ACK != 0 => len == 0,
        SETTINGS => len % 6 == 0,
        PUSH_PROMISE => return Some(Reason::PROTOCOL_ERROR),
        _ => true,
    };
    (!size_ok).then_some(Reason::FRAME_SIZE_ERROR)
}

/// What the bytes a client sent came to.
#[derive(Debug, PartialEq, Eq)]
enum Fed {
    /// All pass on; `true` when the budget was exceeded.
    Pass(bool),
    /// The bytes from `at` on must not reach the codec (a frame whose header ends there
    /// is refused, with `reason`).
    Refuse { at: usize, reason: Reason },
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

    /// Reads `bytes` (the next ones the client sent).
    fn feed(&mut self, all: &[u8]) -> Fed {
        let mut bytes = all;
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
                if let Some(reason) = refused(h[3], h[4], len) {
                    // The header's last byte stays back: the codec never has the frame.
                    let at = all.len() - bytes.len() - 1;
                    return Fed::Refuse { at, reason };
                }
                self.skip = len;
                over |= self.count(h[3], h[4], len);
            }
        }
        Fed::Pass(over)
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
    /// A frame was refused: nothing more is read (the driver ends the connection).
    refused: bool,
}

impl<S> Metered<S> {
    /// Meters `inner`; `tripped` is told when the budget is exceeded.
    pub fn new(inner: S, tripped: Arc<Tripped>) -> Self {
        Metered {
            inner,
            scan: Scan::new(),
            tripped,
            refused: false,
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
        if this.refused {
            // The driver, woken by the trip, ends the connection.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            match this.scan.feed(&buf.filled()[before..]) {
                Fed::Pass(false) => {}
                Fed::Pass(true) => this.tripped.trip(None),
                Fed::Refuse { at, reason } => {
                    this.refused = true;
                    this.tripped.trip(Some(reason));
                    buf.set_filled(before + at);
                    if at == 0 {
                        // Nothing to pass on, and no end of the stream either.
                        return Poll::Pending;
                    }
                }
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
        for piece in bytes.chunks(7) {
            assert_eq!(
                scan.feed(piece),
                Fed::Pass(false),
                "the budget itself is allowed"
            );
        }
        assert_eq!(scan.feed(&frame(PING, 0, 8)), Fed::Pass(true));
    }

    #[test]
    fn requests_and_acks_cost_nothing() {
        let mut scan = Scan::new();
        let mut bytes = PREFACE.to_vec();
        for _ in 0..5 * BUDGET {
            bytes.extend(frame(HEADERS, 0x5, 20));
            bytes.extend(frame(DATA, FLAG_END_STREAM, 100));
            bytes.extend(frame(PING, FLAG_ACK, 8));
            bytes.extend(frame(WINDOW_UPDATE, 0, 4));
        }
        assert_eq!(scan.feed(&bytes), Fed::Pass(false));
    }

    #[test]
    fn requests_that_are_reset_are_allowed_for() {
        let mut scan = Scan::new();
        let mut bytes = PREFACE.to_vec();
        for _ in 0..3 * BUDGET {
            bytes.extend(frame(HEADERS, 0x4, 20));
            bytes.extend(frame(RST_STREAM, 0, 4));
        }
        assert_eq!(scan.feed(&bytes), Fed::Pass(false));
    }

    #[test]
    fn empty_data_frames_past_the_budget_trip_it() {
        let mut scan = Scan::new();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(HEADERS, 0x4, 20));
        for _ in 0..BUDGET + PER_REQUEST + 1 {
            bytes.extend(frame(DATA, 0, 0));
        }
        assert_eq!(scan.feed(&bytes), Fed::Pass(true));
    }

    #[test]
    fn a_frame_of_the_wrong_size_stops_before_its_header_ends() {
        let ok = [
            frame(PING, 0, 8),
            frame(SETTINGS, 0, 12),
            frame(SETTINGS, FLAG_ACK, 0),
            frame(WINDOW_UPDATE, 0, 4),
            frame(RST_STREAM, 0, 4),
            frame(PRIORITY, 0, 5),
            frame(HEADERS, 0x4, 20),
        ]
        .concat();
        for (bad, reason) in [
            (frame(PING, 0, 6), Reason::FRAME_SIZE_ERROR),
            (frame(SETTINGS, 0, 5), Reason::FRAME_SIZE_ERROR),
            (frame(SETTINGS, FLAG_ACK, 6), Reason::FRAME_SIZE_ERROR),
            (frame(WINDOW_UPDATE, 0, 3), Reason::FRAME_SIZE_ERROR),
            (frame(RST_STREAM, 0, 5), Reason::FRAME_SIZE_ERROR),
            (frame(PRIORITY, 0, 4), Reason::FRAME_SIZE_ERROR),
            (frame(PUSH_PROMISE, 0x4, 8), Reason::PROTOCOL_ERROR),
        ] {
            let mut bytes = PREFACE.to_vec();
            bytes.extend(&ok);
            let at = bytes.len() + 8;
            bytes.extend(&bad);
            bytes.extend(frame(PING, 0, 8));
            assert_eq!(Scan::new().feed(&bytes), Fed::Refuse { at, reason });
            // Split anywhere, the cut is where the header's last byte is.
            let mut scan = Scan::new();
            let (a, b) = bytes.split_at(at - 3);
            assert_eq!(scan.feed(a), Fed::Pass(false));
            assert_eq!(scan.feed(b), Fed::Refuse { at: 3, reason });
        }
    }
}
