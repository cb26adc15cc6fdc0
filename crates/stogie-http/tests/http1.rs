//! HTTP/1.1 behaviour over real sockets: framing, keep-alive, pipelining, bodies,
//! `Expect: 100-continue`, response framing rules and enforcement.

mod common;

use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use stogie_http::{Request, ResponseEvent, ResponseHead};

#[test]
fn simple_get_hello() {
    let server = start(hello_gateway());
    let mut c = server.connect();
    c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.header("Content-Length"), Some("5"));
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert!(r.has_header("Date"), "{}", r.raw_head);
    let date = r.header("Date").unwrap();
    assert!(date.ends_with(" GMT"), "Date is an IMF-fixdate: {date}");
    assert!(
        r.header("Server").is_some_and(|s| s.starts_with("Stogie/")),
        "{}",
        r.raw_head
    );
    assert!(!r.has_header("Transfer-Encoding"));
    assert!(!r.has_header("Connection"), "{}", r.raw_head);
    assert_eq!(r.body, b"hello");
}

#[test]
fn app_spelling_and_reason_phrase_are_kept() {
    let server = start(gateway(|req: Request| {
        let _ = req.response.blocking_send(ResponseEvent::Head {
            head: head(
                "200 Fine",
                &[("X-mIxEd-Case", "SoMe VaLuE"), ("content-LENGTH", "2")],
            ),
            body: b("ok"),
            end: true,
        });
    }));
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status_line, "HTTP/1.1 200 Fine");
    assert!(
        r.raw_head.contains("\r\nX-mIxEd-Case: SoMe VaLuE\r\n"),
        "{}",
        r.raw_head
    );
    assert!(
        r.raw_head.contains("\r\ncontent-LENGTH: 2\r\n"),
        "{}",
        r.raw_head
    );
    assert_eq!(r.body, b"ok");
}

#[test]
fn keep_alive_two_requests_on_one_connection() {
    let server = start(echo_gateway());
    let mut c = server.connect();
    c.send("GET /one HTTP/1.1\r\nHost: x\r\n\r\n");
    let r1 = c.read_response();
    assert_eq!(r1.code(), 200);
    assert_eq!(r1.header("X-Target"), Some("/one"));
    c.send("GET /two HTTP/1.1\r\nHost: x\r\n\r\n");
    let r2 = c.read_response();
    assert_eq!(r2.code(), 200);
    assert_eq!(r2.header("X-Target"), Some("/two"));
}

#[test]
fn http10_without_keep_alive_closes() {
    let server = start(hello_gateway());
    let (r, rest) = roundtrip_to_close(&server, "GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.status_line, "HTTP/1.0 200 OK");
    assert_eq!(r.body, b"hello");
    assert!(rest.is_empty());
    assert!(!r.has_header("Connection") || r.header("Connection") == Some("close"));
}

#[test]
fn http10_keep_alive_stays_open() {
    let server = start(hello_gateway());
    let mut c = server.connect();
    c.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status_line, "HTTP/1.0 200 OK");
    assert_eq!(r.header("Content-Length"), Some("5"));
    assert!(
        r.header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")),
        "{}",
        r.raw_head
    );
    assert_eq!(r.body, b"hello");
    // Still open: a second request is answered.
    c.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.body, b"hello");
}

#[test]
fn client_connection_close_closes_after_response() {
    let server = start(hello_gateway());
    let (r, rest) = roundtrip_to_close(
        &server,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.code(), 200);
    assert_eq!(r.header("Connection"), Some("close"));
    assert_eq!(r.body, b"hello");
    assert!(rest.is_empty());
}

#[test]
fn app_connection_close_is_honoured() {
    let server = start(gateway(|req: Request| {
        let _ = req.response.blocking_send(ResponseEvent::Head {
            head: head(
                "200 OK",
                &[("Content-Length", "3"), ("Connection", "close")],
            ),
            body: b("bye"),
            end: true,
        });
    }));
    let mut c = server.connect();
    // A second request is already in the pipe: it must not be answered.
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.body, b"bye");
    let n = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .count();
    assert_eq!(n, 1, "one Connection header: {}", r.raw_head);
    c.expect_closed();
}

