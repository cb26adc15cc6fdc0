//! The listeners a server binds, and their addresses as Python sees them.

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use stogie_http::{ListenOptions, Listener, LocalAddr};

/// The listeners bound for one address.
pub(super) struct ListenerGroup {
    /// One, shared; or one per worker slot (`None`: a slot closed in this process).
    pub(super) listeners: Vec<Option<Listener>>,
    /// Whether the listeners are an SO_REUSEPORT group, one per slot.
    pub(super) grouped: bool,
    /// An inherited socket (systemd's): its socket file is not ours to remove.
    pub(super) inherited: bool,
    pub(super) opts: ListenOptions,
}

pub(super) fn os_error(e: std::io::Error) -> PyErr {
    PyOSError::new_err((e.raw_os_error().unwrap_or(0), e.to_string()))
}

pub(super) fn local_to_py<'py>(py: Python<'py>, local: &LocalAddr) -> PyResult<Bound<'py, PyAny>> {
    Ok(match local {
        LocalAddr::Tcp(a) => PyTuple::new(
            py,
            [
                a.ip().to_string().into_pyobject(py)?.into_any(),
                a.port().into_pyobject(py)?.into_any(),
            ],
        )?
        .into_any(),
        LocalAddr::Unix(p) => p.to_string_lossy().into_pyobject(py)?.into_any(),
        LocalAddr::Abstract(name) => {
            let mut s = String::from("\0");
            s.push_str(&String::from_utf8_lossy(name));
            s.into_pyobject(py)?.into_any()
        }
    })
}
