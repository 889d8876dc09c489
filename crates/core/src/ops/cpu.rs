//! Plumbing shared by the CPU kernels: borrowing f32 slices out of candle storage, a pointer
//! that parallel pieces may share to write disjoint parts of one buffer, and splitting work over
//! the pool in a way that depends only on the thread count (so results are deterministic).

use candle_core::{CpuStorage, Layout, Storage, Tensor, bail};

/// The contiguous f32 data a layout describes.
pub fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(d) => d,
        _ => bail!("{what}: only f32 is supported on the CPU path"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{what}: input must be contiguous"),
    }
}

/// Runs `f` on the contiguous f32 data of a CPU tensor (made contiguous first if needed).
pub fn with_data<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(slice(s, layout, what)?),
        _ => bail!("{what}: the CPU kernel got a tensor on another device"),
    }
}

/// A CPU tensor owning `data`.
pub fn tensor(data: Vec<f32>, shape: impl Into<candle_core::Shape>) -> candle_core::Result<Tensor> {
    Tensor::from_vec(data, shape, &candle_core::Device::Cpu)
}

/// A pointer that may cross into parallel pieces writing disjoint ranges of one buffer.
#[derive(Clone, Copy)]
pub struct SendPtr(*mut f32);
// SAFETY: the pointer is only dereferenced through `slice_mut`, whose callers guarantee that
// concurrent tasks touch disjoint ranges of a buffer that outlives them.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    pub fn new(buf: &mut [f32]) -> Self {
        Self(buf.as_mut_ptr())
    }

    /// `len` elements from `offset`.
    ///
    /// # Safety
    /// The range must lie inside the buffer this pointer was made from, that buffer must
    /// outlive the returned slice, and no other live slice may overlap the range.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, offset: usize, len: usize) -> &mut [f32] {
        // SAFETY: upheld by the caller (see above).
        unsafe { std::slice::from_raw_parts_mut(self.0.add(offset), len) }
    }
}

thread_local! {
    /// Set while this thread runs a piece of a parallel region: a nested region runs on the
    /// calling thread (the pool serves one region at a time, and its lock is not re-entrant).
    static IN_REGION: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The thread count set by [`with_threads`] on this thread, if any.
    static LOGICAL_THREADS: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Marks the current thread as inside a region until dropped (also when a piece panics).
struct RegionGuard(bool);

impl RegionGuard {
    fn enter() -> Self {
        Self(IN_REGION.with(|c| c.replace(true)))
    }
}

impl Drop for RegionGuard {
    fn drop(&mut self) {
        IN_REGION.with(|c| c.set(self.0));
    }
}

/// Runs `f` compiled for AVX-512F where the direct kernels run AVX-512 (the workspace is built
/// for AVX2, so the loops the compiler vectorises in an `f` inlined here get 16 lanes instead
/// of 8); elsewhere as built. `f` must be `#[inline(always)]` for it to make a difference.
#[inline(always)]
pub fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if super::direct::isa() == Some(super::direct::Isa::Avx512) {
        #[target_feature(enable = "avx512f")]
        fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: isa() found AVX-512F on this CPU.
        return unsafe { run(f) };
    }
    f()
}

/// Threads the kernels split their work over: the calling thread plus the workers of
/// candle's barrier pool (`CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the core count).
///
/// That pool rather than rayon's, because its workers spin for a while after each region
/// before they sleep, and the calling thread takes a share itself: a rayon worker sleeps
/// after a few idle yields, and waking it (and then the caller blocked on the result) costs
/// a large part of a small region on a virtual machine (docs/BENCHMARKS.md).
///
/// Inside a piece of a parallel region this is 1 (nested regions run on the calling thread).
pub fn threads() -> usize {
    if in_region() {
        return 1;
    }
    LOGICAL_THREADS
        .with(|c| c.get())
        .unwrap_or_else(|| candle_core::utils::barrier_pool().n_workers() + 1)
        .max(1)
}

/// Runs `f` with the kernels on this thread splitting their work as if `n` threads ran them
/// (the split, and so which kernel runs and how sums are grouped, follows `n`; the pieces
/// run on the barrier pool when `n` covers it, else on the rayon pool `f` runs in, or on
/// this thread alone for `n = 1`). Tests use it to check every kernel path on any machine,
/// and a sweep to give each of its concurrent runs its share of the cores.
pub fn with_threads<R>(n: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<usize>);
    impl Drop for Restore {
        fn drop(&mut self) {
            LOGICAL_THREADS.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(LOGICAL_THREADS.with(|c| c.replace(Some(n.max(1)))));
    f()
}

/// Whether some thread is running a region on the barrier pool.
static POOL_BUSY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Holds the barrier pool for one region.
struct PoolTaken;

impl PoolTaken {
    fn take() -> Option<Self> {
        use std::sync::atomic::Ordering;
        POOL_BUSY
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then_some(Self)
    }
}

impl Drop for PoolTaken {
    fn drop(&mut self) {
        POOL_BUSY.store(false, std::sync::atomic::Ordering::Release);
    }
}

fn in_region() -> bool {
    IN_REGION.with(|c| c.get())
}

/// Runs `f` on each of `chunks` consecutive pieces of `0..n` over the pool; the pieces go to
/// whichever thread is free, and the results come back in piece order. The split depends
/// only on `n` and `chunks`, never on timing.
fn run_pieces<R: Send>(
    n: usize,
    chunks: usize,
    f: impl Fn(std::ops::Range<usize>) -> R + Sync,
) -> Vec<R> {
    let piece = |c: usize| c * n / chunks..(c + 1) * n / chunks;
    if chunks <= 1 || threads() == 1 {
        return (0..chunks.max(1)).map(|c| f(piece(c))).collect();
    }
    // One region at a time on the barrier pool, and only for a caller entitled to all of it
    // (every worker takes part in every region). A caller that finds it taken, or that has
    // a smaller share of the cores (one slot of a sweep running several runs), uses rayon's
    // pool, whichever one it runs in.
    let share = LOGICAL_THREADS.with(|c| c.get());
    let pool_size = candle_core::utils::barrier_pool().n_workers() + 1;
    let taken = if share.is_none_or(|s| s >= pool_size) {
        PoolTaken::take()
    } else {
        None
    };
    let Some(_taken) = taken else {
        use rayon::prelude::*;
        return (0..chunks)
            .into_par_iter()
            .map(|c| {
                let _region = RegionGuard::enter();
                f(piece(c))
            })
            .collect();
    };
    let slots: Vec<std::sync::Mutex<Option<R>>> =
        (0..chunks).map(|_| std::sync::Mutex::new(None)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    // A panicking piece is caught here and re-raised after the region: one that unwound
    // through the pool would poison its lock, and every later region of the process with it.
    let panicked = std::sync::Mutex::new(None);
    candle_core::utils::barrier_pool().execute(|_thread| {
        let _region = RegionGuard::enter();
        loop {
            let c = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if c >= chunks {
                break;
            }
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(piece(c)))) {
                Ok(r) => *slots[c].lock().unwrap_or_else(|e| e.into_inner()) = Some(r),
                Err(payload) => {
                    next.store(chunks, std::sync::atomic::Ordering::Relaxed);
                    panicked
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(payload);
                }
            }
        }
    });
    if let Some(payload) = panicked.into_inner().unwrap_or_else(|e| e.into_inner()) {
        std::panic::resume_unwind(payload);
    }
    slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every piece of a parallel region runs before it returns")
        })
        .collect()
}

