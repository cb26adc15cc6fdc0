//! Errors a request can end with, and the short text answers the client gets for them.
//! Where Cheroot has words for the case, they are Cheroot's.

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
    pub fn refusal(&self) -> Option<crate::metrics::Refusal> {
        use crate::metrics::Refusal;
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
