//! Plumbing shared by the CPU kernels: borrowing f32 slices out of candle storage, a pointer
//! that rayon tasks may share to write disjoint parts of one buffer, and splitting work over
//! the pool in a way that depends only on the thread count (so results are deterministic).

use candle_core::{CpuStorage, Layout, Storage, Tensor, bail};
use rayon::prelude::*;

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

/// A pointer that may cross into rayon tasks writing disjoint ranges of one buffer.
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

pub fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Splits `0..n` into one contiguous range per thread (fewer if `n` is small) and runs `f` on
/// each in parallel; results come back in range order. The split depends only on `n` and the
/// pool size, never on timing.
pub fn par_ranges<R: Send>(n: usize, f: impl Fn(std::ops::Range<usize>) -> R + Sync) -> Vec<R> {
    let chunks = threads().min(n).max(1);
    if chunks == 1 {
        return vec![f(0..n)];
    }
    (0..chunks)
        .into_par_iter()
        .map(|c| f(c * n / chunks..(c + 1) * n / chunks))
        .collect()
}

/// Like [`par_ranges`] but with `parts` pieces (for load balance when items are uneven).
pub fn par_ranges_n<R: Send>(
    n: usize,
    parts: usize,
    f: impl Fn(std::ops::Range<usize>) -> R + Sync,
) -> Vec<R> {
    let chunks = parts.min(n).max(1);
    if chunks == 1 || threads() == 1 {
        return (0..chunks)
            .map(|c| f(c * n / chunks..(c + 1) * n / chunks))
            .collect();
    }
    (0..chunks)
        .into_par_iter()
        .map(|c| f(c * n / chunks..(c + 1) * n / chunks))
        .collect()
}

/// A buffer for an op's output that the op overwrites entirely before anything reads it,
/// allocated without zeroing: zero-filling every activation and gradient (and the kernel's
/// zeroing of fresh pages behind it) was about a tenth of a training step.
#[allow(clippy::uninit_vec)]
pub fn output_buffer(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: callers write every element before any is read (each call site says how), and
    // any bit pattern is a valid f32.
    unsafe { v.set_len(len) };
    v
}

thread_local! {
    /// Per-thread scratch for im2col buffers and the like: reused across calls, so large
    /// short-lived buffers do not cost an mmap, page faults and zeroing every time.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with an uninitialised-content (stale) scratch buffer of `len` floats. Re-entrant:
/// a nested call on the same thread (e.g. from rayon work stealing) gets a fresh allocation.
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
