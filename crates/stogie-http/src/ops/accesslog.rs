//! The access log: one line per request, formatted here from values the connection captured
//! (no Python, no GIL), and written by a thread of its own from a buffer, so that a slow
//! disk never holds up a response: past [`MAX_PENDING`] bytes waiting, lines are dropped
//! and counted instead.
//!
//! Formats: gunicorn's `%(h)s %(l)s ...` atoms (Apache's combined format by default), or
//! `json`, one object per line.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::log::{ErrorLog, LogLevel};
use crate::message::Header;

/// Apache's combined log format, in gunicorn's atoms: gunicorn's default.
pub const COMBINED: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// Bytes waiting for the writer past which new lines are dropped (a disk that slow loses
/// log lines, not requests).
pub const MAX_PENDING: usize = 8 << 20;
/// Bytes waiting that wake the writer before its next tick.
const WAKE_AT: usize = 64 << 10;
/// How long closing the log waits for the last lines to be written.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How often the writer writes what is waiting, at the latest.
const TICK: Duration = Duration::from_millis(200);

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
fn basic_user(headers: &[Header]) -> Option<Vec<u8>> {
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
fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
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

// --- writing ----------------------------------------------------------------------------

/// Where lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The process's standard output (`-`).
    Stdout,
    /// A file, appended to (created if missing).
    File(PathBuf),
}

impl Destination {
    /// `-` is standard output; anything else a file path.
    pub fn parse(s: &str) -> Destination {
        if s == "-" {
            Destination::Stdout
        } else {
            Destination::File(PathBuf::from(s))
        }
    }

    fn open(&self) -> io::Result<Sink> {
        let file = match self {
            Destination::Stdout => {
                // A duplicate: the log may close its descriptor, never the process's stdout.
                let fd = unsafe { libc::dup(libc::STDOUT_FILENO) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: a fresh descriptor, owned by the File from here on.
                unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) }
            }
            Destination::File(path) => OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
        };
        let kind = file.metadata()?.file_type();
        // Lines written to a pipe in pieces over PIPE_BUF may interleave with another
        // process's (worker processes share a stdout): such writes end at line ends.
        let whole_lines = kind.is_fifo() || kind.is_socket() || kind.is_char_device();
        Ok(Sink { file, whole_lines })
    }
}

struct Sink {
    file: File,
    whole_lines: bool,
}

impl Sink {
    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        if !self.whole_lines {
            return self.file.write_all(data);
        }
        const PIPE_BUF: usize = 4096;
        while !data.is_empty() {
            let mut end = data.len().min(PIPE_BUF);
            if end < data.len() {
                // The last line end within PIPE_BUF; a longer line goes in one write.
                end = data[..end]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map(|p| p + 1)
                    .or_else(|| data.iter().position(|&b| b == b'\n').map(|p| p + 1))
                    .unwrap_or(data.len());
            }
            self.file.write_all(&data[..end])?;
            data = &data[end..];
        }
        Ok(())
    }
}

struct Shared {
    pending: Mutex<Vec<u8>>,
    wake: Condvar,
    reopen: AtomicBool,
    closing: AtomicBool,
    dropped: AtomicU64,
}

/// An open access log: its format, and the thread that writes its lines.
pub struct AccessLog {
    format: AccessFormat,
    destination: Destination,
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    response_headers: Vec<String>,
    request_headers: Vec<String>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("destination", &self.destination)
            .field("format", &self.format)
            .finish()
    }
}

