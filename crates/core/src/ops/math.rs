//! Branch-free scalar math that LLVM vectorises inside slice loops (AVX2 on x86-64-v3).
//!
//! `f32::exp` calls libm's scalar `expf`, which would dominate SiLU and softmax; this one is
//! Cephes' single-precision polynomial (relative error ≈ 2 ulp over the clamped range) written
//! without branches or calls so that a loop over a slice compiles to 8-wide code.

/// e^x, for x clamped to [-87.3, 88.7] (the range where e^x is a normal f32).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n·ln2 is subtracted exactly.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2²³: adding it rounds to the nearest integer, held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.7);
    let t = x.mul_add(LOG2E, MAGIC);
    let n = t - MAGIC;
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let e = p.mul_add(r * r, r) + 1.0;
    // 2ⁿ from the integer n = (bits of t) − (bits of MAGIC).
    let n_int = t.to_bits().wrapping_sub(MAGIC.to_bits());
    f32::from_bits(e.to_bits().wrapping_add(n_int << 23))
}

/// 1 / (1 + e^{-x}).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// x·σ(x).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// d silu / dx = σ(x)·(1 + x·(1 − σ(x))).
#[inline(always)]
pub fn silu_grad(x: f32) -> f32 {
    let s = sigmoid(x);
    s * x.mul_add(1.0 - s, 1.0)
}

/// Sum of a slice (vectorised; fixed order, so deterministic).
#[inline(always)]
pub fn sum(xs: &[f32]) -> f32 {
    lane_sum(xs, |acc, x| acc + x)
}

/// Σ (x − m)², vectorised like [`sum`].
#[inline(always)]
pub fn sum_sq_dev(xs: &[f32], m: f32) -> f32 {
    lane_sum(xs, |acc, x| {
        let d = x - m;
        d.mul_add(d, acc)
    })
}

/// Folds `xs` into accumulators with `step(acc, x)` and adds them up: 64 independent lanes
/// over blocks of 64 (four vector chains, so the adds' latency does not bound it), then 16
/// over what is left, then one for the tail.
#[inline(always)]
fn lane_sum(xs: &[f32], step: impl Fn(f32, f32) -> f32) -> f32 {
    let mut w = [[0f32; 16]; 4];
    let blocks = xs.chunks_exact(64);
    let rest = blocks.remainder();
    for c in blocks {
        for (k, lane) in w.iter_mut().enumerate() {
            for i in 0..16 {
                lane[i] = step(lane[i], c[16 * k + i]);
            }
        }
    }
    let mut acc = [0f32; 16];
    for i in 0..16 {
        acc[i] = (w[0][i] + w[1][i]) + (w[2][i] + w[3][i]);
    }
    let chunks = rest.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            acc[i] = step(acc[i], c[i]);
        }
    }
    let s = tail.iter().fold(0f32, |s, &v| step(s, v));
    reduce16(acc) + s
}

/// Σ a·b, vectorised like [`sum`].
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut s = 0f32;
    for (x, y) in ta.iter().zip(tb) {
        s += x * y;
    }
    reduce16(acc) + s
}

/// Σ a·(b − m), vectorised like [`sum`].
#[inline(always)]
pub fn dot_dev(a: &[f32], b: &[f32], m: f32) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] = x[i].mul_add(y[i] - m, acc[i]);
        }
    }
    let mut s = 0f32;
    for (x, y) in ta.iter().zip(tb) {
        s += x * (y - m);
    }
    reduce16(acc) + s
}

#[inline(always)]
fn reduce16(acc: [f32; 16]) -> f32 {
    let mut h = [0f32; 8];
    for i in 0..8 {
        h[i] = acc[i] + acc[i + 8];
    }
    let q = [h[0] + h[4], h[1] + h[5], h[2] + h[6], h[3] + h[7]];
    (q[0] + q[2]) + (q[1] + q[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_over_the_range() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let rel = ((exp(x) as f64) - (x as f64).exp()).abs() / (x as f64).exp();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp(-1000.0), exp(-87.3));
        assert!(exp(1000.0).is_finite());
        assert!((sigmoid(-200.0)).abs() < 1e-30 && (sigmoid(200.0) - 1.0).abs() < 1e-7);
    }

    #[test]
    fn sums_match_a_plain_loop() {
        let v: Vec<f32> = (0..1037)
            .map(|i| ((i * 37) % 101) as f32 / 7.0 - 5.0)
            .collect();
        let plain: f64 = v.iter().map(|&x| x as f64).sum();
        assert!((sum(&v) as f64 - plain).abs() < 1e-3);
        let d: f64 = v.iter().map(|&x| (x as f64) * (x as f64)).sum();
        assert!((dot(&v, &v) as f64 - d).abs() / d < 1e-6);
        assert!((sum_sq_dev(&v, 0.0) as f64 - d).abs() / d < 1e-6);
    }
}
