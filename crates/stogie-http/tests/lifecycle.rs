//! Connection and server lifecycle: idle timeout, graceful stop, listeners of every kind,
//! sendfile.

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use stogie_http::{BindAddr, ListenOptions, Listener, LocalAddr, Request, ResponseEvent};

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stogie-http-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// Serves one request on a connection under a `secs` timeout, then times how long the idle
/// connection stays open. An idle connection gets no 408: it just closes.
fn idle_close_after_one_request(secs: u64) -> (TestServer, Duration) {
    let server = start_with(config_with_timeout(secs), hello_gateway());
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().code(), 200);
    let idle_from = Instant::now();
    c.expect_closed();
    (server, idle_from.elapsed())
}

#[test]
fn idle_keep_alive_connection_closed_after_timeout() {
    // Too short a timeout to park: the connection waits it out in its task.
    let (_server, idle) = idle_close_after_one_request(1);
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(4),
        "{idle:?}"
    );
}

#[test]
fn graceful_stop_lets_a_request_in_flight_finish_then_refuses() {
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let entered_tx = std::sync::Mutex::new(entered_tx);
    let mut server = start(gateway(move |req: Request| {
        let _ = entered_tx.lock().unwrap().send(());
        std::thread::sleep(Duration::from_millis(400));
        respond(&req, "200 OK", b("finished"));
    }));
    let addr = server.addr();
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    entered_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the request reached the gateway");
    let reader = std::thread::spawn(move || {
        let r = c.read_response();
        let rest = c.read_to_end();
        (r, rest)
    });
    let started = Instant::now();
    let clean = server.stop(Duration::from_secs(5));
    let took = started.elapsed();
    assert!(clean, "stop() reports every connection finished");
    assert!(
        took >= Duration::from_millis(250),
        "stop() waited for the request: {took:?}"
    );
    let (r, rest) = reader.join().unwrap();
    assert_eq!(r.code(), 200);
    assert_eq!(r.body, b"finished");
    assert_eq!(
        r.header("Connection"),
        Some("close"),
        "a stopping server closes after the response"
    );
    assert!(rest.is_empty());

    // Stopped: new connections are refused, not left hanging.
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
        Ok(mut s) => {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut buf = [0u8; 64];
            let got = std::io::Read::read(&mut s, &mut buf);
            panic!("connected to a stopped server; read: {got:?}");
        }
    }
}

#[test]
fn stop_closes_idle_keep_alive_connections() {
    let mut server = start(hello_gateway());
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().code(), 200);
    let started = Instant::now();
    assert!(server.stop(Duration::from_secs(5)));
    assert!(started.elapsed() < Duration::from_secs(2));
    c.expect_closed();
}

#[test]
fn stop_closes_fresh_connections_that_sent_nothing() {
    let mut server = start(hello_gateway());
    let mut c = server.connect();
    // Make sure the connection was accepted before stopping.
    assert!(wait_until(Duration::from_secs(2), || {
        server.server.stats().snapshot().active_connections == 1
    }));
    let started = Instant::now();
    assert!(server.stop(Duration::from_secs(5)));
    assert!(started.elapsed() < Duration::from_secs(2));
    c.expect_closed();
}

#[test]
fn unix_socket_serves_and_is_removed_on_stop() {
    let path = temp_path("serve.sock");
    let mut server = start_on(&BindAddr::Unix(path.clone()), config(), hello_gateway());
    assert_eq!(server.server.local_addr(), &LocalAddr::Unix(path.clone()));
    let stream = UnixStream::connect(&path).expect("connect to the UNIX socket");
    let mut c = Client::unix(stream);
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.code(), 200);
    assert_eq!(r.body, b"hello");
    drop(c);
    assert!(server.stop(Duration::from_secs(2)));
    assert!(!path.exists(), "the socket file is removed on stop");
}

