//! Where a request really comes from when a proxy stands in front of the server: HAProxy's
//! PROXY protocol (v1 text, v2 binary), read once before a connection's first byte of HTTP,
//! and the forwarded headers (RFC 7239 `Forwarded`, `X-Forwarded-For/-Proto/-Host/-Port`,
//! and the scheme's other names `X-Forwarded-Ssl` and `X-Forwarded-Protocol`), believed only
//! from trusted peers. Bytes in, values out: no socket here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;

use crate::error::HttpError;
use crate::message::{is_valid_host, RequestHead};

/// A set of peers whose proxy information is believed: addresses and CIDR networks, or
/// everyone (`*`). gunicorn's `--forwarded-allow-ips`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedPeers {
    any: bool,
    nets: Vec<(IpAddr, u8)>,
}

impl TrustedPeers {
    /// Nobody.
    pub fn none() -> Self {
        TrustedPeers::default()
    }

    /// Parses a comma-separated list: `*`, addresses (`127.0.0.1`, `::1`) and networks
    /// (`10.0.0.0/8`, `fd00::/8`). Spaces around items are allowed; an empty list trusts
    /// nobody.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut peers = TrustedPeers::none();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                peers.any = true;
                continue;
            }
            let (addr, prefix) = match item.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (item, None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or network"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => match p.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(format!("{item:?}: the prefix length must be 0 to {max}")),
                },
            };
            peers.nets.push((ip, prefix));
        }
        Ok(peers)
    }

    /// Whether every peer is trusted (`*`).
    pub fn trusts_all(&self) -> bool {
        self.any
    }

    /// Whether `ip` is trusted. An IPv4 address seen through a dual-stack socket
    /// (`::ffff:127.0.0.1`) counts as the IPv4 address.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        if self.any {
            return true;
        }
        let ip = ip.to_canonical();
        self.nets
            .iter()
            .any(|&(net, prefix)| in_net(ip, net, prefix))
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

// --- forwarded headers ------------------------------------------------------------------

/// The client as the trusted proxies in front describe it. Every field is `None` where they
/// said nothing believable; the connection's own values stand there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// The client's address (REMOTE_ADDR), and its port when the proxy gave one.
    pub client: Option<(IpAddr, Option<u16>)>,
    /// `http` or `https` (wsgi.url_scheme).
    pub scheme: Option<&'static str>,
    /// The host the client asked for (HTTP_HOST), `host[:port]`.
    pub host: Option<Bytes>,
    /// The port the client connected to (SERVER_PORT).
    pub port: Option<u16>,
}

impl Forwarded {
    /// Whether the proxies said anything believable.
    pub fn is_empty(&self) -> bool {
        self.client.is_none() && self.scheme.is_none() && self.host.is_none() && self.port.is_none()
    }
}

/// Reads the forwarded headers of a request that came from `peer` (None: a UNIX socket
/// peer, which only a local process with access to the socket file can be, and which is
/// trusted like a trusted address). Nothing is believed from an untrusted peer.
///
/// The client address is the rightmost one in the chain that is not itself a trusted proxy:
/// each proxy appends the address it saw, so entries left of an untrusted one may be forged
/// by the client. RFC 7239 `Forwarded` is used when present, else `X-Forwarded-*`.
///
/// The scheme has three names among the `X-Forwarded-*` headers (`-Proto: https`, `-Ssl:
/// on`, `-Protocol: ssl`, gunicorn's `secure_scheme_headers`); when two of them disagree
/// the request is refused, as gunicorn does: which one the proxy meant cannot be told.
pub fn forwarded(
    head: &RequestHead,
    peer: Option<IpAddr>,
    trusted: &TrustedPeers,
) -> Result<Forwarded, HttpError> {
    if peer.is_some_and(|ip| !trusted.trusts(ip)) {
        return Ok(Forwarded::default());
    }
    // Most requests carry none of these: one look at the names decides.
    let relevant = head.headers.iter().any(|h| {
        let n = &h.name;
        n.eq_ignore_ascii_case(b"forwarded")
            || (n.len() > 12 && n[..12].eq_ignore_ascii_case(b"x-forwarded-"))
    });
    if !relevant {
        return Ok(Forwarded::default());
    }
    let values = |name: &'static str| {
        head.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name.as_bytes()))
            .flat_map(|h| split_list(&h.value))
    };
    if head.header("forwarded").is_some() {
        return Ok(from_forwarded(values("forwarded").collect(), trusted));
    }
    let mut out = Forwarded {
        client: client_of(values("x-forwarded-for").map(parse_node).collect(), trusted),
        ..Forwarded::default()
    };
    let schemes = [
        values("x-forwarded-proto").last().and_then(scheme_of),
        values("x-forwarded-ssl").last().and_then(ssl_flag_scheme),
        values("x-forwarded-protocol")
            .last()
            .and_then(protocol_scheme),
    ];
    for scheme in schemes.into_iter().flatten() {
        if out.scheme.is_some_and(|s| s != scheme) {
            return Err(HttpError::BadRequest("Contradictory scheme headers."));
        }
        out.scheme = Some(scheme);
    }
    out.host = values("x-forwarded-host")
        .last()
        .filter(|h| !h.is_empty() && is_valid_host(h))
        .map(Bytes::copy_from_slice);
    out.port = values("x-forwarded-port").last().and_then(port_of);
    Ok(out)
}

