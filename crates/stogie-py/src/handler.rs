//! What a worker thread does with one request: run the WSGI app (or a native Cheroot-style
//! gateway), send what it returns, always call `close()`, and turn failures into 500s.

use std::sync::RwLock;

use bytes::{Bytes, BytesMut};
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PySequence, PyString, PyTuple};
use stogie_http::{PeerAddr, Request, ResponseEvent};

use crate::native::NativeRequest;
use crate::pool::Handler;
use crate::wsgi::environ::{self, EnvironParts, KeyCache};
use crate::wsgi::input::Input;
use crate::wsgi::respond::{
    body_bytes, call_close, sendfile_source, FileWrapper, Responder, StartResponse,
};

/// How requests reach Python.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// WSGI 1.0 (`Gateway_10`).
    Wsgi,
    /// WSGI u.0 (`Gateway_u0`): PATH_INFO and QUERY_STRING decoded as UTF-8.
    WsgiU0,
    /// A Cheroot native gateway: the callable receives a `NativeRequest`.
    Native,
}

/// The application side shared by all workers; live settings can be swapped.
pub struct AppHandler {
    /// The WSGI app, or the native dispatcher.
    pub app: RwLock<Py<PyAny>>,
    /// The environ template.
    pub template: RwLock<Py<PyDict>>,
    /// The gateway mode.
    pub mode: RwLock<Mode>,
    /// `on_error(message, exception)`: logs an application failure (with the exception's
    /// traceback; `None` when there is no traceback worth showing).
    pub on_error: Py<PyAny>,
    /// Show UNIX socket clients' credentials to the app (live: Cheroot reads the setting
    /// per request).
    pub peercreds: std::sync::atomic::AtomicBool,
    /// Resolve peer credentials to names.
    pub resolve_peer: std::sync::atomic::AtomicBool,
    /// The TCP port of the first listener (0: not TCP), which the template's SERVER_PORT
    /// says: a request that came in on another listener gets its own.
    pub main_port: std::sync::atomic::AtomicU32,
}

fn read<T: Copy>(l: &RwLock<T>) -> T {
    *l.read().unwrap_or_else(|e| e.into_inner())
}

fn read_py<T>(py: Python<'_>, l: &RwLock<Py<T>>) -> Py<T> {
    l.read().unwrap_or_else(|e| e.into_inner()).clone_ref(py)
}

impl Handler for std::sync::Arc<AppHandler> {
    type Local = KeyCache;

    fn handle(&self, py: Python<'_>, cache: &mut KeyCache, request: Request) {
        if request.head.version == stogie_http::Version::Http2 && request.response.is_closed() {
            // An HTTP/2 stream the client reset while its request waited: never handed to
            // the app (a client resetting streams as fast as it opens them would otherwise
            // make every app call run, for nobody).
            return;
        }
        match read(&self.mode) {
            Mode::Native => self.native(py, request),
            mode => self.wsgi(py, cache, request, mode == Mode::WsgiU0),
        }
    }
}

impl AppHandler {
    fn report(&self, py: Python<'_>, msg: &str, err: PyErr) {
        if let Err(e) = self.on_error.call1(py, (msg, err.into_value(py))) {
            e.print(py);
        }
    }

