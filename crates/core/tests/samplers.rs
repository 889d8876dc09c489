//! Samplers: timestep spacing and single steps against diffusers, and whole reverse processes
//! against the exact optimal denoiser of a Gaussian data distribution.

use ddlab_core::Device;
use ddlab_core::Tensor;
use ddlab_core::diffusion::{Diffusion, Prediction};
use ddlab_core::rng::Rng;
use ddlab_core::sampler::{
    Ddim, Ddpm, DdpmVariance, GaussianOracle, Sampler, TimestepSpacing, sample, spaced_timesteps,
};
use ddlab_core::schedule::{NoiseSchedule, ScheduleConfig, ScheduleKind};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(include_str!("data/reference.json")).unwrap()
}

fn vec_of(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn timestep_spacing_matches_diffusers() {
    for case in reference()["spacing"].as_array().unwrap() {
        let t = case["T"].as_u64().unwrap() as usize;
        let s = case["S"].as_u64().unwrap() as usize;
        let sp: TimestepSpacing = case["spacing"].as_str().unwrap().parse().unwrap();
        let want: Vec<usize> = case["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(
            spaced_timesteps(t, s, sp).unwrap(),
            want,
            "T={t} S={s} {sp}"
        );
    }
    assert!(spaced_timesteps(10, 11, TimestepSpacing::Trailing).is_err());
    assert!(spaced_timesteps(10, 0, TimestepSpacing::Trailing).is_err());
}

#[test]
fn single_steps_match_diffusers() {
    let dev = Device::Cpu;
    let schedule = ScheduleConfig::new(ScheduleKind::Cosine, 100)
        .build()
        .unwrap();
    let diffusion = Diffusion::new(schedule.clone(), &dev);
    let ddpm = Ddpm::new(
        &schedule,
        10,
        TimestepSpacing::Trailing,
        DdpmVariance::BetaTilde,
        false,
    )
    .unwrap();
    let ddim = Ddim::new(&schedule, 10, TimestepSpacing::Trailing, 0.0, false).unwrap();
    let ddim1 = Ddim::new(&schedule, 10, TimestepSpacing::Trailing, 1.0, false).unwrap();
    let mut n = 0;
    for case in reference()["steps"].as_array().unwrap() {
        let t = case["t"].as_u64().unwrap() as usize;
        let x = Tensor::from_vec(vec_of(&case["x"]), (2, 1, 2, 2), &dev).unwrap();
        let eps = Tensor::from_vec(vec_of(&case["eps"]), (2, 1, 2, 2), &dev).unwrap();
        let pred = diffusion
            .prediction(ddlab_core::diffusion::Objective::Eps, &x, &eps, &[t, t])
            .unwrap();
        let sampler: &dyn Sampler = match (case["sampler"].as_str().unwrap(), case["eta"].as_f64())
        {
            ("ddpm", _) => &ddpm,
            ("ddim", Some(0.0)) => &ddim,
            _ => &ddim1,
        };
        let k = sampler.timesteps().iter().position(|&v| v == t).unwrap();
        let out = sampler.step(k, &x, &pred, None, &diffusion).unwrap();
        let got: Vec<f32> = out.mean.flatten_all().unwrap().to_vec1().unwrap();
        for (g, w) in got.iter().zip(vec_of(&case["mean"])) {
            assert!((g - w).abs() < 2e-5 * (1.0 + w.abs()), "{case}: {g} vs {w}");
        }
        if let Some(var) = case["variance"].as_f64() {
            assert!(
                (out.std * out.std - var).abs() < 1e-9 + 1e-6 * var,
                "variance {} vs {var}",
                out.std * out.std
            );
        }
        n += 1;
    }
    assert_eq!(n, 12);
}

fn moments(x: &Tensor) -> (f64, f64) {
    let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let n = v.len() as f64;
    let m = v.iter().map(|&a| a as f64).sum::<f64>() / n;
    let var = v.iter().map(|&a| (a as f64 - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, var)
}

#[derive(Clone, Copy)]
enum Kind {
    Ddpm(DdpmVariance),
    Ddim(f64),
}

/// The mean and variance a sampler driven by the exact denoiser must end with, derived
/// independently of the sampler code: with a Gaussian oracle every step is affine in x, so the
/// moments follow a scalar recursion over the visited ᾱ values.
fn predicted_moments(
    schedule: &NoiseSchedule,
    ts_desc: &[usize],
    kind: Kind,
    mu: f64,
    s: f64,
) -> (f64, f64) {
    let (mut m, mut v) = (0.0, 1.0);
    let s2 = s * s;
    for (k, &t) in ts_desc.iter().enumerate() {
        let a = schedule.alpha_bars[t];
        let ap = ts_desc.get(k + 1).map_or(1.0, |&p| schedule.alpha_bars[p]);
        let den = a * s2 + 1.0 - a;
        // x0_hat = μ + g (x − √a μ);  eps_hat = h (x − √a μ)
        let g = a.sqrt() * s2 / den;
        let h = (1.0 - a).sqrt() / den;
        let (gain, offset, var_add) = match kind {
            Kind::Ddpm(variance) => {
                let beta = 1.0 - a / ap;
                let c1 = beta * ap.sqrt() / (1.0 - a);
                let c2 = (1.0 - ap) * (1.0 - beta).sqrt() / (1.0 - a);
                let last = k + 1 == ts_desc.len();
                let sigma2 = match variance {
                    _ if last => 0.0,
                    DdpmVariance::BetaTilde => beta * (1.0 - ap) / (1.0 - a),
                    DdpmVariance::Beta => beta,
                    DdpmVariance::Learned => panic!("fixed variances only"),
                };
                (c1 * g + c2, c1 * (mu - g * a.sqrt() * mu), sigma2)
            }
            Kind::Ddim(eta) => {
                let sigma = eta * ((1.0 - ap) / (1.0 - a) * (1.0 - a / ap)).sqrt();
                let d = (1.0 - ap - sigma * sigma).max(0.0).sqrt();
                let gain = ap.sqrt() * g + d * h;
                (
                    gain,
                    ap.sqrt() * (mu - g * a.sqrt() * mu) - d * h * a.sqrt() * mu,
                    sigma * sigma,
                )
            }
        };
        m = gain * m + offset;
        v = gain * gain * v + var_add;
    }
    (m, v)
}

/// For x_0 ~ N(μ, s²) the optimal ε-prediction is known in closed form; driven by it, a sampler
/// must produce the moments derived above, and with S = T those must be μ and s².
fn check_oracle(
    sampler: &dyn Sampler,
    schedule: &NoiseSchedule,
    kind: Kind,
    label: &str,
) -> (f64, f64) {
    let dev = Device::Cpu;
    let diffusion = Diffusion::new(schedule.clone(), &dev);
    let (mu, s) = (0.7, 0.3);
    let oracle = GaussianOracle {
        diffusion: &diffusion,
        mean: mu,
        std: s,
    };
    let mut rng = Rng::new(7, 0);
    let x = sample(
        sampler,
        &oracle,
        None,
        &diffusion,
        (2048, 1, 4, 4),
        &mut rng,
        &mut |_, _| {},
    )
    .unwrap();
    let (m, v) = moments(&x);
    let (pm, pv) = predicted_moments(schedule, sampler.timesteps(), kind, mu, s);
    // 32768 values: the sample mean's standard error is ~0.002, the variance's ~1%.
    assert!((m - pm).abs() < 0.01, "{label}: mean {m}, predicted {pm}");
    assert!(
        (v / pv - 1.0).abs() < 0.05,
        "{label}: variance {v}, predicted {pv}"
    );
    (pm, pv)
}

#[test]
fn ddpm_and_ddim_reproduce_a_gaussian_with_the_exact_denoiser() {
    let (mu, s2) = (0.7, 0.09);
    for kind in [ScheduleKind::Linear, ScheduleKind::Cosine] {
        let schedule = ScheduleConfig::new(kind, 1000).build().unwrap();
        for variance in [DdpmVariance::BetaTilde, DdpmVariance::Beta] {
            let s = Ddpm::new(&schedule, 1000, TimestepSpacing::Trailing, variance, false).unwrap();
            let (pm, pv) = check_oracle(
                &s,
                &schedule,
                Kind::Ddpm(variance),
                &format!("ddpm {kind} {variance} S=T"),
            );
            // With every step taken, ancestral sampling is exact up to O(1/T).
            assert!(
                (pm - mu).abs() < 1e-3 && (pv / s2 - 1.0).abs() < 0.03,
                "{kind} {variance}: {pm} {pv}"
            );
        }
        let s = Ddpm::new(
            &schedule,
            100,
            TimestepSpacing::Trailing,
            DdpmVariance::BetaTilde,
            false,
        )
        .unwrap();
        check_oracle(
            &s,
            &schedule,
            Kind::Ddpm(DdpmVariance::BetaTilde),
            &format!("ddpm {kind} S=100"),
        );
        for eta in [0.0, 1.0] {
            let s = Ddim::new(&schedule, 50, TimestepSpacing::Trailing, eta, false).unwrap();
            check_oracle(
                &s,
                &schedule,
                Kind::Ddim(eta),
                &format!("ddim {kind} η={eta} S=50"),
            );
        }
        // DDIM's first-order error vanishes as S → T.
        let s = Ddim::new(&schedule, 1000, TimestepSpacing::Trailing, 0.0, false).unwrap();
        let (pm, pv) = check_oracle(&s, &schedule, Kind::Ddim(0.0), &format!("ddim {kind} S=T"));
        assert!(
            (pm - mu).abs() < 2e-3 && (pv / s2 - 1.0).abs() < 0.02,
            "{kind} ddim S=T: {pm} {pv}"
        );
    }
}

#[test]
fn a_wrong_denoiser_is_caught() {
    // The oracle for a different distribution must fail the same check: the test can fail.
    let dev = Device::Cpu;
    let schedule = ScheduleConfig::new(ScheduleKind::Cosine, 1000)
        .build()
        .unwrap();
    let diffusion = Diffusion::new(schedule.clone(), &dev);
    let wrong = GaussianOracle {
        diffusion: &diffusion,
        mean: 0.7,
        std: 0.6,
    };
    let s = Ddim::new(&schedule, 50, TimestepSpacing::Trailing, 0.0, false).unwrap();
    let mut rng = Rng::new(7, 0);
    let x = sample(
        &s,
        &wrong,
        None,
        &diffusion,
        (512, 1, 4, 4),
        &mut rng,
        &mut |_, _| {},
    )
    .unwrap();
    let (_, v) = moments(&x);
    assert!((v / 0.09 - 1.0).abs() > 0.5);
}

#[test]
fn guidance_shifts_ddpm_mean_by_sigma_squared_times_gradient() {
    let dev = Device::Cpu;
    let schedule = ScheduleConfig::new(ScheduleKind::Linear, 100)
        .build()
        .unwrap();
    let diffusion = Diffusion::new(schedule.clone(), &dev);
    let s = Ddpm::new(
        &schedule,
        100,
        TimestepSpacing::Trailing,
        DdpmVariance::BetaTilde,
        false,
    )
    .unwrap();
    let x = Tensor::ones((1, 1, 2, 2), candle_core::DType::F32, &dev).unwrap();
    let pred = Prediction::fixed(x.zeros_like().unwrap(), x.clone());
    let g = (x.ones_like().unwrap() * 3.0).unwrap();
    let a = s.step(10, &x, &pred, None, &diffusion).unwrap();
    let b = s.step(10, &x, &pred, Some(&g), &diffusion).unwrap();
    let d: Vec<f32> = (b.mean - a.mean)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want = 3.0 * b.std * b.std;
    assert!(
        d.iter()
            .all(|v| (*v as f64 - want).abs() < 1e-6 * want.max(1e-3)),
        "{d:?} vs {want}"
    );
}

/// The guided DDIM step of guided-diffusion (`condition_score`): clip x̂_0, shift ε, no second
/// clip. Worked by hand on the linear schedule at T = 100 from t = 10 to t = 9.
#[test]
fn ddim_guidance_survives_clipping() {
    let dev = Device::Cpu;
    let schedule = ScheduleConfig::new(ScheduleKind::Linear, 100)
        .build()
        .unwrap();
    assert!((schedule.alpha_bars[10] - 0.884742).abs() < 1e-6);
    assert!((schedule.alpha_bars[9] - 0.903813).abs() < 1e-6);
    let diffusion = Diffusion::new(schedule.clone(), &dev);
    let s = Ddim::new(&schedule, 100, TimestepSpacing::Trailing, 0.0, true).unwrap();
    let k = s.timesteps().iter().position(|&t| t == 10).unwrap();
    let x = Tensor::full(0.9f32, (1, 1, 1, 1), &dev).unwrap();
    let x0 = Tensor::full(1.0f32, (1, 1, 1, 1), &dev).unwrap();
    let pred = Prediction::fixed(diffusion.eps_from_x0(&x, &x0, &[10]).unwrap(), x0);
    let g = Tensor::full(1.0f32, (1, 1, 1, 1), &dev).unwrap();
    let mean_of = |g: Option<&Tensor>| -> f64 {
        let out = s.step(k, &x, &pred, g, &diffusion).unwrap();
        out.mean.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] as f64
    };
    let (plain, guided) = (mean_of(None), mean_of(Some(&g)));
    assert!((plain - 0.913595).abs() < 2e-6, "unguided {plain}");
    assert!((guided - 0.924797).abs() < 2e-5, "guided {guided}");
}

/// guided-diffusion adds Σ·g with Σ = β̃_t, which is 0 at the last step: x_0 is not shifted.
#[test]
fn ddpm_guidance_leaves_the_last_step_alone() {
    let dev = Device::Cpu;
    let schedule = ScheduleConfig::new(ScheduleKind::Linear, 100)
        .build()
        .unwrap();
    let diffusion = Diffusion::new(schedule.clone(), &dev);
    let x = Tensor::full(0.5f32, (1, 1, 2, 2), &dev).unwrap();
    let pred = Prediction::fixed(x.zeros_like().unwrap(), x.clone());
    let g = (x.ones_like().unwrap() * 3.0).unwrap();
    for variance in [DdpmVariance::BetaTilde, DdpmVariance::Beta] {
        let s = Ddpm::new(&schedule, 100, TimestepSpacing::Trailing, variance, false).unwrap();
        let last = s.timesteps().len() - 1;
        let a = s.step(last, &x, &pred, None, &diffusion).unwrap();
        let b = s.step(last, &x, &pred, Some(&g), &diffusion).unwrap();
        let d: f32 = (b.mean - a.mean)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        match variance {
            DdpmVariance::BetaTilde => assert_eq!(d, 0.0, "β̃ guides x_0"),
            // Fixed-large keeps σ² = β̃_1 there, as guided-diffusion's `model_variance` does.
            DdpmVariance::Beta => assert!(d > 0.0),
            DdpmVariance::Learned => unreachable!(),
        }
    }
}

/// (A, B) of the affine map a deterministic sampler driven by the Gaussian oracle applies to
/// x_T over its first `steps` steps, read off by pushing x = 0 and x = 1 through it.
fn affine_map(sampler: &dyn Sampler, diffusion: &Diffusion, steps: usize) -> (f64, f64) {
    let oracle = GaussianOracle {
        diffusion,
        mean: 0.7,
        std: 0.3,
    };
    let mut x = Tensor::new(&[0f32, 1.0], &Device::Cpu)
        .unwrap()
        .reshape((2, 1, 1, 1))
        .unwrap();
    for (k, &t) in sampler.timesteps()[..steps].iter().enumerate() {
        let pred = ddlab_core::sampler::Denoiser::predict(&oracle, &x, &[t, t]).unwrap();
        x = sampler.step(k, &x, &pred, None, diffusion).unwrap().mean;
    }
    let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    ((v[1] - v[0]) as f64, v[0] as f64)
}

/// How far a sampler's map from the first visited timestep to the last is from the exact
/// probability-flow ODE's, which for N(μ, s²) data keeps (x − √ᾱ·μ)/√(ᾱs² + 1 − ᾱ) fixed.
/// The last step (to clean data, x̂_0 itself in both samplers) is left out: it is the same
/// convention in both and not part of the solver's error.
fn ode_error(sampler: &dyn Sampler, diffusion: &Diffusion) -> f64 {
    let ab = &diffusion.schedule.alpha_bars;
    let ts = sampler.timesteps();
    let (first, last) = (ab[ts[0]], ab[ts[ts.len() - 1]]);
    let (mu, s2) = (0.7f64, 0.09f64);
    let var = |a: f64| a * s2 + 1.0 - a;
    let a_exact = (var(last) / var(first)).sqrt();
    let b_exact = last.sqrt() * mu - a_exact * first.sqrt() * mu;
    let (a, b) = affine_map(sampler, diffusion, ts.len() - 1);
    (a - a_exact).abs() + (b - b_exact).abs()
}

#[test]
fn dpm_solver_pp_beats_ddim_at_few_steps() {
    use ddlab_core::sampler::DpmSolverPp2m;
    for kind in [ScheduleKind::Linear, ScheduleKind::Cosine] {
        let schedule = ScheduleConfig::new(kind, 1000).build().unwrap();
        let diffusion = Diffusion::new(schedule.clone(), &Device::Cpu);
        for s in [10, 20] {
            let sp = TimestepSpacing::Trailing;
            let dpm = DpmSolverPp2m::new(&schedule, s, sp, false).unwrap();
            let ddim = Ddim::new(&schedule, s, sp, 0.0, false).unwrap();
            let (e_dpm, e_ddim) = (ode_error(&dpm, &diffusion), ode_error(&ddim, &diffusion));
            eprintln!("{kind} S = {s}: ODE error DPM-Solver++ {e_dpm:.2e}, DDIM {e_ddim:.2e}");
            assert!(
                e_dpm < e_ddim / 2.5,
                "{kind} S = {s}: {e_dpm} vs DDIM {e_ddim}"
            );
        }
    }
}

/// The order of convergence on one fixed interval (t = 999 → 99) as the step shrinks from
/// 25 to 5 timesteps: ≈ 2 for DPM-Solver++(2M), ≈ 1 for DDIM.
#[test]
fn dpm_solver_pp_is_second_order() {
    use ddlab_core::sampler::DpmSolverPp2m;
    for kind in [ScheduleKind::Linear, ScheduleKind::Cosine] {
        let schedule = ScheduleConfig::new(kind, 1000).build().unwrap();
        let diffusion = Diffusion::new(schedule.clone(), &Device::Cpu);
        let ts = |step: usize| (99..=999).rev().step_by(step).collect::<Vec<_>>();
        let err = |step: usize| {
            let s = DpmSolverPp2m::with_timesteps(&schedule, ts(step), false).unwrap();
            ode_error(&s, &diffusion)
        };
        let order = (err(25) / err(5)).ln() / 5f64.ln();
        eprintln!(
            "{kind}: DPM-Solver++ errors {:.2e} → {:.2e}, order {order:.2}",
            err(25),
            err(5)
        );
        assert!((1.5..2.6).contains(&order), "{kind}: order {order}");
    }
}
