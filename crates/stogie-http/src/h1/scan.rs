//! Finding where a request head ends in the connection's buffer, and refusing it as soon
//! as it is past a limit or breaks a line-end rule: one pass over the bytes, run before the
//! parser on every read (so that no buffer grows without bound while a client trickles a
//! head in).

use crate::error::HttpError;
use crate::message::HeadLimits;

const CRLF_REQUIRED: HttpError = HttpError::BadRequest("HTTP requires CRLF terminators");

/// Where the head at the start of `buf` ends (the index past its blank line), if it is
/// complete there; refused once past a limit (the request line's length, a field line's,
/// their count, the whole head's size: on all of `buf` while the head is partial) or, when
/// complete, for a line end that is not CRLF. One pass: the three it replaced (find the end,
/// check the limits, check the line ends; kept in the tests as the reference) cost about 900
/// instructions for a 40-byte head (callgrind).
pub(super) fn scan(buf: &[u8], cfg: &HeadLimits) -> Result<Option<usize>, HttpError> {
    let mut line_start = 0;
    let mut crlf = true;
    let mut too_large = false;
    let mut count = 0usize;
    let mut i = 0;
    let end = loop {
        let Some(at) = next_line_byte(buf, i) else {
            break None;
        };
        i = at + 1;
        if buf[at] == b'\r' {
            // Only a complete head's line ends are judged, and its last byte is a LF.
            crlf &= buf.get(at + 1).is_none_or(|&b| b == b'\n');
            continue;
        }
        crlf &= at > 0 && buf[at - 1] == b'\r';
        let line = at - line_start;
        if line_start == 0 {
            first_line_limits(line, cfg)?;
        } else {
            too_large |= line > cfg.max_header_field + 1;
            count += usize::from(line > 1);
        }
        line_start = at + 1;
        // A bare-LF blank line also ends the head so that it is refused at once, not
        // waited on.
        if buf.get(at + 1) == Some(&b'\n') {
            crlf = false;
            break Some(at + 2);
        }
        if buf.get(at + 1..at + 3) == Some(b"\r\n") {
            break Some(at + 3);
        }
    };
    let len = match end {
        Some(end) => end,
        None => {
            // The piece after the last LF counts as a line too.
            let line = buf.len() - line_start;
            if line_start == 0 {
                first_line_limits(line, cfg)?;
            } else {
                too_large |= line > cfg.max_header_field + 1;
                count += usize::from(line > 1);
            }
            buf.len()
        }
    };
    if too_large || len > cfg.head_limit() || count > cfg.max_header_count {
        return Err(HttpError::HeaderFieldsTooLarge);
    }
    if end.is_some() && !crlf {
        return Err(CRLF_REQUIRED);
    }
    Ok(end)
}

/// Where the first CR or LF at or after `from` is.
///
/// Eight bytes at a time: a word with no byte below 0x0E (CR and LF are 0x0D and 0x0A) is
/// skipped whole. A byte-by-byte search cost about ten instructions a byte (callgrind).
#[inline]
fn next_line_byte(buf: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut i = from;
    while let Some(word) = buf.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().unwrap_or_default());
        // A high bit set for a byte below 0x0E; exact at the lowest flagged byte (a borrow
        // can only flag bytes above it).
        let below = x.wrapping_sub(ONES * 0x0E) & !x & HIGH;
        if below == 0 {
            i += 8;
            continue;
        }
        let at = i + (below.trailing_zeros() / 8) as usize;
        if buf[at] == b'\r' || buf[at] == b'\n' {
            return Some(at);
        }
        // Another control byte (a tab, say): the search goes on after it.
        i = at + 1;
    }
    buf[i..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map(|p| i + p)
}

