//! 2-D convolution on the CPU as im2col + GEMM, with a hand-written backward.
//!
//! candle's CPU conv2d is a direct loop and its input gradient goes through an equally slow
//! conv_transpose2d (docs/BENCHMARKS.md). Here each image is unfolded into a (C_in·k·k) × (H_out·W_out)
//! column matrix and multiplied by the (C_out × C_in·k·k) weight with the `gemm` crate.
//!
//! Fusions that save whole passes over activations (and graph nodes, each of which costs a
//! zero-filled gradient buffer and an add in candle's backward):
//! - the bias may be per sample, (B, C_out), which folds the U-Net's time-embedding add in;
//! - a residual may be added to the output (the ResBlock and attention skip connections);
//! - the input may be nearest-upsampled ×2 on the fly (the U-Net's upsampling conv), so the
//!   4× larger upsampled tensor never exists.
//!
//! Backward: for stride 1 the input gradient is itself a convolution of dy with the flipped
//! kernel (im2col of dy, then one GEMM with K = C_out·k·k), which beats a GEMM with K = C_out
//! followed by a scatter-add col2im; strided convs use the col2im form on this path. The
//! weight gradient re-unfolds x (cheaper than keeping 9× the input alive). Work is split over the batch (one
//! single-threaded GEMM per image) when the batch can fill the pool, and inside each GEMM
//! otherwise; partial weight gradients are summed in a fixed order.
//!
//! Layout: [`geometry`] (shapes and the dual convolution), [`im2col`] (unfolding and folding
//! back), `forward` and `backward` (the GEMM path and the forward on the direct kernels),
//! `direct_backward` (the backward on the direct kernels), `batch_wgrad` (the weight gradient
//! as one GEMM over the batch), `strided` and `upsampled` (below); this module holds the
//! candle ops and picks a path for each call.
//!
//! On x86-64 with AVX-512 (or AVX2 + FMA), 3×3 stride-1 padding-1 convolutions (all but one
//! of the U-Net's) whose batch fills the pool go to the direct kernels of [`super::direct`]
//! instead, forward and backward: they skip the column matrix. With AVX-512 the stride-2
//! 3×3 convs run on them too, through phase planes (`conv/strided.rs`), and the upsampling
//! conv's forward and input gradient are taken at the low resolution (`conv/upsampled.rs`).
//! `DDLAB_CONV=gemm` forces the im2col + GEMM path, to compare the two.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor, bail};

use super::cpu::{par_ranges, slice, tensor, threads, with_data};
use super::gemm::MatRef;

mod backward;
#[cfg(target_arch = "x86_64")]
mod batch_wgrad;
#[cfg(target_arch = "x86_64")]
mod direct_backward;
mod forward;
mod geometry;
mod im2col;
#[cfg(target_arch = "x86_64")]
mod strided;
#[cfg(target_arch = "x86_64")]
mod upsampled;

use backward::backward_gemm;
#[cfg(target_arch = "x86_64")]
use direct_backward::backward_direct;
#[cfg(target_arch = "x86_64")]
use forward::{Grid, copy_out, forward_direct};
use forward::{bias_residual_row, forward_gemm};
pub use geometry::ConvGeom;
use geometry::geom;

/// Runs `f(image_range, gemm_threads)` over the batch: in parallel chunks when the batch can
/// fill the pool (GEMMs then single-threaded), else sequentially with multi-threaded GEMMs.
fn over_batch<R: Send>(
    batch: usize,
    f: impl Fn(std::ops::Range<usize>, usize) -> R + Sync,
) -> Vec<R> {
    let t = threads();
    if batch >= t && t > 1 {
        par_ranges(batch, |r| f(r, 1))
    } else {
        vec![f(0..batch, t)]
    }
}

/// The bias added to every output position.
#[derive(Clone, Copy)]
enum Bias<'a> {
    /// (C_out).
    Channel(&'a [f32]),
    /// (B, C_out).
    Sample(&'a [f32]),
}

impl Bias<'_> {
    /// The bias of output channel `co` of image `image` (of `c_out` channels).
    fn at(&self, image: usize, co: usize, c_out: usize) -> f32 {
        match self {
            Bias::Channel(b) => b[co],
            Bias::Sample(b) => b[image * c_out + co],
        }
    }
}

