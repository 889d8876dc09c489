//! 2-D convolution on the CPU as im2col + GEMM, with a hand-written backward.
//!
//! candle's CPU conv2d is a direct loop (~12 GFLOP/s) and its input gradient goes through an
//! equally slow conv_transpose2d. Here each image is unfolded into a (C_in·k·k) × (H_out·W_out)
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
//! followed by a scatter-add col2im; strided convs use the col2im form on this path. The weight gradient
//! re-unfolds x (cheaper than keeping 9× the input alive). Work is split over the batch (one
//! single-threaded GEMM per image) when the batch can fill the pool, and inside each GEMM
//! otherwise; partial weight gradients are summed in a fixed order.
//!
//! On x86-64 with AVX-512 (or AVX2 + FMA), 3×3 stride-1 padding-1 convolutions (all but one
//! of the U-Net's) whose batch fills the pool go to the direct kernels of [`super::direct`]
//! instead, forward and backward: they skip the column matrix. With AVX-512 the stride-2
//! 3×3 convs run on them too, through phase planes (`conv/strided.rs`), and the upsampling
//! conv's forward and input gradient are taken at the low resolution (`conv/upsampled.rs`). With AVX2 they ran 1.3–1.7×
//! faster per conv forward and 1.1–1.5× backward than this path; with AVX-512 about 1.4×
//! the whole training step (examples/conv_micro and examples/bench; `DDLAB_CONV=gemm`
//! forces this path to compare).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor, bail};

use super::cpu::{
    SendPtr, output_buffer, par_ranges, slice, tensor, threads, with_data, with_scratch,
};
use super::gemm::{MatRef, matmul, matmul_strided};
use super::math;

#[cfg(target_arch = "x86_64")]
mod strided;
#[cfg(target_arch = "x86_64")]
mod upsampled;

/// Geometry of one convolution. `h × w` is the stored input; with `up = 2` the kernel sees it
/// nearest-upsampled to `2h × 2w`.
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
    pub up: usize,
}

impl ConvGeom {
    /// Input height as the kernel sees it (after upsampling).
    fn hl(&self) -> usize {
        self.h * self.up
    }
    fn wl(&self) -> usize {
        self.w * self.up
    }
    pub fn h_out(&self) -> usize {
        (self.hl() + 2 * self.pad - self.k) / self.stride + 1
    }
    pub fn w_out(&self) -> usize {
        (self.wl() + 2 * self.pad - self.k) / self.stride + 1
    }
    /// Rows of the column matrix: C_in·k·k.
    fn kdim(&self) -> usize {
        self.c_in * self.k * self.k
    }
    /// Columns of the column matrix: H_out·W_out.
    fn ndim(&self) -> usize {
        self.h_out() * self.w_out()
    }
    fn img_in(&self) -> usize {
        self.c_in * self.h * self.w
    }
    fn img_out(&self) -> usize {
        self.c_out * self.ndim()
    }
    /// A 1×1, stride-1, unpadded conv needs no unfolding: the image is its own column matrix.
    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0 && self.up == 1
    }
    /// Whether the input gradient can be computed as a convolution of dy with the flipped
    /// kernel (stride 1 and a padding the dual convolution can express).
    fn dual_input_grad(&self) -> bool {
        self.stride == 1 && self.pad < self.k
    }
    /// The convolution of dy (C_out channels, H_out × W_out) whose output is the input gradient
    /// at the upsampled resolution.
    fn dual(&self) -> ConvGeom {
        ConvGeom {
            batch: self.batch,
            c_in: self.c_out,
            h: self.h_out(),
            w: self.w_out(),
            c_out: self.c_in,
            k: self.k,
            stride: 1,
            pad: self.k - 1 - self.pad,
            up: 1,
        }
    }
    /// FLOPs of the forward pass (one multiply-add = 2).
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.c_out * self.kdim() * self.ndim()) as f64
    }
}

