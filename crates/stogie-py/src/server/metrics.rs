//! What renders a server's `/metrics` page: its own counters, or a supervisor's sums.

use std::sync::Arc;

use stogie_http::ops::metrics::render;

use super::NativeServer;

impl NativeServer {
    /// What renders the metrics of this process: a supervisor's sums over its workers'
    /// shared slots, or this process's own counters (its gauges brought up to date first).
    pub(super) fn metrics_renderer(&self) -> Arc<dyn Fn() -> String + Send + Sync> {
        if self.engine.is_none() {
            if let Some(region) = self.region.clone() {
                let counts = self.supervisor_counts.clone();
                return Arc::new(move || {
                    let c = *counts.lock().unwrap_or_else(|e| e.into_inner());
                    render(&region, Some(c))
                });
            }
        }
        let stats = self.stats.clone();
        let refresh = self.pool.clone();
        Arc::new(move || {
            if let Some(pool) = &refresh {
                let (queued, busy, threads) = stogie_http::Gateway::load(pool);
                stats.metrics().set_load(queued, busy, threads);
            }
            render(stats.metrics().region(), None)
        })
    }
}
