//! The request object behind `stogie.server.HTTPRequest`, for Cheroot-style native
//! gateways whose `respond()` drives `self.req` instead of running a WSGI app.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use stogie_http::{PeerAddr, Request};

use crate::wsgi::environ::decode_path;
use crate::wsgi::input::Input;
use crate::wsgi::respond::{gone, Responder};

/// One request, as Cheroot's `HTTPRequest` shows it to a native gateway.
#[pyclass(module = "stogie._native")]
pub struct NativeRequest {
    /// Method, as sent.
    #[pyo3(get)]
    pub method: Py<PyBytes>,
    /// Request-target, as sent.
    #[pyo3(get)]
    pub uri: Py<PyBytes>,
    /// Path, percent-decoded (`%2F` kept).
    #[pyo3(get)]
    pub path: Py<PyBytes>,
    /// Query string, raw.
    #[pyo3(get)]
    pub qs: Py<PyBytes>,
    /// `b"HTTP/1.1"` or `b"HTTP/1.0"`.
    #[pyo3(get)]
    pub request_protocol: Py<PyBytes>,
    /// Header fields as (name, value) byte pairs, in order.
    #[pyo3(get)]
    pub headers: Py<PyList>,
    /// Client address, or None on UNIX sockets.
    #[pyo3(get)]
    pub remote_addr: Option<String>,
    /// Client port, or None on UNIX sockets.
    #[pyo3(get)]
    pub remote_port: Option<u16>,
    /// `(pid, uid, gid)` of a UNIX socket client when peer credentials are on (pid None
    /// when the kernel does not tell it), else None.
    #[pyo3(get)]
    pub peer_cred: Option<(Option<i32>, u32, u32)>,
    /// `http` or `https`.
    #[pyo3(get)]
    pub scheme: &'static str,
    /// The body, file-like.
    #[pyo3(get)]
    pub rfile: Py<Input>,
    /// The connection's SSL_* variables (a dict shared by its requests), or None.
    #[pyo3(get)]
    pub ssl_env: Option<Py<pyo3::types::PyDict>>,
    /// The response in progress.
    pub responder: Responder,
}

impl NativeRequest {
    /// Wraps an engine request.
    pub fn new(py: Python<'_>, request: Request) -> PyResult<Bound<'_, NativeRequest>> {
        let Request {
            head,
            peer,
            scheme,
            tls,
            forwarded,
            body,
            response,
            head_room,
            ..
        } = request;
        let headers = PyList::empty(py);
        for h in &head.headers {
            headers.append((PyBytes::new(py, &h.name), PyBytes::new(py, &h.value)))?;
        }
        let (mut remote_addr, mut remote_port, peer_cred) = match peer {
            PeerAddr::Tcp(a) => (Some(a.ip().to_string()), Some(a.port()), None),
            PeerAddr::Unix(c) => (None, None, c.map(|c| (c.pid, c.uid, c.gid))),
        };
        // What trusted proxies in front say of the client, as the WSGI environ has it.
        let mut scheme = scheme;
        if let Some(f) = &forwarded {
            if let Some((ip, port)) = f.client {
                remote_addr = Some(ip.to_canonical().to_string());
                remote_port = port;
            }
            scheme = f.scheme.unwrap_or(scheme);
        }
        Bound::new(
            py,
            NativeRequest {
                method: PyBytes::new(py, &head.method).unbind(),
                uri: PyBytes::new(py, &head.target).unbind(),
                path: PyBytes::new(py, &decode_path(&head.path)).unbind(),
                qs: PyBytes::new(py, &head.query).unbind(),
                request_protocol: PyBytes::new(py, head.version.as_str().as_bytes()).unbind(),
                headers: headers.unbind(),
                remote_addr,
                remote_port,
                peer_cred,
                scheme,
                rfile: Py::new(py, Input::new(body))?,
                ssl_env: match &tls {
                    Some(info) => Some(crate::tls::environ(py, info)?.unbind()),
                    None => None,
                },
                responder: Responder::new(response, head_room),
            },
        )
    }
}

#[pymethods]
impl NativeRequest {
    /// Sets the status (`str`) and headers (list of `(str, str)`).
    fn set_head(&mut self, status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.responder.headers_sent {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "headers were already sent",
            ));
        }
        self.responder.set_head_from_py(status, headers, None)
    }

    /// Whether the head went out.
    #[getter]
    fn sent_headers(&self) -> bool {
        self.responder.headers_sent
    }

    /// Sends the head now, with no body bytes yet.
    fn send_headers(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.responder.headers_sent {
            return Ok(());
        }
        self.responder.force_head(py).map_err(|_| gone())
    }

    /// Sends body bytes (the head first if it has not gone out).
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<()> {
        if !self.responder.headers_sent {
            self.responder.force_head(py).map_err(|_| gone())?;
        }
        self.responder
            .write(py, crate::wsgi::respond::body_bytes(data), false)
            .map_err(|_| gone())
    }
}
