//! The Python worker pool: threads that hold the GIL while there is work and release it
//! only to wait. It starts with `min` threads, grows on demand up to `max`, and threads
//! idle for a while exit down to `min` (Cheroot's pool never grows; this one does).
//!
//! Waking policy (DESIGN.md, "Rules that keep it fast"): a request queued while a worker is
//! active is left for that worker, which takes it without giving up the GIL; waking another
//! thread would only make the two hand the GIL back and forth. A sleeping thread is woken
//! only when no worker is active and none was woken already. When the queue stops moving
//! (every active worker is blocked in I/O or sleep, not busy in Python), a monitor thread
//! wakes or adds workers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use stogie_http::{hold_final_wakes, Gateway, HeldWakes, Request, Stats};

use crate::gil;

/// What a worker does with a request, with the GIL held.
pub trait Handler: Send + Sync + 'static {
    /// Per-thread state (caches) a worker keeps between requests.
    type Local: Default;
    /// Answers one request.
    fn handle(&self, py: Python<'_>, local: &mut Self::Local, request: Request);
}

/// Sizes and limits of a pool.
#[derive(Clone, Copy, Debug)]
pub struct PoolLimits {
    /// Threads kept even when idle.
    pub min: usize,
    /// Most threads; grows on demand up to it.
    pub max: usize,
    /// Most requests waiting for a thread; `None`: no limit.
    pub queue: Option<usize>,
    /// How long a request waits for room in a full queue before the client gets 503.
    pub queue_timeout: Duration,
    /// How long a thread above `min` stays idle before it exits.
    pub idle_timeout: Duration,
}

thread_local! {
    /// The pool (its `Inner` address) whose worker runs on this thread; 0 for none.
    static WORKER_OF: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

struct State {
    queue: VecDeque<(Request, Instant)>,
    threads: usize,
    idle: usize,
    /// A sleeping worker was woken for queued work and has not yet looked at the queue:
    /// requests queued meanwhile are left for it rather than waking another (each wake
    /// took a thread that then only fought the first for the GIL).
    waking: bool,
    /// Requests taken from the queue so far: the monitor's measure of progress.
    taken: u64,
    /// Whether the monitor sleeps until the next request is queued.
    monitor_asleep: bool,
    shutdown: bool,
    handles: Vec<JoinHandle<()>>,
    /// Under the same lock as the queue: dispatch reads them for every request.
    limits: PoolLimits,
}

impl State {
    fn take(&mut self) -> Option<Request> {
        let (r, _) = self.queue.pop_front()?;
        self.taken += 1;
        Some(r)
    }
}

/// A request waiting longer than the monitor's window while the queue makes little progress
/// means the active workers are blocked: the monitor then adds or wakes workers. The window
/// is short while that is what it finds (blocking apps: a request should not wait long for
/// a free thread) and grows while it finds the GIL busy instead (CPU-bound apps, where each
/// look costs the running worker a GIL hand-over). Measured at 10 ms sleeps on 256
/// connections: a fixed 2 ms window gave 22.9k req/s, 0.5 ms 23.7k, but 0.5 ms cost 7% at
/// hello.
const STALL_MIN: Duration = Duration::from_micros(500);
const STALL_MAX: Duration = Duration::from_millis(4);
/// The GIL taken within this is free: no thread was running Python. A busy GIL is handed
/// over only after the interpreter's switch interval (5 ms by default).
const GIL_FREE: Duration = Duration::from_millis(1);

/// Whether the GIL can be taken at once.
fn gil_is_free() -> bool {
    let asked = Instant::now();
    // The monitor keeps one thread state; none while the interpreter exits.
    gil::attach(|_| asked.elapsed() < GIL_FREE).unwrap_or(false)
}

/// Asks Linux to schedule the calling thread as a batch thread: woken, it does not preempt
/// the thread running on its CPU. A worker woken for a request otherwise cut into the I/O
/// thread at once, which was about to queue more requests for it (measured at hello: the I/O
/// thread preempted 16,000 times a second, the machine a third idle while requests waited).
fn batch_scheduling() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain system call on the calling thread (0) with a valid parameter. A
        // failure leaves the normal policy, which is only slower.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    }
}

