//! Request body decoders: content-length and chunked (with extensions and trailers read,
//! bounded and dropped). Pure state machines over a byte buffer.

use bytes::{Bytes, BytesMut};

use crate::error::BodyError;

/// What a decoder made of the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Some body bytes.
    Data(Bytes),
    /// The body is complete.
    Done,
    /// The buffer holds no complete piece: read more.
    NeedMore,
}

/// Limits for chunked bodies.
const MAX_CHUNK_LINE: usize = 4096;
/// Chunk extensions carry no data: a body may spend only this many bytes on them, so a
/// client cannot keep a reader busy with a stream of extensions.
const MAX_EXTENSION_BYTES: usize = 16 * 1024;
const MAX_TRAILER_BYTES: usize = 8192;
const MAX_TRAILER_FIELDS: usize = 32;

/// Fields that change framing, routing, request handling or authentication and so must not
/// come as trailers (RFC 9110 §6.5.1). Trailers are dropped, never merged into the head; these
/// are refused all the same, since a proxy in front might merge them.
const FORBIDDEN_TRAILERS: &[&[u8]] = &[
    b"content-length",
    b"transfer-encoding",
    b"host",
    b"content-encoding",
    b"content-range",
    b"trailer",
    b"te",
    b"connection",
    b"expect",
    b"authorization",
    b"cookie",
    b"set-cookie",
    b"range",
    b"max-forwards",
    b"cache-control",
    b"proxy-authorization",
];

/// Decodes a body of known framing out of a buffer.
#[derive(Debug)]
pub enum BodyDecoder {
    /// `remaining` bytes still to come.
    Length {
        /// Bytes not yet delivered.
        remaining: u64,
    },
    /// A chunked body.
    Chunked(ChunkedDecoder),
}

impl BodyDecoder {
    /// A decoder for exactly `n` bytes.
    pub fn length(n: u64) -> Self {
        BodyDecoder::Length { remaining: n }
    }

    /// A decoder for a chunked body of at most `limit` bytes (0: no limit).
    pub fn chunked(limit: u64) -> Self {
        BodyDecoder::Chunked(ChunkedDecoder::new(limit))
    }

    /// Takes the next piece of body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, BodyError> {
        match self {
            BodyDecoder::Length { remaining } => {
                if *remaining == 0 {
                    return Ok(Decoded::Done);
                }
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = (*remaining).min(buf.len() as u64) as usize;
                *remaining -= n as u64;
                Ok(Decoded::Data(buf.split_to(n).freeze()))
            }
            BodyDecoder::Chunked(c) => c.decode(buf),
        }
    }

    /// Whether the whole body has been delivered.
    pub fn is_done(&self) -> bool {
        match self {
            BodyDecoder::Length { remaining } => *remaining == 0,
            BodyDecoder::Chunked(c) => c.state == ChunkState::Done,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// The chunked transfer-coding decoder (RFC 9112 §7.1).
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    total: u64,
    limit: u64,
    extension_bytes: usize,
    trailer_bytes: usize,
    trailer_fields: usize,
}

impl ChunkedDecoder {
    /// A decoder for a body of at most `limit` bytes (0: no limit).
    pub fn new(limit: u64) -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            total: 0,
            limit,
            extension_bytes: 0,
            trailer_bytes: 0,
            trailer_fields: 0,
        }
    }

    /// Takes the next piece of body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, BodyError> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(Decoded::Done),
                ChunkState::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE, "chunk size line too long")?
                    else {
                        return Ok(Decoded::NeedMore);
                    };
                    let (size, digits) = parse_chunk_size(&line)?;
                    self.extension_bytes += line.len() - digits;
                    if self.extension_bytes > MAX_EXTENSION_BYTES {
                        return Err(BodyError::Malformed("too many chunk extension bytes"));
                    }
                    self.total = self.total.saturating_add(size);
                    if self.limit > 0 && self.total > self.limit {
                        return Err(BodyError::TooLarge);
                    }
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = left.min(buf.len() as u64) as usize;
                    let data = buf.split_to(n).freeze();
                    self.state = if n as u64 == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n as u64)
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|&b| b != b'\r') {
                            return Err(BodyError::Malformed("missing CRLF after chunk data"));
                        }
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyError::Malformed("missing CRLF after chunk data"));
                    }
                    let _ = buf.split_to(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let room = MAX_TRAILER_BYTES.saturating_sub(self.trailer_bytes).max(2);
                    let Some(line) = take_line(buf, room, "trailer section too large")? else {
                        return Ok(Decoded::NeedMore);
                    };
                    self.trailer_bytes += line.len() + 2;
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                        return Ok(Decoded::Done);
                    }
                    self.trailer_fields += 1;
                    if self.trailer_fields > MAX_TRAILER_FIELDS {
                        return Err(BodyError::Malformed("too many trailer fields"));
                    }
                    check_trailer(&line)?;
                }
            }
        }
    }
}

