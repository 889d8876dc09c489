//! Every custom CPU op against candle's reference composition: forward and every gradient
//! (relative error ≤ 1e-4 in f32), on random shapes with odd sizes and batch 1, and against
//! central finite differences.

use candle_core::{DType, Device, Tensor, Var};
use ddlab_core::ops;
use ddlab_core::rng::Rng;

fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt();
    let n = b
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt();
    d / n.max(1e-12)
}

fn randn(rng: &mut Rng, shape: &[usize]) -> Tensor {
    rng.randn(shape, &Device::Cpu).unwrap()
}

/// Checks an op against a reference on the forward value and the gradients of `inputs`.
fn compare(
    label: &str,
    inputs: &[Tensor],
    fast: &dyn Fn(&[Tensor]) -> Tensor,
    reference: &dyn Fn(&[Tensor]) -> Tensor,
    weight: &Tensor,
) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let (yf, yr) = (fast(&ts), reference(&ts));
    assert_eq!(yf.dims(), yr.dims(), "{label}");
    let e = rel_err(&yf, &yr);
    assert!(e <= 1e-4, "{label}: forward relative error {e}");
    // A random weighting makes every output element matter to the loss.
    let gf = (yf * weight)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gr = (yr * weight)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (i, t) in ts.iter().enumerate() {
        let (a, b) = (gf.get(t).unwrap(), gr.get(t).unwrap());
        let e = rel_err(a, b);
        assert!(
            e <= 1e-4,
            "{label}: gradient of input {i} relative error {e}"
        );
    }
}

/// Runs `f` with the kernels splitting work for `threads` threads. The conv op picks its
/// kernel (direct 3×3 or im2col + GEMM) and its work split from the thread count and the
/// batch, so every conv check runs with one thread (each image on the calling thread, the
/// direct kernel for all 3×3 stride-1 padding-1 convs) and with eight (the GEMM path for
/// batches under eight).
fn in_pool(threads: usize, f: impl FnOnce()) {
    ddlab_core::ops::cpu::with_threads(threads, f)
}

#[test]
fn conv2d_matches_candle_on_random_shapes() {
    in_pool(1, || conv2d_cases(3));
    in_pool(8, || conv2d_cases(4));
}

fn conv2d_cases(seed: u64) {
    let mut rng = Rng::new(seed, seed);
    // (batch, c_in, h, w, c_out, k, stride, pad)
    let cases = [
        (1, 1, 5, 5, 1, 3, 1, 1),
        (2, 3, 7, 9, 4, 3, 1, 1),
        (3, 5, 8, 8, 6, 3, 2, 1),
        (1, 4, 7, 7, 3, 3, 2, 1),
        (5, 6, 6, 5, 7, 1, 1, 0),
        (2, 2, 9, 6, 3, 3, 1, 0),
        (4, 3, 11, 11, 2, 5, 2, 2),
        (7, 8, 14, 14, 16, 3, 1, 1),
        (9, 3, 5, 6, 5, 3, 1, 1),
        // Stride 2 on the phase-plane kernels (AVX-512): odd sides, more than one block of
        // output channels, a batch that fills eight threads, a 1×3 image (odd sides only:
        // candle's reference input gradient drops the last row or column of an even one).
        (9, 5, 9, 7, 13, 3, 2, 1),
        (2, 3, 1, 3, 4, 3, 2, 1),
        (8, 16, 13, 15, 7, 3, 2, 1),
        (9, 4, 9, 11, 24, 3, 2, 1),
        // Wide layers on small images: the weight gradient as one GEMM over the batch.
        (3, 64, 4, 5, 130, 3, 1, 1),
    ];
    for (b, ci, h, w, co, k, s, p) in cases {
        let label = format!("conv b{b} ci{ci} {h}x{w} co{co} k{k} s{s} p{p}");
        let x = randn(&mut rng, &[b, ci, h, w]);
        let wt = randn(&mut rng, &[co, ci, k, k]);
        let bias = randn(&mut rng, &[co]);
        let ho = (h + 2 * p - k) / s + 1;
        let wo = (w + 2 * p - k) / s + 1;
        let weight = randn(&mut rng, &[b, co, ho, wo]);
        compare(
            &label,
            &[x, wt, bias],
            &|t| ops::conv2d(&t[0], &t[1], &t[2], s, p).unwrap(),
            &|t| ops::conv2d_reference(&t[0], &t[1], &t[2], s, p).unwrap(),
            &weight,
        );
    }
}

