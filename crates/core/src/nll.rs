//! Negative log-likelihood in bits/dim through the variational bound (Ho et al. 2020, eq. 5):
//!
//!   L = L_T + Σ_{t=2..T} L_{t−1} + L_0,
//!
//! L_T = KL(q(x_T|x_0) ‖ N(0, I)), L_{t−1} = KL(q(x_{t−1}|x_t, x_0) ‖ p_θ(x_{t−1}|x_t)) and
//! L_0 = −log p_θ(x_0|x_1) under Ho's discretised Gaussian decoder over 256 bins.
//!
//! When fewer than T−1 timesteps are asked for, the middle sum is estimated without bias by
//! stratified sampling: {2..T} is cut into K equal strata, one t is drawn from each per image and
//! weighted by its stratum's size. Each image gets its own draws, so the standard error across
//! images covers both the data and the Monte-Carlo spread.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::f64::consts::LN_2;

use crate::diffusion::Diffusion;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::sampler::{DdpmVariance, Denoiser};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NllConfig {
    /// Timesteps from {2..T} per image; ≥ T−1 evaluates every one.
    pub timesteps: usize,
    /// The decoder's and reverse steps' variance.
    pub variance: DdpmVariance,
    /// Clip the x_0 prediction to [-1, 1] before forming the reverse mean.
    pub clip_x0: bool,
    /// Model evaluations per forward pass.
    pub batch_size: usize,
}

