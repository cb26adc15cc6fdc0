//! Handing a request to the gateway, with the back-off of a full queue.

use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::gateway::Gateway;
use super::Request;

/// Hands `request` over, waiting up to the gateway's queue timeout for room; `false` when
/// none came (the caller answers 503).
pub(crate) async fn dispatch(gateway: &dyn Gateway, mut request: Request) -> bool {
    match gateway.dispatch(request) {
        Ok(()) => return true,
        Err(back) => request = back,
    }
    // A full queue: the clock starts only now.
    let deadline = Instant::now() + gateway.queue_timeout();
    let mut wait = Duration::from_millis(1);
    loop {
        if Instant::now() >= deadline {
            return false;
        }
        sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(20));
        match gateway.dispatch(request) {
            Ok(()) => return true,
            Err(back) => request = back,
        }
    }
}