impl AccessLog {
    /// Opens `destination` now (so that a bad path is an error at start) and starts the
    /// writer thread; `errors` hears of write failures and dropped lines.
    pub fn open(
        destination: Destination,
        format: AccessFormat,
        errors: Arc<dyn ErrorLog>,
    ) -> io::Result<AccessLog> {
        let sink = destination.open()?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(WAKE_AT)),
            wake: Condvar::new(),
            reopen: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        });
        let writer = {
            let shared = shared.clone();
            let destination = destination.clone();
            std::thread::Builder::new()
                .name("stogie-accesslog".into())
                .spawn(move || write_loop(sink, destination, &shared, &*errors))?
        };
        Ok(AccessLog {
            response_headers: format.response_headers(),
            request_headers: format.request_headers(),
            format,
            destination,
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// The response headers lines show (lower-case names), to be kept for [`Self::log`].
    pub fn wanted_response_headers(&self) -> &[String] {
        &self.response_headers
    }

    /// The request headers lines show (lower-case names): only these are kept for a line.
    pub fn wanted_request_headers(&self) -> &[String] {
        &self.request_headers
    }

    /// Queues the line for `rec`. Never waits for the disk.
    pub fn log(&self, rec: &AccessRecord<'_>) {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING {
            self.shared.dropped.fetch_add(1, Relaxed);
            return;
        }
        self.format.write(rec, &mut pending);
        if pending.len() >= WAKE_AT {
            self.shared.wake.notify_one();
        }
    }

    /// Closes and opens the file again (after logrotate moved it away), at the writer's
    /// next write.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Relaxed);
        self.shared.wake.notify_one();
    }

    /// Writes what is waiting and stops the writer; later lines are dropped. Waits for the
    /// writer at most [`CLOSE_WAIT`]: a log stuck on a full pipe or a hung disk must not
    /// keep the server from stopping (the writer then ends when its write does).
    pub fn close(&self) {
        self.shared.closing.store(true, Relaxed);
        self.shared.wake.notify_one();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = writer {
            let deadline = std::time::Instant::now() + CLOSE_WAIT;
            while !w.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if w.is_finished() {
                let _ = w.join();
            }
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_loop(mut sink: Sink, destination: Destination, shared: &Shared, errors: &dyn ErrorLog) {
    let mut batch = Vec::with_capacity(WAKE_AT);
    let mut failing = false;
    loop {
        {
            let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.is_empty() && !shared.closing.load(Relaxed) && !shared.reopen.load(Relaxed) {
                pending = shared
                    .wake
                    .wait_timeout(pending, TICK)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            std::mem::swap(&mut *pending, &mut batch);
        }
        if shared.reopen.swap(false, Relaxed) {
            match destination.open() {
                Ok(s) => sink = s,
                Err(e) => errors.log(
                    LogLevel::Error,
                    &format!("access log: cannot reopen, still writing the old file: {e}"),
                ),
            }
        }
        if !batch.is_empty() {
            match sink.write(&batch) {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    errors.log(LogLevel::Error, &format!("access log: write failed: {e}"));
                }
                Err(_) => {}
            }
            batch.clear();
            if batch.capacity() > 4 * WAKE_AT {
                batch.shrink_to(WAKE_AT);
            }
        }
        let dropped = shared.dropped.swap(0, Relaxed);
        if dropped > 0 {
            errors.log(
                LogLevel::Warning,
                &format!("access log: {dropped} lines dropped: the log is written slower than requests come"),
            );
        }
        if shared.closing.load(Relaxed)
            && shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn headers(pairs: &[(&'static str, &'static str)]) -> Vec<Header> {
        pairs
            .iter()
            .map(|(n, v)| Header {
                name: Bytes::from_static(n.as_bytes()),
                value: Bytes::from_static(v.as_bytes()),
            })
            .collect()
    }

    fn record<'a>(req: &'a [Header], resp: &'a [(String, Vec<u8>)]) -> AccessRecord<'a> {
        AccessRecord {
            client: "192.0.2.7",
            time: UNIX_EPOCH + Duration::from_secs(1_780_000_000),
            duration: Duration::from_micros(1234),
            method: b"GET",
            target: b"/a b?x=1",
            path: b"/a b",
            query: b"x=1",
            protocol: "HTTP/1.1",
            status: 200,
            body_bytes: 12,
            request_headers: req,
            response_headers: resp,
        }
    }

    fn line(spec: &str, rec: &AccessRecord<'_>) -> String {
        let mut out = Vec::new();
        AccessFormat::parse(spec).unwrap().write(rec, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn combined_format() {
        let req = headers(&[
            ("Referer", "http://r/"),
            ("User-Agent", "curl/8 \"quoted\""),
            ("Authorization", "Basic YWxpY2U6c2VjcmV0"),
        ]);
        let l = line(COMBINED, &record(&req, &[]));
        let (before, after) = l.split_once('[').unwrap();
        assert_eq!(before, "192.0.2.7 - alice ");
        let (time, after) = after.split_once("] ").unwrap();
        assert!(time.contains("/2026:"), "{time}");
        assert_eq!(
            after,
            "\"GET /a b?x=1 HTTP/1.1\" 200 12 \"http://r/\" \"curl/8 \\x22quoted\\x22\"\n"
        );
    }

    #[test]
    fn every_atom() {
        let req = headers(&[("X-Id", "7")]);
        let resp = vec![("x-out".to_string(), b"o".to_vec())];
        let rec = record(&req, &resp);
        let l = line(
            "%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(b)s|%(T)s|%(M)s|%(D)s|%(L)s|%(p)s|\
             %({x-id}i)s|%({X-Out}o)s|%({none}i)s|%(f)s|%(u)s|%%",
            &rec,
        );
        assert_eq!(
            l,
            format!(
                "GET|/a b|x=1|HTTP/1.1|200|12|12|0|1|1234|0.001234|{}|7|o|-|-|-|%\n",
                std::process::id()
            )
        );
        let mut empty = record(&req, &resp);
        empty.body_bytes = 0;
        assert_eq!(line("%(b)s %(B)s", &empty), "- 0\n");
    }

    #[test]
    fn bad_formats_are_refused() {
        for bad in [
            "%(zz)s",
            "%(h)",
            "%d",
            "%(h)s %",
            "%({X}e)s",
            "%({}i)s",
            "%({a b}i)s",
        ] {
            assert!(AccessFormat::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            AccessFormat::parse("%({X-A}o)s %({b}o)s")
                .unwrap()
                .response_headers(),
            ["x-a", "b"]
        );
        assert_eq!(
            AccessFormat::parse(COMBINED).unwrap().request_headers(),
            ["authorization", "referer", "user-agent"]
        );
        assert_eq!(
            AccessFormat::parse("%({X-Id}i)s %(a)s %({x-id}i)s")
                .unwrap()
                .request_headers(),
            ["x-id", "user-agent"]
        );
    }

    #[test]
    fn client_bytes_cannot_break_a_line() {
        let req = headers(&[("User-Agent", "a\tb\u{7f}")]);
        let mut rec = record(&req, &[]);
        rec.target = b"/\xff\"\\";
        let l = line("%(r)s %(a)s", &rec);
        assert_eq!(l, "GET /\\xff\\x22\\x5c HTTP/1.1 a\\x09b\\x7f\n");
    }

    #[test]
    fn json_lines() {
        let req = headers(&[("User-Agent", "ua\"\u{1}"), ("Referer", "r")]);
        let mut rec = record(&req, &[]);
        rec.target = b"/\xe9";
        rec.path = b"/\xe9";
        let l = line("json", &rec);
        assert!(l.ends_with("}\n") && !l[..l.len() - 1].contains('\n'));
        assert!(l.contains("\"remote_addr\":\"192.0.2.7\""), "{l}");
        assert!(l.contains("\"path\":\"/\\u00e9\""), "{l}");
        assert!(
            l.contains("\"status\":200,\"bytes\":12,\"duration_us\":1234"),
            "{l}"
        );
        assert!(l.contains("\"user_agent\":\"ua\\\"\\u0001\""), "{l}");
    }

    #[test]
    fn base64_user() {
        assert_eq!(base64_decode(b"YWxpY2U6c2VjcmV0").unwrap(), b"alice:secret");
        assert_eq!(base64_decode(b"YTpi").unwrap(), b"a:b");
        assert_eq!(base64_decode(b"YWI6Yw==").unwrap(), b"ab:c");
        assert!(base64_decode(b"YW!6").is_none());
        assert!(base64_decode(b"abc").is_none());
        let req = headers(&[("Authorization", "Bearer abc")]);
        assert!(basic_user(&req).is_none());
    }

    struct Quiet;
    impl ErrorLog for Quiet {
        fn log(&self, _: LogLevel, _: &str) {}
    }

    #[test]
    fn lines_reach_the_file_and_reopen_follows_a_rotation() {
        let dir = std::env::temp_dir().join(format!("stogie-accesslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let log = AccessLog::open(
            Destination::File(path.clone()),
            AccessFormat::parse("%(s)s %(U)s").unwrap(),
            Arc::new(Quiet),
        )
        .unwrap();
        let req = headers(&[]);
        log.log(&record(&req, &[]));
        let wait_for = |p: &std::path::Path, want: &str| {
            for _ in 0..100 {
                if std::fs::read_to_string(p).unwrap_or_default() == want {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        };
        assert!(wait_for(&path, "200 /a b\n"));
        // logrotate: the file is moved away, the log reopened at the old name.
        let rotated = dir.join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        std::thread::sleep(Duration::from_millis(50));
        let mut rec = record(&req, &[]);
        rec.status = 404;
        log.log(&rec);
        log.close();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "404 /a b\n");
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "200 /a b\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_path_is_an_error_at_open() {
        let err = AccessLog::open(
            Destination::File("/nonexistent-dir/x/access.log".into()),
            AccessFormat::parse(COMBINED).unwrap(),
            Arc::new(Quiet),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-dir/x/access.log"),
            "{err}"
        );
    }
}
