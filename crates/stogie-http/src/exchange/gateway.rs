//! The seam between the engine and whatever answers its requests.

use std::time::Duration;

use super::Request;

/// Whatever answers requests: takes each request and, sooner or later, sends its response
/// events through `request.response`.
pub trait Gateway: Send + Sync + 'static {
    /// Takes a request. Returns it back when there is no room now (a full queue); the
    /// connection then retries until [`Gateway::queue_timeout`] and answers 503.
    // The request comes back by value: the busy path is rare, and boxing would cost an
    // allocation on every request.
    #[allow(clippy::result_large_err)]
    fn dispatch(&self, request: Request) -> Result<(), Request>;

    /// How long a request may wait for room in the gateway's queue.
    fn queue_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    /// How loaded the gateway is, for the metrics: requests queued, workers busy, workers.
    fn load(&self) -> (usize, usize, usize) {
        (0, 0, 0)
    }
}