/// Takes one CRLF-terminated line (without the CRLF) off `buf`, if it is all there.
fn take_line(
    buf: &mut BytesMut,
    max: usize,
    too_long: &'static str,
) -> Result<Option<Bytes>, BodyError> {
    match buf.iter().take(max + 1).position(|&b| b == b'\n') {
        Some(lf) => {
            if lf == 0 || buf[lf - 1] != b'\r' {
                return Err(BodyError::Malformed(
                    "chunked body lines must end with CRLF",
                ));
            }
            let line = buf.split_to(lf + 1).freeze();
            if line[..lf - 1].contains(&b'\r') {
                return Err(BodyError::Malformed("bare CR in chunked body"));
            }
            Ok(Some(line.slice(..lf - 1)))
        }
        None if buf.len() > max => Err(BodyError::Malformed(too_long)),
        None => Ok(None),
    }
}

/// `chunk-size [ chunk-ext ]`: hex digits only, then validated extensions. Returns the size
/// and how many bytes of the line were its digits.
fn parse_chunk_size(line: &[u8]) -> Result<(u64, usize), BodyError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(BodyError::Malformed("invalid chunk size"));
    }
    let hex = &line[..digits];
    let significant = hex.iter().skip_while(|&&b| b == b'0').count();
    if significant > 15 {
        return Err(BodyError::Malformed("chunk size too large"));
    }
    let size = hex.iter().fold(0u64, |acc, &b| {
        acc * 16 + (b as char).to_digit(16).unwrap_or(0) as u64
    });
    check_extensions(&line[digits..])?;
    Ok((size, digits))
}

/// `*( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )`
fn check_extensions(mut rest: &[u8]) -> Result<(), BodyError> {
    const BAD: BodyError = BodyError::Malformed("invalid chunk extension");
    let skip_ws =
        |s: &[u8]| -> usize { s.iter().take_while(|&&b| b == b' ' || b == b'\t').count() };
    loop {
        let ws = skip_ws(rest);
        rest = &rest[ws..];
        if rest.is_empty() {
            // BWS only comes before a `;`: `5 ` is not a chunk size.
            return if ws == 0 {
                Ok(())
            } else {
                Err(BodyError::Malformed("invalid chunk size"))
            };
        }
        if rest[0] != b';' {
            return Err(if rest.iter().all(|b| b.is_ascii_alphanumeric()) {
                BodyError::Malformed("invalid chunk size")
            } else {
                BAD
            });
        }
        rest = &rest[1..];
        rest = &rest[skip_ws(rest)..];
        let name = rest
            .iter()
            .take_while(|&&b| crate::message::is_token(&[b]))
            .count();
        if name == 0 {
            return Err(BAD);
        }
        rest = &rest[name..];
        let ws = skip_ws(rest);
        if rest.get(ws) == Some(&b'=') {
            rest = &rest[ws + 1..];
            rest = &rest[skip_ws(rest)..];
            if rest.first() == Some(&b'"') {
                let mut i = 1;
                loop {
                    match rest.get(i) {
                        None => return Err(BAD),
                        Some(b'"') => break,
                        // quoted-pair: `\` and HTAB, SP, VCHAR or obs-text
                        Some(b'\\')
                            if rest
                                .get(i + 1)
                                .is_some_and(|&b| is_qdtext(b) || b == b'"' || b == b'\\') =>
                        {
                            i += 2
                        }
                        Some(&b) if is_qdtext(b) => i += 1,
                        Some(_) => return Err(BAD),
                    }
                }
                rest = &rest[i + 1..];
            } else {
                let v = rest
                    .iter()
                    .take_while(|&&b| crate::message::is_token(&[b]))
                    .count();
                if v == 0 {
                    return Err(BAD);
                }
                rest = &rest[v..];
            }
        }
    }
}

