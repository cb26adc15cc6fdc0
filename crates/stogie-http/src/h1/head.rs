//! Request heads: httparse tokenizes, this module validates (RFC 9112, RFC 9110) and works
//! out the body framing and the connection's fate.

use bytes::{Bytes, BytesMut};
use std::mem::MaybeUninit;
use std::ops::Deref;

use super::scan;
use crate::error::HttpError;
use crate::message::{
    digits_value, has_bad_byte, is_tchar, is_token, is_valid_host, HeadLimits, Header, RequestHead,
    Version,
};

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request head as HTTP/1 delivers it: the protocol-neutral head, and what the connection
/// needs to read the body and to decide whether it stays open. Reads as the head it holds.
#[derive(Clone, Debug)]
pub struct ParsedHead {
    /// What the gateway is given.
    pub head: RequestHead,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// Whether the client allows the connection to stay open after this request.
    pub keep_alive: bool,
}

impl Deref for ParsedHead {
    type Target = RequestHead;

    fn deref(&self) -> &RequestHead {
        &self.head
    }
}

const MAX_HEADERS_HARD: usize = 1024;
/// Header slots kept on the stack while parsing; larger `max_header_count`s use the heap.
const STACK_HEADERS: usize = 128;

fn bad(msg: &'static str) -> HttpError {
    HttpError::BadRequest(msg)
}

/// What is wrong with the version of a request line httparse refused there (Cheroot's
/// words): not `HTTP/` at all ("bad protocol"), a well-formed `HTTP/d.d` other than 1.0 and
/// 1.1 (505), or anything else after `HTTP/` ("bad version").
fn version_error(line: &[u8]) -> HttpError {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(_), Some(_), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
        return bad("Malformed Request-Line");
    };
    if !v.starts_with(b"HTTP/") {
        return bad("Malformed Request-Line: bad protocol");
    }
    let well_formed =
        v.len() == 8 && v[5].is_ascii_digit() && v[6] == b'.' && v[7].is_ascii_digit();
    if well_formed {
        HttpError::VersionNotSupported
    } else {
        bad("Malformed Request-Line: bad version")
    }
}

/// httparse refused a field name: a line with no colon at all is Cheroot's "Illegal header
/// line."; otherwise the name itself is bad.
fn header_name_error(head: &[u8]) -> HttpError {
    let no_colon = head
        .split(|&b| b == b'\n')
        .skip(1)
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .any(|line| !line.is_empty() && !line.contains(&b':'));
    if no_colon {
        bad("Illegal header line.")
    } else {
        bad("Illegal header name")
    }
}

/// Cheroot's answer to a request-target that is neither origin-form, absolute-form nor `*`.
const NOT_ORIGIN_FORM: &str = "Invalid path in Request-URI: request-target must contain \
     origin-form which starts with absolute-path (URI starting with a slash \"/\").";

/// Whether the bytes that start a request cannot be one: a request line starts with a
/// method token (blank lines before it are skipped by the caller). Checked on the first
/// bytes, so that a TLS handshake or other non-HTTP bytes get their 400 at once instead of
/// after the head timeout.
pub fn bad_start(buf: &[u8]) -> Option<HttpError> {
    let &first = buf.first()?;
    if is_tchar(first) || first == b'\r' || first == b'\n' {
        return None;
    }
    Some(if first == 0x16 {
        // A TLS record of type handshake: a ClientHello on a plain-HTTP port.
        bad("The client sent a TLS handshake, but this server speaks plain HTTP on this port.")
    } else {
        bad("Malformed Request-Line")
    })
}

/// Tries to take one request head off the front of `buf`.
///
/// `Ok(None)` means more bytes are needed (what came is within the limits: a head past one
/// is refused while partial). A head refused (`Err`) is left in `buf`.
#[inline]
pub fn parse(
    buf: &mut BytesMut,
    limits: impl Into<HeadLimits>,
) -> Result<Option<ParsedHead>, HttpError> {
    parse_with(buf, &limits.into())
}