#[test]
fn pipelined_requests_answered_in_order() {
    let server = start(gateway(|req: Request| {
        // Later requests answer faster: order must still be kept.
        let n: u64 = std::str::from_utf8(&req.head.path[1..])
            .unwrap()
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 * (3 - n)));
        respond(&req, "200 OK", Bytes::from(format!("r{n}")));
    }));
    let mut c = server.connect();
    c.send(
        "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /2 HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /3 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    for i in 1..=3 {
        let r = c.read_response();
        assert_eq!(r.code(), 200);
        assert_eq!(r.body_str(), format!("r{i}"));
    }
}

#[test]
fn half_close_still_gets_full_response() {
    let server = start(gateway(|req: Request| {
        std::thread::sleep(Duration::from_millis(50));
        respond(&req, "200 OK", Bytes::from(vec![b'z'; 100_000]));
    }));
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    c.shutdown_write();
    let r = c.read_response();
    assert_eq!(r.code(), 200);
    assert_eq!(r.body.len(), 100_000);
    assert!(r.body.iter().all(|&b| b == b'z'));
    c.expect_closed();
}

#[test]
fn post_small_body_echoed() {
    let server = start(echo_gateway());
    let mut c = server.connect();
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world");
    let r = c.read_response();
    assert_eq!(r.code(), 200);
    assert_eq!(r.header("X-Method"), Some("POST"));
    assert_eq!(r.body, b"hello world");
    // The connection stays usable.
    c.send("GET /after HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.header("X-Target"), Some("/after"));
}

/// Streams the body back piece by piece as it is read.
fn streaming_echo() -> impl stogie_http::Gateway {
    gateway(|mut req: Request| {
        let complete = req.body.is_complete();
        let len = req.head.header("Content-Length").cloned();
        let mut headers = vec![(
            b("X-Prefetched"),
            Bytes::from_static(if complete { b"yes" } else { b"no" }),
        )];
        if let Some(len) = len {
            headers.push((b("Content-Length"), len));
        }
        let head = ResponseHead::new(b("200 OK"), headers);
        if req
            .response
            .blocking_send(ResponseEvent::Head {
                head,
                body: Bytes::new(),
                end: false,
            })
            .is_err()
        {
            return;
        }
        while let Some(piece) = req.body.blocking_next() {
            let piece = piece.expect("body piece");
            if req
                .response
                .blocking_send(ResponseEvent::Body(piece))
                .is_err()
            {
                return;
            }
        }
        let _ = req.response.blocking_send(ResponseEvent::End);
    })
}

#[test]
fn post_large_body_streamed_and_echoed() {
    let server = start(streaming_echo());
    let mut c = server.connect();
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let mut writer = c.stream.try_clone().unwrap();
    let expected = body.clone();
    // Write from another thread: the echo flows back while the upload is still going.
    let sender = std::thread::spawn(move || {
        writer
            .write_all(
                format!(
                    "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .unwrap();
        for piece in body.chunks(50_000) {
            writer.write_all(piece).unwrap();
        }
    });
    let r = c.read_response();
    sender.join().unwrap();
    assert_eq!(r.code(), 200);
    assert_eq!(
        r.header("X-Prefetched"),
        Some("no"),
        "1 MiB is streamed, not read ahead"
    );
    assert_eq!(r.body.len(), expected.len());
    assert!(r.body == expected, "echoed body differs");
    // Keep-alive after a streamed body.
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.code(), 200);
}

#[test]
fn slow_app_reading_a_streamed_body_is_not_a_client_timeout() {
    // The body timeout is for a client that stops sending, not for an app that takes its
    // time before reading.
    let cfg = stogie_http::ServerConfig {
        timeout: Duration::from_millis(500),
        ..config()
    };
    let server = start_with(
        cfg,
        gateway(|mut req: Request| {
            std::thread::sleep(Duration::from_millis(1200));
            let mut total = 0usize;
            while let Some(piece) = req.body.blocking_next() {
                match piece {
                    Ok(p) => total += p.len(),
                    Err(e) => {
                        respond(&req, "500 Body Failed", Bytes::from(e.to_string()));
                        return;
                    }
                }
            }
            respond(&req, "200 OK", Bytes::from(total.to_string()));
        }),
    );
    let mut c = server.connect();
    let body = vec![b'q'; 512 * 1024];
    c.send(format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    // Sent from another thread: the server stops reading when the app does not read.
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&body);
    });
    let r = c.read_response();
    sender.join().unwrap();
    assert_eq!(r.code(), 200, "{} {}", r.raw_head, r.body_str());
    assert_eq!(r.body_str(), (512 * 1024).to_string());
}