/// The request line's limits (`len` bytes, with its CR if any).
fn first_line_limits(len: usize, cfg: &HeadLimits) -> Result<(), HttpError> {
    if len > cfg.max_request_line + 1
        || (cfg.max_request_header_size > 0 && len > cfg.max_request_header_size)
    {
        return Err(HttpError::UriTooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::ServerConfig;

    /// Checks that every line end in `head` is CRLF: a bare LF or a bare CR is refused.
    fn check_line_ends(head: &[u8]) -> Result<(), HttpError> {
        let mut i = 0;
        while i < head.len() {
            match head[i] {
                b'\r' => {
                    if head.get(i + 1) != Some(&b'\n') {
                        return Err(CRLF_REQUIRED);
                    }
                    i += 2;
                }
                b'\n' => return Err(CRLF_REQUIRED),
                _ => i += 1,
            }
        }
        Ok(())
    }

    /// Where the head ends (index past the blank line), if it is complete in `buf`.
    fn find_head_end(buf: &[u8]) -> Option<usize> {
        // A bare-LF blank line also ends the head so that it is refused at once, not waited on.
        let mut i = 0;
        while let Some(pos) = buf[i..].iter().position(|&b| b == b'\n') {
            let at = i + pos;
            if buf.get(at + 1) == Some(&b'\n') {
                return Some(at + 2);
            }
            if buf.get(at + 1) == Some(&b'\r') && buf.get(at + 2) == Some(&b'\n') {
                return Some(at + 3);
            }
            i = at + 1;
        }
        None
    }

    /// The limits a head (or all of a partial one) must keep.
    fn check_limits(head: &[u8], cfg: &HeadLimits) -> Result<(), HttpError> {
        let mut lines = head.split(|&b| b == b'\n');
        let first = lines.next().unwrap_or_default();
        if first.len() > cfg.max_request_line + 1 {
            return Err(HttpError::UriTooLong);
        }
        if cfg.max_request_header_size > 0 && first.len() > cfg.max_request_header_size {
            return Err(HttpError::UriTooLong);
        }
        if head.len() > cfg.head_limit() {
            return Err(HttpError::HeaderFieldsTooLarge);
        }
        let mut count = 0usize;
        for line in lines {
            if line.len() > cfg.max_header_field + 1 {
                return Err(HttpError::HeaderFieldsTooLarge);
            }
            if line.len() > 1 {
                count += 1;
            }
        }
        if count > cfg.max_header_count {
            return Err(HttpError::HeaderFieldsTooLarge);
        }
        Ok(())
    }

    /// Moves `seed` on in a xorshift sequence: test bytes that repeat from run to run.
    fn next(seed: &mut u64) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
    }

    /// The three passes [`scan`] replaced, in their order: the reference its answers are
    /// checked against.
    fn three_passes(buf: &[u8], cfg: &HeadLimits) -> Result<Option<usize>, HttpError> {
        match find_head_end(buf) {
            Some(end) => {
                check_limits(&buf[..end], cfg)?;
                check_line_ends(&buf[..end])?;
                Ok(Some(end))
            }
            None => check_limits(buf, cfg).map(|()| None),
        }
    }

    #[test]
    fn line_bytes_found_word_by_word_as_byte_by_byte() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        for _ in 0..20000 {
            let mut buf = [0u8; 40];
            let len = (seed % 41) as usize;
            for b in buf.iter_mut() {
                next(&mut seed);
                // Mostly bytes near the ones that matter: controls, CR, LF, and 0x80+.
                *b = [b'\r', b'\n', b'\t', 0, 0x0c, 0x0e, 0x8d, b'a', 0xff][(seed % 9) as usize];
            }
            let buf = &buf[..len];
            for from in 0..=len {
                let want = buf[from..]
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .map(|p| from + p);
                assert_eq!(next_line_byte(buf, from), want, "{buf:?} from {from}");
            }
        }
    }

    #[test]
    fn one_pass_answers_as_the_three_it_replaces() {
        // Heads made of the bytes that matter to the scan, under tight limits, every prefix.
        let pieces: [&[u8]; 9] = [
            b"\r\n",
            b"\n",
            b"\r",
            b"a",
            b"abcdefgh",
            b"GET / HTTP/1.1",
            b"\r\r\n",
            b"\n\r\n",
            b"X: y",
        ];
        let limits = [
            HeadLimits::from(&ServerConfig::default()),
            HeadLimits {
                max_request_line: 12,
                max_header_field: 6,
                max_header_count: 2,
                max_request_header_size: 0,
                ..HeadLimits::from(&ServerConfig::default())
            },
            HeadLimits {
                max_request_header_size: 20,
                ..HeadLimits::from(&ServerConfig::default())
            },
        ];
        let mut seed = 0x2545f4914f6cdd1du64;
        for _ in 0..4000 {
            let mut buf = Vec::new();
            for _ in 0..(seed % 9) {
                next(&mut seed);
                buf.extend_from_slice(pieces[(seed % pieces.len() as u64) as usize]);
            }
            next(&mut seed);
            for cfg in &limits {
                for n in 0..=buf.len() {
                    let got = scan(&buf[..n], cfg);
                    let want = three_passes(&buf[..n], cfg);
                    assert_eq!(
                        format!("{got:?}"),
                        format!("{want:?}"),
                        "{:?}",
                        String::from_utf8_lossy(&buf[..n])
                    );
                }
            }
        }
    }
}
