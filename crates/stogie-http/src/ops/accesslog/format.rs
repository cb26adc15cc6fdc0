//! How a line looks: gunicorn's `%(h)s %(l)s ...` atoms or JSON, written from the values a
//! request's record holds.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::message::Header;

/// One value of a line.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// The client's address.
    Host,
    /// Always `-` (identd).
    Ident,
    /// The user of HTTP Basic authentication, or `-`.
    User,
    /// `[04/Dec/2026:05:12:33 +0100]`
    Time,
    /// The request line: `GET /path?q HTTP/1.1`.
    RequestLine,
    Method,
    /// The path without the query.
    Path,
    Query,
    Protocol,
    Status,
    /// Body bytes sent (`0` when none).
    Bytes,
    /// Body bytes sent, `-` when none (Apache's CLF).
    BytesClf,
    Referer,
    UserAgent,
    /// Request time, whole seconds.
    Seconds,
    /// Request time, milliseconds.
    Millis,
    /// Request time, microseconds.
    Micros,
    /// Request time, decimal seconds (`0.001234`).
    DecimalSeconds,
    Pid,
    /// A request header, lower-cased name.
    RequestHeader(String),
    /// A response header, lower-cased name.
    ResponseHeader(String),
}

/// How lines look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessFormat {
    pieces: Vec<Piece>,
    json: bool,
}

