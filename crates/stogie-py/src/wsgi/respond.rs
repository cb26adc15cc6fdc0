//! `start_response`, `write()`, iterating the app's result, and `close()`: PEP 3333's
//! response side. Headers are held back until the first non-empty chunk; a list result
//! leaves in one event (one write on the socket).

use std::ops::Range;

use bytes::Bytes;
use pyo3::exceptions::{PyAssertionError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use stogie_http::message::content_length_value;
use stogie_http::{ClientGone, HeadRoom, ResponseEvent, ResponseHead, ResponseSender};

/// Bodies at least this long are lent to the engine without a copy; shorter ones are copied
/// (cheaper than holding a reference that must be released under the GIL later).
const LEND_AT: usize = 4 * 1024;

/// A Python `bytes` object lent to the engine: its buffer is immutable and lives as long as
/// the object, so the connection can write straight from it.
struct LentBytes {
    _owner: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the pointer is into an immutable `bytes` buffer kept alive by `_owner`, which is
// itself Send + Sync; dropping it without the GIL defers the decref to pyo3's pool, which
// drains at the next call into this module.
unsafe impl Send for LentBytes {}
unsafe impl Sync for LentBytes {}

impl AsRef<[u8]> for LentBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see the Send impl: valid for `len` bytes while `_owner` lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The bytes of a body chunk for the engine: lent when large, copied when small.
pub fn body_bytes(data: &Bound<'_, PyBytes>) -> Bytes {
    let slice = data.as_bytes();
    if slice.len() < LEND_AT {
        return Bytes::copy_from_slice(slice);
    }
    Bytes::from_owner(LentBytes {
        ptr: slice.as_ptr(),
        len: slice.len(),
        _owner: data.clone().unbind(),
    })
}

/// The response state shared by `start_response`, `write()` and the result loop.
pub struct Responder {
    /// `None` once released (see [`Responder::release`]).
    sender: Option<ResponseSender>,
    /// The engine's buffers for the head, until the head is built.
    room: Option<HeadRoom>,
    head: Option<ResponseHead>,
    /// Body bytes still to come by the app's Content-Length, if it gave one.
    left: Option<u64>,
    /// Whether the head went to the connection.
    pub headers_sent: bool,
    /// Whether the response is complete or abandoned.
    pub finished: bool,
}

/// What `write()` raises once the client has gone.
pub(crate) fn gone() -> PyErr {
    PyOSError::new_err("the client closed the connection")
}

impl Responder {
    /// A responder sending to `sender`, building its head in `room`.
    pub fn new(sender: ResponseSender, room: HeadRoom) -> Self {
        Responder {
            sender: Some(sender),
            room: Some(room),
            head: None,
            left: None,
            headers_sent: false,
            finished: false,
        }
    }

    /// Converts `status` and `headers` from the app (see [`head_from_py`]) and sets them as
    /// the head (or, before anything was sent, replaces the head set before).
    /// `checked`: strings seen before, which need no second look.
    pub fn set_head_from_py(
        &mut self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        checked: Option<&mut Checked>,
    ) -> PyResult<()> {
        let room = self.room.take().unwrap_or_default();
        self.set_head(head_from_py(status, headers, room, checked)?);
        Ok(())
    }

    /// Sets (or, before anything was sent, replaces) the status and headers.
    pub fn set_head(&mut self, head: ResponseHead) {
        // A bad value is refused by the engine when it writes the head.
        self.left = head
            .headers()
            .find(|(name, _)| name.eq_ignore_ascii_case(b"content-length"))
            .and_then(|(_, v)| content_length_value(v));
        self.head = Some(head);
    }

    /// Lets go of the response once the request is over, as dropping the responder would:
    /// the connection (and an HTTP/2 stream's place among its connection's jobs) waits for
    /// its sender to go. What is kept is an object to reuse for the next request.
    pub fn release(&mut self) {
        self.sender = None;
        self.room = None;
        self.head = None;
        self.finished = true;
    }

    /// Body bytes still to come by the app's Content-Length, if it gave one.
    pub fn body_left(&self) -> Option<u64> {
        self.left
    }

    /// Sends `ev`; `last`: only the response's end can follow it.
    fn send(&mut self, py: Python<'_>, ev: ResponseEvent, last: bool) -> Result<(), ClientGone> {
        let sent = match &self.sender {
            None => Err(ClientGone),
            Some(sender) => match sender.try_send_as(ev, last) {
                Ok(()) => Ok(()),
                Err((_, true)) => Err(ClientGone),
                Err((ev, false)) => crate::gil::detach(py, || sender.blocking_send_as(ev, last)),
            },
        };
        if sent.is_err() {
            // The connection is gone: the response is over, and the OSError an app's
            // write() then raises is the client's doing, not an application error.
            self.finished = true;
        }
        sent
    }

    /// Sends body bytes, with the head before the first non-empty ones.
    pub fn write(&mut self, py: Python<'_>, data: Bytes, end: bool) -> Result<(), ClientGone> {
        if self.finished {
            return Err(ClientGone);
        }
        // Bytes that complete the app's Content-Length leave the response waiting only for
        // its end: the connection's wake may then be held like the end's (pool.rs).
        let last = !end && self.left == Some(data.len() as u64);
        self.left = self.left.map(|n| n.saturating_sub(data.len() as u64));
        let ev = if !self.headers_sent {
            if data.is_empty() && !end {
                return Ok(());
            }
            self.headers_sent = true;
            ResponseEvent::Head {
                head: self.head.take().unwrap_or_default(),
                body: data,
                end,
            }
        } else if end {
            if !data.is_empty() {
                self.send(py, ResponseEvent::Body(data), false)?;
            }
            ResponseEvent::End
        } else {
            if data.is_empty() {
                return Ok(());
            }
            ResponseEvent::Body(data)
        };
        if end {
            self.finished = true;
        }
        self.send(py, ev, last)
    }

    /// Sends the head now, even with no body bytes yet (a native gateway's `send_headers`).
    pub fn force_head(&mut self, py: Python<'_>) -> Result<(), ClientGone> {
        if self.headers_sent {
            return Ok(());
        }
        self.headers_sent = true;
        let head = self.head.take().unwrap_or_default();
        self.send(
            py,
            ResponseEvent::Head {
                head,
                body: Bytes::new(),
                end: false,
            },
            false,
        )
    }

    /// Sends a file (sendfile on the connection) after the head.
    pub fn send_file(
        &mut self,
        py: Python<'_>,
        file: std::fs::File,
        offset: u64,
    ) -> Result<(), ClientGone> {
        self.force_head(py)?;
        self.send(
            py,
            ResponseEvent::File {
                file,
                offset,
                len: None,
            },
            false,
        )
    }

    /// Ends the response with whatever was set (headers alone when no body came).
    pub fn finish(&mut self, py: Python<'_>) -> Result<(), ClientGone> {
        if self.finished {
            return Ok(());
        }
        self.write(py, Bytes::new(), true)
    }

    /// Gives up: the engine answers 500 or closes the connection.
    pub fn abort(&mut self, py: Python<'_>, ev: ResponseEvent) {
        if !self.finished {
            self.finished = true;
            let _ = self.send(py, ev, false);
        }
    }
}

/// Appends `s`, a `str` from the app, to `buf` as ISO-8859-1 (PEP 3333's header encoding)
/// and returns where it landed, and, when `s` is plain ASCII, its own UTF-8 buffer (the
/// same bytes, valid while `s` lives; see [`Checked`]). `what` names it in the error for a
/// wrong type or character.
fn push_latin1<'a>(
    buf: &mut Vec<u8>,
    s: &'a Bound<'_, PyAny>,
    what: &str,
) -> PyResult<(Range<usize>, Option<&'a [u8]>)> {
    let s = s.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!(
            "WSGI {what} {} is not of type str.",
            s.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    })?;
    // Borrowed, not copied: an ASCII string's UTF-8 form is its own buffer.
    let text = s.to_str()?;
    let start = buf.len();
    // Nearly every status and header is plain ASCII: its UTF-8 bytes are its ISO-8859-1 ones.
    if text
        .bytes()
        .all(|c| c < 0x80 && c != 0 && c != b'\n' && c != b'\r')
    {
        buf.extend_from_slice(text.as_bytes());
        return Ok((start..buf.len(), Some(text.as_bytes())));
    }
    for c in text.chars() {
        let c = c as u32;
        if c > 0xff {
            return Err(PyValueError::new_err(format!(
                "WSGI {what} {text:?} is not encodable as ISO-8859-1."
            )));
        }
        if c == 0 || c == 10 || c == 13 {
            return Err(PyValueError::new_err(format!(
                "WSGI {what} {text:?} contains CR, LF or NUL."
            )));
        }
        buf.push(c as u8);
    }
    Ok((start..buf.len(), None))
}

