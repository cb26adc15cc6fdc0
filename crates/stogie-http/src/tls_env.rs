//! What one TLS connection is, in the CGI variables of Apache's mod_ssl as Cheroot's builtin
//! adapter names and formats them (`SSL_PROTOCOL`, `SSL_CLIENT_S_DN_CN`, ...). Computed once,
//! when the handshake ends, and shared by every request of the connection.

use std::any::Any;
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::server::ServerConnection;
use rustls::{CipherSuite, HandshakeKind, ProtocolVersion};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The TLS library, as `SSL_VERSION_LIBRARY` names it.
pub const LIBRARY: &str = "rustls/0.23 (ring)";

/// The facts of one TLS connection.
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub protocol: &'static str,
    /// The cipher suite, by its OpenSSL name (`TLS_AES_256_GCM_SHA384`,
    /// `ECDHE-RSA-AES128-GCM-SHA256`).
    pub cipher: &'static str,
    /// The server name the client asked for (SNI).
    pub sni: Option<String>,
    /// The application protocol agreed on (ALPN), if any.
    pub alpn: Option<Vec<u8>>,
    /// Whether the session was resumed (no full handshake).
    pub resumed: bool,
    /// The client's certificate chain, verified, when the server asked for one and got it.
    pub peer_certificates: Vec<CertificateDer<'static>>,
    /// Names and most values are static text: kept for the connection's life, a copy of
    /// each would be a dozen small allocations per connection.
    vars: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    server: Arc<ServerVars>,
    gateway_slot: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for TlsInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsInfo")
            .field("protocol", &self.protocol)
            .field("cipher", &self.cipher)
            .field("sni", &self.sni)
            .field("resumed", &self.resumed)
            .finish_non_exhaustive()
    }
}

impl TlsInfo {
    /// Every CGI variable: the server's, then the connection's.
    pub fn environ(&self) -> impl Iterator<Item = (&str, &str)> {
        self.server.environ().chain(self.connection_environ())
    }

    /// The variables of this connection (protocol, cipher, session, SNI, the client's
    /// certificate, `SSL_SERVER_V_REMAIN`).
    pub fn connection_environ(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    /// [`TlsInfo::connection_environ`], each value with whether it is common text: one of
    /// the few values any connection may have (`on`, a protocol or cipher name, `NONE`), never
    /// one of the connection's own (its session ID, the server name its client sent, its
    /// client certificate's fields). A gateway may share one copy of those among connections.
    pub fn connection_environ_common(&self) -> impl Iterator<Item = (&str, &str, bool)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_ref(), matches!(v, Cow::Borrowed(_))))
    }

    /// The variables every connection made with the same server certificate shares.
    pub fn server(&self) -> &ServerVars {
        &self.server
    }

    /// A place where a gateway keeps its own form of [`TlsInfo::connection_environ`] (the
    /// WSGI gateway: a Python dict), made by the first request of the connection and reused
    /// by the rest.
    pub fn gateway_slot(&self) -> &OnceLock<Box<dyn Any + Send + Sync>> {
        &self.gateway_slot
    }

    /// Reads the facts of a connection whose handshake has completed. `client_auth`: the
    /// server asked for client certificates (else `SSL_CLIENT_VERIFY` is `NONE`).
    pub(crate) fn new(conn: &ServerConnection, server: Arc<ServerVars>, client_auth: bool) -> Self {
        let protocol = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        };
        let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
        let (cipher, bits) = suite.and_then(suite_facts).unwrap_or(("", 0));
        let sni = conn.server_name().map(str::to_owned);
        let resumed = matches!(conn.handshake_kind(), Some(HandshakeKind::Resumed));
        let peer_certificates: Vec<CertificateDer<'static>> = if client_auth {
            conn.peer_certificates()
                .map(<[_]>::to_vec)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut vars = Vec::with_capacity(12);
        let mut put = |k: &'static str, v: Cow<'static, str>| vars.push((k.into(), v));
        put("HTTPS", "on".into());
        put("SSL_PROTOCOL", protocol.into());
        put("SSL_CIPHER", cipher.into());
        put("SSL_CIPHER_EXPORT", "".into());
        let bits: Cow<'static, str> = match bits {
            128 => "128".into(),
            256 => "256".into(),
            b => b.to_string().into(),
        };
        put("SSL_CIPHER_USEKEYSIZE", bits.clone());
        put("SSL_CIPHER_ALGKEYSIZE", bits);
        // rustls does not show the session ID it may have sent; a value exported from the
        // session's secrets names the session as uniquely.
        if let Ok(id) = conn.export_keying_material([0u8; 32], b"EXPORTER-stogie-session-id", None)
        {
            put("SSL_SESSION_ID", hex_lower(&id).into());
        }
        put(
            "SSL_SESSION_RESUMED",
            if resumed { "Resumed" } else { "Initial" }.into(),
        );
        if let Some(name) = &sni {
            put("SSL_TLS_SNI", name.clone().into());
        }
        let now = unix_now();
        if let Some(not_after) = server.not_after {
            put("SSL_SERVER_V_REMAIN", days_left(not_after, now).into());
        }
        match peer_certificates.first() {
            Some(cert) => {
                put("SSL_CLIENT_VERIFY", "SUCCESS".into());
                let mut client = Vec::new();
                if let Some(not_after) = cert_vars("SSL_CLIENT", cert, &mut client) {
                    client.push(("SSL_CLIENT_V_REMAIN".into(), days_left(not_after, now)));
                }
                client.push(("SSL_CLIENT_CERT".into(), pem(cert)));
                vars.extend(client.into_iter().map(|(k, v)| (k.into(), v.into())));
            }
            None => put("SSL_CLIENT_VERIFY", "NONE".into()),
        }
        vars.shrink_to_fit();
        TlsInfo {
            protocol,
            cipher,
            sni,
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            resumed,
            peer_certificates,
            vars,
            server,
            gateway_slot: OnceLock::new(),
        }
    }
}

