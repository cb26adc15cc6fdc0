//! The WSGI environ: a copy of a prebuilt template (constant keys made once), filled per
//! request with interned keys and cached `HTTP_*` names.

use std::collections::HashMap;

use bytes::Bytes;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use stogie_http::ops::proxy::Forwarded;
use stogie_http::{PeerAddr, RequestHead, TlsInfo};

use super::input::Input;
use super::respond::{Checked, StartResponse};

/// What a worker keeps between requests to build the next environ with fewer new objects:
/// `HTTP_*` key objects by header name spelling, the last requests' header fields by
/// position, client addresses and ports as strings; and the strings its apps gave
/// `start_response` (lent to each request's).
#[derive(Default)]
pub struct KeyCache {
    keys: HashMap<Bytes, Py<PyString>>,
    fields: Vec<Field>,
    addr: Option<(std::net::IpAddr, Py<PyString>)>,
    /// REMOTE_PORT strings, at `port % PORTS_KEPT`.
    ports: Vec<Option<(u16, Py<PyString>)>>,
    /// The last PATH_INFO.
    path: Option<(Vec<u8>, Py<PyString>)>,
    /// Lent to the request in progress.
    pub checked: Option<Box<Checked>>,
    /// The last request's `start_response` and `wsgi.input`, made anew only when something
    /// else still holds them (see `handler::reuse`).
    pub spare_sr: Option<Py<StartResponse>>,
    pub spare_input: Option<Py<Input>>,
    /// `spare_sr`'s bound `write`, which start_response returns.
    pub spare_write: Option<Py<PyAny>>,
    /// The template of environs over TLS, with the SSL_* variables in.
    tls_template: crate::tls::TlsTemplate,
}

const KEY_CACHE_LIMIT: usize = 512;

/// A header field of the last requests at one position: a client sends the same fields in
/// the same order request after request, most with the same values, so that the field's
/// key and its value's `str` are those of last time, found without hashing or decoding.
struct Field {
    name: Vec<u8>,
    key: Py<PyString>,
    /// The value, and `text`, its `str`; a value longer than [`VALUE_KEPT_MAX`] is kept as
    /// the empty one (whose `str` is the empty one too).
    value: Vec<u8>,
    text: Py<PyString>,
}

/// Header fields kept by position, and the longest value kept.
const FIELDS_KEPT: usize = 32;
const VALUE_KEPT_MAX: usize = 512;
/// REMOTE_PORT strings kept: one per connection on keep-alive, and a client's connections
/// mostly have consecutive ports.
const PORTS_KEPT: usize = 256;

