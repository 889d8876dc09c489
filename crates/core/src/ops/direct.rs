//! Direct convolution kernels (AVX-512, or AVX2 + FMA), without im2col: 3×3 stride 1, and
//! the general form for any list of taps that the stride-2 and upsampling convs run on
//! (`conv/strided.rs`, `conv/upsampled.rs`).
//!
//! The input image is copied once into a zero-bordered plane per channel ((H+2) × (W+2), the
//! padding made explicit). On that plane the input pixel under kernel tap (ki, kj) of output
//! position j = oh·(W+2) + ow is at `ki·(W+2) + kj + j`: for every tap, 16 consecutive outputs
//! read 16 consecutive inputs. The output is computed on this (W+2)-wide grid (two garbage
//! columns per row, dropped when the result is copied out), so the microkernel loads straight
//! from the image: no 9× column matrix is written, read back and packed, as the im2col + GEMM
//! path must.
//!
//! - [`conv`]: out (C_out × grid) = W ⋆ x; with AVX-512 a 12 × 32 register tile (12 output
//!   channels, 32 positions; 24 accumulators, 14 loads per 24 FMAs), with AVX2 a 6 × 16 tile
//!   (12 accumulators, 8 loads per 12 FMAs).
//! - [`weight_grad`]: dW += dy ⋆ x, reducing along positions. With AVX-512 a 3 × 9 tile (3
//!   output channels × all 9 taps of one input channel: 27 accumulators, 12 loads per 27
//!   FMAs, each dy vector streamed from L2 feeding 9 FMAs); with AVX2 a 4 × 3 tile (4 output
//!   channels × the 3 horizontal taps of one input row: 7 loads per 12 FMAs).
//! - [`weight_grad_lanes`]: the same sum with output channels in the lanes (dy transposed),
//!   AVX-512, where it pays ([`lanes_pay`]).
//! - [`conv_taps`], [`weight_grad_taps`]: [`conv`] and the AVX-512 [`weight_grad`] for taps at
//!   any offsets in a channel's planes.
//!
//! The AVX-512 kernels run wherever the CPU has AVX-512F (Intel since Skylake-SP, AMD since
//! Zen 4): twice the lanes per FMA of the AVX2 kernels.
//!
//! The input gradient is [`conv`] of the padded dy with the flipped kernel. Every kernel keeps
//! a fixed summation order, so results do not depend on threads.

use std::arch::x86_64::*;

/// The instruction set a kernel is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx2,
    Avx512,
}

impl Isa {
    /// Output channels per register tile of [`conv`].
    fn mr(self) -> usize {
        match self {
            Isa::Avx2 => 6,
            Isa::Avx512 => 12,
        }
    }

    /// Whether this CPU runs it.
    pub fn supported(self) -> bool {
        match self {
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
        }
    }
}

/// Output grids are computed in whole blocks of this many positions (a multiple of every
/// ISA's register tile width: 16 for AVX2, 32 for AVX-512).
const GRID_BLOCK: usize = 32;
/// Zeroed floats after the last plane, so that the vector loads of the garbage columns and of
/// the grid's rounding (up to GRID_BLOCK − 1 positions, plus the taps' reach of 2) never leave
/// the buffer.
const SLACK: usize = 64;

/// The best kernels this CPU runs, if any (checked once). `DDLAB_DIRECT_ISA=avx2` keeps an
/// AVX-512 machine on the AVX2 kernels, to compare the two.
pub fn isa() -> Option<Isa> {
    static ISA: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let forced_avx2 = std::env::var("DDLAB_DIRECT_ISA").is_ok_and(|v| v == "avx2");
        if !forced_avx2 && Isa::Avx512.supported() {
            Some(Isa::Avx512)
        } else if Isa::Avx2.supported() {
            Some(Isa::Avx2)
        } else {
            None
        }
    })
}

/// Whether the kernels can run here.
pub fn available() -> bool {
    isa().is_some()
}

/// A zero-bordered image: `c` planes of `(h + 2) × (w + 2)` for an `h × w` image.
#[derive(Clone, Copy, Debug)]
pub struct Padded {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Padded {
    pub fn wp(&self) -> usize {
        self.w + 2
    }
    pub fn plane(&self) -> usize {
        (self.h + 2) * self.wp()
    }
    /// Floats of the padded image including the slack.
    pub fn buf_len(&self) -> usize {
        self.c * self.plane() + SLACK
    }
    /// Output grid of a 3×3 conv on this image: h rows of (w + 2) positions.
    pub fn grid(&self) -> usize {
        self.h * self.wp()
    }
    /// The grid rounded up to whole register tiles.
    pub fn grid_tiles(&self) -> usize {
        self.grid().div_ceil(GRID_BLOCK) * GRID_BLOCK
    }
}

/// Writes the stored (c, h/up, w/up) image `x`, nearest-upsampled by `up`, into `dst` as a
/// padded (c, h, w) image.
pub fn pad(p: Padded, x: &[f32], up: usize, dst: &mut [f32]) {
    let (wp, plane) = (p.wp(), p.plane());
    let (hs, ws) = (p.h / up, p.w / up);
    for c in 0..p.c {
        let src = &x[c * hs * ws..(c + 1) * hs * ws];
        let d = &mut dst[c * plane..(c + 1) * plane];
        d[..wp].fill(0.0);
        d[(p.h + 1) * wp..].fill(0.0);
        for i in 0..p.h {
            let row = &mut d[(i + 1) * wp..(i + 2) * wp];
            row[0] = 0.0;
            row[wp - 1] = 0.0;
            let s = &src[(i / up) * ws..(i / up + 1) * ws];
            if up == 1 {
                row[1..wp - 1].copy_from_slice(s);
            } else {
                for (j, v) in row[1..wp - 1].iter_mut().enumerate() {
                    *v = s[j / up];
                }
            }
        }
    }
    dst[p.c * plane..p.buf_len()].fill(0.0);
}

/// A kernel rearranged for [`conv`] (9 taps) or [`conv_taps`] (any number) on one ISA:
/// blocks of up to `isa.mr()` output channels, each laid out as
/// [input channel][tap][output channel in block].
pub struct PackedKernel {
    data: Vec<f32>,
    c_out: usize,
    c_in: usize,
    taps: usize,
    isa: Isa,
}

impl PackedKernel {
    /// `w(o, i, t)` is tap t = 3·ki + kj of output channel o and input channel i; packed for
    /// the best kernels of this CPU.
    pub fn new(c_out: usize, c_in: usize, w: impl Fn(usize, usize, usize) -> f32 + Sync) -> Self {
        Self::for_isa(isa().unwrap_or(Isa::Avx2), c_out, c_in, w)
    }

