//! The benchmark's ceiling: the engine answering "Hello, World!" with no Python behind it.
//!
//! ```text
//! cargo run --release -p stogie-http --example hello -- PORT [IO_THREADS] [HOST]
//! ```
//!
//! The gateway answers inline, from `dispatch()` on the connection's own task: no thread
//! hand-off, so what is measured is the engine (parsing, framing, writing) and the socket.
//! The server runs until it is killed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stogie_http::{
    BindAddr, EngineOptions, Gateway, HttpServer, ListenOptions, Listener, LiveConfig, Request,
    ResponseEvent, ResponseHead, ServerConfig, Stats, StderrLog,
};

const BODY: &[u8] = b"Hello, World!";

struct Hello {
    /// Built once: each response sends a copy (its text is static, its field list is
    /// allocated, as a gateway's would be).
    head: ResponseHead,
}

impl Gateway for Hello {
    fn dispatch(&self, request: Request) -> Result<(), Request> {
        let head = self.head.clone();
        // The response channel is new and empty: the first event always fits. An error
        // means the client is gone, and then there is nobody to answer.
        let _ = request.response.try_send(ResponseEvent::Head {
            head,
            body: Bytes::from_static(BODY),
            end: true,
        });
        Ok(())
    }
}

fn usage() -> ! {
    eprintln!("usage: hello PORT [IO_THREADS] [HOST]");
    std::process::exit(2);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = match args.next().map(|a| a.parse()) {
        Some(Ok(port)) => port,
        _ => usage(),
    };
    let io_threads: usize = match args.next().map(|a| a.parse()) {
        None => 1,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => usage(),
    };
    let host = args.next().unwrap_or_else(|| "127.0.0.1".to_string());

    let listener = Listener::bind(
        &BindAddr::Tcp(host, port),
        ListenOptions {
            backlog: 4096,
            reuse_port: false,
        },
    )
    .unwrap_or_else(|e| {
        eprintln!("hello: cannot listen on port {port}: {e}");
        std::process::exit(1);
    });
    let _server = HttpServer::start(
        listener,
        LiveConfig::new(ServerConfig {
            // Long enough for the benchmark's idle keep-alive test.
            timeout: Duration::from_secs(120),
            ..ServerConfig::default()
        }),
        Arc::new(Hello {
            head: ResponseHead::from_text(
                &b"200 OKContent-Typetext/plainContent-Length13"[..],
                0..6,
                vec![(6..18, 18..28), (28..42, 42..44)],
            ),
        }),
        Arc::new(StderrLog),
        Arc::new(Stats::default()),
        EngineOptions {
            io_threads,
            ..EngineOptions::default()
        },
    )
    .unwrap_or_else(|e| {
        eprintln!("hello: cannot start the server: {e}");
        std::process::exit(1);
    });
    eprintln!("hello: serving on port {port} with {io_threads} I/O thread(s)");
    loop {
        std::thread::park();
    }
}
