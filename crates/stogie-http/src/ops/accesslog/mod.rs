//! The access log: one line per request, formatted here from values the connection captured
//! (no Python, no GIL), and written by a thread of its own from a buffer, so that a slow
//! disk never holds up a response: past [`MAX_PENDING`] bytes waiting, lines are dropped
//! and counted instead.
//!
//! Formats: gunicorn's `%(h)s %(l)s ...` atoms (Apache's combined format by default), or
//! `json`, one object per line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::log::{ErrorLog, LogLevel};

mod format;

pub use format::{AccessFormat, AccessOutcome, AccessRecord, AccessRequest, Draft};

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

    /// Queues the line for `rec`. Never waits for the disk.
    pub fn log(&self, rec: &AccessRecord<'_>) {
        self.queue(|out| self.format.write(rec, out));
    }

    /// Begins the line of a request whose head arrived: see [`Self::end`].
    pub fn begin(&self, req: &AccessRequest<'_>) -> Draft {
        self.format.begin(req)
    }

    /// Queues the line `draft` began, ended with `outcome`. Never waits for the disk.
    pub fn end(&self, draft: &Draft, outcome: &AccessOutcome<'_>) {
        self.queue(|out| self.format.end(draft, outcome, out));
    }

    fn queue(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING {
            self.shared.dropped.fetch_add(1, Relaxed);
            return;
        }
        write(&mut pending);
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
    use super::format::{base64_decode, basic_user};
    use super::*;
    use crate::message::Header;
    use bytes::Bytes;
    use std::time::UNIX_EPOCH;

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
            client: b"192.0.2.7",
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
