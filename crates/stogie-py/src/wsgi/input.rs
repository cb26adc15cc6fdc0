//! `wsgi.input`: a file-like reader over the request body that never blocks past the body's
//! end and waits for the client with the GIL released.

use bytes::{Buf, Bytes, BytesMut};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use stogie_http::{BodyError, RequestBody};

pyo3::create_exception!(
    _native,
    RequestBodyError,
    PyOSError,
    "The request body could not be read: it is malformed, too large, too slow, or the client left."
);
pyo3::create_exception!(
    _native,
    MaxSizeExceeded,
    RequestBodyError,
    "The request body exceeds max_request_body_size."
);

/// The request body as a binary file-like object.
///
/// What was received and not yet read is `piece`, a piece of the body as the engine gave
/// it (read from without a copy: a body that came with its head is one piece), or, once a
/// read needs more than one piece, `joined`, the pieces copied one after the other.
#[pyclass(module = "stogie._native", name = "InputStream")]
pub struct Input {
    body: Option<RequestBody>,
    piece: Bytes,
    joined: BytesMut,
    eof: bool,
    error: Option<BodyError>,
}

impl Input {
    /// Wraps a request body.
    pub fn new(body: RequestBody) -> Self {
        Input {
            body: Some(body),
            piece: Bytes::new(),
            joined: BytesMut::new(),
            eof: false,
            error: None,
        }
    }

    /// Lets go of the body once the request is over, as dropping the object would (the
    /// connection discards what the app left unread once the body is dropped); the object
    /// is kept to serve the next request.
    pub fn release(&mut self) {
        *self = Input {
            body: None,
            piece: Bytes::new(),
            joined: BytesMut::new(),
            eof: true,
            error: None,
        };
    }

    /// The framing error met while reading, if any.
    pub fn error(&self) -> Option<&BodyError> {
        self.error.as_ref()
    }

    fn raise(err: &BodyError) -> PyErr {
        match err {
            BodyError::TooLarge => MaxSizeExceeded::new_err(err.to_string()),
            _ => RequestBodyError::new_err(err.to_string()),
        }
    }

    /// Reads one more piece into the buffer; false at the end of the body.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
        if let Some(err) = &self.error {
            return Err(Self::raise(err));
        }
        if self.eof {
            return Ok(false);
        }
        let Some(body) = self.body.as_mut() else {
            return Ok(false);
        };
        let next = if body.is_complete() {
            body.blocking_next()
        } else {
            crate::gil::detach(py, || body.blocking_next())
        };
        match next {
            Some(Ok(data)) => {
                if self.piece.is_empty() && self.joined.is_empty() {
                    self.piece = data;
                } else {
                    if !self.piece.is_empty() {
                        self.joined.extend_from_slice(&self.piece);
                        self.piece.clear();
                    }
                    self.joined.extend_from_slice(&data);
                }
                Ok(true)
            }
            None => {
                self.eof = true;
                Ok(false)
            }
            Some(Err(e)) => {
                let err = Self::raise(&e);
                self.error = Some(e);
                Err(err)
            }
        }
    }

    /// What was received and not yet read.
    fn buffered(&self) -> &[u8] {
        if self.piece.is_empty() {
            &self.joined
        } else {
            &self.piece
        }
    }

    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> Bound<'py, PyBytes> {
        if self.piece.is_empty() {
            let n = n.min(self.joined.len());
            let out = PyBytes::new(py, &self.joined[..n]);
            self.joined.advance(n);
            out
        } else {
            let n = n.min(self.piece.len());
            let out = PyBytes::new(py, &self.piece[..n]);
            self.piece.advance(n);
            out
        }
    }

    fn read_line<'py>(
        &mut self,
        py: Python<'py>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut scanned = 0;
        loop {
            let buf = self.buffered();
            if let Some(pos) = buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + pos + 1;
                return Ok(self.take(py, limit.map_or(end, |l| l.min(end))));
            }
            scanned = buf.len();
            if limit.is_some_and(|l| buf.len() >= l) {
                return Ok(self.take(py, limit.unwrap_or(0)));
            }
            if !self.fill(py)? {
                return Ok(self.take(py, usize::MAX));
            }
        }
    }
}

fn size_arg(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    /// Read at most `size` bytes; all that is left when `size` is negative or omitted.
    #[pyo3(signature = (size = -1))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        match size_arg(size) {
            Some(n) => {
                while self.buffered().len() < n && self.fill(py)? {}
                Ok(self.take(py, n))
            }
            None => {
                while self.fill(py)? {}
                Ok(self.take(py, usize::MAX))
            }
        }
    }

    /// Read one line, at most `size` bytes of it.
    #[pyo3(signature = (size = -1))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.read_line(py, size_arg(size))
    }

    /// Read lines until the end, or until about `hint` bytes were read.
    #[pyo3(signature = (hint = -1))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let hint = size_arg(hint).filter(|&h| h > 0);
        let mut total = 0;
        loop {
            let line = self.read_line(py, None)?;
            let n = line.as_bytes().len();
            if n == 0 {
                return Ok(out);
            }
            out.append(line)?;
            total += n;
            if hint.is_some_and(|h| total >= h) {
                return Ok(out);
            }
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.read_line(py, None)?;
        Ok(if line.as_bytes().is_empty() {
            None
        } else {
            Some(line)
        })
    }

    /// Always true: this stream can be read.
    fn readable(&self) -> bool {
        true
    }

    /// Does nothing: the server owns the connection.
    fn close(&self) {}
}
