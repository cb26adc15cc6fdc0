//! The properties the fuzz targets check, shared with the stable suite so that every input
//! the fuzzers ever found goes on being checked by `cargo test` (tests/fuzz_regressions.rs)
//! without nightly. The fuzz crate includes this file with `#[path]`.
//!
//! Each `check_*` function takes the raw fuzz input and panics when a property fails.

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use stogie_http::h1::body::{ChunkedDecoder, Decoded};
use stogie_http::h1::head::{self, BodyFraming, ParsedHead as RequestHead};
use stogie_http::h1::response::{chunk_header, encode_head, ResponseContext, ResponseFraming};
use stogie_http::message::{self, ResponseHead, Version};
use stogie_http::{BodyError, HttpError, ServerConfig};

// ---------------------------------------------------------------------------------------
// request heads

/// The configurations every head input is parsed with: the defaults, and small limits so
/// that the limit paths are reached by short inputs.
pub fn head_configs() -> Vec<ServerConfig> {
    let small = ServerConfig {
        max_request_line: 40,
        max_header_count: 4,
        max_header_field: 32,
        ..ServerConfig::default()
    };
    let small_total = ServerConfig {
        max_request_line: 64,
        max_header_count: 8,
        max_header_field: 48,
        max_request_header_size: 96,
        max_request_body_size: 10,
        allow_underscore_headers: true,
        ..ServerConfig::default()
    };
    let tiny_total = ServerConfig {
        max_request_header_size: 20,
        max_header_count: 0,
        ..ServerConfig::default()
    };
    vec![ServerConfig::default(), small, small_total, tiny_total]
}

/// What a parse came to, in a form that can be compared.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadOutcome {
    NeedMore,
    Head(String),
    Error(HttpError),
}

fn summary(h: &RequestHead) -> String {
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} keep_alive={} continue={}",
        h.method,
        h.target,
        h.path,
        h.query,
        h.scheme,
        h.version,
        h.headers
            .iter()
            .map(|f| (f.name.clone(), f.value.clone()))
            .collect::<Vec<_>>(),
        h.framing,
        h.keep_alive,
        h.expect_continue,
    )
}

fn outcome(r: Result<Option<RequestHead>, HttpError>, cfg: &ServerConfig) -> HeadOutcome {
    match r {
        Ok(None) => HeadOutcome::NeedMore,
        Ok(Some(h)) => {
            check_head_value(&h, cfg);
            HeadOutcome::Head(summary(&h))
        }
        Err(e) => HeadOutcome::Error(e),
    }
}

/// What an accepted head must look like, whatever the input was.
fn check_head_value(h: &RequestHead, cfg: &ServerConfig) {
    assert!(message::is_token(&h.method), "method {:?}", h.method);
    assert!(
        h.target.iter().all(|&b| (0x21..0x7f).contains(&b)),
        "target {:?}",
        h.target
    );
    assert!(!h.target.contains(&b'#'));
    assert!(
        h.path.starts_with(b"/") || &h.path[..] == b"*",
        "{:?}",
        h.path
    );
    let mut hosts = 0;
    for f in &h.headers {
        assert!(message::is_token(&f.name), "header name {:?}", f.name);
        assert!(
            f.value
                .iter()
                .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
            "header value {:?}",
            f.value
        );
        assert!(!f.value.starts_with(b" ") && !f.value.ends_with(b" "));
        if !cfg.allow_underscore_headers {
            assert!(!f.name.contains(&b'_'), "{:?}", f.name);
        }
        if f.name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        }
    }
    if h.version == Version::Http11 {
        assert_eq!(hosts, 1, "HTTP/1.1 needs exactly one Host");
    }
    assert!(hosts <= 1);
    if let BodyFraming::Length(n) = h.framing {
        assert!(n > 0);
        if cfg.max_request_body_size > 0 {
            assert!(n <= cfg.max_request_body_size);
        }
    }
    if h.framing == BodyFraming::Chunked {
        assert_eq!(h.version, Version::Http11);
    }
    if h.expect_continue {
        assert_eq!(h.version, Version::Http11);
    }
}