#[test]
fn chunked_body_with_extensions_and_trailers_then_pipelined_request() {
    let server = start(echo_gateway());
    let mut c = server.connect();
    c.send(
        "POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;name=value;quoted=\"a b\"\r\nhello\r\n\
         6 ; ext\r\n world\r\n\
         0\r\nX-Trailer: yes\r\nX-Other: GET / HTTP/1.1\r\n\r\n\
         GET /next HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let r = c.read_response();
    assert_eq!(r.code(), 200);
    assert_eq!(r.header("X-Target"), Some("/chunked"));
    assert_eq!(r.body, b"hello world");
    let r = c.read_response();
    assert_eq!(r.code(), 200, "{}", r.raw_head);
    assert_eq!(r.header("X-Target"), Some("/next"));
    assert_eq!(r.header("X-Method"), Some("GET"));
    assert!(r.body.is_empty());
    // Nothing else: the trailers were not taken for a request.
    assert!(c.nothing_within(Duration::from_millis(200)));
}

#[test]
fn large_chunked_body_streamed() {
    let server = start(streaming_echo());
    let mut c = server.connect();
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        writer
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        for i in 0..40u8 {
            let piece = vec![b'a' + (i % 26); 10_000];
            writer
                .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .unwrap();
            writer.write_all(&piece).unwrap();
            writer.write_all(b"\r\n").unwrap();
        }
        writer
            .write_all(b"0\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
    });
    let r = c.read_response();
    sender.join().unwrap();
    assert_eq!(r.code(), 200);
    assert!(r.chunked);
    assert_eq!(r.body.len(), 400_000);
    for (i, piece) in r.body.chunks(10_000).enumerate() {
        assert!(piece.iter().all(|&x| x == b'a' + (i as u8 % 26)));
    }
    let r = c.read_response();
    assert_eq!(r.code(), 200);
}

#[test]
fn unread_body_is_drained_and_keep_alive_continues() {
    // The app never reads the body; answering must still leave the connection usable.
    let server = start(gateway(|req: Request| {
        respond(&req, "200 OK", Bytes::from(req.head.target.to_vec()));
    }));
    for size in [10usize, 100_000] {
        let mut c = server.connect();
        let mut writer = c.stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            writer
                .write_all(
                    format!("POST /ignored HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n")
                        .as_bytes(),
                )
                .unwrap();
            writer.write_all(&vec![b'x'; size]).unwrap();
            writer
                .write_all(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
        });
        let r = c.read_response();
        assert_eq!(r.body, b"/ignored");
        let r = c.read_response();
        assert_eq!(r.code(), 200);
        assert_eq!(r.body, b"/next", "size {size}");
        sender.join().unwrap();
    }
}

#[test]
fn expect_100_continue_sent_only_when_body_is_read() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Arc::new(Mutex::new(go_rx));
    let server = start(gateway(move |mut req: Request| {
        go_rx.lock().unwrap().recv().unwrap();
        let body = read_body(&mut req);
        respond(&req, "200 OK", Bytes::from(body));
    }));
    let mut c = server.connect();
    c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    assert!(
        c.nothing_within(Duration::from_millis(300)),
        "no 100 Continue before the app reads: {:?}",
        String::from_utf8_lossy(c.buffered())
    );
    go_tx.send(()).unwrap();
    let (status, headers, _) = c.read_head();
    assert_eq!(status, "HTTP/1.1 100 Continue");
    assert!(headers.is_empty());
    c.send("hello");
    let r = c.read_response();
    assert_eq!(r.code(), 200);
    assert_eq!(r.body, b"hello");
    // Keep-alive after the 100-continue exchange.
    go_tx.send(()).unwrap();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().code(), 200);
}

