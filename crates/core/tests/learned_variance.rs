//! Learned variance (Nichol & Dhariwal 2021): the interpolation's ends are the fixed samplers,
//! the training's L_vlb term is the NLL's term, only the variance output learns from it, and a
//! short L_hybrid training learns and evaluates.

use candle_core::{DType, Device, Tensor, Var};
use ddlab_core::data::{DatasetConfig, batch_indices};
use ddlab_core::diffusion::{Diffusion, Objective, Prediction};
use ddlab_core::nll::{NllConfig, ReverseStep, bound_term_bits, nll_bpd};
use ddlab_core::nn::UNetConfig;
use ddlab_core::rng::Rng;
use ddlab_core::sampler::{Ddpm, DdpmVariance, Sampler, TimestepSpacing, UNetDenoiser};
use ddlab_core::schedule::{ScheduleConfig, ScheduleKind};
use ddlab_core::train::hybrid::vlb_bits;
use ddlab_core::train::{TrainConfig, Trainer};

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// f ≡ 0 is the β̃ sampler and f ≡ 1 the β sampler, step for step, on a respaced chain.
#[test]
fn the_ends_of_the_interpolation_are_the_fixed_samplers() {
    let dev = Device::Cpu;
    let schedule = ScheduleConfig::new(ScheduleKind::Cosine, 200)
        .build()
        .unwrap();
    let diffusion = Diffusion::new(schedule.clone(), &dev);
    let x = Rng::new(3, 0).randn((1, 1, 3, 3), &dev).unwrap();
    let x0 = (&x * 0.5).unwrap();
    let sampler = |v| Ddpm::new(&schedule, 20, TimestepSpacing::Trailing, v, false).unwrap();
    let learned = sampler(DdpmVariance::Learned);
    for (f, fixed) in [(0.0, DdpmVariance::BetaTilde), (1.0, DdpmVariance::Beta)] {
        let fixed = sampler(fixed);
        let pred = Prediction {
            var_frac: Some(Tensor::full(f as f32, x.shape(), &dev).unwrap()),
            ..Prediction::fixed(x.zeros_like().unwrap(), x0.clone())
        };
        // The last step draws no noise either way; every other one must agree.
        for k in 0..learned.timesteps().len() - 1 {
            let a = learned.step(k, &x, &pred, None, &diffusion).unwrap();
            let b = fixed.step(k, &x, &pred, None, &diffusion).unwrap();
            assert_eq!(values(&a.mean), values(&b.mean));
            for s in values(a.std_map.as_ref().unwrap()) {
                assert!(
                    (s as f64 / b.std - 1.0).abs() < 1e-5,
                    "f = {f}, step {k}: {s} vs {}",
                    b.std
                );
            }
        }
    }
}

fn random_output(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
    Rng::new(seed, 0).randn(shape, &Device::Cpu).unwrap()
}

/// The training's L_vlb term at t is the evaluation's term at t, decoder included.
#[test]
fn the_vlb_term_is_the_nll_term() {
    let dev = Device::Cpu;
    let schedule = ScheduleConfig::new(ScheduleKind::Linear, 100)
        .build()
        .unwrap();
    let diffusion = Diffusion::new(schedule, &dev);
    let x0 = (random_output((4, 1, 4, 4), 1).tanh().unwrap() * 0.9).unwrap();
    let t = [0usize, 1, 37, 99];
    let x_t = diffusion
        .q_sample(&x0, &t, &random_output((4, 1, 4, 4), 2))
        .unwrap();
    let out = (random_output((4, 2, 4, 4), 3) * 0.5).unwrap();
    let main = out.narrow(1, 0, 1).unwrap();
    let var_values = out.narrow(1, 1, 1).unwrap();
    let train = vlb_bits(
        &diffusion,
        Objective::Eps,
        &x0,
        &x_t,
        &t,
        &main,
        &var_values,
    )
    .unwrap();
    let pred = diffusion
        .prediction(Objective::Eps, &x_t, &out, &t)
        .unwrap();
    let reverse = ReverseStep {
        variance: DdpmVariance::Learned,
        clip_x0: false,
    };
    let eval = bound_term_bits(&diffusion, reverse, &x0, &x_t, pred, &t).unwrap();
    for ((a, b), t) in values(&train).iter().zip(&eval).zip(t) {
        assert!(
            (*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()),
            "t = {t}: training {a}, evaluation {b}"
        );
    }
}