#[test]
fn unix_socket_peer_is_unix() {
    let path = temp_path("peer.sock");
    let _server = start_on(
        &BindAddr::Unix(path.clone()),
        config(),
        gateway(|req: Request| {
            let peer = format!("{:?}", req.peer);
            respond(&req, "200 OK", Bytes::from(peer));
        }),
    );
    let mut c = Client::unix(UnixStream::connect(&path).unwrap());
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert!(r.body_str().starts_with("Unix("), "{}", r.body_str());
}

#[test]
fn unix_path_that_is_not_a_socket_is_refused_and_kept() {
    let path = temp_path("regular-file");
    std::fs::write(&path, b"precious").unwrap();
    let err = Listener::bind(&BindAddr::Unix(path.clone()), ListenOptions::default())
        .expect_err("binding over a regular file must fail");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn stale_unix_socket_file_is_replaced() {
    let path = temp_path("stale.sock");
    // A socket file left behind by a listener that is gone.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let _server = start_on(&BindAddr::Unix(path.clone()), config(), hello_gateway());
    let mut c = Client::unix(UnixStream::connect(&path).unwrap());
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().code(), 200);
}

#[cfg(target_os = "linux")]
#[test]
fn abstract_socket_serves() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("stogie-http-test-{}", std::process::id()).into_bytes();
    let server = start_on(&BindAddr::Abstract(name.clone()), config(), hello_gateway());
    assert_eq!(
        server.server.local_addr(),
        &LocalAddr::Abstract(name.clone())
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let stream = UnixStream::connect_addr(&addr).expect("connect to the abstract socket");
    let mut c = Client::unix(stream);
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.code(), 200);
    assert_eq!(r.body, b"hello");
}

#[test]
fn ipv6_any_is_dual_stack() {
    let listener = match Listener::bind(&BindAddr::Tcp("::".into(), 0), ListenOptions::default()) {
        Ok(l) => l,
        Err(e) => {
            println!("skipping: IPv6 is unavailable on this machine ({e})");
            return;
        }
    };
    let server = start_listener(listener, config(), hello_gateway());
    let port = server.addr().port();
    assert!(server.addr().is_ipv6());
    let mut c = Client::tcp(([127, 0, 0, 1], port).into());
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.code(), 200);
    assert_eq!(r.body, b"hello");
}

#[test]
fn ipv6_loopback_serves() {
    let listener = match Listener::bind(&BindAddr::Tcp("::1".into(), 0), ListenOptions::default()) {
        Ok(l) => l,
        Err(e) => {
            println!("skipping: IPv6 loopback is unavailable on this machine ({e})");
            return;
        }
    };
    let server = start_listener(listener, config(), hello_gateway());
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n");
    assert_eq!(c.read_response().code(), 200);
}

fn file_with(content: &[u8], name: &str) -> PathBuf {
    let path = temp_path(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn file_content() -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 253) as u8).collect()
}

/// Sends `path` from `offset` for `len` bytes, with a Content-Length unless `chunked`.
fn file_gateway(
    path: PathBuf,
    offset: u64,
    len: Option<u64>,
    chunked: bool,
) -> impl stogie_http::Gateway {
    gateway(move |req: Request| {
        assert!(req.can_sendfile);
        let file = std::fs::File::open(&path).unwrap();
        let size = file.metadata().unwrap().len();
        let n = len.unwrap_or(size - offset);
        let mut headers = vec![(b("X-Sent-By"), b("sendfile"))];
        if !chunked {
            headers.push((b("Content-Length"), Bytes::from(n.to_string())));
        }
        let _ = req.response.blocking_send(ResponseEvent::Head {
            head: stogie_http::ResponseHead::new(b("200 OK"), headers),
            body: Bytes::new(),
            end: false,
        });
        let _ = req
            .response
            .blocking_send(ResponseEvent::File { file, offset, len });
        let _ = req.response.blocking_send(ResponseEvent::End);
    })
}