    /// Ends a failed request: its body error (400/413) if that caused it, else a 500 with
    /// the traceback logged; once output went out, the connection just closes.
    ///
    /// `KeyboardInterrupt` and `SystemExit` from the app are no application errors but a
    /// request to stop the server, as in Cheroot: the connection closes without an answer
    /// (Cheroot's worker thread ends with it; CherryPy's tests expect no status line) and
    /// `on_error` gets the exception with the client's address, to set the server's
    /// `interrupt` (which stops it and makes `serve()` raise it).
    fn fail(
        &self,
        py: Python<'_>,
        responder: &mut Responder,
        input: Option<&Bound<'_, Input>>,
        err: PyErr,
        peer: &PeerAddr,
    ) {
        if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
            responder.abort(py, ResponseEvent::Drop);
            let msg =
                format!("Got a server shutdown request while handling a connection from {peer}");
            return self.report(py, &msg, err);
        }
        let body_error = input.and_then(|i| i.borrow().error().cloned());
        if responder.finished {
            // The client went away; nothing to answer and nothing worth a traceback.
            return;
        }
        match body_error {
            Some(e) if !responder.headers_sent => {
                responder.abort(py, ResponseEvent::Refuse(e.as_http()));
            }
            _ => {
                self.report(py, "Error in the application while serving a request", err);
                responder.abort(py, ResponseEvent::Abort);
            }
        }
    }

    fn wsgi(&self, py: Python<'_>, cache: &mut KeyCache, request: Request, u0: bool) {
        let Request {
            head,
            peer,
            local,
            scheme,
            can_sendfile,
            tls,
            forwarded,
            body,
            response,
            head_room,
            ..
        } = request;
        let checked = Some(cache.checked.take().unwrap_or_default());
        // The last request's objects, if they were kept (see the end of this function).
        let sr = match cache.spare_sr.take().map(|sr| sr.into_bound(py)) {
            Some(sr) => {
                let mut fresh = StartResponse::new(response, head_room, checked);
                fresh.write = cache.spare_write.take();
                *sr.borrow_mut() = fresh;
                sr
            }
            None => match Bound::new(py, StartResponse::new(response, head_room, checked)) {
                Ok(s) => s,
                // The response sender went with the failed object: the connection, seeing
                // the response dropped unfinished, answers 500.
                Err(e) => return self.report(py, "Error preparing a request", e),
            },
        };
        let mut used_input = None;
        // The worker's checked strings are lent to the request's start_response.
        'run: {
            let template = read_py(py, &self.template);
            let parts = EnvironParts {
                head: &head,
                peer: &peer,
                scheme,
                u0,
                peercreds: self.peercreds.load(std::sync::atomic::Ordering::Relaxed),
                resolve_peer: self.resolve_peer.load(std::sync::atomic::Ordering::Relaxed),
                tls: tls.as_deref(),
                local_port: match &local {
                    stogie_http::LocalAddr::Tcp(a) => a.port(),
                    _ => 0,
                },
                main_port: self.main_port.load(std::sync::atomic::Ordering::Relaxed) as u16,
                forwarded: forwarded.as_deref(),
            };
            let env = match environ::build(py, template.bind(py), cache, &parts) {
                Ok(env) => env,
                Err(e) => {
                    self.fail(py, &mut sr.borrow_mut().responder, None, e, &peer);
                    break 'run;
                }
            };
            let input = match cache.spare_input.take().map(|i| i.into_bound(py)) {
                Some(input) => {
                    *input.borrow_mut() = Input::new(body);
                    input
                }
                None => match Bound::new(py, Input::new(body)) {
                    Ok(i) => i,
                    Err(e) => {
                        self.fail(py, &mut sr.borrow_mut().responder, None, e, &peer);
                        break 'run;
                    }
                },
            };
            used_input = Some(input.clone());
            if let Err(e) = env.set_item(intern!(py, "wsgi.input"), &input) {
                self.fail(py, &mut sr.borrow_mut().responder, None, e, &peer);
                break 'run;
            }
            let app = read_py(py, &self.app);
            let result = match app.bind(py).call1((env, &sr)) {
                Ok(r) => r,
                Err(e) => {
                    self.fail(py, &mut sr.borrow_mut().responder, Some(&input), e, &peer);
                    break 'run;
                }
            };
            let sent = send_result(py, &sr, &result, can_sendfile);
            // PEP 3333: close() is called however the iteration ended. Plain lists and tuples
            // have none (looking it up raises and clears an AttributeError each time).
            let closed = if result.is_exact_instance_of::<PyList>()
                || result.is_exact_instance_of::<PyTuple>()
            {
                Ok(())
            } else {
                call_close(&result)
            };
            let mut me = sr.borrow_mut();
            match sent {
                Err(Unsent::NotBytes(what)) => self.fail_result(py, &mut me.responder, &app, &what),
                Err(Unsent::Raised(e)) => self.fail(py, &mut me.responder, Some(&input), e, &peer),
                Ok(()) => match closed {
                    Ok(()) => {
                        let _ = me.responder.finish(py);
                    }
                    Err(e) => self.fail(py, &mut me.responder, Some(&input), e, &peer),
                },
            }
        }
        let mut write = None;
        if let Ok(mut me) = sr.try_borrow_mut() {
            cache.checked = me.checked.take();
            write = me.write.take().map(|w| w.into_bound(py));
        }
        // What nobody else holds now is kept for the next request (saving the making and
        // freeing of a Python object each), emptied now: the connection waits for the
        // response and the body to be let go. An app that kept its `start_response` or
        // `wsgi.input` keeps them as they were; the next request gets new ones.
        // Its bound `write`, when made, holds it once more; the two are kept together.
        let holders = 1 + isize::from(write.is_some());
        if sr.get_refcnt() == holders && write.as_ref().is_none_or(|w| w.get_refcnt() == 1) {
            sr.borrow_mut().responder.release();
            cache.spare_sr = Some(sr.unbind());
            cache.spare_write = write.map(Bound::unbind);
        }
        if let Some(input) = used_input.filter(|i| i.get_refcnt() == 1) {
            input.borrow_mut().release();
            cache.spare_input = Some(input.unbind());
        }
    }

    /// Ends a request whose app gave something other than an iterable of bytes: a 500, and
    /// one line naming the app and what it gave. A traceback would point into stogie only:
    /// the app raised nothing.
    fn fail_result(&self, py: Python<'_>, responder: &mut Responder, app: &Py<PyAny>, what: &str) {
        if responder.finished {
            return; // the client went away
        }
        let msg = format!(
            "the WSGI application {} {what}; it must return an iterable of bytes",
            describe_app(app.bind(py))
        );
        if let Err(e) = self.on_error.call1(py, (msg, py.None())) {
            e.print(py);
        }
        responder.abort(py, ResponseEvent::Abort);
    }

    fn native(&self, py: Python<'_>, request: Request) {
        let peer = request.peer.clone();
        let app = read_py(py, &self.app);
        let req = match NativeRequest::new(py, request) {
            Ok(r) => r,
            Err(e) => return self.report(py, "Error preparing a native request", e),
        };
        let outcome = app.bind(py).call1((&req,));
        let mut me = req.borrow_mut();
        match outcome {
            Ok(_) => {
                let _ = me.responder.finish(py);
            }
            Err(e) => {
                let input = me.rfile.bind(py).clone();
                self.fail(py, &mut me.responder, Some(&input), e, &peer)
            }
        }
    }
}