impl AccessFormat {
    /// Parses `json`, or a gunicorn format string: `%(NAME)s` atoms (h l u t r m U q H s B
    /// b f a T M D L p, `{header}i`, `{header}o`), `%%` for a percent sign, and text.
    pub fn parse(spec: &str) -> Result<AccessFormat, String> {
        if spec.trim().eq_ignore_ascii_case("json") {
            return Ok(AccessFormat {
                pieces: Vec::new(),
                json: true,
            });
        }
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = spec;
        while let Some(at) = rest.find('%') {
            text.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(after) = rest.strip_prefix("%%") {
                text.push('%');
                rest = after;
                continue;
            }
            let Some(inner) = rest.strip_prefix("%(") else {
                return Err(format!(
                    "{rest:.12?}: a % must start an atom like %(h)s (write %% for a percent sign)"
                ));
            };
            let Some(close) = inner.find(")s") else {
                return Err(format!(
                    "{rest:.24?}: an atom must end with )s, as in %(h)s"
                ));
            };
            let name = &inner[..close];
            rest = &inner[close + 2..];
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(atom(name)?);
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(AccessFormat {
            pieces,
            json: false,
        })
    }

    /// The names (lower case) of the response headers the format shows, which the
    /// connection must keep until the line is written.
    pub fn response_headers(&self) -> Vec<String> {
        self.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::ResponseHeader(name) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    /// The names (lower case) of the request headers the format shows.
    pub fn request_headers(&self) -> Vec<String> {
        if self.json {
            return vec!["referer".into(), "user-agent".into()];
        }
        let mut names: Vec<String> = Vec::new();
        for p in &self.pieces {
            let name = match p {
                Piece::User => "authorization",
                Piece::Referer => "referer",
                Piece::UserAgent => "user-agent",
                Piece::RequestHeader(name) => name,
                _ => continue,
            };
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        names
    }

    /// Appends the line for `rec` to `out`, newline included.
    pub fn write(&self, rec: &AccessRecord<'_>, out: &mut Vec<u8>) {
        if self.json {
            return write_json(rec, out);
        }
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
                Piece::Host => out.extend_from_slice(rec.client.as_bytes()),
                Piece::Ident => out.push(b'-'),
                Piece::User => match basic_user(rec.request_headers) {
                    Some(user) => escape(&user, out),
                    None => out.push(b'-'),
                },
                Piece::Time => with_clf_time(rec.time, |t| out.extend_from_slice(t)),
                // A request refused before its head could be read: what its first line
                // began with, as it came (or `-`).
                Piece::RequestLine if rec.method.is_empty() => {
                    if rec.target.is_empty() {
                        out.push(b'-');
                    } else {
                        escape(rec.target, out);
                    }
                }
                Piece::RequestLine => {
                    escape(rec.method, out);
                    out.push(b' ');
                    escape(rec.target, out);
                    out.push(b' ');
                    out.extend_from_slice(rec.protocol.as_bytes());
                }
                Piece::Method => escape(rec.method, out),
                Piece::Path => escape(rec.path, out),
                Piece::Query => escape(rec.query, out),
                Piece::Protocol => out.extend_from_slice(rec.protocol.as_bytes()),
                Piece::Status => push_num(out, rec.status.into()),
                Piece::Bytes => push_num(out, rec.body_bytes),
                Piece::BytesClf if rec.body_bytes == 0 => out.push(b'-'),
                Piece::BytesClf => push_num(out, rec.body_bytes),
                Piece::Referer => header_or_dash(rec.request_headers, "referer", out),
                Piece::UserAgent => header_or_dash(rec.request_headers, "user-agent", out),
                Piece::Seconds => push_num(out, rec.duration.as_secs()),
                Piece::Millis => push_num(out, rec.duration.as_millis() as u64),
                Piece::Micros => push_num(out, rec.duration.as_micros() as u64),
                Piece::DecimalSeconds => {
                    let mut s = String::new();
                    let _ = write!(s, "{:.6}", rec.duration.as_secs_f64());
                    out.extend_from_slice(s.as_bytes());
                }
                Piece::Pid => push_num(out, u64::from(std::process::id())),
                Piece::RequestHeader(name) => header_or_dash(rec.request_headers, name, out),
                Piece::ResponseHeader(name) => {
                    match rec
                        .response_headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    {
                        Some((_, v)) => escape(v, out),
                        None => out.push(b'-'),
                    }
                }
            }
        }
        out.push(b'\n');
    }
}

fn atom(name: &str) -> Result<Piece, String> {
    if let Some(header) = name.strip_prefix('{') {
        let bad = || format!("%({name})s: a header atom is %({{name}}i) or %({{name}}o)");
        let (header, kind) = header.rsplit_once('}').ok_or_else(bad)?;
        if header.is_empty() || !crate::message::is_token(header.as_bytes()) {
            return Err(bad());
        }
        let header = header.to_ascii_lowercase();
        return match kind {
            "i" => Ok(Piece::RequestHeader(header)),
            "o" => Ok(Piece::ResponseHeader(header)),
            "e" => Err(format!(
                "%({name})s: environment atoms ({{name}}e) are not supported: the line is \
                 written without Python"
            )),
            _ => Err(bad()),
        };
    }
    Ok(match name {
        "h" => Piece::Host,
        "l" => Piece::Ident,
        "u" => Piece::User,
        "t" => Piece::Time,
        "r" => Piece::RequestLine,
        "m" => Piece::Method,
        "U" => Piece::Path,
        "q" => Piece::Query,
        "H" => Piece::Protocol,
        "s" => Piece::Status,
        "B" => Piece::Bytes,
        "b" => Piece::BytesClf,
        "f" => Piece::Referer,
        "a" => Piece::UserAgent,
        "T" => Piece::Seconds,
        "M" => Piece::Millis,
        "D" => Piece::Micros,
        "L" => Piece::DecimalSeconds,
        "p" => Piece::Pid,
        _ => {
            return Err(format!(
                "%({name})s is not an access log atom (h l u t r m U q H s B b f a T M D L p, \
                 {{header}}i, {{header}}o)"
            ))
        }
    })
}

/// What a line is made of, borrowed from the connection for the moment of formatting.
#[derive(Clone, Copy, Debug)]
pub struct AccessRecord<'a> {
    /// The client's address as the app sees it (after trusted proxy headers), or `-`.
    pub client: &'a str,
    /// When the request began (its head arrived).
    pub time: SystemTime,
    /// How long it took, to the end of the response.
    pub duration: Duration,
    /// The method as sent (empty for a request refused before it could be read).
    pub method: &'a [u8],
    /// The request-target as sent.
    pub target: &'a [u8],
    /// The path part of the target.
    pub path: &'a [u8],
    /// The query part of the target.
    pub query: &'a [u8],
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub protocol: &'a str,
    /// The status code sent.
    pub status: u16,
    /// Body bytes sent.
    pub body_bytes: u64,
    /// The request's header fields.
    pub request_headers: &'a [Header],
    /// The response headers the format asked for (see [`AccessFormat::response_headers`]).
    pub response_headers: &'a [(String, Vec<u8>)],
}