/// The comma-separated items of a header value, trimmed, empty ones skipped. Quoted commas
/// (RFC 7239 allows quoted-strings) do not split.
fn split_list(value: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, &b) in value.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                out.push(value[start..i].trim_ascii());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim_ascii());
    out.retain(|s| !s.is_empty());
    out
}

fn scheme_of(v: &[u8]) -> Option<&'static str> {
    if v.eq_ignore_ascii_case(b"https") {
        Some("https")
    } else if v.eq_ignore_ascii_case(b"http") {
        Some("http")
    } else {
        None
    }
}

/// `X-Forwarded-Ssl: on|off` (Microsoft's and Heroku's name for the scheme).
fn ssl_flag_scheme(v: &[u8]) -> Option<&'static str> {
    if v.eq_ignore_ascii_case(b"on") {
        Some("https")
    } else if v.eq_ignore_ascii_case(b"off") {
        Some("http")
    } else {
        None
    }
}

/// `X-Forwarded-Protocol: ssl|https|http`.
fn protocol_scheme(v: &[u8]) -> Option<&'static str> {
    if v.eq_ignore_ascii_case(b"ssl") {
        Some("https")
    } else {
        scheme_of(v)
    }
}

fn port_of(v: &[u8]) -> Option<u16> {
    if v.is_empty() || v.len() > 5 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A node of a forwarding chain: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`, quoted or not. None for obfuscated or unknown nodes.
fn parse_node(v: &[u8]) -> Option<(IpAddr, Option<u16>)> {
    let v = v
        .strip_prefix(b"\"")
        .and_then(|s| s.strip_suffix(b"\""))
        .unwrap_or(v);
    let s = std::str::from_utf8(v).ok()?;
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((ip, None));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some((sa.ip(), Some(sa.port())));
    }
    let inner = s.strip_prefix('[').and_then(|s| s.strip_suffix(']'))?;
    Some((inner.parse::<Ipv6Addr>().ok()?.into(), None))
}

/// The rightmost node not itself a trusted proxy; with every node trusted, the leftmost.
/// A node that cannot be read ends the walk: nothing left of it can be vouched for.
fn client_of(
    chain: Vec<Option<(IpAddr, Option<u16>)>>,
    trusted: &TrustedPeers,
) -> Option<(IpAddr, Option<u16>)> {
    let mut last = None;
    for node in chain.into_iter().rev() {
        let Some(node) = node else { break };
        last = Some(node);
        if !trusted.trusts(node.0) {
            break;
        }
    }
    last
}

/// RFC 7239: `for=..;proto=..;host=..` elements, one per proxy, rightmost closest.
fn from_forwarded(elements: Vec<&[u8]>, trusted: &TrustedPeers) -> Forwarded {
    let mut fors = Vec::with_capacity(elements.len());
    let mut out = Forwarded::default();
    for (i, element) in elements.iter().enumerate() {
        let last = i + 1 == elements.len();
        let mut node = None;
        for pair in element.split(|&b| b == b';') {
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (name, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
            let value = value
                .strip_prefix(b"\"")
                .and_then(|s| s.strip_suffix(b"\""))
                .unwrap_or(value);
            if name.eq_ignore_ascii_case(b"for") {
                node = parse_node(value);
            } else if last && name.eq_ignore_ascii_case(b"proto") {
                // The closest proxy's word on the scheme and host: it is the one trusted.
                out.scheme = scheme_of(value);
            } else if last && name.eq_ignore_ascii_case(b"host") && is_valid_host(value) {
                out.host = (!value.is_empty()).then(|| Bytes::copy_from_slice(value));
            }
        }
        fors.push(node);
    }
    out.client = client_of(fors, trusted);
    out
}

// --- PROXY protocol ---------------------------------------------------------------------

/// What a PROXY protocol header says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The proxy's own connection (a health check): the socket's addresses stand.
    Local,
    /// A proxied TCP connection: the client's address and the one it connected to.
    Proxied {
        /// The client.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
}

/// Why a PROXY protocol header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyError {
    /// The connection does not start with a PROXY protocol signature.
    Missing,
    /// It does, but what follows is malformed or over the limits.
    Malformed(&'static str),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Missing => f.write_str("no PROXY protocol header"),
            ProxyError::Malformed(why) => write!(f, "malformed PROXY protocol header: {why}"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// The longest v1 line, CRLF included (the specification's limit).
const V1_MAX: usize = 107;
/// The v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The most v2 address and TLV bytes taken: addresses are at most 216 bytes, and HAProxy's
/// TLVs (ALPN, authority, TLS details, unique id) fit well within this.
const V2_MAX_PAYLOAD: usize = 2048;

/// Reads a PROXY protocol header (v1 or v2) at the start of `buf`. `Ok(None)`: more bytes
/// are needed (and may come: `buf` is still a prefix of a valid header). `Ok(Some((header,
/// n)))`: the header is the first `n` bytes.
pub fn parse_proxy_header(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let v1 = b"PROXY ";
    if buf[0] == b'P' {
        let n = buf.len().min(v1.len());
        if buf[..n] != v1[..n] {
            return Err(ProxyError::Missing);
        }
        return parse_v1(buf);
    }
    if buf[0] == b'\r' {
        let n = buf.len().min(V2_SIGNATURE.len());
        if buf[..n] != V2_SIGNATURE[..n] {
            return Err(ProxyError::Missing);
        }
        return parse_v2(buf);
    }
    Err(ProxyError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let bad = ProxyError::Malformed;
    let Some(lf) = buf.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(bad("v1 line longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    let line = buf[..lf]
        .strip_suffix(b"\r")
        .ok_or(bad("v1 line not ended by CRLF"))?;
    let line = std::str::from_utf8(line).map_err(|_| bad("v1 line not ASCII"))?;
    let mut parts = line.split(' ');
    parts.next(); // "PROXY"
    let header = match parts.next() {
        // The proxy could not tell (or would not): the rest of the line is to be ignored.
        Some("UNKNOWN") => ProxyHeader::Local,
        Some(proto @ ("TCP4" | "TCP6")) => {
            let mut field = || parts.next().ok_or(bad("v1 line has too few fields"));
            let (src, dst, sport, dport) = (field()?, field()?, field()?, field()?);
            if parts.next().is_some() {
                return Err(bad("v1 line has too many fields"));
            }
            let addr = |s: &str| -> Result<IpAddr, ProxyError> {
                let ip: IpAddr = if proto == "TCP4" {
                    s.parse::<Ipv4Addr>().map(IpAddr::V4)
                } else {
                    s.parse::<Ipv6Addr>().map(IpAddr::V6)
                }
                .map_err(|_| bad("v1 address does not match its protocol"))?;
                Ok(ip)
            };
            let port = |s: &str| -> Result<u16, ProxyError> {
                // Decimal, no sign, no leading zero (the specification's words).
                let plain = !s.is_empty()
                    && s.len() <= 5
                    && s.bytes().all(|b| b.is_ascii_digit())
                    && (s == "0" || !s.starts_with('0'));
                plain
                    .then(|| s.parse().ok())
                    .flatten()
                    .ok_or(bad("v1 port is not a number from 0 to 65535"))
            };
            ProxyHeader::Proxied {
                source: SocketAddr::new(addr(src)?, port(sport)?),
                destination: SocketAddr::new(addr(dst)?, port(dport)?),
            }
        }
        _ => return Err(bad("v1 protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Some((header, lf + 1)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let bad = ProxyError::Malformed;
    if buf.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(bad("v2 version is not 2"));
    }
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_PAYLOAD {
        return Err(bad("v2 header longer than 2048 bytes"));
    }
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let payload = &buf[16..16 + len];
    let header = match ver_cmd & 0x0f {
        0x0 => ProxyHeader::Local,
        0x1 => match family {
            // TCP over IPv4: 4 + 4 + 2 + 2 bytes.
            0x11 => {
                let a = payload
                    .get(..12)
                    .ok_or(bad("v2 IPv4 addresses cut short"))?;
                let ip = |i: usize| IpAddr::from([a[i], a[i + 1], a[i + 2], a[i + 3]]);
                let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
                ProxyHeader::Proxied {
                    source: SocketAddr::new(ip(0), port(8)),
                    destination: SocketAddr::new(ip(4), port(10)),
                }
            }
            // TCP over IPv6: 16 + 16 + 2 + 2 bytes.
            0x21 => {
                let a = payload
                    .get(..36)
                    .ok_or(bad("v2 IPv6 addresses cut short"))?;
                let ip = |i: usize| {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(&a[i..i + 16]);
                    IpAddr::from(o)
                };
                let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
                ProxyHeader::Proxied {
                    source: SocketAddr::new(ip(0), port(32)),
                    destination: SocketAddr::new(ip(16), port(34)),
                }
            }
            // UNSPEC, UDP, UNIX: nothing this server can use; the socket's addresses stand.
            0x00 | 0x12 | 0x22 | 0x31 | 0x32 => ProxyHeader::Local,
            _ => return Err(bad("v2 address family is unknown")),
        },
        _ => return Err(bad("v2 command is neither LOCAL nor PROXY")),
    };
    Ok(Some((header, 16 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;

    fn trusted(list: &str) -> TrustedPeers {
        TrustedPeers::parse(list).unwrap()
    }

    fn head(headers: &str) -> RequestHead {
        let raw = format!("GET / HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
        let mut buf = bytes::BytesMut::from(raw.as_bytes());
        crate::h1::head::parse(&mut buf, &ServerConfig::default())
            .unwrap()
            .unwrap()
            .head
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn trusted_peers_parse_and_match() {
        let t = trusted("127.0.0.1, ::1,10.0.0.0/8 , fd00::/8");
        assert!(t.trusts(ip("127.0.0.1")));
        assert!(
            t.trusts(ip("::ffff:127.0.0.1")),
            "IPv4 through a dual-stack socket"
        );
        assert!(t.trusts(ip("10.200.3.4")));
        assert!(t.trusts(ip("fd12::1")));
        assert!(!t.trusts(ip("127.0.0.2")));
        assert!(!t.trusts(ip("11.0.0.1")));
        assert!(trusted("*").trusts(ip("203.0.113.9")));
        assert!(!trusted("").trusts(ip("127.0.0.1")));
        assert!(trusted("0.0.0.0/0").trusts(ip("8.8.8.8")));
        for bad in ["localhost", "10.0.0.0/33", "::1/129", "1.2.3", "10.0.0.0/x"] {
            assert!(TrustedPeers::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nothing_is_believed_from_an_untrusted_peer() {
        let h = head("X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n");
        let f = forwarded(&h, Some(ip("203.0.113.5")), &trusted("127.0.0.1")).unwrap();
        assert!(f.is_empty());
    }

    #[test]
    fn x_forwarded_from_a_trusted_peer() {
        let h = head(
            "X-Forwarded-For: 9.9.9.9, 1.2.3.4\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: example.com\r\nX-Forwarded-Port: 443\r\n",
        );
        let f = forwarded(&h, Some(ip("127.0.0.1")), &trusted("127.0.0.1")).unwrap();
        // The rightmost untrusted address: 9.9.9.9 may be the client's own invention.
        assert_eq!(f.client, Some((ip("1.2.3.4"), None)));
        assert_eq!(f.scheme, Some("https"));
        assert_eq!(f.host.as_deref(), Some(&b"example.com"[..]));
        assert_eq!(f.port, Some(443));
        // A UNIX socket peer is trusted.
        assert_eq!(
            forwarded(&h, None, &trusted("")).unwrap().client,
            Some((ip("1.2.3.4"), None))
        );
    }

    #[test]
    fn trusted_hops_are_skipped_and_star_takes_the_first() {
        let h = head("X-Forwarded-For: 5.6.7.8, 10.0.0.2\r\nX-Forwarded-For: 10.0.0.3\r\n");
        let t = trusted("127.0.0.1,10.0.0.0/8");
        let f = forwarded(&h, Some(ip("127.0.0.1")), &t).unwrap();
        assert_eq!(f.client, Some((ip("5.6.7.8"), None)));
        // Repeated fields make one list, in order.
        let f = forwarded(&h, Some(ip("127.0.0.1")), &trusted("*")).unwrap();
        assert_eq!(
            f.client,
            Some((ip("5.6.7.8"), None)),
            "each hop trusted: the leftmost"
        );
    }

    #[test]
    fn unreadable_values_are_not_believed() {
        let h = head(
            "X-Forwarded-For: 1.1.1.1, unknown\r\nX-Forwarded-Proto: gopher\r\n\
             X-Forwarded-Host: a b\r\nX-Forwarded-Port: 99999\r\n",
        );
        let f = forwarded(&h, Some(ip("127.0.0.1")), &trusted("127.0.0.1")).unwrap();
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn the_scheme_by_its_three_names_and_a_contradiction_refused() {
        let t = trusted("127.0.0.1");
        let scheme =
            |headers: &str| forwarded(&head(headers), Some(ip("127.0.0.1")), &t).map(|f| f.scheme);
        assert_eq!(scheme("X-Forwarded-Ssl: on\r\n"), Ok(Some("https")));
        assert_eq!(scheme("X-Forwarded-Ssl: off\r\n"), Ok(Some("http")));
        assert_eq!(scheme("X-Forwarded-Protocol: ssl\r\n"), Ok(Some("https")));
        assert_eq!(
            scheme("X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: on\r\n"),
            Ok(Some("https"))
        );
        // gunicorn's corpus, invalid/019.
        assert_eq!(
            scheme("X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n"),
            Err(HttpError::BadRequest("Contradictory scheme headers."))
        );
        assert!(scheme("X-Forwarded-Protocol: http\r\nX-Forwarded-Ssl: on\r\n").is_err());
        // Unreadable values say nothing, so contradict nothing.
        assert_eq!(
            scheme("X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: maybe\r\n"),
            Ok(Some("https"))
        );
        // From an untrusted peer nothing is read, so nothing is refused.
        let h = head("X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n");
        assert_eq!(
            forwarded(&h, Some(ip("203.0.113.5")), &t),
            Ok(Forwarded::default())
        );
    }

    #[test]
    fn rfc7239_forwarded() {
        let h = head(
            "Forwarded: for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\";proto=https;\
             host=shop.example\r\nX-Forwarded-For: 6.6.6.6\r\n",
        );
        let f = forwarded(&h, Some(ip("::1")), &trusted("::1")).unwrap();
        assert_eq!(f.client, Some((ip("2001:db8::1"), Some(4711))));
        assert_eq!(f.scheme, Some("https"));
        assert_eq!(f.host.as_deref(), Some(&b"shop.example"[..]));
        let f = forwarded(&h, Some(ip("::1")), &trusted("::1, 2001:db8::/32")).unwrap();
        assert_eq!(f.client, Some((ip("192.0.2.60"), None)));
        let h = head("Forwarded: for=_hidden, for=198.51.100.17\r\n");
        let f = forwarded(&h, Some(ip("::1")), &trusted("*")).unwrap();
        assert_eq!(
            f.client,
            Some((ip("198.51.100.17"), None)),
            "obfuscated ends the walk"
        );
    }

    #[test]
    fn proxy_v1() {
        let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /";
        let (h, n) = parse_proxy_header(line).unwrap().unwrap();
        assert_eq!(&line[n..], b"GET /");
        assert_eq!(
            h,
            ProxyHeader::Proxied {
                source: "192.168.0.1:56324".parse().unwrap(),
                destination: "192.168.0.11:443".parse().unwrap(),
            }
        );
        let (h, _) = parse_proxy_header(b"PROXY TCP6 ::1 2001:db8::2 1 80\r\n")
            .unwrap()
            .unwrap();
        assert!(matches!(h, ProxyHeader::Proxied { source, .. } if source.port() == 1));
        let (h, _) = parse_proxy_header(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h, ProxyHeader::Local);
        // Every prefix of a valid header asks for more.
        for i in 0..line.len() - 5 {
            assert_eq!(parse_proxy_header(&line[..i]), Ok(None), "{i}");
        }
    }

    #[test]
    fn proxy_v1_refusals() {
        for bad in [
            &b"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n"[..],
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
            b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
        ] {
            assert!(
                matches!(parse_proxy_header(bad), Err(ProxyError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 120]].concat();
        assert!(
            parse_proxy_header(&long).is_err(),
            "no line end within 107 bytes"
        );
        assert_eq!(
            parse_proxy_header(b"GET / HTTP/1.1\r\n"),
            Err(ProxyError::Missing)
        );
        assert_eq!(parse_proxy_header(b"PROXZ"), Err(ProxyError::Missing));
        assert_eq!(
            parse_proxy_header(b"\x16\x03\x01"),
            Err(ProxyError::Missing)
        );
    }

    fn v2(cmd: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | cmd);
        out.push(family);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn proxy_v2() {
        let mut payload = vec![10, 0, 0, 1, 10, 0, 0, 2, 0x1f, 0x90, 0x01, 0xbb];
        payload.extend_from_slice(&[0x04, 0x00, 0x02, b'h', b'2']); // a TLV, skipped
        let mut raw = v2(1, 0x11, &payload);
        raw.extend_from_slice(b"GET");
        let (h, n) = parse_proxy_header(&raw).unwrap().unwrap();
        assert_eq!(&raw[n..], b"GET");
        assert_eq!(
            h,
            ProxyHeader::Proxied {
                source: "10.0.0.1:8080".parse().unwrap(),
                destination: "10.0.0.2:443".parse().unwrap(),
            }
        );
        for i in 0..n {
            assert_eq!(parse_proxy_header(&raw[..i]), Ok(None), "{i}");
        }
        let mut six = vec![0u8; 36];
        six[15] = 1;
        six[31] = 2;
        six[35] = 80;
        let (h, _) = parse_proxy_header(&v2(1, 0x21, &six)).unwrap().unwrap();
        assert_eq!(
            h,
            ProxyHeader::Proxied {
                source: "[::1]:0".parse().unwrap(),
                destination: "[::2]:80".parse().unwrap(),
            }
        );
        let (h, _) = parse_proxy_header(&v2(0, 0x00, &[])).unwrap().unwrap();
        assert_eq!(h, ProxyHeader::Local);
    }

    #[test]
    fn proxy_v2_refusals() {
        assert!(
            parse_proxy_header(&v2(1, 0x11, &[1, 2, 3])).is_err(),
            "short addresses"
        );
        assert!(
            parse_proxy_header(&v2(2, 0x11, &[0; 12])).is_err(),
            "unknown command"
        );
        assert!(
            parse_proxy_header(&v2(1, 0x44, &[0; 12])).is_err(),
            "unknown family"
        );
        let mut big = v2(1, 0x11, &[]);
        big[14..16].copy_from_slice(&4000u16.to_be_bytes());
        assert!(parse_proxy_header(&big).is_err(), "over the size limit");
        let mut v1 = v2(1, 0x11, &[0; 12]);
        v1[12] = 0x11;
        assert!(parse_proxy_header(&v1).is_err(), "version 1 in a v2 header");
    }
}
