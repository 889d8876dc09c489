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

use crate::diffusion::{Diffusion, Prediction};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::sampler::{DdpmVariance, Denoiser};
use crate::schedule::NoiseSchedule;

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
    /// Equal buckets of t ∈ [0, T) the KL terms are summed into (`NllResult::kl_by_t`).
    #[serde(default = "default_term_buckets")]
    pub term_buckets: usize,
}

fn default_term_buckets() -> usize {
    10
}

impl Default for NllConfig {
    fn default() -> Self {
        Self {
            timesteps: 50,
            variance: DdpmVariance::BetaTilde,
            clip_x0: true,
            batch_size: 128,
            term_buckets: default_term_buckets(),
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
    /// The middle terms L_{t−1} (t = 2..T) summed by equal buckets of the timestep index over
    /// [0, T), mean over images, bits/dim: with the prior and decoder terms they add up to
    /// `bpd`. Estimated like `bpd` when not exact. Empty in results recorded before it existed.
    #[serde(default)]
    pub kl_by_t: Vec<f64>,
}

/// The bucket of timestep index `t` among `buckets` equal buckets of [0, `t_steps`).
pub fn t_bucket(t: usize, t_steps: usize, buckets: usize) -> usize {
    (t * buckets / t_steps.max(1)).min(buckets.saturating_sub(1))
}

/// One model evaluation: image `image`, timestep index `t`, weight of its term.
struct Job {
    image: usize,
    t: usize,
    weight: f64,
}

/// The terms to evaluate, image by image: the decoder term, then every timestep of {2..T}
/// (`exact`) or one drawn from each of `k` strata.
struct Terms {
    jobs: Vec<Job>,
    k: usize,
    exact: bool,
}

impl Terms {
    fn draw(n: usize, t_steps: usize, timesteps: usize, rng: &mut Rng) -> Self {
        let middle = t_steps.saturating_sub(1); // |{2..T}|
        let exact = timesteps >= middle;
        let k = if exact { middle } else { timesteps };
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
        Self { jobs, k, exact }
    }
}

/// Variance of p(x_{t−1} | x_t) at index t, in log form, for a fixed variance.
fn model_logvar(s: &NoiseSchedule, variance: DdpmVariance, t: usize) -> f64 {
    match variance {
        // A learned variance comes per pixel from the network (`Evaluation::log_variances`).
        DdpmVariance::BetaTilde | DdpmVariance::Learned => s.posterior_log_variance_clipped[t],
        DdpmVariance::Beta => {
            if t == 0 && s.len() > 1 {
                s.posterior_variance[1].ln()
            } else {
                s.betas[t].ln()
            }
        }
    }
}

/// The prior term L_T of each of the `n` images of `data` (rows of `dims`), bits/dim, in
/// closed form.
fn prior_bits(s: &NoiseSchedule, data: &[f32], n: usize, dims: usize) -> Vec<f64> {
    let mut totals = vec![0f64; n];
    let ab_t = s.alpha_bars[s.len() - 1];
    for (i, total) in totals.iter_mut().enumerate() {
        let x = &data[i * dims..(i + 1) * dims];
        let kl: f64 = x
            .iter()
            .map(|&v| normal_kl(ab_t.sqrt() * v as f64, (1.0 - ab_t).ln(), 0.0, 0.0))
            .sum();
        *total += kl / dims as f64 / LN_2;
    }
    totals
}

/// What every chunk of model evaluations reads.
struct Evaluation<'a> {
    denoiser: &'a dyn Denoiser,
    diffusion: &'a Diffusion,
    cfg: &'a NllConfig,
    /// The images on the model's device.
    data: Tensor,
}

impl Evaluation<'_> {
    /// Bits/dim of each job of `chunk`: the decoder term L_0 for t = 0, else L_{t−1}.
    fn chunk_bits(&self, chunk: &[Job], rng: &mut Rng) -> Result<Vec<f64>> {
        let (diffusion, device) = (self.diffusion, self.diffusion.device());
        let idx: Vec<u32> = chunk.iter().map(|j| j.image as u32).collect();
        let idx = Tensor::new(idx.as_slice(), device)?;
        let x0 = self.data.index_select(&idx, 0)?;
        let ts: Vec<usize> = chunk.iter().map(|j| j.t).collect();
        let noise = rng.randn(x0.shape(), device)?;
        let x_t = diffusion.q_sample(&x0, &ts, &noise)?;
        let pred = self.denoiser.predict(&x_t, &ts)?;
        let reverse = ReverseStep {
            variance: self.cfg.variance,
            clip_x0: self.cfg.clip_x0,
        };
        bound_term_bits(diffusion, reverse, &x0, &x_t, pred, &ts)
    }
}

/// How the reverse step p(x_{t−1} | x_t) is formed from a prediction.
#[derive(Debug, Clone, Copy)]
pub struct ReverseStep {
    pub variance: DdpmVariance,
    /// Clip x̂_0 to [-1, 1] before forming the mean.
    pub clip_x0: bool,
}