/// The most a buffer may hold while the parser still asks for more.
fn max_pending(cfg: &ServerConfig) -> usize {
    cfg.head_limit().max(cfg.max_request_line + 1)
}

/// Parses `raw` whole and in two pieces split at `split` (the second piece arriving after
/// the parser asked for more, as in the connection's read loop), with one configuration.
/// Both must give the same outcome and leave the same bytes behind.
pub fn check_head_split(raw: &[u8], split: usize, cfg: &ServerConfig) {
    let split = split.min(raw.len());

    let mut whole = BytesMut::from(raw);
    let r = head::parse(&mut whole, cfg);
    let consumed = raw.len() - whole.len();
    assert_eq!(&raw[consumed..], &whole[..], "the rest is not a suffix");
    let whole_outcome = outcome(r, cfg);
    match &whole_outcome {
        HeadOutcome::NeedMore => {
            assert_eq!(consumed, 0);
            assert!(
                raw.len() <= max_pending(cfg),
                "{} bytes buffered without an answer",
                raw.len()
            );
        }
        HeadOutcome::Head(_) => {
            assert!(consumed > 0);
            assert!(raw[..consumed].ends_with(b"\r\n\r\n"), "{consumed}");
            assert!(consumed <= cfg.head_limit(), "{consumed} bytes of head");
        }
        HeadOutcome::Error(_) => {}
    }

    let mut parts = BytesMut::from(&raw[..split]);
    let mut r = head::parse(&mut parts, cfg);
    if matches!(r, Ok(None)) {
        parts.extend_from_slice(&raw[split..]);
        r = head::parse(&mut parts, cfg);
    } else if r.is_ok() {
        parts.extend_from_slice(&raw[split..]);
    }
    let split_outcome = outcome(r, cfg);
    assert_eq!(
        whole_outcome,
        split_outcome,
        "whole vs split at {split}: {:?}",
        String::from_utf8_lossy(raw)
    );
    if !matches!(whole_outcome, HeadOutcome::Error(_)) {
        assert_eq!(
            &whole[..],
            &parts[..],
            "different bytes left after the head"
        );
    }
}

/// The `head` fuzz target's input: two bytes of split point (little-endian, taken modulo
/// the length + 1), then the request bytes.
pub fn check_head(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let split = u16::from_le_bytes([data[0], data[1]]) as usize;
    let raw = &data[2..];
    let split = split % (raw.len() + 1);
    for cfg in head_configs() {
        check_head_split(raw, split, &cfg);
    }
}

// ---------------------------------------------------------------------------------------
// chunked bodies

/// How a chunked decode ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkedEnd {
    /// The body ended; these bytes of input were left after it.
    Done(Vec<u8>),
    /// The input ended first.
    NeedMore,
    Error(BodyError),
}

/// Decodes `raw` with the whole input in the buffer.
pub fn decode_whole(raw: &[u8], limit: u64) -> (Vec<u8>, ChunkedEnd) {
    let (out, end, _) = decode_whole_marked(raw, limit);
    (out, end)
}

/// Decodes `raw` whole, also telling which input bytes were delivered as data.
fn decode_whole_marked(raw: &[u8], limit: u64) -> (Vec<u8>, ChunkedEnd, Vec<bool>) {
    let mut d = ChunkedDecoder::new(limit);
    let mut buf = BytesMut::from(raw);
    let mut out = Vec::new();
    let mut is_data = vec![false; raw.len()];
    // Every Data consumes at least one byte, so more calls than bytes is a loop.
    for _ in 0..raw.len() + 2 {
        let before = buf.len();
        match d.decode(&mut buf) {
            Ok(Decoded::Data(b)) => {
                assert!(!b.is_empty(), "empty Data");
                assert!(buf.len() < before, "Data without consuming input");
                let at = raw.len() - buf.len() - b.len();
                assert_eq!(
                    &raw[at..at + b.len()],
                    &b[..],
                    "data not taken from the front"
                );
                is_data[at..at + b.len()].fill(true);
                out.extend_from_slice(&b);
            }
            Ok(Decoded::Done) => {
                // Done is sticky and consumes nothing more.
                let left = buf.len();
                assert_eq!(d.decode(&mut buf), Ok(Decoded::Done));
                assert_eq!(buf.len(), left);
                return (out, ChunkedEnd::Done(buf.to_vec()), is_data);
            }
            Ok(Decoded::NeedMore) => return (out, ChunkedEnd::NeedMore, is_data),
            Err(e) => return (out, ChunkedEnd::Error(e), is_data),
        }
    }
    panic!("the decoder loops on {:?}", String::from_utf8_lossy(raw));
}