    /// [`PackedKernel::new`] for the kernels of `isa`.
    pub fn for_isa(
        isa: Isa,
        c_out: usize,
        c_in: usize,
        w: impl Fn(usize, usize, usize) -> f32 + Sync,
    ) -> Self {
        Self::with_taps(isa, c_out, c_in, 9, w)
    }

    /// A kernel of `taps` taps, `w(o, i, t)` for t < taps, for [`conv_taps`].
    ///
    /// Large kernels are packed in parallel, a block of output channels per piece: packed on
    /// the calling thread, cifar's 256×256×9 kernels (twice per conv and step) took 6% of a
    /// training step, and the other core waited for them.
    pub fn with_taps(
        isa: Isa,
        c_out: usize,
        c_in: usize,
        taps: usize,
        w: impl Fn(usize, usize, usize) -> f32 + Sync,
    ) -> Self {
        let mr = isa.mr();
        let block = mr * c_in * taps;
        // SAFETY: every element is written below before `data` is read: block b (all blocks
        // before it full) covers b·block onwards, and the blocks cover all c_out rows.
        let mut data = unsafe { super::cpu::output_buffer(c_out * c_in * taps) };
        let out = super::cpu::SendPtr::new(&mut data);
        let pack = |blocks: std::ops::Range<usize>| {
            for b in blocks {
                let (o0, rows) = (b * mr, mr.min(c_out - b * mr));
                // SAFETY: block b's range lies inside `data`, and no other piece writes it.
                let dst = unsafe { out.slice_mut(b * block, rows * c_in * taps) };
                let mut k = 0;
                for i in 0..c_in {
                    for t in 0..taps {
                        for r in 0..rows {
                            dst[k] = w(o0 + r, i, t);
                            k += 1;
                        }
                    }
                }
            }
        };
        let blocks = c_out.div_ceil(mr);
        if c_out * c_in * taps >= 1 << 16 {
            super::cpu::par_ranges_n(blocks, blocks, pack);
        } else {
            pack(0..blocks);
        }
        Self {
            data,
            c_out,
            c_in,
            taps,
            isa,
        }
    }
}

/// `out[o][j] = Σ_{i,t} k[o][i][t] · x[i][off(t) + j]` for every grid position j of the
/// padded image `x` (`out` rows are `p.grid_tiles()` long; garbage columns included).
pub fn conv(p: Padded, x: &[f32], k: &PackedKernel, out: &mut [f32]) {
    assert_eq!(k.taps, 9, "direct conv: a 3×3 kernel");
    assert!(x.len() >= p.buf_len());
    let wp = p.wp();
    let offs: [usize; 9] = std::array::from_fn(|t| (t / 3) * wp + t % 3);
    conv_taps(x, p.c, p.plane(), &offs, p.grid_tiles(), k, out);
}

/// The general form of [`conv`]: `out[o][j] = Σ_{i,t} k[o][i][t] · x[i·plane + offs[t] + j]`
/// for j < n (a multiple of [`GRID_BLOCK`]), for any list of taps (each an offset into the
/// channel's `plane` floats). Reads up to `(c − 1)·plane + max(offs) + n` floats of `x`.
pub fn conv_taps(
    x: &[f32],
    c: usize,
    plane: usize,
    offs: &[usize],
    n: usize,
    k: &PackedKernel,
    out: &mut [f32],
) {
    assert!(k.isa.supported(), "direct conv: {:?} not available", k.isa);
    assert_eq!(k.c_in, c, "direct conv: channel mismatch");
    assert_eq!(k.taps, offs.len(), "direct conv: tap count mismatch");
    assert!(n.is_multiple_of(GRID_BLOCK) && out.len() >= k.c_out * n);
    let reach = offs.iter().copied().max().unwrap_or(0);
    assert!(c == 0 || x.len() >= (c - 1) * plane + reach + n);
    let mr = k.isa.mr();
    let taps = offs.len();
    let mut w_off = 0;
    for o0 in (0..k.c_out).step_by(mr) {
        let rows = mr.min(k.c_out - o0);
        let w = &k.data[w_off..w_off + rows * c * taps];
        w_off += rows * c * taps;
        let dst = &mut out[o0 * n..(o0 + rows) * n];
        let geo = Planes { c, plane };
        // SAFETY: the ISA is checked above; every read is inside x (bounds above) and w
        // (rows·c·taps floats), every write inside dst (rows rows of n, a multiple of the tile
        // width).
        unsafe {
            match k.isa {
                Isa::Avx512 => {
                    for j in (0..n).step_by(32) {
                        match rows {
                            12 => tile512::<12>(x, geo, offs, w, dst, n, j),
                            11 => tile512::<11>(x, geo, offs, w, dst, n, j),
                            10 => tile512::<10>(x, geo, offs, w, dst, n, j),
                            9 => tile512::<9>(x, geo, offs, w, dst, n, j),
                            8 => tile512::<8>(x, geo, offs, w, dst, n, j),
                            7 => tile512::<7>(x, geo, offs, w, dst, n, j),
                            6 => tile512::<6>(x, geo, offs, w, dst, n, j),
                            5 => tile512::<5>(x, geo, offs, w, dst, n, j),
                            4 => tile512::<4>(x, geo, offs, w, dst, n, j),
                            3 => tile512::<3>(x, geo, offs, w, dst, n, j),
                            2 => tile512::<2>(x, geo, offs, w, dst, n, j),
                            _ => tile512::<1>(x, geo, offs, w, dst, n, j),
                        }
                    }
                }
                Isa::Avx2 => {
                    for j in (0..n).step_by(16) {
                        match rows {
                            6 => tile::<6>(x, geo, offs, w, dst, n, j),
                            5 => tile::<5>(x, geo, offs, w, dst, n, j),
                            4 => tile::<4>(x, geo, offs, w, dst, n, j),
                            3 => tile::<3>(x, geo, offs, w, dst, n, j),
                            2 => tile::<2>(x, geo, offs, w, dst, n, j),
                            _ => tile::<1>(x, geo, offs, w, dst, n, j),
                        }
                    }
                }
            }
        }
    }
}

/// Channels of `plane` floats each, one after another.
#[derive(Clone, Copy)]
struct Planes {
    c: usize,
    plane: usize,
}

/// One R × 32 output tile of [`conv`] with AVX-512.
///
/// # Safety
/// AVX-512F must be available; `x` must hold `(p.c − 1)·plane + max(offs) + j + 32` floats,
/// `w` `R·p.c·offs.len()`, `dst` `(R − 1)·n + j + 32`.
#[target_feature(enable = "avx512f")]
unsafe fn tile512<const R: usize>(
    x: &[f32],
    p: Planes,
    offs: &[usize],
    w: &[f32],
    dst: &mut [f32],
    n: usize,
    j: usize,
) {
    let plane = p.plane;
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let xp = x.as_ptr();
    let mut wp = w.as_ptr();
    for i in 0..p.c {
        // SAFETY (whole block): offsets stay inside x and w per the function's contract.
        unsafe {
            let xi = xp.add(i * plane + j);
            for &o in offs {
                let a = _mm512_loadu_ps(xi.add(o));
                let b = _mm512_loadu_ps(xi.add(o + 16));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let k = _mm512_set1_ps(*wp.add(r));
                    acc[0] = _mm512_fmadd_ps(k, a, acc[0]);
                    acc[1] = _mm512_fmadd_ps(k, b, acc[1]);
                }
                wp = wp.add(R);
            }
        }
    }
    let dp = dst.as_mut_ptr();
    for (r, a) in acc.iter().enumerate() {
        // SAFETY: row r of dst has n ≥ j + 32 floats.
        unsafe {
            _mm512_storeu_ps(dp.add(r * n + j), a[0]);
            _mm512_storeu_ps(dp.add(r * n + j + 16), a[1]);
        }
    }
}

