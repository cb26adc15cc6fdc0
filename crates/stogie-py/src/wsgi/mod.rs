//! The WSGI gateway (PEP 3333): environ, `wsgi.input`, `start_response` and the response.

pub mod environ;
pub mod input;
pub mod respond;
