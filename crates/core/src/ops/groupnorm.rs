//! GroupNorm, its affine transform, an optional SiLU and an optional dropout mask as one CPU op
//! with a hand-written backward.
//!
//! candle's composition is ~15 graph nodes, each a full pass over the activation plus, in the
//! backward, a zero-filled gradient buffer and an add per edge. Here the forward is two passes
//! over x (statistics, then the normalised output), the backward three (two over x and dy plus
//! the write of dx); statistics are kept from the forward for the backward. Work is split over
//! the batch; every (sample, group) is reduced by one thread in a fixed order, and the γ/β
//! gradients are summed over samples sequentially, so the result does not depend on timing.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor, bail};
use std::sync::OnceLock;

use super::cpu::{SendPtr, output_buffer, par_ranges, slice, tensor, with_avx512, with_data};
use super::math;

/// Forward: (x, γ, β) → mask ⊙ act(γ·x̂ + β), act = SiLU or identity.
pub struct GroupNormOp {
    pub groups: usize,
    pub eps: f32,
    pub silu: bool,
    /// Dropout keep-mask (entries 0 or 1/(1−p)) of x's shape, applied after the activation.
    /// It takes no gradient, so it rides in the op rather than in the graph.
    pub mask: Option<Tensor>,
    /// (mean, 1/σ) per (sample, group), from the forward pass.
    stats: OnceLock<Vec<(f32, f32)>>,
}

impl GroupNormOp {
    pub fn new(groups: usize, eps: f64, silu: bool, mask: Option<Tensor>) -> Self {
        Self {
            groups,
            eps: eps as f32,
            silu,
            mask,
            stats: OnceLock::new(),
        }
    }
}

impl GroupNormOp {
    /// One sample's group statistics (appended to `stats`) and its output
    /// `yb = mask ⊙ act(γ·x̂ + β)`.
    #[inline(always)]
    fn forward_sample(
        &self,
        d: Dims,
        (gamma, beta): (&[f32], &[f32]),
        xb: &[f32],
        yb: &mut [f32],
        mask: Option<&[f32]>,
        stats: &mut Vec<(f32, f32)>,
    ) {
        let first = stats.len();
        sample_stats(d, self.eps, xb, stats);
        for c in 0..d.c {
            let (mean, rstd) = stats[first + c / d.cpg];
            let a = gamma[c] * rstd;
            let s = beta[c] - mean * a;
            let (xs, ys) = (&xb[c * d.hw..][..d.hw], &mut yb[c * d.hw..][..d.hw]);
            match (self.silu, mask.map(|m| &m[c * d.hw..][..d.hw])) {
                (true, None) => {
                    for (y, &x) in ys.iter_mut().zip(xs) {
                        *y = math::silu(x.mul_add(a, s));
                    }
                }
                (true, Some(ms)) => {
                    for ((y, &x), &k) in ys.iter_mut().zip(xs).zip(ms) {
                        *y = math::silu(x.mul_add(a, s)) * k;
                    }
                }
                (false, None) => {
                    for (y, &x) in ys.iter_mut().zip(xs) {
                        *y = x.mul_add(a, s);
                    }
                }
                (false, Some(ms)) => {
                    for ((y, &x), &k) in ys.iter_mut().zip(xs).zip(ms) {
                        *y = x.mul_add(a, s) * k;
                    }
                }
            }
        }
    }
}

/// Sizes of one call: batch, channels, positions per channel, channels per group.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    c: usize,
    hw: usize,
    cpg: usize,
}

fn dims(shape: &Shape, groups: usize) -> candle_core::Result<Dims> {
    let d = shape.dims();
    if d.len() < 2 {
        bail!("group_norm: expected (B, C, ...), got {d:?}");
    }
    let (b, c) = (d[0], d[1]);
    if groups == 0 || !c.is_multiple_of(groups) {
        bail!("group_norm: {groups} groups do not divide {c} channels");
    }
    Ok(Dims {
        b,
        c,
        hw: d[2..].iter().product(),
        cpg: c / groups,
    })
}