/// Output positions `ow` whose input column `ow·s + kj − p` falls inside `0..wl`.
fn valid_range(wo: usize, s: usize, kj: usize, p: usize, wl: usize) -> (usize, usize) {
    let lo = if p > kj { (p - kj).div_ceil(s) } else { 0 }.min(wo);
    let hi = if wl + p > kj {
        (wl + p - kj).div_ceil(s)
    } else {
        0
    };
    (lo, hi.clamp(lo, wo))
}

/// Unfolds output rows `r0..r1` of one image (C, H, W) into `col`
/// ((C·k·k) × ((r1 − r0)·W_out), row-major).
fn im2col_rows(g: &ConvGeom, x: &[f32], r0: usize, r1: usize, col: &mut [f32]) {
    let (wo, k, p) = (g.w_out(), g.k, g.pad);
    let n = (r1 - r0) * wo;
    let plane = g.h * g.w;
    let fast = g.stride == 1 && g.up == 1 && wo == g.w;
    for c in 0..g.c_in {
        let xc = &x[c * plane..(c + 1) * plane];
        for ki in 0..k {
            for kj in 0..k {
                let row = &mut col[((c * k + ki) * k + kj) * n..][..n];
                if fast {
                    shifted_plane(g, xc, r0, r1, ki, kj, row);
                    continue;
                }
                let (lo, hi) = valid_range(wo, g.stride, kj, p, g.wl());
                for (oh, dst) in (r0..r1).zip(row.chunks_exact_mut(wo)) {
                    let ih = (oh * g.stride + ki) as isize - p as isize;
                    if ih < 0 || ih >= g.hl() as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &xc[(ih as usize / g.up) * g.w..][..g.w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    for (ow, d) in dst.iter_mut().enumerate().take(hi).skip(lo) {
                        *d = src[(ow * g.stride + kj - p) / g.up];
                    }
                }
            }
        }
    }
}

/// One im2col row of a stride-1 "same-width" conv: the input plane shifted by (ki − p, kj − p)
/// is a single contiguous run of the source, except that the columns falling off the left or
/// right edge pick up neighbouring rows' values and are zeroed afterwards.
fn shifted_plane(
    g: &ConvGeom,
    xc: &[f32],
    r0: usize,
    r1: usize,
    ki: usize,
    kj: usize,
    row: &mut [f32],
) {
    let (w, p) = (g.w, g.pad as isize);
    // Output rows whose input row oh + ki − p lies inside the image.
    let a = (p - ki as isize).clamp(r0 as isize, r1 as isize) as usize;
    let b = (g.h as isize + p - ki as isize).clamp(a as isize, r1 as isize) as usize;
    row[..(a - r0) * w].fill(0.0);
    row[(b - r0) * w..].fill(0.0);
    if a == b {
        return;
    }
    // Source index of output (a, 0), and the run of (b − a)·w elements from there.
    let mut dst_lo = (a - r0) * w;
    let dst_hi = (b - r0) * w;
    let mut src_lo = (a as isize + ki as isize - p) * w as isize + kj as isize - p;
    if src_lo < 0 {
        dst_lo += (-src_lo) as usize;
        src_lo = 0;
    }
    let src_lo = src_lo as usize;
    let len = (dst_hi - dst_lo).min(xc.len() - src_lo);
    row[dst_lo..dst_lo + len].copy_from_slice(&xc[src_lo..src_lo + len]);
    row[dst_lo + len..dst_hi].fill(0.0);
    // Edge columns read the wrong row (or nothing): they are padding.
    let (lo, hi) = valid_range(w, 1, kj, g.pad, w);
    for r in row[(a - r0) * w..dst_hi].chunks_exact_mut(w) {
        r[..lo].fill(0.0);
        r[hi..].fill(0.0);
    }
}

/// Output rows per tile, so that a tile's columns (K × rows·W_out floats, ~192 KiB) stay in
/// the core's L2 cache between the unfolding and the GEMM that reads them.
fn tile_rows(kd: usize, wo: usize, ho: usize) -> usize {
    const TILE_FLOATS: usize = 48 * 1024;
    (TILE_FLOATS / (kd * wo).max(1)).clamp(1, ho.max(1))
}

/// Nearest-neighbour upsampling of one image by `g.up` into `dst`.
fn upsample_image(g: &ConvGeom, x: &[f32], dst: &mut [f32]) {
    let (up, wl) = (g.up, g.wl());
    for c in 0..g.c_in {
        let src = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        let out = &mut dst[c * g.hl() * wl..(c + 1) * g.hl() * wl];
        for (i, srow) in src.chunks_exact(g.w).enumerate() {
            let first = &mut out[i * up * wl..(i * up + 1) * wl];
            for (j, &v) in srow.iter().enumerate() {
                first[j * up..(j + 1) * up].fill(v);
            }
            for a in 1..up {
                out.copy_within(i * up * wl..(i * up + 1) * wl, (i * up + a) * wl);
            }
        }
    }
}

impl ConvGeom {
    /// The same convolution on an input already upsampled.
    fn materialised(&self) -> ConvGeom {
        ConvGeom {
            h: self.hl(),
            w: self.wl(),
            up: 1,
            ..*self
        }
    }
}

/// Folds a column gradient back onto one image gradient (accumulating).
fn col2im(g: &ConvGeom, col: &[f32], dx: &mut [f32]) {
    let (ho, wo, k, s, p, up) = (g.h_out(), g.w_out(), g.k, g.stride, g.pad, g.up);
    let (hl, wl) = (g.hl(), g.wl());
    let n = ho * wo;
    for c in 0..g.c_in {
        let dxc = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..k {
            for kj in 0..k {
                let row = &col[((c * k + ki) * k + kj) * n..][..n];
                let (lo, hi) = valid_range(wo, s, kj, p, wl);
                for oh in 0..ho {
                    let ih = (oh * s + ki) as isize - p as isize;
                    if ih < 0 || ih >= hl as isize {
                        continue;
                    }
                    let dst = &mut dxc[(ih as usize / up) * g.w..][..g.w];
                    let src = &row[oh * wo..(oh + 1) * wo];
                    if s == 1 && up == 1 {
                        for (d, v) in dst[lo + kj - p..hi + kj - p].iter_mut().zip(&src[lo..hi]) {
                            *d += v;
                        }
                    } else {
                        for (ow, v) in src.iter().enumerate().take(hi).skip(lo) {
                            dst[(ow * s + kj - p) / up] += v;
                        }
                    }
                }
            }
        }
    }
}

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

/// Writes one image's output from its (C_out × grid) result: `y = grid + bias [+ residual]`.
fn bias_residual_row(y: &mut [f32], src: Option<&[f32]>, b: f32, r: Option<&[f32]>) {
    match (src, r) {
        (Some(s), Some(r)) => {
            for ((y, &v), &q) in y.iter_mut().zip(s).zip(r) {
                *y = v + b + q;
            }
        }
        (Some(s), None) => {
            for (y, &v) in y.iter_mut().zip(s) {
                *y = v + b;
            }
        }
        (None, Some(r)) => {
            for (y, &q) in y.iter_mut().zip(r) {
                *y = q + b;
            }
        }
        (None, None) => y.fill(b),
    }
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

#[cfg(target_arch = "x86_64")]
fn forward_direct(
    g: &ConvGeom,
    x: &[f32],
    w: Weight,
    bias: Bias,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    use super::direct::{PackedKernel, Padded, conv, pad};
    let (img_in, img_out, n) = (g.img_in(), g.img_out(), g.ndim());
    let (ho, wo) = (g.h_out(), g.w_out());
    let packed = PackedKernel::new(g.c_out, g.c_in, |o, i, t| w.data[o * w.ld + i * 9 + t]);
    let px = Padded {
        c: g.c_in,
        h: g.hl(),
        w: g.wl(),
    };
    let gn = px.grid_tiles();
    // Every row of every image is written by bias_residual_row below.
    let mut y = output_buffer(g.batch * img_out);
    let yp = SendPtr::new(&mut y);
    par_ranges(g.batch, |range| {
        with_scratch(px.buf_len() + g.c_out * gn, |scratch| {
            let (xp, grid) = scratch.split_at_mut(px.buf_len());
            for bi in range {
                pad(px, &x[bi * img_in..(bi + 1) * img_in], g.up, xp);
                conv(px, xp, &packed, grid);
                // SAFETY: each image's output range is written by exactly one task.
                let yb = unsafe { yp.slice_mut(bi * img_out, img_out) };
                for co in 0..g.c_out {
                    let b = bias.at(bi, co, g.c_out);
                    for oh in 0..ho {
                        let dst = &mut yb[co * n + oh * wo..][..wo];
                        let src = &grid[co * gn + oh * px.wp()..][..wo];
                        let r = residual.map(|r| &r[bi * img_out + co * n + oh * wo..][..wo]);
                        bias_residual_row(dst, Some(src), b, r);
                    }
                }
            }
        })
    });
    y
}

fn forward_gemm(
    g: &ConvGeom,
    x: &[f32],
    w: Weight,
    bias: Bias,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let (kd, n, img_in, img_out) = (g.kdim(), g.ndim(), g.img_in(), g.img_out());
    // Every row is first set to bias [+ residual], then the GEMM accumulates into it.
    let mut y = output_buffer(g.batch * img_out);
    let yp = SendPtr::new(&mut y);
    let wm = w.mat(g);
    let (ho, wo) = (g.h_out(), g.w_out());
    let rows = tile_rows(kd, wo, ho);
    let gm = g.materialised();
    let up_len = if g.up > 1 { gm.img_in() } else { 0 };
    let col_len = if g.is_pointwise() { 0 } else { kd * rows * wo };
    over_batch(g.batch, |range, gemm_threads| {
        with_scratch(col_len + up_len, |scratch| {
            let (col, xu) = scratch.split_at_mut(col_len);
            for bi in range {
                // SAFETY: each image's output range is written by exactly one task.
                let yb = unsafe { yp.slice_mut(bi * img_out, img_out) };
                for (co, row) in yb.chunks_exact_mut(n).enumerate() {
                    let b = bias.at(bi, co, g.c_out);
                    let r = residual.map(|r| &r[bi * img_out + co * n..][..n]);
                    bias_residual_row(row, None, b, r);
                }
                let xb = &x[bi * img_in..(bi + 1) * img_in];
                if g.is_pointwise() {
                    matmul(yb, wm, MatRef::new(xb, kd, n), true, gemm_threads);
                    continue;
                }
                let src = if g.up > 1 {
                    upsample_image(g, xb, xu);
                    &*xu
                } else {
                    xb
                };
                for r0 in (0..ho).step_by(rows) {
                    let r1 = (r0 + rows).min(ho);
                    let tn = (r1 - r0) * wo;
                    im2col_rows(&gm, src, r0, r1, &mut col[..kd * tn]);
                    matmul_strided(
                        &mut yb[r0 * wo..],
                        n,
                        1,
                        wm,
                        MatRef::new(&col[..kd * tn], kd, tn),
                        true,
                        gemm_threads,
                    );
                }
            }
        })
    });
    y
}

/// The flipped, transposed kernel of the dual convolution: (C_in) × (C_out·k·k) with
/// `wf[ci][(co·k + a)·k + b] = w[co][ci][k−1−a][k−1−b]`.
fn flipped(g: &ConvGeom, w: Weight) -> Vec<f32> {
    let k = g.k;
    let kk = k * k;
    let mut wf = vec![0f32; g.c_in * g.c_out * kk];
    for co in 0..g.c_out {
        for ci in 0..g.c_in {
            let src = &w.data[co * w.ld + ci * kk..][..kk];
            let dst = &mut wf[ci * g.c_out * kk + co * kk..][..kk];
            for (i, d) in dst.iter_mut().enumerate() {
                *d = src[kk - 1 - i];
            }
        }
    }
    wf
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

#[cfg(target_arch = "x86_64")]
fn backward_direct(g: &ConvGeom, x: &[f32], w: Weight, dy: &[f32]) -> Grads {
    use super::direct::{
        Group, LaneDims, PackedKernel, Padded, conv, pad, transpose_dy, weight_grad,
        weight_grad_lanes,
    };
    let (img_in, img_out, n) = (g.img_in(), g.img_out(), g.ndim());
    // Every image's dx is written whole by compact_input_grad, its db by the row sums.
    let mut dx = output_buffer(g.batch * img_in);
    let mut db = output_buffer(g.batch * g.c_out);
    let dxp = SendPtr::new(&mut dx);
    let dbp = SendPtr::new(&mut db);
    // The input gradient is the conv of padded dy with the flipped kernel (an upsampling
    // conv's is taken at the low resolution instead, conv/upsampled.rs).
    let up2 = upsampled::applies(g).then(|| upsampled::InputGrad::new(g, w));
    let flipped = up2.is_none().then(|| {
        PackedKernel::new(g.c_in, g.c_out, |ci, co, t| {
            w.data[co * w.ld + ci * 9 + (8 - t)]
        })
    });
    let px = Padded {
        c: g.c_in,
        h: g.hl(),
        w: g.wl(),
    };
    let pd = Padded {
        c: g.c_out,
        h: g.h_out(),
        w: g.w_out(),
    };
    let gn = pd.grid_tiles();
    // Small images are reduced in groups, so that each weight-gradient tile sums over ≥ ~1k
    // positions before its horizontal sums.
    let group = (1024 / pd.grid().max(1)).clamp(1, 16);
    let (xs, ds) = (px.c * px.plane(), pd.c * pd.plane());
    let (x_len, dy_len) = (
        group * xs + px.buf_len() - xs,
        group * ds + pd.buf_len() - ds,
    );
    let grid_len = up2.as_ref().map_or(g.c_in * gn, |u| u.scratch_len(g));
    // The weight gradient with output channels in the lanes where that layout pays.
    let lanes = super::direct::lanes_pay(g.c_in, g.c_out);
    // Or as one GEMM over the batch, after the loop below (which then leaves dW alone).
    let batch_dw = !lanes && batch_gemm_pays(g, threads());
    let cp = g.c_out.div_ceil(16) * 16;
    let dyt_len = if lanes { group * n * cp } else { 0 };
    let lane_dims = |count| LaneDims {
        count,
        x_step: xs,
        c_in: g.c_in,
        plane: px.plane(),
        rows: g.h_out(),
        cols: g.w_out(),
        row_stride: px.wp(),
        cp,
        c_out: g.c_out,
    };
    let offs: [usize; 9] = std::array::from_fn(|t| (t / 3) * px.wp() + t % 3);
    let partial_dw = par_ranges(g.batch, |range| {
        let mut dw = if batch_dw {
            Vec::new()
        } else {
            vec![0f32; g.c_out * g.kdim()]
        };
        with_scratch(x_len + dy_len + grid_len + dyt_len, |scratch| {
            let (xg, rest) = scratch.split_at_mut(x_len);
            let (dyg, rest) = rest.split_at_mut(dy_len);
            let (grid, dyt) = rest.split_at_mut(grid_len);
            for first in range.clone().step_by(group) {
                let images = first..(first + group).min(range.end);
                for (m, bi) in images.clone().enumerate() {
                    let dyb = &dy[bi * img_out..(bi + 1) * img_out];
                    // SAFETY: each image's db range is written by exactly one task.
                    let dbb = unsafe { dbp.slice_mut(bi * g.c_out, g.c_out) };
                    for (d, row) in dbb.iter_mut().zip(dyb.chunks_exact(n)) {
                        *d = math::sum(row);
                    }
                    // Padded dy feeds the positions-in-lanes weight gradient and the
                    // stride-1 input gradient.
                    if (!lanes && !batch_dw) || up2.is_none() {
                        pad(pd, dyb, 1, &mut dyg[m * ds..]);
                    }
                    if batch_dw {
                        continue;
                    }
                    pad(
                        px,
                        &x[bi * img_in..(bi + 1) * img_in],
                        g.up,
                        &mut xg[m * xs..],
                    );
                    if lanes {
                        transpose_dy(dyb, g.c_out, cp, m, images.len(), dyt);
                    }
                }
                if batch_dw {
                    // dW after the loop.
                } else if lanes {
                    weight_grad_lanes(xg, dyt, lane_dims(images.len()), &offs, &mut dw);
                } else {
                    // On dy's padded plane the output grid starts one row and one column in, and
                    // its garbage columns are the zero borders.
                    weight_grad(
                        px,
                        xg,
                        Group {
                            count: images.len(),
                            stride: xs,
                        },
                        &dyg[pd.wp() + 1..],
                        pd.plane(),
                        Group {
                            count: images.len(),
                            stride: ds,
                        },
                        g.c_out,
                        &mut dw,
                    );
                }
                for (m, bi) in images.enumerate() {
                    // SAFETY: each image's dx range is written by exactly one task.
                    let dxb = unsafe { dxp.slice_mut(bi * img_in, img_in) };
                    match (&up2, &flipped) {
                        (Some(u), _) => u.run(g, &dy[bi * img_out..(bi + 1) * img_out], grid, dxb),
                        (None, Some(k)) => {
                            conv(pd, &dyg[m * ds..], k, grid);
                            compact_input_grad(g, grid, gn, pd.wp(), dxb);
                        }
                        (None, None) => unreachable!("a flipped kernel is built without up2"),
                    }
                }
            }
        });
        dw
    });
    let dw = if batch_dw {
        weight_grad_batch_gemm(g, x, dy)
    } else {
        sum_partials(partial_dw, g.c_out * g.kdim())
    };
    Grads { dx, dw, db }
}

/// Whether the weight gradient of this conv is better taken as one GEMM over the whole batch
/// ([`weight_grad_batch_gemm`]) than image by image on each thread: wide layers on small
/// images, where a thread's images give each direct-kernel tile too few positions to pay for
/// its horizontal sums (cifar's 4×4 level: 10–20 GFLOP/s per thread image by image). Measured
/// on cifar, batch 8, two threads: backward 774–822 → 640–690 ms with the 4×4 and 8×8 levels
/// here; taking the 16×16 level too (< 2048) made it 720–748 ms.
fn batch_gemm_pays(g: &ConvGeom, threads: usize) -> bool {
    let per_thread = g.ndim() * g.batch.div_ceil(threads.max(1));
    g.c_out >= 64 && g.c_in >= 64 && per_thread < 1024
}

/// dW (C_out × C_in·k·k) = dy · colᵀ with K = every output position of the batch: the columns
/// of all images side by side, then one GEMM split over the pool by columns of dW.
fn weight_grad_batch_gemm(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (kd, n, img_in, img_out) = (g.kdim(), g.ndim(), g.img_in(), g.img_out());
    let total = g.batch * n;
    // Both written whole below: every image's block of every row.
    let mut col = output_buffer(kd * total);
    let mut dym = output_buffer(g.c_out * total);
    let (colp, dymp) = (SendPtr::new(&mut col), SendPtr::new(&mut dym));
    par_ranges(g.batch, |range| {
        with_scratch(kd * n, |tmp| {
            for b in range {
                im2col_rows(g, &x[b * img_in..(b + 1) * img_in], 0, g.h_out(), tmp);
                for (k, row) in tmp.chunks_exact(n).enumerate() {
                    // SAFETY: image b's block of row k is written by this task alone.
                    unsafe { colp.slice_mut(k * total + b * n, n) }.copy_from_slice(row);
                }
                for (o, row) in dy[b * img_out..(b + 1) * img_out]
                    .chunks_exact(n)
                    .enumerate()
                {
                    // SAFETY: as above, for dy's rows.
                    unsafe { dymp.slice_mut(o * total + b * n, n) }.copy_from_slice(row);
                }
            }
        })
    });
    // Split by rows of dw (output channels): each task's rows are one contiguous slice.
    let mut dw = output_buffer(g.c_out * kd);
    let dwp = SendPtr::new(&mut dw);
    // Element (p, j) of colᵀ is col[j·total + p].
    let colt = MatRef {
        data: &col,
        rows: total,
        cols: kd,
        rs: 1,
        cs: total,
    };
    par_ranges(g.c_out, |rows| {
        if rows.is_empty() {
            return;
        }
        let lhs = MatRef::new(
            &dym[rows.start * total..rows.end * total],
            rows.len(),
            total,
        );
        // SAFETY: rows `rows` of dw are written by this task alone (and whole, accumulate off).
        let dst = unsafe { dwp.slice_mut(rows.start * kd, rows.len() * kd) };
        matmul(dst, lhs, colt, false, 1);
    });
    dw
}

/// Copies the dual conv's (C_in × grid) result into dx, summing each `up × up` block when
/// the forward upsampled its input (nearest upsampling's gradient).
#[cfg(target_arch = "x86_64")]
fn compact_input_grad(g: &ConvGeom, grid: &[f32], gn: usize, wp: usize, dxb: &mut [f32]) {
    let (hl, wl, up) = (g.hl(), g.wl(), g.up);
    for ci in 0..g.c_in {
        let gc = &grid[ci * gn..];
        let dc = &mut dxb[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        if up == 1 {
            for ih in 0..hl {
                dc[ih * wl..(ih + 1) * wl].copy_from_slice(&gc[ih * wp..][..wl]);
            }
            continue;
        }
        for (i, drow) in dc.chunks_exact_mut(g.w).enumerate() {
            drow.fill(0.0);
            for a in 0..up {
                let row = &gc[(i * up + a) * wp..][..wl];
                for (d, block) in drow.iter_mut().zip(row.chunks_exact(up)) {
                    for v in block {
                        *d += v;
                    }
                }
            }
        }
    }
}

fn backward_gemm(g: &ConvGeom, x: &[f32], w: Weight, dy: &[f32]) -> Grads {
    let (kd, n, img_in, img_out) = (g.kdim(), g.ndim(), g.img_in(), g.img_out());
    let mut dx = vec![0f32; g.batch * img_in];
    let mut db = vec![0f32; g.batch * g.c_out];
    let dxp = SendPtr::new(&mut dx);
    let dbp = SendPtr::new(&mut db);
    let wm = w.mat(g);
    let (ho, wo) = (g.h_out(), g.w_out());
    let gm = g.materialised();
    let dual = g.dual_input_grad().then(|| (g.dual(), flipped(g, w)));
    // Tiles of x's columns (weight gradient) and of dy's dual columns (input gradient share
    // one scratch buffer; the col2im form of strided convs needs all columns at once.
    let rows = tile_rows(kd, wo, ho);
    let mut col_len = if g.is_pointwise() { 0 } else { kd * rows * wo };
    let mut dual_rows = 0;
    match &dual {
        Some((d, _)) if !g.is_pointwise() => {
            dual_rows = tile_rows(d.kdim(), d.w_out(), d.h_out());
            col_len = col_len.max(d.kdim() * dual_rows * d.w_out());
        }
        Some(_) => {}
        None => col_len = col_len.max(kd * n),
    }
    // x upsampled (weight gradient) and dx at the upsampled resolution (input gradient).
    let up_len = if g.up > 1 { 2 * gm.img_in() } else { 0 };
    let partial_dw = over_batch(g.batch, |range, gemm_threads| {
        let mut dw = vec![0f32; g.c_out * kd];
        with_scratch(col_len + up_len, |scratch| {
            let (col, rest) = scratch.split_at_mut(col_len);
            let (xu, dx_up) = rest.split_at_mut(up_len / 2);
            for bi in range {
                let xb = &x[bi * img_in..(bi + 1) * img_in];
                let dyb = &dy[bi * img_out..(bi + 1) * img_out];
                // SAFETY: each image's dx and db ranges are written by exactly one task.
                let dxb = unsafe { dxp.slice_mut(bi * img_in, img_in) };
                let dbb = unsafe { dbp.slice_mut(bi * g.c_out, g.c_out) };
                let dym = MatRef::new(dyb, g.c_out, n);
                for (d, row) in dbb.iter_mut().zip(dyb.chunks_exact(n)) {
                    *d = math::sum(row);
                }
                // Weight gradient: dW += dy · colᵀ, tile by tile.
                if g.is_pointwise() {
                    matmul(&mut dw, dym, MatRef::new(xb, kd, n).t(), true, gemm_threads);
                    matmul(dxb, wm.t(), dym, false, gemm_threads);
                    continue;
                }
                let src = if g.up > 1 {
                    upsample_image(g, xb, xu);
                    &*xu
                } else {
                    xb
                };
                for r0 in (0..ho).step_by(rows) {
                    let r1 = (r0 + rows).min(ho);
                    let tn = (r1 - r0) * wo;
                    im2col_rows(&gm, src, r0, r1, &mut col[..kd * tn]);
                    let dyt = MatRef {
                        data: &dyb[r0 * wo..],
                        rows: g.c_out,
                        cols: tn,
                        rs: n,
                        cs: 1,
                    };
                    let colt = MatRef::new(&col[..kd * tn], kd, tn).t();
                    matmul(&mut dw, dyt, colt, true, gemm_threads);
                }
                // Input gradient.
                match &dual {
                    Some((dg, wf)) => {
                        let (dn, dwo, dho) = (dg.ndim(), dg.w_out(), dg.h_out());
                        let lhs = MatRef::new(wf, g.c_in, dg.kdim());
                        let out: &mut [f32] = if g.up == 1 { dxb } else { dx_up };
                        for r0 in (0..dho).step_by(dual_rows) {
                            let r1 = (r0 + dual_rows).min(dho);
                            let tn = (r1 - r0) * dwo;
                            let dk = dg.kdim();
                            im2col_rows(dg, dyb, r0, r1, &mut col[..dk * tn]);
                            let rhs = MatRef::new(&col[..dk * tn], dk, tn);
                            matmul_strided(
                                &mut out[r0 * dwo..],
                                dn,
                                1,
                                lhs,
                                rhs,
                                false,
                                gemm_threads,
                            );
                        }
                        if g.up > 1 {
                            downsample_sum(g, dx_up, dxb);
                        }
                    }
                    None => {
                        matmul(&mut col[..kd * n], wm.t(), dym, false, gemm_threads);
                        col2im(g, &col[..kd * n], dxb);
                    }
                }
            }
        });
        dw
    });
    let dw = sum_partials(partial_dw, g.c_out * kd);
    Grads { dx, dw, db }
}

/// Sums each `up × up` block of the upsampled-resolution gradient onto its source pixel.
fn downsample_sum(g: &ConvGeom, src: &[f32], dst: &mut [f32]) {
    let (up, wl) = (g.up, g.wl());
    for c in 0..g.c_in {
        let s = &src[c * g.hl() * wl..(c + 1) * g.hl() * wl];
        let d = &mut dst[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.h {
            let drow = &mut d[i * g.w..(i + 1) * g.w];
            drow.fill(0.0);
            for a in 0..up {
                let srow = &s[(i * up + a) * wl..][..wl];
                for (j, v) in drow.iter_mut().enumerate() {
                    for b in 0..up {
                        *v += srow[j * up + b];
                    }
                }
            }
        }
    }
}

fn geom(
    x: &Shape,
    w: &Shape,
    stride: usize,
    pad: usize,
    up: usize,
) -> candle_core::Result<ConvGeom> {
    let (b, c_in, h, wd) = x.dims4()?;
    let (c_out, c_in2, k, k2) = w.dims4()?;
    if c_in != c_in2 || k != k2 {
        bail!("conv2d: input has {c_in} channels, kernel expects {c_in2} (k {k}×{k2})");
    }
    if up == 0 || stride == 0 {
        bail!("conv2d: stride and upsampling factor must be positive");
    }
    if h * up + 2 * pad < k || wd * up + 2 * pad < k {
        bail!("conv2d: kernel {k} larger than padded input {h}×{wd}");
    }
    Ok(ConvGeom {
        batch: b,
        c_in,
        h,
        w: wd,
        c_out,
        k,
        stride,
        pad,
        up,
    })
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
