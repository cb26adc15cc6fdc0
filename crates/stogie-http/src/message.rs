//! What a request and a response are, whatever protocol carries them: the version, the
//! request head a codec produces, the response head a gateway gives back, and the rules for
//! field names, field values and status lines that both codecs and the gateway apply.

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;

/// The request's HTTP version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
    /// HTTP/2 (written `HTTP/2.0`, as gunicorn and CGI's `SERVER_PROTOCOL` have it).
    Http2,
}

impl Version {
    /// The protocol as written in a request or status line.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
            Version::Http2 => "HTTP/2.0",
        }
    }
}

/// One request header field, as received (name spelling kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The field name.
    pub name: Bytes,
    /// The field value, leading and trailing whitespace removed.
    pub value: Bytes,
}

/// A validated request head, whatever protocol carried it: what the gateway is given. Every
/// byte field is a slice of the one buffer the head arrived in.
#[derive(Clone, Debug)]
pub struct RequestHead {
    /// The method token, case kept.
    pub method: Bytes,
    /// The request-target exactly as sent (Cheroot's `REQUEST_URI`).
    pub target: Bytes,
    /// The path part of the target, still percent-encoded.
    pub path: Bytes,
    /// The query part of the target without the `?`.
    pub query: Bytes,
    /// The scheme of an absolute-form target (`http`), if one was sent.
    pub scheme: Option<Bytes>,
    /// The protocol version.
    pub version: Version,
    /// Header fields in arrival order (names with `_` dropped unless allowed).
    pub headers: Vec<Header>,
    /// The client waits for a `100 Continue` before it sends the body (`Expect:
    /// 100-continue`, on HTTP/1.1 and later).
    pub expect_continue: bool,
}

impl RequestHead {
    /// The first value of a header, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| &h.value)
    }

    /// A head with nothing in it, for a request refused before its head could be read.
    pub fn empty() -> RequestHead {
        RequestHead {
            method: Bytes::new(),
            target: Bytes::new(),
            path: Bytes::new(),
            query: Bytes::new(),
            scheme: None,
            version: Version::Http11,
            headers: Vec::new(),
            expect_continue: false,
        }
    }

    /// Whether the method is HEAD (the response then carries no body).
    pub fn is_head(&self) -> bool {
        &self.method[..] == b"HEAD"
    }
}

/// The limits a request head is read with, whatever the protocol (what a codec needs of the
/// server's settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLimits {
    /// Longest request line (414 past it).
    pub max_request_line: usize,
    /// Most header fields in one request (431 past it).
    pub max_header_count: usize,
    /// Longest single header field line (431 past it).
    pub max_header_field: usize,
    /// Largest whole request head in bytes; 0 means only the per-line limits apply.
    pub max_request_header_size: usize,
    /// Largest request body in bytes (a larger Content-Length is a 413); 0 means no limit.
    pub max_request_body_size: u64,
    /// Whether header names containing `_` are kept (they alias `-` names).
    pub allow_underscore_headers: bool,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_request_line: 8190,
            max_header_count: 100,
            max_header_field: 8190,
            max_request_header_size: 0,
            max_request_body_size: 0,
            allow_underscore_headers: false,
        }
    }
}

impl HeadLimits {
    /// The largest head the reader will buffer before answering 431.
    pub fn head_limit(&self) -> usize {
        if self.max_request_header_size > 0 {
            self.max_request_header_size
        } else {
            // request line + every field at its limit, plus the CRLFs
            self.max_header_count
                .saturating_mul(self.max_header_field.saturating_add(2))
                .saturating_add(self.max_request_line)
                .saturating_add(4)
        }
    }
}

// --- field rules ----------------------------------------------------------------------

/// RFC 9110 tchar, as a table: every request's method and field names, and every
/// response's field names, are checked byte by byte, and the chain of comparisons cost
/// about three times a lookup (callgrind, per request on the I/O thread).
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = matches!(i as u8,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
            | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z');
        i += 1;
    }
    t
};

pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// Whether `s` is a non-empty RFC 9110 token.
pub fn is_token(s: &[u8]) -> bool {
    // No early exit: valid names are the usual case, and a branch-free loop is cheaper.
    !s.is_empty() && s.iter().fold(true, |ok, &b| ok & is_tchar(b))
}

/// Whether `s` holds a control character other than HTAB (CR, LF and NUL among them) or
/// DEL: RFC 9110 allows none in a field value or a reason phrase, and clients refuse a head
/// that has one.
pub fn has_bad_byte(s: &[u8]) -> bool {
    // Folded without an early exit so that it vectorizes: good values are the usual case.
    s.iter().fold(false, |bad, &b| {
        bad | ((b < 0x20) & (b != b'\t')) | (b == 0x7f)
    })
}