impl Default for NllConfig {
    fn default() -> Self {
        Self {
            timesteps: 50,
            variance: DdpmVariance::BetaTilde,
            clip_x0: true,
            batch_size: 128,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NllResult {
    /// Mean bound over the images, bits/dim.
    pub bpd: f64,
    /// Standard error of that mean.
    pub stderr: f64,
    pub images: usize,
    /// Timesteps drawn per image from {2..T} (T−1 when exact).
    pub timesteps: usize,
    /// True when every timestep was evaluated.
    pub exact: bool,
    /// Mean of the prior term L_T and the decoder term L_0 (bits/dim).
    pub prior_bpd: f64,
    pub decoder_bpd: f64,
}

/// One model evaluation: image `image`, timestep index `t`, weight of its term.
struct Job {
    image: usize,
    t: usize,
    weight: f64,
}

/// Bits/dim of `data` (N, C, H, W) in [-1, 1], quantised to 256 levels.
pub fn nll_bpd(
    denoiser: &dyn Denoiser,
    diffusion: &Diffusion,
    data: &Tensor,
    cfg: &NllConfig,
    rng: &mut Rng,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<NllResult> {
    let s = &diffusion.schedule;
    let t_steps = s.len();
    let n = data.dim(0)?;
    if n == 0 {
        return Err(Error::InvalidDataset(
            "no images to evaluate the NLL on".into(),
        ));
    }
    if cfg.timesteps == 0 || cfg.batch_size == 0 {
        return Err(Error::InvalidTraining(
            "NLL timesteps and batch size must be positive".into(),
        ));
    }
    let dims = data.elem_count() / n;
    let data = data.to_dtype(DType::F32)?;
    let data_cpu: Vec<f32> = data.flatten_all()?.to_vec1()?;

    // Which terms to evaluate, image by image.
    let middle = t_steps.saturating_sub(1); // |{2..T}|
    let exact = cfg.timesteps >= middle;
    let k = if exact { middle } else { cfg.timesteps };
    let mut jobs = Vec::with_capacity(n * (k + 1));
    for image in 0..n {
        jobs.push(Job {
            image,
            t: 0,
            weight: 1.0,
        });
        if exact {
            jobs.extend((1..t_steps).map(|t| Job {
                image,
                t,
                weight: 1.0,
            }));
        } else {
            for stratum in 0..k {
                let lo = 1 + stratum * middle / k;
                let hi = 1 + (stratum + 1) * middle / k;
                let t = lo + rng.below(hi - lo);
                jobs.push(Job {
                    image,
                    t,
                    weight: (hi - lo) as f64,
                });
            }
        }
    }

    // Variance of p(x_{t−1} | x_t) at index t, in log form.
    let model_logvar = |t: usize| -> f64 {
        match cfg.variance {
            DdpmVariance::BetaTilde => s.posterior_log_variance_clipped[t],
            DdpmVariance::Beta => {
                if t == 0 && t_steps > 1 {
                    s.posterior_variance[1].ln()
                } else {
                    s.betas[t].ln()
                }
            }
        }
    };

    let mut totals = vec![0f64; n];
    let mut decoder = vec![0f64; n];
    // Prior term, closed form.
    let ab_t = s.alpha_bars[t_steps - 1];
    for (i, total) in totals.iter_mut().enumerate() {
        let x = &data_cpu[i * dims..(i + 1) * dims];
        let kl: f64 = x
            .iter()
            .map(|&v| normal_kl(ab_t.sqrt() * v as f64, (1.0 - ab_t).ln(), 0.0, 0.0))
            .sum();
        *total += kl / dims as f64 / LN_2;
    }
    let prior_bpd = totals.iter().sum::<f64>() / n as f64;

    let device = diffusion.device();
    let data_dev = data.to_device(device)?;
    let n_jobs = jobs.len();
    for (done, chunk) in jobs.chunks(cfg.batch_size).enumerate() {
        let idx: Vec<u32> = chunk.iter().map(|j| j.image as u32).collect();
        let idx = Tensor::new(idx.as_slice(), device)?;
        let x0 = data_dev.index_select(&idx, 0)?;
        let ts: Vec<usize> = chunk.iter().map(|j| j.t).collect();
        let noise = rng.randn(x0.shape(), device)?;
        let x_t = diffusion.q_sample(&x0, &ts, &noise)?;
        let pred = denoiser.predict(&x_t, &ts)?;
        let x0_hat = if cfg.clip_x0 {
            pred.x0.clamp(-1f32, 1f32)?
        } else {
            pred.x0
        };
        let mu_p: Vec<f32> = diffusion
            .q_posterior_mean(&x0_hat, &x_t, &ts)?
            .flatten_all()?
            .to_vec1()?;
        let mu_q: Vec<f32> = diffusion
            .q_posterior_mean(&x0, &x_t, &ts)?
            .flatten_all()?
            .to_vec1()?;
        for (r, job) in chunk.iter().enumerate() {
            let (mp, mq) = (
                &mu_p[r * dims..(r + 1) * dims],
                &mu_q[r * dims..(r + 1) * dims],
            );
            let lv_p = model_logvar(job.t);
            let bits = if job.t == 0 {
                let x = &data_cpu[job.image * dims..(job.image + 1) * dims];
                let ll: f64 = x
                    .iter()
                    .zip(mp)
                    .map(|(&xv, &m)| {
                        discretized_gaussian_log_likelihood(xv as f64, m as f64, 0.5 * lv_p)
                    })
                    .sum();
                let b = -ll / dims as f64 / LN_2;
                decoder[job.image] = b;
                b
            } else {
                let lv_q = s.posterior_log_variance_clipped[job.t];
                let kl: f64 = mq
                    .iter()
                    .zip(mp)
                    .map(|(&a, &b)| normal_kl(a as f64, lv_q, b as f64, lv_p))
                    .sum();
                kl / dims as f64 / LN_2
            };
            totals[job.image] += job.weight * bits;
        }
        on_progress(((done + 1) * cfg.batch_size).min(n_jobs), n_jobs);
    }

    let mean = totals.iter().sum::<f64>() / n as f64;
    let var = if n > 1 {
        totals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    if !mean.is_finite() {
        return Err(Error::InvalidTraining(
            "the NLL bound is not finite: the model produced non-finite predictions".into(),
        ));
    }
    Ok(NllResult {
        bpd: mean,
        stderr: (var / n as f64).sqrt(),
        images: n,
        timesteps: k,
        exact,
        prior_bpd,
        decoder_bpd: decoder.iter().sum::<f64>() / n as f64,
    })
}

/// KL(N(m1, e^{lv1}) ‖ N(m2, e^{lv2})) in nats, one dimension.
pub fn normal_kl(m1: f64, lv1: f64, m2: f64, lv2: f64) -> f64 {
    0.5 * (-1.0 + lv2 - lv1 + (lv1 - lv2).exp() + (m1 - m2).powi(2) * (-lv2).exp())
}

/// Standard normal CDF, accurate in both tails.
fn std_normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// log P(x) for x ∈ [-1, 1] on a 256-level grid under N(mean, e^{2·log_scale}): the mass of the
/// bin of width 2/255 around x, with the two edge bins extended to ±∞ (Ho et al. 2020, eq. 13).
pub fn discretized_gaussian_log_likelihood(x: f64, mean: f64, log_scale: f64) -> f64 {
    let inv_std = (-log_scale).exp();
    let centered = x - mean;
    let upper = inv_std * (centered + 1.0 / 255.0);
    let lower = inv_std * (centered - 1.0 / 255.0);
    let p = if x < -0.999 {
        std_normal_cdf(upper)
    } else if x > 0.999 {
        // 1 − Φ(lower) = Φ(−lower), computed without cancellation.
        std_normal_cdf(-lower)
    } else {
        // Φ(upper) − Φ(lower), taken on the side of the mean where it does not cancel.
        if lower > 0.0 {
            std_normal_cdf(-lower) - std_normal_cdf(-upper)
        } else {
            std_normal_cdf(upper) - std_normal_cdf(lower)
        }
    };
    p.max(1e-12).ln()
}
