//! `stogie._native`: the WSGI gateway and the Python worker pool in front of the
//! `stogie-http` engine. The Cheroot-compatible API is in the `stogie` Python package.

pub mod gil;
pub mod handler;
pub mod native;
pub mod pool;
pub mod server;
pub mod tls;
pub mod wsgi;

use pyo3::prelude::*;

/// Memory for Rust's side. Requests are built on the I/O thread and freed on a Python
/// worker, responses the other way round; glibc's malloc serialises such cross-thread frees
/// on arena locks (measured: 12% of the I/O thread in malloc and free, some of it waiting
/// on those locks). mimalloc frees across threads without locking. Python objects keep
/// Python's own allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    tls::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("ACCESS_LOG_COMBINED", stogie_http::ops::accesslog::COMBINED)?;
    // Threads started from Rust stay out of Python while the interpreter is torn down.
    gil::init();
    m.add_function(wrap_pyfunction!(gil::prepare_exit, m)?)?;
    py.import("atexit")?
        .call_method1("register", (m.getattr("prepare_exit")?,))?;
    Ok(())
}
