//! Who the client is and where the server listens.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Credentials of the process at the other end of a UNIX socket (SO_PEERCRED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id, when the kernel tells it.
    pub pid: Option<i32>,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Who the client is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAddr {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A UNIX socket peer, with its credentials when asked for.
    Unix(Option<PeerCred>),
}

impl fmt::Display for PeerAddr {
    /// The peer as log messages name it: `192.0.2.1:4711`, `[2001:db8::1]:4711`, or `a
    /// UNIX socket client`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(a) => a.fmt(f),
            PeerAddr::Unix(_) => f.write_str("a UNIX socket client"),
        }
    }
}

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalAddr {
    /// A TCP address (the port resolved when 0 was asked).
    Tcp(SocketAddr),
    /// A UNIX socket path.
    Unix(PathBuf),
    /// A Linux abstract socket name (without the leading NUL).
    Abstract(Vec<u8>),
}