#[test]
fn expect_100_continue_not_sent_when_app_answers_without_reading() {
    let server = start(gateway(|req: Request| {
        let Request { body, response, .. } = req;
        // Refuses the upload: drops the body unread, then answers.
        drop(body);
        std::thread::sleep(Duration::from_millis(100));
        let _ = response.blocking_send(ResponseEvent::Head {
            head: head("413 Too Big For Me", &[("Content-Length", "0")]),
            body: Bytes::new(),
            end: true,
        });
    }));
    let mut c = server.connect();
    c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let r = c.read_response();
    assert_eq!(
        r.status_line, "HTTP/1.1 413 Too Big For Me",
        "no 100 Continue for a body the app never read"
    );
    // The client never sent the body, so the connection cannot be reused.
    assert_eq!(r.header("Connection"), Some("close"), "{}", r.raw_head);
    c.expect_closed();
}

#[test]
fn expect_100_continue_never_for_http10() {
    let server = start(echo_gateway());
    let mut c = server.connect();
    c.send("POST / HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    assert!(
        c.nothing_within(Duration::from_millis(300)),
        "no 100 Continue for HTTP/1.0: {:?}",
        String::from_utf8_lossy(c.buffered())
    );
    c.send("hello");
    let r = c.read_response();
    assert_eq!(r.status_line, "HTTP/1.0 200 OK");
    assert_eq!(r.body, b"hello");
    c.expect_closed();
}

/// Sends the head, then the body pieces, with no Content-Length.
fn unframed_gateway() -> impl stogie_http::Gateway {
    gateway(|req: Request| {
        let _ = req.response.blocking_send(ResponseEvent::Head {
            head: head("200 OK", &[("X-App", "1")]),
            body: b("first,"),
            end: false,
        });
        let _ = req
            .response
            .blocking_send(ResponseEvent::Body(Bytes::from(vec![b'm'; 20_000])));
        let _ = req
            .response
            .blocking_send(ResponseEvent::Bodies(vec![b(",second"), b(",third")]));
        let _ = req.response.blocking_send(ResponseEvent::End);
    })
}

fn unframed_body() -> Vec<u8> {
    let mut v = b"first,".to_vec();
    v.extend_from_slice(&[b'm'; 20_000]);
    v.extend_from_slice(b",second,third");
    v
}

#[test]
fn no_content_length_http11_is_chunked() {
    let server = start(unframed_gateway());
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert!(r.chunked, "{}", r.raw_head);
    assert!(!r.has_header("Content-Length"));
    assert_eq!(r.body, unframed_body());
    // Keep-alive.
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().body, unframed_body());
}

#[test]
fn no_content_length_http10_is_close_delimited() {
    let server = start(unframed_gateway());
    let mut c = server.connect();
    c.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status_line, "HTTP/1.0 200 OK");
    assert!(!r.has_header("Transfer-Encoding"), "{}", r.raw_head);
    assert!(!r.has_header("Content-Length"));
    assert!(
        !r.header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")),
        "{}",
        r.raw_head
    );
    // read_response read to EOF: the body is exactly what the app sent.
    assert_eq!(r.body, unframed_body());
}

/// Answers with `status`, a Content-Length of 5 and a body, whatever the request.
fn bodyful_gateway(status: &'static str) -> impl stogie_http::Gateway {
    gateway(move |req: Request| {
        let _ = req.response.blocking_send(ResponseEvent::Head {
            head: head(status, &[("Content-Length", "5")]),
            body: b("abcde"),
            end: false,
        });
        let _ = req.response.blocking_send(ResponseEvent::Body(b("fghij")));
        let _ = req.response.blocking_send(ResponseEvent::End);
    })
}

