//! The backward pass of 3×3 stride-1 convs on the direct kernels. The weight-gradient and
//! input-gradient methods are chosen once per call ([`WeightGradPlan`], [`InputGradPlan`]),
//! then run image group by image group.

use super::super::cpu::{SendPtr, output_buffer, par_ranges, threads, with_scratch};
use super::super::direct::{
    Group, LaneDims, PackedKernel, Padded, conv, lanes_pay, pad, transpose_dy, weight_grad,
    weight_grad_lanes,
};
use super::super::math;
use super::batch_wgrad::{batch_gemm_pays, weight_grad_batch_gemm};
use super::{ConvGeom, Grads, Weight, sum_partials, upsampled};

/// How the weight gradient is taken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WeightGradPlan {
    /// Output channels in the vector lanes ([`weight_grad_lanes`]), from transposed dy.
    Lanes,
    /// Output positions in the lanes ([`weight_grad`]), from padded dy.
    Positions,
    /// One GEMM over the whole batch after the image loop ([`weight_grad_batch_gemm`]); the
    /// loop then leaves dW alone.
    BatchGemm,
}

impl WeightGradPlan {
    fn choose(g: &ConvGeom) -> Self {
        if lanes_pay(g.c_in, g.c_out) {
            Self::Lanes
        } else if batch_gemm_pays(g, threads()) {
            Self::BatchGemm
        } else {
            Self::Positions
        }
    }
}

/// How the input gradient is taken.
enum InputGradPlan {
    /// An upsampling conv's, at the low resolution (conv/upsampled.rs).
    Upsampled(upsampled::InputGrad),
    /// The conv of padded dy with this flipped kernel, at the output's resolution.
    Flipped(PackedKernel),
}

impl InputGradPlan {
    fn choose(g: &ConvGeom, w: Weight) -> Self {
        if upsampled::applies(g) {
            return Self::Upsampled(upsampled::InputGrad::new(g, w));
        }
        Self::Flipped(PackedKernel::new(g.c_in, g.c_out, |ci, co, t| {
            w.data[co * w.ld + ci * 9 + (8 - t)]
        }))
    }
}

/// Both plans and the buffers' layout, shared by every image of one backward call.
struct DirectBackward<'a> {
    g: &'a ConvGeom,
    weight: WeightGradPlan,
    input: InputGradPlan,
    /// Padded x and padded dy.
    px: Padded,
    pd: Padded,
    /// Images reduced together by the weight-gradient kernels.
    group: usize,
    /// Output channels rounded up to whole vectors, for transposed dy.
    cp: usize,
    /// Tap offsets on x's padded plane.
    offs: [usize; 9],
}

impl<'a> DirectBackward<'a> {
    fn new(g: &'a ConvGeom, w: Weight) -> Self {
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
        Self {
            g,
            weight: WeightGradPlan::choose(g),
            input: InputGradPlan::choose(g, w),
            px,
            pd,
            // Small images are reduced in groups, so that each weight-gradient tile sums over
            // ≥ ~1k positions before its horizontal sums.
            group: (1024 / pd.grid().max(1)).clamp(1, 16),
            cp: g.c_out.div_ceil(16) * 16,
            offs: std::array::from_fn(|t| (t / 3) * px.wp() + t % 3),
        }
    }

    /// Floats of one padded image of x and of dy.
    fn x_step(&self) -> usize {
        self.px.c * self.px.plane()
    }
    fn dy_step(&self) -> usize {
        self.pd.c * self.pd.plane()
    }

    /// Scratch lengths: padded x and padded dy of a group, the input gradient's grid, and
    /// transposed dy of a group.
    fn scratch_lens(&self) -> [usize; 4] {
        let (xs, ds) = (self.x_step(), self.dy_step());
        let grid = match &self.input {
            InputGradPlan::Upsampled(u) => u.scratch_len(self.g),
            InputGradPlan::Flipped(_) => self.g.c_in * self.pd.grid_tiles(),
        };
        let dyt = match self.weight {
            WeightGradPlan::Lanes => self.group * self.g.ndim() * self.cp,
            _ => 0,
        };
        [
            self.group * xs + self.px.buf_len() - xs,
            self.group * ds + self.pd.buf_len() - ds,
            grid,
            dyt,
        ]
    }

    /// Lays out image `bi`, the `m`-th of a group of `count`, for the plans: padded dy
    /// (position-lane weight gradient, flipped input gradient), padded x and transposed dy
    /// (the per-group weight gradients).
    fn stage_image(
        &self,
        bi: usize,
        m: usize,
        count: usize,
        x: &[f32],
        dy: &[f32],
        buf: &mut Buffers,
    ) {
        let g = self.g;
        let (img_in, img_out) = (g.img_in(), g.img_out());
        let dyb = &dy[bi * img_out..(bi + 1) * img_out];
        let padded_dy = self.weight == WeightGradPlan::Positions
            || matches!(self.input, InputGradPlan::Flipped(_));
        if padded_dy {
            pad(self.pd, dyb, 1, &mut buf.dyg[m * self.dy_step()..]);
        }
        if self.weight == WeightGradPlan::BatchGemm {
            return;
        }
        let xb = &x[bi * img_in..(bi + 1) * img_in];
        pad(self.px, xb, g.up, &mut buf.xg[m * self.x_step()..]);
        if self.weight == WeightGradPlan::Lanes {
            transpose_dy(dyb, g.c_out, self.cp, m, count, buf.dyt);
        }
    }