/// One R × 16 output tile of [`conv`].
///
/// # Safety
/// AVX2 and FMA must be available; `x` must hold `(p.c − 1)·plane + max(offs) + j + 16`
/// floats, `w` `R·p.c·offs.len()`, `dst` `(R − 1)·n + j + 16`.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize>(
    x: &[f32],
    p: Planes,
    offs: &[usize],
    w: &[f32],
    dst: &mut [f32],
    n: usize,
    j: usize,
) {
    let plane = p.plane;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let xp = x.as_ptr();
    let mut wp = w.as_ptr();
    for i in 0..p.c {
        // SAFETY (whole block): offsets stay inside x and w per the function's contract.
        unsafe {
            let xi = xp.add(i * plane + j);
            for &o in offs {
                let a = _mm256_loadu_ps(xi.add(o));
                let b = _mm256_loadu_ps(xi.add(o + 8));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let k = _mm256_broadcast_ss(&*wp.add(r));
                    acc[0] = _mm256_fmadd_ps(k, a, acc[0]);
                    acc[1] = _mm256_fmadd_ps(k, b, acc[1]);
                }
                wp = wp.add(R);
            }
        }
    }
    let dp = dst.as_mut_ptr();
    for (r, a) in acc.iter().enumerate() {
        // SAFETY: row r of dst has n ≥ j + 16 floats.
        unsafe {
            _mm256_storeu_ps(dp.add(r * n + j), a[0]);
            _mm256_storeu_ps(dp.add(r * n + j + 8), a[1]);
        }
    }
}

/// Output channels per register tile of [`weight_grad`] with AVX2 (× 3 taps).
const WR: usize = 4;
/// Output channels per register tile of [`weight_grad`] with AVX-512 (× 9 taps: 27
/// accumulators).
const WR9: usize = 3;

