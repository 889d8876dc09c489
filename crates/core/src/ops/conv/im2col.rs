//! Unfolding an image into its column matrix (im2col), folding a column gradient back
//! (col2im), and nearest-neighbour upsampling and its adjoint, for the GEMM path.

use super::ConvGeom;

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
pub(super) fn im2col_rows(g: &ConvGeom, x: &[f32], r0: usize, r1: usize, col: &mut [f32]) {
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
pub(super) fn tile_rows(kd: usize, wo: usize, ho: usize) -> usize {
    const TILE_FLOATS: usize = 48 * 1024;
    (TILE_FLOATS / (kd * wo).max(1)).clamp(1, ho.max(1))
}

/// Nearest-neighbour upsampling of one image by `g.up` into `dst`.
pub(super) fn upsample_image(g: &ConvGeom, x: &[f32], dst: &mut [f32]) {
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

/// Folds a column gradient back onto one image gradient (accumulating).
pub(super) fn col2im(g: &ConvGeom, col: &[f32], dx: &mut [f32]) {
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

/// Sums each `up × up` block of the upsampled-resolution gradient onto its source pixel.
pub(super) fn downsample_sum(g: &ConvGeom, src: &[f32], dst: &mut [f32]) {
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