    /// Adds a group of `count` staged images' weight gradient to `dw`.
    fn weight_grad_group(&self, count: usize, buf: &mut Buffers, dw: &mut [f32]) {
        let (g, px, pd) = (self.g, self.px, self.pd);
        match self.weight {
            WeightGradPlan::BatchGemm => {}
            WeightGradPlan::Lanes => {
                let dims = LaneDims {
                    count,
                    x_step: self.x_step(),
                    c_in: g.c_in,
                    plane: px.plane(),
                    rows: g.h_out(),
                    cols: g.w_out(),
                    row_stride: px.wp(),
                    cp: self.cp,
                    c_out: g.c_out,
                };
                weight_grad_lanes(buf.xg, buf.dyt, dims, &self.offs, dw);
            }
            // On dy's padded plane the output grid starts one row and one column in, and its
            // garbage columns are the zero borders.
            WeightGradPlan::Positions => weight_grad(
                px,
                buf.xg,
                Group {
                    count,
                    stride: self.x_step(),
                },
                &buf.dyg[pd.wp() + 1..],
                pd.plane(),
                Group {
                    count,
                    stride: self.dy_step(),
                },
                g.c_out,
                dw,
            ),
        }
    }

    /// Writes the whole input gradient `dxb` of image `bi`, the `m`-th of its group.
    fn input_grad(&self, bi: usize, m: usize, dy: &[f32], buf: &mut Buffers, dxb: &mut [f32]) {
        let g = self.g;
        match &self.input {
            InputGradPlan::Upsampled(u) => {
                let dyb = &dy[bi * g.img_out()..(bi + 1) * g.img_out()];
                u.run(g, dyb, buf.grid, dxb);
            }
            InputGradPlan::Flipped(k) => {
                conv(self.pd, &buf.dyg[m * self.dy_step()..], k, buf.grid);
                compact_input_grad(g, buf.grid, self.pd.grid_tiles(), self.pd.wp(), dxb);
            }
        }
    }
}

/// One thread's scratch, split by [`DirectBackward::scratch_lens`].
struct Buffers<'s> {
    xg: &'s mut [f32],
    dyg: &'s mut [f32],
    grid: &'s mut [f32],
    dyt: &'s mut [f32],
}

pub(super) fn backward_direct(g: &ConvGeom, x: &[f32], w: Weight, dy: &[f32]) -> Grads {
    let (img_in, img_out, n) = (g.img_in(), g.img_out(), g.ndim());
    let plan = DirectBackward::new(g, w);
    // SAFETY: the pieces cover the batch; every image's dx is written whole by `input_grad`
    // and its db by the row sums below, before either is read.
    let mut dx = unsafe { output_buffer(g.batch * img_in) };
    let mut db = unsafe { output_buffer(g.batch * g.c_out) };
    let dxp = SendPtr::new(&mut dx);
    let dbp = SendPtr::new(&mut db);
    let [x_len, dy_len, grid_len, dyt_len] = plan.scratch_lens();
    let partial_dw = par_ranges(g.batch, |range| {
        let mut dw = match plan.weight {
            WeightGradPlan::BatchGemm => Vec::new(),
            _ => vec![0f32; g.c_out * g.kdim()],
        };
        with_scratch(x_len + dy_len + grid_len + dyt_len, |scratch| {
            let (xg, rest) = scratch.split_at_mut(x_len);
            let (dyg, rest) = rest.split_at_mut(dy_len);
            let (grid, dyt) = rest.split_at_mut(grid_len);
            let buf = &mut Buffers { xg, dyg, grid, dyt };
            for first in range.clone().step_by(plan.group) {
                let images = first..(first + plan.group).min(range.end);
                for (m, bi) in images.clone().enumerate() {
                    let dyb = &dy[bi * img_out..(bi + 1) * img_out];
                    // SAFETY: each image's db range is written by exactly one task.
                    let dbb = unsafe { dbp.slice_mut(bi * g.c_out, g.c_out) };
                    for (d, row) in dbb.iter_mut().zip(dyb.chunks_exact(n)) {
                        *d = math::sum(row);
                    }
                    plan.stage_image(bi, m, images.len(), x, dy, buf);
                }
                plan.weight_grad_group(images.len(), buf, &mut dw);
                for (m, bi) in images.enumerate() {
                    // SAFETY: each image's dx range is written by exactly one task.
                    let dxb = unsafe { dxp.slice_mut(bi * img_in, img_in) };
                    plan.input_grad(bi, m, dy, buf, dxb);
                }
            }
        });
        dw
    });
    let dw = match plan.weight {
        WeightGradPlan::BatchGemm => weight_grad_batch_gemm(g, x, dy),
        _ => sum_partials(partial_dw, g.c_out * g.kdim()),
    };
    Grads { dx, dw, db }
}

/// Copies the dual conv's (C_in × grid) result into dx, summing each `up × up` block when
/// the forward upsampled its input (nearest upsampling's gradient).
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