/// Stop-gradient on the mean: L_vlb reaches the variance channels only.
#[test]
fn only_the_variance_output_learns_from_the_vlb() {
    let dev = Device::Cpu;
    let schedule = ScheduleConfig::new(ScheduleKind::Cosine, 100)
        .build()
        .unwrap();
    let diffusion = Diffusion::new(schedule, &dev);
    let x0 = (random_output((3, 1, 4, 4), 1).tanh().unwrap() * 0.9).unwrap();
    let t = [0usize, 20, 80];
    let x_t = diffusion
        .q_sample(&x0, &t, &random_output((3, 1, 4, 4), 2))
        .unwrap();
    let out = Var::from_tensor(&random_output((3, 2, 4, 4), 3)).unwrap();
    let main = out.narrow(1, 0, 1).unwrap();
    let var_values = out.narrow(1, 1, 1).unwrap();
    let vb = vlb_bits(
        &diffusion,
        Objective::Eps,
        &x0,
        &x_t,
        &t,
        &main,
        &var_values,
    )
    .unwrap();
    let grads = vb.sum_all().unwrap().backward().unwrap();
    let g = grads.get(out.as_tensor()).unwrap();
    let mean_part = values(&g.narrow(1, 0, 1).unwrap());
    let var_part = values(&g.narrow(1, 1, 1).unwrap());
    assert!(mean_part.iter().all(|v| *v == 0.0), "the mean got gradient");
    assert!(var_part.iter().filter(|v| v.abs() > 0.0).count() == var_part.len());
}

/// L_hybrid trains a 2C-channel U-Net whose bound then evaluates with its own Σ_θ.
#[test]
fn a_short_hybrid_training_learns_and_evaluates() {
    let dev = Device::Cpu;
    let data = DatasetConfig {
        shapes_count: 256,
        ..Default::default()
    }
    .load()
    .unwrap()
    .train;
    let cfg = UNetConfig {
        in_channels: 3,
        learn_sigma: true,
        ..UNetConfig::tiny()
    };
    let schedule = ScheduleConfig::new(ScheduleKind::Cosine, 100)
        .build()
        .unwrap();
    let train = TrainConfig {
        batch_size: 8,
        warmup_steps: 2,
        lr: 1e-3,
        seed: 11,
        ..Default::default()
    };
    let mut trainer = Trainer::new(&cfg, schedule, train, &dev).unwrap();
    let losses: Vec<f64> = (0..80)
        .map(|_| {
            let idx = batch_indices(data.len(), 8, 11, trainer.step_count());
            let x = data.batch(&idx, &dev).unwrap();
            trainer.train_step(&x, None).unwrap().loss
        })
        .collect();
    let head: f64 = losses[..10].iter().sum::<f64>() / 10.0;
    let tail: f64 = losses[70..].iter().sum::<f64>() / 10.0;
    assert!(tail < 0.8 * head, "L_hybrid {head:.4} -> {tail:.4}");
    let denoiser = UNetDenoiser {
        model: &trainer.model,
        diffusion: &trainer.diffusion,
        objective: Objective::Eps,
        cond: None,
    };
    let idx: Vec<usize> = (0..4).collect();
    let images = data
        .batch(&idx, &dev)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let nll = |variance| {
        let cfg = NllConfig {
            timesteps: 8,
            variance,
            ..NllConfig::default()
        };
        nll_bpd(
            &denoiser,
            &trainer.diffusion,
            &images,
            &cfg,
            &mut Rng::new(1, 0),
            &mut |_, _| {},
        )
        .unwrap()
        .bpd
    };
    let (learned, fixed) = (nll(DdpmVariance::Learned), nll(DdpmVariance::BetaTilde));
    assert!(learned.is_finite() && fixed.is_finite());
    assert_ne!(learned, fixed);
}
