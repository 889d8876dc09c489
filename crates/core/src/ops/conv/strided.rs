//! 3×3 stride-2 padding-1 convolutions (the U-Net's downsampling) on the direct kernels.
//!
//! The zero-bordered input is split into its four phase planes, `P_ab[r][c] =
//! xpad[2r+a][2c+b]` for row and column parity (a, b), each `hq × wq` with `hq = Ho + 1` and
//! `wq = Wo + 1`. Tap (ki, kj) of output (oh, ow) reads `xpad[2oh+ki][2ow+kj]`, which is
//! `P_{ki mod 2, kj mod 2}[oh + ki/2][ow + kj/2]`: on the phase planes consecutive outputs
//! read consecutive inputs again, so the stride-1 kernels run unchanged, with 9 offsets into
//! a channel's four planes, on an output grid of Ho rows of wq positions (one garbage
//! column). Through im2col + GEMM these small products ran far below the stride-1 convs
//! (docs/BENCHMARKS.md).
//!
//! The weight gradient is the same correlation with dy laid on that grid. The input gradient
//! goes phase by phase: xpad's phase (a, b) collects the taps with ki ≡ a and kj ≡ b (mod 2),
//! a 2×2, 2×1, 1×2 or 1×1 correlation of the zero-bordered dy with those taps, 9 taps in all.

use super::super::cpu::{SendPtr, output_buffer, par_ranges, with_avx512, with_scratch};
use super::super::direct::{
    Group, Isa, LaneDims, PackedKernel, Padded, conv_taps, lanes_pay, pad, transpose_dy,
    weight_grad_lanes, weight_grad_taps,
};
use super::super::math;
use super::{Bias, ConvGeom, Grads, Grid, Weight, copy_out, sum_partials};

/// Vector loads of garbage positions run this far past a buffer's last plane.
const SLACK: usize = 64;
/// Grids are computed in whole blocks of this many positions (the kernels' tile width).
const GRID_BLOCK: usize = 32;

/// Whether the direct kernels handle this stride-2 convolution: 3×3, padding 1, no
/// upsampling, AVX-512 (the weight-gradient kernel for arbitrary taps needs it), and a batch
/// that fills the pool.
pub(super) fn applies(g: &ConvGeom, threads: usize) -> bool {
    g.k == 3
        && g.stride == 2
        && g.pad == 1
        && g.up == 1
        && (g.batch >= threads || threads == 1)
        && super::super::direct::isa() == Some(Isa::Avx512)
}

/// The phase-plane geometry of one convolution.
#[derive(Clone, Copy)]
struct Phases {
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    /// Rows and columns of one phase plane.
    hq: usize,
    wq: usize,
}

impl Phases {
    fn new(g: &ConvGeom) -> Self {
        let (ho, wo) = (g.h_out(), g.w_out());
        Self {
            h: g.h,
            w: g.w,
            ho,
            wo,
            hq: ho + 1,
            wq: wo + 1,
        }
    }

    fn pq(&self) -> usize {
        self.hq * self.wq
    }

    /// Floats of one channel's four planes.
    fn block(&self) -> usize {
        4 * self.pq()
    }

    /// Output grid positions (Ho rows of wq), and that rounded up to whole tiles.
    fn grid(&self) -> usize {
        self.ho * self.wq
    }
    fn grid_tiles(&self) -> usize {
        self.grid().div_ceil(GRID_BLOCK) * GRID_BLOCK
    }

    /// Offset of tap t = 3·ki + kj inside a channel's four planes.
    fn offsets(&self) -> [usize; 9] {
        std::array::from_fn(|t| {
            let (ki, kj) = (t / 3, t % 3);
            ((ki % 2) * 2 + kj % 2) * self.pq() + (ki / 2) * self.wq + kj / 2
        })
    }

    /// Writes the (c, h, w) image `x` as c channels of four phase planes.
    fn split(&self, c: usize, x: &[f32], dst: &mut [f32]) {
        let (h, w, pq) = (self.h, self.w, self.pq());
        for i in 0..c {
            let xi = &x[i * h * w..(i + 1) * h * w];
            for phase in 0..4 {
                let (a, b) = (phase / 2, phase % 2);
                let plane = &mut dst[(i * 4 + phase) * pq..][..pq];
                for (r, row) in plane.chunks_exact_mut(self.wq).enumerate() {
                    // Padded row 2r + a is image row 2r + a − 1.
                    let y = (2 * r + a).wrapping_sub(1);
                    if y >= h {
                        row.fill(0.0);
                        continue;
                    }
                    for (cq, v) in row.iter_mut().enumerate() {
                        let xx = (2 * cq + b).wrapping_sub(1);
                        *v = if xx < w { xi[y * w + xx] } else { 0.0 };
                    }
                }
            }
        }
    }
}

