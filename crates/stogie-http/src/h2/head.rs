//! An HTTP/2 stream's head into the protocol-neutral request head, under the same field
//! rules and limits as HTTP/1 (gunicorn 26.2 had to fix exactly this: its HTTP/2 path let
//! clients forge `SCRIPT_NAME` and `HTTP_*` that its HTTP/1 path refused); and a response
//! head into what the `h2` crate sends, without the fields HTTP/2 forbids.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;

use crate::error::HttpError;
use crate::message::{
    content_length_value, has_bad_byte, is_token, is_valid_host, response_field_error, status_code,
    HeadLimits, Header, RequestHead, ResponseHead, Version,
};

/// What a stream's head came to.
pub(crate) struct StreamHead {
    /// The neutral head the gateway gets (its Host is `:authority`).
    pub head: RequestHead,
    /// The body's length when the client declared one.
    pub content_length: Option<u64>,
    /// `:scheme`, for a trusted proxy's word on the scheme.
    pub scheme: Option<&'static str>,
}

/// Why a stream's head is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A malformed request (RFC 9113 §8.1.1): a stream error of type PROTOCOL_ERROR, with
    /// no answer; the reason is for the log.
    Malformed(&'static str),
    /// Answered as HTTP/1 answers it (400, 405, 413, 414, 431).
    Answer(HttpError),
}

impl From<HttpError> for Refused {
    fn from(e: HttpError) -> Self {
        Refused::Answer(e)
    }
}

fn bad(msg: &'static str) -> Refused {
    Refused::Answer(HttpError::BadRequest(msg))
}

