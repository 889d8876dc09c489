//! The U-Net's upsampling conv (nearest ×2, then 3×3 stride 1 padding 1) as four 2×2 convs at
//! the low resolution, for the forward pass and the input gradient.
//!
//! Output row `2m + a` sees, through the nearest upsampling, only image rows `m − 1` and `m`
//! (a = 0) or `m` and `m + 1` (a = 1): kernel rows 1 and 2 fall on the same image row for
//! a = 0, rows 0 and 1 for a = 1. Likewise for columns. So each of the four output phases
//! (a, b) is a 2×2 convolution of the low-resolution image with summed taps, 16 products per
//! low-resolution position against the 36 of the 3×3 conv at the high resolution: 4/9 of the
//! work, and the upsampled image is never formed.
//!
//! The input gradient is the adjoint: each low-resolution input position collects, from the
//! four phases of dy, the same 16 summed taps (one conv with 16 taps over dy's four phase
//! planes). The weight gradient keeps the high-resolution form (`backward_direct`).

use super::super::cpu::{SendPtr, output_buffer, par_ranges, with_scratch};
use super::super::direct::{Isa, PackedKernel, Padded, conv_taps, isa, pad};
use super::{Bias, ConvGeom, Weight, bias_residual_row};

/// Vector loads of garbage positions run this far past a buffer's last plane.
const SLACK: usize = 64;

/// Kernel rows (or columns) that land on padded low-resolution offset `a + u` for output
/// phase `a`.
fn merged(a: usize, u: usize) -> &'static [usize] {
    match (a, u) {
        (0, 0) => &[0],
        (0, _) => &[1, 2],
        (_, 0) => &[0, 1],
        _ => &[2],
    }
}

/// The summed 2×2 tap t = 2u + v of phase (a, b) for output channel o and input channel i.
fn merged_tap(w: Weight, o: usize, i: usize, a: usize, b: usize, t: usize) -> f32 {
    let (u, v) = (t / 2, t % 2);
    let base = o * w.ld + i * 9;
    merged(a, u)
        .iter()
        .flat_map(|&ki| merged(b, v).iter().map(move |&kj| 3 * ki + kj))
        .map(|k| w.data[base + k])
        .sum()
}

/// Whether this conv has the phase form: a nearest-×2 upsampling 3×3 stride-1 padding-1 conv
/// (the caller checks that it runs on the direct kernels).
pub(super) fn applies(g: &ConvGeom) -> bool {
    g.up == 2 && g.k == 3 && g.stride == 1 && g.pad == 1
}

fn low(g: &ConvGeom, c: usize) -> Padded {
    Padded { c, h: g.h, w: g.w }
}

pub(super) fn forward(
    g: &ConvGeom,
    x: &[f32],
    w: Weight,
    bias: Bias,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let isa = isa().unwrap_or(Isa::Avx2);
    let px = low(g, g.c_in);
    let wp = px.wp();
    let kernels: Vec<([usize; 4], PackedKernel)> = (0..4)
        .map(|phase| {
            let (a, b) = (phase / 2, phase % 2);
            let offs = std::array::from_fn(|t| (a + t / 2) * wp + b + t % 2);
            let k = PackedKernel::with_taps(isa, g.c_out, g.c_in, 4, |o, i, t| {
                merged_tap(w, o, i, a, b, t)
            });
            (offs, k)
        })
        .collect();
    let (img_in, img_out) = (g.img_in(), g.img_out());
    let (wo, n_out) = (2 * g.w, g.ndim());
    let gn = px.grid_tiles();
    // SAFETY: the pieces cover the batch, and every output row (2h of them per channel) of
    // each of their images is written by bias_residual_row below before `y` is read.
    let mut y = unsafe { output_buffer(g.batch * img_out) };
    let yp = SendPtr::new(&mut y);
    par_ranges(g.batch, |range| {
        let mut row = vec![0f32; wo];
        with_scratch(px.buf_len() + 4 * g.c_out * gn, |scratch| {
            let (xp, grids) = scratch.split_at_mut(px.buf_len());
            for bi in range {
                pad(px, &x[bi * img_in..(bi + 1) * img_in], 1, xp);
                for (phase, (offs, k)) in kernels.iter().enumerate() {
                    let out = &mut grids[phase * g.c_out * gn..(phase + 1) * g.c_out * gn];
                    conv_taps(xp, g.c_in, px.plane(), offs, gn, k, out);
                }
                // SAFETY: each image's output range is written by exactly one task.
                let yb = unsafe { yp.slice_mut(bi * img_out, img_out) };
                for co in 0..g.c_out {
                    let b = bias.at(bi, co, g.c_out);
                    for oy in 0..2 * g.h {
                        let (a, m) = (oy % 2, oy / 2);
                        let even = &grids[((2 * a) * g.c_out + co) * gn + m * wp..][..g.w];
                        let odd = &grids[((2 * a + 1) * g.c_out + co) * gn + m * wp..][..g.w];
                        for (pair, (&e, &o)) in row.chunks_exact_mut(2).zip(even.iter().zip(odd)) {
                            pair[0] = e;
                            pair[1] = o;
                        }
                        let dst = &mut yb[co * n_out + oy * wo..][..wo];
                        let r = residual.map(|r| &r[bi * img_out + co * n_out + oy * wo..][..wo]);
                        bias_residual_row(dst, Some(&row), b, r);
                    }
                }
            }
        })
    });
    y
}

