//! Multi-head self-attention over spatial positions as one CPU op: softmax(s·QᵀK) applied to V,
//! with a hand-written backward.
//!
//! The input is the qkv projection (B, 3C, H, W) read as (B, 3, heads, C/heads, N); each
//! (sample, head) is independent, so work is split over them. Candle's composition needs
//! transposes, contiguous copies, a 7-node softmax and batched matmuls, each a graph node;
//! here the backward recomputes the N×N probabilities (cheap next to keeping them) and runs
//! the four products of the standard attention backward.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, bail};

use super::cpu::{SendPtr, par_ranges, slice, tensor, with_data, with_scratch};
use super::gemm::{MatRef, matmul};
use super::math;

pub struct AttentionOp {
    pub heads: usize,
}

#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    c: usize,
    n: usize,
    heads: usize,
    hd: usize,
}

impl Dims {
    fn new(shape: &Shape, heads: usize) -> candle_core::Result<Self> {
        let d = shape.dims();
        if d.len() < 3 || !d[1].is_multiple_of(3) {
            bail!("attention: expected qkv of shape (B, 3C, ...), got {d:?}");
        }
        let c = d[1] / 3;
        if heads == 0 || !c.is_multiple_of(heads) {
            bail!("attention: {heads} heads do not divide {c} channels");
        }
        Ok(Self {
            b: d[0],
            c,
            n: d[2..].iter().product(),
            heads,
            hd: c / heads,
        })
    }

    fn scale(&self) -> f32 {
        1.0 / (self.hd as f32).sqrt()
    }

    /// Offsets of q, k, v of item `i` = (sample, head) in the qkv buffer, and of its output.
    fn offsets(&self, i: usize) -> ([usize; 3], usize) {
        let (bi, h) = (i / self.heads, i % self.heads);
        let base = bi * 3 * self.c * self.n + h * self.hd * self.n;
        let step = self.c * self.n;
        (
            [base, base + step, base + 2 * step],
            (bi * self.c + h * self.hd) * self.n,
        )
    }
}

/// P = softmax(s·QᵀK) row by row, into `p` (N × N).
fn probabilities(d: &Dims, q: &[f32], k: &[f32], p: &mut [f32]) {
    let (n, hd) = (d.n, d.hd);
    matmul(
        p,
        MatRef::new(q, hd, n).t(),
        MatRef::new(k, hd, n),
        false,
        1,
    );
    let s = d.scale();
    for row in p.chunks_exact_mut(n) {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        for v in row.iter_mut() {
            *v = math::exp((*v - max) * s);
        }
        let inv = 1.0 / math::sum(row);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "ddlab-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = Dims::new(l.shape(), self.heads)?;
        let qkv = slice(s, l, "attention qkv")?;
        let (n, hd) = (d.n, d.hd);
        let mut out = vec![0f32; d.b * d.c * n];
        let op = SendPtr::new(&mut out);
        par_ranges(d.b * d.heads, |items| {
            with_scratch(n * n, |p| {
                for i in items {
                    let ([qo, ko, vo], oo) = d.offsets(i);
                    probabilities(&d, &qkv[qo..][..hd * n], &qkv[ko..][..hd * n], p);
                    // SAFETY: each (sample, head) output block is written by one task.
                    let o = unsafe { op.slice_mut(oo, hd * n) };
                    // O = V · Pᵀ.
                    matmul(
                        o,
                        MatRef::new(&qkv[vo..][..hd * n], hd, n),
                        MatRef::new(p, n, n).t(),
                        false,
                        1,
                    );
                }
            })
        });
        let mut shape = l.shape().dims().to_vec();
        shape[1] = d.c;
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let d = Dims::new(qkv.shape(), self.heads)?;
        let (n, hd) = (d.n, d.hd);
        let dqkv = with_data(qkv, "attention qkv", |qkv| {
            with_data(grad, "attention grad", |dout| {
                let mut dqkv = vec![0f32; qkv.len()];
                let dp_ptr = SendPtr::new(&mut dqkv);
                par_ranges(d.b * d.heads, |items| {
                    with_scratch(2 * n * n, |scratch| {
                        let (p, dp) = scratch.split_at_mut(n * n);
                        for i in items {
                            let ([qo, ko, vo], oo) = d.offsets(i);
                            let q = MatRef::new(&qkv[qo..][..hd * n], hd, n);
                            let k = MatRef::new(&qkv[ko..][..hd * n], hd, n);
                            let v = MatRef::new(&qkv[vo..][..hd * n], hd, n);
                            let dom = MatRef::new(&dout[oo..][..hd * n], hd, n);
                            probabilities(&d, q.data, k.data, p);
                            // SAFETY: each (sample, head) owns its q, k and v gradient blocks.
                            let (dq, dk, dv) = unsafe {
                                (
                                    dp_ptr.slice_mut(qo, hd * n),
                                    dp_ptr.slice_mut(ko, hd * n),
                                    dp_ptr.slice_mut(vo, hd * n),
                                )
                            };
                            // dV = dO · P;  dP = dOᵀ · V.
                            matmul(dv, dom, MatRef::new(p, n, n), false, 1);
                            matmul(dp, dom.t(), v, false, 1);
                            // dS = s · P ⊙ (dP − rowsum(dP ⊙ P)), in place of dP.
                            let s = d.scale();
                            for (dr, pr) in dp.chunks_exact_mut(n).zip(p.chunks_exact(n)) {
                                let delta = math::dot(dr, pr);
                                for (g, &pv) in dr.iter_mut().zip(pr) {
                                    *g = s * pv * (*g - delta);
                                }
                            }
                            // dQ = K · dSᵀ;  dK = Q · dS.
                            let ds = MatRef::new(dp, n, n);
                            matmul(dq, k, ds.t(), false, 1);
                            matmul(dk, q, ds, false, 1);
                        }
                    })
                });
                Ok(dqkv)
            })
        })?;
        Ok(Some(tensor(dqkv, qkv.shape())?))
    }
}
