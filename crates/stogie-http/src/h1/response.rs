//! Response heads and body framing: the app's status line and header names go out as the
//! app wrote them; the engine adds Date, Server and the framing headers it needs.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BufMut;

use crate::error::HttpError;
use crate::message::{
    content_length_value, response_field_error, status_code, ResponseHead, Version,
};

/// How the response body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body may be sent (HEAD, 1xx, 204, 304).
    NoBody,
    /// Exactly this many bytes (the app's Content-Length).
    Length(u64),
    /// Chunked transfer-coding (HTTP/1.1 without Content-Length).
    Chunked,
    /// Delimited by closing the connection (HTTP/1.0 without Content-Length).
    Close,
}

/// What the writer needs to know about the request being answered.
#[derive(Clone, Copy, Debug)]
pub struct ResponseContext<'a> {
    /// The request's version.
    pub version: Version,
    /// Whether the request method is HEAD.
    pub is_head: bool,
    /// Whether the connection may stay open after this response, as far as the request
    /// and the server are concerned.
    pub keep_alive: bool,
    /// The `Server` header value.
    pub server: &'a str,
    /// How long the server keeps an idle connection: an HTTP/1.0 keep-alive answer says
    /// so in `Keep-Alive: timeout=N`, as Cheroot's does.
    pub keep_alive_timeout: std::time::Duration,
}

/// The result of encoding a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodedHead {
    /// The body framing chosen.
    pub framing: ResponseFraming,
    /// Whether the connection must close after this response.
    pub close: bool,
    /// The numeric status code.
    pub code: u16,
}

