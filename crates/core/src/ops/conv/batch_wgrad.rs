//! The weight gradient of wide layers on small images as one GEMM over the whole batch.

use super::super::cpu::{SendPtr, output_buffer, par_ranges, with_scratch};
use super::super::gemm::{MatRef, matmul};
use super::ConvGeom;
use super::im2col::im2col_rows;

/// Whether the weight gradient of this conv is better taken as one GEMM over the whole batch
/// ([`weight_grad_batch_gemm`]) than image by image on each thread: wide layers on small
/// images, where a thread's images give each direct-kernel tile too few positions (< 1024) to
/// pay for its horizontal sums. The threshold is measured (docs/BENCHMARKS.md): it takes
/// cifar's 4×4 and 8×8 levels, not its 16×16 one.
pub(super) fn batch_gemm_pays(g: &ConvGeom, threads: usize) -> bool {
    let per_thread = g.ndim() * g.batch.div_ceil(threads.max(1));
    g.c_out >= 64 && g.c_in >= 64 && per_thread < 1024
}

/// dW (C_out × C_in·k·k) = dy · colᵀ with K = every output position of the batch: the columns
/// of all images side by side, then one GEMM split over the pool by columns of dW.
pub(super) fn weight_grad_batch_gemm(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (kd, n, img_in, img_out) = (g.kdim(), g.ndim(), g.img_in(), g.img_out());
    let total = g.batch * n;
    // SAFETY: both are written whole below before they are read: the pieces cover the batch,
    // and each writes its images' block of every row.
    let mut col = unsafe { output_buffer(kd * total) };
    let mut dym = unsafe { output_buffer(g.c_out * total) };
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
    // SAFETY: the pieces cover all C_out rows, and each GEMM overwrites its rows whole
    // (accumulate off) before `dw` is read.
    let mut dw = unsafe { output_buffer(g.c_out * kd) };
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