/// Responses completed in a row by a worker with more requests queued leave with one wake of
/// the I/O thread (see [`HeldWakes`]): at most this many...
const HOLD_MAX: usize = 16;
/// ...held at most this long (the worker looks between requests, the monitor while one runs;
/// measured with Flask: 12.8-12.9k req/s at 0.5 ms, 12.9-13.3k at 1 ms).
const HOLD_FOR: Duration = Duration::from_millis(1);
/// Only while requests take this long or more: faster ones keep the I/O thread busy, where a
/// wake costs next to nothing and holding it back only leaves that thread idle (hello, 2-3 us
/// per request, measured 2-6% slower when every wake was held).
const HOLD_APP_MIN: Duration = Duration::from_micros(20);
/// And no longer than this: the next request likely takes as long, and the responses held
/// would wait for it.
const HOLD_APP_MAX: Duration = Duration::from_millis(1);

/// How long the monitor keeps watching after the queue was last seen non-empty.
const MONITOR_LINGER: Duration = Duration::from_millis(200);

struct Inner<H: Handler> {
    state: Mutex<State>,
    wake: Condvar,
    monitor: Condvar,
    handler: H,
    /// Wakes of connections held back by workers (see [`HOLD_MAX`]).
    held: Arc<HeldWakes>,
    work_ns: AtomicU64,
    served: AtomicU64,
    /// The next count of `served` to announce (0: none), and every announcement waiting:
    /// (count, descriptor, message), in the order of their counts.
    next_announcement: AtomicU64,
    announcements: Mutex<Vec<Announcement>>,
    /// The server's counters: work is counted only while they are enabled.
    stats: Arc<Stats>,
}

/// A pool of Python worker threads behind the [`Gateway`] seam.
pub struct Pool<H: Handler> {
    inner: Arc<Inner<H>>,
}

impl<H: Handler> Clone for Pool<H> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

/// Counters for `stats`.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolStats {
    /// Requests waiting for a thread.
    pub queued: usize,
    /// Threads alive.
    pub threads: usize,
    /// Threads waiting for work.
    pub idle: usize,
    /// Requests answered.
    pub served: u64,
    /// Seconds spent in the application.
    pub work_seconds: f64,
}

/// A message to write to a descriptor once `count` requests were served.
struct Announcement {
    count: u64,
    fd: std::os::fd::RawFd,
    message: Vec<u8>,
}

impl<H: Handler> Inner<H> {
    /// Sends the announcements due at `served` requests.
    fn announce(&self, served: u64) {
        let mut waiting = self.announcements.lock().unwrap_or_else(|e| e.into_inner());
        let due = waiting.partition_point(|a| a.count <= served);
        for a in waiting.drain(..due) {
            // A full socket loses the message: the owner's own periodic check of the count
            // is the fallback.
            // SAFETY: a live buffer, to a descriptor its owner keeps open for as long as the
            // pool runs (announce_at's contract).
            unsafe { libc::write(a.fd, a.message.as_ptr().cast(), a.message.len()) };
        }
        let next = waiting.first().map_or(0, |a| a.count);
        self.next_announcement.store(next, Relaxed);
    }
}

