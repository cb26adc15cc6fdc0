//! The server's stop signal, as the accept loops, the connections and the parking lot see it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::futures::{Notified, OwnedNotified};
use tokio::sync::Notify;

/// The server's stop signal, as connections and accept loops see it.
///
/// Two degrees: a drain (no new connections, and every response from now on closes its
/// connection, while a keep-alive connection that is idle keeps its idle timeout, so that a
/// client whose next request is already on its way gets it answered), and a stop (idle
/// connections close at once too). A worker process being replaced drains: another process
/// takes the new connections, and the clients of this one lose no request. A server that
/// stops for good has nobody to hand its clients to, so it stops.
#[derive(Default)]
pub(crate) struct Stop {
    stopping: AtomicBool,
    ending: AtomicBool,
    /// Shared, so that a connection can keep one notification for its whole life
    /// ([`Stop::notified_owned`]).
    notify: Arc<Notify>,
    ending_notify: Notify,
    /// Accept loops still running: until they have seen the signal, one may still take a
    /// connection.
    accepting: Arc<AtomicUsize>,
}

/// An accept loop's presence, for [`Stop::accepting`]: counted while it lives.
pub(crate) struct Accepting(Arc<AtomicUsize>);

impl Drop for Accepting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Stop {
    /// Counts an accept loop as running for as long as the value lives.
    pub fn accept_loop(&self) -> Accepting {
        self.accepting.fetch_add(1, Ordering::AcqRel);
        Accepting(self.accepting.clone())
    }

    /// Whether an accept loop is still running. A stop waits for none to be before it
    /// counts the connections left: a connection taken by a loop that had not yet seen the
    /// signal is one to answer (a draining worker would otherwise close it unanswered,
    /// where the next worker could have served it).
    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire) > 0
    }

    /// Whether the server is stopping: idle connections close now.
    pub fn is_set(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Whether the server drains or stops: no new connections, no more keep-alive.
    pub fn is_ending(&self) -> bool {
        self.ending.load(Ordering::Acquire)
    }

    /// Signals the stop to everyone waiting, and to everyone who looks later.
    pub fn set(&self) {
        self.ending.store(true, Ordering::Release);
        self.stopping.store(true, Ordering::Release);
        self.ending_notify.notify_waiters();
        self.notify.notify_waiters();
    }

    /// Signals the drain to the accept loops.
    pub fn drain(&self) {
        self.ending.store(true, Ordering::Release);
        self.ending_notify.notify_waiters();
    }

    /// Resolves at the drain or the stop; as [`Stop::notified`], for [`Stop::is_ending`].
    pub fn ending_notified(&self) -> Notified<'_> {
        self.ending_notify.notified()
    }

    /// Resolves at the stop. Take it before looking at [`Stop::is_set`]: a `Notified` sees
    /// every signal sent after it was made, polled or not, so none falls in between.
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// As [`Stop::notified`], for a connection to keep between its requests.
    pub fn notified_owned(&self) -> OwnedNotified {
        self.notify.clone().notified_owned()
    }
}