/// Writes the status line and headers into `out` and decides the framing.
///
/// Fails (the caller answers 500 instead) when the status or a header cannot be sent
/// safely: a control character (CR, LF, NUL...) anywhere, a header name that is not a token,
/// a bad Content-Length.
pub fn encode_head(
    out: &mut Vec<u8>,
    head: &ResponseHead,
    ctx: &ResponseContext<'_>,
) -> Result<EncodedHead, String> {
    let status = head.status();
    let code =
        status_code(status).map_err(|e| format!("{e}: {:?}", String::from_utf8_lossy(status)))?;
    let mut content_length: Option<u64> = None;
    let mut app_close = false;
    let mut has_date = false;
    let mut has_server = false;
    for (name, value) in head.headers() {
        if let Some(e) = response_field_error(name, value) {
            return Err(e);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            match content_length_value(value) {
                Some(n) if content_length.is_none_or(|m| m == n) => content_length = Some(n),
                _ => {
                    return Err(format!(
                        "bad Content-Length from the application: {:?}",
                        String::from_utf8_lossy(value)
                    ))
                }
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            app_close |= value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case(b"date") {
            has_date = true;
        } else if name.eq_ignore_ascii_case(b"server") {
            has_server = true;
        }
    }

    let no_body = ctx.is_head || code < 200 || code == 204 || code == 304;
    let framing = if no_body {
        ResponseFraming::NoBody
    } else if let Some(n) = content_length {
        ResponseFraming::Length(n)
    } else if ctx.version == Version::Http11 {
        ResponseFraming::Chunked
    } else {
        ResponseFraming::Close
    };
    // A HEAD answer without the app's Content-Length gives no length, which is still fine
    // to keep alive: HEAD responses never carry a body.
    let close = !ctx.keep_alive || app_close || framing == ResponseFraming::Close;

    out.reserve(128 + head.size_hint());
    out.extend_from_slice(ctx.version.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status);
    out.extend_from_slice(b"\r\n");
    for (name, value) in head.headers() {
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // The engine frames the body itself; an app's own framing header would lie.
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if framing == ResponseFraming::Chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if close && !app_close && ctx.version == Version::Http11 {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if !close && ctx.version == Version::Http10 {
        out.extend_from_slice(b"Connection: Keep-Alive\r\nKeep-Alive: timeout=");
        let t = ctx.keep_alive_timeout;
        // Seconds as Python prints the setting: `10` for a whole number, else `0.5`.
        let secs = if t.subsec_nanos() == 0 {
            t.as_secs().to_string()
        } else {
            t.as_secs_f64().to_string()
        };
        out.extend_from_slice(secs.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"Date: ");
        with_date(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    if !has_server && !ctx.server.is_empty() {
        out.extend_from_slice(b"Server: ");
        out.extend_from_slice(ctx.server.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(EncodedHead {
        framing,
        close,
        code,
    })
}

/// The type of the engine's own short text answers.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// A complete short error answer: `text/plain`, Content-Length, and `Connection: close`.
pub fn error_response(err: &HttpError, version: Version, server: &str) -> Vec<u8> {
    closing_response(
        version,
        err.status(),
        TEXT,
        err.message().as_bytes(),
        true,
        server,
    )
}

/// A complete answer the engine makes itself, after which the connection closes: `status`
/// (`"400 Bad Request"`), Content-Type, Content-Length, `Connection: close`, Date and Server
/// (unless `server` is empty), then `body` unless `send_body` is false (a HEAD request).
pub fn closing_response(
    version: Version,
    status: &str,
    content_type: &str,
    body: &[u8],
    send_body: bool,
    server: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(version.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\nConnection: close\r\nDate: ");
    with_date(|d| out.extend_from_slice(d));
    if !server.is_empty() {
        out.extend_from_slice(b"\r\nServer: ");
        out.extend_from_slice(server.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    if send_body {
        out.extend_from_slice(body);
    }
    out
}

/// Appends a chunk header (`size CRLF`) for `len` bytes of data.
pub fn chunk_header(out: &mut impl BufMut, len: usize) {
    let mut tmp = [0u8; 18];
    let mut n = len;
    let mut i = tmp.len() - 2;
    tmp[16] = b'\r';
    tmp[17] = b'\n';
    loop {
        i -= 1;
        tmp[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&tmp[i..]);
}

thread_local! {
    static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((0, Vec::new())) };
}

/// Calls `f` with the IMF-fixdate of the current second, formatted once per second.
pub(crate) fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != secs || cell.1.is_empty() {
            cell.0 = secs;
            cell.1 = httpdate::fmt_http_date(now).into_bytes();
        }
        f(&cell.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(version: Version) -> ResponseContext<'static> {
        ResponseContext {
            version,
            is_head: false,
            keep_alive: true,
            server: "S",
            keep_alive_timeout: std::time::Duration::from_secs(10),
        }
    }

    fn h(status: &'static str, headers: &[(&'static str, &'static str)]) -> ResponseHead {
        ResponseHead::new(status, headers.iter().copied())
    }

    #[test]
    fn keeps_spelling_and_adds_date() {
        let mut out = Vec::new();
        let e = encode_head(
            &mut out,
            &h("200 Fine", &[("X-mIxEd", "v"), ("Content-Length", "2")]),
            &ctx(Version::Http11),
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 Fine\r\nX-mIxEd: v\r\n"));
        assert!(s.contains("\r\nDate: "));
        assert!(s.contains("\r\nServer: S\r\n"));
        assert_eq!(e.framing, ResponseFraming::Length(2));
        assert!(!e.close);
    }

    #[test]
    fn framing_choices() {
        let mut out = Vec::new();
        assert_eq!(
            encode_head(&mut out, &h("200 OK", &[]), &ctx(Version::Http11))
                .unwrap()
                .framing,
            ResponseFraming::Chunked
        );
        let e = encode_head(&mut out, &h("200 OK", &[]), &ctx(Version::Http10)).unwrap();
        assert_eq!(e.framing, ResponseFraming::Close);
        assert!(e.close);
        assert_eq!(
            encode_head(&mut out, &h("204 No Content", &[]), &ctx(Version::Http11))
                .unwrap()
                .framing,
            ResponseFraming::NoBody
        );
    }

    #[test]
    fn http10_keep_alive_says_the_timeout() {
        let mut out = Vec::new();
        let head = h("200 OK", &[("Content-Length", "0")]);
        let e = encode_head(&mut out, &head, &ctx(Version::Http10)).unwrap();
        assert!(!e.close);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=10\r\n"));

        let mut out = Vec::new();
        let half = ResponseContext {
            keep_alive_timeout: std::time::Duration::from_millis(500),
            ..ctx(Version::Http10)
        };
        encode_head(&mut out, &head, &half).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("Keep-Alive: timeout=0.5\r\n"));

        // HTTP/1.1 keep-alive is the default: no header for it.
        let mut out = Vec::new();
        encode_head(&mut out, &head, &ctx(Version::Http11)).unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("Keep-Alive"));
    }

    #[test]
    fn refuses_injection() {
        let mut out = Vec::new();
        assert!(encode_head(
            &mut out,
            &h("200 OK", &[("X", "a\r\nY: b")]),
            &ctx(Version::Http11)
        )
        .is_err());
        assert!(encode_head(&mut out, &h("200 OK\r\n", &[]), &ctx(Version::Http11)).is_err());
        assert!(encode_head(
            &mut out,
            &h("200 OK", &[("X Y", "a")]),
            &ctx(Version::Http11)
        )
        .is_err());
    }

    #[test]
    fn chunk_headers() {
        let mut v = Vec::new();
        chunk_header(&mut v, 0x1a2);
        assert_eq!(v, b"1a2\r\n");
        v.clear();
        chunk_header(&mut v, 0);
        assert_eq!(v, b"0\r\n");
    }
}