/// A group of padded images stored one after another, `stride` floats apart (the last one
/// followed by [`SLACK`] zeros).
#[derive(Clone, Copy, Debug)]
pub struct Group {
    pub count: usize,
    pub stride: usize,
}

/// `dw[o][i][t] += Σ_m Σ_j dy_m[o][j] · x_m[i][off(t) + j]` over the grids of a group of
/// padded images `x_m` and of their output gradients `dy_m` on the same grids (channel rows
/// `dy_stride` apart, zero in the garbage columns). `dw` is (C_out × C_in × 9).
///
/// When the padded width is at least 8, each dy row is followed by at least 7 zeros (its
/// bottom border and the next plane's top border or the slack), so the last partial vector
/// of a grid reads zeros; otherwise the tail is done one position at a time.
#[allow(clippy::too_many_arguments)]
pub fn weight_grad(
    p: Padded,
    x: &[f32],
    xg: Group,
    dy: &[f32],
    dy_stride: usize,
    dyg: Group,
    c_out: usize,
    dw: &mut [f32],
) {
    weight_grad_with(
        isa().unwrap_or(Isa::Avx2),
        p,
        x,
        xg,
        dy,
        dy_stride,
        dyg,
        c_out,
        dw,
    )
}

/// [`weight_grad`] with the kernels of `isa`.
#[allow(clippy::too_many_arguments)]
pub fn weight_grad_with(
    isa: Isa,
    p: Padded,
    x: &[f32],
    xg: Group,
    dy: &[f32],
    dy_stride: usize,
    dyg: Group,
    c_out: usize,
    dw: &mut [f32],
) {
    assert!(isa.supported(), "direct conv: {isa:?} not available");
    let n = p.grid();
    let wp = p.wp();
    let (lanes, wr) = match isa {
        Isa::Avx512 => (16, WR9),
        Isa::Avx2 => (8, WR),
    };
    // With wp ≥ 8 a dy row is followed by at least 2·wp − 1 ≥ 15 zeros (module doc), enough
    // for a last partial vector of either width.
    let n_vec = if wp >= 8 {
        n.div_ceil(lanes) * lanes
    } else {
        n / lanes * lanes
    };
    let count = xg.count.min(dyg.count);
    assert!(dw.len() >= c_out * p.c * 9);
    if count == 0 || c_out == 0 {
        return;
    }
    assert!(x.len() >= (count - 1) * xg.stride + p.buf_len());
    assert!(dy.len() >= (count - 1) * dyg.stride + (c_out - 1) * dy_stride + n_vec.max(n));
    let dims = WDims::groups(xg, dyg, dy_stride, n, n_vec, count);
    if isa == Isa::Avx512 {
        let offs: [usize; 9] = std::array::from_fn(|t| (t / 3) * wp + t % 3);
        // SAFETY: the bounds are asserted above (x through the slack, dy through n_vec).
        unsafe { wgrad9(x, p.c, p.plane(), &offs, dy, dims, c_out, dw) };
        return;
    }
    for i in 0..p.c {
        for ki in 0..3 {
            let xo = i * p.plane() + ki * wp;
            for o0 in (0..c_out).step_by(wr) {
                let rows = wr.min(c_out - o0);
                let d = WDims {
                    xo,
                    dy0: o0 * dy_stride,
                    ..dims
                };
                let mut sums = [[0f32; 3]; WR];
                // SAFETY: the ISA is checked above; reads stay inside x and dy (asserted
                // sizes; x reads end at xo + n_vec + 10 ≤ plane end + slack).
                unsafe {
                    match rows {
                        4 => wtile::<4>(x, dy, d, &mut sums),
                        3 => wtile::<3>(x, dy, d, &mut sums),
                        2 => wtile::<2>(x, dy, d, &mut sums),
                        _ => wtile::<1>(x, dy, d, &mut sums),
                    }
                }
                for (r, s) in sums.iter().enumerate().take(rows) {
                    let base = ((o0 + r) * p.c + i) * 9 + ki * 3;
                    for (kj, v) in s.iter().enumerate() {
                        dw[base + kj] += v;
                    }
                }
            }
        }
    }
}

/// [`weight_grad`] with AVX-512 for any 9 taps: `dw[o][i][t] += Σ_m Σ_{j<n} dy_m[o][j] ·
/// x_m[i·plane + offs[t] + j]` over the images of the groups. The caller lays zeros in each
/// dy row from `n` up to `n` rounded up to 16, and finite values in x as far as those
/// positions reach (they are multiplied, by zero). `dw` is (C_out × C_in × 9).
#[allow(clippy::too_many_arguments)]
pub fn weight_grad_taps(
    x: &[f32],
    c_in: usize,
    plane: usize,
    offs: &[usize; 9],
    xg: Group,
    n: usize,
    dy: &[f32],
    dy_stride: usize,
    dyg: Group,
    c_out: usize,
    dw: &mut [f32],
) {
    assert!(
        Isa::Avx512.supported(),
        "direct conv: AVX-512 not available"
    );
    let n_vec = n.div_ceil(16) * 16;
    let count = xg.count.min(dyg.count);
    assert!(dw.len() >= c_out * c_in * 9);
    if count == 0 || c_out == 0 || c_in == 0 {
        return;
    }
    assert!(
        x.len()
            >= (count - 1) * xg.stride
                + (c_in - 1) * plane
                + offs.iter().copied().max().unwrap_or(0)
                + n_vec
    );
    assert!(dy.len() >= (count - 1) * dyg.stride + (c_out - 1) * dy_stride + n_vec);
    let dims = WDims::groups(xg, dyg, dy_stride, n, n_vec, count);
    // SAFETY: the bounds are asserted above.
    unsafe { wgrad9(x, c_in, plane, offs, dy, dims, c_out, dw) };
}

