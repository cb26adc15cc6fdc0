//! TLS for the Python side: building the engine's TLS configuration from what the adapters
//! in `stogie.ssl` gathered (PEM text, CA certificates, the SSLContext's settings), and the
//! per-connection SSL_* variables as a Python dict, made once per connection.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::sync::Mutex;

use pyo3::types::{PyDict, PyString};
use stogie_http::transport::tls::{MAKE_V3_CERTIFICATE, PLAIN_HTTP_ON_TLS_PORT};
use stogie_http::{ClientAuth, Identity, TlsAcceptor, TlsConfig, TlsError, TlsInfo, TlsVersion};

pyo3::create_exception!(
    _native,
    TLSError,
    PyValueError,
    "A certificate, key or TLS setting that cannot be served; the message names it."
);

fn err(e: TlsError) -> PyErr {
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

fn version(setting: &str, v: &str) -> PyResult<TlsVersion> {
    match v {
        "TLSv1.2" => Ok(TlsVersion::Tls12),
        "TLSv1.3" => Ok(TlsVersion::Tls13),
        _ => Err(TLSError::new_err(format!(
            "{setting} {v}: stogie speaks TLSv1.2 and TLSv1.3 only"
        ))),
    }
}

/// Everything [`crate::server::NativeServer::set_tls`] takes, checked and built.
#[allow(clippy::too_many_arguments)]
pub fn acceptor(
    identity: Identity,
    client_verify: &str,
    client_cas: Vec<Vec<u8>>,
    min_version: &str,
    max_version: &str,
    ciphers: Option<Vec<String>>,
    session_tickets: bool,
    prefer_server_ciphers: bool,
    interface: String,
    refusal_log_interval: std::time::Duration,
) -> PyResult<TlsAcceptor> {
    let cas = client_cas.into_iter().map(Into::into).collect();
    let client_auth = match client_verify {
        "none" => ClientAuth::None,
        "optional" => ClientAuth::Optional(cas),
        "required" => ClientAuth::Required(cas),
        other => {
            return Err(TLSError::new_err(format!(
                "client verification {other:?}: use 'none', 'optional' or 'required'"
            )))
        }
    };
    let mut config = TlsConfig::new(identity);
    config.client_auth = client_auth;
    config.min_version = version("minimum_version", min_version)?;
    config.max_version = version("maximum_version", max_version)?;
    config.cipher_suites = ciphers;
    config.session_tickets = session_tickets;
    config.prefer_server_ciphers = prefer_server_ciphers;
    config.interface = interface;
    config.refusal_log_interval = refusal_log_interval;
    TlsAcceptor::new(config).map_err(err)
}

/// A dict of `vars`, its keys interned (shared by all dicts).
fn vars_dict<'py, 'a>(
    py: Python<'py>,
    vars: impl Iterator<Item = (&'a str, &'a str)>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in vars {
        dict.set_item(PyString::intern(py, k), v)?;
    }
    Ok(dict)
}

/// What a connection keeps in its [`TlsInfo::gateway_slot`]: its SSL_* variables, and the
/// environ template its requests start from.
struct ConnectionEnviron {
    vars: Py<PyDict>,
    /// The server's environ template this was made from (held, so that its identity cannot
    /// pass to another dict), and that template with the server's and the connection's
    /// SSL_* variables merged in.
    template: Mutex<Option<(Py<PyDict>, Py<PyDict>)>>,
}

/// The server certificate's SSL_* variables, made once and shared by every connection (its
/// PEM alone is a kilobyte). Another worker may make them meanwhile: either will do.
fn server_vars<'py>(py: Python<'py>, info: &TlsInfo) -> PyResult<Bound<'py, PyDict>> {
    let slot = info.server().gateway_slot();
    if let Some(dict) = slot.get().and_then(|b| b.downcast_ref::<Py<PyDict>>()) {
        return Ok(dict.bind(py).clone());
    }
    let dict = vars_dict(py, info.server().environ())?;
    let _ = slot.set(Box::new(dict.clone().unbind()));
    Ok(dict)
}

/// The connection's own, made at its first request.
fn connection<'a>(py: Python<'_>, info: &'a TlsInfo) -> PyResult<&'a ConnectionEnviron> {
    let slot = info.gateway_slot();
    if slot.get().is_none() {
        let made = ConnectionEnviron {
            vars: vars_dict(py, info.connection_environ())?.unbind(),
            template: Mutex::new(None),
        };
        let _ = slot.set(Box::new(made));
    }
    slot.get()
        .and_then(|b| b.downcast_ref::<ConnectionEnviron>())
        .ok_or_else(|| PyValueError::new_err("a TLS connection's slot holds something else"))
}

/// Puts the connection's SSL_* variables (and `HTTPS`) into an environ.
pub fn update_environ(py: Python<'_>, env: &Bound<'_, PyDict>, info: &TlsInfo) -> PyResult<()> {
    env.update(server_vars(py, info)?.as_mapping())?;
    env.update(connection(py, info)?.vars.bind(py).as_mapping())
}

/// The environ template of a request on this TLS connection: the server's `template` with
/// the SSL_* variables in, made at the connection's first request (and again if the server's
/// template changed). Merging some thirty variables into every request's environ cost more
/// than the rest of the environ (6,000 instructions, a table resize among them); a copy of
/// this costs a few hundred.
pub fn request_template<'py>(
    py: Python<'py>,
    template: &Bound<'py, PyDict>,
    info: &TlsInfo,
) -> PyResult<Bound<'py, PyDict>> {
    let conn = connection(py, info)?;
    let lock = || conn.template.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((from, merged)) = lock().as_ref() {
        if from.is(template) {
            return Ok(merged.bind(py).clone());
        }
    }
    let merged = template.copy()?;
    update_environ(py, &merged, info)?;
    *lock() = Some((template.clone().unbind(), merged.clone().unbind()));
    Ok(merged)
}

/// The SSL_* variables as a new dict (Cheroot's `req.conn.ssl_env`, for native gateways).
pub fn environ<'py>(py: Python<'py>, info: &TlsInfo) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    update_environ(py, &dict, info)?;
    Ok(dict)
}

/// Registers the exception and constants in the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("TLSError", m.py().get_type::<TLSError>())?;
    m.add("TLS_LIBRARY", stogie_http::tls_env::LIBRARY)?;
    m.add("PLAIN_HTTP_ON_TLS_PORT", PLAIN_HTTP_ON_TLS_PORT)?;
    m.add("MAKE_V3_CERTIFICATE", MAKE_V3_CERTIFICATE)?;
    Ok(())
}