/// Mean and 1/σ of each group of one sample (two passes: exact even for large means).
#[inline(always)]
fn sample_stats(d: Dims, eps: f32, xb: &[f32], out: &mut Vec<(f32, f32)>) {
    let n = d.cpg * d.hw;
    for g in xb.chunks_exact(n) {
        let mean = math::sum(g) / n as f32;
        let var = math::sum_sq_dev(g, mean) / n as f32;
        out.push((mean, 1.0 / (var + eps).sqrt()));
    }
}

fn with_mask<R>(
    mask: &Option<Tensor>,
    f: impl FnOnce(Option<&[f32]>) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    match mask {
        Some(m) => with_data(m, "group_norm mask", |s| f(Some(s))),
        None => f(None),
    }
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "ddlab-group-norm"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = dims(lx.shape(), self.groups)?;
        let x = slice(sx, lx, "group_norm x")?;
        let gamma = slice(sg, lg, "group_norm gamma")?;
        let beta = slice(sb, lb, "group_norm beta")?;
        if gamma.len() != d.c || beta.len() != d.c {
            bail!("group_norm: γ and β need {} entries", d.c);
        }
        let img = d.c * d.hw;
        // SAFETY: every channel of every sample is written below (the pieces cover all
        // samples, and each writes all of its samples' channels) before `y` is read.
        let mut y = unsafe { output_buffer(x.len()) };
        let yp = SendPtr::new(&mut y);
        let stats = with_mask(&self.mask, |mask| {
            if mask.is_some_and(|m| m.len() != x.len()) {
                bail!("group_norm: the dropout mask has the wrong size");
            }
            let parts = par_ranges(d.b, |range| {
                let mut stats = Vec::with_capacity(range.len() * self.groups);
                for bi in range {
                    let xb = &x[bi * img..(bi + 1) * img];
                    // SAFETY: each sample's output range is written by exactly one task.
                    let yb = unsafe { yp.slice_mut(bi * img, img) };
                    let mb = mask.map(|m| &m[bi * img..(bi + 1) * img]);
                    with_avx512(
                        #[inline(always)]
                        || self.forward_sample(d, (gamma, beta), xb, yb, mb, &mut stats),
                    );
                }
                stats
            });
            Ok(parts.concat())
        })?;
        // A second forward of the same op instance would compute the same statistics.
        let _ = self.stats.set(stats);
        Ok((CpuStorage::F32(y), lx.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = dims(x.shape(), self.groups)?;
        let img = d.c * d.hw;
        let (dx, dgamma, dbeta) = with_data(x, "group_norm x", |x| {
            with_data(gamma, "group_norm gamma", |gamma| {
                with_data(beta, "group_norm beta", |beta| {
                    with_data(grad, "group_norm grad", |dy| {
                        with_mask(&self.mask, |mask| {
                            let computed;
                            let stats = match self.stats.get() {
                                Some(s) => s,
                                None => {
                                    let mut s = Vec::with_capacity(d.b * self.groups);
                                    for xb in x.chunks_exact(img) {
                                        sample_stats(d, self.eps, xb, &mut s);
                                    }
                                    computed = s;
                                    &computed
                                }
                            };
                            let args = BwdArgs {
                                d,
                                groups: self.groups,
                                silu: self.silu,
                                gamma,
                                beta,
                                stats,
                            };
                            Ok(backward(&args, x, dy, mask))
                        })
                    })
                })
            })
        })?;
        Ok((
            Some(tensor(dx, x.shape())?),
            Some(tensor(dgamma, d.c)?),
            Some(tensor(dbeta, d.c)?),
        ))
    }
}

struct BwdArgs<'a> {
    d: Dims,
    groups: usize,
    silu: bool,
    gamma: &'a [f32],
    beta: &'a [f32],
    stats: &'a [(f32, f32)],
}

