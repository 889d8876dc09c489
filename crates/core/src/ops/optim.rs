//! Fused CPU kernels for the weight update: the AdamW moments and step, the EMA, and the sum
//! of squares behind the gradient norm. Written as tensor ops each of these is a chain of
//! element-wise passes that allocate a temporary apiece (a dozen per parameter for AdamW,
//! about a third of the `cifar` step); here each is one pass that writes in place.
//!
//! In-place writes are only sound on storage nobody else holds: the optimiser and the EMA own
//! their moment and shadow tensors (each allocated or restored as a copy of its own), the EMA
//! model copies the shadows, and a `Checkpoint` (which shares them) is serialised before the
//! next update.

use super::cpu;
use candle_core::{CpuStorage, CustomOp1, InplaceOp2, InplaceOp3, Layout, Shape, bail};

/// Below this many elements a tensor is updated on the calling thread (a hand-off to the pool
/// costs more than the pass).
const PARALLEL_MIN: usize = 1 << 15;
const CHUNK: usize = 1 << 14;

/// Runs `body` on `dst` and the same range of each other slice, in pieces of [`CHUNK`] over
/// the pool when `dst` is large.
fn for_chunks(dst: &mut [f32], body: impl Fn(&mut [f32], std::ops::Range<usize>) + Sync) {
    let len = dst.len();
    if len < PARALLEL_MIN {
        return body(dst, 0..len);
    }
    let ptr = cpu::SendPtr::new(dst);
    cpu::par_ranges_n(len, len.div_ceil(CHUNK), |r| {
        // SAFETY: the pieces of one region are disjoint ranges of `dst`, which outlives it.
        body(unsafe { ptr.slice_mut(r.start, r.len()) }, r)
    });
}

fn slice_mut<'a>(
    s: &'a mut CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a mut [f32]> {
    let data = match s {
        CpuStorage::F32(d) => d,
        _ => bail!("{what}: only f32 is supported on the CPU path"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&mut data[a..b]),
        None => bail!("{what}: the updated tensor must be contiguous"),
    }
}

/// Applies `f(dst, src)` element-wise over equal-length slices, in parallel when large.
fn zip_apply(dst: &mut [f32], src: &[f32], f: impl Fn(&mut f32, f32) + Sync) {
    for_chunks(dst, |d, r| {
        for (a, &b) in d.iter_mut().zip(&src[r]) {
            f(a, b);
        }
    });
}

fn check_len(what: &str, a: usize, b: usize) -> candle_core::Result<()> {
    if a != b {
        bail!("{what}: {a} elements updated from {b}");
    }
    Ok(())
}

/// `m ← β·m + (1 − β)·(s·g)`, or with `square`, `v ← β·v + (1 − β)·(s·g)²`.
pub struct MomentUpdate {
    pub beta: f32,
    /// 1 − β, rounded from f64: in f32, 1 − 0.999 is off by 5e-5 relative.
    pub one_minus_beta: f32,
    /// The gradient-clipping factor, folded in here rather than scaling every gradient first.
    pub grad_scale: f32,
    pub square: bool,
}

impl InplaceOp2 for MomentUpdate {
    fn name(&self) -> &'static str {
        "ddlab-adamw-moment"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        g: &CpuStorage,
        g_l: &Layout,
    ) -> candle_core::Result<()> {
        let m = slice_mut(dst, dst_l, self.name())?;
        let g = cpu::slice(g, g_l, self.name())?;
        check_len(self.name(), m.len(), g.len())?;
        let (b, c, s) = (self.beta, self.one_minus_beta, self.grad_scale);
        if self.square {
            zip_apply(m, g, |v, g| {
                let g = s * g;
                *v = b * *v + c * (g * g);
            });
        } else {
            zip_apply(m, g, |m, g| *m = b * *m + c * (s * g));
        }
        Ok(())
    }
}

/// `θ ← θ·(1 − lr·λ) − lr · m̂ / (√v̂ + ε)` with `m̂ = m / (1 − β₁ᵗ)`, `v̂ = v / (1 − β₂ᵗ)`.
pub struct AdamWParamUpdate {
    pub lr: f32,
    /// 1 − lr·λ.
    pub decay: f32,
    pub eps: f32,
    /// 1 / (1 − β₁ᵗ) and 1 / (1 − β₂ᵗ).
    pub inv_bias_correction1: f32,
    pub inv_bias_correction2: f32,
}

impl InplaceOp3 for AdamWParamUpdate {
    fn name(&self) -> &'static str {
        "ddlab-adamw-param"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        m: &CpuStorage,
        m_l: &Layout,
        v: &CpuStorage,
        v_l: &Layout,
    ) -> candle_core::Result<()> {
        let theta = slice_mut(dst, dst_l, self.name())?;
        let m = cpu::slice(m, m_l, self.name())?;
        let v = cpu::slice(v, v_l, self.name())?;
        check_len(self.name(), theta.len(), m.len())?;
        check_len(self.name(), theta.len(), v.len())?;
        let (decay, lr, eps) = (self.decay, self.lr, self.eps);
        let (inv1, inv2) = (self.inv_bias_correction1, self.inv_bias_correction2);
        for_chunks(theta, |t, r| {
            for ((t, &m), &v) in t.iter_mut().zip(&m[r.clone()]).zip(&v[r]) {
                // In the order of the tensor-op formula, so both round alike.
                *t = *t * decay - (m * inv1) / ((v * inv2).sqrt() + eps) * lr;
            }
        });
        Ok(())
    }
}

/// `s ← d·s + (1 − d)·θ`: the EMA of the weights.
pub struct EmaUpdate {
    pub decay: f32,
    pub one_minus_decay: f32,
}

impl InplaceOp2 for EmaUpdate {
    fn name(&self) -> &'static str {
        "ddlab-ema"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        theta: &CpuStorage,
        theta_l: &Layout,
    ) -> candle_core::Result<()> {
        let s = slice_mut(dst, dst_l, self.name())?;
        let theta = cpu::slice(theta, theta_l, self.name())?;
        check_len(self.name(), s.len(), theta.len())?;
        let (d, c) = (self.decay, self.one_minus_decay);
        zip_apply(s, theta, |s, t| *s = d * *s + c * t);
        Ok(())
    }
}

/// Σ x², accumulated in f64, as a scalar f64 tensor (no backward: it only feeds the norm).
pub struct SumOfSquares;

impl CustomOp1 for SumOfSquares {
    fn name(&self) -> &'static str {
        "ddlab-sum-of-squares"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu::slice(s, l, self.name())?;
        let partial = |r: std::ops::Range<usize>| {
            x[r].iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
        };
        // A fixed split (by length and pool size only), so the sum is the same every run.
        let total = if x.len() < PARALLEL_MIN {
            partial(0..x.len())
        } else {
            cpu::par_ranges(x.len(), partial).into_iter().sum()
        };
        Ok((CpuStorage::F64(vec![total]), Shape::from(())))
    }
}