#[test]
fn sendfile_with_content_length() {
    let content = file_content();
    let path = file_with(&content, "sendfile-cl.bin");
    let server = start(file_gateway(path.clone(), 0, None, false));
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.code(), 200);
    assert!(!r.chunked);
    assert_eq!(r.header("Content-Length"), Some("300000"));
    assert!(r.body == content, "file content differs");
    // Keep-alive after a file.
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(c.read_response().body == content);
    let _ = std::fs::remove_file(path);
}

#[test]
fn sendfile_chunked_with_range() {
    let content = file_content();
    let path = file_with(&content, "sendfile-chunked.bin");
    let server = start(file_gateway(path.clone(), 1000, Some(150_000), true));
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.code(), 200);
    assert!(r.chunked, "{}", r.raw_head);
    assert!(r.body[..] == content[1000..151_000], "file range differs");
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(c.read_response().body[..] == content[1000..151_000]);
    let _ = std::fs::remove_file(path);
}

#[test]
fn sendfile_over_unix_socket() {
    let content = file_content();
    let path = file_with(&content, "sendfile-unix.bin");
    let sock = temp_path("sendfile.sock");
    let _server = start_on(
        &BindAddr::Unix(sock.clone()),
        config(),
        file_gateway(path.clone(), 0, None, false),
    );
    let mut c = Client::unix(UnixStream::connect(&sock).unwrap());
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert!(r.body == content);
    let _ = std::fs::remove_file(path);
}