/// The AVX-512 weight-gradient loop over input channels and blocks of output channels.
///
/// # Safety
/// Every read described by `dims`, `plane`, `c_in`, `c_out` and `offs` must lie inside `x` and
/// `dy` (its callers assert the bounds), and `dw` must hold `c_out·c_in·9` floats.
#[allow(clippy::too_many_arguments)]
unsafe fn wgrad9(
    x: &[f32],
    c_in: usize,
    plane: usize,
    offs: &[usize; 9],
    dy: &[f32],
    dims: WDims,
    c_out: usize,
    dw: &mut [f32],
) {
    assert!(
        Isa::Avx512.supported(),
        "direct conv: AVX-512 not available"
    );
    // Tiles of WR9 output channels × all 9 taps of one input channel: each dy vector
    // (streamed from L2) feeds 9 FMAs, each x vector (L1) WR9.
    for i in 0..c_in {
        for o0 in (0..c_out).step_by(WR9) {
            let rows = WR9.min(c_out - o0);
            let d = WDims {
                xo: i * plane,
                dy0: o0 * dims.stride,
                ..dims
            };
            let mut sums = [[0f32; 9]; WR9];
            // SAFETY: AVX-512F is checked above; reads stay inside x and dy (this function's
            // contract).
            unsafe {
                match rows {
                    3 => wtile9::<3>(x, dy, d, offs, &mut sums),
                    2 => wtile9::<2>(x, dy, d, offs, &mut sums),
                    _ => wtile9::<1>(x, dy, d, offs, &mut sums),
                }
            }
            for (r, s) in sums.iter().enumerate().take(rows) {
                let base = ((o0 + r) * c_in + i) * 9;
                for (t, v) in s.iter().enumerate() {
                    dw[base + t] += v;
                }
            }
        }
    }
}

impl WDims {
    /// The dimensions of a whole group, from its first image and first output channel.
    fn groups(xg: Group, dyg: Group, stride: usize, n: usize, n_vec: usize, count: usize) -> Self {
        Self {
            xo: 0,
            x_step: xg.stride,
            dy0: 0,
            dy_step: dyg.stride,
            stride,
            n,
            n_vec,
            count,
        }
    }
}

/// Offsets of one [`wtile`] call.
#[derive(Clone, Copy)]
struct WDims {
    /// x offset of the input row (channel, ki) in the first image, and the image step.
    xo: usize,
    x_step: usize,
    /// dy offset of the first output channel in the first image, and the image step.
    dy0: usize,
    dy_step: usize,
    /// Between output channels of dy.
    stride: usize,
    /// Grid length, and the part of it done with vectors.
    n: usize,
    n_vec: usize,
    count: usize,
}

/// Horizontal sum of a vector in a fixed order.
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// R output channels × 3 taps of [`weight_grad`], summed over the images of the group.
///
/// # Safety
/// AVX2 and FMA must be available and every offset described by `d` must lie inside `x` and
/// `dy` (see [`weight_grad`]).
#[target_feature(enable = "avx2,fma")]
unsafe fn wtile<const R: usize>(x: &[f32], dy: &[f32], d: WDims, out: &mut [[f32; 3]; WR]) {
    let mut acc = [[_mm256_setzero_ps(); 3]; R];
    let xp = x.as_ptr();
    let dp = dy.as_ptr();
    for m in 0..d.count {
        let (xo, dy0) = (d.xo + m * d.x_step, d.dy0 + m * d.dy_step);
        for j in (0..d.n_vec).step_by(8) {
            // SAFETY (whole block): per the function's contract.
            unsafe {
                let xj = xp.add(xo + j);
                let x0 = _mm256_loadu_ps(xj);
                let x1 = _mm256_loadu_ps(xj.add(1));
                let x2 = _mm256_loadu_ps(xj.add(2));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let g = _mm256_loadu_ps(dp.add(dy0 + r * d.stride + j));
                    acc[0] = _mm256_fmadd_ps(g, x0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(g, x1, acc[1]);
                    acc[2] = _mm256_fmadd_ps(g, x2, acc[2]);
                }
            }
        }
    }
    for (r, (acc, out)) in acc.iter().zip(out.iter_mut()).enumerate() {
        for (o, &a) in out.iter_mut().zip(acc) {
            *o = hsum(a);
        }
        // Narrow images: the last positions one at a time, never reading dy past its grid.
        for m in 0..d.count {
            let (xo, dy0) = (d.xo + m * d.x_step, d.dy0 + m * d.dy_step);
            for j in d.n_vec..d.n {
                let g = dy[dy0 + r * d.stride + j];
                for (t, o) in out.iter_mut().enumerate() {
                    *o = g.mul_add(x[xo + j + t], *o);
                }
            }
        }
    }
}

