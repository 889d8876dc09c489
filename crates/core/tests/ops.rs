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

#[test]
fn conv2d_matches_candle_on_random_shapes() {
    let mut rng = Rng::new(3, 3);
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
    for idx in [0, n / 3, n / 2, n - 1] {
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
    let mut rng = Rng::new(5, 5);
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