/// The weight as a C_out × C_in·k·k matrix whose rows are `ld` apart (a packed [W | b] has
/// `ld = C_in·k·k + 1`).
#[derive(Clone, Copy)]
struct Weight<'a> {
    data: &'a [f32],
    ld: usize,
}

impl<'a> Weight<'a> {
    fn mat(&self, g: &ConvGeom) -> MatRef<'a> {
        MatRef {
            data: self.data,
            rows: g.c_out,
            cols: g.kdim(),
            rs: self.ld,
            cs: 1,
        }
    }
}

/// Whether the direct 3×3 kernels handle this convolution: stride 1, padding 1, and a batch
/// that fills the pool (they run one image per task).
#[cfg(target_arch = "x86_64")]
fn use_direct(g: &ConvGeom) -> bool {
    g.k == 3
        && g.stride == 1
        && g.pad == 1
        && (g.batch >= threads() || threads() == 1)
        && super::direct::available()
        && !gemm_forced()
}

/// `DDLAB_CONV=gemm` sends every convolution through im2col + GEMM, to compare the two paths
/// (read once).
#[cfg(target_arch = "x86_64")]
fn gemm_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| std::env::var("DDLAB_CONV").is_ok_and(|v| v == "gemm"))
}

fn forward(
    g: &ConvGeom,
    x: &[f32],
    w: Weight,
    bias: Bias,
    residual: Option<&[f32]>,
) -> candle_core::Result<Vec<f32>> {
    let (img_in, img_out) = (g.img_in(), g.img_out());
    if x.len() != g.batch * img_in || residual.is_some_and(|r| r.len() != g.batch * img_out) {
        bail!("conv2d: input or residual has the wrong size");
    }
    #[cfg(target_arch = "x86_64")]
    if use_direct(g) {
        if upsampled::applies(g) {
            return Ok(upsampled::forward(g, x, w, bias, residual));
        }
        return Ok(forward_direct(g, x, w, bias, residual));
    }
    #[cfg(target_arch = "x86_64")]
    if !gemm_forced() && strided::applies(g, threads()) {
        return Ok(strided::forward(g, x, w, bias, residual));
    }
    Ok(forward_gemm(g, x, w, bias, residual))
}

/// Gradients of one call: dx (B·C_in·H·W), dW (C_out × C_in·k·k) and the per-image bias
/// gradient (B × C_out).
struct Grads {
    dx: Vec<f32>,
    dw: Vec<f32>,
    db: Vec<f32>,
}

fn backward(g: &ConvGeom, x: &[f32], w: Weight, dy: &[f32]) -> candle_core::Result<Grads> {
    if x.len() != g.batch * g.img_in() || dy.len() != g.batch * g.img_out() {
        bail!("conv2d backward: input or gradient has the wrong size");
    }
    #[cfg(target_arch = "x86_64")]
    if use_direct(g) {
        return Ok(backward_direct(g, x, w, dy));
    }
    #[cfg(target_arch = "x86_64")]
    if !gemm_forced() && strided::applies(g, threads()) {
        return Ok(strided::backward(g, x, w, dy));
    }
    Ok(backward_gemm(g, x, w, dy))
}

/// Sums per-thread partial weight gradients in thread order (deterministic).
fn sum_partials(parts: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut dw = vec![0f32; len];
    for part in parts {
        for (a, b) in dw.iter_mut().zip(&part) {
            *a += b;
        }
    }
    dw
}

