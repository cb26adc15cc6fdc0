//! TLS for the Python side: building the engine's TLS configuration from what the adapters
//! in `stogie.ssl` gathered (PEM text, CA certificates, the SSLContext's settings), and the
//! per-connection SSL_* variables as a Python dict, made once per connection.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::any::Any;
use std::sync::OnceLock;

use pyo3::types::{PyDict, PyString};
use stogie_http::transport::tls::{MAKE_V3_CERTIFICATE, PLAIN_HTTP_ON_TLS_PORT};
use stogie_http::{ClientAuth, Identity, TlsError, TlsInfo, TlsVersion};

pyo3::create_exception!(
    _native,
    TLSError,
    PyValueError,
    "A certificate, key or TLS setting that cannot be served; the message names it."
);

/// A TLS configuration error as the TLSError Python sees.
pub fn err(e: TlsError) -> PyErr {
    TLSError::new_err(e.to_string())
}

/// The server's certificate chain and key from PEM text (with the names errors give).
pub fn identity(
    cert: &[u8],
    cert_name: &str,
    key: &[u8],
    key_name: &str,
    chain: Option<(&[u8], &str)>,
) -> PyResult<Identity> {
    let identity = Identity::from_pem(cert, cert_name, key, key_name).map_err(err)?;
    match chain {
        Some((bundle, name)) => identity.with_chain(bundle, name).map_err(err),
        None => Ok(identity),
    }
}

/// A protocol version by its name (`TLSv1.2`, `TLSv1.3`); `setting` names it in the error.
pub fn version(setting: &str, v: &str) -> PyResult<TlsVersion> {
    match v {
        "TLSv1.2" => Ok(TlsVersion::Tls12),
        "TLSv1.3" => Ok(TlsVersion::Tls13),
        _ => Err(TLSError::new_err(format!(
            "{setting} {v}: stogie speaks TLSv1.2 and TLSv1.3 only"
        ))),
    }
}

/// Client verification `mode` ("none", "optional" or "required") against the CA
/// certificates `cas` (DER).
pub fn client_auth(mode: &str, cas: Vec<Vec<u8>>) -> PyResult<ClientAuth> {
    let cas = cas.into_iter().map(Into::into).collect();
    match mode {
        "none" => Ok(ClientAuth::None),
        "optional" => Ok(ClientAuth::Optional(cas)),
        "required" => Ok(ClientAuth::Required(cas)),
        other => Err(TLSError::new_err(format!(
            "client verification {other:?}: use 'none', 'optional' or 'required'"
        ))),
    }
}

/// A dict of `vars`. Keys are interned, shared by all dicts, and so are the values marked
/// common (`on`, `TLSv1.3`, a cipher's name: a dict is kept for each connection's life, and
/// its own copies of those were half of its memory).
fn vars_dict<'py, 'a>(
    py: Python<'py>,
    vars: impl Iterator<Item = (&'a str, &'a str, bool)>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v, common) in vars {
        let v = if common {
            PyString::intern(py, v)
        } else {
            PyString::new(py, v)
        };
        dict.set_item(PyString::intern(py, k), v)?;
    }
    Ok(dict)
}

/// The server certificate's SSL_* variables, made once and shared by every connection (its
/// PEM alone is a kilobyte). Another worker may make them meanwhile: either will do.
fn server_vars<'py>(py: Python<'py>, info: &TlsInfo) -> PyResult<Bound<'py, PyDict>> {
    let server = info.server();
    cached(py, server.gateway_slot(), || {
        server.environ().map(|(k, v)| (k, v, false))
    })
}

/// The connection's own, made at its first request.
fn connection_vars<'py>(py: Python<'py>, info: &TlsInfo) -> PyResult<Bound<'py, PyDict>> {
    cached(py, info.gateway_slot(), || info.connection_environ_common())
}

/// The dict of `vars` kept in `slot`, made by the first caller.
fn cached<'py, 'a, I: Iterator<Item = (&'a str, &'a str, bool)>>(
    py: Python<'py>,
    slot: &OnceLock<Box<dyn Any + Send + Sync>>,
    vars: impl FnOnce() -> I,
) -> PyResult<Bound<'py, PyDict>> {
    if let Some(dict) = slot.get().and_then(|b| b.downcast_ref::<Py<PyDict>>()) {
        return Ok(dict.bind(py).clone());
    }
    let dict = vars_dict(py, vars())?;
    let _ = slot.set(Box::new(dict.clone().unbind()));
    Ok(dict)
}

/// Puts the connection's SSL_* variables (and `HTTPS`) into an environ.
pub fn update_environ(py: Python<'_>, env: &Bound<'_, PyDict>, info: &TlsInfo) -> PyResult<()> {
    env.update(server_vars(py, info)?.as_mapping())?;
    env.update(connection_vars(py, info)?.as_mapping())
}

/// The SSL_* variables as a new dict (Cheroot's `req.conn.ssl_env`, for native gateways).
pub fn environ<'py>(py: Python<'py>, info: &TlsInfo) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    update_environ(py, &dict, info)?;
    Ok(dict)
}

/// A worker's environ template for requests over TLS: the server's template with the server
/// certificate's SSL_* variables in, and room in its table for a connection's own.
///
/// Merging some thirty variables into every request's environ cost 6,000 instructions, a
/// resize of its table among them. A copy of this and the connection's ten variables cost
/// a fifth of that. (A template per connection, with its variables in too, would cost less
/// per request, but a kilobyte and a half per open connection.)
#[derive(Default)]
pub struct TlsTemplate(Option<(Py<PyDict>, Py<PyDict>, Py<PyDict>)>);

impl TlsTemplate {
    /// A new environ for a request on the connection of `info`, from the server's
    /// `template`.
    pub fn environ<'py>(
        &mut self,
        py: Python<'py>,
        template: &Bound<'py, PyDict>,
        info: &TlsInfo,
    ) -> PyResult<Bound<'py, PyDict>> {
        let server = server_vars(py, info)?;
        let conn = connection_vars(py, info)?;
        let merged = match &self.0 {
            Some((t, s, merged)) if t.is(template) && s.is(&server) => merged.bind(py).clone(),
            _ => {
                // Made for the template and the server certificate of this request (they
                // change with a setting or a certificate reload), held by this worker: their
                // identities cannot pass to other dicts while it holds them.
                let merged = template.copy()?;
                merged.update(server.as_mapping())?;
                // Room: a dict's table does not shrink when keys are deleted, and a copy of
                // a dict keeps its table. (Placeholders left in would show another
                // connection's keys in this one's environ: a client certificate's, say.)
                for key in conn.keys() {
                    if !merged.contains(&key)? {
                        merged.set_item(&key, py.None())?;
                        merged.del_item(&key)?;
                    }
                }
                let made = (template.clone().unbind(), server.clone().unbind());
                self.0 = Some((made.0, made.1, merged.clone().unbind()));
                merged
            }
        };
        let env = merged.copy()?;
        env.update(conn.as_mapping())?;
        Ok(env)
    }
}

/// Registers the exception and constants in the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("TLSError", m.py().get_type::<TLSError>())?;
    m.add("TLS_LIBRARY", stogie_http::tls_env::LIBRARY)?;
    m.add("PLAIN_HTTP_ON_TLS_PORT", PLAIN_HTTP_ON_TLS_PORT)?;
    m.add("MAKE_V3_CERTIFICATE", MAKE_V3_CERTIFICATE)?;
    Ok(())
}