/// R output channels × the 9 taps of one input channel, with AVX-512, summed over the
/// images of the group (`d.xo` is the channel's plane).
///
/// # Safety
/// AVX-512F must be available and every offset described by `d` and `offs` must lie inside
/// `x` and `dy` (see [`weight_grad`]).
#[target_feature(enable = "avx512f")]
unsafe fn wtile9<const R: usize>(
    x: &[f32],
    dy: &[f32],
    d: WDims,
    offs: &[usize; 9],
    out: &mut [[f32; 9]; WR9],
) {
    let mut acc = [[_mm512_setzero_ps(); 9]; R];
    let xp = x.as_ptr();
    let dp = dy.as_ptr();
    for m in 0..d.count {
        let (xo, dy0) = (d.xo + m * d.x_step, d.dy0 + m * d.dy_step);
        for j in (0..d.n_vec).step_by(16) {
            // SAFETY (whole block): per the function's contract.
            unsafe {
                let g: [__m512; R] =
                    std::array::from_fn(|r| _mm512_loadu_ps(dp.add(dy0 + r * d.stride + j)));
                let xj = xp.add(xo + j);
                for (t, &o) in offs.iter().enumerate() {
                    let xv = _mm512_loadu_ps(xj.add(o));
                    for r in 0..R {
                        acc[r][t] = _mm512_fmadd_ps(g[r], xv, acc[r][t]);
                    }
                }
            }
        }
    }
    for (r, (acc, out)) in acc.iter().zip(out.iter_mut()).enumerate() {
        for (o, &a) in out.iter_mut().zip(acc) {
            *o = _mm512_reduce_add_ps(a);
        }
        // Narrow images: the last positions one at a time, never reading dy past its grid.
        for m in 0..d.count {
            let (xo, dy0) = (d.xo + m * d.x_step, d.dy0 + m * d.dy_step);
            for j in d.n_vec..d.n {
                let g = dy[dy0 + r * d.stride + j];
                for (t, o) in out.iter_mut().enumerate() {
                    *o = g.mul_add(x[xo + offs[t] + j], *o);
                }
            }
        }
    }
}

/// The positions and channels of [`weight_grad_lanes`]: `count` images whose padded x
/// channels are `plane` floats apart (images `x_step` apart), an output of `rows × cols`
/// positions read from x rows `row_stride` apart, and dy transposed by [`transpose_dy`] with
/// `cp` lanes (C_out rounded up to 16).
#[derive(Clone, Copy, Debug)]
pub struct LaneDims {
    pub count: usize,
    pub x_step: usize,
    pub c_in: usize,
    pub plane: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub cp: usize,
    pub c_out: usize,
}

/// Output channels per panel of transposed dy (the last panel may hold 16).
const PANEL: usize = 32;

/// Writes the dy (C_out × positions) of image `m` of a group of `count` transposed into
/// `dst`: panels of [`PANEL`] output channels, each positions-major over the whole group
/// (`count · positions` rows of the panel's width), the lanes past C_out zero. A panel's rows
/// are then one sequential stream for the kernel.
pub fn transpose_dy(dy: &[f32], c_out: usize, cp: usize, m: usize, count: usize, dst: &mut [f32]) {
    let positions = dy.len() / c_out.max(1);
    let total = count * positions;
    for o0 in (0..cp).step_by(PANEL) {
        let width = PANEL.min(cp - o0);
        let panel = &mut dst[o0 * total..o0 * total + width * total];
        let rows = &mut panel[m * positions * width..(m + 1) * positions * width];
        for (p, row) in rows.chunks_exact_mut(width).enumerate() {
            for (l, v) in row.iter_mut().enumerate() {
                let o = o0 + l;
                *v = if o < c_out {
                    dy[o * positions + p]
                } else {
                    0.0
                };
            }
        }
    }
}

/// Whether [`weight_grad_lanes`] beats [`weight_grad`] on this shape (AVX-512 only): up to
/// 8192 padded output × input channels (the mnist preset's widths, not cifar's; measured,
/// docs/BENCHMARKS.md); below 16 output channels most lanes would be padding.
pub fn lanes_pay(c_in: usize, c_out: usize) -> bool {
    let cp = c_out.div_ceil(16) * 16;
    isa() == Some(Isa::Avx512) && c_out >= 16 && cp * c_in <= 8192
}