/// Splits `0..n` into one contiguous range per thread (fewer if `n` is small) and runs `f` on
/// each in parallel; results come back in range order. The split depends only on `n` and the
/// thread count, never on timing.
///
/// `f` must not call candle tensor ops: the calling thread runs pieces while it holds the
/// barrier pool, and candle's element-wise ops on large tensors would wait for that pool.
pub fn par_ranges<R: Send>(n: usize, f: impl Fn(std::ops::Range<usize>) -> R + Sync) -> Vec<R> {
    run_pieces(n, threads().min(n).max(1), f)
}

/// Like [`par_ranges`] but with `parts` pieces (for load balance when items are uneven).
pub fn par_ranges_n<R: Send>(
    n: usize,
    parts: usize,
    f: impl Fn(std::ops::Range<usize>) -> R + Sync,
) -> Vec<R> {
    run_pieces(n, parts.min(n).max(1), f)
}

/// A buffer of `len` floats for an op's output, allocated without zeroing (zeroing every
/// activation and gradient, and the fresh pages behind them, is a pass over memory the op
/// overwrites anyway).
///
/// # Safety
/// The contents are uninitialised. The caller must write every element (through
/// [`SendPtr::slice_mut`] or the returned vector) before any element is read, and must not
/// let the vector escape (return it, drop it into a tensor) until then.
#[allow(clippy::uninit_vec)]
pub unsafe fn output_buffer(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: the capacity is `len`; initialising the elements is the caller's contract.
    unsafe { v.set_len(len) };
    v
}

thread_local! {
    /// Per-thread scratch for im2col buffers and the like: reused across calls, so large
    /// short-lived buffers do not cost an mmap, page faults and zeroing every time.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with an uninitialised-content (stale) scratch buffer of `len` floats. Re-entrant:
/// a nested call on the same thread gets a fresh allocation.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0f32; len]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn squares(n: usize, parts: usize) -> Vec<Vec<usize>> {
        par_ranges_n(n, parts, |r| r.map(|i| i * i).collect())
    }

    #[test]
    fn pieces_come_back_in_order_whatever_the_thread_count() {
        let want: Vec<usize> = (0..1000).map(|i| i * i).collect();
        for threads in [1, 2, 3, 8] {
            with_threads(threads, || {
                for parts in [1, 2, 7, 64, 5000] {
                    let got = squares(1000, parts);
                    assert_eq!(got.len(), parts.min(1000));
                    assert_eq!(got.concat(), want, "{threads} threads, {parts} parts");
                }
                assert_eq!(par_ranges(10, |r| r).len(), threads.min(10));
            });
        }
        assert!(par_ranges(0, |r| r.len()).iter().all(|&l| l == 0));
    }

    #[test]
    fn a_nested_region_runs_on_its_calling_thread() {
        let inner = with_threads(4, || {
            par_ranges(8, |r| {
                assert_eq!(threads(), 1);
                par_ranges(r.len(), |q| q.len()).len()
            })
        });
        assert!(inner.iter().all(|&pieces| pieces == 1));
    }

    #[test]
    fn a_panicking_piece_reaches_the_caller_and_the_pool_still_works() {
        let caught = std::panic::catch_unwind(|| {
            with_threads(2, || {
                par_ranges_n(64, 64, |r| {
                    if r.start == 37 {
                        panic!("piece 37");
                    }
                })
            })
        });
        assert!(caught.is_err());
        assert!(!in_region(), "the region flag is cleared after a panic");
        assert_eq!(with_threads(2, || squares(100, 4)).concat().len(), 100);
        // candle's own element-wise ops run on the same pool.
        let a = Tensor::ones(1 << 20, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let sum: f32 = (&a + &a).unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert_eq!(sum, (2 << 20) as f32);
    }

    #[test]
    fn callers_on_several_threads_share_the_pool() {
        let want: Vec<usize> = (0..5000).map(|i| i * i).collect();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        assert_eq!(with_threads(2, || squares(5000, 16)).concat(), want);
                    }
                });
            }
        });
    }
}