/// The head of a request stream, checked as an HTTP/1 head is (the codec already refused
/// upper-case names, connection-specific fields and missing pseudo-fields).
pub(crate) fn request_head(parts: &Parts, limits: &HeadLimits) -> Result<StreamHead, Refused> {
    let method = Bytes::copy_from_slice(parts.method.as_str().as_bytes());
    if !is_token(&method) {
        return Err(bad("Malformed Request-Line: bad method"));
    }
    if &method[..] == b"CONNECT" {
        if parts.uri.authority().is_none() {
            // RFC 9113 §8.5: CONNECT names the host to tunnel to in :authority.
            return Err(Refused::Malformed("CONNECT without :authority"));
        }
        return Err(HttpError::MethodNotAllowed.into());
    }
    let uri = &parts.uri;
    let target = match uri.path_and_query() {
        Some(pq) => Bytes::copy_from_slice(pq.as_str().as_bytes()),
        None => return Err(bad("Missing :path")),
    };
    if target.len() > limits.max_request_line {
        return Err(HttpError::UriTooLong.into());
    }
    if target.iter().any(|&b| !(0x21..0x7f).contains(&b)) {
        return Err(bad("Malformed Request-URI"));
    }
    if !(target.starts_with(b"/") || (&target[..] == b"*" && &method[..] == b"OPTIONS")) {
        return Err(bad("Invalid path in Request-URI."));
    }
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (target.slice(..q), target.slice(q + 1..)),
        None => (target.clone(), Bytes::new()),
    };
    let scheme = match uri.scheme_str() {
        Some("https") => Some("https"),
        Some("http") => Some("http"),
        _ => None,
    };
    let authority = uri
        .authority()
        .map(|a| Bytes::copy_from_slice(a.as_str().as_bytes()));

    let fields = parts.headers.len();
    if fields > limits.max_header_count {
        return Err(HttpError::HeaderFieldsTooLarge.into());
    }
    let mut headers = Vec::with_capacity(fields + 1);
    let mut total = 0usize;
    let mut host: Option<Bytes> = None;
    let mut content_length: Option<u64> = None;
    let mut cookies: Vec<Bytes> = Vec::new();
    let mut expect_continue = false;
    let mut content_type_count = 0;
    for (name, value) in &parts.headers {
        let name_bytes = name.as_str().as_bytes();
        let value = value.as_bytes();
        let size = name_bytes.len() + value.len() + 2;
        total += size;
        if size > limits.max_header_field
            || (limits.max_request_header_size > 0 && total > limits.max_request_header_size)
        {
            return Err(HttpError::HeaderFieldsTooLarge.into());
        }
        if has_bad_byte(value) {
            return Err(bad("Illegal header value"));
        }
        let blank = |b: Option<&u8>| b.is_some_and(|&b| b == b' ' || b == b'\t');
        if blank(value.first()) || blank(value.last()) {
            // RFC 9113 §8.2.1: HTTP/1's optional whitespace around a value has no place in
            // HTTP/2, where a field is never a line to parse.
            return Err(Refused::Malformed(
                "a field value with leading or trailing whitespace",
            ));
        }
        let value = Bytes::copy_from_slice(value);
        match name_bytes {
            b"host" => {
                if host.is_some() {
                    return Err(bad("Multiple Host headers"));
                }
                if !is_valid_host(&value) {
                    return Err(bad("Invalid Host header"));
                }
                host = Some(value);
                continue;
            }
            b"content-length" => {
                let n = content_length_value(&value).ok_or(bad("Invalid Content-Length"))?;
                if content_length.is_some_and(|m| m != n) {
                    return Err(bad("Multiple differing Content-Length headers"));
                }
                if limits.max_request_body_size > 0 && n > limits.max_request_body_size {
                    return Err(HttpError::PayloadTooLarge.into());
                }
                content_length = Some(n);
            }
            b"cookie" => {
                // RFC 9113 §8.2.3: split cookie fields are joined with "; " for the app.
                cookies.push(value);
                continue;
            }
            b"content-type" => {
                content_type_count += 1;
                if content_type_count > 1 {
                    return Err(bad("Multiple Content-Type headers"));
                }
            }
            b"expect" if value.eq_ignore_ascii_case(b"100-continue") => expect_continue = true,
            _ => {}
        }
        if !limits.allow_underscore_headers && name_bytes.contains(&b'_') {
            continue;
        }
        headers.push(Header {
            name: Bytes::copy_from_slice(name_bytes),
            value,
        });
    }
    // RFC 9113 §8.3.1: `:authority` is the host; a Host field that says otherwise is an
    // attempt to have the app and a proxy in front see different hosts.
    let host = match (authority, host) {
        (Some(a), Some(h)) if a != h => {
            return Err(Refused::Malformed("Host differs from :authority"))
        }
        (Some(a), _) => {
            if !is_valid_host(&a) {
                return Err(bad("Invalid :authority"));
            }
            a
        }
        (None, Some(h)) => h,
        (None, None) => return Err(bad("Missing :authority")),
    };
    headers.insert(
        0,
        Header {
            name: Bytes::from_static(b"host"),
            value: host,
        },
    );
    if !cookies.is_empty() {
        let value = if cookies.len() == 1 {
            cookies.pop().unwrap_or_default()
        } else {
            Bytes::from(cookies.join(&b"; "[..]))
        };
        headers.push(Header {
            name: Bytes::from_static(b"cookie"),
            value,
        });
    }
    Ok(StreamHead {
        head: RequestHead {
            method,
            target,
            path,
            query,
            scheme: None,
            version: Version::Http2,
            headers,
            expect_continue,
        },
        content_length,
        scheme,
    })
}

/// What the access log and the metrics show of a stream refused before the app: its
/// method, target and fields as sent (the log's `%(H)s` says HTTP/2.0).
pub(crate) fn refused_head(parts: &Parts) -> RequestHead {
    let target = parts
        .uri
        .path_and_query()
        .map(|pq| Bytes::copy_from_slice(pq.as_str().as_bytes()))
        .unwrap_or_default();
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (target.slice(..q), target.slice(q + 1..)),
        None => (target.clone(), Bytes::new()),
    };
    let mut headers: Vec<Header> = parts
        .headers
        .iter()
        .map(|(n, v)| Header {
            name: Bytes::copy_from_slice(n.as_str().as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
        })
        .collect();
    if let Some(a) = parts.uri.authority() {
        if !parts.headers.contains_key(http::header::HOST) {
            headers.push(Header {
                name: Bytes::from_static(b"host"),
                value: Bytes::copy_from_slice(a.as_str().as_bytes()),
            });
        }
    }
    RequestHead {
        method: Bytes::copy_from_slice(parts.method.as_str().as_bytes()),
        target,
        path,
        query,
        version: Version::Http2,
        headers,
        ..RequestHead::empty()
    }
}