/// The weight gradient with output channels in the vector lanes (AVX-512):
/// `dw[o][i][t] += Σ_m Σ_p dyt_m[p][o] · x_m[i·plane + base(p) + offs[t]]`, with
/// `base(p) = (p / cols)·row_stride + p % cols` over the valid output positions only.
///
/// Against [`weight_grad`]'s layout (positions in the lanes) this needs no horizontal sums
/// and no garbage columns, and every vector load is an aligned-size read of a dy row: a
/// 2 × 16-channel × 9-tap tile of 18 accumulators takes 2 vector loads and 9 broadcasts per
/// 18 FMAs. See [`lanes_pay`] for where it is used.
pub fn weight_grad_lanes(x: &[f32], dyt: &[f32], d: LaneDims, offs: &[usize; 9], dw: &mut [f32]) {
    assert!(
        Isa::Avx512.supported(),
        "direct conv: AVX-512 not available"
    );
    assert!(d.cp.is_multiple_of(16) && d.cp >= d.c_out);
    let positions = d.rows * d.cols;
    assert!(dw.len() >= d.c_out * d.c_in * 9);
    if d.count == 0 || positions == 0 || d.c_in == 0 || d.c_out == 0 {
        return;
    }
    let reach = offs.iter().copied().max().unwrap_or(0);
    assert!(
        x.len()
            >= (d.count - 1) * d.x_step
                + (d.c_in - 1) * d.plane
                + (d.rows - 1) * d.row_stride
                + d.cols
                + reach
    );
    assert!(dyt.len() >= d.count * positions * d.cp);
    // Blocks of whole output rows (of all images in turn) of about LANE_BLOCK positions; for
    // each panel of output channels the block's dy rows (16 KB) stay in L1 while every input
    // channel passes over them, and the accumulators of dwt[i][t][o] are loaded and stored
    // once per block.
    let mut dwt = vec![0f32; d.c_in * 9 * d.cp];
    let all_rows = d.count * d.rows;
    let block_rows = (LANE_BLOCK / d.cols).max(1);
    for r0 in (0..all_rows).step_by(block_rows) {
        let rows = r0..(r0 + block_rows).min(all_rows);
        for o0 in (0..d.cp).step_by(PANEL) {
            let panel = &dyt[o0 * d.count * positions..];
            for i in 0..d.c_in {
                let acc = &mut dwt[i * 9 * d.cp..(i + 1) * 9 * d.cp];
                // SAFETY: AVX-512F is checked above; x reads stay inside the bound asserted
                // above, panel reads inside its count·positions rows, acc inside 9·cp.
                unsafe {
                    if d.cp - o0 >= PANEL {
                        wlanes::<2>(x, panel, d, i, o0, rows.clone(), offs, acc);
                    } else {
                        wlanes::<1>(x, panel, d, i, o0, rows.clone(), offs, acc);
                    }
                }
            }
        }
    }
    for o in 0..d.c_out {
        for i in 0..d.c_in {
            for t in 0..9 {
                dw[(o * d.c_in + i) * 9 + t] += dwt[(i * 9 + t) * d.cp + o];
            }
        }
    }
}

/// Output positions per block of [`weight_grad_lanes`].
const LANE_BLOCK: usize = 128;

