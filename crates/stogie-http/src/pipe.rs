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

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use crate::exchange::ResponseEvent;

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
            events: VecDeque::new(),
            bytes: 0,
            senders: 1,
            receiver_gone: false,
            receiver: None,
            sender_tasks: Vec::new(),
            blocked: 0,
        }),
        room: Condvar::new(),
    });
    (
        PipeSender {
            shared: shared.clone(),
        },
        PipeReceiver { shared },
    )
}

fn wake(waker: Option<Waker>) {
    if let Some(w) = waker {
        w.wake();
    }
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
    /// an empty pipe, however large.
    pub fn try_send(&self, ev: ResponseEvent) -> Result<(), SendError> {
        let mut st = self.shared.lock();
        let waiting = Self::push(&mut st, ev)?;
        drop(st);
        wake(waiting);
        Ok(())
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
    /// the connection is gone.
    pub fn blocking_send(&self, mut ev: ResponseEvent) -> Result<(), ResponseEvent> {
        let mut st = self.shared.lock();
        loop {
            match Self::push(&mut st, ev) {
                Ok(waiting) => {
                    drop(st);
                    wake(waiting);
                    return Ok(());
                }
                Err(SendError::Closed(back)) => return Err(back),
                Err(SendError::Full(back)) => ev = back,
            }
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
            match Self::push(&mut st, e) {
                Ok(waiting) => {
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
        }
    }
}

impl Drop for PipeSender {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.senders -= 1;
        let waiting = if st.senders == 0 {
            st.receiver.take()
        } else {
            None
        };
        drop(st);
        wake(waiting);
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

    fn body(n: usize) -> ResponseEvent {
        ResponseEvent::Body(Bytes::from(vec![b'x'; n]))
    }

    #[test]
    fn an_empty_pipe_takes_any_event_and_a_full_one_refuses() {
        let (tx, _rx) = pipe();
        tx.try_send(body(BUDGET * 2)).unwrap();
        assert!(matches!(tx.try_send(body(1)), Err(SendError::Full(_))));
    }

    #[tokio::test]
    async fn the_receiver_takes_everything_waiting_at_once() {
        let (tx, mut rx) = pipe();
        for _ in 0..100 {
            tx.try_send(body(1024)).unwrap();
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
        tx.try_send(body(BUDGET)).unwrap();
        let t = std::thread::spawn(move || tx.blocking_send(body(10)).is_err());
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
        while tx.try_send(body(1)).is_ok() {
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
        tx.try_send(body(BUDGET)).unwrap();
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
}