impl KeyCache {
    /// REMOTE_ADDR: most requests come from the address the previous one came from.
    fn addr<'py>(&mut self, py: Python<'py>, ip: std::net::IpAddr) -> Bound<'py, PyString> {
        if let Some((last, s)) = &self.addr {
            if *last == ip {
                return s.bind(py).clone();
            }
        }
        let s = PyString::new(py, &ip.to_string());
        self.addr = Some((ip, s.clone().unbind()));
        s
    }

    /// REMOTE_PORT: the connection's, as it was for its last request.
    fn port<'py>(&mut self, py: Python<'py>, port: u16) -> Bound<'py, PyString> {
        if self.ports.is_empty() {
            self.ports.resize_with(PORTS_KEPT, || None);
        }
        let slot = &mut self.ports[port as usize % PORTS_KEPT];
        if let Some((p, s)) = slot {
            if *p == port {
                return s.bind(py).clone();
            }
        }
        let s = decimal(py, port);
        *slot = Some((port, s.clone().unbind()));
        s
    }

    /// PATH_INFO read as ISO-8859-1: the same path as the last request's is the same `str`.
    fn path<'py>(&mut self, py: Python<'py>, path: &[u8]) -> PyResult<Bound<'py, PyString>> {
        if let Some((last, s)) = &self.path {
            if last[..] == *path {
                return Ok(s.bind(py).clone());
            }
        }
        let s = latin1(py, path)?;
        if path.len() <= VALUE_KEPT_MAX {
            match &mut self.path {
                Some((last, text)) => {
                    last.clear();
                    last.extend_from_slice(path);
                    *text = s.clone().unbind();
                }
                None => self.path = Some((path.to_vec(), s.clone().unbind())),
            }
        }
        Ok(s)
    }

    /// The environ key and the value's `str` of the header field at position `i`.
    fn field<'py>(
        &mut self,
        py: Python<'py>,
        i: usize,
        name: &[u8],
        value: &[u8],
    ) -> PyResult<(Bound<'py, PyString>, Bound<'py, PyString>)> {
        if let Some(f) = self.fields.get_mut(i).filter(|f| f.name == name) {
            let key = f.key.bind(py).clone();
            if f.value == value {
                return Ok((key, f.text.bind(py).clone()));
            }
            let text = latin1(py, value)?;
            keep_value(py, f, value, &text);
            return Ok((key, text));
        }
        let key = self.key(py, name);
        let text = latin1(py, value)?;
        if i < FIELDS_KEPT {
            // Positions before `i` were just filled: `i` is at most the length.
            let mut f = Field {
                name: name.to_vec(),
                key: key.clone().unbind(),
                value: Vec::new(),
                text: intern!(py, "").clone().unbind(),
            };
            keep_value(py, &mut f, value, &text);
            match self.fields.get_mut(i) {
                Some(old) => *old = f,
                None => self.fields.push(f),
            }
        }
        Ok((key, text))
    }

    fn key<'py>(&mut self, py: Python<'py>, name: &[u8]) -> Bound<'py, PyString> {
        if name.eq_ignore_ascii_case(b"content-type") {
            return intern!(py, "CONTENT_TYPE").clone();
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            return intern!(py, "CONTENT_LENGTH").clone();
        }
        if let Some(k) = self.keys.get(name) {
            return k.bind(py).clone();
        }
        let mut s = String::with_capacity(5 + name.len());
        s.push_str("HTTP_");
        s.extend(name.iter().map(|&b| {
            if b == b'-' {
                '_'
            } else {
                b.to_ascii_uppercase() as char
            }
        }));
        let k = PyString::intern(py, &s);
        if self.keys.len() < KEY_CACHE_LIMIT {
            // A copy: a slice would hold the whole buffer the head came in.
            self.keys
                .insert(Bytes::copy_from_slice(name), k.clone().unbind());
        }
        k
    }
}

/// Keeps `value` and its `str` in `f` (a long one as the empty value).
fn keep_value(py: Python<'_>, f: &mut Field, value: &[u8], text: &Bound<'_, PyString>) {
    f.value.clear();
    if value.len() <= VALUE_KEPT_MAX {
        f.value.extend_from_slice(value);
        f.text = text.clone().unbind();
    } else {
        f.text = intern!(py, "").clone().unbind();
    }
}

/// A `str` from bytes read as ISO-8859-1, as PEP 3333 asks: CPython's own decoder, one pass
/// (ASCII, nearly always, is copied as it is).
pub fn latin1<'py>(py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyString>> {
    // SAFETY: a valid pointer and length; Latin-1 decoding cannot fail but for memory, which
    // the null result reports.
    unsafe {
        let s = pyo3::ffi::PyUnicode_DecodeLatin1(
            b.as_ptr().cast(),
            b.len() as pyo3::ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Ok(Bound::from_owned_ptr_or_err(py, s)?.cast_into_unchecked())
    }
}

