//! The backward pass through im2col + GEMM: the weight gradient re-unfolds x tile by tile, and
//! the input gradient is the dual convolution of dy with the flipped kernel (stride 1) or a
//! GEMM followed by col2im (strided convs).

use super::super::cpu::{SendPtr, with_scratch};
use super::super::gemm::{MatRef, matmul, matmul_strided};
use super::super::math;
use super::im2col::{col2im, downsample_sum, im2col_rows, tile_rows, upsample_image};
use super::{ConvGeom, Grads, Weight, over_batch, sum_partials};

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

/// The input gradient as a convolution of dy: its geometry, its (C_in × C_out·k·k) flipped
/// kernel, and the output rows per tile of its column matrix.
struct Dual {
    geom: ConvGeom,
    kernel: Vec<f32>,
    rows: usize,
}

/// What every image of one backward call shares: the geometry, the weight matrix, the input
/// gradient's form, and the scratch it needs.
struct GemmBackward<'a> {
    g: &'a ConvGeom,
    /// The same convolution on the upsampled input.
    gm: ConvGeom,
    wm: MatRef<'a>,
    /// `None`: the input gradient goes through a GEMM with K = C_out and col2im.
    dual: Option<Dual>,
    /// Output rows per tile of x's column matrix.
    rows: usize,
    /// Column-matrix scratch, shared by the weight and input gradients.
    col_len: usize,
    /// x upsampled (weight gradient) and dx at the upsampled resolution (input gradient).
    up_len: usize,
}

impl<'a> GemmBackward<'a> {
    fn new(g: &'a ConvGeom, w: Weight<'a>) -> Self {
        let (kd, wo, ho) = (g.kdim(), g.w_out(), g.h_out());
        let dual = g.dual_input_grad().then(|| {
            let geom = g.dual();
            Dual {
                rows: if g.is_pointwise() {
                    0
                } else {
                    tile_rows(geom.kdim(), geom.w_out(), geom.h_out())
                },
                kernel: flipped(g, w),
                geom,
            }
        });
        // Tiles of x's columns (weight gradient) and of dy's dual columns (input gradient)
        // share one scratch buffer; the col2im form of strided convs needs all columns at once.
        let rows = tile_rows(kd, wo, ho);
        let mut col_len = if g.is_pointwise() { 0 } else { kd * rows * wo };
        match &dual {
            Some(d) if !g.is_pointwise() => {
                col_len = col_len.max(d.geom.kdim() * d.rows * d.geom.w_out());
            }
            Some(_) => {}
            None => col_len = col_len.max(kd * g.ndim()),
        }
        let gm = g.materialised();
        let up_len = if g.up > 1 { 2 * gm.img_in() } else { 0 };
        Self {
            g,
            gm,
            wm: w.mat(g),
            dual,
            rows,
            col_len,
            up_len,
        }
    }

    /// dW += dy · colᵀ for one image, tile by tile of x's column matrix (`xs` is x as the
    /// kernel sees it, upsampled if need be).
    fn weight_grad(
        &self,
        xs: &[f32],
        dyb: &[f32],
        col: &mut [f32],
        dw: &mut [f32],
        threads: usize,
    ) {
        let (g, kd, n) = (self.g, self.g.kdim(), self.g.ndim());
        let (ho, wo) = (g.h_out(), g.w_out());
        for r0 in (0..ho).step_by(self.rows) {
            let r1 = (r0 + self.rows).min(ho);
            let tn = (r1 - r0) * wo;
            im2col_rows(&self.gm, xs, r0, r1, &mut col[..kd * tn]);
            let dyt = MatRef {
                data: &dyb[r0 * wo..],
                rows: g.c_out,
                cols: tn,
                rs: n,
                cs: 1,
            };
            let colt = MatRef::new(&col[..kd * tn], kd, tn).t();
            matmul(dw, dyt, colt, true, threads);
        }
    }

    /// dx of one image: the dual convolution of dy tile by tile (then summed back over the
    /// upsampling), or a GEMM into columns folded back by col2im.
    fn input_grad(
        &self,
        dyb: &[f32],
        col: &mut [f32],
        dx_up: &mut [f32],
        dxb: &mut [f32],
        threads: usize,
    ) {
        let g = self.g;
        let Some(d) = &self.dual else {
            let (kd, n) = (g.kdim(), g.ndim());
            let dym = MatRef::new(dyb, g.c_out, n);
            matmul(&mut col[..kd * n], self.wm.t(), dym, false, threads);
            col2im(g, &col[..kd * n], dxb);
            return;
        };
        let dg = &d.geom;
        let (dn, dwo, dho, dk) = (dg.ndim(), dg.w_out(), dg.h_out(), dg.kdim());
        let lhs = MatRef::new(&d.kernel, g.c_in, dk);
        let out: &mut [f32] = if g.up == 1 { dxb } else { dx_up };
        for r0 in (0..dho).step_by(d.rows) {
            let r1 = (r0 + d.rows).min(dho);
            let tn = (r1 - r0) * dwo;
            im2col_rows(dg, dyb, r0, r1, &mut col[..dk * tn]);
            let rhs = MatRef::new(&col[..dk * tn], dk, tn);
            matmul_strided(&mut out[r0 * dwo..], dn, 1, lhs, rhs, false, threads);
        }
        if g.up > 1 {
            downsample_sum(g, dx_up, dxb);
        }
    }
}

pub(super) fn backward_gemm(g: &ConvGeom, x: &[f32], w: Weight, dy: &[f32]) -> Grads {
    let (kd, n, img_in, img_out) = (g.kdim(), g.ndim(), g.img_in(), g.img_out());
    let mut dx = vec![0f32; g.batch * img_in];
    let mut db = vec![0f32; g.batch * g.c_out];
    let dxp = SendPtr::new(&mut dx);
    let dbp = SendPtr::new(&mut db);
    let plan = GemmBackward::new(g, w);
    let (col_len, up_len) = (plan.col_len, plan.up_len);
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
                for (d, row) in dbb.iter_mut().zip(dyb.chunks_exact(n)) {
                    *d = math::sum(row);
                }
                if g.is_pointwise() {
                    // x is its own column matrix.
                    let dym = MatRef::new(dyb, g.c_out, n);
                    matmul(&mut dw, dym, MatRef::new(xb, kd, n).t(), true, gemm_threads);
                    matmul(dxb, plan.wm.t(), dym, false, gemm_threads);
                    continue;
                }
                let xs = if g.up > 1 {
                    upsample_image(g, xb, xu);
                    &*xu
                } else {
                    xb
                };
                plan.weight_grad(xs, dyb, col, &mut dw, gemm_threads);
                plan.input_grad(dyb, col, dx_up, dxb, gemm_threads);
            }
        });
        dw
    });
    let dw = sum_partials(partial_dw, g.c_out * kd);
    Grads { dx, dw, db }
}