/// What a string from the app was checked as.
const AS_STATUS: u8 = 1;
const AS_NAME: u8 = 2;
const AS_VALUE: u8 = 4;

/// Most strings stored in [`Checked`], and the longest.
const CHECKED_SLOTS: usize = 32;
const CHECKED_MAX_LEN: usize = 256;

/// Strings from the app's `start_response` calls already checked, by identity: an app
/// passes the same status and header name (and often value) objects, its code's constants,
/// request after request, and such a string needs neither its type, its characters nor its
/// token-ness looked at again. Per worker thread; only exact, plain-ASCII `str`s. Each is
/// held, so that its address stays its own and its text (`text`, its UTF-8 buffer, which is
/// its Latin-1 bytes) stays valid. A string made for one response (`str(len(body))`) is
/// never seen again: one that nothing but a pair made for this response holds is not kept,
/// and the one replaced is the first not used since the last pass (a clock), so that the
/// constants stay.
#[derive(Default)]
pub struct Checked {
    slots: Vec<Slot>,
    /// Where the clock's hand is.
    hand: usize,
}

struct Slot {
    obj: Py<PyString>,
    text: *const u8,
    len: usize,
    roles: u8,
    used: bool,
}

// SAFETY: `text` points into the string `obj` holds, which is immutable; it is read only
// with the GIL held, like `obj`.
unsafe impl Send for Checked {}
unsafe impl Sync for Checked {}