#[test]
fn sendfile_for_head_sends_no_body() {
    let content = file_content();
    let path = file_with(&content, "sendfile-head.bin");
    let server = start(file_gateway(path.clone(), 0, None, false));
    let mut c = server.connect();
    c.send("HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response_to(true);
    assert_eq!(r.header("Content-Length"), Some("300000"));
    let r = c.read_response();
    assert!(r.body == content);
    let _ = std::fs::remove_file(path);
}

#[test]
fn many_concurrent_connections() {
    let server = start(echo_gateway());
    let addr = server.addr();
    let threads: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::tcp(addr);
                for j in 0..10 {
                    let body = format!("{i}-{j}");
                    c.send(format!(
                        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    ));
                    let r = c.read_response();
                    assert_eq!(r.body_str(), body);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

// --- parked connections: idle a moment, a keep-alive connection gives up its task ---------

#[test]
fn parked_connection_answers_its_next_requests_and_stays_counted_as_open() {
    let server = start_with(config_with_timeout(5), hello_gateway());
    let mut c = server.connect();
    for round in 0..3 {
        c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = c.read_response();
        assert_eq!(r.code(), 200, "round {round}");
        assert_eq!(r.body, b"hello");
        // Parked after a moment of quiet: still open, still counted.
        std::thread::sleep(Duration::from_millis(1400));
        assert_eq!(server.server.stats().snapshot().active_connections, 1);
    }
}

#[test]
fn fresh_connection_that_waits_before_its_first_request_is_served() {
    let server = start_with(config_with_timeout(5), hello_gateway());
    let mut c = server.connect();
    std::thread::sleep(Duration::from_millis(1500));
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().code(), 200);
}

#[test]
fn parked_connection_closes_at_its_idle_timeout() {
    let (server, idle) = idle_close_after_one_request(3);
    assert!(
        idle >= Duration::from_millis(2900) && idle < Duration::from_millis(4500),
        "{idle:?}"
    );
    assert!(wait_until(Duration::from_secs(2), || {
        server.server.stats().snapshot().active_connections == 0
    }));
}

/// A parked connection closes promptly when the server stops with `grace`.
fn stop_closes_a_parked_connection(grace: Duration) {
    let mut server = start_with(config_with_timeout(30), hello_gateway());
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().code(), 200);
    std::thread::sleep(Duration::from_millis(400));
    let started = Instant::now();
    server.stop(grace);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    c.set_read_timeout(Duration::from_secs(3));
    c.expect_closed();
}

#[test]
fn stop_closes_parked_connections_at_once() {
    stop_closes_a_parked_connection(Duration::from_secs(5));
}

#[test]
fn stop_without_grace_closes_parked_connections() {
    // The watcher task may be gone before it sees the stop; the server closes them itself.
    stop_closes_a_parked_connection(Duration::ZERO);
}

#[test]
fn many_parked_connections_each_resume_and_park_again() {
    let server = start_with(config_with_timeout(10), hello_gateway());
    let mut clients: Vec<Client> = (0..200).map(|_| server.connect()).collect();
    for round in 0..3 {
        for c in &mut clients {
            c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        for c in &mut clients {
            assert_eq!(c.read_response().code(), 200, "round {round}");
        }
        std::thread::sleep(Duration::from_millis(1300));
    }
    assert_eq!(server.server.stats().snapshot().active_connections, 200);
    drop(clients);
    assert!(wait_until(Duration::from_secs(3), || {
        server.server.stats().snapshot().active_connections == 0
    }));
}

#[test]
fn a_draining_server_answers_the_next_request_of_a_keep_alive_client_then_closes() {
    // What a worker being replaced does: the client's next request may already be on its
    // way, so the idle connection is not closed under it; that request is answered, with
    // Connection: close, and only then does the connection close.
    let mut server = start(hello_gateway());
    let addr = server.addr();
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let first = c.read_response();
    assert_eq!(first.code(), 200);
    assert!(
        first.header("connection").is_none(),
        "kept alive before the drain"
    );
    server.server.drain();
    // No new connections once draining (the accept loop lets go of its copy at once).
    std::thread::sleep(Duration::from_millis(100));
    assert!(TcpStream::connect(addr).is_err());
    std::thread::sleep(Duration::from_millis(300));
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let second = c.read_response();
    assert_eq!(second.code(), 200);
    assert_eq!(second.header("connection"), Some("close"));
    c.expect_closed();
    drop(c); // the server lingers until the client closes too
    let started = Instant::now();
    assert!(
        server.server.retire(Duration::from_secs(5)),
        "every connection closed"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn retire_gives_up_on_idle_connections_after_the_grace() {
    let mut server = start(hello_gateway());
    let mut c = server.connect();
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().code(), 200);
    let started = Instant::now();
    // The idle client never sends again: it keeps the connection until the grace is over.
    assert!(!server.server.retire(Duration::from_millis(600)));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_secs(3),
        "{took:?}"
    );
    c.expect_closed();
}

#[test]
fn one_engine_serves_several_listeners_each_with_its_own_address() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let tcp = Listener::bind(
        &BindAddr::Tcp("127.0.0.1".into(), 0),
        ListenOptions::default(),
    )
    .unwrap();
    let path = temp_path("several.sock");
    let unix = Listener::bind(&BindAddr::Unix(path.clone()), ListenOptions::default()).unwrap();
    let mut server = stogie_http::HttpServer::start_many(
        vec![tcp, unix],
        stogie_http::LiveConfig::new(config()),
        std::sync::Arc::new(gateway(move |req: Request| {
            record.lock().unwrap().push(req.local.clone());
            respond(&req, "200 OK", b("hi"));
        })),
        std::sync::Arc::new(stogie_http::StderrLog),
        std::sync::Arc::new(stogie_http::Stats::default()),
        stogie_http::EngineOptions::default(),
    )
    .unwrap();
    let LocalAddr::Tcp(addr) = server.local_addr().clone() else {
        panic!("the first listener is TCP")
    };
    let mut c = Client::tcp(addr);
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().body_str(), "hi");
    let mut u = Client::unix(UnixStream::connect(&path).unwrap());
    u.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(u.read_response().body_str(), "hi");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![LocalAddr::Tcp(addr), LocalAddr::Unix(path.clone())]
    );
    assert!(server.heartbeat_age() < Duration::from_secs(1));
    server.stop(Duration::from_secs(1));
    assert!(!path.exists(), "the socket file goes with the server");
    assert!(TcpStream::connect(addr).is_err());
    // Stopped: the runtime no longer beats.
    std::thread::sleep(Duration::from_millis(600));
    assert!(server.heartbeat_age() >= Duration::from_millis(500));
}
