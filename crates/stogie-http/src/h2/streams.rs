//! A connection's streams, run inside the connection's own task rather than a task each.
//!
//! Why: with a task per stream, each stream that sent its answer woke the connection's task,
//! and tokio runs a task woken by another at once (its LIFO slot): the connection wrote one
//! answer per wake, 0.75 `writev` per request at `h2load -m 10`, and every stream cost a
//! task (spawn, its allocation, the scheduler). Here the streams woken since the last poll are
//! polled together, then the connection writes what they all queued in one go.
//!
//! Each stream has a waker of its own that puts it on the ready list and wakes the
//! connection's task; a stream is polled only when woken (as a task would be).

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Streams woken since the connection last polled them, and the connection's waker.
#[derive(Default)]
struct ReadyList {
    ids: Vec<usize>,
    connection: Option<Waker>,
}

#[derive(Default)]
struct Ready(Mutex<ReadyList>);

impl Ready {
    fn lock(&self) -> MutexGuard<'_, ReadyList> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The waker of one place in the set (kept for the place's next streams: a wake meant for a
/// stream that has ended polls the next one once, which a future allows).
struct SlotWaker {
    slot: usize,
    /// On the ready list already: a second wake costs nothing.
    queued: AtomicBool,
    ready: Arc<Ready>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let connection = {
            let mut ready = self.ready.lock();
            ready.ids.push(self.slot);
            ready.connection.take()
        };
        if let Some(w) = connection {
            w.wake();
        }
    }
}

struct Slot {
    stream: Option<StreamFuture>,
    waker: Arc<SlotWaker>,
    as_waker: Waker,
}

/// The streams of one connection.
pub(crate) struct StreamSet {
    slots: Vec<Slot>,
    free: Vec<usize>,
    live: usize,
    ready: Arc<Ready>,
    /// The ready list as taken from [`Ready`] (kept for its allocation).
    batch: Vec<usize>,
}

impl StreamSet {
    pub fn new() -> Self {
        StreamSet {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            ready: Arc::default(),
            batch: Vec::new(),
        }
    }

    /// Streams not yet ended.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Adds a stream; it is polled at the next [`StreamSet::poll`].
    pub fn push(&mut self, stream: StreamFuture) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i].stream = Some(stream);
                i
            }
            None => {
                let waker = Arc::new(SlotWaker {
                    slot: self.slots.len(),
                    queued: AtomicBool::new(false),
                    ready: self.ready.clone(),
                });
                self.slots.push(Slot {
                    stream: Some(stream),
                    as_waker: Waker::from(waker.clone()),
                    waker,
                });
                self.slots.len() - 1
            }
        };
        self.live += 1;
        self.slots[slot].waker.wake_by_ref();
    }

    /// Whether [`StreamSet::release`] would free anything.
    pub fn holds_storage(&self) -> bool {
        self.slots.capacity() != 0
    }

    /// Frees the set's storage (its places, their wakers, its lists) while it has no stream:
    /// an idle connection's memory. The next stream makes them anew. A waker of a freed place
    /// may still wake (one kept by a stream's channel): its index is then out of range, or
    /// names a place made since, polled once for nothing.
    pub fn release(&mut self) {
        if self.live != 0 {
            return;
        }
        self.slots = Vec::new();
        self.free = Vec::new();
        self.batch = Vec::new();
        self.ready.lock().ids = Vec::new();
    }

    /// Polls the streams woken since the last call (each once: one woken again meanwhile
    /// waits for the next call, which the connection's task is woken for). Returns how
    /// many ended.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> usize {
        {
            let mut ready = self.ready.lock();
            std::mem::swap(&mut ready.ids, &mut self.batch);
            if !ready
                .connection
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                ready.connection = Some(cx.waker().clone());
            }
        }
        let mut ended = 0;
        for i in 0..self.batch.len() {
            // A waker of a place since released: nothing to poll.
            let Some(slot) = self.slots.get_mut(self.batch[i]) else {
                continue;
            };
            slot.waker.queued.store(false, Ordering::Release);
            let Some(stream) = slot.stream.as_mut() else {
                continue;
            };
            let mut scx = Context::from_waker(&slot.as_waker);
            // A stream that panics ends alone, as a task of its own would (tokio catches a
            // task's panic): its connection and the other streams go on.
            let polled = panic::catch_unwind(AssertUnwindSafe(|| stream.as_mut().poll(&mut scx)));
            if polled.map_or(true, |p| p.is_ready()) {
                slot.stream = None;
                self.free.push(self.batch[i]);
                self.live -= 1;
                ended += 1;
            }
        }
        self.batch.clear();
        ended
    }

    /// Waits until every stream has ended.
    pub fn poll_all_ended(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll(cx);
        if self.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn streams_are_polled_when_woken_and_end() {
        let wakes = Arc::new(Count::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut set = StreamSet::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let polled = Arc::new(AtomicUsize::new(0));
        let p = polled.clone();
        set.push(Box::pin(async move {
            p.fetch_add(1, Ordering::SeqCst);
            let _ = rx.await;
        }));
        set.push(Box::pin(async {}));
        assert_eq!(set.len(), 2);
        assert_eq!(set.poll(&mut cx), 1);
        assert_eq!(set.len(), 1);
        assert_eq!(polled.load(Ordering::SeqCst), 1);
        // Not woken: not polled.
        assert_eq!(set.poll(&mut cx), 0);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        tx.send(()).unwrap();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the connection is woken");
        assert!(set.poll_all_ended(&mut cx).is_ready());
        // A stream that panics ends; the others go on.
        set.push(Box::pin(async { panic!("a stream's bug") }));
        set.push(Box::pin(async {}));
        assert_eq!(set.poll(&mut cx), 2);
        assert!(set.is_empty());
        // The place is used again.
        set.push(Box::pin(async {}));
        assert_eq!(set.slots.len(), 2);
        assert!(set.poll_all_ended(&mut cx).is_ready());
    }

    #[test]
    fn storage_is_released_and_a_stale_waker_is_harmless() {
        let waker = Waker::from(Arc::new(Count::default()));
        let mut cx = Context::from_waker(&waker);
        let mut set = StreamSet::new();
        // A stream that leaves its waker behind (as one kept by a channel would be).
        let kept: Arc<Mutex<Option<Waker>>> = Arc::default();
        for _ in 0..3 {
            let kept = kept.clone();
            set.push(Box::pin(std::future::poll_fn(move |cx| {
                *kept.lock().unwrap() = Some(cx.waker().clone());
                Poll::Ready(())
            })));
        }
        assert_eq!(set.poll(&mut cx), 3);
        assert!(set.holds_storage());
        set.release();
        assert!(!set.holds_storage());
        // The third place's waker: out of range now.
        kept.lock().unwrap().take().unwrap().wake();
        assert_eq!(set.poll(&mut cx), 0);
        // A stream in the place made anew, woken by a waker of the place freed.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        set.push(Box::pin(async {
            let _ = rx.await;
        }));
        assert_eq!(set.poll(&mut cx), 0);
        let stale = Waker::from(Arc::new(SlotWaker {
            slot: 0,
            queued: AtomicBool::new(false),
            ready: set.ready.clone(),
        }));
        stale.wake();
        assert_eq!(set.poll(&mut cx), 0, "polled for nothing, still pending");
        // Not released while a stream lives.
        set.release();
        assert!(set.holds_storage());
        tx.send(()).unwrap();
        assert!(set.poll_all_ended(&mut cx).is_ready());
    }
}