/// Decodes `raw` arriving one byte at a time.
pub fn decode_bytewise(raw: &[u8], limit: u64) -> (Vec<u8>, ChunkedEnd) {
    let mut d = ChunkedDecoder::new(limit);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for (i, &b) in raw.iter().enumerate() {
        buf.extend_from_slice(&[b]);
        // One byte in gives at most a data byte, a state change and NeedMore.
        for calls in 1.. {
            assert!(
                calls <= 4,
                "the decoder loops on {:?}",
                String::from_utf8_lossy(raw)
            );
            match d.decode(&mut buf) {
                Ok(Decoded::Data(x)) => {
                    assert!(!x.is_empty(), "empty Data");
                    out.extend_from_slice(&x);
                }
                Ok(Decoded::Done) => {
                    let mut left = buf.to_vec();
                    left.extend_from_slice(&raw[i + 1..]);
                    return (out, ChunkedEnd::Done(left));
                }
                Ok(Decoded::NeedMore) => break,
                Err(e) => return (out, ChunkedEnd::Error(e)),
            }
        }
    }
    (out, ChunkedEnd::NeedMore)
}

/// The `chunked` fuzz target: the input is a chunked body (and whatever follows it).
pub fn check_chunked(raw: &[u8]) {
    for limit in [0u64, 16] {
        let (whole, whole_end, is_data) = decode_whole_marked(raw, limit);
        let (bytewise, bytewise_end) = decode_bytewise(raw, limit);
        assert_eq!(
            whole_end,
            bytewise_end,
            "limit {limit}: {:?}",
            String::from_utf8_lossy(raw)
        );
        assert_eq!(whole, bytewise, "limit {limit}: different data");
        assert!(whole.len() <= raw.len(), "more data out than in");
        if limit > 0 && whole_end != ChunkedEnd::Error(BodyError::TooLarge) {
            assert!(whole.len() as u64 <= limit, "the limit was passed");
        }
        if let ChunkedEnd::Done(left) = &whole_end {
            assert!(raw.ends_with(left));
            // What was accepted had the wire form of a chunked body.
            let body = &raw[..raw.len() - left.len()];
            assert!(
                body.ends_with(b"\r\n\r\n"),
                "{:?}",
                String::from_utf8_lossy(body)
            );
            assert!(body.len() >= whole.len() + 5);
            // Outside the data, an accepted body has no control characters but CRLF line
            // ends (and HTAB).
            for (i, &b) in body.iter().enumerate() {
                if is_data[i] {
                    continue;
                }
                let ok = match b {
                    b'\r' => body.get(i + 1) == Some(&b'\n') && !is_data[i + 1],
                    b'\n' => i > 0 && body[i - 1] == b'\r' && !is_data[i - 1],
                    _ => b == b'\t' || (b >= 0x20 && b != 0x7f),
                };
                assert!(
                    ok,
                    "byte {b:#04x} at {i} accepted in {:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }
    check_chunked_roundtrip(raw);
}

/// The input taken as body data: encoded as the engine encodes chunks, it decodes back.
pub fn check_chunked_roundtrip(data: &[u8]) {
    let step = data.first().map_or(1, |&b| (b as usize % 7) + 1);
    let mut wire = Vec::new();
    for piece in data.chunks(step) {
        chunk_header(&mut wire, piece.len());
        wire.extend_from_slice(piece);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let (out, end) = decode_whole(&wire, 0);
    assert_eq!(end, ChunkedEnd::Done(Vec::new()));
    assert_eq!(out, data);
}

// ---------------------------------------------------------------------------------------
// response heads

/// The separator between the fields of a `response_head` input.
pub const SEP: u8 = 0xff;

/// The `response_head` fuzz target's input: a flags byte (bit 0: HTTP/1.0, bit 1: HEAD,
/// bit 2: keep-alive off), then the status, then header names and values, all separated by
/// 0xff.
pub fn check_response_head(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.split(|&b| b == SEP);
    let status = Bytes::copy_from_slice(parts.next().unwrap_or_default());
    let mut headers = Vec::new();
    while let Some(name) = parts.next() {
        let value = parts.next().unwrap_or_default();
        headers.push((Bytes::copy_from_slice(name), Bytes::copy_from_slice(value)));
    }
    let ctx = ResponseContext {
        version: if flags & 1 != 0 {
            Version::Http10
        } else {
            Version::Http11
        },
        is_head: flags & 2 != 0,
        keep_alive: flags & 4 == 0,
        server: "Stogie/fuzz",
        keep_alive_timeout: std::time::Duration::from_millis(1500),
    };
    check_response(&ResponseHead::new(status, headers), &ctx);
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end]
}

fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// Whether an app's head is plainly fine, so that refusing it would be a bug.
fn plainly_valid(head: &ResponseHead) -> bool {
    let s = head.status();
    s.len() >= 3
        && s[0].is_ascii_digit()
        && s[0] != b'0'
        && s[1].is_ascii_digit()
        && s[2].is_ascii_digit()
        && (s.len() == 3 || (s[3] == b' ' && s[4..].iter().all(|&b| is_field_byte(b))))
        && head.headers().all(|(n, v)| {
            message::is_token(n)
                && !n.eq_ignore_ascii_case(b"content-length")
                && v.iter().all(|&b| is_field_byte(b))
        })
}

/// Encodes a head; if the encoder accepts it, the bytes must be a well-formed response head
/// that says what the encoder decided.
pub fn check_response(head: &ResponseHead, ctx: &ResponseContext<'_>) {
    let mut out = Vec::new();
    let enc = match encode_head(&mut out, head, ctx) {
        Ok(enc) => enc,
        Err(e) => {
            assert!(!plainly_valid(head), "refused a valid head ({e}): {head:?}");
            return;
        }
    };
    assert!(out.ends_with(b"\r\n\r\n"));
    for line in out[..out.len() - 2].split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r\n").expect("a line end without CR");
        assert!(
            !line.is_empty() && !line.contains(&b'\r') && !line.contains(&b'\0'),
            "CR or NUL inside {:?}",
            String::from_utf8_lossy(line)
        );
    }

    let mut storage = vec![httparse::EMPTY_HEADER; head.headers().len() + 8];
    let mut res = httparse::Response::new(&mut storage);
    let n = match res.parse(&out) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("httparse: {other:?} on {:?}", String::from_utf8_lossy(&out)),
    };
    assert_eq!(n, out.len(), "the head has a blank line inside it");
    assert_eq!(res.code, Some(enc.code));
    assert_eq!(
        res.version,
        Some(if ctx.version == Version::Http10 { 0 } else { 1 })
    );
    if let (Ok(reason), Some(parsed)) = (std::str::from_utf8(head.status()), res.reason) {
        if !parsed.is_empty() {
            assert_eq!(reason.get(4..).unwrap_or(""), parsed);
        }
    }

    // The app's fields, in order, then the engine's; the app's framing header is dropped.
    let sent: Vec<_> = head
        .headers()
        .filter(|(n, _)| !n.eq_ignore_ascii_case(b"transfer-encoding"))
        .collect();
    assert!(res.headers.len() >= sent.len());
    for ((name, value), got) in sent.iter().zip(res.headers.iter()) {
        assert_eq!(&name[..], got.name.as_bytes());
        assert_eq!(trim_ows(value), trim_ows(got.value));
    }

    let field = |want: &str| {
        res.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(want))
            .map(|h| trim_ows(h.value))
            .collect::<Vec<_>>()
    };
    let no_body = ctx.is_head || enc.code < 200 || enc.code == 204 || enc.code == 304;
    assert_eq!(enc.framing == ResponseFraming::NoBody, no_body);
    match enc.framing {
        ResponseFraming::Chunked => {
            assert_eq!(field("transfer-encoding"), [&b"chunked"[..]]);
            assert_eq!(ctx.version, Version::Http11);
        }
        _ => assert!(field("transfer-encoding").is_empty()),
    }
    // Every Content-Length sent is plain digits, and they all agree with the framing.
    let lengths: Vec<u64> = field("content-length")
        .into_iter()
        .map(|v| {
            assert!(
                !v.is_empty() && v.iter().all(u8::is_ascii_digit),
                "Content-Length {:?} sent",
                String::from_utf8_lossy(v)
            );
            std::str::from_utf8(v).unwrap().parse().unwrap()
        })
        .collect();
    assert!(lengths.windows(2).all(|w| w[0] == w[1]), "{lengths:?}");
    if let ResponseFraming::Length(len) = enc.framing {
        assert_eq!(lengths.first(), Some(&len));
    }
    if enc.framing == ResponseFraming::Close {
        assert!(enc.close);
    }
    if !ctx.keep_alive {
        assert!(enc.close);
    }
    if enc.close && ctx.version == Version::Http11 {
        assert!(field("connection").iter().any(|v| v
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))));
    }
    assert!(!field("date").is_empty());
}