/// A port number as a `str`, without a heap string on the way.
fn decimal(py: Python<'_>, n: u16) -> Bound<'_, PyString> {
    let mut digits = [0u8; 5];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    PyString::new(py, std::str::from_utf8(&digits[i..]).unwrap_or("0"))
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decodes a path, keeping `%2F` encoded so that an encoded slash never becomes a
/// path separator (as Cheroot does).
pub fn decode_path(path: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !path.contains(&b'%') {
        return path.into();
    }
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%' && i + 2 < path.len() {
            if let (Some(h), Some(l)) = (hex(path[i + 1]), hex(path[i + 2])) {
                let byte = h * 16 + l;
                if byte == b'/' {
                    out.extend_from_slice(b"%2F");
                } else {
                    out.push(byte);
                }
                i += 3;
                continue;
            }
        }
        out.push(path[i]);
        i += 1;
    }
    out.into()
}

/// What the environ needs besides the request head.
pub struct EnvironParts<'a> {
    /// The request head.
    pub head: &'a RequestHead,
    /// The client.
    pub peer: &'a PeerAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Gateway_u0: PATH_INFO and QUERY_STRING decoded as UTF-8.
    pub u0: bool,
    /// Put a UNIX socket client's credentials in (the server's `peercreds_enabled`).
    pub peercreds: bool,
    /// Resolve peer credentials to user and group names.
    pub resolve_peer: bool,
    /// The connection's TLS facts, when it is HTTPS.
    pub tls: Option<&'a TlsInfo>,
    /// The TCP port of the listener the request came in on (0: not TCP).
    pub local_port: u16,
    /// The port the template's SERVER_PORT gives (the first listener's).
    pub main_port: u16,
    /// What trusted proxies say of the client.
    pub forwarded: Option<&'a Forwarded>,
}

/// Keys [`build`] sets for every request.
const EVERY_REQUEST: [&str; 6] = [
    "REQUEST_METHOD",
    "PATH_INFO",
    "QUERY_STRING",
    "REQUEST_URI",
    "SERVER_PROTOCOL",
    "wsgi.input",
];

/// The template as the environ is copied from: with a placeholder for each key set for
/// every request, so that setting them replaces a value rather than adds a key. A copy of
/// a dict has the original's table; the 16 keys of the template left room for 5 more, and a
/// request's seventh new key made CPython rebuild the table (at hello: the worker's CPU 1.98
/// -> 1.87 us per request, +2% req/s). With the placeholders the table is built for 22 keys,
/// with room for 20 header fields more. REQUEST_METHOD, QUERY_STRING and SERVER_PROTOCOL
/// hold `GET`, `` and `HTTP/1.1`, which most requests leave as they are.
///
/// Every `str` key is the interned one, the very object [`build`]'s `intern!` keys are: a
/// lookup then finds its slot by identity. (The placeholders were made from `&str`, new
/// objects: every request's set_item compared their text, 130 instructions a key.)
pub fn with_room(template: &Bound<'_, PyDict>) -> PyResult<Py<PyDict>> {
    let py = template.py();
    let interned = PyDict::new(py);
    for (key, value) in template.iter() {
        match key.cast_exact::<PyString>().map(|s| s.to_str()) {
            Ok(Ok(s)) => interned.set_item(PyString::intern(py, s), value)?,
            _ => interned.set_item(key, value)?,
        }
    }
    let env = PyDict::new(py);
    for key in EVERY_REQUEST {
        env.set_item(PyString::intern(py, key), py.None())?;
    }
    // One merge, as the table is sized for (the keys one by one left no room).
    env.update(interned.as_mapping())?;
    // The likeliest values: [`build`] sets these keys only for a request that differs.
    env.set_item(intern!(py, "REQUEST_METHOD"), intern!(py, "GET"))?;
    env.set_item(intern!(py, "QUERY_STRING"), intern!(py, ""))?;
    env.set_item(intern!(py, "SERVER_PROTOCOL"), intern!(py, "HTTP/1.1"))?;
    Ok(env.unbind())
}

