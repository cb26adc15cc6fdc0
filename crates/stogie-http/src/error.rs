//! Errors a request can end with, the short text answers the client gets for them, and how
//! the metrics count the engine's own refusals. Where Cheroot has words for the case, they
//! are Cheroot's.

use std::fmt;

/// Why a request was refused or could not be completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// 400 with a reason.
    BadRequest(&'static str),
    /// 405: CONNECT to a server that is not a proxy.
    MethodNotAllowed,
    /// 408: the request head or body did not arrive in time.
    RequestTimeout,
    /// 413: the body is larger than `max_request_body_size`.
    PayloadTooLarge,
    /// 414: the request line is too long.
    UriTooLong,
    /// 431: too many header fields, one too long, or the head over its limit.
    HeaderFieldsTooLarge,
    /// 500: the application failed or answered something that cannot be sent.
    Internal,
    /// 500: the application's first body bytes are more than its Content-Length.
    ContentLengthExceeded,
    /// 501: a transfer-coding other than chunked.
    NotImplemented,
    /// 503: the request queue is full.
    ServiceUnavailable,
    /// 505: an HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
}

impl HttpError {
    /// The status line's code and reason phrase.
    pub fn status(&self) -> &'static str {
        match self {
            HttpError::BadRequest(_) => "400 Bad Request",
            HttpError::MethodNotAllowed => "405 Method Not Allowed",
            HttpError::RequestTimeout => "408 Request Timeout",
            HttpError::PayloadTooLarge => "413 Request Entity Too Large",
            HttpError::UriTooLong => "414 Request-URI Too Long",
            HttpError::HeaderFieldsTooLarge => "431 Request Header Fields Too Large",
            HttpError::Internal | HttpError::ContentLengthExceeded => "500 Internal Server Error",
            HttpError::NotImplemented => "501 Not Implemented",
            HttpError::ServiceUnavailable => "503 Service Unavailable",
            HttpError::VersionNotSupported => "505 HTTP Version Not Supported",
        }
    }

    /// What kind of refusal this is, for the metrics; `None` for the app's own failures.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            HttpError::BadRequest(_)
            | HttpError::MethodNotAllowed
            | HttpError::NotImplemented
            | HttpError::VersionNotSupported => Some(Refusal::Parse),
            HttpError::PayloadTooLarge
            | HttpError::UriTooLong
            | HttpError::HeaderFieldsTooLarge => Some(Refusal::Limit),
            HttpError::RequestTimeout => Some(Refusal::Timeout),
            HttpError::ServiceUnavailable => Some(Refusal::QueueFull),
            HttpError::Internal | HttpError::ContentLengthExceeded => None,
        }
    }

    /// The numeric status code.
    pub fn code(&self) -> u16 {
        self.status()[..3].parse().unwrap_or(500)
    }

    /// The short text body sent with the status.
    pub fn message(&self) -> &'static str {
        match self {
            HttpError::BadRequest(m) => m,
            HttpError::MethodNotAllowed => "CONNECT is not supported: this server is not a proxy.",
            HttpError::RequestTimeout => {
                "The request did not arrive in time: the client was too slow."
            }
            HttpError::PayloadTooLarge => {
                "The entity sent with the request exceeds the maximum allowed bytes."
            }
            HttpError::UriTooLong => {
                "The Request-URI sent with the request exceeds the maximum allowed bytes."
            }
            HttpError::HeaderFieldsTooLarge => {
                "The headers sent with the request exceed the maximum allowed bytes."
            }
            HttpError::Internal => {
                "The server encountered an unexpected condition which prevented it from \
                 fulfilling the request."
            }
            HttpError::ContentLengthExceeded => {
                "The requested resource returned more bytes than the declared Content-Length."
            }
            HttpError::NotImplemented => "Unsupported transfer-coding: only chunked is supported.",
            HttpError::ServiceUnavailable => "The server is busy: try again later.",
            HttpError::VersionNotSupported => "Cannot fulfill request",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status(), self.message())
    }
}

impl std::error::Error for HttpError {}

/// Why the engine refused a request itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed: a 400 (or 405, 501, 505) from the codec.
    Parse,
    /// Over a size limit: 413, 414, 431.
    Limit,
    /// Too slow: 408, or a body or response that stopped moving.
    Timeout,
    /// No room in the queue for Python: 503.
    QueueFull,
}

/// Why a request body could not be read to its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The framing is broken (bad chunk size, missing CRLF, forbidden trailer...).
    Malformed(&'static str),
    /// The body is larger than `max_request_body_size`.
    TooLarge,
    /// No body bytes arrived for `timeout`.
    Timeout,
    /// The client closed the connection before the body's end.
    Truncated,
    /// The request ended (the response is done) before the body was read.
    Abandoned,
}

impl BodyError {
    /// The answer a client gets when this error happens before any response was sent.
    pub fn as_http(&self) -> HttpError {
        match self {
            BodyError::Malformed(m) => HttpError::BadRequest(m),
            BodyError::TooLarge => HttpError::PayloadTooLarge,
            BodyError::Timeout => HttpError::RequestTimeout,
            BodyError::Truncated | BodyError::Abandoned => {
                HttpError::BadRequest("The request body ended before its declared end.")
            }
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Malformed(m) => write!(f, "malformed request body: {m}"),
            BodyError::TooLarge => f.write_str(
                "request body exceeds the maximum allowed bytes (max_request_body_size)",
            ),
            BodyError::Timeout => f.write_str("timed out waiting for the request body"),
            BodyError::Truncated => {
                f.write_str("client closed the connection before the body's end")
            }
            BodyError::Abandoned => f.write_str("the request body is no longer available"),
        }
    }
}

impl std::error::Error for BodyError {}
