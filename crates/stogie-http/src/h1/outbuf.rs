//! Response bytes waiting for the socket. Small pieces (heads, chunk framing, short bodies)
//! are copied into one buffer; large ones are kept as they are (no copy) and go out in the
//! same vectored write, in order: a 64 KiB body leaves with its head in one `writev`, and
//! a hundred streamed chunks with their framing in one or two.

use std::io::IoSlice;

use bytes::Bytes;

/// Pieces at least this long are referenced, not copied.
const COPY_LIMIT: usize = 1024;
/// Most slices handed to one `writev` (Linux allows 1024).
const MAX_SLICES: usize = 512;

/// Bytes queued for writing. Boxed, and only while a response is in progress: an idle
/// connection's future stays a size class smaller (see the size test in `conn`).
#[derive(Default)]
pub(crate) struct OutBuf {
    inner: Option<Box<Queue>>,
}

#[derive(Default)]
struct Queue {
    /// The copied bytes.
    buf: Vec<u8>,
    /// Referenced pieces, each with the length `buf` had when it was queued: it goes out
    /// after `buf[..at]` and before whatever was copied later.
    pieces: Vec<(usize, Bytes)>,
    /// Bytes in `pieces`.
    pieces_len: usize,
    /// Bytes already written from the front of the queue.
    written: usize,
}

impl OutBuf {
    fn queue(&mut self) -> &mut Queue {
        self.inner.get_or_insert_with(Box::default)
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.inner.as_ref().is_none_or(|q| q.is_empty())
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |q| q.len())
    }

    /// Whether a write should happen before more is queued (too many pieces for one
    /// `writev`).
    pub fn is_full(&self) -> bool {
        self.inner.as_ref().is_some_and(|q| q.is_full())
    }

    /// The copy buffer, to encode into directly (a head, a chunk header).
    pub fn buf_mut(&mut self) -> &mut Vec<u8> {
        &mut self.queue().buf
    }

    /// Queues a copy of `data`.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.queue().buf.extend_from_slice(data);
    }

    /// Queues `data`, copying it when short.
    pub fn push(&mut self, data: Bytes) {
        self.queue().push(data);
    }

    /// Fills `out` with the unwritten bytes in order.
    pub fn slices<'a>(&'a self, out: &mut Vec<IoSlice<'a>>) {
        if let Some(q) = &self.inner {
            q.slices(out);
        }
    }

    /// Fills `out` with the unwritten bytes in order and returns how many slices that took,
    /// or `None` (and `out` partly filled) when they do not fit.
    pub fn slices_into<'a>(&'a self, out: &mut [IoSlice<'a>]) -> Option<usize> {
        match &self.inner {
            Some(q) => q.slices_into(out),
            None => Some(0),
        }
    }

    /// The unwritten bytes when they are all in one place (no referenced pieces).
    pub fn contiguous(&self) -> Option<&[u8]> {
        match &self.inner {
            Some(q) => q.contiguous(),
            None => Some(&[]),
        }
    }

    /// Marks `n` more bytes written; once everything is, the queue empties (keeping the
    /// copy buffer's memory unless it grew large).
    pub fn advance(&mut self, n: usize) {
        if let Some(q) = &mut self.inner {
            q.advance(n);
        }
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        if let Some(q) = &mut self.inner {
            q.clear();
        }
    }

    /// Drops everything and the memory held (an idle connection holds no buffer).
    pub fn release(&mut self) {
        self.inner = None;
    }
}

impl Queue {
    /// Whether nothing is waiting.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes waiting.
    fn len(&self) -> usize {
        self.buf.len() + self.pieces_len - self.written
    }

    /// Whether a write should happen before more is queued (too many pieces for one
    /// `writev`).
    fn is_full(&self) -> bool {
        self.pieces.len() * 2 + 1 >= MAX_SLICES
    }

    fn push(&mut self, data: Bytes) {
        if data.len() < COPY_LIMIT {
            self.buf.extend_from_slice(&data);
        } else {
            self.pieces_len += data.len();
            self.pieces.push((self.buf.len(), data));
        }
    }

    /// Calls `f` with each unwritten piece, in order.
    fn unwritten<'a>(&'a self, mut f: impl FnMut(&'a [u8])) {
        let mut skip = self.written;
        let mut add = |s: &'a [u8]| {
            if skip >= s.len() {
                skip -= s.len();
            } else {
                f(&s[skip..]);
                skip = 0;
            }
        };
        let mut at = 0;
        for (pos, piece) in &self.pieces {
            add(&self.buf[at..*pos]);
            add(piece);
            at = *pos;
        }
        add(&self.buf[at..]);
    }

    /// Fills `out` with the unwritten bytes in order.
    fn slices<'a>(&'a self, out: &mut Vec<IoSlice<'a>>) {
        self.unwritten(|s| out.push(IoSlice::new(s)));
    }

    fn slices_into<'a>(&'a self, out: &mut [IoSlice<'a>]) -> Option<usize> {
        // At most one slice before each piece, the piece, and one after the last.
        if self.pieces.len() * 2 + 1 > out.len() {
            return None;
        }
        let mut n = 0;
        self.unwritten(|s| {
            out[n] = IoSlice::new(s);
            n += 1;
        });
        Some(n)
    }

    /// The unwritten bytes when they are all in one place (no referenced pieces).
    fn contiguous(&self) -> Option<&[u8]> {
        if self.pieces.is_empty() {
            Some(&self.buf[self.written..])
        } else {
            None
        }
    }

    /// Marks `n` more bytes written; once everything is, the queue empties (keeping the
    /// copy buffer's memory unless it grew large).
    fn advance(&mut self, n: usize) {
        self.written += n;
        if self.is_empty() {
            self.clear();
        }
    }

    /// Drops everything queued.
    fn clear(&mut self) {
        self.buf.clear();
        self.pieces.clear();
        self.pieces_len = 0;
        self.written = 0;
        if self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unwritten bytes, listed both ways (on the stack when they fit): the same.
    fn collect(q: &OutBuf) -> Vec<u8> {
        let mut v = Vec::new();
        q.slices(&mut v);
        let listed: Vec<u8> = v.iter().flat_map(|s| s.iter().copied()).collect();
        let mut stack = [IoSlice::new(&[]); 8];
        if let Some(n) = q.slices_into(&mut stack) {
            let on_stack: Vec<u8> = stack[..n].iter().flat_map(|s| s.iter().copied()).collect();
            assert_eq!(on_stack, listed);
        }
        listed
    }

    #[test]
    fn pieces_keep_their_order_and_partial_writes_resume() {
        let mut q = OutBuf::default();
        q.buf_mut().extend_from_slice(b"head;");
        q.push(Bytes::from(vec![b'a'; 2000]));
        q.extend_from_slice(b";mid;");
        q.push(Bytes::from(vec![b'b'; 1500]));
        q.push(Bytes::from_static(b";end"));
        let mut want = b"head;".to_vec();
        want.extend(vec![b'a'; 2000]);
        want.extend_from_slice(b";mid;");
        want.extend(vec![b'b'; 1500]);
        want.extend_from_slice(b";end");
        assert_eq!(collect(&q), want);
        assert_eq!(q.len(), want.len());
        for step in [3, 1000, 1004, 7, 1500] {
            q.advance(step);
            let off = want.len() - q.len();
            assert_eq!(collect(&q), want[off..].to_vec());
        }
        q.advance(q.len());
        assert!(q.is_empty());
        assert!(collect(&q).is_empty());
    }
}
