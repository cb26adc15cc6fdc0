//! How a line looks: gunicorn's `%(h)s %(l)s ...` atoms or JSON, written from the values a
//! request's record holds.
//!
//! A line is written in two steps: what the request shows, when its head arrives, into a
//! [`Draft`]; the rest (status, size, times, the client), when the response is done. So the
//! request's head need not be kept (a copy of its fields and headers cost more than writing
//! them), and only the short end of the line is written under the log's lock.

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
    /// `2026-12-04T05:12:33.120+01:00` (JSON lines only).
    IsoTime,
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
    /// Where a late piece goes (in [`AccessFormat::early`] only).
    Late,
}

impl Piece {
    /// Whether the piece is written when the response is done, not when the head arrives.
    /// The client is: the record has it only then (and it costs little).
    fn is_late(&self) -> bool {
        matches!(
            self,
            Piece::Host
                | Piece::Time
                | Piece::IsoTime
                | Piece::Status
                | Piece::Bytes
                | Piece::BytesClf
                | Piece::Seconds
                | Piece::Millis
                | Piece::Micros
                | Piece::DecimalSeconds
                | Piece::ResponseHeader(_)
        )
    }
}

/// JSON lines: the same pieces, values written as JSON strings and numbers.
fn json_pieces() -> Vec<Piece> {
    let text = |t: &str| Piece::Text(t.to_string());
    vec![
        text("{\"time\":"),
        Piece::IsoTime,
        text(",\"remote_addr\":"),
        Piece::Host,
        text(",\"method\":"),
        Piece::Method,
        text(",\"path\":"),
        Piece::Path,
        text(",\"query\":"),
        Piece::Query,
        text(",\"protocol\":"),
        Piece::Protocol,
        text(",\"status\":"),
        Piece::Status,
        text(",\"bytes\":"),
        Piece::Bytes,
        text(",\"duration_us\":"),
        Piece::Micros,
        text(",\"referer\":"),
        Piece::Referer,
        text(",\"user_agent\":"),
        Piece::UserAgent,
        text(",\"pid\":"),
        Piece::Pid,
        text("}"),
    ]
}

/// How lines look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessFormat {
    pieces: Vec<Piece>,
    /// The pieces a draft is written from: [`Piece::Late`] for each late piece, `%(l)s` as
    /// text, and adjacent texts merged (each piece costs more than its bytes).
    early: Vec<Piece>,
    /// The late pieces, in order: where each goes is marked in a [`Draft`].
    late: Vec<Piece>,
    json: bool,
}

/// A line begun when its request's head arrived: the pieces known then, written, after one
/// mark a late piece (`u32`, native order: where in the text the piece goes).
#[derive(Debug)]
pub struct Draft {
    text: Vec<u8>,
}

/// What a line shows of the request.
#[derive(Clone, Copy, Debug)]
pub struct AccessRequest<'a> {
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
    /// The request's header fields.
    pub request_headers: &'a [Header],
}

/// What a line shows of the answer, known when it is done.
#[derive(Clone, Copy, Debug)]
pub struct AccessOutcome<'a> {
    /// The client's address as the app sees it (after trusted proxy headers), or `-`.
    pub client: &'a [u8],
    /// When the line is made.
    pub time: SystemTime,
    /// How long it took, to the end of the response.
    pub duration: Duration,
    /// The status code sent.
    pub status: u16,
    /// Body bytes sent.
    pub body_bytes: u64,
    /// The response headers the format asked for (see [`AccessFormat::response_headers`]).
    pub response_headers: &'a [(String, Vec<u8>)],
}

/// Room for a draft's text: a line with a browser's user agent, without growing.
const DRAFT_ROOM: usize = 256;

