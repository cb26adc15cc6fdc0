//! Client certificates refused in a handshake: a sentence a person understands, logged as a
//! warning at most once per reason per client address per interval.
//!
//! rustls says why it refused a certificate in its own terms ("invalid peer certificate:
//! Other(OtherError(UnsupportedCertVersion))"). A refusal is worth a warning: it is usually
//! a set-up mistake (a version 1 certificate from `openssl x509 -req`, the wrong CA), and the
//! client only sees an alert. But handshakes cost a client little, so the warnings are
//! rate-limited, and the state that limits them is bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustls::{CertificateError, Error};

use crate::tls_env::openssl_time;

/// Why a client's certificate was refused: the key of the rate limit, with the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    NoCertificate,
    Version1,
    UnknownIssuer,
    Expired,
    NotYetValid,
    NotForClientAuth,
    BadSignature,
    UnsupportedAlgorithm,
    Revoked,
    Malformed,
    CriticalExtension,
    CaCertificate,
    Other,
}

/// What is wrong with a certificate, as the end of a sentence ("it expired on ..."), for
/// the errors rustls (and webpki under it) give when a certificate is verified or loaded.
pub(crate) fn certificate_problem(err: &CertificateError) -> (Reason, String) {
    use CertificateError as C;
    let (reason, text) = match err {
        C::ExpiredContext { not_after, .. } => (
            Reason::Expired,
            format!("it expired on {}", openssl_time(not_after.as_secs() as i64)),
        ),
        C::Expired => (Reason::Expired, "it has expired".to_owned()),
        C::NotValidYetContext { not_before, .. } => (
            Reason::NotYetValid,
            format!(
                "it is not valid before {}",
                openssl_time(not_before.as_secs() as i64)
            ),
        ),
        C::NotValidYet => (Reason::NotYetValid, "it is not valid yet".to_owned()),
        C::UnknownIssuer => (
            Reason::UnknownIssuer,
            "it is not signed by a CA the server trusts for client certificates (unknown issuer)"
                .to_owned(),
        ),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => (
            Reason::NotForClientAuth,
            "it is not valid for client authentication (its extended key usage does not \
             include clientAuth)"
                .to_owned(),
        ),
        C::BadSignature => (
            Reason::BadSignature,
            "its signature does not verify".to_owned(),
        ),
        #[allow(deprecated)]
        C::UnsupportedSignatureAlgorithm
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => (
            Reason::UnsupportedAlgorithm,
            "it is signed with an algorithm stogie does not support".to_owned(),
        ),
        C::Revoked => (Reason::Revoked, "it is revoked".to_owned()),
        C::BadEncoding => (
            Reason::Malformed,
            "it is malformed (not valid DER)".to_owned(),
        ),
        C::UnhandledCriticalExtension => (
            Reason::CriticalExtension,
            "it has a critical extension stogie does not understand".to_owned(),
        ),
        C::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
            Some(webpki::Error::UnsupportedCertVersion) => (
                Reason::Version1,
                "it is X.509 version 1; stogie accepts version 3 certificates only".to_owned(),
            ),
            Some(webpki::Error::UnsupportedCriticalExtension) => (
                Reason::CriticalExtension,
                "it has a critical extension stogie does not understand".to_owned(),
            ),
            Some(webpki::Error::CaUsedAsEndEntity) => (
                Reason::CaCertificate,
                "it is a CA certificate, not a client's".to_owned(),
            ),
            Some(e) => (Reason::Other, format!("it is not valid ({e:?})")),
            None => (Reason::Other, format!("it is not valid ({})", other.0)),
        },
        other => (Reason::Other, format!("it is not valid ({other:?})")),
    };
    (reason, text)
}

/// The warning for a handshake that failed because of the client's certificate (`who` is
/// the client's address), or `None` when it failed for another reason.
pub(crate) fn describe(err: &Error, who: &str) -> Option<(Reason, String)> {
    match err {
        Error::NoCertificatesPresented => Some((
            Reason::NoCertificate,
            format!("client {who} refused: it sent no certificate, and one is required"),
        )),
        Error::InvalidCertificate(e) => {
            let (reason, text) = certificate_problem(e);
            Some((
                reason,
                format!("client certificate from {who} refused: {text}"),
            ))
        }
        _ => None,
    }
}

/// The rustls error inside an I/O error from a handshake, if that is what it is.
pub(crate) fn rustls_error(err: &std::io::Error) -> Option<&Error> {
    err.get_ref()?.downcast_ref::<Error>()
}

/// How many addresses are tracked one by one; refusals from more addresses than this in
/// one interval share one key per reason, so memory stays bounded under a flood.
const MAX_ADDRESSES: usize = 1024;

/// Expired entries are swept out at most this often (a sweep walks the whole table).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Window {
    opened: Instant,
    suppressed: u64,
}

#[derive(Default)]
struct Table {
    /// `None` as the address: UNIX socket clients, and addresses past `MAX_ADDRESSES`.
    windows: HashMap<(Option<IpAddr>, Reason), Window>,
    swept: Option<Instant>,
}

/// One warning per reason per client address per interval; the rest are counted, and the
/// count is said with the next warning for the same key.
pub(crate) struct RefusalLog {
    interval: Duration,
    table: Mutex<Table>,
}

