//! Binding: TCP (IPv4, IPv6 dual stack), UNIX socket paths, Linux abstract names and
//! inherited file descriptors, with the socket options a server wants.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::addr::LocalAddr;

/// What to listen on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindAddr {
    /// A host (name or address; empty means every IPv4 address) and a port (0: any).
    Tcp(String, u16),
    /// A UNIX socket file.
    Unix(PathBuf),
    /// A Linux abstract socket name (without the leading NUL).
    Abstract(Vec<u8>),
    /// An already listening socket inherited from a parent process.
    Fd(RawFd),
}

/// The smallest listen backlog used, whatever is asked. Cheroot's default of 5 makes the
/// kernel drop connection attempts from any burst of clients (a browser opening six, a load
/// balancer's pool), each dropped SYN costing the client a one-second retransmit.
pub const MIN_BACKLOG: i32 = 1024;

/// Options applied when binding.
#[derive(Clone, Copy, Debug)]
pub struct ListenOptions {
    /// The `listen()` backlog (Cheroot's `request_queue_size`); at least [`MIN_BACKLOG`].
    pub backlog: i32,
    /// SO_REUSEPORT, so several processes can share the address.
    pub reuse_port: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: 5,
            reuse_port: false,
        }
    }
}

/// A bound, listening socket.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// UNIX (path or abstract); a path is removed when the listener is closed.
    Unix(UnixListener, LocalAddr),
}

impl Listener {
    /// Binds and listens.
    pub fn bind(addr: &BindAddr, opts: ListenOptions) -> io::Result<Listener> {
        match addr {
            BindAddr::Tcp(host, port) => bind_tcp(host, *port, opts),
            BindAddr::Unix(path) => bind_unix_path(path, opts),
            BindAddr::Abstract(name) => bind_abstract(name, opts),
            BindAddr::Fd(fd) => from_fd(*fd),
        }
    }

    /// The address actually bound (a port 0 resolved).
    pub fn local_addr(&self) -> io::Result<LocalAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(LocalAddr::Tcp),
            Listener::Unix(_, addr) => Ok(addr.clone()),
        }
    }

    /// Removes the socket file of a UNIX path listener (called when the server stops).
    pub fn cleanup(&self) {
        if let Listener::Unix(_, LocalAddr::Unix(path)) = self {
            if is_socket(path) {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Another listening socket on the same TCP address, in the same SO_REUSEPORT group
    /// (this listener must have been bound with `reuse_port`): the kernel spreads new
    /// connections evenly over the group, where processes sharing one socket take them in
    /// whatever order they wake (the busiest often taking most). `None` for UNIX sockets,
    /// which have no such groups.
    pub fn reuse_port_sibling(&self, opts: ListenOptions) -> io::Result<Option<Listener>> {
        let Listener::Tcp(l) = self else {
            return Ok(None);
        };
        let addr = l.local_addr()?;
        let v6_only = match addr {
            SocketAddr::V6(_) => Some(socket2::SockRef::from(l).only_v6()?),
            SocketAddr::V4(_) => None,
        };
        listen_tcp(
            addr,
            v6_only,
            ListenOptions {
                reuse_port: true,
                ..opts
            },
        )
        .map(Some)
    }

    /// The socket's descriptor, still owned by the listener (for socket options set
    /// elsewhere).
    pub fn as_raw_fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }

    /// A copy of the listening socket (for several accept loops or processes).
    pub fn try_clone(&self) -> io::Result<Listener> {
        Ok(match self {
            Listener::Tcp(l) => Listener::Tcp(l.try_clone()?),
            Listener::Unix(l, a) => Listener::Unix(l.try_clone()?, a.clone()),
        })
    }
}

fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("cannot resolve {host:?}"),
        )
    })
}

fn bind_tcp(host: &str, port: u16, opts: ListenOptions) -> io::Result<Listener> {
    let addr = resolve(host, port)?;
    // `::` serves IPv4 too (dual stack), as Cheroot does.
    let v6_only = match addr {
        SocketAddr::V6(v6) => Some(!v6.ip().is_unspecified()),
        SocketAddr::V4(_) => None,
    };
    listen_tcp(addr, v6_only, opts)
}

fn listen_tcp(
    addr: SocketAddr,
    v6_only: Option<bool>,
    opts: ListenOptions,
) -> io::Result<Listener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if let Some(only) = v6_only {
        socket.set_only_v6(only)?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(opts.backlog.max(MIN_BACKLOG))?;
    socket.set_nonblocking(true)?;
    Ok(Listener::Tcp(socket.into()))
}

fn is_socket(path: &std::path::Path) -> bool {
    std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

/// Clears the way for a socket file at `path`: a socket file left by a server that is gone
/// (nobody accepts on it) is removed, as is an empty regular file (what `mkstemp()` leaves
/// to reserve a name; nothing is lost with it). A socket a running server listens on, and
/// any other file, are refused: a typo in `--bind` must never delete someone's data.
fn clear_unix_path(path: &std::path::Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let kind = meta.file_type();
    if kind.is_socket() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running server", path.display()),
                ))
            }
            // Refused: a socket file left by a server that stopped or crashed.
            Err(_) => return std::fs::remove_file(path),
        }
    }
    if kind.is_file() && meta.len() == 0 {
        return std::fs::remove_file(path);
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} exists and is not a socket: refusing to replace it",
            path.display()
        ),
    ))
}

fn bind_unix_path(path: &std::path::Path, opts: ListenOptions) -> io::Result<Listener> {
    clear_unix_path(path)?;
    listen_unix(
        SockAddr::unix(path)?,
        opts,
        LocalAddr::Unix(path.to_path_buf()),
    )
}

fn bind_abstract(name: &[u8], opts: ListenOptions) -> io::Result<Listener> {
    // socket2 makes a Linux abstract address of a path that starts with a NUL byte.
    let mut raw = Vec::with_capacity(name.len() + 1);
    raw.push(0);
    raw.extend_from_slice(name);
    let addr = SockAddr::unix(std::ffi::OsStr::from_bytes(&raw))?;
    listen_unix(addr, opts, LocalAddr::Abstract(name.to_vec()))
}

fn listen_unix(addr: SockAddr, opts: ListenOptions, local: LocalAddr) -> io::Result<Listener> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&addr)?;
    socket.listen(opts.backlog.max(MIN_BACKLOG))?;
    socket.set_nonblocking(true)?;
    Ok(Listener::Unix(socket.into(), local))
}

fn from_fd(fd: RawFd) -> io::Result<Listener> {
    // SAFETY: the caller hands over ownership of an open listening socket.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    socket.set_nonblocking(true)?;
    let local = socket.local_addr()?;
    if local.as_socket().is_some() {
        Ok(Listener::Tcp(socket.into()))
    } else {
        let addr = match (local.as_pathname(), local.as_abstract_namespace()) {
            (Some(path), _) => LocalAddr::Unix(path.to_path_buf()),
            (None, name) => LocalAddr::Abstract(name.unwrap_or_default().to_vec()),
        };
        let unix: UnixListener = socket.into();
        Ok(Listener::Unix(unix, addr))
    }
}
