//! What every connection of one listener shares, whatever its protocol.

use std::sync::Arc;

use crate::addr::LocalAddr;
use crate::config::LiveConfig;
use crate::exchange::gateway::Gateway;
use crate::idle::Lot;
use crate::log::ErrorLog;
use crate::ops::proxy::TrustedPeers;
use crate::stats::Stats;
use crate::stop::Stop;
use crate::transport::tls::TlsAcceptor;

/// What every connection of one listener shares.
pub(crate) struct Shared {
    pub config: LiveConfig,
    pub gateway: Arc<dyn Gateway>,
    pub stats: Arc<Stats>,
    pub log: Arc<dyn ErrorLog>,
    pub stop: Stop,
    pub parked: Arc<Lot>,
    pub local: LocalAddr,
    pub scheme: &'static str,
    pub tls: Option<TlsAcceptor>,
    /// Connections start with a PROXY protocol header from these peers.
    pub proxy_protocol: Option<TrustedPeers>,
}

/// Counts a connection as open for as long as it lives, in a task or parked.
pub(crate) struct Open(pub Arc<Stats>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.close();
    }
}