// Not generic, so that `build` is inlined into it (its head is then built in place).
fn parse_with(buf: &mut BytesMut, cfg: &HeadLimits) -> Result<Option<ParsedHead>, HttpError> {
    if let Some(e) = bad_start(buf) {
        return Err(e);
    }
    let end = match scan::scan(buf, cfg)? {
        Some(end) => end,
        None => return Ok(None),
    };
    // Taken off the buffer before it is parsed, so that the fields can be sliced out of it
    // as the parser yields them; a refused head is put back (see `put_back`).
    let frozen = buf.split_to(end).freeze();
    match parse_head(&frozen, end, cfg) {
        Ok(h) => Ok(Some(h)),
        Err(e) => {
            put_back(buf, frozen);
            Err(e)
        }
    }
}

/// Parses the whole head `frozen` (`end` bytes, as `scan` found them).
#[inline(always)]
fn parse_head(frozen: &Bytes, end: usize, cfg: &HeadLimits) -> Result<ParsedHead, HttpError> {
    let head = &frozen[..];

    // The parser's header slots live on the stack for the usual limits: a zeroed heap array
    // of a hundred slots per request showed up in profiles of the I/O thread.
    let want = cfg.max_header_count.clamp(1, MAX_HEADERS_HARD);
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut heap;
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if want <= STACK_HEADERS {
        &mut stack[..want]
    } else {
        heap = vec![MaybeUninit::uninit(); want];
        &mut heap
    };
    let mut req = httparse::Request::new(&mut []);
    let parsed = match req.parse_with_uninit_headers(head, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(bad("Malformed request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeaderFieldsTooLarge),
        Err(httparse::Error::Version) => {
            let line_end = head.iter().position(|&b| b == b'\r').unwrap_or(head.len());
            return Err(version_error(&head[..line_end]));
        }
        Err(httparse::Error::Token) => {
            // Cheroot's words: a line that is not three parts at all, else a bad method.
            let line_end = head.iter().position(|&b| b == b'\r').unwrap_or(head.len());
            let spaces = head[..line_end].iter().filter(|&&b| b == b' ').count();
            return Err(if spaces < 2 {
                bad("Malformed Request-Line")
            } else {
                bad("Malformed Request-Line: bad method")
            });
        }
        Err(httparse::Error::HeaderName) => return Err(header_name_error(head)),
        Err(httparse::Error::HeaderValue) => return Err(bad("Illegal header value")),
        Err(_) => return Err(bad("Malformed Request-Line")),
    };
    debug_assert_eq!(parsed, end);

    let base = head.as_ptr() as usize;
    let range = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let method = range(req.method.unwrap_or_default().as_bytes());
    let target = range(req.path.unwrap_or_default().as_bytes());
    let version = if req.version == Some(0) {
        Version::Http10
    } else {
        Version::Http11
    };
    let fields = req
        .headers
        .iter()
        .map(|h| (range(h.name.as_bytes()), range(h.value)));
    build(frozen, method, target, version, fields, cfg)
}

/// Puts a refused head back in front of `buf`, so that a refusal leaves the buffer as it
/// was whatever refused it: the access log takes a refused request's first line from there
/// (and no copy of it is made for the heads that are not refused).
#[cold]
fn put_back(buf: &mut BytesMut, head: Bytes) {
    let mut whole = head
        .try_into_mut()
        .unwrap_or_else(|head| BytesMut::from(&head[..]));
    whole.unsplit(std::mem::take(buf));
    *buf = whole;
}

type Range = std::ops::Range<usize>;

fn build(
    head: &Bytes,
    method: Range,
    target: Range,
    version: Version,
    fields: impl ExactSizeIterator<Item = (Range, Range)>,
    cfg: &HeadLimits,
) -> Result<ParsedHead, HttpError> {
    let method = head.slice(method);
    let target = head.slice(target);
    if !is_token(&method) {
        return Err(bad("Malformed Request-Line: bad method"));
    }
    if target.iter().any(|&b| !(0x21..0x7f).contains(&b)) {
        return Err(bad("Malformed Request-URI"));
    }
    if &method[..] == b"CONNECT" {
        return Err(HttpError::MethodNotAllowed);
    }
    let Target {
        scheme,
        authority,
        path,
        query,
    } = split_target(&method, &target)?;

    let mut headers = Vec::with_capacity(fields.len());
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<Vec<u8>> = None;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut expect_continue = false;
    let mut host_count = 0;
    let mut content_type_count = 0;

    for (name, value) in fields {
        let name = head.slice(name);
        let value = head.slice(value);
        if !is_token(&name) {
            return Err(bad("Illegal header name"));
        }
        if has_bad_byte(&value) {
            return Err(bad("Illegal header value"));
        }
        let value = trim(value);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(&value)?;
            if content_length.is_some_and(|m| m != n) {
                return Err(bad("Multiple differing Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let te = transfer_encoding.get_or_insert_with(Vec::new);
            if !te.is_empty() {
                te.push(b',');
            }
            te.extend_from_slice(&value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim_slice(token);
                if token.eq_ignore_ascii_case(b"close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    connection_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            host_count += 1;
            if !is_valid_host(&value) {
                return Err(bad("Invalid Host header"));
            }
        } else if name.eq_ignore_ascii_case(b"content-type") {
            // One field, one value: with two, the app and a proxy in front of it could each
            // believe a different one.
            content_type_count += 1;
            if content_type_count > 1 {
                return Err(bad("Multiple Content-Type headers"));
            }
        } else if name.eq_ignore_ascii_case(b"expect")
            && value.eq_ignore_ascii_case(b"100-continue")
        {
            expect_continue = version == Version::Http11;
        }
        if !cfg.allow_underscore_headers && name.contains(&b'_') {
            continue;
        }
        headers.push(Header { name, value });
    }

    if version == Version::Http11 && host_count == 0 {
        return Err(bad("Missing Host header"));
    }
    if host_count > 1 {
        return Err(bad("Multiple Host headers"));
    }
    if let Some(authority) = authority {
        // RFC 9112 §3.2.2: with an absolute-form target the Host field is replaced by the
        // target's authority, so that the app never sees two different hosts.
        match headers
            .iter_mut()
            .find(|h| h.name.eq_ignore_ascii_case(b"host"))
        {
            Some(h) => h.value = authority,
            None => headers.push(Header {
                name: Bytes::from_static(b"Host"),
                value: authority,
            }),
        }
    }

    let framing = match (transfer_encoding, content_length) {
        (Some(_), Some(_)) => {
            return Err(bad("Both Transfer-Encoding and Content-Length are set"));
        }
        (Some(te), None) => {
            if version == Version::Http10 {
                return Err(bad("Transfer-Encoding is not allowed in HTTP/1.0 requests"));
            }
            parse_transfer_encoding(&te)?
        }
        (None, Some(0)) | (None, None) => BodyFraming::None,
        (None, Some(n)) => BodyFraming::Length(n),
    };
    if cfg.max_request_body_size > 0 {
        if let BodyFraming::Length(n) = framing {
            if n > cfg.max_request_body_size {
                return Err(HttpError::PayloadTooLarge);
            }
        }
    }

    let keep_alive = match version {
        Version::Http10 => connection_keep_alive && !connection_close,
        Version::Http11 | Version::Http2 => !connection_close,
    };
    Ok(ParsedHead {
        head: RequestHead {
            method,
            target,
            path,
            query,
            scheme,
            version,
            headers,
            expect_continue,
        },
        framing,
        keep_alive,
    })
}

/// The parts of a request-target.
struct Target {
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Bytes,
    query: Bytes,
}

/// Splits the request-target into scheme, authority, path and query.
fn split_target(method: &[u8], target: &Bytes) -> Result<Target, HttpError> {
    if target.contains(&b'#') {
        return Err(bad("Illegal #fragment in Request-URI."));
    }
    let (scheme, authority, rest) = if target.starts_with(b"/") {
        (None, None, target.clone())
    } else if &target[..] == b"*" {
        if method != b"OPTIONS" {
            return Err(bad(NOT_ORIGIN_FORM));
        }
        // Cheroot's PATH_INFO for `OPTIONS *` is `/*` (every path starts with a slash);
        // REQUEST_URI keeps the `*` as sent.
        (None, None, Bytes::from_static(b"/*"))
    } else if let Some(pos) = find(target, b"://") {
        // absolute-form: the path and query are used, the authority replaces Host.
        let scheme = target.slice(..pos);
        if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
            return Err(bad("Malformed Request-URI"));
        }
        let after = target.slice(pos + 3..);
        let path_start = after
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(after.len());
        let authority = after.slice(..path_start);
        if authority.contains(&b'@') {
            // RFC 9110 §4.2.4: userinfo is to be treated as an error (it hides the host).
            return Err(bad("Userinfo is not allowed in the Request-URI"));
        }
        if authority.is_empty() || !is_valid_host(&authority) {
            return Err(bad("Malformed Request-URI"));
        }
        let rest = after.slice(path_start..);
        let rest = if rest.is_empty() || rest.starts_with(b"?") {
            let mut with_slash = Vec::with_capacity(rest.len() + 1);
            with_slash.push(b'/');
            with_slash.extend_from_slice(&rest);
            Bytes::from(with_slash)
        } else {
            rest
        };
        (Some(scheme), Some(authority), rest)
    } else {
        return Err(bad(NOT_ORIGIN_FORM));
    };
    let (path, query) = match rest.iter().position(|&b| b == b'?') {
        Some(q) => (rest.slice(..q), rest.slice(q + 1..)),
        None => (rest.clone(), Bytes::new()),
    };
    Ok(Target {
        scheme,
        authority,
        path,
        query,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim_slice(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn trim(v: Bytes) -> Bytes {
    let t = trim_slice(&v);
    if t.len() == v.len() {
        v
    } else {
        v.slice_ref(t)
    }
}

/// Content-Length is digits only; anything else (sign, list, spaces inside) is refused.
fn parse_content_length(v: &[u8]) -> Result<u64, HttpError> {
    // Nineteen digits at most, as Cheroot: a longer value is refused, not read.
    match digits_value(v) {
        Some(n) if v.len() <= 19 => Ok(n),
        _ => Err(bad("Malformed Content-Length Header.")),
    }
}

fn parse_transfer_encoding(te: &[u8]) -> Result<BodyFraming, HttpError> {
    let codings: Vec<&[u8]> = te.split(|&b| b == b',').map(trim_slice).collect();
    if codings.iter().any(|c| c.is_empty() || !is_token(c)) {
        return Err(bad("Malformed Transfer-Encoding header"));
    }
    if codings.iter().any(|c| !c.eq_ignore_ascii_case(b"chunked")) {
        return Err(HttpError::NotImplemented);
    }
    if codings.len() > 1 {
        return Err(bad("chunked may be applied only once"));
    }
    Ok(BodyFraming::Chunked)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::ServerConfig;

    fn p(raw: &[u8]) -> Result<Option<ParsedHead>, HttpError> {
        let mut buf = BytesMut::from(raw);
        parse(&mut buf, &ServerConfig::default())
    }

    #[test]
    fn a_refused_head_is_left_in_the_buffer() {
        for raw in [
            &b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n"[..],
            b"GET / HTTP/9.1\r\nHost: x\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(raw);
            assert!(parse(&mut buf, &ServerConfig::default()).is_err());
            assert_eq!(&buf[..], raw);
        }
    }

    #[test]
    fn simple_get() {
        let h = p(b"GET /a%20b?x=1 HTTP/1.1\r\nHost: h\r\nX-A: 1 \r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(&h.method[..], b"GET");
        assert_eq!(&h.path[..], b"/a%20b");
        assert_eq!(&h.query[..], b"x=1");
        assert_eq!(&h.header("x-a").unwrap()[..], b"1");
        assert!(h.keep_alive);
        assert_eq!(h.framing, BodyFraming::None);
    }

    #[test]
    fn partial_waits() {
        assert!(p(b"GET / HTTP/1.1\r\nHost: h\r\n").unwrap().is_none());
    }

    #[test]
    fn refusals() {
        let cases: &[(&[u8], u16)] = &[
            (b"GET / HTTP/1.1\nHost: h\n\n", 400),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
            (b"CONNECT h:1 HTTP/1.1\r\nHost: h\r\n\r\n", 405),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX : y\r\n\r\n", 400),
            (b"GET /#f HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ];
        for (raw, code) in cases {
            let e = p(raw).unwrap_err();
            assert_eq!(e.code(), *code, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn refusals_say_what_cheroot_says() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"GET / HTTPS/1.1\r\nHost: h\r\n\r\n",
                "Malformed Request-Line: bad protocol",
            ),
            (
                b"GET / HTTP/1\r\nHost: h\r\n\r\n",
                "Malformed Request-Line: bad version",
            ),
            (b"GET /\r\nHost: h\r\n\r\n", "Malformed Request-Line"),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nRe, 1.2.3.4#015#012\r\n\r\n",
                "Illegal header line.",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nX Y: z\r\n\r\n",
                "Illegal header name",
            ),
            (b"GET hello HTTP/1.1\r\nHost: h\r\n\r\n", NOT_ORIGIN_FORM),
            (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", NOT_ORIGIN_FORM),
        ];
        for (raw, msg) in cases {
            let e = p(raw).unwrap_err();
            assert_eq!(e.code(), 400, "{}", String::from_utf8_lossy(raw));
            assert_eq!(e.message(), *msg, "{}", String::from_utf8_lossy(raw));
        }
        assert!(NOT_ORIGIN_FORM.contains("starting with a slash"));
    }

    #[test]
    fn non_http_first_bytes_are_refused_at_once() {
        // A TLS ClientHello starts with 0x16 0x03: no need to wait for a line end or the
        // head timeout to know it is not HTTP.
        let e = p(b"\x16\x03\x01\x02\x00\x01").unwrap_err();
        assert_eq!(e.code(), 400);
        assert!(e.message().contains("TLS handshake"), "{}", e.message());
        let e = p(b"\x00").unwrap_err();
        assert_eq!(e.message(), "Malformed Request-Line");
        // A request's first byte alone is no reason to wait less: these still wait.
        assert!(p(b"G").unwrap().is_none());
        assert!(p(b"\r").unwrap().is_none());
    }

    #[test]
    fn long_line_is_414() {
        let mut raw = b"GET /".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(p(&raw).unwrap_err().code(), 414);
    }

    #[test]
    fn http10_keep_alive() {
        let h = p(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let h = p(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn absolute_form() {
        let h = p(b"GET http://h:80?q HTTP/1.1\r\nHost: h:80\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(&h.path[..], b"/");
        assert_eq!(&h.query[..], b"q");
    }

    #[test]
    fn absolute_form_host_comes_from_the_target() {
        let h = p(b"GET http://a.example:8080/p HTTP/1.1\r\nHost: b.example\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(&h.header("host").unwrap()[..], b"a.example:8080");
        assert_eq!(h.headers.len(), 1);
        let h = p(b"GET https://a.example/p HTTP/1.0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(&h.header("host").unwrap()[..], b"a.example");
        assert_eq!(h.scheme.as_deref(), Some(&b"https"[..]));
    }

    #[test]
    fn absolute_form_refusals() {
        for raw in [
            &b"GET http://u:p@h/ HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET http://h:x/ HTTP/1.1\r\nHost: h\r\n\r\n",
            // still one Host, valid, on HTTP/1.1
            b"GET http://h/ HTTP/1.1\r\n\r\n",
            b"GET http://h/ HTTP/1.1\r\nHost: a b\r\n\r\n",
        ] {
            let e = p(raw).unwrap_err();
            assert_eq!(e.code(), 400, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn more_refusals() {
        let cases: &[(&[u8], u16)] = &[
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n",
                400,
            ),
            (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET h:80 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fb\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n",
                501,
            ),
            (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505),
            (b"GET / HTTP/1.10\r\nHost: h\r\n\r\n", 400),
        ];
        for (raw, code) in cases {
            let e = p(raw).unwrap_err();
            assert_eq!(e.code(), *code, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn options_star_and_equal_content_lengths() {
        let h = p(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        // PATH_INFO starts with a slash, as in Cheroot; the target stays as sent.
        assert_eq!(&h.path[..], b"/*");
        assert_eq!(&h.target[..], b"*");
        let h = p(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, BodyFraming::Length(3));
    }
}