/// qdtext (RFC 9110 §5.6.4): HTAB, SP, visible ASCII but `"` and `\`, and obs-text.
fn is_qdtext(b: u8) -> bool {
    b == b'\t' || ((0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') || b >= 0x80
}

fn check_trailer(line: &[u8]) -> Result<(), BodyError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(BodyError::Malformed("invalid trailer field"))?;
    let name = &line[..colon];
    if !crate::message::is_token(name) {
        return Err(BodyError::Malformed("invalid trailer field name"));
    }
    if line[colon + 1..]
        .iter()
        .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(BodyError::Malformed("invalid trailer field value"));
    }
    if FORBIDDEN_TRAILERS
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f))
    {
        return Err(BodyError::Malformed(
            "this field is not allowed in a trailer",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(raw: &[u8]) -> Result<Vec<u8>, BodyError> {
        let mut d = ChunkedDecoder::new(0);
        let mut buf = BytesMut::from(raw);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => out.extend_from_slice(&b),
                Decoded::Done => return Ok(out),
                Decoded::NeedMore => return Err(BodyError::Truncated),
            }
        }
    }

    #[test]
    fn decodes() {
        assert_eq!(
            all(b"5\r\nhello\r\n6;a=b;c=\"d\"\r\n world\r\n0\r\nX-T: 1\r\n\r\n").unwrap(),
            b"hello world"
        );
    }

    #[test]
    fn refuses() {
        for raw in [
            &b"0x5\r\nhello\r\n0\r\n\r\n"[..],
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"0\r\nContent-Length: 5\r\n\r\n",
            b"1_0\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
        ] {
            assert!(
                matches!(all(raw), Err(BodyError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn byte_by_byte() {
        let raw = b"3\r\nabc\r\n0\r\n\r\n";
        let mut d = ChunkedDecoder::new(0);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut done = false;
        for &b in raw {
            buf.extend_from_slice(&[b]);
            loop {
                match d.decode(&mut buf).unwrap() {
                    Decoded::Data(x) => out.extend_from_slice(&x),
                    Decoded::Done => {
                        done = true;
                        break;
                    }
                    Decoded::NeedMore => break,
                }
            }
        }
        assert!(done);
        assert_eq!(out, b"abc");
    }

    #[test]
    fn extension_syntax() {
        for raw in [
            &b"5 \r\nhello\r\n0\r\n\r\n"[..],
            b"0 \r\n\r\n",
            b"5;\r\nhello\r\n0\r\n\r\n",
            b"5;a=\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"x\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"\\\x01\"\r\nhello\r\n0\r\n\r\n",
            b"5;a=b \r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                matches!(all(raw), Err(BodyError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(
            all(b"5 ; a = \"b \\\" c\" ;d\r\nhello\r\n0\r\n\r\n").unwrap(),
            b"hello"
        );
    }

    #[test]
    fn extensions_are_bounded_in_all() {
        let mut raw = Vec::new();
        for _ in 0..6 {
            raw.extend_from_slice(b"1;a=");
            raw.extend(std::iter::repeat_n(b'b', 3000));
            raw.extend_from_slice(b"\r\nx\r\n");
        }
        assert_eq!(
            all(&raw),
            Err(BodyError::Malformed("too many chunk extension bytes"))
        );
    }

    #[test]
    fn trailers() {
        assert_eq!(
            all(b"1\r\nx\r\n0\r\nVary: *\r\nContent-Type: text/plain\r\n\r\n").unwrap(),
            b"x"
        );
        for t in [
            "Host: h",
            "Transfer-Encoding: chunked",
            "Authorization: x",
            "X T: 1",
        ] {
            let raw = format!("0\r\n{t}\r\n\r\n");
            assert!(
                matches!(all(raw.as_bytes()), Err(BodyError::Malformed(_))),
                "{t}"
            );
        }
    }

    #[test]
    fn limit() {
        let mut d = ChunkedDecoder::new(4);
        let mut buf = BytesMut::from(&b"5\r\nhello\r\n"[..]);
        assert_eq!(d.decode(&mut buf), Err(BodyError::TooLarge));
    }
}
