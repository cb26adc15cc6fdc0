//! The byte streams a connection runs over, and what each can do beyond read and write.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio::net::{TcpStream, UnixStream};

/// A connected stream: TCP or UNIX now, TLS later.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready once the stream has bytes to read (or an error or end to report). Polled
    /// without a buffer, and with no future to hold: an idle keep-alive connection waits
    /// here holding next to no memory. No default: a transport that answered Ready
    /// without bytes would make idle connections spin.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Copies bytes waiting to be read into `buf` without taking them (MSG_PEEK): Ready with
    /// 0 at the client's end. For what comes before the stream proper (a PROXY protocol
    /// header), so only plain sockets have it.
    fn poll_peek(&self, _cx: &mut Context<'_>, _buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "peek is only supported on plain sockets",
        )))
    }

    /// Whether [`Transport::sendfile`] moves bytes in the kernel.
    fn can_sendfile(&self) -> bool {
        false
    }

    /// Sends up to `count` bytes of `file` from `offset`; returns how many went out.
    fn sendfile(
        &mut self,
        _file: &File,
        _offset: u64,
        _count: usize,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        async {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "sendfile is not supported on this transport",
            ))
        }
    }
}

macro_rules! kernel_sendfile {
    ($t:ty) => {
        impl Transport for $t {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_read_ready(self, cx)
            }

            fn poll_peek(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
                loop {
                    match <$t>::poll_read_ready(self, cx) {
                        Poll::Ready(Ok(())) => {}
                        other => return other.map(|r| r.map(|()| 0)),
                    }
                    // try_io clears the readiness on WouldBlock, so the next poll waits.
                    let res = self.try_io(Interest::READABLE, || {
                        // SAFETY: `buf` is valid for writes of its length.
                        let n = unsafe {
                            libc::recv(
                                self.as_raw_fd(),
                                buf.as_mut_ptr().cast(),
                                buf.len(),
                                libc::MSG_PEEK,
                            )
                        };
                        if n < 0 {
                            Err(io::Error::last_os_error())
                        } else {
                            Ok(n as usize)
                        }
                    });
                    match res {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        other => return Poll::Ready(other),
                    }
                }
            }

            fn can_sendfile(&self) -> bool {
                true
            }

            fn sendfile(
                &mut self,
                file: &File,
                offset: u64,
                count: usize,
            ) -> impl Future<Output = io::Result<usize>> + Send {
                async move {
                    loop {
                        self.writable().await?;
                        let res = self.try_io(Interest::WRITABLE, || {
                            let mut off = offset as libc::off_t;
                            // SAFETY: both descriptors are open for the duration of the call.
                            let n = unsafe {
                                libc::sendfile(self.as_raw_fd(), file.as_raw_fd(), &mut off, count)
                            };
                            if n < 0 {
                                Err(io::Error::last_os_error())
                            } else {
                                Ok(n as usize)
                            }
                        });
                        match res {
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                            other => return other,
                        }
                    }
                }
            }
        }
    };
}

kernel_sendfile!(TcpStream);
kernel_sendfile!(UnixStream);