/// V × 16 output channels (from `o0`, the panel `panel` of transposed dy) × the 9 taps of
/// input channel `i` of [`weight_grad_lanes`], summed over the output rows `rows` (numbered
/// through all images), added into `acc[t·cp + o]`.
///
/// # Safety
/// AVX-512F must be available; the reads described by `d`, `i`, `o0`, `rows` and `offs` must
/// lie inside `x` and `panel`, and `acc` must hold `9·cp` floats.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn wlanes<const V: usize>(
    x: &[f32],
    panel: &[f32],
    d: LaneDims,
    i: usize,
    o0: usize,
    rows: std::ops::Range<usize>,
    offs: &[usize; 9],
    acc_out: &mut [f32],
) {
    let ap = acc_out.as_mut_ptr();
    // SAFETY: t·cp + o0 + 16v + 16 ≤ 9·cp.
    let mut acc: [[__m512; 9]; V] = std::array::from_fn(|v| {
        std::array::from_fn(|t| unsafe { _mm512_loadu_ps(ap.add(t * d.cp + o0 + 16 * v)) })
    });
    let (xp, gp) = (x.as_ptr(), panel.as_ptr());
    for row in rows {
        let (m, r) = (row / d.rows, row % d.rows);
        // SAFETY (whole block): per the function's contract.
        unsafe {
            let xr = xp.add(m * d.x_step + i * d.plane + r * d.row_stride);
            let mut g = gp.add(row * d.cols * 16 * V);
            for c in 0..d.cols {
                let gv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(g.add(16 * v)));
                let xc = xr.add(c);
                for (t, &o) in offs.iter().enumerate() {
                    let xb = _mm512_set1_ps(*xc.add(o));
                    for v in 0..V {
                        acc[v][t] = _mm512_fmadd_ps(gv[v], xb, acc[v][t]);
                    }
                }
                g = g.add(16 * V);
            }
        }
    }
    for (v, a) in acc.iter().enumerate() {
        for (t, &q) in a.iter().enumerate() {
            // SAFETY: as for the loads above.
            unsafe { _mm512_storeu_ps(ap.add(t * d.cp + o0 + 16 * v), q) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain loops on the unpadded image.
    fn reference(c_in: usize, c_out: usize, h: usize, w: usize, x: &[f32], k: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; c_out * h * w];
        for o in 0..c_out {
            for i in 0..c_in {
                for oh in 0..h {
                    for ow in 0..w {
                        for ki in 0..3 {
                            for kj in 0..3 {
                                let (ih, iw) = (oh + ki, ow + kj);
                                if ih < 1 || iw < 1 || ih > h || iw > w {
                                    continue;
                                }
                                y[(o * h + oh) * w + ow] += k[((o * c_in + i) * 3 + ki) * 3 + kj]
                                    * x[(i * h + ih - 1) * w + iw - 1];
                            }
                        }
                    }
                }
            }
        }
        y
    }

    #[test]
    fn conv_and_weight_grad_match_plain_loops() {
        let isas: Vec<Isa> = [Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|i| i.supported())
            .collect();
        if isas.is_empty() {
            eprintln!("SKIPPED: this CPU has neither AVX2+FMA nor AVX-512");
        }
        for &isa in &isas {
            check_isa(isa);
        }
    }

    #[test]
    fn conv_taps_matches_plain_loops_for_any_taps() {
        for isa in [Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|i| i.supported())
        {
            for (c_in, c_out, plane, offs) in [
                (3, 7, 50, vec![0, 1, 9, 10]),
                (2, 13, 40, (0..16).map(|t| (t * 7) % 37).collect::<Vec<_>>()),
                (5, 1, 33, vec![4]),
            ] {
                let n = 64;
                let reach = offs.iter().max().unwrap();
                let x: Vec<f32> = (0..(c_in - 1) * plane + reach + n)
                    .map(|v| ((v * 7) % 11) as f32 - 5.0)
                    .collect();
                let taps = offs.len();
                let wv =
                    |o: usize, i: usize, t: usize| ((o * 31 + i * 7 + t * 3) % 13) as f32 - 6.0;
                let k = PackedKernel::with_taps(isa, c_out, c_in, taps, wv);
                let mut out = vec![f32::NAN; c_out * n];
                conv_taps(&x, c_in, plane, &offs, n, &k, &mut out);
                for o in 0..c_out {
                    for j in 0..n {
                        let want: f32 = (0..c_in)
                            .flat_map(|i| (0..taps).map(move |t| (i, t)))
                            .map(|(i, t)| wv(o, i, t) * x[i * plane + offs[t] + j])
                            .sum();
                        assert_eq!(out[o * n + j], want, "{isa:?} {taps} taps o{o} j{j}");
                    }
                }
            }
        }
    }

    fn check_isa(isa: Isa) {
        // Sizes around both tile heights (6 and 12 output channels, 4 and 8 weight-gradient
        // rows) and widths (a padded width under and over 8, grids under and over 32).
        for (c_in, c_out, h, w) in [
            (1, 1, 1, 1),
            (3, 7, 5, 4),
            (2, 13, 7, 7),
            (5, 6, 3, 9),
            (4, 25, 6, 14),
            (3, 9, 11, 5),
            (2, 40, 5, 6),
            (3, 64, 4, 4),
        ] {
            let x: Vec<f32> = (0..c_in * h * w)
                .map(|v| ((v * 7) % 11) as f32 - 5.0)
                .collect();
            let k: Vec<f32> = (0..c_out * c_in * 9)
                .map(|v| ((v * 5) % 13) as f32 - 6.0)
                .collect();
            let p = Padded { c: c_in, h, w };
            let mut xp = vec![f32::NAN; p.buf_len()];
            pad(p, &x, 1, &mut xp);
            let packed =
                PackedKernel::for_isa(isa, c_out, c_in, |o, i, t| k[(o * c_in + i) * 9 + t]);
            let n = p.grid_tiles();
            let mut out = vec![0f32; c_out * n];
            conv(p, &xp, &packed, &mut out);
            let want = reference(c_in, c_out, h, w, &x, &k);
            for o in 0..c_out {
                for oh in 0..h {
                    for ow in 0..w {
                        assert_eq!(
                            out[o * n + oh * p.wp() + ow],
                            want[(o * h + oh) * w + ow],
                            "{isa:?}"
                        );
                    }
                }
            }
            // dW = Σ dy ⋆ x: with dy on the padded grid of its own zero-bordered image.
            let dyv: Vec<f32> = (0..c_out * h * w)
                .map(|v| ((v * 3) % 7) as f32 - 3.0)
                .collect();
            let pd = Padded { c: c_out, h, w };
            let mut dyp = vec![f32::NAN; pd.buf_len()];
            pad(pd, &dyv, 1, &mut dyp);
            let mut dw = vec![0f32; c_out * c_in * 9];
            let one = |stride| Group { count: 1, stride };
            weight_grad_with(
                isa,
                p,
                &xp,
                one(p.buf_len()),
                &dyp[pd.wp() + 1..],
                pd.plane(),
                one(pd.buf_len()),
                c_out,
                &mut dw,
            );
            let mut dw_lanes = vec![0f32; c_out * c_in * 9];
            if isa == Isa::Avx512 {
                // The lanes layout, over two copies of the image (so every sum doubles).
                let cp = c_out.div_ceil(16) * 16;
                let mut dyt = vec![f32::NAN; 2 * h * w * cp];
                transpose_dy(&dyv, c_out, cp, 0, 2, &mut dyt);
                transpose_dy(&dyv, c_out, cp, 1, 2, &mut dyt);
                let mut x2 = xp[..p.c * p.plane()].to_vec();
                x2.extend_from_slice(&xp);
                let d = LaneDims {
                    count: 2,
                    x_step: p.c * p.plane(),
                    c_in,
                    plane: p.plane(),
                    rows: h,
                    cols: w,
                    row_stride: p.wp(),
                    cp,
                    c_out,
                };
                let offs: [usize; 9] = std::array::from_fn(|t| (t / 3) * p.wp() + t % 3);
                weight_grad_lanes(&x2, &dyt, d, &offs, &mut dw_lanes);
            }
            for o in 0..c_out {
                for i in 0..c_in {
                    for t in 0..9 {
                        let (ki, kj) = (t / 3, t % 3);
                        let mut s = 0f32;
                        for oh in 0..h {
                            for ow in 0..w {
                                let (ih, iw) = (oh + ki, ow + kj);
                                if ih >= 1 && iw >= 1 && ih <= h && iw <= w {
                                    s += dyv[(o * h + oh) * w + ow]
                                        * x[(i * h + ih - 1) * w + iw - 1];
                                }
                            }
                        }
                        assert_eq!(dw[(o * c_in + i) * 9 + t], s, "{isa:?} dw[{o}][{i}][{t}]");
                        if isa == Isa::Avx512 {
                            assert_eq!(
                                dw_lanes[(o * c_in + i) * 9 + t],
                                2.0 * s,
                                "lanes o{o} i{i} t{t} c_out {c_out}"
                            );
                        }
                    }
                }
            }
        }
    }
}
