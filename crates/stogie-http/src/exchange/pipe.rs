//! The response pipe: response events from the gateway (a Python thread, usually) to the
//! connection, bounded by bytes rather than by events.
//!
//! Why not a channel of events: a streaming app yields many small chunks, and a channel of
//! sixteen events parked the producing thread (releasing the GIL, a futex sleep and wake)
//! every sixteen chunks, while the connection woke once per handful of chunks (measured on
//! the 100 x 1 KiB stream: the worker 39% in the kernel, the I/O thread 57% switching).
//! Here the producer blocks only when [`BUDGET`] bytes are waiting; the connection is woken
//! only when it waits on an empty pipe, and takes everything queued at once, which then
//! leaves in one vectored write. A pipe is one small allocation per request.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::event::ResponseEvent;

/// Body bytes that may wait in a pipe before the producer has to wait for the socket.
/// Enough for a response of 100 chunks of 1 KiB to be produced without stopping; small
/// enough that 10,000 slow clients cannot make the server hold gigabytes.
pub const BUDGET: usize = 128 * 1024;

struct State {
    events: VecDeque<ResponseEvent>,
    /// Body bytes in `events`.
    bytes: usize,
    /// Live [`PipeSender`]s; at zero the response ends (finished or dropped).
    senders: usize,
    receiver_gone: bool,
    /// The connection has taken events of this response already: it is awake for it, and
    /// holding the wake of its end would only delay the end.
    delivered: bool,
    /// The connection, waiting on an empty pipe.
    receiver: Option<Waker>,
    /// Async producers waiting for room (clones of a sender may each wait).
    sender_tasks: Vec<Waker>,
    /// Threads blocked in [`PipeSender::blocking_send`].
    blocked: usize,
}

struct Shared {
    state: Mutex<State>,
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The producing end; clones share the pipe.
pub struct PipeSender {
    shared: Arc<Shared>,
    /// This sender queued its response's end and no longer counts among the live ones,
    /// so that dropping it takes no lock (one lock fewer on the producing thread per
    /// response).
    ended: AtomicBool,
}

/// The connection's end.
pub struct PipeReceiver {
    shared: Arc<Shared>,
}

/// Why a send did not go through.
#[derive(Debug)]
pub enum SendError {
    /// The pipe is over its budget: try again once the connection took what is waiting.
    Full(ResponseEvent),
    /// The connection is gone.
    Closed(ResponseEvent),
}

/// A new pipe.
pub fn pipe() -> (PipeSender, PipeReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            // Room for the one event most responses are, allocated here on the connection's
            // thread, which also frees it: a queue allocated by the producing thread and freed
            // by the connection's cost the producer more (measured at hello, together with
            // the lock-free drop of an ended sender: the worker's CPU 2.50 -> 2.33 us per
            // request; the worker shares a CPU with the client there, so it counts in full).
            events: VecDeque::with_capacity(1),
            bytes: 0,
            senders: 1,
            receiver_gone: false,
            delivered: false,
            receiver: None,
            sender_tasks: Vec::new(),
            blocked: 0,
        }),
        room: Condvar::new(),
    });
    (
        PipeSender {
            shared: shared.clone(),
            ended: AtomicBool::new(false),
        },
        PipeReceiver { shared },
    )
}

fn wake(waker: Option<Waker>) {
    if let Some(w) = waker {
        w.wake();
    }
}

/// Wakes of connections whose response is complete, held back by the thread that produced
/// them and released together: the connection's thread, asleep while a slow application
/// works, then wakes once for many responses instead of once for each (measured with a
/// Flask app: 113 us of server CPU per request woken one by one, 82 us in batches of 16).
#[derive(Default)]
pub struct HeldWakes {
    held: Mutex<(Vec<Waker>, Option<Instant>)>,
}