/// Why a result was not sent whole.
enum Unsent {
    /// The app (its iterator, or a write) raised.
    Raised(PyErr),
    /// What the app gave is not a WSGI body: what it was, said of the app ("returned a
    /// str").
    NotBytes(String),
}

impl From<PyErr> for Unsent {
    fn from(e: PyErr) -> Self {
        Unsent::Raised(e)
    }
}

/// `a str`, `an int`, `None`: a value's type as a sentence says it.
fn a_type(value: &Bound<'_, PyAny>) -> String {
    if value.is_none() {
        return "None".to_string();
    }
    let name = value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

/// Where an app comes from: `module.qualname` of a function or class, or the class of an
/// instance.
fn describe_app(app: &Bound<'_, PyAny>) -> String {
    fn dotted(obj: &Bound<'_, PyAny>) -> Option<String> {
        let module: String = obj.getattr("__module__").ok()?.extract().ok()?;
        let qualname: String = obj.getattr("__qualname__").ok()?.extract().ok()?;
        Some(format!("{module}.{qualname}"))
    }
    dotted(app)
        .or_else(|| {
            dotted(app.get_type().as_any()).map(|class| format!("(an instance of {class})"))
        })
        .unwrap_or_else(|| app.to_string())
}

fn chunk<'a, 'py>(
    item: &'a Bound<'py, PyAny>,
    gave: impl FnOnce() -> String,
) -> Result<&'a Bound<'py, PyBytes>, Unsent> {
    item.cast::<PyBytes>()
        .map_err(|_| Unsent::NotBytes(format!("{} {}", gave(), a_type(item))))
}

/// The body of a list or tuple result as one buffer: a single chunk as it is (lent when
/// large), several copied once into one.
fn join_chunks(items: &Bound<'_, PySequence>) -> Result<Bytes, Unsent> {
    let holding = || format!("returned {} holding", a_type(items.as_any()));
    if items.len()? == 1 {
        return Ok(body_bytes(chunk(&items.get_item(0)?, holding)?));
    }
    let mut chunks = Vec::with_capacity(items.len()?);
    let mut total = 0;
    for item in items.try_iter()? {
        let item = item?;
        total += chunk(&item, holding)?.as_bytes().len();
        chunks.push(item);
    }
    // Sized once: growing by doubling copied a large body several times.
    let mut body = BytesMut::with_capacity(total);
    for item in &chunks {
        body.extend_from_slice(chunk(item, holding)?.as_bytes());
    }
    Ok(body.freeze())
}

/// Sends the app's result: lists and tuples in one event, a FileWrapper with sendfile,
/// anything else chunk by chunk.
fn send_result(
    py: Python<'_>,
    sr: &Bound<'_, StartResponse>,
    result: &Bound<'_, PyAny>,
    can_sendfile: bool,
) -> Result<(), Unsent> {
    // Iterable, but not of bytes (a str's items are str, bytes' are int): the mistake is the
    // result itself, not what iterating it gives.
    if result.is_instance_of::<PyString>() || result.is_instance_of::<PyBytes>() {
        return Err(Unsent::NotBytes(format!("returned {}", a_type(result))));
    }
    let items = if let Ok(list) = result.cast_exact::<PyList>() {
        Some(list.as_sequence().clone())
    } else if let Ok(t) = result.cast_exact::<PyTuple>() {
        Some(t.as_sequence().clone())
    } else {
        None
    };
    if let Some(items) = items {
        let body = join_chunks(&items)?;
        let mut me = sr.borrow_mut();
        me.ensure_started()?;
        let overrun = me
            .responder
            .body_left()
            .is_some_and(|n| body.len() as u64 > n);
        if !overrun || items.len()? < 2 {
            let _ = me.responder.write(py, body, true);
            return Ok(());
        }
        // More bytes than the app's Content-Length: chunk by chunk, as an iterator would
        // go, so that only a first chunk over the length costs the client its 200.
        drop(me);
    }
    if can_sendfile {
        if let Ok(fw) = result.cast::<FileWrapper>() {
            if let Some((file, offset)) = sendfile_source(py, &fw.borrow()) {
                let mut me = sr.borrow_mut();
                me.ensure_started()?;
                let _ = me.responder.send_file(py, file, offset);
                return Ok(());
            }
        }
    }
    let iterator = match result.try_iter() {
        Ok(iterator) => iterator,
        Err(e) => {
            let kind = result.get_type();
            if kind.hasattr(intern!(py, "__iter__"))? || kind.hasattr(intern!(py, "__getitem__"))? {
                return Err(Unsent::Raised(e)); // its own __iter__ raised: its traceback says where
            }
            return Err(Unsent::NotBytes(format!("returned {}", a_type(result))));
        }
    };
    for item in iterator {
        let item = item?;
        let data = body_bytes(chunk(&item, || {
            format!("returned {} that yielded", a_type(result))
        })?);
        if data.is_empty() {
            continue;
        }
        let mut me = sr.borrow_mut();
        me.ensure_started()?;
        if me.responder.write(py, data, false).is_err() {
            // The client left: stop iterating; close() still runs.
            return Ok(());
        }
    }
    Ok(())
}