impl Checked {
    /// The bytes of `s`, if it was checked as `role` before.
    fn get(&mut self, s: &Bound<'_, PyAny>, role: u8) -> Option<&[u8]> {
        let p = s.as_ptr();
        let slot = self.slots.iter_mut().find(|slot| slot.obj.as_ptr() == p)?;
        if slot.roles & role == 0 {
            return None;
        }
        slot.used = true;
        // SAFETY: see `Slot`: `obj` is alive and immutable.
        Some(unsafe { std::slice::from_raw_parts(slot.text, slot.len) })
    }

    /// Remembers that `s`, whose text is `text`, passed as `role`. `lasting`: what holds
    /// `s` (a constant tuple) outlives the response, whatever `s`'s own count says.
    fn remember(&mut self, s: &Bound<'_, PyAny>, text: &[u8], role: u8, lasting: bool) {
        // SAFETY: a live object. Held by its pair (or the caller's frame) alone: made for
        // this response.
        if !lasting && unsafe { pyo3::ffi::Py_REFCNT(s.as_ptr()) } <= 1 {
            return;
        }
        if let Some(slot) = self
            .slots
            .iter_mut()
            .find(|slot| slot.obj.as_ptr() == s.as_ptr())
        {
            slot.roles |= role;
            return;
        }
        let Ok(s) = s.cast_exact::<PyString>() else {
            return;
        };
        if text.len() > CHECKED_MAX_LEN {
            return;
        }
        let slot = Slot {
            obj: s.clone().unbind(),
            text: text.as_ptr(),
            len: text.len(),
            roles: role,
            used: false,
        };
        if self.slots.len() < CHECKED_SLOTS {
            self.slots.push(slot);
            return;
        }
        loop {
            let old = &mut self.slots[self.hand];
            self.hand = (self.hand + 1) % CHECKED_SLOTS;
            if !std::mem::take(&mut old.used) {
                *old = slot;
                return;
            }
        }
    }
}

/// Appends `s` (see [`push_latin1`]) as `role`, looked at only if `checked` has not seen it;
/// `valid` is the role's own test of the bytes (a token, a status), `Ok(())` or the error
/// to raise. `lasting`: see [`Checked::remember`].
fn push_checked(
    buf: &mut Vec<u8>,
    s: &Bound<'_, PyAny>,
    what: &str,
    role: u8,
    lasting: bool,
    checked: &mut Option<&mut Checked>,
    valid: impl FnOnce(&[u8]) -> PyResult<()>,
) -> PyResult<Range<usize>> {
    if let Some(text) = checked.as_deref_mut().and_then(|c| c.get(s, role)) {
        let start = buf.len();
        buf.extend_from_slice(text);
        return Ok(start..buf.len());
    }
    let (at, text) = push_latin1(buf, s, what)?;
    valid(&buf[at.clone()])?;
    if let (Some(c), Some(text)) = (checked.as_deref_mut(), text) {
        c.remember(s, text, role, lasting);
    }
    Ok(at)
}