/// Builds the environ for one request from the template.
pub fn build<'py>(
    py: Python<'py>,
    template: &Bound<'py, PyDict>,
    cache: &mut KeyCache,
    parts: &EnvironParts<'_>,
) -> PyResult<Bound<'py, PyDict>> {
    let env = match parts.tls {
        Some(info) => cache.tls_template.environ(py, template, info)?,
        None => template.copy()?,
    };
    let head = parts.head;
    let method = match &head.method[..] {
        b"GET" => None, // the template's
        b"POST" => Some(intern!(py, "POST").clone()),
        b"HEAD" => Some(intern!(py, "HEAD").clone()),
        b"PUT" => Some(intern!(py, "PUT").clone()),
        b"DELETE" => Some(intern!(py, "DELETE").clone()),
        b"PATCH" => Some(intern!(py, "PATCH").clone()),
        b"OPTIONS" => Some(intern!(py, "OPTIONS").clone()),
        other => Some(latin1(py, other)?),
    };
    if let Some(method) = method {
        env.set_item(intern!(py, "REQUEST_METHOD"), method)?;
    }
    let path = decode_path(&head.path);
    let mut url_fallback = false;
    if parts.u0 {
        match (std::str::from_utf8(&path), std::str::from_utf8(&head.query)) {
            (Ok(p), Ok(q)) => {
                env.set_item(intern!(py, "PATH_INFO"), p)?;
                env.set_item(intern!(py, "QUERY_STRING"), q)?;
                env.set_item(intern!(py, "wsgi.url_encoding"), intern!(py, "utf-8"))?;
            }
            _ => url_fallback = true,
        }
    }
    let mut uri = None;
    if !parts.u0 || url_fallback {
        let path_info = cache.path(py, &path)?;
        if head.target == path[..] {
            // No query, nothing percent-encoded: the target is PATH_INFO's very text.
            uri = Some(path_info.clone());
        }
        env.set_item(intern!(py, "PATH_INFO"), path_info)?;
        if !head.query.is_empty() || url_fallback {
            env.set_item(intern!(py, "QUERY_STRING"), latin1(py, &head.query)?)?;
        }
        if url_fallback {
            env.set_item(intern!(py, "wsgi.url_encoding"), intern!(py, "ISO-8859-1"))?;
        }
    }
    let uri = match uri {
        Some(u) => u,
        None => latin1(py, &head.target)?,
    };
    env.set_item(intern!(py, "REQUEST_URI"), uri)?;
    let protocol = match head.version {
        stogie_http::Version::Http10 => Some(intern!(py, "HTTP/1.0")),
        stogie_http::Version::Http11 => None, // the template's
        stogie_http::Version::Http2 => Some(intern!(py, "HTTP/2.0")),
    };
    if let Some(protocol) = protocol {
        env.set_item(intern!(py, "SERVER_PROTOCOL"), protocol)?;
    }
    if parts.local_port != parts.main_port {
        // Another listener than the first: its own port (none for a UNIX socket).
        let port = if parts.local_port == 0 {
            intern!(py, "").clone()
        } else {
            decimal(py, parts.local_port)
        };
        env.set_item(intern!(py, "SERVER_PORT"), port)?;
    }
    if parts.scheme != "http" {
        env.set_item(intern!(py, "wsgi.url_scheme"), parts.scheme)?;
    }
    match parts.peer {
        // A trusted proxy's word on the client is written below instead: the peer's would
        // only be overwritten (and flip the one-entry address cache every request).
        PeerAddr::Tcp(_) if parts.forwarded.is_some_and(|f| f.client.is_some()) => {}
        PeerAddr::Tcp(addr) => {
            env.set_item(intern!(py, "REMOTE_ADDR"), cache.addr(py, addr.ip()))?;
            env.set_item(intern!(py, "REMOTE_PORT"), cache.port(py, addr.port()))?;
        }
        PeerAddr::Unix(cred) => {
            if let Some(c) = cred.filter(|_| parts.peercreds) {
                if let Some(pid) = c.pid {
                    env.set_item(intern!(py, "X_REMOTE_PID"), pid.to_string())?;
                }
                env.set_item(intern!(py, "X_REMOTE_UID"), c.uid.to_string())?;
                env.set_item(intern!(py, "X_REMOTE_GID"), c.gid.to_string())?;
                if parts.resolve_peer {
                    resolve_peer(py, &env, c.uid, c.gid)?;
                }
            }
        }
    }

    // Repeated fields are joined (RFC 9110 §5.3); Cookie with "; " (RFC 6265 §5.4). A field
    // seen before is told by its key (the same interned object for every spelling of a
    // name), without a dict lookup per field; past SEEN fields, by looking.
    const SEEN: usize = 16;
    let few = head.headers.len() <= SEEN;
    let mut seen = [std::ptr::null_mut(); SEEN];
    let mut n_seen = 0;
    for (i, h) in head.headers.iter().enumerate() {
        let name = &h.name;
        let (key, value) = cache.field(py, i, name, &h.value)?;
        // Looked up only when the field may have come before.
        let prev = if !few || seen[..n_seen].contains(&key.as_ptr()) {
            env.get_item(&key)?
        } else {
            seen[n_seen] = key.as_ptr();
            n_seen += 1;
            None
        };
        match prev {
            Some(prev) => {
                if name.eq_ignore_ascii_case(b"content-length") {
                    continue;
                }
                let sep = if name.eq_ignore_ascii_case(b"cookie") {
                    "; "
                } else {
                    ", "
                };
                let joined = format!(
                    "{}{}{}",
                    prev.cast::<PyString>()?.to_cow()?,
                    sep,
                    value.to_cow()?
                );
                env.set_item(key, joined)?;
            }
            None => env.set_item(key, value)?,
        }
    }
    if let Some(f) = parts.forwarded {
        forwarded(py, &env, cache, f)?;
    }
    Ok(env)
}

