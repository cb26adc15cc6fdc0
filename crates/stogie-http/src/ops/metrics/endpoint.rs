//! The `/metrics` endpoint: a listener of its own, answering scrapes with what a render
//! function makes.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::h1::head;
use crate::h1::response;
use crate::message::{HeadLimits, Version};

/// The `/metrics` listener: its own socket and thread, never the app's port, so that a busy
/// or stuck app never keeps a scrape waiting (and the app never sees scrapes).
pub struct MetricsEndpoint {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    local: std::net::SocketAddr,
    /// The listening socket, for a forked copy of this value to close (see [`Drop`]).
    fd: std::os::fd::RawFd,
    /// The process that started the thread: only it can stop and join it.
    owner: u32,
}

impl MetricsEndpoint {
    /// Serves `GET /metrics` on `listener` with the text `render` makes for each scrape.
    pub fn start(
        listener: std::net::TcpListener,
        render: Arc<dyn Fn() -> String + Send + Sync>,
    ) -> io::Result<MetricsEndpoint> {
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("stogie-metrics".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = stopped => {}
                        _ = async {
                            loop {
                                if let Ok((stream, _)) = listener.accept().await {
                                    tokio::spawn(scrape(stream, render.clone()));
                                }
                            }
                        } => {}
                    }
                });
            })?;
        Ok(MetricsEndpoint {
            stop: Some(stop),
            thread: Some(thread),
            local,
            fd,
            owner: std::process::id(),
        })
    }

    /// The address served.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local
    }
}

impl Drop for MetricsEndpoint {
    /// Stops the endpoint's thread and waits for it. In a process forked from the one that
    /// started it (a worker forked by its supervisor), that thread does not exist: joining
    /// it would wait forever. There the copy only closes its listening socket, so that the
    /// port is not held by the workers after the supervisor is gone.
    fn drop(&mut self) {
        if std::process::id() != self.owner {
            // SAFETY: the descriptor was inherited by fork and nothing in this process
            // uses it (the runtime that polled it did not cross the fork).
            unsafe { libc::close(self.fd) };
            // Dropping the handle would detach a thread of another process, and dropping the
            // sender would wake a runtime of another process (through a shared eventfd).
            std::mem::forget(self.thread.take());
            std::mem::forget(self.stop.take());
            return;
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one scrape and closes.
async fn scrape(mut stream: tokio::net::TcpStream, render: Arc<dyn Fn() -> String + Send + Sync>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = bytes::BytesMut::with_capacity(1024);
    let head = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match head::parse(&mut buf, HeadLimits::default()) {
                Ok(Some(h)) => return Some(h),
                Ok(None) if buf.len() < 16 * 1024 => {}
                _ => return None,
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .flatten();
    let (status, body) = match &head {
        None => ("400 Bad Request", "Bad request\n".to_string()),
        Some(h) if &h.method[..] != b"GET" && !h.is_head() => (
            "405 Method Not Allowed",
            "Only GET is served here\n".to_string(),
        ),
        Some(h) if &h.path[..] != b"/metrics" => {
            ("404 Not Found", "Metrics are at /metrics\n".to_string())
        }
        Some(_) => ("200 OK", render()),
    };
    let kind = if status.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        response::TEXT
    };
    let send_body = !head.as_ref().is_some_and(|h| h.is_head());
    let out = response::closing_response(
        Version::Http11,
        status,
        kind,
        body.as_bytes(),
        send_body,
        "",
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