#[test]
fn head_response_never_has_a_body() {
    let server = start(bodyful_gateway("200 OK"));
    let mut c = server.connect();
    c.send("HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response_to(true);
    assert_eq!(r.code(), 200);
    assert_eq!(r.header("Content-Length"), Some("5"));
    // The next bytes are the next response, not body bytes.
    let (status, _, _) = c.read_head();
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[test]
fn head_response_without_length_is_not_chunked() {
    let server = start(unframed_gateway());
    let mut c = server.connect();
    c.send("HEAD / HTTP/1.1\r\nHost: x\r\n\r\nHEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    for _ in 0..2 {
        let r = c.read_response_to(true);
        assert_eq!(r.code(), 200);
        assert_eq!(r.header("X-App"), Some("1"));
    }
    assert!(c.nothing_within(Duration::from_millis(200)));
}

#[test]
fn status_204_and_304_never_have_a_body() {
    for status in ["204 No Content", "304 Not Modified"] {
        let server = start(bodyful_gateway(status));
        let mut c = server.connect();
        c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
        for _ in 0..2 {
            let r = c.read_response();
            assert_eq!(&r.status_line[9..], status);
            assert!(!r.has_header("Transfer-Encoding"));
        }
        assert!(
            c.nothing_within(Duration::from_millis(200)),
            "{status}: stray bytes {:?}",
            String::from_utf8_lossy(c.buffered())
        );
    }
}

#[test]
fn content_length_overrun_is_truncated_and_closed() {
    let server = start(bodyful_gateway("200 OK"));
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.body, b"abcde");
    c.expect_closed();
}

#[test]
fn content_length_overrun_in_the_first_event_is_500() {
    let server = start(gateway(|req: Request| {
        let _ = req.response.blocking_send(ResponseEvent::Head {
            head: head("200 OK", &[("Content-Length", "3")]),
            body: b("abcdef"),
            end: true,
        });
    }));
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    // Nothing went out yet, so the client gets Cheroot's 500, not a cut 200.
    let r = c.read_response();
    assert_eq!(r.status_line, "HTTP/1.1 500 Internal Server Error");
    assert_eq!(
        r.body,
        b"The requested resource returned more bytes than the declared Content-Length."
    );
    c.expect_closed();
}

#[test]
fn content_length_shortfall_closes() {
    let server = start(gateway(|req: Request| {
        let _ = req.response.blocking_send(ResponseEvent::Head {
            head: head("200 OK", &[("Content-Length", "10")]),
            body: b("abc"),
            end: true,
        });
    }));
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (status, _, _) = c.read_head();
    assert_eq!(status, "HTTP/1.1 200 OK");
    // Exactly the 3 bytes sent, then the close: the client sees the response is short.
    let rest = c.read_to_end();
    assert_eq!(rest, b"abc");
}

#[test]
fn header_with_crlf_from_app_is_a_500_and_never_written() {
    for (name, value) in [
        ("X-Evil", "a\r\nSet-Cookie: injected=1"),
        ("X-Evil", "a\nSet-Cookie: injected=1"),
        ("X-Evil\r\nSet-Cookie", "injected=1"),
    ] {
        let server = start(gateway(move |req: Request| {
            let _ = req.response.blocking_send(ResponseEvent::Head {
                head: ResponseHead::new(
                    b("200 OK"),
                    vec![
                        (b("Content-Length"), b("2")),
                        (b(name), Bytes::from_static(value.as_bytes())),
                    ],
                ),
                body: b("ok"),
                end: true,
            });
        }));
        let (r, rest) = roundtrip_to_close(&server, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_error_answer(&r, 500);
        assert!(!r.raw_head.contains("injected"), "{}", r.raw_head);
        assert!(!r.raw_head.contains("X-Evil"), "{}", r.raw_head);
        assert!(!r.body_str().contains("injected"));
        assert!(rest.is_empty());
    }
}

#[test]
fn dropped_response_is_a_500() {
    let server = start(gateway(drop::<Request>));
    let (r, _) = roundtrip_to_close(&server, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_error_answer(&r, 500);
}

#[test]
fn abort_after_head_closes_without_a_second_answer() {
    let server = start(gateway(|req: Request| {
        let _ = req.response.blocking_send(ResponseEvent::Head {
            head: head("200 OK", &[]),
            body: b("partial"),
            end: false,
        });
        let _ = req.response.blocking_send(ResponseEvent::Abort);
    }));
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (status, headers, _) = c.read_head();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers
        .iter()
        .any(|(n, v)| n == "Transfer-Encoding" && v == "chunked"));
    let rest = c.read_to_end();
    // The chunk that was sent, and no terminating chunk: the client sees the failure.
    assert_eq!(rest, b"7\r\npartial\r\n");
}

#[test]
fn stalled_body_fails_the_apps_read_with_a_timeout() {
    let cfg = stogie_http::ServerConfig {
        timeout: Duration::from_millis(500),
        ..config()
    };
    let (got_tx, got_rx) = mpsc::channel::<String>();
    let got_tx = Mutex::new(got_tx);
    let server = start_with(
        cfg,
        gateway(move |mut req: Request| {
            let mut outcome = String::from("end");
            while let Some(piece) = req.body.blocking_next() {
                if let Err(e) = piece {
                    outcome = format!("{e:?}");
                    let _ = req
                        .response
                        .blocking_send(ResponseEvent::Refuse(e.as_http()));
                    break;
                }
            }
            let _ = got_tx.lock().unwrap().send(outcome);
        }),
    );
    let mut c = server.connect();
    // Large enough to be streamed; only part of it is sent.
    c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n");
    c.send(vec![b'x'; 1000]);
    let outcome = got_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(outcome, "Timeout");
    let r = c.read_response();
    assert_error_answer(&r, 408);
    c.expect_closed();
}

#[test]
fn client_gone_stops_the_producer() {
    let (done_tx, done_rx) = mpsc::channel::<usize>();
    let done_tx = Mutex::new(done_tx);
    let server = start(gateway(move |req: Request| {
        let _ = req.response.blocking_send(ResponseEvent::Head {
            head: head("200 OK", &[]),
            body: Bytes::new(),
            end: false,
        });
        let mut sent = 0;
        // An endless response: only the client going away ends it.
        while req
            .response
            .blocking_send(ResponseEvent::Body(Bytes::from(vec![b'e'; 8192])))
            .is_ok()
        {
            sent += 1;
            if sent > 1_000_000 {
                break;
            }
        }
        let _ = done_tx.lock().unwrap().send(sent);
    }));
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (status, _, _) = c.read_head();
    assert_eq!(status, "HTTP/1.1 200 OK");
    drop(c);
    let sent = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the producer learns that the client is gone");
    assert!(sent < 1_000_000);
}

#[test]
fn expect_100_continue_with_chunked_body() {
    let server = start(echo_gateway());
    let mut c = server.connect();
    c.send(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    );
    let (status, _, _) = c.read_head();
    assert_eq!(status, "HTTP/1.1 100 Continue");
    c.send("3\r\nabc\r\n0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.code(), 200);
    assert_eq!(r.body, b"abc");
}

/// Reads the body; on a body error answers with the engine's error for it.
fn refusing_reader() -> impl stogie_http::Gateway {
    gateway(|mut req: Request| {
        let mut total = 0;
        while let Some(piece) = req.body.blocking_next() {
            match piece {
                Ok(p) => total += p.len(),
                Err(e) => {
                    let _ = req
                        .response
                        .blocking_send(ResponseEvent::Refuse(e.as_http()));
                    return;
                }
            }
        }
        respond(&req, "200 OK", Bytes::from(total.to_string()));
    })
}

#[test]
fn malformed_streamed_chunked_body_is_refused_with_400() {
    let server = start(refusing_reader());
    let mut c = server.connect();
    let mut req = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    // Past the read-ahead limit, so the error surfaces through the app's read.
    req.extend_from_slice(format!("{:x}\r\n", 100_000).as_bytes());
    req.extend_from_slice(&vec![b'c'; 100_000]);
    req.extend_from_slice(b"\r\nzz\r\n");
    c.send(req);
    let r = c.read_response();
    assert_error_answer(&r, 400);
    c.expect_closed();
}

#[test]
fn streamed_chunked_body_over_the_limit_is_refused_with_413() {
    let cfg = stogie_http::ServerConfig {
        max_request_body_size: 150_000,
        ..config()
    };
    let server = start_with(cfg, refusing_reader());
    let mut c = server.connect();
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ =
            writer.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        for _ in 0..4 {
            let _ = writer.write_all(format!("{:x}\r\n", 50_000).as_bytes());
            let _ = writer.write_all(&vec![b'c'; 50_000]);
            let _ = writer.write_all(b"\r\n");
        }
        let _ = writer.write_all(b"0\r\n\r\n");
    });
    let r = c.read_response();
    assert_error_answer(&r, 413);
    c.expect_closed();
    sender.join().unwrap();
}

#[test]
fn forbidden_trailer_is_400() {
    let server = start(refusing_reader());
    let mut c = server.connect();
    c.send(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         3\r\nabc\r\n0\r\nContent-Length: 3\r\n\r\n",
    );
    let r = c.read_response();
    assert_error_answer(&r, 400);
    c.expect_closed();
}

#[test]
fn partly_read_body_is_drained_and_keep_alive_continues() {
    let server = start(gateway(|mut req: Request| {
        let first = req.body.blocking_next().map(|p| p.unwrap().len());
        respond(&req, "200 OK", Bytes::from(format!("{first:?}")));
    }));
    let mut c = server.connect();
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        writer
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
            .unwrap();
        writer.write_all(&vec![b'p'; 200_000]).unwrap();
        writer
            .write_all(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
    });
    let r = c.read_response();
    assert!(r.body_str().starts_with("Some("), "{}", r.body_str());
    let r = c.read_response();
    assert_eq!(r.code(), 200);
    sender.join().unwrap();
}