/// What trusted proxies say of the client replaces what the connection says: its address
/// (REMOTE_ADDR, and REMOTE_PORT when given), the scheme (wsgi.url_scheme), the host
/// (HTTP_HOST) and port (SERVER_PORT) it asked for. The proxy's own headers stay as sent.
fn forwarded(
    py: Python<'_>,
    env: &Bound<'_, PyDict>,
    cache: &mut KeyCache,
    f: &Forwarded,
) -> PyResult<()> {
    if let Some((ip, port)) = f.client {
        env.set_item(
            intern!(py, "REMOTE_ADDR"),
            cache.addr(py, ip.to_canonical()),
        )?;
        match port {
            Some(p) => env.set_item(intern!(py, "REMOTE_PORT"), decimal(py, p))?,
            None => env.set_item(intern!(py, "REMOTE_PORT"), intern!(py, ""))?,
        }
    }
    if let Some(scheme) = f.scheme {
        env.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;
    }
    if let Some(host) = &f.host {
        env.set_item(intern!(py, "HTTP_HOST"), latin1(py, host)?)?;
    }
    if let Some(port) = f.port {
        env.set_item(intern!(py, "SERVER_PORT"), decimal(py, port))?;
    }
    Ok(())
}

fn resolve_peer(py: Python<'_>, env: &Bound<'_, PyDict>, uid: u32, gid: u32) -> PyResult<()> {
    let pwd = py.import(intern!(py, "pwd"))?;
    let grp = py.import(intern!(py, "grp"))?;
    if let Ok(user) = pwd
        .call_method1(intern!(py, "getpwuid"), (uid,))
        .and_then(|p| p.getattr(intern!(py, "pw_name")))
    {
        env.set_item(intern!(py, "X_REMOTE_USER"), &user)?;
        env.set_item(intern!(py, "REMOTE_USER"), &user)?;
    }
    if let Ok(group) = grp
        .call_method1(intern!(py, "getgrgid"), (gid,))
        .and_then(|g| g.getattr(intern!(py, "gr_name")))
    {
        env.set_item(intern!(py, "X_REMOTE_GROUP"), group)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::decode_path;

    #[test]
    fn keeps_encoded_slash() {
        assert_eq!(&*decode_path(b"/a%20b%2Fc%2fd%zz%4"), b"/a b%2Fc%2Fd%zz%4");
    }
}