/// The U-Net's downsampling convs have even sides, where candle's reference input gradient
/// is a row and a column short; there the stride-2 direct path (one thread) is checked
/// against the im2col + GEMM path (a batch of two under eight threads takes that path: the
/// direct kernels run one image per thread).
#[test]
fn stride2_direct_path_matches_the_gemm_path_on_even_sides() {
    let mut rng = Rng::new(21, 21);
    for (ci, h, w, co) in [
        (8, 28, 28, 8),
        (5, 14, 6, 13),
        (3, 2, 4, 2),
        (6, 10, 10, 20),
    ] {
        let x = randn(&mut rng, &[2, ci, h, w]);
        let wt = randn(&mut rng, &[co, ci, 3, 3]);
        let bias = randn(&mut rng, &[co]);
        let weight = randn(&mut rng, &[2, co, h.div_ceil(2), w.div_ceil(2)]);
        let run = |threads| {
            in_pool_ret(threads, || {
                let vars: Vec<Var> = [&x, &wt, &bias]
                    .iter()
                    .map(|t| Var::from_tensor(t).unwrap())
                    .collect();
                let y = ops::conv2d(
                    vars[0].as_tensor(),
                    vars[1].as_tensor(),
                    vars[2].as_tensor(),
                    2,
                    1,
                )
                .unwrap();
                let grads = (&y * &weight)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let mut out = vec![y];
                out.extend(
                    vars.iter()
                        .map(|v| grads.get(v.as_tensor()).unwrap().clone()),
                );
                out
            })
        };
        let (direct, gemm) = (run(1), run(8));
        for (i, (a, b)) in direct.iter().zip(&gemm).enumerate() {
            let e = rel_err(a, b);
            assert!(
                e <= 1e-4,
                "{ci}×{h}×{w} → {co}: output/gradient {i} relative error {e}"
            );
        }
    }
}

fn in_pool_ret<R>(threads: usize, f: impl FnOnce() -> R) -> R {
    ddlab_core::ops::cpu::with_threads(threads, f)
}

/// Central differences of sum(weight ⊙ f(x)) with respect to a few entries of input `which`.
fn finite_difference_check(
    label: &str,
    inputs: &[Tensor],
    which: usize,
    f: &dyn Fn(&[Tensor]) -> Tensor,
    weight: &Tensor,
) {
    let to64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let g = (f(&ts) * weight)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let analytic: Vec<f32> = g
        .get(&ts[which])
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let base: Vec<f32> = inputs[which].flatten_all().unwrap().to_vec1().unwrap();
    let n = base.len();
    for idx in [0, n / 7, n / 3, n / 2, 2 * n / 3, 5 * n / 6, n - 1] {
        let eval = |delta: f32| {
            let mut v = base.clone();
            v[idx] += delta;
            let mut args = inputs.to_vec();
            args[which] = Tensor::from_vec(v, inputs[which].shape(), &Device::Cpu).unwrap();
            to64(&(f(&args) * weight).unwrap().sum_all().unwrap())
                .to_scalar::<f64>()
                .unwrap()
        };
        let h = 1e-2;
        let fd = (eval(h) - eval(-h)) / (2.0 * h as f64);
        let tol = 1e-2 * (fd.abs() + analytic[idx].abs() as f64) + 1e-3;
        assert!(
            (analytic[idx] as f64 - fd).abs() < tol,
            "{label} input {which}[{idx}]: {} vs {fd}",
            analytic[idx]
        );
    }
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    in_pool(1, || conv2d_finite_differences(5));
    in_pool(8, || conv2d_finite_differences(6));
}

fn conv2d_finite_differences(seed: u64) {
    let mut rng = Rng::new(seed, seed);
    for (s, p, k) in [(1, 1, 3), (2, 1, 3), (1, 0, 1)] {
        let x = randn(&mut rng, &[2, 3, 6, 7]);
        let w = randn(&mut rng, &[4, 3, k, k]);
        let b = randn(&mut rng, &[4]);
        let y = ops::conv2d(&x, &w, &b, s, p).unwrap();
        let weight = randn(&mut rng, y.dims());
        let f = |t: &[Tensor]| ops::conv2d(&t[0], &t[1], &t[2], s, p).unwrap();
        for which in 0..3 {
            finite_difference_check(
                &format!("conv s{s} p{p} k{k}"),
                &[x.clone(), w.clone(), b.clone()],
                which,
                &f,
                &weight,
            );
        }
    }
}