#[test]
fn unread_body_past_the_drain_limit_closes() {
    let cfg = stogie_http::ServerConfig {
        drain_limit: 100_000,
        ..config()
    };
    let server = start_with(cfg, hello_gateway());
    let mut c = server.connect();
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n");
        let _ = writer.write_all(&vec![b'p'; 300_000]);
        let _ = writer.write_all(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
    });
    let r = c.read_response();
    assert_eq!(r.body, b"hello");
    c.expect_closed();
    sender.join().unwrap();
}

#[test]
fn app_server_and_date_headers_are_not_doubled() {
    let server = start(gateway(|req: Request| {
        let _ = req.response.blocking_send(ResponseEvent::Head {
            head: head(
                "200 OK",
                &[
                    ("server", "MyApp/1"),
                    ("DATE", "Thu, 01 Jan 1970 00:00:00 GMT"),
                    ("Content-Length", "0"),
                ],
            ),
            body: Bytes::new(),
            end: true,
        });
    }));
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    let count = |name: &str| {
        r.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    };
    assert_eq!(count("Server"), 1, "{}", r.raw_head);
    assert_eq!(count("Date"), 1, "{}", r.raw_head);
    assert_eq!(r.header("Server"), Some("MyApp/1"));
}

#[test]
fn app_transfer_encoding_header_is_replaced_by_engine_framing() {
    let server = start(gateway(|req: Request| {
        let _ = req.response.blocking_send(ResponseEvent::Head {
            head: head("200 OK", &[("Transfer-Encoding", "chunked")]),
            body: b("raw"),
            end: true,
        });
    }));
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    let n = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .count();
    assert_eq!(n, 1, "{}", r.raw_head);
    assert_eq!(r.body, b"raw");
}

#[test]
fn empty_line_before_a_keep_alive_request_is_ignored() {
    // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request-line
    // (old clients send a CRLF after a POST body).
    let server = start(echo_gateway());
    let mut c = server.connect();
    c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\r\n");
    let r = c.read_response();
    assert_eq!(r.body, b"hi");
    c.send("GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.code(), 200, "{}", r.raw_head);
    assert_eq!(r.header("X-Target"), Some("/next"));
}