/// One `(name, value)` item of the app's headers: a tuple or list of two (the usual
/// case, read without iterating), or any other iterable of exactly two, as Cheroot's
/// `for k, v in headers` takes. A `str` or `bytes` is never a pair. `f` gets the two (a
/// tuple's read borrowed: their counts are then those of the app's objects) and whether
/// they are held beyond the response: always said of a list or an iterator, of a tuple
/// when something besides its container and the caller holds it (a constant of the app's
/// code).
fn with_header_pair<'py, R>(
    item: &Bound<'py, PyAny>,
    f: impl FnOnce(&Bound<'py, PyAny>, &Bound<'py, PyAny>, bool) -> PyResult<R>,
) -> PyResult<R> {
    let not_pair = || {
        PyTypeError::new_err(format!(
            "WSGI response header {} is not a (name, value) pair.",
            item.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    };
    if let Ok(t) = item.cast_exact::<PyTuple>() {
        if t.len() != 2 {
            return Err(not_pair());
        }
        // A tuple cannot change: its items live as long as it does.
        let (name, value) = (t.get_borrowed_item(0)?, t.get_borrowed_item(1)?);
        // SAFETY: a live object.
        let lasting = unsafe { pyo3::ffi::Py_REFCNT(t.as_ptr()) } > 2;
        return f(&name, &value, lasting);
    }
    if let Ok(l) = item.cast_exact::<PyList>() {
        return if l.len() == 2 {
            f(&l.get_item(0)?, &l.get_item(1)?, true)
        } else {
            Err(not_pair())
        };
    }
    if item.is_instance_of::<PyString>() || item.is_instance_of::<PyBytes>() {
        return Err(not_pair());
    }
    let mut it = item.try_iter().map_err(|_| not_pair())?;
    let (Some(name), Some(value), None) = (it.next(), it.next(), it.next()) else {
        return Err(not_pair());
    };
    f(&name?, &value?, true)
}

/// Converts `status` and `headers` from a WSGI app into a head, checking types. The status
/// and every name and value are copied into the one buffer the head is made of, `room`'s.
/// `headers` may be any iterable of pairs (a list of tuples is the fast path). Strings
/// `checked` has seen pass without a second look.
pub fn head_from_py(
    status: &Bound<'_, PyAny>,
    headers: &Bound<'_, PyAny>,
    room: HeadRoom,
    mut checked: Option<&mut Checked>,
) -> PyResult<ResponseHead> {
    let HeadRoom {
        mut text,
        fields: mut ranges,
    } = room;
    let status_at = push_checked(
        &mut text,
        status,
        "response status",
        AS_STATUS,
        false,
        &mut checked,
        |status| {
            stogie_http::message::status_code(status)
                .map(|_| ())
                .map_err(|e| {
                    PyValueError::new_err(format!(
                        "WSGI response status {:?}: {e}",
                        String::from_utf8_lossy(status)
                    ))
                })
        },
    )?;
    let mut push = |item: &Bound<'_, PyAny>| -> PyResult<()> {
        with_header_pair(item, |name, value, lasting| {
            let name = push_checked(
                &mut text,
                name,
                "response header key",
                AS_NAME,
                lasting,
                &mut checked,
                |name| {
                    if stogie_http::message::is_token(name) {
                        Ok(())
                    } else {
                        Err(PyValueError::new_err(format!(
                            "WSGI response header name {:?} is not a valid token.",
                            String::from_utf8_lossy(name)
                        )))
                    }
                },
            )?;
            let value = push_checked(
                &mut text,
                value,
                "response header value",
                AS_VALUE,
                lasting,
                &mut checked,
                |_| Ok(()),
            )?;
            ranges.push((name, value));
            Ok(())
        })
    };
    if let Ok(list) = headers.cast_exact::<PyList>() {
        for item in list.iter() {
            push(&item)?;
        }
    } else {
        if headers.is_instance_of::<PyString>() || headers.is_instance_of::<PyBytes>() {
            return Err(PyTypeError::new_err(
                "WSGI response headers must be an iterable of (name, value) pairs, not a string.",
            ));
        }
        let items = headers.try_iter().map_err(|_| {
            PyTypeError::new_err(format!(
                "WSGI response headers must be an iterable of (name, value) pairs, not {}.",
                headers
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        for item in items {
            push(&item?)?;
        }
    }
    Ok(ResponseHead::from_text(text, status_at, ranges))
}

/// The `start_response` callable given to a WSGI app; its `write` is PEP 3333's `write()`.
#[pyclass(module = "stogie._native")]
pub struct StartResponse {
    /// The response in progress.
    pub responder: Responder,
    started: bool,
    /// The worker's strings checked before (lent for the request).
    pub checked: Option<Box<Checked>>,
    /// The bound `write` that `__call__` returns, made at its first call and kept with the
    /// object when it is reused: a bound method made and freed per request cost the worker
    /// about 600 instructions (callgrind). It refers to this object, so the handler takes
    /// it out at the request's end (no cycle outlives a request).
    pub write: Option<Py<PyAny>>,
}

impl StartResponse {
    /// PEP 3333: no body before start_response().
    pub fn ensure_started(&self) -> PyResult<()> {
        if self.started {
            Ok(())
        } else {
            Err(PyRuntimeError::new_err(
                "The WSGI application returned a body before calling start_response().",
            ))
        }
    }

    /// A start_response for one request.
    pub fn new(sender: ResponseSender, room: HeadRoom, checked: Option<Box<Checked>>) -> Self {
        StartResponse {
            responder: Responder::new(sender, room),
            started: false,
            checked,
            write: None,
        }
    }
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__<'py>(
        slf: Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let mut me = slf.borrow_mut();
            if me.started && exc_info.is_none() {
                return Err(PyRuntimeError::new_err(
                    "WSGI start_response called a second time with no exc_info.",
                ));
            }
            if let Some(info) = exc_info {
                if me.responder.headers_sent {
                    // PEP 3333: re-raise the original exception once headers are out.
                    let exc = info.get_item(1)?;
                    return Err(PyErr::from_value(exc));
                }
            }
            let me = &mut *me;
            me.responder
                .set_head_from_py(status, headers, me.checked.as_deref_mut())?;
            me.started = true;
            if let Some(write) = &me.write {
                return Ok(write.bind(slf.py()).clone());
            }
        }
        let write = slf.getattr(intern!(slf.py(), "write"))?;
        slf.borrow_mut().write = Some(write.clone().unbind());
        Ok(write)
    }

    /// PEP 3333's `write(data)`: sends `data` at once (headers first).
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if !self.started {
            return Err(PyAssertionError::new_err(
                "write() called before start_response().",
            ));
        }
        let data = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("WSGI write() argument must be bytes."))?;
        self.responder
            .write(py, body_bytes(data), false)
            .map_err(|_| gone())
    }
}

/// `wsgi.file_wrapper`: iterates a file in blocks, or lets the server sendfile it.
#[pyclass(module = "stogie._native", subclass)]
pub struct FileWrapper {
    /// The wrapped file-like object.
    #[pyo3(get)]
    pub filelike: Py<PyAny>,
    /// Block size for iteration.
    #[pyo3(get)]
    pub blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1(intern!(py, "read"), (self.blksize,))?;
        Ok(if data.is_truthy()? { Some(data) } else { None })
    }

    /// Closes the wrapped file, if it can be closed.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        call_close(self.filelike.bind(py))
    }
}

