//! Parked connections: a keep-alive connection idle for [`PARK_AFTER`] gives up its task and
//! waits here, as its socket and a few words, until the client sends its next request (a
//! new task then takes it up), its idle timeout ends, or the server stops.
//!
//! Why: a task costs its future plus tokio's 128-byte-aligned header, over half a kilobyte
//! per connection however small the future is made; 10,000 idle keep-alive connections must
//! add at most 10 MB (issue 4). A connection under load is never idle long enough to park,
//! so the busy path pays nothing for this; one idle a tenth of a second pays a task spawn
//! when it wakes, which is nothing next to the wait. The wait before parking is short
//! because allocators keep what they once held: if every connection of a burst kept its
//! task for long, the burst's peak would stay in the process's memory after they parked.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::stop::Stop;

/// How long a connection waits idle in its own task before it parks.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(100);

/// A connection that can wait here.
pub(crate) trait Parkable: Send + 'static {
    /// Polls the socket for readable bytes (or an end or error to report).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Takes the connection up again in a task of its own.
    fn resume(self: Box<Self>);
}

struct Slot {
    conn: Box<dyn Parkable>,
    /// Tells this connection's wake-ups and expiry apart from those of an earlier one that
    /// had the same slot.
    generation: u64,
}

#[derive(Default)]
struct State {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    next_generation: u64,
    /// Slots whose socket became readable.
    ready: Vec<(usize, u64)>,
    /// Idle deadlines in the order connections parked (one timeout for all: in order).
    expiry: VecDeque<(Instant, usize, u64)>,
    /// The watcher task, waiting for wake-ups.
    watcher: Option<Waker>,
    closed: bool,
}

/// The parked connections of one server, watched by one task ([`watch`]).
#[derive(Default)]
pub(crate) struct Lot {
    state: Mutex<State>,
}

/// Wakes the watcher when a parked socket becomes readable.
struct SlotWaker {
    lot: Arc<Lot>,
    slot: usize,
    generation: u64,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut st = self.lot.lock();
        st.ready.push((self.slot, self.generation));
        let watcher = st.watcher.take();
        drop(st);
        if let Some(w) = watcher {
            w.wake();
        }
    }
}

impl Lot {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many connections are parked now.
    pub fn len(&self) -> usize {
        let st = self.lock();
        st.slots.len() - st.free.len()
    }

    /// Parks `conn` until its socket is readable (it resumes) or `deadline` (it closes).
    pub fn park(self: &Arc<Self>, conn: Box<dyn Parkable>, deadline: Instant) {
        let mut st = self.lock();
        if st.closed {
            return; // the server is stopping: the connection just closes
        }
        let generation = st.next_generation;
        st.next_generation += 1;
        let slot = match st.free.pop() {
            Some(i) => i,
            None => {
                st.slots.push(None);
                st.slots.len() - 1
            }
        };
        // Deadlines queue in the order connections park: with one idle timeout for all,
        // that is their order. (After a live change to a shorter timeout, a later one may
        // wait behind an earlier, longer one; it closes when that one does.)
        let wake_watcher = st.expiry.is_empty();
        let waker = Waker::from(Arc::new(SlotWaker {
            lot: self.clone(),
            slot,
            generation,
        }));
        // Registered before the slot is filled: a wake-up that comes at once finds the
        // slot's generation in `ready` and is handled by the watcher.
        let ready = conn
            .poll_read_ready(&mut Context::from_waker(&waker))
            .is_ready();
        if ready {
            st.free.push(slot);
            drop(st);
            conn.resume();
            return;
        }
        st.slots[slot] = Some(Slot { conn, generation });
        // Queued only once parked for real: a connection resumed at once above leaves no
        // deadline behind, which would keep the next one from waking the watcher.
        st.expiry.push_back((deadline, slot, generation));
        // The watcher sleeps without a deadline while nothing is parked: give it this one.
        let watcher = if wake_watcher {
            st.watcher.take()
        } else {
            None
        };
        drop(st);
        if let Some(w) = watcher {
            w.wake();
        }
    }

    fn take(st: &mut State, slot: usize, generation: u64) -> Option<Box<dyn Parkable>> {
        match st.slots.get(slot) {
            Some(Some(s)) if s.generation == generation => {}
            _ => return None,
        }
        st.free.push(slot);
        st.slots[slot].take().map(|s| s.conn)
    }

    /// Resumes the woken connections, closes the expired ones; returns the next deadline.
    fn service(&self, now: Instant) -> Option<Instant> {
        let mut resume = Vec::new();
        let mut expired = Vec::new();
        let next = {
            let mut st = self.lock();
            for (slot, generation) in std::mem::take(&mut st.ready) {
                resume.extend(Self::take(&mut st, slot, generation));
            }
            while let Some(&(deadline, slot, generation)) = st.expiry.front() {
                let live =
                    matches!(st.slots.get(slot), Some(Some(s)) if s.generation == generation);
                if live && deadline > now {
                    break;
                }
                st.expiry.pop_front();
                expired.extend(Self::take(&mut st, slot, generation));
            }
            // Connections that resumed leave their deadlines behind; behind a live one at
            // the front they would pile up (parks a second times the idle timeout).
            let parked = st.slots.len() - st.free.len();
            if st.expiry.len() > 64 && st.expiry.len() > 2 * parked {
                let State { expiry, slots, .. } = &mut *st;
                expiry.retain(|&(_, slot, generation)| {
                    matches!(slots.get(slot), Some(Some(s)) if s.generation == generation)
                });
            }
            if st.slots.len() > 64 && st.free.len() == st.slots.len() {
                // Everyone left: give the memory back.
                st.slots = Vec::new();
                st.free = Vec::new();
            }
            st.expiry.front().map(|&(d, _, _)| d)
        };
        // Outside the lock: closing sockets and spawning tasks take their time.
        drop(expired);
        for conn in resume {
            conn.resume();
        }
        next
    }