/// dx, dγ, dβ. With z = γ·x̂ + β and dz = dy ⊙ mask ⊙ act'(z):
/// dβ = Σ dz, dγ = Σ dz·x̂, and per group dx = (γ·dz − mean(γ·dz) − x̂·mean(γ·dz·x̂))/σ.
fn backward(
    p: &BwdArgs,
    x: &[f32],
    dy: &[f32],
    mask: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = p.d;
    let img = d.c * d.hw;
    // SAFETY: every channel of every sample is written by dz_pass (then updated in place)
    // before `dx` is read.
    let mut dx = unsafe { output_buffer(x.len()) };
    let dxp = SendPtr::new(&mut dx);
    // Per-sample, per-channel Σdz and Σdz·x̂, summed over samples afterwards in order.
    let parts = par_ranges(d.b, |range| {
        let mut sums = Vec::with_capacity(range.len() * d.c);
        for bi in range {
            let xb = &x[bi * img..(bi + 1) * img];
            let dyb = &dy[bi * img..(bi + 1) * img];
            // SAFETY: each sample's dx range is written by exactly one task.
            let dxb = unsafe { dxp.slice_mut(bi * img, img) };
            let mb = mask.map(|m| &m[bi * img..(bi + 1) * img]);
            with_avx512(
                #[inline(always)]
                || backward_sample(p, bi, (xb, dyb, mb), dxb, &mut sums),
            );
        }
        sums
    });
    let mut dgamma = vec![0f32; d.c];
    let mut dbeta = vec![0f32; d.c];
    for sums in parts {
        for (i, (sdz, sdzx)) in sums.into_iter().enumerate() {
            dbeta[i % d.c] += sdz;
            dgamma[i % d.c] += sdzx;
        }
    }
    (dx, dgamma, dbeta)
}

/// One sample's dx (into `dxb`) and its per-channel (Σdz, Σdz·x̂), appended to `sums`.
#[inline(always)]
fn backward_sample(
    p: &BwdArgs,
    bi: usize,
    (xb, dyb, mask): (&[f32], &[f32], Option<&[f32]>),
    dxb: &mut [f32],
    sums: &mut Vec<(f32, f32)>,
) {
    let d = p.d;
    let n = (d.cpg * d.hw) as f32;
    for g in 0..p.groups {
        let (mean, rstd) = p.stats[bi * p.groups + g];
        let (mut s1, mut s2) = (0f32, 0f32);
        let channels = g * d.cpg..(g + 1) * d.cpg;
        for c in channels.clone() {
            let r = c * d.hw..(c + 1) * d.hw;
            let (xs, dys) = (&xb[r.clone()], &dyb[r.clone()]);
            let dzs = &mut dxb[r.clone()];
            let a = p.gamma[c] * rstd;
            let shift = p.beta[c] - mean * a;
            // Pass 1: dz, kept in dx's buffer.
            let ms = mask.map(|m| &m[r.clone()]);
            dz_pass(p.silu, xs, dys, ms, dzs, a, shift);
            let sdz = math::sum(dzs);
            let sdzx = rstd * math::dot_dev(dzs, xs, mean);
            sums.push((sdz, sdzx));
            s1 += p.gamma[c] * sdz;
            s2 += p.gamma[c] * sdzx;
        }
        // Pass 2: dx = (rstd·γ)·dz + k·x + c0, with k = −rstd²·m2 and
        // c0 = −rstd·m1 − mean·k (m1, m2: the group means of γ·dz and γ·dz·x̂).
        let (m1, m2) = (s1 / n, s2 / n);
        let k = -rstd * rstd * m2;
        let c0 = -rstd * m1 - mean * k;
        for c in channels {
            let r = c * d.hw..(c + 1) * d.hw;
            let a = rstd * p.gamma[c];
            for (v, &xv) in dxb[r.clone()].iter_mut().zip(&xb[r]) {
                *v = v.mul_add(a, xv.mul_add(k, c0));
            }
        }
    }
}

/// dz = dy ⊙ mask ⊙ act'(a·x + shift).
#[inline(always)]
fn dz_pass(
    silu: bool,
    xs: &[f32],
    dys: &[f32],
    mask: Option<&[f32]>,
    dz: &mut [f32],
    a: f32,
    shift: f32,
) {
    match (silu, mask) {
        (true, None) => {
            for ((o, &x), &g) in dz.iter_mut().zip(xs).zip(dys) {
                *o = g * math::silu_grad(x.mul_add(a, shift));
            }
        }
        (true, Some(m)) => {
            for (((o, &x), &g), &k) in dz.iter_mut().zip(xs).zip(dys).zip(m) {
                *o = g * k * math::silu_grad(x.mul_add(a, shift));
            }
        }
        (false, None) => dz.copy_from_slice(dys),
        (false, Some(m)) => {
            for ((o, &g), &k) in dz.iter_mut().zip(dys).zip(m) {
                *o = g * k;
            }
        }
    }
}
