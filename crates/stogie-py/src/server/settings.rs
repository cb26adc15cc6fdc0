//! Settings handed from Python, checked: each wrong value is a ValueError that names it.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::handler::Mode;
use crate::pool::PoolLimits;

pub(super) fn parse_mode(mode: &str) -> PyResult<Mode> {
    match mode {
        "wsgi" => Ok(Mode::Wsgi),
        "wsgi_u0" => Ok(Mode::WsgiU0),
        "native" => Ok(Mode::Native),
        _ => Err(PyValueError::new_err(format!(
            "unknown gateway mode {mode:?}"
        ))),
    }
}

pub(super) fn limits(
    min: isize,
    max: isize,
    queue: isize,
    queue_timeout: f64,
    idle_timeout: f64,
) -> PoolLimits {
    let min = min.max(1) as usize;
    PoolLimits {
        min,
        max: if max < 0 {
            usize::MAX
        } else {
            (max as usize).max(min)
        },
        queue: if queue < 0 {
            None
        } else {
            Some(queue as usize)
        },
        queue_timeout: Duration::from_secs_f64(queue_timeout.max(0.0)),
        idle_timeout: secs(idle_timeout).max(Duration::from_millis(10)),
    }
}

/// A size limit between `min` (a limit of 0 bytes would refuse every request) and 1 GiB
/// (the limits add up to the largest buffered head, which must not overflow).
pub(super) fn size_setting(key: &str, v: &Bound<'_, PyAny>, min: i64) -> PyResult<usize> {
    const MAX: i64 = 1 << 30;
    let n: i64 = v.extract()?;
    if !(min..=MAX).contains(&n) {
        return Err(PyValueError::new_err(format!(
            "{key} must be between {min} and {MAX}, not {n}"
        )));
    }
    Ok(n as usize)
}

/// A whole number setting within `min..=max`, or a ValueError saying so.
pub(super) fn bounded(key: &str, v: &Bound<'_, PyAny>, min: u64, max: u64) -> PyResult<u64> {
    let n: i128 = v.extract()?;
    if !(i128::from(min)..=i128::from(max)).contains(&n) {
        return Err(PyValueError::new_err(format!(
            "{key} must be between {min} and {max}, not {n}"
        )));
    }
    Ok(n as u64)
}

/// A value that goes into a response header: control characters would break the head (or
/// inject headers), so they are refused here, where the setting is made.
pub(super) fn header_text(key: &str, v: String) -> PyResult<String> {
    // ASCII: the engine writes the text's bytes as they are.
    if !v.is_ascii() || stogie_http::message::has_bad_byte(v.as_bytes()) {
        return Err(PyValueError::new_err(format!(
            "{key} {v:?} cannot go into a header: use printable ASCII text"
        )));
    }
    Ok(v)
}

pub(super) fn secs(v: f64) -> Duration {
    Duration::from_secs_f64(if v.is_finite() && v > 0.0 { v } else { 0.0 })
}