/// One term of the bound per row, bits/dim: the decoder term L_0 = −log p(x_0 | x_1) where
/// t = 0, else L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p(x_{t−1} | x_t)). `x0` are the data rows
/// x_t was drawn from and `pred` the denoiser's output at x_t.
pub fn bound_term_bits(
    diffusion: &Diffusion,
    reverse: ReverseStep,
    x0: &Tensor,
    x_t: &Tensor,
    pred: Prediction,
    ts: &[usize],
) -> Result<Vec<f64>> {
    let x0_hat = if reverse.clip_x0 {
        pred.x0.clamp(-1f32, 1f32)?
    } else {
        pred.x0
    };
    let rows_of = |t: Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1()?) };
    let mu_p = rows_of(diffusion.q_posterior_mean(&x0_hat, x_t, ts)?)?;
    let mu_q = rows_of(diffusion.q_posterior_mean(x0, x_t, ts)?)?;
    let data = rows_of(x0.to_dtype(DType::F32)?)?;
    let log_vars = match reverse.variance {
        DdpmVariance::Learned => {
            let frac = pred.var_frac.as_ref().ok_or_else(|| {
                Error::InvalidNll(
                    "variance = learned needs a network trained with variance = learned".into(),
                )
            })?;
            Some(rows_of(diffusion.learned_log_variance(frac, ts)?)?)
        }
        _ => None,
    };
    let dims = data.len() / ts.len().max(1);
    let s = &diffusion.schedule;
    Ok(ts
        .iter()
        .enumerate()
        .map(|(r, &t)| {
            let rows = r * dims..(r + 1) * dims;
            let lv_p = match &log_vars {
                Some(lv) => LogVar::PerPixel(&lv[rows.clone()]),
                None => LogVar::Fixed(model_logvar(s, reverse.variance, t)),
            };
            let means = (&mu_p[rows.clone()], &mu_q[rows.clone()]);
            term_bits(s, t, &data[rows], means, lv_p)
        })
        .collect())
}

/// Bits/dim of one row at index t from the data `x`, the reverse mean and the posterior mean
/// (`means`), and the reverse log variance.
fn term_bits(s: &NoiseSchedule, t: usize, x: &[f32], means: (&[f32], &[f32]), lv_p: LogVar) -> f64 {
    let (mp, mq) = means;
    let dims = x.len() as f64;
    if t == 0 {
        let ll: f64 = x
            .iter()
            .zip(mp)
            .enumerate()
            .map(|(i, (&xv, &m))| {
                discretized_gaussian_log_likelihood(xv as f64, m as f64, 0.5 * lv_p.at(i))
            })
            .sum();
        return -ll / dims / LN_2;
    }
    let lv_q = s.posterior_log_variance_clipped[t];
    let kl: f64 = mq
        .iter()
        .zip(mp)
        .enumerate()
        .map(|(i, (&a, &b))| normal_kl(a as f64, lv_q, b as f64, lv_p.at(i)))
        .sum();
    kl / dims / LN_2
}

/// The reverse step's log variance: one value, or one per pixel from the network.
#[derive(Clone, Copy)]
enum LogVar<'a> {
    Fixed(f64),
    PerPixel(&'a [f32]),
}

impl LogVar<'_> {
    fn at(self, i: usize) -> f64 {
        match self {
            LogVar::Fixed(v) => v,
            LogVar::PerPixel(v) => v[i] as f64,
        }
    }
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
    let n = data.dim(0)?;
    if n == 0 {
        return Err(Error::InvalidDataset(
            "no images to evaluate the NLL on".into(),
        ));
    }
    if cfg.timesteps == 0 || cfg.batch_size == 0 {
        return Err(Error::InvalidNll(
            "NLL timesteps and batch size must be positive".into(),
        ));
    }
    let dims = data.elem_count() / n;
    let data = data.to_dtype(DType::F32)?;
    let data_cpu: Vec<f32> = data.flatten_all()?.to_vec1()?;
    let terms = Terms::draw(n, s.len(), cfg.timesteps, rng);
    let mut totals = prior_bits(s, &data_cpu, n, dims);
    let prior_bpd = totals.iter().sum::<f64>() / n as f64;
    let mut decoder = vec![0f64; n];
    let buckets = cfg.term_buckets.max(1);
    let mut kl_by_t = vec![0f64; buckets];
    let eval = Evaluation {
        denoiser,
        diffusion,
        cfg,
        data: data.to_device(diffusion.device())?,
    };
    let n_jobs = terms.jobs.len();
    for (done, chunk) in terms.jobs.chunks(cfg.batch_size).enumerate() {
        let bits = eval.chunk_bits(chunk, rng)?;
        for (job, b) in chunk.iter().zip(bits) {
            if job.t == 0 {
                decoder[job.image] = b;
            } else {
                kl_by_t[t_bucket(job.t, s.len(), buckets)] += job.weight * b / n as f64;
            }
            totals[job.image] += job.weight * b;
        }
        on_progress(((done + 1) * cfg.batch_size).min(n_jobs), n_jobs);
    }
    let mut r = summarise(&totals, &decoder, prior_bpd, &terms)?;
    r.kl_by_t = kl_by_t;
    Ok(r)
}

/// The mean bound over the images and its standard error.
fn summarise(totals: &[f64], decoder: &[f64], prior_bpd: f64, terms: &Terms) -> Result<NllResult> {
    let n = totals.len();
    let mean = totals.iter().sum::<f64>() / n as f64;
    let var = if n > 1 {
        totals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    if !mean.is_finite() {
        return Err(Error::InvalidNll(
            "the NLL bound is not finite: the model produced non-finite predictions".into(),
        ));
    }
    Ok(NllResult {
        bpd: mean,
        stderr: (var / n as f64).sqrt(),
        images: n,
        timesteps: terms.k,
        exact: terms.exact,
        prior_bpd,
        decoder_bpd: decoder.iter().sum::<f64>() / n as f64,
        kl_by_t: Vec::new(),
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