fn dropout_mask(rng: &mut Rng, shape: &[usize], p: f64) -> Tensor {
    rng.dropout_mask(shape, p, &Device::Cpu).unwrap()
}

#[test]
fn group_norm_matches_candle_on_random_shapes() {
    let mut rng = Rng::new(7, 7);
    // (batch, channels, groups, h, w)
    let cases = [
        (1, 4, 2, 3, 3),
        (2, 6, 3, 5, 7),
        (3, 8, 8, 4, 4),
        (1, 5, 1, 9, 2),
        (4, 32, 32, 7, 7),
        (2, 64, 32, 14, 14),
        (5, 12, 4, 1, 1),
        (2, 16, 4, 13, 11),
    ];
    for (b, c, g, h, w) in cases {
        for silu in [false, true] {
            for with_mask in [false, true] {
                let label = format!("gn b{b} c{c} g{g} {h}x{w} silu {silu} mask {with_mask}");
                // A shifted input: the kernel must not lose precision on non-zero means.
                let x = randn(&mut rng, &[b, c, h, w]).affine(2.0, 3.0).unwrap();
                let gamma = (randn(&mut rng, &[c]) + 1.0).unwrap();
                let beta = randn(&mut rng, &[c]);
                let weight = randn(&mut rng, &[b, c, h, w]);
                let mask = with_mask.then(|| dropout_mask(&mut rng, &[b, c, h, w], 0.3));
                let m = mask.clone();
                compare(
                    &label,
                    &[x, gamma, beta],
                    &|t| {
                        ops::group_norm_masked(&t[0], g, &t[1], &t[2], 1e-5, silu, m.as_ref())
                            .unwrap()
                    },
                    &|t| {
                        let y =
                            ops::group_norm_reference(&t[0], g, &t[1], &t[2], 1e-5, silu).unwrap();
                        match &mask {
                            Some(m) => (y * m).unwrap(),
                            None => y,
                        }
                    },
                    &weight,
                );
            }
        }
    }
}

#[test]
fn group_norm_gradients_match_finite_differences() {
    let mut rng = Rng::new(9, 9);
    for silu in [false, true] {
        let x = randn(&mut rng, &[2, 6, 3, 4]);
        let gamma = (randn(&mut rng, &[6]) + 1.0).unwrap();
        let beta = randn(&mut rng, &[6]);
        let weight = randn(&mut rng, &[2, 6, 3, 4]);
        let mask = dropout_mask(&mut rng, &[2, 6, 3, 4], 0.2);
        let f = |t: &[Tensor]| {
            ops::group_norm_masked(&t[0], 3, &t[1], &t[2], 1e-5, silu, Some(&mask)).unwrap()
        };
        for which in 0..3 {
            finite_difference_check(
                &format!("gn silu {silu}"),
                &[x.clone(), gamma.clone(), beta.clone()],
                which,
                &f,
                &weight,
            );
        }
    }
}

#[test]
fn fused_conv2d_matches_candle() {
    in_pool(1, || fused_conv2d_cases(11));
    in_pool(8, || fused_conv2d_cases(12));
}