fn push_num(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Copies a client-supplied value, writing `"`, `\`, control bytes and non-ASCII bytes as
/// `\xHH`, as Apache does: a line can be neither broken nor forged by what a client sends.
fn escape(v: &[u8], out: &mut Vec<u8>) {
    for &b in v {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b);
        } else {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        }
    }
}

fn header_or_dash(headers: &[Header], name: &str, out: &mut Vec<u8>) {
    match headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name.as_bytes()))
    {
        Some(h) if !h.value.is_empty() => escape(&h.value, out),
        _ => out.push(b'-'),
    }
}

/// The user name of `Authorization: Basic ...`, if any.
pub(super) fn basic_user(headers: &[Header]) -> Option<Vec<u8>> {
    let value = &headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(b"authorization"))?
        .value;
    let (scheme, token) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64_decode(token.trim_ascii())?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[..colon].to_vec())
}

/// Standard base64 with padding; None for anything else.
pub(super) fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    if s.is_empty() || s.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for quad in s.chunks(4) {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

/// The broken-down local time of `t`: (year, month 1-12, day, hour, minute, second,
/// offset from UTC in seconds).
fn local_time(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, i64) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as libc::time_t;
    // SAFETY: localtime_r only writes the struct it is given.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return (1970, 1, 1, 0, 0, 0, 0);
    }
    (
        i64::from(tm.tm_year) + 1900,
        (tm.tm_mon + 1) as u32,
        tm.tm_mday as u32,
        tm.tm_hour as u32,
        tm.tm_min as u32,
        tm.tm_sec as u32,
        tm.tm_gmtoff,
    )
}

fn offset_text(off: i64) -> String {
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.abs();
    format!("{sign}{:02}{:02}", off / 3600, off % 3600 / 60)
}

thread_local! {
    /// The last second's `[dd/Mon/yyyy:HH:MM:SS +zzzz]`: formatted once a second a thread.
    static CLF_TIME: std::cell::RefCell<(u64, Vec<u8>)> = const { std::cell::RefCell::new((u64::MAX, Vec::new())) };
}

fn with_clf_time(t: SystemTime, f: impl FnOnce(&[u8])) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CLF_TIME.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != secs {
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            let (y, mo, d, h, mi, s, off) = local_time(t);
            let text = format!(
                "[{d:02}/{}/{y}:{h:02}:{mi:02}:{s:02} {}]",
                MONTHS[(mo as usize - 1) % 12],
                offset_text(off)
            );
            *cell = (secs, text.into_bytes());
        }
        f(&cell.1);
    });
}

fn json_str(v: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in v {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(b),
            // Control bytes, and bytes past ASCII read as Latin-1 (as WSGI reads them).
            _ => {
                let mut s = String::new();
                let _ = write!(s, "\\u{:04x}", b);
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    out.push(b'"');
}

fn write_json(rec: &AccessRecord<'_>, out: &mut Vec<u8>) {
    let (y, mo, d, h, mi, s, off) = local_time(rec.time);
    let millis = rec
        .time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.subsec_millis());
    let off = offset_text(off);
    let mut time = String::new();
    let _ = write!(
        time,
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}{}:{}",
        &off[..3],
        &off[3..]
    );
    let header = |name: &str| {
        rec.request_headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name.as_bytes()))
            .map_or(&b""[..], |h| &h.value[..])
    };
    out.extend_from_slice(b"{\"time\":");
    json_str(time.as_bytes(), out);
    out.extend_from_slice(b",\"remote_addr\":");
    json_str(rec.client.as_bytes(), out);
    out.extend_from_slice(b",\"method\":");
    json_str(rec.method, out);
    out.extend_from_slice(b",\"path\":");
    json_str(rec.path, out);
    out.extend_from_slice(b",\"query\":");
    json_str(rec.query, out);
    out.extend_from_slice(b",\"protocol\":");
    json_str(rec.protocol.as_bytes(), out);
    out.extend_from_slice(b",\"status\":");
    push_num(out, rec.status.into());
    out.extend_from_slice(b",\"bytes\":");
    push_num(out, rec.body_bytes);
    out.extend_from_slice(b",\"duration_us\":");
    push_num(out, rec.duration.as_micros() as u64);
    out.extend_from_slice(b",\"referer\":");
    json_str(header("referer"), out);
    out.extend_from_slice(b",\"user_agent\":");
    json_str(header("user-agent"), out);
    out.extend_from_slice(b",\"pid\":");
    push_num(out, u64::from(std::process::id()));
    out.extend_from_slice(b"}\n");
}
