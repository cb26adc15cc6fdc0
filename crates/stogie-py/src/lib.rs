//! `stogie._native`: the WSGI gateway and the Python worker pool in front of the
//! `stogie-http` engine. The Cheroot-compatible API is in the `stogie` Python package.

pub mod handler;
pub mod native;
pub mod pool;
pub mod server;
pub mod wsgi;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<server::NativeServer>()?;
    m.add_class::<native::NativeRequest>()?;
    m.add_class::<wsgi::input::Input>()?;
    m.add_class::<wsgi::respond::StartResponse>()?;
    m.add_class::<wsgi::respond::FileWrapper>()?;
    m.add(
        "RequestBodyError",
        py.get_type::<wsgi::input::RequestBodyError>(),
    )?;
    m.add(
        "MaxSizeExceeded",
        py.get_type::<wsgi::input::MaxSizeExceeded>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