impl AccessFormat {
    /// Parses `json`, or a gunicorn format string: `%(NAME)s` atoms (h l u t r m U q H s B
    /// b f a T M D L p, `{header}i`, `{header}o`), `%%` for a percent sign, and text.
    pub fn parse(spec: &str) -> Result<AccessFormat, String> {
        if spec.trim().eq_ignore_ascii_case("json") {
            return Ok(AccessFormat::new(json_pieces(), true));
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
        Ok(AccessFormat::new(pieces, false))
    }

    fn new(pieces: Vec<Piece>, json: bool) -> AccessFormat {
        let late = pieces.iter().filter(|p| p.is_late()).cloned().collect();
        let mut early: Vec<Piece> = Vec::new();
        for piece in &pieces {
            let piece = match piece {
                Piece::Ident => Piece::Text("-".into()),
                p if p.is_late() => Piece::Late,
                p => p.clone(),
            };
            match (early.last_mut(), piece) {
                (Some(Piece::Text(before)), Piece::Text(t)) => before.push_str(&t),
                (_, piece) => early.push(piece),
            }
        }
        AccessFormat {
            pieces,
            early,
            late,
            json,
        }
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
        self.end(&self.begin(&rec.request()), &rec.outcome(), out);
    }

    /// Writes what the line shows of `req`, marking where the late pieces go.
    pub fn begin(&self, req: &AccessRequest<'_>) -> Draft {
        let marks = 4 * self.late.len();
        let mut text = Vec::with_capacity(marks + DRAFT_ROOM);
        text.resize(marks, 0);
        let mut mark = 0;
        for piece in &self.early {
            if let Piece::Late = piece {
                // A head is far shorter than 4 GiB.
                let at = text.len() as u32;
                text[mark..mark + 4].copy_from_slice(&at.to_ne_bytes());
                mark += 4;
            } else {
                self.write_early(piece, req, &mut text);
            }
        }
        Draft { text }
    }

    /// Appends the line `draft` began to `out`, with the late pieces of `outcome` and a
    /// newline.
    pub fn end(&self, draft: &Draft, outcome: &AccessOutcome<'_>, out: &mut Vec<u8>) {
        let text = &draft.text;
        let (marks, text) = text.split_at(4 * self.late.len());
        let mut from = 0;
        for (piece, mark) in self.late.iter().zip(marks.chunks_exact(4)) {
            let at =
                u32::from_ne_bytes([mark[0], mark[1], mark[2], mark[3]]) as usize - marks.len();
            out.extend_from_slice(&text[from..at]);
            self.write_late(piece, outcome, out);
            from = at;
        }
        out.extend_from_slice(&text[from..]);
        out.push(b'\n');
    }

    fn write_early(&self, piece: &Piece, req: &AccessRequest<'_>, out: &mut Vec<u8>) {
        match piece {
            Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
            Piece::User => match basic_user(req.request_headers) {
                Some(user) => escape(&user, out),
                None => out.push(b'-'),
            },
            // A request refused before its head could be read: what its first line
            // began with, as it came (or `-`).
            Piece::RequestLine if req.method.is_empty() => {
                if req.target.is_empty() {
                    out.push(b'-');
                } else {
                    escape(req.target, out);
                }
            }
            Piece::RequestLine => {
                escape(req.method, out);
                out.push(b' ');
                escape(req.target, out);
                out.push(b' ');
                out.extend_from_slice(req.protocol.as_bytes());
            }
            Piece::Method => self.value(req.method, out),
            Piece::Path => self.value(req.path, out),
            Piece::Query => self.value(req.query, out),
            Piece::Protocol if self.json => json_str(req.protocol.as_bytes(), out),
            Piece::Protocol => out.extend_from_slice(req.protocol.as_bytes()),
            Piece::Referer => self.header(req.request_headers, "referer", out),
            Piece::UserAgent => self.header(req.request_headers, "user-agent", out),
            Piece::Pid => push_num(out, u64::from(std::process::id())),
            Piece::RequestHeader(name) => self.header(req.request_headers, name, out),
            // Late pieces are written by `write_late`.
            _ => {}
        }
    }

    fn write_late(&self, piece: &Piece, o: &AccessOutcome<'_>, out: &mut Vec<u8>) {
        match piece {
            Piece::Host if self.json => json_str(o.client, out),
            Piece::Host => out.extend_from_slice(o.client),
            Piece::Time => with_clf_time(o.time, |t| out.extend_from_slice(t)),
            Piece::IsoTime => iso_time(o.time, out),
            Piece::Status => push_num(out, o.status.into()),
            Piece::Bytes => push_num(out, o.body_bytes),
            Piece::BytesClf if o.body_bytes == 0 => out.push(b'-'),
            Piece::BytesClf => push_num(out, o.body_bytes),
            Piece::Seconds => push_num(out, o.duration.as_secs()),
            Piece::Millis => push_num(out, o.duration.as_millis() as u64),
            Piece::Micros => push_num(out, o.duration.as_micros() as u64),
            Piece::DecimalSeconds => {
                let mut s = String::new();
                let _ = write!(s, "{:.6}", o.duration.as_secs_f64());
                out.extend_from_slice(s.as_bytes());
            }
            Piece::ResponseHeader(name) => {
                match o
                    .response_headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                {
                    Some((_, v)) => escape(v, out),
                    None => out.push(b'-'),
                }
            }
            // Early pieces are in the draft.
            _ => {}
        }
    }

    /// A value as the format writes it: escaped, or a JSON string.
    fn value(&self, v: &[u8], out: &mut Vec<u8>) {
        if self.json {
            json_str(v, out);
        } else {
            escape(v, out);
        }
    }

    /// A request header's value; if it is missing or empty, `-` (JSON: `""`).
    fn header(&self, headers: &[Header], name: &str, out: &mut Vec<u8>) {
        match headers.iter().find(|h| is_named(&h.name, name)) {
            Some(h) if !h.value.is_empty() => self.value(&h.value, out),
            _ if self.json => out.extend_from_slice(b"\"\""),
            _ => out.push(b'-'),
        }
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
    pub client: &'a [u8],
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

impl<'a> AccessRecord<'a> {
    fn request(&self) -> AccessRequest<'a> {
        AccessRequest {
            method: self.method,
            target: self.target,
            path: self.path,
            query: self.query,
            protocol: self.protocol,
            request_headers: self.request_headers,
        }
    }

    fn outcome(&self) -> AccessOutcome<'a> {
        AccessOutcome {
            client: self.client,
            time: self.time,
            duration: self.duration,
            status: self.status,
            body_bytes: self.body_bytes,
            response_headers: self.response_headers,
        }
    }
}

#[inline]
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
#[inline(always)]
fn escape(v: &[u8], out: &mut Vec<u8>) {
    // Most values need no escape: copied whole, as a byte at a time cost more than the rest
    // of the line.
    if all_plain(v) {
        out.extend_from_slice(v);
    } else {
        escape_each(v, out);
    }
}

/// Whether no byte of `v` needs an escape, eight bytes at a time (a browser's user agent
/// is a hundred bytes and more).
#[inline(always)]
fn all_plain(v: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Bytes of `x` (all below 0x80) below `n`, or equal to `b`: their high bits.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let equal = |x: u64, b: u8| below(x ^ (ONES * u64::from(b)), 1);
    let mut chunks = v.chunks_exact(8);
    for chunk in &mut chunks {
        let x = u64::from_ne_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]);
        if x & HIGH != 0 || below(x, 0x20) | equal(x, b'"') | equal(x, b'\\') | equal(x, 0x7f) != 0
        {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| is_plain(b))
}