// ---------------------------------------------------------------------------------------
// PROXY protocol headers and forwarded headers

/// A PROXY protocol header (v1 or v2) is read the same however much of the connection's
/// first bytes is at hand: every prefix of a header asks for more, a refusal stays a
/// refusal when more bytes follow, and a header never takes more than its limits allow.
/// The first byte of the input also picks forwarded-header values to evaluate, which must
/// never panic and never name a scheme other than http or https.
pub fn check_proxy_header(data: &[u8]) {
    use stogie_http::ops::proxy::{forwarded, parse_proxy_header, TrustedPeers};

    match parse_proxy_header(data) {
        Ok(Some((_, n))) => {
            assert!(
                n <= data.len() && n <= 16 + 2048,
                "took {n} of {}",
                data.len()
            );
            for i in 0..n {
                assert_eq!(
                    parse_proxy_header(&data[..i]),
                    Ok(None),
                    "prefix {i} of {n}"
                );
            }
            assert_eq!(parse_proxy_header(&data[..n]), parse_proxy_header(data));
        }
        Ok(None) => assert!(data.len() < 16 + 2048, "waited for more past every limit"),
        Err(e) => {
            let mut more = data.to_vec();
            more.extend_from_slice(b"\r\n\r\nmore");
            assert_eq!(
                parse_proxy_header(&more),
                Err(e),
                "an error must not go away"
            );
        }
    }

    // The same bytes as forwarded-header values, from a trusted and an untrusted peer.
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let name = [
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "Forwarded",
        "X-Forwarded-Ssl",
    ][usize::from(pick) % 5];
    // With a scheme already said: the fuzzed value may contradict it.
    let mut raw =
        format!("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Protocol: ssl\r\n{name}: ").into_bytes();
    raw.extend(
        rest.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    raw.extend_from_slice(b"\r\n\r\n");
    let Ok(Some(head)) = head::parse(&mut BytesMut::from(&raw[..]), &ServerConfig::default())
    else {
        return;
    };
    for list in ["*", "127.0.0.1", "10.0.0.0/8,::1"] {
        let trusted = TrustedPeers::parse(list).unwrap();
        for peer in [
            None,
            Some("127.0.0.1".parse().unwrap()),
            Some("::1".parse().unwrap()),
        ] {
            let f = match forwarded(&head, peer, &trusted) {
                Ok(f) => f,
                Err(e) => {
                    // Only a contradiction about the scheme is refused.
                    assert_eq!(e.message(), "Contradictory scheme headers.");
                    continue;
                }
            };
            assert!(matches!(f.scheme, None | Some("http") | Some("https")));
            if let Some(host) = &f.host {
                assert!(message::is_valid_host(host) && !host.is_empty());
            }
        }
    }
}