/// A refusal to log: how many like it were not logged since the last one that was, and
/// whether its count is shared with other addresses (the table was full).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Admitted {
    pub suppressed: u64,
    pub shared: bool,
}

impl Admitted {
    /// What the warning ends with.
    pub fn suffix(&self) -> String {
        match (self.suppressed, self.shared) {
            (0, false) => String::new(),
            (0, true) => " (refusals from more addresses than stogie tracks one by one share \
                          this line)"
                .to_owned(),
            (n, false) => format!(" (and {n} more like it since the last such line)"),
            (n, true) => {
                format!(" (and {n} more like it, from this or other addresses, since the last such line)")
            }
        }
    }
}

impl RefusalLog {
    /// At most one line per reason per address per `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        RefusalLog {
            interval,
            table: Mutex::new(Table::default()),
        }
    }

    /// Notes a refusal at `now`: `Some` when it is to be logged.
    pub(crate) fn admit(
        &self,
        ip: Option<IpAddr>,
        reason: Reason,
        now: Instant,
    ) -> Option<Admitted> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let interval = self.interval;
        let mut key = (ip, reason);
        if ip.is_some() && !table.windows.contains_key(&key) && table.windows.len() >= MAX_ADDRESSES
        {
            if table
                .swept
                .is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY)
            {
                table.swept = Some(now);
                // Counts of windows swept out are never said: the price of a bounded table.
                table
                    .windows
                    .retain(|_, w| now.duration_since(w.opened) < interval);
            }
            if table.windows.len() >= MAX_ADDRESSES {
                key = (None, reason);
            }
        }
        let shared = key.0.is_none() && ip.is_some();
        match table.windows.get_mut(&key) {
            Some(w) if now.duration_since(w.opened) < interval => {
                w.suppressed += 1;
                None
            }
            Some(w) => {
                let suppressed = std::mem::take(&mut w.suppressed);
                w.opened = now;
                Some(Admitted { suppressed, shared })
            }
            None => {
                table.windows.insert(
                    key,
                    Window {
                        opened: now,
                        suppressed: 0,
                    },
                );
                Some(Admitted {
                    suppressed: 0,
                    shared,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    fn ip(n: u32) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)))
    }

    #[test]
    fn one_line_per_reason_per_address_per_interval_and_the_count_of_the_rest() {
        let log = RefusalLog::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let first = log.admit(ip(1), Reason::Version1, t0).unwrap();
        assert_eq!(first.suffix(), "");
        for s in 1..=57 {
            assert_eq!(
                log.admit(ip(1), Reason::Version1, t0 + Duration::from_secs(s % 59)),
                None
            );
        }
        // Another reason, another address: lines of their own.
        assert!(log.admit(ip(1), Reason::UnknownIssuer, t0).is_some());
        assert!(log.admit(ip(2), Reason::Version1, t0).is_some());
        let next = log
            .admit(ip(1), Reason::Version1, t0 + Duration::from_secs(61))
            .unwrap();
        assert_eq!(next.suppressed, 57);
        assert_eq!(
            next.suffix(),
            " (and 57 more like it since the last such line)"
        );
        assert_eq!(
            log.admit(ip(1), Reason::Version1, t0 + Duration::from_secs(62)),
            None
        );
    }

    #[test]
    fn a_flood_from_many_addresses_keeps_the_table_bounded() {
        let log = RefusalLog::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let mut logged = 0;
        for n in 0..100_000 {
            if log.admit(ip(n), Reason::UnknownIssuer, t0).is_some() {
                logged += 1;
            }
        }
        // The first 1024 addresses one line each, the rest one line between them.
        assert_eq!(logged, MAX_ADDRESSES + 1);
        assert!(log.table.lock().unwrap().windows.len() <= MAX_ADDRESSES + 1);
        let later = t0 + Duration::from_secs(61);
        // A minute on, old windows are swept out and new addresses have their own again.
        let a = log
            .admit(ip(200_000), Reason::UnknownIssuer, later)
            .unwrap();
        assert!(!a.shared);
        assert!(log.table.lock().unwrap().windows.len() <= 2);
        let shared = Admitted {
            suppressed: 3,
            shared: true,
        };
        assert!(shared.suffix().contains("from this or other addresses"));
    }

    #[test]
    fn sentences() {
        let v1 = CertificateError::Other(rustls::OtherError(Arc::new(
            webpki::Error::UnsupportedCertVersion,
        )));
        let (reason, text) = describe(&Error::InvalidCertificate(v1), "127.0.0.1:49926").unwrap();
        assert_eq!(reason, Reason::Version1);
        assert_eq!(
            text,
            "client certificate from 127.0.0.1:49926 refused: it is X.509 version 1; \
             stogie accepts version 3 certificates only"
        );
        let expired = CertificateError::ExpiredContext {
            time: rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(1_600_000_000)),
            not_after: rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
                1_515_144_883,
            )),
        };
        assert_eq!(
            certificate_problem(&expired).1,
            "it expired on Jan  5 09:34:43 2018 GMT"
        );
        assert_eq!(
            describe(&Error::NoCertificatesPresented, "[::1]:5")
                .unwrap()
                .1,
            "client [::1]:5 refused: it sent no certificate, and one is required"
        );
        assert!(describe(&Error::DecryptError, "x").is_none());
    }
}