fn fused_conv2d_cases(seed: u64) {
    let mut rng = Rng::new(seed, seed);
    // (batch, c_in, h, w, c_out, k, stride, pad, upsample, per-sample bias, residual)
    let cases = [
        (2, 3, 5, 6, 4, 3, 1, 1, 1, true, false),
        (1, 2, 4, 4, 3, 3, 1, 1, 1, false, true),
        (3, 4, 3, 5, 5, 3, 1, 1, 2, false, false),
        (1, 3, 4, 4, 2, 3, 1, 1, 2, false, true),
        (2, 5, 6, 6, 3, 1, 1, 0, 1, false, true),
        (2, 3, 3, 3, 4, 1, 1, 0, 2, true, false),
        (4, 6, 7, 7, 6, 3, 1, 1, 1, true, true),
        (2, 3, 8, 8, 3, 3, 2, 1, 1, false, true),
        (3, 2, 5, 5, 4, 3, 1, 0, 1, true, false),
        (5, 8, 7, 7, 8, 3, 1, 1, 2, false, true),
        (9, 3, 4, 5, 7, 3, 1, 1, 2, true, true),
        (8, 2, 3, 3, 3, 3, 1, 1, 1, false, false),
        (9, 4, 7, 11, 5, 3, 2, 1, 1, true, true),
        // 16 or more output channels: the weight gradient with channels in the lanes (AVX-512;
        // a 32-wide panel and a 16-wide one for 40 and 33).
        (3, 5, 5, 7, 40, 3, 1, 1, 2, true, true),
        (9, 6, 6, 5, 33, 3, 1, 1, 1, false, true),
        (2, 16, 9, 9, 16, 3, 1, 1, 1, true, false),
        // One-row and one-column images through the upsampling phases.
        (2, 3, 1, 4, 5, 3, 1, 1, 2, false, true),
        (1, 2, 3, 1, 17, 3, 1, 1, 2, true, false),
        (2, 64, 2, 3, 129, 3, 1, 1, 2, true, true),
        (9, 70, 3, 3, 72, 3, 1, 1, 1, false, true),
    ];
    for (b, ci, h, w, co, k, s, p, up, per_sample, with_res) in cases {
        let label = format!(
            "fused conv b{b} ci{ci} {h}x{w} co{co} k{k} s{s} p{p} up{up} \
             per-sample {per_sample} residual {with_res}"
        );
        let opts = ops::ConvOptions {
            stride: s,
            padding: p,
            upsample: up,
        };
        let ho = (h * up + 2 * p - k) / s + 1;
        let wo = (w * up + 2 * p - k) / s + 1;
        let mut inputs = vec![
            randn(&mut rng, &[b, ci, h, w]),
            randn(&mut rng, &[co, ci, k, k]),
            if per_sample {
                randn(&mut rng, &[b, co])
            } else {
                randn(&mut rng, &[co])
            },
        ];
        if with_res {
            inputs.push(randn(&mut rng, &[b, co, ho, wo]));
        }
        let weight = randn(&mut rng, &[b, co, ho, wo]);
        compare(
            &label,
            &inputs,
            &|t| ops::conv2d_fused(&t[0], &t[1], &t[2], opts, t.get(3)).unwrap(),
            &|t| ops::conv2d_fused_reference(&t[0], &t[1], &t[2], opts, t.get(3)).unwrap(),
            &weight,
        );
    }
}

#[test]
fn fused_conv2d_gradients_match_finite_differences() {
    in_pool(1, || fused_conv2d_finite_differences(13));
    in_pool(8, || fused_conv2d_finite_differences(14));
}

fn fused_conv2d_finite_differences(seed: u64) {
    let mut rng = Rng::new(seed, seed);
    let opts = ops::ConvOptions {
        stride: 1,
        padding: 1,
        upsample: 2,
    };
    let x = randn(&mut rng, &[2, 3, 3, 4]);
    let w = randn(&mut rng, &[2, 3, 3, 3]);
    let b = randn(&mut rng, &[2]);
    let r = randn(&mut rng, &[2, 2, 6, 8]);
    let weight = randn(&mut rng, &[2, 2, 6, 8]);
    let f = |t: &[Tensor]| ops::conv2d_fused(&t[0], &t[1], &t[2], opts, Some(&t[3])).unwrap();
    for which in 0..4 {
        finite_difference_check(
            "conv up2 + residual",
            &[x.clone(), w.clone(), b.clone(), r.clone()],
            which,
            &f,
            &weight,
        );
    }
}

#[test]
fn attention_matches_candle() {
    let mut rng = Rng::new(17, 17);
    // (batch, channels, heads, h, w)
    let cases = [
        (1, 4, 1, 2, 2),
        (2, 6, 2, 3, 3),
        (3, 8, 1, 4, 5),
        (2, 12, 3, 1, 7),
        (4, 16, 2, 7, 7),
        (1, 5, 5, 3, 2),
    ];
    for (b, c, heads, h, w) in cases {
        let label = format!("attention b{b} c{c} heads{heads} {h}x{w}");
        // Scaled up so that the softmax is far from uniform.
        let qkv = (randn(&mut rng, &[b, 3 * c, h, w]) * 2.0).unwrap();
        let weight = randn(&mut rng, &[b, c, h, w]);
        compare(
            &label,
            &[qkv],
            &|t| ops::attention(&t[0], heads).unwrap(),
            &|t| ops::attention_reference(&t[0], heads).unwrap(),
            &weight,
        );
    }
}

#[test]
fn attention_gradients_match_finite_differences() {
    let mut rng = Rng::new(19, 19);
    let qkv = randn(&mut rng, &[2, 12, 3, 3]);
    let weight = randn(&mut rng, &[2, 4, 3, 3]);
    finite_difference_check(
        "attention",
        &[qkv],
        0,
        &|t| ops::attention(&t[0], 2).unwrap(),
        &weight,
    );
}

