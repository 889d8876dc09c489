//! 2-D convolution on the CPU as im2col + GEMM, with a hand-written backward.
//!
//! candle's CPU conv2d is a direct loop (~12 GFLOP/s) and its input gradient goes through an
//! equally slow conv_transpose2d. Here each image is unfolded into a (C_in·k·k) × (H_out·W_out)
//! column matrix and multiplied by the (C_out × C_in·k·k) weight with the `gemm` crate; the
//! backward runs the two transposed products and folds the column gradient back (col2im).
//! Work is split over the batch (one single-threaded GEMM per image) when the batch is at least
//! as large as the thread pool, and inside each GEMM otherwise.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor, bail};
use rayon::prelude::*;

use super::gemm::{MatRef, matmul};

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvGeom {
    pub fn h_out(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    pub fn w_out(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
    /// Rows of the column matrix: C_in·k·k.
    fn kdim(&self) -> usize {
        self.c_in * self.k * self.k
    }
    /// Columns of the column matrix: H_out·W_out.
    fn ndim(&self) -> usize {
        self.h_out() * self.w_out()
    }
    /// A 1×1, stride-1, unpadded conv needs no unfolding: the image is its own column matrix.
    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }
    /// FLOPs of the forward pass (one multiply-add = 2).
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.c_out * self.kdim() * self.ndim()) as f64
    }
}

/// Unfolds one image (C, H, W) into `col` ((C·k·k) × (H_out·W_out), row-major).
fn im2col(g: &ConvGeom, x: &[f32], col: &mut [f32]) {
    let (ho, wo, k, s, p) = (g.h_out(), g.w_out(), g.k, g.stride, g.pad);
    let n = ho * wo;
    for c in 0..g.c_in {
        let xc = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..k {
            for kj in 0..k {
                let row = &mut col[((c * k + ki) * k + kj) * n..][..n];
                for oh in 0..ho {
                    let ih = (oh * s + ki) as isize - p as isize;
                    let dst = &mut row[oh * wo..(oh + 1) * wo];
                    if ih < 0 || ih >= g.h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &xc[ih as usize * g.w..(ih as usize + 1) * g.w];
                    if s == 1 {
                        // Contiguous run with zero fringes.
                        let off = kj as isize - p as isize;
                        let lo = (-off).max(0) as usize;
                        let hi = ((g.w as isize - off).min(wo as isize)).max(lo as isize) as usize;
                        dst[..lo].fill(0.0);
                        dst[lo..hi].copy_from_slice(
                            &src[(lo as isize + off) as usize..(hi as isize + off) as usize],
                        );
                        dst[hi..].fill(0.0);
                    } else {
                        for (ow, d) in dst.iter_mut().enumerate() {
                            let iw = (ow * s + kj) as isize - p as isize;
                            *d = if iw < 0 || iw >= g.w as isize {
                                0.0
                            } else {
                                src[iw as usize]
                            };
                        }
                    }
                }
            }
        }
    }
}

