//! The engine's own error answers: text/plain with a Content-Length, then the close.

mod common;

use std::time::{Duration, Instant};

use common::*;
use stogie_http::ServerConfig;

/// Sends `request` and expects the error `code`, the connection closed after it, and the
/// app never called.
fn expect_error(cfg: ServerConfig, request: &[u8], code: u16) -> Response {
    let called = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = called.clone();
    let server = start_with(
        cfg,
        gateway(move |req| {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
            respond(&req, "200 OK", b("app"));
        }),
    );
    let (r, rest) = roundtrip_to_close(&server, request);
    assert_error_answer(&r, code);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert!(
        !called.load(std::sync::atomic::Ordering::SeqCst),
        "the app must not see a refused request"
    );
    r
}

#[test]
fn bad_request_line_is_400() {
    let r = expect_error(config(), b"GET /\r\n\r\n", 400);
    assert_eq!(r.status_line, "HTTP/1.1 400 Bad Request");
    expect_error(config(), b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400);
    expect_error(config(), b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400);
}

#[test]
fn bare_lf_is_400() {
    expect_error(config(), b"GET / HTTP/1.1\nHost: x\n\n", 400);
}

#[test]
fn missing_host_is_400() {
    expect_error(config(), b"GET / HTTP/1.1\r\n\r\n", 400);
}

#[test]
fn connect_is_405() {
    expect_error(
        config(),
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        405,
    );
}

#[test]
fn incomplete_head_is_408_after_the_timeout() {
    let cfg = config_with_timeout(1);
    let started = Instant::now();
    expect_error(cfg, b"GET / HTTP/1.1\r\nHost: x\r\n", 408);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[test]
fn body_over_max_size_is_413() {
    let cfg = ServerConfig {
        max_request_body_size: 1000,
        ..config()
    };
    expect_error(
        cfg.clone(),
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n",
        413,
    );
    // Chunked: the limit applies as the chunks arrive.
    let mut req = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(format!("{:x}\r\n", 1001).as_bytes());
    req.extend_from_slice(&[b'x'; 1001]);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    expect_error(cfg, &req, 413);
}

#[test]
fn body_at_max_size_is_accepted() {
    let cfg = ServerConfig {
        max_request_body_size: 1000,
        ..config()
    };
    let server = start_with(cfg, echo_gateway());
    let mut c = server.connect();
    let mut req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'y'; 1000]);
    c.send(req);
    let r = c.read_response();
    assert_eq!(r.code(), 200);
    assert_eq!(r.body.len(), 1000);
}

#[test]
fn long_uri_is_414() {
    let mut req = b"GET /".to_vec();
    req.extend_from_slice(&[b'a'; 9000]);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_error(config(), &req, 414);
}

#[test]
fn too_many_headers_is_431() {
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..150 {
        req.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    expect_error(config(), &req, 431);
}

#[test]
fn huge_header_is_431() {
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.extend_from_slice(&[b'v'; 20_000]);
    req.extend_from_slice(b"\r\n\r\n");
    expect_error(config(), &req, 431);
}

#[test]
fn unknown_transfer_coding_is_501() {
    expect_error(
        config(),
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
    );
}

#[test]
fn full_queue_is_503() {
    let server = start(FullGateway {
        queue_timeout: Duration::from_millis(50),
    });
    let started = Instant::now();
    let (r, rest) = roundtrip_to_close(&server, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_error_answer(&r, 503);
    assert!(rest.is_empty());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn http2_request_line_is_505() {
    let r = expect_error(config(), b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505);
    assert_eq!(r.status_line, "HTTP/1.1 505 HTTP Version Not Supported");
}

#[test]
fn malformed_chunked_body_is_400() {
    expect_error(
        config(),
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn content_length_and_transfer_encoding_is_400() {
    expect_error(
        config(),
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn error_after_a_good_request_on_the_same_connection() {
    let server = start(hello_gateway());
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/9.9\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.code(), 200);
    let r = c.read_response();
    assert_error_answer(&r, 505);
    c.expect_closed();
}

#[test]
fn end_of_input_inside_a_head_is_400() {
    for partial in [
        &b"GET /fo"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Y: z",
    ] {
        let server = start(hello_gateway());
        let mut c = server.connect();
        c.send(partial);
        c.shutdown_write();
        let r = c.read_response();
        assert_error_answer(&r, 400);
        c.expect_closed();
    }
}

#[test]
fn end_of_input_before_a_head_is_a_quiet_close() {
    let server = start(hello_gateway());
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n");
    c.shutdown_write();
    assert_eq!(c.read_response().code(), 200);
    c.expect_closed();
}

#[test]
fn empty_lines_before_a_request_line_are_ignored() {
    let server = start(hello_gateway());
    let mut c = server.connect();
    c.send("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().code(), 200);
    assert_eq!(c.read_response().code(), 200);
}

#[test]
fn trickled_head_is_408_once_the_timeout_has_passed_since_its_first_byte() {
    let cfg = config_with_timeout(1);
    let server = start_with(cfg, hello_gateway());
    let mut c = server.connect();
    let started = Instant::now();
    // Every write is a recv's worth of progress; the head as a whole is too slow.
    for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: abcdef" {
        if started.elapsed() > Duration::from_millis(1500) {
            break;
        }
        c.send([*byte]);
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = c.read_response();
    assert_error_answer(&r, 408);
    c.expect_closed();
}

#[test]
fn long_trickled_head_line_is_refused_at_its_limit() {
    let cfg = ServerConfig {
        max_header_field: 64,
        ..config()
    };
    let server = start_with(cfg, hello_gateway());
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\nX: ");
    for _ in 0..70 {
        c.send("v");
        std::thread::sleep(Duration::from_millis(1));
    }
    let r = c.read_response();
    assert_error_answer(&r, 431);
}