#[cold]
fn escape_each(mut v: &[u8], out: &mut Vec<u8>) {
    while let Some(at) = v.iter().position(|&b| !is_plain(b)) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let b = v[at];
        out.extend_from_slice(&v[..at]);
        out.extend_from_slice(&[
            b'\\',
            b'x',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 15)],
        ]);
        v = &v[at + 1..];
    }
    out.extend_from_slice(v);
}

/// Whether `b` goes into a line as it is.
fn is_plain(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

/// Whether a field is named `lower` (a lower-case name): half the work of
/// `eq_ignore_ascii_case`, which lower-cases both sides.
fn is_named(name: &[u8], lower: &str) -> bool {
    name.len() == lower.len()
        && name
            .iter()
            .zip(lower.as_bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == *b)
}

/// The user name of `Authorization: Basic ...`, if any.
pub(super) fn basic_user(headers: &[Header]) -> Option<Vec<u8>> {
    let value = &headers
        .iter()
        .find(|h| is_named(&h.name, "authorization"))?
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

/// `2026-12-04T05:12:33.120+01:00`, as a JSON string.
fn iso_time(t: SystemTime, out: &mut Vec<u8>) {
    let (y, mo, d, h, mi, s, off) = local_time(t);
    let millis = t
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
    json_str(time.as_bytes(), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_plain_is_is_plain_on_every_byte() {
        for b in 0..=255u8 {
            for at in 0..17 {
                let mut v = vec![b'a'; 17];
                v[at] = b;
                assert_eq!(all_plain(&v), v.iter().all(|&b| is_plain(b)), "{b} at {at}");
                assert_eq!(
                    all_plain(&v[..at + 1]),
                    is_plain(b),
                    "{b} last of {}",
                    at + 1
                );
            }
        }
    }
}