/// How a response's body goes out.
pub(crate) struct ResponseFrame {
    /// The head the `h2` crate sends.
    pub head: http::Response<()>,
    /// The status code.
    pub code: u16,
    /// The length the app declared, if it did.
    pub content_length: Option<u64>,
    /// Whether the response has no body (HEAD, 1xx, 204, 304): the app's body is not sent.
    pub no_body: bool,
}

/// Whether a field is connection-specific (RFC 9113 §8.2.2): HTTP/2 forbids them, so they
/// are dropped from what an app (written for HTTP/1) sets.
/// `name` is lower-case.
fn connection_specific(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection"
            | b"keep-alive"
            | b"proxy-connection"
            | b"transfer-encoding"
            | b"upgrade"
            | b"te"
    )
}

/// The Date and Server values of the answers this thread sends, made once (a second, and
/// a server name) and then shared: each answer used to format and allocate both.
struct Stamps {
    second: u64,
    date: Option<HeaderValue>,
    server_name: String,
    server: Option<HeaderValue>,
}

thread_local! {
    static STAMPS: RefCell<Stamps> = const {
        RefCell::new(Stamps { second: 0, date: None, server_name: String::new(), server: None })
    };
}

/// Adds Date (unless `has_date`) and Server (unless `has_server` or `server` is empty).
fn stamp(headers: &mut http::HeaderMap, has_date: bool, has_server: bool, server: &str) {
    let add_server = !has_server && !server.is_empty();
    if has_date && !add_server {
        return;
    }
    STAMPS.with(|cell| {
        let mut st = cell.borrow_mut();
        if !has_date {
            let now = SystemTime::now();
            let second = now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            if st.second != second || st.date.is_none() {
                st.second = second;
                st.date = HeaderValue::from_str(&httpdate::fmt_http_date(now)).ok();
            }
            if let Some(date) = &st.date {
                headers.insert(http::header::DATE, date.clone());
            }
        }
        if add_server {
            if st.server_name != server || st.server.is_none() {
                st.server_name = server.to_owned();
                st.server = HeaderValue::from_str(server).ok();
            }
            if let Some(v) = &st.server {
                headers.insert(http::header::SERVER, v.clone());
            }
        }
    });
}

/// The name of a response field: the common ones, as apps spell them, without parsing
/// (`from_bytes` lower-cases and looks the name up, a few hundred instructions a field).
fn field_name(name: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    use http::header;
    Ok(match name {
        b"Content-Type" | b"content-type" => header::CONTENT_TYPE,
        b"Content-Length" | b"content-length" => header::CONTENT_LENGTH,
        b"Cache-Control" | b"cache-control" => header::CACHE_CONTROL,
        b"Set-Cookie" | b"set-cookie" => header::SET_COOKIE,
        b"Location" | b"location" => header::LOCATION,
        b"Last-Modified" | b"last-modified" => header::LAST_MODIFIED,
        b"ETag" | b"Etag" | b"etag" => header::ETAG,
        b"Vary" | b"vary" => header::VARY,
        b"Content-Encoding" | b"content-encoding" => header::CONTENT_ENCODING,
        _ => HeaderName::from_bytes(name)?,
    })
}