pub(super) fn forward(
    g: &ConvGeom,
    x: &[f32],
    w: Weight,
    bias: Bias,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let s = Phases::new(g);
    let (img_in, img_out) = (g.img_in(), g.img_out());
    let packed = PackedKernel::new(g.c_out, g.c_in, |o, i, t| w.data[o * w.ld + i * 9 + t]);
    let offs = s.offsets();
    let (xs, gn) = (g.c_in * s.block(), s.grid_tiles());
    // SAFETY: the pieces cover the batch, and every row of each of their images is written
    // by copy_out below before `y` is read.
    let mut y = unsafe { output_buffer(g.batch * img_out) };
    let yp = SendPtr::new(&mut y);
    par_ranges(g.batch, |range| {
        with_scratch(xs + SLACK + g.c_out * gn, |scratch| {
            let (xq, grid) = scratch.split_at_mut(xs + SLACK);
            xq[xs..].fill(0.0);
            for bi in range {
                s.split(g.c_in, &x[bi * img_in..(bi + 1) * img_in], xq);
                conv_taps(xq, g.c_in, s.block(), &offs, gn, &packed, grid);
                // SAFETY: each image's output range is written by exactly one task.
                let yb = unsafe { yp.slice_mut(bi * img_out, img_out) };
                let out = Grid {
                    data: grid,
                    ld: gn,
                    wp: s.wq,
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

/// The taps of input phase (a, b) for the input gradient: (t = 3·ki + kj, offset into the
/// zero-bordered dy of width `wd`).
fn input_taps(a: usize, b: usize, wd: usize) -> Vec<(usize, usize)> {
    let mut taps = Vec::with_capacity(4);
    for ki in (a..3).step_by(2) {
        for kj in (b..3).step_by(2) {
            taps.push((3 * ki + kj, (1 - ki / 2) * wd + (1 - kj / 2)));
        }
    }
    taps
}

/// The four phase kernels of the input gradient: each phase's taps (as offsets into the
/// zero-bordered dy of row width `wd`) and the weights packed for them.
fn phase_kernels(g: &ConvGeom, w: &Weight, wd: usize) -> Vec<(Vec<usize>, PackedKernel)> {
    (0..4)
        .map(|phase| {
            let taps = input_taps(phase / 2, phase % 2, wd);
            let k =
                PackedKernel::with_taps(Isa::Avx512, g.c_in, g.c_out, taps.len(), |ci, co, t| {
                    w.data[co * w.ld + ci * 9 + taps[t].0]
                });
            (taps.iter().map(|&(_, o)| o).collect(), k)
        })
        .collect()
}

/// One image's dy (channels of `n_out`) laid on the forward's output grid: rows of `s.wq` (a
/// zero garbage column), each channel padded to `ds`.
fn lay_dy_on_grid(s: &Phases, dyb: &[f32], n_out: usize, dm: &mut [f32], ds: usize) {
    for (o, rows) in dm.chunks_exact_mut(ds).enumerate() {
        rows.fill(0.0);
        for oh in 0..s.ho {
            rows[oh * s.wq..][..s.wo].copy_from_slice(&dyb[o * n_out + oh * s.wo..][..s.wo]);
        }
    }
}

/// One image's dx, pixel by pixel from the four phase grids (each `n_ph` long per channel,
/// rows of `wd`): pixel (yy, xx) is padded pixel (yy + 1, xx + 1), whose phase is its parity.
fn gather_dx(s: &Phases, grids: &[f32], c_in: usize, (n_ph, wd): (usize, usize), dxb: &mut [f32]) {
    for ci in 0..c_in {
        for yy in 0..s.h {
            let py = yy + 1;
            let (a, r) = (py % 2, py / 2);
            let row = &mut dxb[(ci * s.h + yy) * s.w..][..s.w];
            for (xx, d) in row.iter_mut().enumerate() {
                let px = xx + 1;
                let (b, c) = (px % 2, px / 2);
                let phase = a * 2 + b;
                *d = grids[(phase * c_in + ci) * n_ph + r * wd + c];
            }
        }
    }
}

/// How a group of images' phase planes and dy are laid out for the weight gradient.
#[derive(Clone, Copy)]
struct DyLayout {
    /// dy transposed, output channels in the vector lanes (else laid on the grid).
    lanes: bool,
    /// Floats per image of phase planes, and of dy.
    xs: usize,
    dys: usize,
    /// dy per channel on the grid, and output channels padded to the lanes.
    ds: usize,
    cp: usize,
}

/// Adds a group of `count` images' weight gradient to `dw`.
fn weight_grad_group(
    g: &ConvGeom,
    s: &Phases,
    offs: &[usize; 9],
    l: DyLayout,
    count: usize,
    (xq, dyg): (&[f32], &[f32]),
    dw: &mut [f32],
) {
    if l.lanes {
        let d = LaneDims {
            count,
            x_step: l.xs,
            c_in: g.c_in,
            plane: s.block(),
            rows: s.ho,
            cols: s.wo,
            row_stride: s.wq,
            cp: l.cp,
            c_out: g.c_out,
        };
        weight_grad_lanes(xq, dyg, d, offs, dw);
    } else {
        weight_grad_taps(
            xq,
            g.c_in,
            s.block(),
            offs,
            Group {
                count,
                stride: l.xs,
            },
            s.grid(),
            dyg,
            l.ds,
            Group {
                count,
                stride: l.dys,
            },
            g.c_out,
            dw,
        );
    }
}

pub(super) fn backward(g: &ConvGeom, x: &[f32], w: Weight, dy: &[f32]) -> Grads {
    let s = Phases::new(g);
    let (img_in, img_out, n_out) = (g.img_in(), g.img_out(), g.ndim());
    let offs = s.offsets();
    // dy on the forward's output grid (zero garbage column), rows padded to whole vectors.
    let ds = s.grid().div_ceil(16) * 16;
    // dy zero-bordered for the input gradient, and the four phase kernels.
    let pd = Padded {
        c: g.c_out,
        h: s.ho,
        w: s.wo,
    };
    let wd = pd.wp();
    let n_ph = (s.hq * wd).div_ceil(GRID_BLOCK) * GRID_BLOCK;
    let phases = phase_kernels(g, &w, wd);

    // SAFETY: the pieces cover the batch; each image's db is written whole by its row sums,
    // and its dx pixel by pixel from the phase grids, before either is read.
    let mut dx = unsafe { output_buffer(g.batch * img_in) };
    let mut db = unsafe { output_buffer(g.batch * g.c_out) };
    let dxp = SendPtr::new(&mut dx);
    let dbp = SendPtr::new(&mut db);
    // Small images are reduced in groups, so that each weight-gradient tile sums over ≥ ~1k
    // positions before its horizontal sums.
    let group = (1024 / s.grid().max(1)).clamp(1, 16);
    // The weight gradient with output channels in the lanes where that layout pays (dy
    // transposed instead of laid on the grid).
    let lanes = lanes_pay(g.c_in, g.c_out);
    let cp = g.c_out.div_ceil(16) * 16;
    let (xs, dys) = (
        g.c_in * s.block(),
        if lanes { n_out * cp } else { g.c_out * ds },
    );
    let scratch_len = group * xs + SLACK + group * dys + pd.buf_len() + 4 * g.c_in * n_ph;
    let partial_dw = par_ranges(g.batch, |range| {
        let mut dw = vec![0f32; g.c_out * g.c_in * 9];
        with_scratch(scratch_len, |scratch| {
            let (xq, rest) = scratch.split_at_mut(group * xs + SLACK);
            let (dyg, rest) = rest.split_at_mut(group * dys);
            let (dyp, grids) = rest.split_at_mut(pd.buf_len());
            for first in range.clone().step_by(group) {
                let images = first..(first + group).min(range.end);
                xq[images.len() * xs..].fill(0.0);
                for (m, bi) in images.clone().enumerate() {
                    let dyb = &dy[bi * img_out..(bi + 1) * img_out];
                    // SAFETY: each image's db range is written by exactly one task.
                    let dbb = unsafe { dbp.slice_mut(bi * g.c_out, g.c_out) };
                    for (d, row) in dbb.iter_mut().zip(dyb.chunks_exact(n_out)) {
                        *d = math::sum(row);
                    }
                    s.split(
                        g.c_in,
                        &x[bi * img_in..(bi + 1) * img_in],
                        &mut xq[m * xs..],
                    );
                    if lanes {
                        transpose_dy(dyb, g.c_out, cp, m, images.len(), dyg);
                        continue;
                    }
                    lay_dy_on_grid(&s, dyb, n_out, &mut dyg[m * dys..(m + 1) * dys], ds);
                }
                let layout = DyLayout {
                    lanes,
                    xs,
                    dys,
                    ds,
                    cp,
                };
                weight_grad_group(g, &s, &offs, layout, images.len(), (&*xq, &*dyg), &mut dw);
                for bi in images {
                    pad(pd, &dy[bi * img_out..(bi + 1) * img_out], 1, dyp);
                    for (phase, (toffs, k)) in phases.iter().enumerate() {
                        let out = &mut grids[phase * g.c_in * n_ph..(phase + 1) * g.c_in * n_ph];
                        conv_taps(dyp, g.c_out, pd.plane(), toffs, n_ph, k, out);
                    }
                    // SAFETY: each image's dx range is written by exactly one task.
                    let dxb = unsafe { dxp.slice_mut(bi * img_in, img_in) };
                    gather_dx(&s, grids, g.c_in, (n_ph, wd), dxb);
                }
            }
        });
        dw
    });
    let dw = sum_partials(partial_dw, g.c_out * g.c_in * 9);
    Grads { dx, dw, db }
}