/// Why a response header field the application gave cannot be sent: a name that is not a
/// token, or a value with a control character (which would break the head, or inject
/// fields). Both codecs refuse such a head (the app's request then gets a 500).
pub fn response_field_error(name: &[u8], value: &[u8]) -> Option<String> {
    if !is_token(name) {
        return Some(format!(
            "response header name {:?} is not a token",
            String::from_utf8_lossy(name)
        ));
    }
    if has_bad_byte(value) {
        return Some(format!(
            "response header {} has a value with a control character (CR, LF, NUL...)",
            String::from_utf8_lossy(name)
        ));
    }
    None
}

/// A Content-Length value as a client reads it: ASCII digits, optionally surrounded by
/// spaces. `+5` or a Unicode space would parse with `str::parse` and then be framed
/// differently, or refused, by the client.
pub fn content_length_value(value: &[u8]) -> Option<u64> {
    digits_value(value.trim_ascii())
}

/// The number `digits` spells: ASCII digits only (no sign, no space), `None` when empty or
/// past a u64.
pub fn digits_value(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    // Summed by hand: every request and response with a length comes through here, and
    // `str::parse` cost three times as much (about 400 instructions a request, callgrind).
    digits.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Parses and checks the status: three digits, a space, a reason phrase without control
/// characters.
pub fn status_code(status: &[u8]) -> Result<u16, &'static str> {
    if status.len() < 3 || !status[..3].iter().all(u8::is_ascii_digit) {
        return Err("status must start with a three-digit code");
    }
    if status.len() > 3 && status[3] != b' ' {
        return Err("status code must be followed by a space and a reason phrase");
    }
    if has_bad_byte(status) {
        return Err("status contains a control character (CR, LF, NUL...)");
    }
    let code = (status[0] - b'0') as u16 * 100
        + (status[1] - b'0') as u16 * 10
        + (status[2] - b'0') as u16;
    if code < 100 {
        return Err("status code must be 100 or more");
    }
    Ok(code)
}

/// `host[:port]` per RFC 3986: a reg-name, an IPv4 address or a bracketed IPv6 literal.
pub fn is_valid_host(v: &[u8]) -> bool {
    if v.is_empty() {
        // RFC 9112 §3.2: an empty Host is allowed when the target has no authority.
        return true;
    }
    let (host, port) = if v.starts_with(b"[") {
        match v.iter().position(|&b| b == b']') {
            Some(end) => {
                let inner = &v[1..end];
                let is_ipv6 = std::str::from_utf8(inner)
                    .is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok());
                if !is_ipv6 {
                    return false;
                }
                (&v[..end + 1], &v[end + 1..])
            }
            None => return false,
        }
    } else {
        match v.iter().position(|&b| b == b':') {
            Some(c) => (&v[..c], &v[c..]),
            None => (v, &b""[..]),
        }
    };
    if !port.is_empty() {
        let digits = &port[1..];
        if !port.starts_with(b":") || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
            return false;
        }
    }
    host.starts_with(b"[") || is_reg_name(host)
}

/// RFC 3986 reg-name (which IPv4 addresses also match): unreserved, sub-delims and
/// pct-encoded bytes.
fn is_reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        if b == b'%' {
            let hex = host.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        // A table: every request's Host comes through here, and the chain of comparisons
        // was most of its cost.
        if !REG_NAME[b as usize] {
            return false;
        }
        i += 1;
    }
    true
}

/// [`is_reg_name`]'s bytes other than `%`: unreserved and sub-delims.
static REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        i += 1;
    }
    t
};

// --- response heads ------------------------------------------------------------------

/// A response head as the application gave it: the status and every name and value, back
/// to back in one buffer.
///
/// One buffer, not a `Bytes` per piece: the head is built on the application's thread and
/// dropped on the connection's, and a `Bytes` per piece cost that thread two allocations
/// and a shared count per string (measured at hello: the worker's CPU 2.31 -> 2.18 us per
/// request, the I/O thread's 6.39 -> 6.23; 3% more requests per second).
#[derive(Clone, Default)]
pub struct ResponseHead {
    /// A `Vec` or a static buffer: a `Bytes` made from a `Vec` that is not full allocates.
    text: Cow<'static, [u8]>,
    status: Range<usize>,
    headers: Vec<(Range<usize>, Range<usize>)>,
}