/// The app's response head as HTTP/2 sends it, with the fields it must not carry left out
/// (and the ones `Connection` names), a Date and a Server unless the app set its own; or
/// why it cannot be sent.
pub(crate) fn response_head(
    head: &ResponseHead,
    is_head: bool,
    server: &str,
) -> Result<ResponseFrame, String> {
    let status = head.status();
    let code =
        status_code(status).map_err(|e| format!("{e}: {:?}", String::from_utf8_lossy(status)))?;
    let mut response = http::Response::new(());
    *response.status_mut() = http::StatusCode::from_u16(code).map_err(|e| e.to_string())?;
    // The fields `Connection` names are connection-specific too.
    let named: Vec<&[u8]> = head
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .collect();
    let mut content_length = None;
    let mut has_date = false;
    let mut has_server = false;
    let headers = response.headers_mut();
    headers.reserve(head.headers().len() + 2);
    for (name, value) in head.headers() {
        // `from_bytes` takes exactly the RFC 9110 tokens (and lower-cases the name, as
        // HTTP/2 requires); the value is checked whole, before it is trimmed.
        let field = match field_name(name) {
            Ok(n) if !has_bad_byte(value) => n,
            _ => {
                return Err(response_field_error(name, value)
                    .unwrap_or_else(|| "a response header name is too long".to_string()))
            }
        };
        if connection_specific(field.as_str().as_bytes())
            || named.iter().any(|n| n.eq_ignore_ascii_case(name))
        {
            continue;
        }
        if field == http::header::CONTENT_LENGTH {
            match content_length_value(value) {
                Some(n) if content_length.is_none_or(|m| m == n) => content_length = Some(n),
                _ => {
                    return Err(format!(
                        "bad Content-Length from the application: {:?}",
                        String::from_utf8_lossy(value)
                    ))
                }
            }
        } else if field == http::header::DATE {
            has_date = true;
        } else if field == http::header::SERVER {
            has_server = true;
        }
        let value = HeaderValue::from_bytes(value.trim_ascii()).map_err(|e| e.to_string())?;
        headers.append(field, value);
    }
    stamp(headers, has_date, has_server, server);
    let no_body = is_head || code < 200 || code == 204 || code == 304;
    Ok(ResponseFrame {
        head: response,
        code,
        content_length,
        no_body,
    })
}