impl HeldWakes {
    fn lock(&self) -> MutexGuard<'_, (Vec<Waker>, Option<Instant>)> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hold(&self, w: Waker) {
        let mut held = self.lock();
        held.0.push(w);
        held.1.get_or_insert_with(Instant::now);
    }

    /// Wakes everything held.
    pub fn release(&self) {
        self.release_if(0, Duration::ZERO);
    }

    /// Wakes everything held once `count` wakes are held or the oldest has waited `age`.
    pub fn release_if(&self, count: usize, age: Duration) {
        let wakers = {
            let mut held = self.lock();
            let due = held.0.len() >= count || held.1.is_some_and(|t| t.elapsed() >= age);
            if held.0.is_empty() || !due {
                return;
            }
            held.1 = None;
            std::mem::take(&mut held.0)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// How many wakes are held.
    pub fn len(&self) -> usize {
        self.lock().0.len()
    }

    /// Whether no wake is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Releases the wakes the calling thread holds, if it holds any.
fn release_held() {
    let holder = HOLDER.with(|h| h.borrow().clone());
    if let Some(h) = holder {
        h.release();
    }
}

thread_local! {
    static HOLDER: RefCell<Option<Arc<HeldWakes>>> = const { RefCell::new(None) };
}

/// I/O threads asleep waiting for events, across the process's servers. A wake is held back
/// only while the thread it would wake sleeps: waking a busy one costs a queue push, waking
/// a sleeping one a system call and a thread switch on both sides.
pub(crate) static IO_ASLEEP: AtomicUsize = AtomicUsize::new(0);

/// Makes the calling thread hold the wakes of the responses it completes in `holder`
/// (`None`: wake at once, the default). Wakes for anything but a response's end are never
/// held: a streaming response's chunks must leave while it goes on.
pub fn hold_final_wakes(holder: Option<Arc<HeldWakes>>) {
    HOLDER.with(|h| *h.borrow_mut() = holder);
}

/// Wakes the connection, or, for the end of a response it has not begun to take
/// (`holdable`), holds the wake if this thread holds wakes and the I/O thread sleeps.
fn wake_or_hold(waker: Option<Waker>, holdable: bool) {
    let Some(w) = waker else { return };
    let w = HOLDER.with(|h| match h.borrow().as_ref() {
        Some(holder) if holdable && IO_ASLEEP.load(Ordering::Relaxed) > 0 => {
            holder.hold(w);
            None
        }
        _ => Some(w),
    });
    if let Some(w) = w {
        w.wake();
    }
}

/// Whether `ev` ends its response.
fn is_final(ev: &ResponseEvent) -> bool {
    matches!(
        ev,
        ResponseEvent::Head { end: true, .. } | ResponseEvent::End
    )
}

/// What an event counts against the budget: its body bytes plus what holding it costs, so
/// that an app writing one byte at a time cannot queue a hundred thousand events.
fn weight(ev: &ResponseEvent) -> usize {
    EVENT_COST
        + match ev {
            ResponseEvent::Head { body, .. } => body.len(),
            ResponseEvent::Body(b) => b.len(),
            ResponseEvent::Bodies(v) => v.iter().map(|b| b.len() + EVENT_COST).sum(),
            _ => 0,
        }
}

/// The memory one queued event costs besides its bytes (the event itself, its allocation).
const EVENT_COST: usize = 128;

impl PipeSender {
    /// Queues `ev` unless the pipe is over budget or closed. An event is always taken by
    /// an empty pipe, however large. `last`: the gateway knows only the response's end
    /// follows (its Content-Length is reached), so the wake may be held as the end's is.
    pub fn try_send(&self, ev: ResponseEvent, last: bool) -> Result<(), SendError> {
        let fin = is_final(&ev);
        let last = last || fin;
        let mut st = self.shared.lock();
        let waiting = Self::push(&mut st, ev)?;
        if fin {
            self.end(&mut st);
        }
        let holdable = last && !st.delivered;
        drop(st);
        wake_or_hold(waiting, holdable);
        Ok(())
    }

    /// Counts this sender out once it queued the response's end (its waker, if the
    /// connection waits, was taken by the push).
    fn end(&self, st: &mut State) {
        if !self.ended.swap(true, Ordering::Relaxed) {
            st.senders -= 1;
        }
    }

    /// Queues `ev`; returns the connection's waker if it was waiting (woken once the lock
    /// is released, so that the connection does not wake into a held lock).
    fn push(st: &mut State, ev: ResponseEvent) -> Result<Option<Waker>, SendError> {
        if st.receiver_gone {
            return Err(SendError::Closed(ev));
        }
        let w = weight(&ev);
        if st.bytes > 0 && st.bytes + w > BUDGET {
            return Err(SendError::Full(ev));
        }
        st.bytes += w;
        st.events.push_back(ev);
        Ok(st.receiver.take())
    }

    /// Queues `ev`, blocking the calling thread while the pipe is over budget. `Err` when
    /// the connection is gone. `last` as in [`PipeSender::try_send`].
    pub fn blocking_send(&self, mut ev: ResponseEvent, last: bool) -> Result<(), ResponseEvent> {
        let fin = is_final(&ev);
        let last = last || fin;
        let mut st = self.shared.lock();
        loop {
            match Self::push(&mut st, ev) {
                Ok(waiting) => {
                    if fin {
                        self.end(&mut st);
                    }
                    let holdable = last && !st.delivered;
                    drop(st);
                    wake_or_hold(waiting, holdable);
                    return Ok(());
                }
                Err(SendError::Closed(back)) => return Err(back),
                Err(SendError::Full(back)) => ev = back,
            }
            // The connection that would make room may be one whose wake this thread holds
            // (a response that filled the pipe and completed its Content-Length at once).
            release_held();
            st.blocked += 1;
            st = self.shared.room.wait(st).unwrap_or_else(|e| e.into_inner());
            st.blocked -= 1;
        }
    }

    /// Queues `ev`, waiting while the pipe is over budget. `Err` when the connection is gone.
    pub async fn send(&self, ev: ResponseEvent) -> Result<(), ResponseEvent> {
        let mut ev = Some(ev);
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            let Some(e) = ev.take() else {
                return Poll::Ready(Ok(()));
            };
            let fin = is_final(&e);
            match Self::push(&mut st, e) {
                Ok(waiting) => {
                    if fin {
                        self.end(&mut st);
                    }
                    drop(st);
                    wake(waiting);
                    Poll::Ready(Ok(()))
                }
                Err(SendError::Closed(back)) => Poll::Ready(Err(back)),
                Err(SendError::Full(back)) => {
                    ev = Some(back);
                    if !st.sender_tasks.iter().any(|w| w.will_wake(cx.waker())) {
                        st.sender_tasks.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Whether the connection has stopped listening.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().receiver_gone
    }
}

impl Clone for PipeSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        PipeSender {
            shared: self.shared.clone(),
            ended: AtomicBool::new(false),
        }
    }
}

impl Drop for PipeSender {
    fn drop(&mut self) {
        if *self.ended.get_mut() {
            return;
        }
        let mut st = self.shared.lock();
        st.senders -= 1;
        let waiting = if st.senders == 0 {
            st.receiver.take()
        } else {
            None
        };
        let holdable = !st.delivered;
        drop(st);
        wake_or_hold(waiting, holdable);
    }
}

impl PipeReceiver {
    /// Waits for events and moves every one waiting into `out` (which should be empty).
    /// Returns false once the pipe is empty and every sender is gone.
    pub async fn recv_all(&mut self, out: &mut VecDeque<ResponseEvent>) -> bool {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if !st.events.is_empty() {
                std::mem::swap(&mut st.events, out);
                st.delivered = true;
                st.bytes = 0;
                let wake_thread = st.blocked > 0;
                let tasks = std::mem::take(&mut st.sender_tasks);
                drop(st);
                if wake_thread {
                    self.shared.room.notify_all();
                }
                tasks.into_iter().for_each(Waker::wake);
                return Poll::Ready(true);
            }
            if st.senders == 0 {
                return Poll::Ready(false);
            }
            match &st.receiver {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => st.receiver = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for PipeReceiver {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.receiver_gone = true;
        // Files and buffers the connection will never send are released now.
        let dropped = std::mem::take(&mut st.events);
        st.bytes = 0;
        let wake_thread = st.blocked > 0;
        let tasks = std::mem::take(&mut st.sender_tasks);
        drop(st);
        drop(dropped);
        if wake_thread {
            self.shared.room.notify_all();
        }
        tasks.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::future::Future;

    fn body(n: usize) -> ResponseEvent {
        ResponseEvent::Body(Bytes::from(vec![b'x'; n]))
    }

    /// Polls `recv_all` once: `None` while it would wait.
    fn recv_now(rx: &mut PipeReceiver, out: &mut VecDeque<ResponseEvent>) -> Option<bool> {
        match std::pin::pin!(rx.recv_all(out))
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        {
            Poll::Ready(got) => Some(got),
            Poll::Pending => None,
        }
    }

    #[test]
    fn a_sender_that_queued_the_end_counts_as_gone() {
        let (tx, mut rx) = pipe();
        let copy = tx.clone();
        tx.try_send(ResponseEvent::End, false).unwrap();
        let mut out = VecDeque::new();
        assert_eq!(recv_now(&mut rx, &mut out), Some(true));
        assert_eq!(out.len(), 1);
        out.clear();
        // The clone has not ended: the response is not over yet.
        assert_eq!(recv_now(&mut rx, &mut out), None);
        drop(copy);
        // `tx` lives on, but it sent the end.
        assert_eq!(recv_now(&mut rx, &mut out), Some(false));
        drop(tx);
        assert_eq!(recv_now(&mut rx, &mut out), Some(false));
    }

    #[test]
    fn an_empty_pipe_takes_any_event_and_a_full_one_refuses() {
        let (tx, _rx) = pipe();
        tx.try_send(body(BUDGET * 2), false).unwrap();
        assert!(matches!(
            tx.try_send(body(1), false),
            Err(SendError::Full(_))
        ));
    }

    #[tokio::test]
    async fn the_receiver_takes_everything_waiting_at_once() {
        let (tx, mut rx) = pipe();
        for _ in 0..100 {
            tx.try_send(body(1024), false).unwrap();
        }
        let mut out = VecDeque::new();
        assert!(rx.recv_all(&mut out).await);
        assert_eq!(out.len(), 100);
        drop(tx);
        out.clear();
        assert!(!rx.recv_all(&mut out).await);
    }

    #[test]
    fn a_blocked_sender_resumes_when_the_receiver_takes_or_goes() {
        let (tx, rx) = pipe();
        tx.try_send(body(BUDGET), false).unwrap();
        let t = std::thread::spawn(move || tx.blocking_send(body(10), false).is_err());
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(rx);
        assert!(
            t.join().unwrap(),
            "the send must fail once the connection is gone"
        );
    }

    #[test]
    fn tiny_events_count_against_the_budget_too() {
        let (tx, _rx) = pipe();
        let mut accepted = 0;
        while tx.try_send(body(1), false).is_ok() {
            accepted += 1;
        }
        assert!(
            accepted <= BUDGET / EVENT_COST,
            "{accepted} one-byte events queued"
        );
    }

    #[tokio::test]
    async fn every_waiting_async_sender_resumes() {
        let (tx, mut rx) = pipe();
        tx.try_send(body(BUDGET), false).unwrap();
        let senders: Vec<_> = (0..2)
            .map(|_| {
                let tx = tx.clone();
                tokio::spawn(async move { tx.send(body(1)).await.is_ok() })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut out = VecDeque::new();
        assert!(rx.recv_all(&mut out).await);
        for s in senders {
            let sent = tokio::time::timeout(std::time::Duration::from_secs(2), s).await;
            assert!(sent.expect("a sender never woke").unwrap());
        }
    }

    /// Counts its wakes.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Wakes {
        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// Makes `rx` wait with a waker counting into `wakes`; takes what was waiting first.
    fn wait_on(rx: &mut PipeReceiver, wakes: &Arc<Wakes>) -> usize {
        let waker = Waker::from(wakes.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut out = VecDeque::new();
        let taken = {
            let fut = std::pin::pin!(rx.recv_all(&mut out));
            fut.poll(&mut cx).is_ready()
        };
        if taken {
            // Took events: wait again, now on an empty pipe.
            let mut none = VecDeque::new();
            let fut = std::pin::pin!(rx.recv_all(&mut none));
            assert!(fut.poll(&mut cx).is_pending());
        }
        out.len()
    }

    fn end() -> ResponseEvent {
        ResponseEvent::End
    }

    #[test]
    fn a_holding_thread_holds_only_the_end_of_an_untaken_response() {
        let _one = ASLEEP.lock().unwrap_or_else(|e| e.into_inner());
        let holder = Arc::new(HeldWakes::default());
        IO_ASLEEP.fetch_add(1, Ordering::SeqCst);
        hold_final_wakes(Some(holder.clone()));

        // The end of a response the connection has not begun to take: held until released.
        let (tx, mut rx) = pipe();
        let wakes = Arc::new(Wakes::default());
        wait_on(&mut rx, &wakes);
        tx.try_send(body(10), true).unwrap();
        assert_eq!((wakes.count(), holder.len()), (0, 1));
        holder.release();
        assert_eq!((wakes.count(), holder.len()), (1, 0));

        // Anything but an end wakes at once: a streaming response goes on meanwhile.
        let (tx, mut rx) = pipe();
        let wakes = Arc::new(Wakes::default());
        wait_on(&mut rx, &wakes);
        tx.try_send(body(10), false).unwrap();
        assert_eq!(wakes.count(), 1);

        // The end of a response whose start the connection took: not held either.
        assert_eq!(wait_on(&mut rx, &wakes), 1);
        tx.try_send(end(), false).unwrap();
        assert_eq!((wakes.count(), holder.len()), (2, 0));

        // A busy I/O thread is woken at once: that costs it nothing.
        IO_ASLEEP.fetch_sub(1, Ordering::SeqCst);
        let (tx, mut rx) = pipe();
        let wakes = Arc::new(Wakes::default());
        wait_on(&mut rx, &wakes);
        tx.try_send(end(), false).unwrap();
        assert_eq!((wakes.count(), holder.len()), (1, 0));
        hold_final_wakes(None);
    }

    /// IO_ASLEEP is one counter for the process: tests that set it run one at a time.
    static ASLEEP: Mutex<()> = Mutex::new(());

    #[test]
    fn a_thread_blocked_on_a_full_pipe_releases_the_wakes_it_holds() {
        let _one = ASLEEP.lock().unwrap_or_else(|e| e.into_inner());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(full_pipe_with_held_wakes());
    }

    async fn full_pipe_with_held_wakes() {
        let (tx, mut rx) = pipe();
        // The connection waits before the response comes, as it does.
        let connection = tokio::spawn(async move {
            let mut out = VecDeque::new();
            while rx.recv_all(&mut out).await {
                out.clear();
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        IO_ASLEEP.fetch_add(1, Ordering::SeqCst);
        let producer = std::thread::spawn(move || {
            hold_final_wakes(Some(Arc::new(HeldWakes::default())));
            // A whole body that completes its length at once, then the end, which does
            // not fit: the connection must be woken to make room.
            tx.try_send(body(BUDGET), true).unwrap();
            let ended = tx.blocking_send(end(), false).is_ok();
            hold_final_wakes(None);
            ended
        });
        let done = tokio::time::timeout(std::time::Duration::from_secs(2), connection).await;
        IO_ASLEEP.fetch_sub(1, Ordering::SeqCst);
        assert!(done.is_ok(), "the response never completed");
        assert!(producer.join().unwrap());
    }
}
