//! A team of the rayon pool's threads held for one forward pass, so that its parallel loops (a
//! dozen per layer) start without waking a sleeping thread each time.
//!
//! Between two loops of a pass the thread running the pass does some serial work (norms, RoPE,
//! the KV write, quantizing the next matmul's activations); rayon's idle workers go to sleep
//! after a few dozen microseconds without work, and waking one for the next loop costs a
//! futex wake-up and its latency (a 16-sequence decode step of Gemma 3 270M saw about 80 such
//! sleeps per step on the second of two threads, idle 10% of the run). [`with_team`] instead
//! runs the pass on one thread of a `rayon::broadcast` and keeps the pool's other threads
//! spinning (with `yield_now` between short spins) until the pass ends, ready to take chunks of
//! the next loop ([`for_each_index`]).
//!
//! Invariants: the thread running the pass never waits for a helper to *arrive*: it takes the
//! chunks of a loop itself from the same atomic counter the helpers use, and waits only for
//! chunks a helper has already taken and for helpers in the middle of joining (both are running,
//! not queued). So a helper that never shows up (its rayon thread busy with another caller's
//! broadcast, as when tests run passes of several backends at once) slows a pass down but cannot
//! deadlock it. A loop's job lives on the stack of [`Team::run`], which returns only when no
//! helper can still read it (`active` is zero after the loop is closed).

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// One parallel loop: `f(i)` for `i < n`, chunks claimed from `next`, counted in `done`.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    /// The first panic of a helper's chunk, re-raised by the thread running the pass.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl Job<'_> {
    /// Takes and runs chunks until none is left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n {
                return;
            }
            IN_CHUNK.with(|c| c.set(true));
            let r = catch_unwind(AssertUnwindSafe(|| (self.f)(i)));
            IN_CHUNK.with(|c| c.set(false));
            if let Err(p) = r {
                self.panic
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(p);
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

/// What the threads of a team share.
pub(crate) struct Team {
    /// Bumped when a loop opens and again when it closes.
    epoch: AtomicU64,
    /// The open loop's job (type-erased `Job`), or null.
    job: AtomicPtr<()>,
    /// Helpers between announcing themselves for a loop and leaving it.
    active: AtomicUsize,
    /// Set when the pass is over: the helpers return.
    finished: AtomicBool,
}

thread_local! {
    /// The team of the pass this thread runs, if any.
    static CURRENT: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
    /// Whether this thread is running a chunk of a team's loop.
    static IN_CHUNK: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread runs a chunk of a team's loop ([`for_each_index`] on a team): loops
/// inside it run serially on this thread (the team's other threads are busy with the outer
/// loop's other chunks), and the matmul kernels split no rows.
pub(crate) fn in_chunk() -> bool {
    IN_CHUNK.with(|c| c.get())
}

impl Team {
    fn new() -> Self {
        Team {
            epoch: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            active: AtomicUsize::new(0),
            finished: AtomicBool::new(false),
        }
    }

    /// Runs `f(i)` for every `i < n` on this thread and whichever helpers join; returns when all
    /// have run (re-raising a helper's panic).
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        let job = Job {
            f,
            n,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panic: Mutex::new(None),
        };
        self.job.store(
            &job as *const Job<'_> as *const () as *mut (),
            Ordering::SeqCst,
        );
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let mine = catch_unwind(AssertUnwindSafe(|| job.work()));
        // Chunks taken by helpers are running: wait for them.
        while job.done.load(Ordering::Acquire) < n {
            std::hint::spin_loop();
        }
        // Close the loop, then wait until no helper can still read `job`: a helper that
        // announced itself before the close sees the old epoch and finds no chunk left; one
        // that announces itself after it sees the new epoch and backs off (both `SeqCst`).
        self.job.store(std::ptr::null_mut(), Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        while self.active.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if let Some(p) = job.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
            resume_unwind(p);
        }
    }

    /// A helper: joins every loop it sees open until the pass is over.
    fn help(&self) {
        let mut seen = self.epoch.load(Ordering::SeqCst);
        let mut idle = 0u32;
        while !self.finished.load(Ordering::Acquire) {
            let e = self.epoch.load(Ordering::SeqCst);
            if e == seen {
                idle += 1;
                if idle.is_multiple_of(64) {
                    // Let a thread that shares this core (the HTTP server's, another
                    // process's) run between spins.
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            seen = e;
            idle = 0;
            self.active.fetch_add(1, Ordering::SeqCst);
            let p = self.job.load(Ordering::SeqCst);
            if self.epoch.load(Ordering::SeqCst) == e && !p.is_null() {
                // SAFETY: `p` is the job of the loop opened at epoch `e`, stored before that
                // epoch (`SeqCst`) and still open when re-checked after announcing ourselves in
                // `active`; `run` does not return (its stack frame, holding the job, stays
                // alive) until `active` is back to zero, and it only stores a job of its own
                // type-erased lifetime there.
                let job = unsafe { &*(p as *const Job<'_>) };
                job.work();
            }
            self.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Runs `pass` on one thread of the current rayon pool while the pool's other threads help
/// with its parallel loops ([`for_each_index`]); without a pool of two or more threads, or
/// when `SWITCHYARD_TEAM=0`, it runs `pass` on a worker of the pool, the loops on rayon.
pub(crate) fn with_team<R: Send>(pass: impl FnOnce() -> R + Send) -> R {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var("SWITCHYARD_TEAM").is_ok_and(|v| v.trim() == "0"));
    if off || rayon::current_num_threads() < 2 || !CURRENT.with(|c| c.get().is_null()) {
        // Still on a worker of the pool, so that its loops start from inside it.
        return if rayon::current_thread_index().is_some() {
            pass()
        } else {
            rayon::scope(|_| pass())
        };
    }
    let team = Team::new();
    let pass = Mutex::new(Some(pass));
    let out: Mutex<Option<std::thread::Result<R>>> = Mutex::new(None);
    rayon::broadcast(|ctx| {
        if ctx.index() != 0 {
            team.help();
            return;
        }
        let Some(pass) = pass.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        CURRENT.with(|c| c.set(&team));
        let r = catch_unwind(AssertUnwindSafe(pass));
        CURRENT.with(|c| c.set(std::ptr::null()));
        team.finished.store(true, Ordering::Release);
        *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    });
    match out.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(Ok(r)) => r,
        Some(Err(p)) => resume_unwind(p),
        None => unreachable!("thread 0 of the broadcast ran the pass"),
    }
}

/// `f(i)` for every `i < n`, in parallel: on the current team if this thread runs a pass of
/// [`with_team`], else on rayon; serially inside a chunk of a team's loop ([`in_chunk`]).
pub(crate) fn for_each_index(n: usize, f: impl Fn(usize) + Sync) {
    match n {
        0 => {}
        1 => f(0),
        _ if in_chunk() => (0..n).for_each(f),
        _ => {
            let team = CURRENT.with(|c| c.get());
            if team.is_null() {
                use rayon::prelude::*;
                (0..n).into_par_iter().with_max_len(1).for_each(&f);
            } else {
                // The team has one job at a time (a loop inside one of this loop's chunks runs
                // serially, `in_chunk`).
                CURRENT.with(|c| c.set(std::ptr::null()));
                // SAFETY: `CURRENT` holds a team only while `with_team`'s pass runs on this
                // thread, and the team outlives that pass (it is dropped after the broadcast).
                unsafe { &*team }.run(n, &f);
                CURRENT.with(|c| c.set(team));
            }
        }
    }
}

/// Raw pointer to the elements of a slice whose disjoint chunks parallel loops write.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(*mut T, usize);

// SAFETY: used only to hand out disjoint chunks (`chunk`) to the threads of one loop.
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    pub(crate) fn new(s: &mut [T]) -> Self {
        SharedMut(s.as_mut_ptr(), s.len())
    }

    /// Elements `start..end`.
    ///
    /// # Safety
    /// No two live results may overlap, and the slice this was made from must outlive them
    /// with no other access meanwhile.
    #[expect(
        clippy::mut_from_ref,
        reason = "disjoint rows handed out to concurrent writers; the caller keeps them apart (# Safety)"
    )]
    pub(crate) unsafe fn chunk(&self, start: usize, end: usize) -> &mut [T] {
        assert!(
            start <= end && end <= self.1,
            "SharedMut: chunk out of range"
        );
        // SAFETY: in bounds (asserted); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), end - start) }
    }
}

/// `f(i, chunk)` for the chunks of `size` elements of `data` (the last may be shorter), in
/// parallel as [`for_each_index`].
pub(crate) fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    size: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let len = data.len();
    let p = SharedMut::new(data);
    for_each_index(len.div_ceil(size.max(1)), |i| {
        let start = i * size;
        // SAFETY: chunk `i` covers `i size..min((i + 1) size, len)`, disjoint from every other
        // chunk of this loop, and `data` is borrowed mutably for the whole loop.
        f(i, unsafe { p.chunk(start, (start + size).min(len)) })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// A pool of `n` threads, the pass run by `with_team` on it.
    fn pool(n: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    }

    /// Every index of every loop of a pass runs exactly once, and chunk outputs land where they
    /// belong, at 1 to 4 threads.
    #[test]
    fn every_index_once_per_loop() {
        for threads in 1..=4 {
            pool(threads).install(|| {
                let out = with_team(|| {
                    let mut total = Vec::new();
                    for n in [0usize, 1, 2, 3, 7, 64, 1000] {
                        let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                        for_each_index(n, |i| {
                            hits[i].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(
                            hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                            "n = {n}"
                        );
                        let mut v = vec![0usize; n];
                        for_each_chunk_mut(&mut v, 5, |c, run| {
                            for (k, x) in run.iter_mut().enumerate() {
                                *x = 5 * c + k;
                            }
                        });
                        assert!(v.iter().enumerate().all(|(i, &x)| x == i), "n = {n}");
                        total.push(n);
                    }
                    total
                });
                assert_eq!(out.len(), 7);
            });
        }
    }

    /// A panic in a chunk, on whichever thread runs it, reaches the caller of `with_team`, and
    /// the pool still runs the next pass.
    #[test]
    fn a_chunk_panic_reaches_the_caller() {
        let p = pool(3);
        p.install(|| {
            let r = catch_unwind(AssertUnwindSafe(|| {
                with_team(|| {
                    for_each_index(64, |i| {
                        if i == 40 {
                            panic!("chunk 40");
                        }
                    })
                })
            }));
            let msg = r.expect_err("the panic was lost");
            assert_eq!(msg.downcast_ref::<&str>(), Some(&"chunk 40"));
            let n = AtomicUsize::new(0);
            with_team(|| {
                for_each_index(100, |_| {
                    n.fetch_add(1, Ordering::Relaxed);
                })
            });
            assert_eq!(n.load(Ordering::Relaxed), 100);
        });
    }

    /// Passes started at once from several outside threads on one pool (as the tests of
    /// several backends do) all finish: a pass never waits for a helper to arrive.
    #[test]
    fn concurrent_passes_on_one_pool_finish() {
        let p = std::sync::Arc::new(pool(2));
        let handles: Vec<_> = (0..6)
            .map(|k| {
                let p = p.clone();
                std::thread::spawn(move || {
                    p.install(|| {
                        (0..50)
                            .map(|round| {
                                with_team(|| {
                                    let s = AtomicUsize::new(0);
                                    for_each_index(32, |i| {
                                        s.fetch_add(i + k + round, Ordering::Relaxed);
                                    });
                                    s.load(Ordering::Relaxed)
                                })
                            })
                            .sum::<usize>()
                    })
                })
            })
            .collect();
        for (k, h) in handles.into_iter().enumerate() {
            let want: usize = (0..50)
                .map(|r| (0..32).map(|i| i + k + r).sum::<usize>())
                .sum();
            assert_eq!(h.join().unwrap(), want);
        }
    }
}