impl ResponseHead {
    /// A head from a status (`"200 OK"`) and header pairs, copied.
    pub fn new<N, V>(status: impl AsRef<[u8]>, headers: impl IntoIterator<Item = (N, V)>) -> Self
    where
        N: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut text = status.as_ref().to_vec();
        let status = 0..text.len();
        let headers = headers
            .into_iter()
            .map(|(name, value)| {
                let n = push(&mut text, name.as_ref());
                (n, push(&mut text, value.as_ref()))
            })
            .collect();
        ResponseHead {
            text: text.into(),
            status,
            headers,
        }
    }

    /// A head whose status and header names and values are the given ranges of `text`, as a
    /// gateway that gathers them into one buffer (or keeps a static one) has them. Ranges
    /// outside `text` are cut to it.
    pub fn from_text(
        text: impl Into<Cow<'static, [u8]>>,
        status: Range<usize>,
        mut headers: Vec<(Range<usize>, Range<usize>)>,
    ) -> Self {
        let text = text.into();
        let len = text.len();
        let fit = |r: &mut Range<usize>| {
            r.end = r.end.min(len);
            r.start = r.start.min(r.end);
        };
        let mut status = status;
        fit(&mut status);
        for (n, v) in &mut headers {
            fit(n);
            fit(v);
        }
        ResponseHead {
            text,
            status,
            headers,
        }
    }

    /// The status line's code and reason phrase.
    pub fn status(&self) -> &[u8] {
        &self.text[self.status.clone()]
    }

    /// About how many bytes the head takes on the wire, beyond its fixed parts.
    pub(crate) fn size_hint(&self) -> usize {
        self.text.len() + self.headers.len() * 4
    }

    /// The header fields, in order, with the application's spelling.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
        self.headers
            .iter()
            .map(|(n, v)| (&self.text[n.clone()], &self.text[v.clone()]))
    }
}

/// Room for a response head, made by the engine with each request ([`crate::Request`]): a
/// gateway that builds its head in it ([`ResponseHead::from_text`]) allocates nothing on its
/// own thread, and the engine's thread, which frees the head, also allocated it. (The
/// worker's allocator otherwise gathered, on each allocation, what the engine's thread had
/// freed of its earlier ones: at hello the worker's CPU 2.08 -> 1.97 us per request.)
#[derive(Debug)]
pub struct HeadRoom {
    /// For the status and every name and value.
    pub text: Vec<u8>,
    /// For the fields' ranges in `text`.
    pub fields: Vec<(Range<usize>, Range<usize>)>,
}

impl HeadRoom {
    /// Room for a typical head.
    pub fn new() -> Self {
        HeadRoom {
            text: Vec::with_capacity(256),
            fields: Vec::with_capacity(8),
        }
    }
}

impl Default for HeadRoom {
    fn default() -> Self {
        Self::new()
    }
}

fn push(text: &mut Vec<u8>, piece: &[u8]) -> Range<usize> {
    let start = text.len();
    text.extend_from_slice(piece);
    start..text.len()
}

impl std::fmt::Debug for ResponseHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        f.debug_struct("ResponseHead")
            .field("status", &text(self.status()))
            .field(
                "headers",
                &self
                    .headers()
                    .map(|(n, v)| (text(n), text(v)))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_values() {
        for (v, want) in [
            (&b"0"[..], Some(0)),
            (b"13", Some(13)),
            (b"007", Some(7)),
            (b"123456789012345678", Some(123_456_789_012_345_678)),
            (b"1234567890123456789", Some(1_234_567_890_123_456_789)),
            (b"18446744073709551615", Some(u64::MAX)),
            (b"18446744073709551616", None),
            (b" 13", Some(13)),
            (b"13 ", Some(13)),
            (b"", None),
            (b" ", None),
            (b"1a", None),
            (b"-1", None),
            (b"+1", None),
            (b"1 3", None),
        ] {
            assert_eq!(content_length_value(v), want, "{v:?}");
        }
    }

    #[test]
    fn a_head_from_text_keeps_its_ranges_inside_the_text() {
        let head = ResponseHead::from_text(b"200 OKX-Ay".to_vec(), 0..6, vec![(6..9, 9..10)]);
        assert_eq!(head.status(), b"200 OK");
        assert_eq!(
            head.headers().collect::<Vec<_>>(),
            [(&b"X-A"[..], &b"y"[..])]
        );
        // A gateway's wrong ranges are cut to the text, not a panic on the I/O thread.
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 5..2;
        let head = ResponseHead::from_text(b"200".to_vec(), 0..9, vec![(backwards, 7..20)]);
        assert_eq!(head.status(), b"200");
        assert_eq!(head.headers().collect::<Vec<_>>(), [(&b""[..], &b""[..])]);
    }

    #[test]
    fn hosts() {
        for ok in [
            &b""[..],
            b"h",
            b"h:80",
            b"h:",
            b"1.2.3.4:8080",
            b"[::1]",
            b"[2001:db8::7]:443",
            b"a%41b",
            b"0.0.0.0=5000",
        ] {
            assert!(is_valid_host(ok), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"a b"[..],
            b"a/b",
            b"u@h",
            b"h:8x",
            b"h:123456",
            b"[::1",
            b"[g::1]",
            b"[:::::]",
            b"[]",
            b"[::1]x",
            b"a%4",
            b"a%zz",
        ] {
            assert!(!is_valid_host(bad), "{}", String::from_utf8_lossy(bad));
        }
    }
}