impl<H: Handler> Pool<H> {
    /// A pool with `limits.min` threads started.
    pub fn start(handler: H, limits: PoolLimits, stats: Arc<Stats>) -> Pool<H> {
        let pool = Pool {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                    waking: false,
                    taken: 0,
                    monitor_asleep: true,
                    shutdown: false,
                    handles: Vec::new(),
                    limits,
                }),
                wake: Condvar::new(),
                monitor: Condvar::new(),
                handler,
                held: Arc::default(),
                work_ns: AtomicU64::new(0),
                served: AtomicU64::new(0),
                next_announcement: AtomicU64::new(0),
                announcements: Mutex::new(Vec::new()),
                stats,
            }),
        };
        let mut st = pool.lock();
        for _ in 0..limits.min.max(1) {
            pool.spawn(&mut st);
        }
        let watcher = pool.clone();
        match std::thread::Builder::new()
            .name("stogie-pool-monitor".into())
            .spawn(move || watcher.monitor())
        {
            Ok(h) => st.handles.push(h),
            Err(e) => eprintln!("stogie: could not start the pool monitor: {e}"),
        }
        drop(st);
        pool
    }

    /// Watches a non-empty queue and adds or wakes workers when it stops moving.
    fn monitor(&self) {
        let mut st = self.lock();
        let mut last_busy = Instant::now();
        let mut window = STALL_MAX;
        loop {
            if st.shutdown {
                return;
            }
            if st.queue.is_empty() && last_busy.elapsed() > MONITOR_LINGER {
                st.monitor_asleep = true;
                st = self
                    .inner
                    .monitor
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner());
                st.monitor_asleep = false;
                last_busy = Instant::now();
                continue;
            }
            let taken_before = st.taken;
            drop(st);
            std::thread::sleep(window);
            // A worker holding wakes may be inside a request that turned out slow.
            self.inner.held.release_if(usize::MAX, HOLD_FOR);
            st = self.lock();
            let Some(&(_, oldest)) = st.queue.front() else {
                continue;
            };
            last_busy = Instant::now();
            let active = st.threads - st.idle;
            let moved = st.taken - taken_before;
            // Fewer pickups than active workers in the window: they are blocked, not busy.
            if oldest.elapsed() < window || moved >= active.max(1) as u64 {
                continue;
            }
            // Workers that hardly move are either blocked in I/O (more threads help) or
            // queued for the GIL behind busy Python code (more threads only add switching,
            // and would grow without end). The GIL tells which: free means nobody runs Python.
            // The pool lock is released first: a worker holding the GIL may be waiting for it.
            drop(st);
            let free = gil_is_free();
            st = self.lock();
            if !free {
                window = (window * 2).min(STALL_MAX);
                continue;
            }
            window = STALL_MIN;
            if st.shutdown {
                continue;
            }
            if st.idle > 0 {
                self.inner.wake.notify_all();
                continue;
            }
            let max = st.limits.max;
            let grow = st.queue.len().min((st.threads / 2).max(1));
            for _ in 0..grow {
                if st.threads >= max {
                    break;
                }
                self.spawn(&mut st);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the limits (Cheroot lets `numthreads` change on a running server).
    pub fn set_limits(&self, limits: PoolLimits) {
        let mut st = self.lock();
        st.limits = limits;
        while st.threads < limits.min && !st.shutdown {
            self.spawn(&mut st);
        }
    }

    fn spawn(&self, st: &mut State) {
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name("stogie-worker".into())
            .spawn(move || pool.work());
        match spawned {
            Ok(h) => {
                st.threads += 1;
                st.handles.retain(|h| !h.is_finished());
                st.handles.push(h);
            }
            Err(e) => eprintln!("stogie: could not start a worker thread: {e}"),
        }
    }

    /// Whether the calling thread is one of this pool's workers (an app calling `stop()`).
    pub fn is_current_worker(&self) -> bool {
        WORKER_OF.with(|w| w.get()) == Arc::as_ptr(&self.inner) as *const () as usize
    }

    fn work(&self) {
        WORKER_OF.with(|w| w.set(Arc::as_ptr(&self.inner) as *const () as usize));
        batch_scheduling();
        // Held while this thread is in Python, given back while it waits for work: the
        // interpreter's exit waits for it (see `gil`).
        let Some(pass) = gil::pass() else {
            // The interpreter is exiting.
            self.lock().threads -= 1;
            return;
        };
        let mut pass = Some(pass);
        Python::attach(|py| {
            let mut local = H::Local::default();
            let held = &self.inner.held;
            let mut holding = false;
            // When the last request ended: the next one taken at once starts then, so that
            // back-to-back requests read the clock once each, not twice (the worker shares
            // a CPU with everything else; at hello every 50 ns of it shows).
            let mut ended: Option<Instant> = None;
            loop {
                if gil::closing() {
                    // The interpreter is exiting: no more requests, and never the GIL again.
                    held.release();
                    let mine = pass.take();
                    py.detach(move || {
                        drop(mine);
                        gil::park()
                    });
                    return;
                }
                // Rule 1 of DESIGN.md: take the next queued request without giving up the GIL.
                let (next, more) = {
                    let mut st = self.lock();
                    let next = st.take();
                    (next, !st.queue.is_empty())
                };
                if holding && !more {
                    // Nothing queued behind this request: nothing to gather its response
                    // with, and the monitor may go to sleep while it runs.
                    held.release();
                    hold_final_wakes(None);
                    holding = false;
                }
                let request = match next {
                    Some(r) => r,
                    None => {
                        ended = None;
                        let mine = pass.take().expect("a worker holds its pass");
                        let (next, back) = py.detach(|| gil::idle(mine, || self.wait()));
                        pass = Some(back);
                        match next {
                            Some(r) => r,
                            None => return,
                        }
                    }
                };
                let started = ended.unwrap_or_else(Instant::now);
                self.inner.handler.handle(py, &mut local, request);
                let now = Instant::now();
                let took = now - started;
                ended = Some(now);
                if self.inner.stats.enabled() {
                    self.inner
                        .work_ns
                        .fetch_add(took.as_nanos() as u64, Relaxed);
                    let served = self.inner.served.fetch_add(1, Relaxed) + 1;
                    if served == self.inner.next_announcement.load(Relaxed) {
                        self.inner.announce(served);
                    }
                }
                // The next request likely takes about as long as this one did.
                let hold = (HOLD_APP_MIN..=HOLD_APP_MAX).contains(&took);
                if holding {
                    let (count, age) = if hold {
                        (HOLD_MAX, HOLD_FOR)
                    } else {
                        (0, Duration::ZERO)
                    };
                    held.release_if(count, age);
                }
                if hold != holding {
                    hold_final_wakes(hold.then(|| held.clone()));
                    holding = hold;
                }
            }
        });
        drop(pass);
    }

    /// Waits for a request; `None` when this thread should exit.
    fn wait(&self) -> Option<Request> {
        let mut st = self.lock();
        st.idle += 1;
        loop {
            if let Some(r) = st.take() {
                st.idle -= 1;
                return Some(r);
            }
            if st.shutdown {
                st.idle -= 1;
                st.threads -= 1;
                return None;
            }
            let idle_timeout = st.limits.idle_timeout;
            let (next, res) = self
                .inner
                .wake
                .wait_timeout(st, idle_timeout)
                .unwrap_or_else(|e| e.into_inner());
            st = next;
            st.waking = false;
            if res.timed_out() && st.queue.is_empty() && st.threads > st.limits.min.max(1) {
                st.idle -= 1;
                st.threads -= 1;
                return None;
            }
        }
    }

    /// Counters now.
    pub fn stats(&self) -> PoolStats {
        let st = self.lock();
        PoolStats {
            queued: st.queue.len(),
            threads: st.threads,
            idle: st.idle,
            served: self.inner.served.load(Relaxed),
            work_seconds: self.inner.work_ns.load(Relaxed) as f64 / 1e9,
        }
    }

    /// Writes `message` to `fd` (in one write) the moment the requests served (counted while
    /// the stats are enabled) reach `limit`: a worker process asks its supervisor for its
    /// replacement then, from the thread that served the last request, rather than at its
    /// main thread's next heartbeat (which has to wait for the GIL, too). `fd` must stay
    /// open while the pool runs.
    pub fn announce_at(&self, limit: u64, fd: std::os::fd::RawFd, message: Vec<u8>) {
        {
            let mut waiting = self
                .inner
                .announcements
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let at = waiting.partition_point(|a| a.count <= limit);
            waiting.insert(
                at,
                Announcement {
                    count: limit.max(1),
                    fd,
                    message,
                },
            );
        }
        // Any announcement already due goes now, and the next count is set.
        self.inner.announce(self.inner.served.load(Relaxed));
    }

    /// Resets the work counters.
    pub fn clear_stats(&self) {
        self.inner.work_ns.store(0, Relaxed);
        self.inner.served.store(0, Relaxed);
    }

    /// Lets running requests finish, drops queued ones (their clients get a 500 or a
    /// closed connection), and waits for the threads to exit, for at most `grace`.
    /// Must be called without the GIL held.
    pub fn shutdown(&self, grace: Duration) {
        let handles = {
            let mut st = self.lock();
            st.shutdown = true;
            st.queue.clear();
            std::mem::take(&mut st.handles)
        };
        self.inner.wake.notify_all();
        self.inner.monitor.notify_all();
        self.inner.held.release();
        let deadline = Instant::now() + grace;
        for h in handles {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

impl<H: Handler> Gateway for Pool<H> {
    #[allow(clippy::result_large_err)]
    fn dispatch(&self, request: Request) -> Result<(), Request> {
        let mut st = self.lock();
        if st.shutdown {
            return Err(request);
        }
        if st.limits.queue.is_some_and(|q| st.queue.len() >= q.max(1)) && st.idle == 0 {
            return Err(request);
        }
        st.queue.push_back((request, Instant::now()));
        let wake_worker = st.threads == st.idle && !st.waking;
        st.waking |= wake_worker;
        let wake_monitor = st.monitor_asleep;
        drop(st);
        if wake_worker {
            self.inner.wake.notify_one();
        }
        if wake_monitor {
            self.inner.monitor.notify_one();
        }
        Ok(())
    }

    fn queue_timeout(&self) -> Duration {
        self.lock().limits.queue_timeout
    }

    fn load(&self) -> (usize, usize, usize) {
        let st = self.lock();
        (
            st.queue.len(),
            st.threads - st.idle.min(st.threads),
            st.threads,
        )
    }
}