/// The variables of a server certificate (`SSL_SERVER_*`, but `_V_REMAIN`) and the
/// `SSL_VERSION_*` names, the same for every connection that uses the certificate.
#[derive(Debug, Default)]
pub struct ServerVars {
    vars: Vec<(String, String)>,
    not_after: Option<i64>,
    gateway_slot: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl ServerVars {
    /// The variables.
    pub fn environ(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A place where a gateway keeps its own form of [`ServerVars::environ`], shared by every
    /// connection made with this certificate.
    pub fn gateway_slot(&self) -> &OnceLock<Box<dyn Any + Send + Sync>> {
        &self.gateway_slot
    }

    /// `SSL_SERVER_*` of the certificate `leaf`, and the interface and library names.
    pub(crate) fn new(leaf: &CertificateDer<'_>, interface: &str) -> Self {
        let mut vars = vec![
            ("SSL_VERSION_INTERFACE".to_owned(), interface.to_owned()),
            ("SSL_VERSION_LIBRARY".to_owned(), LIBRARY.to_owned()),
        ];
        let not_after = cert_vars("SSL_SERVER", leaf, &mut vars);
        vars.push(("SSL_SERVER_CERT".to_owned(), pem(leaf)));
        ServerVars {
            vars,
            not_after,
            gateway_slot: OnceLock::new(),
        }
    }
}

/// The OpenSSL name and key size in bits of a cipher suite rustls offers.
pub(crate) fn suite_facts(suite: CipherSuite) -> Option<(&'static str, u32)> {
    SUITES
        .iter()
        .find(|s| s.0 == suite)
        .map(|&(_, openssl, _, bits)| (openssl, bits))
}

/// Every cipher suite of rustls's ring provider: OpenSSL's name, the IANA name, key bits.
pub(crate) const SUITES: [(CipherSuite, &str, &str, u32); 9] = [
    (
        CipherSuite::TLS13_AES_256_GCM_SHA384,
        "TLS_AES_256_GCM_SHA384",
        "TLS_AES_256_GCM_SHA384",
        256,
    ),
    (
        CipherSuite::TLS13_AES_128_GCM_SHA256,
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_128_GCM_SHA256",
        128,
    ),
    (
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256",
        256,
    ),
    (
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        256,
    ),
    (
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        128,
    ),
    (
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        256,
    ),
    (
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        256,
    ),
    (
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        128,
    ),
    (
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        256,
    ),
];

/// Attribute types by OID: mod_ssl's short code where it has one (the code names the
/// `_DN_<code>` variable), else OpenSSL's long name (which only appears inside `_DN`).
const DN_ATTRS: [(&str, &str, bool); 22] = [
    ("2.5.4.6", "C", true),
    ("2.5.4.8", "ST", true),
    ("2.5.4.7", "L", true),
    ("2.5.4.10", "O", true),
    ("2.5.4.11", "OU", true),
    ("2.5.4.3", "CN", true),
    ("2.5.4.12", "T", true),
    ("2.5.4.43", "I", true),
    ("2.5.4.42", "G", true),
    ("2.5.4.4", "S", true),
    ("2.5.4.13", "D", true),
    ("0.9.2342.19200300.100.1.1", "UID", true),
    ("1.2.840.113549.1.9.1", "Email", true),
    ("2.5.4.46", "dnQualifier", false),
    ("0.9.2342.19200300.100.1.25", "domainComponent", false),
    ("2.5.4.17", "postalCode", false),
    ("2.5.4.9", "street", false),
    ("2.5.4.5", "serialNumber", false),
    ("2.5.4.44", "generationQualifier", false),
    ("2.5.4.65", "pseudonym", false),
    ("2.5.4.15", "businessCategory", false),
    ("2.5.4.41", "name", false),
];

/// Appends `<prefix>_M_VERSION`, `_M_SERIAL`, `_V_START`, `_V_END`, `_S_DN*`, `_I_DN*`,
/// `_SAN_DNS_n` and `_SAN_Email_n` for a certificate; returns its notAfter (Unix seconds).
/// A certificate that does not parse adds nothing (rustls has accepted it, so this is rare).
fn cert_vars(prefix: &str, der: &[u8], out: &mut Vec<(String, String)>) -> Option<i64> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut put = |suffix: &str, v: String| out.push((format!("{prefix}_{suffix}"), v));
    put("M_VERSION", (cert.version().0 + 1).to_string());
    put("M_SERIAL", serial_hex(cert.raw_serial()));
    let validity = cert.validity();
    put("V_START", openssl_time(validity.not_before.timestamp()));
    put("V_END", openssl_time(validity.not_after.timestamp()));
    for (code, name) in [("S_DN", cert.subject()), ("I_DN", cert.issuer())] {
        let mut dn = Vec::new();
        let mut by_code: Vec<(&str, Vec<String>)> = Vec::new();
        for attr in name.iter_attributes() {
            let oid = attr.attr_type().to_id_string();
            let value = attr_text(attr.attr_value().tag(), attr.attr_value().data);
            let known = DN_ATTRS.iter().find(|a| a.0 == oid);
            let label = known.map_or(oid.as_str(), |a| a.1);
            dn.push(format!("{label}={value}"));
            if let Some(&(_, code, true)) = known {
                match by_code.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, values)) => values.push(value),
                    None => by_code.push((code, vec![value])),
                }
            }
        }
        put(code, dn.join(","));
        for (attr, values) in by_code {
            put(&format!("{code}_{attr}"), values.join(","));
            if values.len() > 1 {
                for (i, v) in values.into_iter().enumerate() {
                    put(&format!("{code}_{attr}_{i}"), v);
                }
            }
        }
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let (mut dns, mut email) = (0, 0);
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(v) => {
                    put(&format!("SAN_DNS_{dns}"), v.to_string());
                    dns += 1;
                }
                GeneralName::RFC822Name(v) => {
                    put(&format!("SAN_Email_{email}"), v.to_string());
                    email += 1;
                }
                _ => {}
            }
        }
    }
    Some(validity.not_after.timestamp())
}