    /// Closes every parked connection, and any parked later.
    pub(crate) fn close_all(&self) {
        let slots = {
            let mut st = self.lock();
            st.closed = true;
            st.expiry.clear();
            st.ready.clear();
            st.free.clear();
            std::mem::take(&mut st.slots)
        };
        drop(slots);
    }

    /// Ready once a parked socket has been woken, or the first connection parked.
    fn woken(&self, cx: &mut Context<'_>, had_deadline: bool) -> Poll<()> {
        let mut st = self.lock();
        if st.ready.is_empty() && (had_deadline || st.expiry.is_empty()) {
            match &st.watcher {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => st.watcher = Some(cx.waker().clone()),
            }
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

/// The task that watches the parked connections of a server until it stops.
pub(crate) async fn watch(lot: &Lot, stop: &Stop) {
    loop {
        let stopped = stop.notified();
        if stop.is_set() {
            lot.close_all();
            return;
        }
        match lot.service(Instant::now()) {
            Some(deadline) => tokio::select! {
                _ = std::future::poll_fn(|cx| lot.woken(cx, true)) => {}
                _ = sleep_until(deadline) => {}
                _ = stopped => {}
            },
            None => tokio::select! {
                _ = std::future::poll_fn(|cx| lot.woken(cx, false)) => {}
                _ = stopped => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A connection whose socket the test makes readable by waking the stored waker.
    struct Fake {
        waker: Arc<Mutex<Option<Waker>>>,
        resumed: Arc<AtomicUsize>,
    }

    impl Parkable for Fake {
        fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }

        fn resume(self: Box<Self>) {
            self.resumed.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn woken_connections_resume_and_stale_deadlines_do_not_pile_up() {
        let lot = Arc::new(Lot::default());
        let resumed = Arc::new(AtomicUsize::new(0));
        let far = Instant::now() + Duration::from_secs(3600);
        // One connection stays parked at the front of the deadline queue throughout.
        let front = Arc::new(Mutex::new(None));
        let keep = Fake {
            waker: front.clone(),
            resumed: resumed.clone(),
        };
        lot.park(Box::new(keep), far);
        for round in 0..50 {
            let wakers: Vec<_> = (0..10)
                .map(|_| {
                    let w = Arc::new(Mutex::new(None));
                    let fake = Fake {
                        waker: w.clone(),
                        resumed: resumed.clone(),
                    };
                    lot.park(Box::new(fake), far);
                    w
                })
                .collect();
            for w in wakers {
                w.lock().unwrap().take().unwrap().wake();
            }
            assert_eq!(lot.service(Instant::now()), Some(far));
            assert_eq!(resumed.load(Ordering::SeqCst), 10 * (round + 1));
        }
        let st = lot.lock();
        assert_eq!(
            st.slots.len() - st.free.len(),
            1,
            "only the first is parked"
        );
        assert!(st.expiry.len() <= 64, "{} deadlines kept", st.expiry.len());
    }

    #[test]
    fn expired_connections_close_and_closing_the_lot_drops_the_rest() {
        let lot = Arc::new(Lot::default());
        let resumed = Arc::new(AtomicUsize::new(0));
        let now = Instant::now();
        for i in 0..3 {
            let fake = Fake {
                waker: Arc::new(Mutex::new(None)),
                resumed: resumed.clone(),
            };
            lot.park(Box::new(fake), now + Duration::from_secs(i));
        }
        // The first deadline passed: one closes, the next deadline is reported.
        assert_eq!(
            lot.service(now + Duration::from_millis(500)),
            Some(now + Duration::from_secs(1))
        );
        assert_eq!(lot.lock().free.len(), 1);
        lot.close_all();
        assert!(lot.lock().slots.is_empty());
        assert_eq!(resumed.load(Ordering::SeqCst), 0, "nothing was readable");
    }

    /// Readable at once: resumes from `park` without parking.
    struct ReadyNow {
        resumed: Arc<AtomicUsize>,
    }

    impl Parkable for ReadyNow {
        fn poll_read_ready(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn resume(self: Box<Self>) {
            self.resumed.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_watcher_hears_of_the_first_deadline_even_after_an_immediate_resume() {
        let lot = Arc::new(Lot::default());
        let resumed = Arc::new(AtomicUsize::new(0));
        let far = Instant::now() + Duration::from_secs(5);
        // The watcher, with nothing parked, waits without a deadline.
        assert_eq!(lot.service(Instant::now()), None);
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let watcher = Waker::from(wakes.clone());
        assert!(lot
            .woken(&mut Context::from_waker(&watcher), false)
            .is_pending());
        lot.park(
            Box::new(ReadyNow {
                resumed: resumed.clone(),
            }),
            far,
        );
        assert_eq!(resumed.load(Ordering::SeqCst), 1);
        let fake = Fake {
            waker: Arc::new(Mutex::new(None)),
            resumed: resumed.clone(),
        };
        lot.park(Box::new(fake), far);
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "the watcher must learn the deadline"
        );
        assert_eq!(lot.service(Instant::now()), Some(far));
    }
}
