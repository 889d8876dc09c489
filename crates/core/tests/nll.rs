//! The NLL bound: its decoder is a proper distribution, the Monte-Carlo estimate is unbiased,
//! and it is finite for a real model.

use candle_core::{Device, Tensor};
use ddlab_core::diffusion::Diffusion;
use ddlab_core::nll::{NllConfig, discretized_gaussian_log_likelihood, nll_bpd};
use ddlab_core::rng::Rng;
use ddlab_core::sampler::GaussianOracle;
use ddlab_core::schedule::{ScheduleConfig, ScheduleKind};

#[test]
fn discretized_decoder_sums_to_one_over_the_256_bins() {
    for (mean, log_scale) in [(0.0, -3.0), (0.9, -5.0), (-1.0, 0.0), (0.3, -1.0)] {
        let total: f64 = (0..256)
            .map(|k| {
                discretized_gaussian_log_likelihood(k as f64 / 127.5 - 1.0, mean, log_scale).exp()
            })
            .sum();
        assert!(
            (total - 1.0).abs() < 1e-9,
            "mean {mean} log σ {log_scale}: {total}"
        );
    }
}

fn data() -> Tensor {
    // Quantised Gaussian-ish images.
    let mut rng = Rng::new(4, 4);
    let v: Vec<f32> = rng
        .normal_vec(64 * 16)
        .into_iter()
        .map(|x| ((0.2 + 0.3 * x).clamp(-1.0, 1.0) * 127.5).round() / 127.5)
        .collect();
    Tensor::from_vec(v, (64, 1, 4, 4), &Device::Cpu).unwrap()
}

#[test]
fn the_stratified_estimate_is_unbiased() {
    let schedule = ScheduleConfig::new(ScheduleKind::Cosine, 200)
        .build()
        .unwrap();
    let d = Diffusion::new(schedule, &Device::Cpu);
    let oracle = GaussianOracle {
        diffusion: &d,
        mean: 0.2,
        std: 0.3,
    };
    let x = data();
    let exact = nll_bpd(
        &oracle,
        &d,
        &x,
        &NllConfig {
            timesteps: 1000,
            ..Default::default()
        },
        &mut Rng::new(1, 0),
        &mut |_, _| {},
    )
    .unwrap();
    assert!(exact.exact && exact.timesteps == 199);
    // The bound's terms by t partition it: prior + decoder + Σ KL buckets = the bound.
    assert_eq!(exact.kl_by_t.len(), 10);
    let parts = exact.prior_bpd + exact.decoder_bpd + exact.kl_by_t.iter().sum::<f64>();
    assert!((parts - exact.bpd).abs() < 1e-9, "{parts} vs {}", exact.bpd);
    // Average several independent cheap estimates: their mean must approach the exact value.
    let mut means = vec![];
    for seed in 0..6 {
        let est = nll_bpd(
            &oracle,
            &d,
            &x,
            &NllConfig {
                timesteps: 8,
                ..Default::default()
            },
            &mut Rng::new(seed, 0),
            &mut |_, _| {},
        )
        .unwrap();
        assert!(!est.exact && est.stderr > 0.0);
        means.push(est.bpd);
    }
    let m = means.iter().sum::<f64>() / means.len() as f64;
    assert!(
        (m - exact.bpd).abs() < 0.03 * exact.bpd.abs().max(0.1),
        "MC {m} vs exact {}",
        exact.bpd
    );
    assert!(exact.bpd.is_finite() && exact.bpd > 0.0);
    assert!(
        exact.prior_bpd < 1e-3,
        "cosine ᾱ_T ≈ 0: prior term {}",
        exact.prior_bpd
    );
}

#[test]
fn the_bound_prefers_the_right_model() {
    // The exact denoiser of the data's own distribution scores better than a wrong one.
    let schedule = ScheduleConfig::new(ScheduleKind::Linear, 100)
        .build()
        .unwrap();
    let d = Diffusion::new(schedule, &Device::Cpu);
    let x = data();
    let cfg = NllConfig {
        timesteps: 1000,
        ..Default::default()
    };
    let right = GaussianOracle {
        diffusion: &d,
        mean: 0.2,
        std: 0.3,
    };
    let wrong = GaussianOracle {
        diffusion: &d,
        mean: -0.4,
        std: 0.8,
    };
    let a = nll_bpd(&right, &d, &x, &cfg, &mut Rng::new(1, 0), &mut |_, _| {}).unwrap();
    let b = nll_bpd(&wrong, &d, &x, &cfg, &mut Rng::new(1, 0), &mut |_, _| {}).unwrap();
    assert!(a.bpd + 0.5 < b.bpd, "{} vs {}", a.bpd, b.bpd);
}
