//! diffusers' scheduler tests, reproduced: each runs a whole sampling loop with a deterministic
//! dummy model from a fixed sample and asserts the sum and mean of |result|. The expected
//! numbers are diffusers' own (tests/data/diffusers_loops.json); the loops here drive ddlab's
//! samplers under the settings that are equivalent to each test's scheduler config.

use candle_core::{Device, Tensor};
use ddlab_core::diffusion::{Diffusion, Objective, Prediction};
use ddlab_core::sampler::{Ddim, Ddpm, DdpmVariance, DpmSolverPp2m, Sampler, TimestepSpacing};
use ddlab_core::schedule::{ScheduleConfig, ScheduleKind};
use rand_mt::Mt;
use serde_json::Value;

const SHAPE: (usize, usize, usize, usize) = (4, 3, 8, 8);

/// diffusers' `dummy_sample_deter` (and, reversed, `dummy_noise_deter`): arange(768)/768 laid
/// out as (C, H, W, B) and permuted to (B, C, H, W).
fn deterministic(reversed: bool) -> Tensor {
    let (b, c, h, w) = SHAPE;
    let n = b * c * h * w;
    let mut v = vec![0f32; n];
    for (i, slot) in v.iter_mut().enumerate() {
        let (bi, ci, hi, wi) = (i / (c * h * w), i / (h * w) % c, i / w % h, i % w);
        let k = ((ci * h + hi) * w + wi) * b + bi;
        let k = if reversed { n - 1 - k } else { k };
        *slot = k as f32 / n as f32;
    }
    Tensor::from_vec(v, SHAPE, &Device::Cpu).unwrap()
}

/// `torch.randn` on the CPU generator for tensors of ≥ 16 elements: MT19937 uniforms with 24
/// bits, then Box–Muller over blocks of 16 (`normal_fill` in ATen).
struct TorchRandn(Mt);

impl TorchRandn {
    fn seeded(seed: u32) -> Self {
        Self(Mt::new(seed))
    }

    fn randn(&mut self, n: usize) -> Vec<f32> {
        assert!(n.is_multiple_of(16));
        let mut data: Vec<f32> = (0..n)
            .map(|_| ((self.0.next_u32() & 0xff_ffff) as f64 / (1u64 << 24) as f64) as f32)
            .collect();
        for block in data.chunks_mut(16) {
            for j in 0..8 {
                let u1 = 1.0 - block[j];
                let u2 = block[j + 8];
                let radius = (-2.0 * u1.ln()).sqrt();
                let theta = 2.0 * std::f32::consts::PI * u2;
                block[j] = radius * theta.cos();
                block[j + 8] = radius * theta.sin();
            }
        }
        data
    }
}

fn schedule(beta_start: f64) -> ddlab_core::schedule::NoiseSchedule {
    ScheduleConfig {
        beta_start: Some(beta_start),
        beta_end: Some(0.02),
        ..ScheduleConfig::new(ScheduleKind::Linear, 1000)
    }
    .build()
    .unwrap()
}

/// The dummy model of diffusers' tests at timestep t, read as the test's prediction type.
fn dummy(d: &Diffusion, objective: Objective, x: &Tensor, t: usize) -> Prediction {
    let out = (x * (t as f64 / (t as f64 + 1.0))).unwrap();
    d.prediction(objective, x, &out, &[t; 4]).unwrap()
}

/// Steps `k_from..k_to` of `sampler` from `x`, drawing the noise as diffusers does.
fn run_loop(
    sampler: &dyn Sampler,
    d: &Diffusion,
    objective: Objective,
    mut x: Tensor,
    steps: std::ops::Range<usize>,
) -> Tensor {
    let mut torch = TorchRandn::seeded(0);
    for k in steps {
        let t = sampler.timesteps()[k];
        let out = sampler
            .step(k, &x, &dummy(d, objective, &x, t), None, d)
            .unwrap();
        x = if out.std > 0.0 {
            let z = Tensor::from_vec(torch.randn(768), SHAPE, &Device::Cpu).unwrap();
            (out.mean + (z * out.std).unwrap()).unwrap()
        } else {
            out.mean
        };
    }
    x
}

/// The sampler equivalent to the test's scheduler and the steps it takes.
fn equivalent(case: &Value, s: &ddlab_core::schedule::NoiseSchedule) -> (Box<dyn Sampler>, usize) {
    let clip = case["clip"].as_bool().unwrap();
    match case["sampler"].as_str().unwrap() {
        // DDPMScheduler, fixed_small, every timestep.
        "ddpm" => (
            Box::new(
                Ddpm::new(
                    s,
                    1000,
                    TimestepSpacing::Trailing,
                    DdpmVariance::BetaTilde,
                    clip,
                )
                .unwrap(),
            ),
            1000,
        ),
        // DDIMScheduler: "leading" spacing, set_alpha_to_one (the last step lands on x_0), η = 0.
        "ddim" => (
            Box::new(Ddim::new(s, 10, TimestepSpacing::Leading, 0.0, clip).unwrap()),
            10,
        ),
        // DPMSolverMultistepScheduler: "linspace" timesteps 999, 899, …, 100 and
        // final_sigmas_type = "sigma_min", i.e. a last second-order step to index 0, which
        // is ddlab's chain with index 0 appended, stopped before its x̂_0 step.
        "dpmpp2m" => {
            let mut ts = vec![999, 899, 799, 699, 599, 500, 400, 300, 200, 100];
            ts.push(0);
            (
                Box::new(DpmSolverPp2m::with_timesteps(s, ts, clip).unwrap()),
                10,
            )
        }
        other => panic!("unknown sampler {other}"),
    }
}

#[test]
fn diffusers_scheduler_loops_give_diffusers_numbers() {
    let data: Value = serde_json::from_str(include_str!("data/diffusers_loops.json")).unwrap();
    for case in data["loops"].as_array().unwrap() {
        let s = schedule(case["beta_start"].as_f64().unwrap_or(1e-4));
        let d = Diffusion::new(s.clone(), &Device::Cpu);
        let objective: Objective = case["prediction"].as_str().unwrap().parse().unwrap();
        let (sampler, steps) = equivalent(case, &s);
        let start = case["start_index"].as_u64().map(|k| k as usize);
        let x = match start {
            None => deterministic(false),
            // `add_noise` at the first timestep of the loop.
            Some(k) => {
                let t = sampler.timesteps()[k];
                d.q_sample(&deterministic(false), &[t; 4], &deterministic(true))
                    .unwrap()
            }
        };
        let out = run_loop(
            sampler.as_ref(),
            &d,
            objective,
            x,
            start.unwrap_or(0)..steps,
        );
        let abs: Vec<f32> = out.abs().unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let sum: f64 = abs.iter().map(|&v| v as f64).sum();
        let mean = sum / abs.len() as f64;
        let name = case["test"].as_str().unwrap();
        eprintln!("{name}: sum {sum:.4}, mean {mean:.6}");
        if let Some(want) = case["sum"].as_f64() {
            assert!(
                (sum - want).abs() < 1e-2,
                "{name}: sum {sum}, diffusers {want}"
            );
        }
        let want = case["mean"].as_f64().unwrap();
        assert!(
            (mean - want).abs() < 1e-3,
            "{name}: mean {mean}, diffusers {want}"
        );
    }
}