/// The AdamW update as the formula reads, in tensor ops: the fused kernels must match it bit for
/// bit (same f32 operations in the same order).
fn adamw_reference(
    theta: &Tensor,
    m: &Tensor,
    v: &Tensor,
    g: &Tensor,
    p: ops::AdamWStep,
) -> [Tensor; 3] {
    let g = (g * p.grad_scale).unwrap();
    let m = ((m * p.beta1).unwrap() + (&g * (1.0 - p.beta1)).unwrap()).unwrap();
    let v = ((v * p.beta2).unwrap() + (g.sqr().unwrap() * (1.0 - p.beta2)).unwrap()).unwrap();
    let m_hat = (&m / p.bias_correction1).unwrap();
    let v_hat = (&v / p.bias_correction2).unwrap();
    let update = (m_hat / (v_hat.sqrt().unwrap() + p.eps).unwrap()).unwrap();
    let theta =
        ((theta * (1.0 - p.lr * p.weight_decay)).unwrap() - (update * p.lr).unwrap()).unwrap();
    [theta, m, v]
}

#[test]
fn fused_adamw_and_ema_match_the_formulas() {
    let mut rng = Rng::new(23, 23);
    // Sizes on both sides of the parallel threshold, odd ones, and a transposed gradient.
    for (shape, transposed) in [
        (vec![7], false),
        (vec![3, 5], true),
        (vec![64, 32, 3, 3], false),
        (vec![301, 233], true),
    ] {
        let label = format!("{shape:?} transposed={transposed}");
        let var = Var::from_tensor(&randn(&mut rng, &shape)).unwrap();
        let (mut m, mut v) = (var.zeros_like().unwrap(), var.zeros_like().unwrap());
        let mut reference = [
            var.as_tensor().copy().unwrap(),
            m.copy().unwrap(),
            v.copy().unwrap(),
        ];
        let mut shadow = var.as_tensor().copy().unwrap();
        let mut shadow_ref = shadow.copy().unwrap();
        for t in 1..=4 {
            let g = if transposed {
                let mut dims = shape.clone();
                dims.reverse();
                randn(&mut rng, &dims).t().unwrap()
            } else {
                randn(&mut rng, &shape)
            };
            let p = ops::AdamWStep {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.1,
                bias_correction1: 1.0 - 0.9f64.powi(t),
                bias_correction2: 1.0 - 0.999f64.powi(t),
                grad_scale: 0.5,
            };
            ops::adamw_step(&var, &mut m, &mut v, &g, p).unwrap();
            reference = adamw_reference(&reference[0], &reference[1], &reference[2], &g, p);
            for (name, a, b) in [
                ("θ", var.as_tensor(), &reference[0]),
                ("m", &m, &reference[1]),
                ("v", &v, &reference[2]),
            ] {
                let e = rel_err(a, b);
                assert!(e == 0.0, "{label} step {t}: {name} relative error {e}");
            }
            ops::ema_update(&mut shadow, var.as_tensor(), 0.9).unwrap();
            shadow_ref = ((&shadow_ref * 0.9).unwrap() + (var.as_tensor() * 0.1).unwrap()).unwrap();
            let e = rel_err(&shadow, &shadow_ref);
            assert!(e == 0.0, "{label} step {t}: EMA relative error {e}");
            let ss = ops::sum_of_squares(&g).unwrap();
            let ss_ref: f64 = g
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|&x| f64::from(x).powi(2))
                .sum();
            assert!(
                (ss - ss_ref).abs() <= 1e-9 * ss_ref,
                "{label}: Σx² {ss} vs {ss_ref}"
            );
        }
    }
}

#[test]
fn an_update_of_moments_sharing_storage_is_an_error_not_a_silent_corruption() {
    let var = Var::from_tensor(&Tensor::ones(16, DType::F32, &Device::Cpu).unwrap()).unwrap();
    let mut m = var.zeros_like().unwrap();
    let mut v = m.clone();
    let g = Tensor::ones(16, DType::F32, &Device::Cpu).unwrap();
    let p = ops::AdamWStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        bias_correction1: 0.1,
        bias_correction2: 0.001,
        grad_scale: 1.0,
    };
    assert!(ops::adamw_step(&var, &mut m, &mut v, &g, p).is_err());
}