/// The input gradient of one image: a 16-tap conv over the four zero-bordered phase planes
/// of dy.
pub(super) struct InputGrad {
    kernel: PackedKernel,
    offs: [usize; 16],
    /// dy phase planes, and the dx grid (C_in rows of `grid`).
    dq: Padded,
    grid: usize,
}

impl InputGrad {
    pub(super) fn new(g: &ConvGeom, w: Weight) -> Self {
        let isa = isa().unwrap_or(Isa::Avx2);
        let dq = low(g, g.c_out);
        let (wp, plane) = (dq.wp(), dq.plane());
        // Tap t = 4·phase + 2u + v reads dy's phase plane at row r + 2 − a − u (its border
        // is row 0) for dx row r.
        let offs = std::array::from_fn(|t| {
            let (phase, u, v) = (t / 4, (t / 2) % 2, t % 2);
            let (a, b) = (phase / 2, phase % 2);
            phase * plane + (2 - a - u) * wp + (2 - b - v)
        });
        // The dual conv: dx channels out, (dy channel, phase) in, 4 taps each.
        let kernel = PackedKernel::with_taps(isa, g.c_in, g.c_out, 16, |i, o, t| {
            let (phase, uv) = (t / 4, t % 4);
            merged_tap(w, o, i, phase / 2, phase % 2, uv)
        });
        Self {
            kernel,
            offs,
            dq,
            grid: low(g, g.c_in).grid_tiles(),
        }
    }

    /// Floats of scratch that [`InputGrad::run`] needs.
    pub(super) fn scratch_len(&self, g: &ConvGeom) -> usize {
        self.dq.c * 4 * self.dq.plane() + SLACK + g.c_in * self.grid
    }

    /// dx (C_in × h × w) of one image from its dy (C_out × 2h × 2w).
    pub(super) fn run(&self, g: &ConvGeom, dy: &[f32], scratch: &mut [f32], dx: &mut [f32]) {
        let (plane, wp) = (self.dq.plane(), self.dq.wp());
        let block = 4 * plane;
        let (dq, grid) = scratch.split_at_mut(g.c_out * block + SLACK);
        let (h, w) = (g.h, g.w);
        for o in 0..g.c_out {
            let src = &dy[o * 4 * h * w..(o + 1) * 4 * h * w];
            for phase in 0..4 {
                let (a, b) = (phase / 2, phase % 2);
                let p = &mut dq[o * block + phase * plane..][..plane];
                p[..wp].fill(0.0);
                p[(h + 1) * wp..].fill(0.0);
                for m in 0..h {
                    let row = &mut p[(m + 1) * wp..(m + 2) * wp];
                    row[0] = 0.0;
                    row[wp - 1] = 0.0;
                    let s = &src[(2 * m + a) * 2 * w..][..2 * w];
                    for (d, pair) in row[1..=w].iter_mut().zip(s.chunks_exact(2)) {
                        *d = pair[b];
                    }
                }
            }
        }
        dq[g.c_out * block..].fill(0.0);
        conv_taps(
            dq,
            g.c_out,
            block,
            &self.offs,
            self.grid,
            &self.kernel,
            grid,
        );
        for ci in 0..g.c_in {
            for r in 0..h {
                dx[(ci * h + r) * w..][..w].copy_from_slice(&grid[ci * self.grid + r * wp..][..w]);
            }
        }
    }
}