/// Folds a column gradient back onto one image gradient (accumulating).
fn col2im(g: &ConvGeom, col: &[f32], dx: &mut [f32]) {
    let (ho, wo, k, s, p) = (g.h_out(), g.w_out(), g.k, g.stride, g.pad);
    let n = ho * wo;
    for c in 0..g.c_in {
        let dxc = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..k {
            for kj in 0..k {
                let row = &col[((c * k + ki) * k + kj) * n..][..n];
                for oh in 0..ho {
                    let ih = (oh * s + ki) as isize - p as isize;
                    if ih < 0 || ih >= g.h as isize {
                        continue;
                    }
                    let dst = &mut dxc[ih as usize * g.w..(ih as usize + 1) * g.w];
                    let src = &row[oh * wo..(oh + 1) * wo];
                    if s == 1 {
                        let off = kj as isize - p as isize;
                        let lo = (-off).max(0) as usize;
                        let hi = ((g.w as isize - off).min(wo as isize)).max(lo as isize) as usize;
                        for (d, v) in dst
                            [(lo as isize + off) as usize..(hi as isize + off) as usize]
                            .iter_mut()
                            .zip(&src[lo..hi])
                        {
                            *d += v;
                        }
                    } else {
                        for (ow, v) in src.iter().enumerate() {
                            let iw = (ow * s + kj) as isize - p as isize;
                            if iw >= 0 && iw < g.w as isize {
                                dst[iw as usize] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Runs `f(image_range, scratch)` over the batch: in parallel chunks when the batch can fill the
/// pool (GEMMs then single-threaded), else sequentially with multi-threaded GEMMs.
/// Returns the GEMM thread count each call should use, together with per-chunk results.
fn over_batch<R: Send>(
    batch: usize,
    f: impl Fn(std::ops::Range<usize>, usize) -> R + Sync,
) -> Vec<R> {
    let t = threads();
    if batch >= t && t > 1 {
        let chunks = t.min(batch);
        (0..chunks)
            .into_par_iter()
            .map(|c| f(c * batch / chunks..(c + 1) * batch / chunks, 1))
            .collect()
    } else {
        vec![f(0..batch, t)]
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(d) => d,
        _ => bail!("conv2d ({what}): only f32 is supported on the CPU path"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("conv2d ({what}): input must be contiguous"),
    }
}

/// A pointer that may cross into rayon tasks writing disjoint image slices.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// Taking `self` makes closures capture the whole wrapper (which is Send), not the field.
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers stay inside the allocation the pointer came from.
        unsafe { self.0.add(offset) }
    }
}

/// Forward: (x, w, b) → y. Backward through [`ConvInputGrad`] and [`ConvWeightGrad`].
pub struct Conv2dOp {
    pub stride: usize,
    pub pad: usize,
}

impl Conv2dOp {
    fn geom(&self, x: &Layout, w: &Layout) -> candle_core::Result<ConvGeom> {
        let (b, c_in, h, wd) = x.shape().dims4()?;
        let (c_out, c_in2, k, k2) = w.shape().dims4()?;
        if c_in != c_in2 || k != k2 {
            bail!("conv2d: input has {c_in} channels, kernel expects {c_in2} (k {k}×{k2})");
        }
        if h + 2 * self.pad < k || wd + 2 * self.pad < k {
            bail!("conv2d: kernel {k} larger than padded input {h}×{wd}");
        }
        Ok(ConvGeom {
            batch: b,
            c_in,
            h,
            w: wd,
            c_out,
            k,
            stride: self.stride,
            pad: self.pad,
        })
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "ddlab-conv2d"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geom(lx, lw)?;
        let (x, w, bias) = (
            slice(sx, lx, "x")?,
            slice(sw, lw, "w")?,
            slice(sb, lb, "bias")?,
        );
        let (kd, n) = (g.kdim(), g.ndim());
        let img_in = g.c_in * g.h * g.w;
        let img_out = g.c_out * n;
        let mut y = vec![0f32; g.batch * img_out];
        let yp = SendPtr(y.as_mut_ptr());
        over_batch(g.batch, |range, gemm_threads| {
            let mut col = if g.is_pointwise() {
                vec![]
            } else {
                vec![0f32; kd * n]
            };
            for bi in range {
                // SAFETY: each image index is visited by exactly one task.
                let yb = unsafe { std::slice::from_raw_parts_mut(yp.at(bi * img_out), img_out) };
                for (co, row) in yb.chunks_exact_mut(n).enumerate() {
                    row.fill(bias[co]);
                }
                let xb = &x[bi * img_in..(bi + 1) * img_in];
                let rhs = if g.is_pointwise() {
                    MatRef::new(xb, kd, n)
                } else {
                    im2col(&g, xb, &mut col);
                    MatRef::new(&col, kd, n)
                };
                matmul(yb, MatRef::new(w, g.c_out, kd), rhs, true, gemm_threads);
            }
        });
        Ok((
            CpuStorage::F32(y),
            Shape::from((g.batch, g.c_out, g.h_out(), g.w_out())),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (_, c_in, h, wd) = x.dims4()?;
        let dx = grad.apply_op2_no_bwd(
            w,
            &ConvInputGrad {
                stride: self.stride,
                pad: self.pad,
                h,
                w: wd,
            },
        )?;
        let packed = grad.apply_op2_no_bwd(
            x,
            &ConvWeightGrad {
                stride: self.stride,
                pad: self.pad,
                k: w.dim(2)?,
            },
        )?;
        let kd = c_in * w.dim(2)? * w.dim(3)?;
        let dw = packed.narrow(1, 0, kd)?.contiguous()?.reshape(w.shape())?;
        let db = packed.narrow(1, kd, 1)?.contiguous()?.flatten_all()?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// (dy, w) → dx.
struct ConvInputGrad {
    stride: usize,
    pad: usize,
    h: usize,
    w: usize,
}

impl CustomOp2 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "ddlab-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        sdy: &CpuStorage,
        ldy: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c_out, _, _) = ldy.shape().dims4()?;
        let (_, c_in, k, _) = lw.shape().dims4()?;
        let g = ConvGeom {
            batch: b,
            c_in,
            h: self.h,
            w: self.w,
            c_out,
            k,
            stride: self.stride,
            pad: self.pad,
        };
        let (dy, w) = (slice(sdy, ldy, "dy")?, slice(sw, lw, "w")?);
        let (kd, n) = (g.kdim(), g.ndim());
        let img_in = c_in * g.h * g.w;
        let mut dx = vec![0f32; b * img_in];
        let dxp = SendPtr(dx.as_mut_ptr());
        over_batch(b, |range, gemm_threads| {
            let mut col = if g.is_pointwise() {
                vec![]
            } else {
                vec![0f32; kd * n]
            };
            for bi in range {
                // SAFETY: disjoint image slices per task.
                let dxb = unsafe { std::slice::from_raw_parts_mut(dxp.at(bi * img_in), img_in) };
                let dyb = MatRef::new(&dy[bi * c_out * n..(bi + 1) * c_out * n], c_out, n);
                let wt = MatRef::new(w, c_out, kd).t();
                if g.is_pointwise() {
                    matmul(dxb, wt, dyb, false, gemm_threads);
                } else {
                    matmul(&mut col, wt, dyb, false, gemm_threads);
                    col2im(&g, &col, dxb);
                }
            }
        });
        Ok((CpuStorage::F32(dx), Shape::from((b, c_in, g.h, g.w))))
    }
}

/// (dy, x) → [dW | db] packed as (C_out, C_in·k·k + 1).
struct ConvWeightGrad {
    stride: usize,
    pad: usize,
    k: usize,
}

impl CustomOp2 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "ddlab-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        sdy: &CpuStorage,
        ldy: &Layout,
        sx: &CpuStorage,
        lx: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c_out, _, _) = ldy.shape().dims4()?;
        let (_, c_in, h, w) = lx.shape().dims4()?;
        let g = ConvGeom {
            batch: b,
            c_in,
            h,
            w,
            c_out,
            k: self.k,
            stride: self.stride,
            pad: self.pad,
        };
        let (dy, x) = (slice(sdy, ldy, "dy")?, slice(sx, lx, "x")?);
        let (kd, n) = (g.kdim(), g.ndim());
        let img_in = c_in * h * w;
        let partials = over_batch(b, |range, gemm_threads| {
            let mut col = if g.is_pointwise() {
                vec![]
            } else {
                vec![0f32; kd * n]
            };
            let mut dw = vec![0f32; c_out * kd];
            let mut db = vec![0f32; c_out];
            for bi in range {
                let dyb_s = &dy[bi * c_out * n..(bi + 1) * c_out * n];
                let xb = &x[bi * img_in..(bi + 1) * img_in];
                let colt = if g.is_pointwise() {
                    MatRef::new(xb, kd, n).t()
                } else {
                    im2col(&g, xb, &mut col);
                    MatRef::new(&col, kd, n).t()
                };
                matmul(
                    &mut dw,
                    MatRef::new(dyb_s, c_out, n),
                    colt,
                    true,
                    gemm_threads,
                );
                for (co, row) in dyb_s.chunks_exact(n).enumerate() {
                    db[co] += row.iter().sum::<f32>();
                }
            }
            (dw, db)
        });
        let mut out = vec![0f32; c_out * (kd + 1)];
        for (dw, db) in partials {
            for co in 0..c_out {
                let row = &mut out[co * (kd + 1)..(co + 1) * (kd + 1)];
                for (o, v) in row[..kd].iter_mut().zip(&dw[co * kd..(co + 1) * kd]) {
                    *o += v;
                }
                row[kd] += db[co];
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((c_out, kd + 1))))
    }
}
