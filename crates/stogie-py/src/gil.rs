//! How threads started from Rust (workers, the pool monitor, the engine's I/O threads) take
//! the GIL, so that the interpreter never crashes because of them.
//!
//! Two rules:
//!
//! - **Not during interpreter exit.** From 3.11 to 3.13 CPython ends, with `pthread_exit`, a
//!   thread that takes the GIL once finalization has begun. Its forced unwind runs the Rust
//!   frames' cleanups on the way: pyo3's `PyGILState_Release` from a thread without the GIL
//!   ("Fatal Python error: PyGILState_Release: thread state ... must be current when
//!   releasing"), `Py_DECREF` without the GIL, and `catch_unwind` aborting on a foreign
//!   exception. So every such thread passes a gate first, and [`prepare_exit`] (an `atexit`
//!   handler, which runs before finalization begins) closes the gate and waits until none is
//!   in Python or about to enter it. A thread that finds it closed never takes the GIL again
//!   (it parks: the process is ending).
//! - **One thread state per thread, not one per call.** `Python::attach` on a thread without
//!   one creates a thread state (and, once Python code runs, a 16 KiB frame stack) and frees
//!   them on return. faulthandler's all-thread dump (`dump_traceback_later`, which pytest's
//!   `faulthandler_timeout` uses, and its fatal-signal handler) walks the thread states
//!   without any lock: one freed under it crashes the process. The engine logged through
//!   Python from its I/O threads that way, once per message; [`attach`] keeps the thread
//!   state for the life of the thread instead.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Once;
use std::time::{Duration, Instant};

use pyo3::ffi;
use pyo3::prelude::*;

/// Threads started from Rust that are in Python or about to take the GIL (plus nested uses).
static USERS: AtomicUsize = AtomicUsize::new(0);
/// Set by [`prepare_exit`]: no thread enters any more, except the one exiting.
static CLOSED: AtomicBool = AtomicBool::new(false);
/// The thread that closed the gate (`pthread_self`), which finalizes the interpreter.
static CLOSER: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Gate passes this thread holds: a thread already inside (a worker in a request) always
    /// passes again (its nested waits must come back, or exiting would wait for it forever).
    static HELD: Cell<usize> = const { Cell::new(0) };
    /// The thread state [`attach`] keeps for this thread.
    static KEPT: RefCell<Option<Kept>> = const { RefCell::new(None) };
}

fn this_thread() -> usize {
    // SAFETY: no preconditions.
    unsafe { libc::pthread_self() as usize }
}

/// A pass through the gate, given back when dropped.
pub struct Pass(());

impl Drop for Pass {
    fn drop(&mut self) {
        let _ = HELD.try_with(|h| h.set(h.get().saturating_sub(1)));
        leave_count();
    }
}

/// Passes the gate: `None` once the interpreter is exiting (the caller must not take the
/// GIL), unless this thread already holds a pass or is the one exiting.
pub fn pass() -> Option<Pass> {
    let held = HELD.try_with(Cell::get).unwrap_or(0);
    USERS.fetch_add(1, SeqCst);
    // Checked after counting itself: prepare_exit sets CLOSED before it reads USERS, so
    // either it sees this thread, or this thread sees CLOSED.
    if held == 0 && CLOSED.load(SeqCst) && CLOSER.load(SeqCst) != this_thread() {
        leave_count();
        return None;
    }
    let _ = HELD.try_with(|h| h.set(held + 1));
    Some(Pass(()))
}

fn leave_count() {
    let _ = USERS.fetch_update(SeqCst, SeqCst, |n| Some(n.saturating_sub(1)));
}

/// Whether the interpreter is exiting: workers stop taking requests.
pub fn closing() -> bool {
    CLOSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Never returns: for a thread that may not take the GIL again. The process is exiting.
pub fn park() -> ! {
    loop {
        std::thread::park();
    }
}

/// For a thread holding `pass`, detached (inside `py.detach`): runs `f` without the pass,
/// so that exiting need not wait for it, and returns only if the pass could be taken back.
pub fn idle<T>(held: Pass, f: impl FnOnce() -> T) -> (T, Pass) {
    drop(held);
    let r = f();
    match pass() {
        Some(pass) => (r, pass),
        None => park(),
    }
}

/// `py.detach(f)`, coming back only while the interpreter is not exiting.
pub fn detach<T, F>(py: Python<'_>, f: F) -> T
where
    F: Send + FnOnce() -> T,
    T: Send,
{
    let (r, back) = py.detach(|| {
        let r = f();
        match pass() {
            Some(back) => (r, back),
            None => park(),
        }
    });
    // Held until the GIL is back: exiting waits for this thread meanwhile.
    drop(back);
    r
}

/// A thread state kept for a thread started from Rust, given back when the thread ends.
struct Kept {
    state: ffi::PyGILState_STATE,
    tstate: *mut ffi::PyThreadState,
}

impl Drop for Kept {
    fn drop(&mut self) {
        // The thread is ending. During interpreter exit the state is left to the interpreter.
        if let Some(_pass) = pass() {
            // SAFETY: `tstate` is this thread's, made by the `PyGILState_Ensure` that gave
            // `state`; restoring it takes the GIL, and the release deletes it.
            unsafe {
                ffi::PyEval_RestoreThread(self.tstate);
                ffi::PyGILState_Release(self.state);
            }
        }
    }
}

/// `Python::attach(f)` for a thread started from Rust that calls into Python now and then
/// (the engine's I/O threads, the pool monitor): the thread state made on the first call is
/// kept for the next ones. `None`, without running `f`, once the interpreter is exiting.
pub fn attach<R>(f: impl FnOnce(Python<'_>) -> R) -> Option<R> {
    let _pass = pass()?;
    let _ = KEPT.try_with(|kept| {
        let mut kept = kept.borrow_mut();
        // SAFETY: plain C-API calls; the GIL is not held here (a thread with a thread state
        // of its own, a Python thread, is left alone).
        unsafe {
            if kept.is_none() && ffi::PyGILState_GetThisThreadState().is_null() {
                let state = ffi::PyGILState_Ensure();
                let tstate = ffi::PyEval_SaveThread();
                *kept = Some(Kept { state, tstate });
            }
        }
    });
    Some(Python::attach(f))
}

/// Waits, at interpreter exit, until no thread started from Rust is in Python or about to
/// take the GIL, and keeps them from taking it again (see the module's notes). A request
/// still running in the app is waited for, as Cheroot's `stop()` joins its workers.
#[pyfunction]
pub fn prepare_exit(py: Python<'_>) -> PyResult<()> {
    CLOSER.store(this_thread(), SeqCst);
    CLOSED.store(true, SeqCst);
    let started = Instant::now();
    let mut warned = false;
    loop {
        let users = py.detach(|| {
            let until = Instant::now() + Duration::from_millis(50);
            loop {
                let n = USERS.load(SeqCst);
                if n == 0 || Instant::now() >= until {
                    return n;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        if users == 0 {
            return Ok(());
        }
        if !warned && started.elapsed() > Duration::from_secs(5) {
            warned = true;
            eprintln!(
                "stogie: the interpreter exits once the {users} request(s) still in the \
                 application return"
            );
        }
        // Ctrl-C gives up waiting.
        py.check_signals()?;
    }
}

/// A forked child has none of the parent's threads: none of them holds a pass there.
extern "C" fn after_fork_in_child() {
    USERS.store(0, SeqCst);
    CLOSED.store(false, SeqCst);
}

/// Registers what the gate needs at module import.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler that only stores to atomics (async-signal-safe).
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}
