//! The forward pass: the direct 3×3 kernels for stride-1 convs, im2col + GEMM for the rest.

#[cfg(target_arch = "x86_64")]
use super::super::cpu::par_ranges;
use super::super::cpu::{SendPtr, output_buffer, with_avx512, with_scratch};
use super::super::gemm::{MatRef, matmul, matmul_strided};
use super::im2col::{im2col_rows, tile_rows, upsample_image};
use super::{Bias, ConvGeom, Weight, over_batch};

/// Writes one image's output from its (C_out × grid) result: `y = grid + bias [+ residual]`.
#[inline(always)]
pub(super) fn bias_residual_row(y: &mut [f32], src: Option<&[f32]>, b: f32, r: Option<&[f32]>) {
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

#[cfg(target_arch = "x86_64")]
pub(super) fn forward_direct(
    g: &ConvGeom,
    x: &[f32],
    w: Weight,
    bias: Bias,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    use super::super::direct::{PackedKernel, Padded, conv, pad};
    let (img_in, img_out) = (g.img_in(), g.img_out());
    let packed = PackedKernel::new(g.c_out, g.c_in, |o, i, t| w.data[o * w.ld + i * 9 + t]);
    let px = Padded {
        c: g.c_in,
        h: g.hl(),
        w: g.wl(),
    };
    let gn = px.grid_tiles();
    // SAFETY: the pieces cover the batch, and every row of each of their images is written
    // by copy_out below before `y` is read.
    let mut y = unsafe { output_buffer(g.batch * img_out) };
    let yp = SendPtr::new(&mut y);
    par_ranges(g.batch, |range| {
        with_scratch(px.buf_len() + g.c_out * gn, |scratch| {
            let (xp, grid) = scratch.split_at_mut(px.buf_len());
            for bi in range {
                pad(px, &x[bi * img_in..(bi + 1) * img_in], g.up, xp);
                conv(px, xp, &packed, grid);
                // SAFETY: each image's output range is written by exactly one task.
                let yb = unsafe { yp.slice_mut(bi * img_out, img_out) };
                let out = Grid {
                    data: grid,
                    ld: gn,
                    wp: px.wp(),
                };
                let r = residual.map(|r| &r[bi * img_out..][..img_out]);
                with_avx512(
                    #[inline(always)]
                    || copy_out(g, out, |co| bias.at(bi, co, g.c_out), r, yb),
                );
            }
        })
    });
    y
}

#[cfg(target_arch = "x86_64")]
/// A direct conv's (C_out × grid) result: rows of `ld` positions per output channel, each
/// image row `wp` positions wide.
#[derive(Clone, Copy)]
pub(super) struct Grid<'a> {
    pub data: &'a [f32],
    pub ld: usize,
    pub wp: usize,
}

#[cfg(target_arch = "x86_64")]
/// One image's output `yb` from its grid result: `y = grid + bias [+ residual]`, the grid's
/// garbage columns dropped.
#[inline(always)]
pub(super) fn copy_out(
    g: &ConvGeom,
    grid: Grid,
    bias: impl Fn(usize) -> f32,
    residual: Option<&[f32]>,
    yb: &mut [f32],
) {
    let (n, ho, wo) = (g.ndim(), g.h_out(), g.w_out());
    for co in 0..g.c_out {
        let b = bias(co);
        for oh in 0..ho {
            let at = co * n + oh * wo;
            let src = &grid.data[co * grid.ld + oh * grid.wp..][..wo];
            let r = residual.map(|r| &r[at..][..wo]);
            bias_residual_row(&mut yb[at..][..wo], Some(src), b, r);
        }
    }
}

pub(super) fn forward_gemm(
    g: &ConvGeom,
    x: &[f32],
    w: Weight,
    bias: Bias,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let (kd, n, img_in, img_out) = (g.kdim(), g.ndim(), g.img_in(), g.img_out());
    // SAFETY: the chunks of `over_batch` cover the batch, and every row of each image is
    // first set to bias [+ residual] below, before the GEMM accumulates into it.
    let mut y = unsafe { output_buffer(g.batch * img_out) };
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