/// An answer the engine makes itself (an error before the app): status, `text/plain`, the
/// message; Date and Server as on every answer.
pub(crate) fn error_head(err: &HttpError, server: &str) -> http::Response<()> {
    let mut response = http::Response::builder()
        .status(err.code())
        .header(http::header::CONTENT_TYPE, crate::h1::response::TEXT)
        .header(http::header::CONTENT_LENGTH, err.message().len())
        .body(())
        .unwrap_or_default();
    stamp(response.headers_mut(), false, false, server);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::request::Builder) -> Parts {
        req.body(()).unwrap().into_parts().0
    }

    fn get(uri: &str) -> http::request::Builder {
        http::Request::builder().method("GET").uri(uri)
    }

    #[test]
    fn authority_is_the_host_and_cookies_join() {
        let p = parts(
            get("https://example.com:8443/a%20b?x=1")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .header("x-thing", "v"),
        );
        let h = request_head(&p, &HeadLimits::default()).unwrap();
        assert_eq!(&h.head.path[..], b"/a%20b");
        assert_eq!(&h.head.query[..], b"x=1");
        assert_eq!(h.head.header("host").unwrap(), "example.com:8443");
        assert_eq!(h.head.header("cookie").unwrap(), "a=1; b=2");
        assert_eq!(h.head.version, Version::Http2);
        assert_eq!(h.scheme, Some("https"));
    }

    #[test]
    fn the_rules_of_http1_apply() {
        let limits = HeadLimits::default();
        let refused = |b: http::request::Builder| request_head(&parts(b), &limits).err();
        // A Host that differs from :authority: malformed (a stream error, no answer).
        assert!(matches!(
            refused(get("https://a/").header("host", "b")),
            Some(Refused::Malformed(_))
        ));
        assert!(refused(get("https://a/").header("host", "a")).is_none());
        // So is a value with whitespace around it, which HTTP/1 would trim.
        for v in [" v", "v ", "\tv", "v\t"] {
            assert!(
                matches!(
                    refused(get("https://a/").header("x-a", v)),
                    Some(Refused::Malformed(_))
                ),
                "{v:?}"
            );
        }
        // Names with `_` are dropped, not passed on as their `-` twin.
        let h = request_head(
            &parts(get("https://a/").header("x_forwarded_for", "1.2.3.4")),
            &limits,
        )
        .unwrap();
        assert!(h.head.header("x_forwarded_for").is_none());
        // (Control characters in values never reach here: the codec refuses them.)
        // Too many fields: 431.
        let mut b = get("https://a/");
        for i in 0..=limits.max_header_count {
            b = b.header(format!("x-{i}"), "v");
        }
        assert_eq!(refused(b), Some(HttpError::HeaderFieldsTooLarge.into()));
        // A body larger than allowed: 413.
        let small = HeadLimits {
            max_request_body_size: 10,
            ..limits
        };
        let p = parts(
            http::Request::builder()
                .method("POST")
                .uri("https://a/")
                .header("content-length", "11"),
        );
        assert_eq!(
            request_head(&p, &small).err(),
            Some(HttpError::PayloadTooLarge.into())
        );
        assert_eq!(
            refused(
                http::Request::builder()
                    .method("CONNECT")
                    .uri("https://a:1/")
            ),
            Some(HttpError::MethodNotAllowed.into())
        );
        // CONNECT without :authority is malformed (RFC 9113 §8.5).
        assert!(matches!(
            refused(http::Request::builder().method("CONNECT").uri("/")),
            Some(Refused::Malformed(_))
        ));
    }

    #[test]
    fn bad_response_fields_are_refused_and_stamps_added_once() {
        for (name, value) in [
            ("X-A", "v\r\n"),
            ("X-A", "\r\nX-B: 1"),
            ("X A", "v"),
            ("", "v"),
        ] {
            let head = ResponseHead::new("200 OK", [(name, value)]);
            assert!(
                response_head(&head, false, "S").is_err(),
                "{name:?}: {value:?} accepted"
            );
        }
        let head = ResponseHead::new("200 OK", [("Date", "then"), ("Server", "app")]);
        let f = response_head(&head, false, "Stogie").unwrap();
        assert_eq!(f.head.headers().get_all("date").iter().count(), 1);
        assert_eq!(f.head.headers()["date"], "then");
        assert_eq!(f.head.headers()["server"], "app");
        let f = response_head(&ResponseHead::new("200 OK", [("A", "b")]), false, "").unwrap();
        assert!(f.head.headers().contains_key("date"));
        assert!(!f.head.headers().contains_key("server"));
        for name in [
            "Content-Type",
            "content-type",
            "ETag",
            "Vary",
            "X-Custom",
            "set-cookie",
        ] {
            assert_eq!(
                field_name(name.as_bytes()).unwrap(),
                HeaderName::from_bytes(name.as_bytes()).unwrap()
            );
        }
        let e = error_head(&HttpError::ServiceUnavailable, "Other");
        assert_eq!(e.headers()["server"], "Other");
    }

    #[test]
    fn connection_specific_fields_are_dropped_from_responses() {
        let head = ResponseHead::new(
            "200 OK",
            [
                ("Content-Type", "text/plain"),
                ("Connection", "close, X-Hop"),
                ("X-Hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Transfer-Encoding", "chunked"),
                ("Upgrade", "h2c"),
                ("Content-Length", "5"),
            ],
        );
        let f = response_head(&head, false, "Stogie").unwrap();
        let names: Vec<_> = f
            .head
            .headers()
            .keys()
            .map(|k| k.as_str().to_string())
            .collect();
        assert!(names.contains(&"content-type".to_string()));
        for gone in [
            "connection",
            "x-hop",
            "keep-alive",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(!names.contains(&gone.to_string()), "{gone} kept");
        }
        assert_eq!(f.content_length, Some(5));
        assert!(f.head.headers().contains_key("date"));
        assert_eq!(f.head.headers()["server"], "Stogie");
        assert!(
            response_head(
                &ResponseHead::new("204 No Content", [("a", "b")]),
                false,
                ""
            )
            .unwrap()
            .no_body
        );
        assert!(response_head(&head, true, "").unwrap().no_body);
    }
}