/// Forward: (x, w, b) → conv(up(x), w) + b, where b is (C_out) or per sample (B, C_out).
pub struct Conv2dOp {
    pub stride: usize,
    pub pad: usize,
    /// Nearest-neighbour upsampling factor applied to x first (1 = none).
    pub up: usize,
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
        let g = geom(lx.shape(), lw.shape(), self.stride, self.pad, self.up)?;
        let x = slice(sx, lx, "conv2d x")?;
        let w = slice(sw, lw, "conv2d w")?;
        let b = slice(sb, lb, "conv2d bias")?;
        let bias = match lb.shape().dims() {
            [c] if *c == g.c_out => Bias::Channel(b),
            [bb, c] if *bb == g.batch && *c == g.c_out => Bias::Sample(b),
            d => bail!("conv2d: bias of shape {d:?} for {} outputs", g.c_out),
        };
        let weight = Weight {
            data: w,
            ld: g.kdim(),
        };
        let y = forward(&g, x, weight, bias, None)?;
        Ok((
            CpuStorage::F32(y),
            Shape::from((g.batch, g.c_out, g.h_out(), g.w_out())),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = geom(x.shape(), w.shape(), self.stride, self.pad, self.up)?;
        let grads = with_data(x, "conv2d x", |xs| {
            with_data(w, "conv2d w", |ws| {
                with_data(grad, "conv2d grad", |dy| {
                    let weight = Weight {
                        data: ws,
                        ld: g.kdim(),
                    };
                    backward(&g, xs, weight, dy)
                })
            })
        })?;
        let db = if b.rank() == 1 {
            tensor(sum_rows(&grads.db, g.c_out), g.c_out)?
        } else {
            tensor(grads.db, (g.batch, g.c_out))?
        };
        Ok((
            Some(tensor(grads.dx, x.shape())?),
            Some(tensor(grads.dw, w.shape())?),
            Some(db),
        ))
    }
}

/// Σ over rows of a (rows × width) matrix, rows in order (deterministic).
fn sum_rows(m: &[f32], width: usize) -> Vec<f32> {
    let mut out = vec![0f32; width];
    for row in m.chunks_exact(width) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
    out
}

/// Forward: (x, [W | b], r) → r + conv(up(x), W) + b, with the weight and bias packed as one
/// (C_out, C_in·k·k + 1) matrix so that the residual fits the three-input op.
pub struct Conv2dResidualOp {
    pub stride: usize,
    pub pad: usize,
    pub up: usize,
    /// The kernel's shape (C_out, C_in, k, k).
    pub kernel: (usize, usize, usize, usize),
}

impl Conv2dResidualOp {
    fn geom(&self, x: &Shape) -> candle_core::Result<ConvGeom> {
        geom(x, &Shape::from(self.kernel), self.stride, self.pad, self.up)
    }
}

impl CustomOp3 for Conv2dResidualOp {
    fn name(&self) -> &'static str {
        "ddlab-conv2d-residual"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sr: &CpuStorage,
        lr: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geom(lx.shape())?;
        if lw.shape().dims() != [g.c_out, g.kdim() + 1] {
            bail!("conv2d: packed [W | b] has shape {:?}", lw.shape().dims());
        }
        let out = Shape::from((g.batch, g.c_out, g.h_out(), g.w_out()));
        if lr.shape() != &out {
            bail!(
                "conv2d: residual {:?} for output {out:?}",
                lr.shape().dims()
            );
        }
        let x = slice(sx, lx, "conv2d x")?;
        let wb = slice(sw, lw, "conv2d w")?;
        let r = slice(sr, lr, "conv2d residual")?;
        let kd = g.kdim();
        let bias: Vec<f32> = (0..g.c_out).map(|co| wb[co * (kd + 1) + kd]).collect();
        let weight = Weight {
            data: wb,
            ld: kd + 1,
        };
        let y = forward(&g, x, weight, Bias::Channel(&bias), Some(r))?;
        Ok((CpuStorage::F32(y), out))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wb: &Tensor,
        _r: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geom(x.shape())?;
        let kd = g.kdim();
        let grads = with_data(x, "conv2d x", |xs| {
            with_data(wb, "conv2d w", |ws| {
                with_data(grad, "conv2d grad", |dy| {
                    backward(
                        &g,
                        xs,
                        Weight {
                            data: ws,
                            ld: kd + 1,
                        },
                        dy,
                    )
                })
            })
        })?;
        let db = sum_rows(&grads.db, g.c_out);
        let mut dwb = vec![0f32; g.c_out * (kd + 1)];
        for co in 0..g.c_out {
            dwb[co * (kd + 1)..co * (kd + 1) + kd].copy_from_slice(&grads.dw[co * kd..][..kd]);
            dwb[co * (kd + 1) + kd] = db[co];
        }
        Ok((
            Some(tensor(grads.dx, x.shape())?),
            Some(tensor(dwb, (g.c_out, kd + 1))?),
            Some(grad.clone()),
        ))
    }
}