/// An attribute value as text: the ASN.1 string types decoded (as OpenSSL's
/// `ASN1_STRING_to_UTF8` does), anything else as hex.
fn attr_text(tag: x509_parser::der_parser::asn1_rs::Tag, data: &[u8]) -> String {
    use x509_parser::der_parser::asn1_rs::Tag;
    match tag {
        Tag::BmpString => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        Tag::UniversalString => data
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        // T.61 in practice carries Latin-1.
        Tag::TeletexString | Tag::VideotexString => data.iter().map(|&b| b as char).collect(),
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString
        | Tag::GeneralString
        | Tag::GraphicString => String::from_utf8_lossy(data).into_owned(),
        _ => format!("#{}", hex_lower(data)),
    }
}

/// A serial number as OpenSSL prints it: upper-case hex of its magnitude, two digits a byte.
fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    let digits = &raw[start..];
    if digits.is_empty() {
        return "00".into();
    }
    digits.iter().map(|b| format!("{b:02X}")).collect()
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Whole days from `now` to `not_after`, 0 once expired (mod_ssl's `_V_REMAIN`).
fn days_left(not_after: i64, now: i64) -> String {
    ((not_after - now).max(0) / 86_400).to_string()
}

/// Unix seconds as OpenSSL's `ASN1_TIME_print` writes them: `Jan  5 09:34:43 2018 GMT`.
pub(crate) fn openssl_time(secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{} {:2} {:02}:{:02}:{:02} {} GMT",
        MONTHS[(month - 1) as usize],
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        year
    )
}

/// A certificate in PEM, as Python's `ssl.DER_cert_to_PEM_cert` writes it (without the
/// final newline).
pub(crate) fn pem(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_time_format() {
        assert_eq!(openssl_time(0), "Jan  1 00:00:00 1970 GMT");
        assert_eq!(openssl_time(1_515_144_883), "Jan  5 09:34:43 2018 GMT");
        assert_eq!(openssl_time(951_782_400), "Feb 29 00:00:00 2000 GMT");
        assert_eq!(openssl_time(253_402_300_799), "Dec 31 23:59:59 9999 GMT");
    }

    #[test]
    fn serial_as_openssl_prints_it() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8F01");
        assert_eq!(serial_hex(&[0x01, 0x02]), "0102");
        assert_eq!(serial_hex(&[0x00]), "00");
    }

    #[test]
    fn pem_lines() {
        assert_eq!(
            pem(b"hello"),
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----"
        );
        let long = pem(&[0xffu8; 49]);
        let lines: Vec<&str> = long.lines().collect();
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2], "/w==");
    }

    #[test]
    fn attr_strings() {
        use x509_parser::der_parser::asn1_rs::Tag;
        assert_eq!(attr_text(Tag::BmpString, &[0, b'h', 0x04, 0x17]), "hЗ");
        assert_eq!(attr_text(Tag::TeletexString, &[b'a', 0xe9]), "aé");
        assert_eq!(attr_text(Tag::Utf8String, "ж".as_bytes()), "ж");
    }
}