/// Calls `obj.close()` if it has one (one attribute lookup).
pub fn call_close(obj: &Bound<'_, PyAny>) -> PyResult<()> {
    match obj.getattr_opt(intern!(obj.py(), "close"))? {
        Some(close) => close.call0().map(|_| ()),
        None => Ok(()),
    }
}

/// The open file behind a FileWrapper, when sendfile can serve it: a regular file with a
/// descriptor. Returns a duplicate descriptor and the current offset.
pub fn sendfile_source(py: Python<'_>, wrapper: &FileWrapper) -> Option<(std::fs::File, u64)> {
    use std::os::fd::FromRawFd;
    let f = wrapper.filelike.bind(py);
    let fd: i32 = f.call_method0(intern!(py, "fileno")).ok()?.extract().ok()?;
    let offset: u64 = f.call_method0(intern!(py, "tell")).ok()?.extract().ok()?;
    // SAFETY: dup returns a new descriptor we own, or -1.
    let dup = unsafe { libc::dup(fd) };
    if dup < 0 {
        return None;
    }
    // SAFETY: `dup` is a fresh descriptor owned by the File from here on.
    let file = unsafe { std::fs::File::from_raw_fd(dup) };
    let meta = file.metadata().ok()?;
    meta.is_file().then_some((file, offset))
}
