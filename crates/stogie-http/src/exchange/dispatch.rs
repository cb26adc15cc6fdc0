//! Handing a request to the gateway, with the back-off of a full queue.

use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::gateway::Gateway;
use super::Request;

/// Hands `request` over when the gateway has room now; else gives it back, for
/// [`wait_for_room`]. (The usual case costs no future: a request is large to move.)
#[inline]
#[allow(clippy::result_large_err)]
pub(crate) fn dispatch(gateway: &dyn Gateway, request: Request) -> Result<(), Request> {
    gateway.dispatch(request)
}

/// Hands over a request the gateway had no room for, retrying with a growing pause up to
/// the gateway's queue timeout; `false` when no room came (the caller answers 503).
pub(crate) async fn wait_for_room(gateway: &dyn Gateway, mut request: Request) -> bool {
    // The clock starts only now.
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
