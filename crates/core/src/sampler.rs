//! Reverse-process samplers. Every sampler implements [`Sampler`]: it visits a respaced
//! subsequence of S ≤ T timesteps and maps x_t plus the denoiser's prediction to the next x.
//! Classifier (e.g. CLIP) guidance enters each step as a gradient g = s·∇ₓ log p(c | x_t), which
//! each sampler applies in its own parameterisation, in guided-diffusion's order: DDPM shifts
//! the mean by Σ·g (Dhariwal & Nichol 2021, GLIDE), DDIM shifts ε by −√(1−ᾱ_t)·g after x̂_0 is
//! clipped.

use candle_core::{Shape, Tensor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::diffusion::{Diffusion, Prediction};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::schedule::NoiseSchedule;

mod dpm_solver;
pub use dpm_solver::DpmSolverPp2m;

/// How S sampling timesteps are picked from 0..T (diffusers' `timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TimestepSpacing {
    /// `round(linspace(0, T−1, S))`.
    Linspace,
    /// `arange(S) · (T div S)`: starts at 0, may stop short of T−1.
    Leading,
    /// `round(arange(T, 0, −T/S)) − 1`: always includes T−1 (Lin et al. 2023).
    #[default]
    Trailing,
}

impl FromStr for TimestepSpacing {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "linspace" => Ok(Self::Linspace),
            "leading" => Ok(Self::Leading),
            "trailing" => Ok(Self::Trailing),
            _ => Err(Error::InvalidSampler(format!(
                "unknown timestep spacing `{s}` (expected linspace, leading or trailing)"
            ))),
        }
    }
}

impl fmt::Display for TimestepSpacing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Linspace => "linspace",
            Self::Leading => "leading",
            Self::Trailing => "trailing",
        })
    }
}

/// The S timestep indices (0-based) a sampler visits, in increasing order.
pub fn spaced_timesteps(t_steps: usize, s: usize, spacing: TimestepSpacing) -> Result<Vec<usize>> {
    if s == 0 || s > t_steps {
        return Err(Error::InvalidSampler(format!(
            "sampling steps S = {s} must be between 1 and T = {t_steps}"
        )));
    }
    let mut v: Vec<usize> = match spacing {
        TimestepSpacing::Linspace => crate::schedule::linspace(0.0, (t_steps - 1) as f64, s)
            .into_iter()
            .map(|x| x.round_ties_even() as usize)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = t_steps / s;
            (0..s).map(|i| i * ratio).collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = t_steps as f64 / s as f64;
            (0..s)
                .map(|k| (t_steps as f64 - k as f64 * ratio).round_ties_even() as usize - 1)
                .collect()
        }
    };
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// DDPM's reverse-step variance σ_t².
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DdpmVariance {
    /// σ_t² = β̃_t, the posterior variance ("fixed small"). Optimal for deterministic x_0.
    #[default]
    BetaTilde,
    /// σ_t² = β_t ("fixed large"). Optimal for x_0 ~ N(0, I). At t = 1, β̃_2 as in
    /// improved-diffusion, for a better decoder likelihood.
    Beta,
    /// Σ_θ learned per pixel between β̃_t and β_t (Nichol & Dhariwal 2021); needs a network
    /// trained with it.
    Learned,
}

impl FromStr for DdpmVariance {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "beta-tilde" | "small" | "fixed-small" => Ok(Self::BetaTilde),
            "beta" | "large" | "fixed-large" => Ok(Self::Beta),
            "learned" | "learned-range" => Ok(Self::Learned),
            _ => Err(Error::InvalidSampler(format!(
                "unknown DDPM variance `{s}` (expected beta-tilde, beta or learned)"
            ))),
        }
    }
}

impl fmt::Display for DdpmVariance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BetaTilde => "beta-tilde",
            Self::Beta => "beta",
            Self::Learned => "learned",
        })
    }
}

/// Which sampler a user picked; [`SamplerConfig`] holds its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SamplerKind {
    /// Ancestral sampling (Ho et al. 2020).
    Ddpm,
    /// DDIM (Song et al. 2021), η interpolating to DDPM.
    #[default]
    Ddim,
    /// DPM-Solver++(2M) (Lu et al. 2022): second-order multistep in the data-prediction form.
    Dpmpp2m,
}

impl SamplerKind {
    pub const ALL: [SamplerKind; 3] = [SamplerKind::Ddpm, SamplerKind::Ddim, SamplerKind::Dpmpp2m];

    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Ddim => "ddim",
            SamplerKind::Dpmpp2m => "dpmpp2m",
        }
    }

    /// Sampling steps when none are given: all T for DDPM, whose quality falls quickly with
    /// fewer; min(T, 50) for DDIM, which holds up at 50 (Song et al. 2021, Table 1); min(T, 20)
    /// for DPM-Solver++, whose second order converges by 15–20 (Lu et al. 2022).
    pub fn default_steps(self, t: usize) -> usize {
        match self {
            SamplerKind::Ddpm => t,
            SamplerKind::Ddim => t.min(50),
            SamplerKind::Dpmpp2m => t.min(20),
        }
    }
}

impl FromStr for SamplerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                Error::InvalidSampler(format!(
                    "unknown sampler `{s}` (expected ddpm, ddim or dpmpp2m)"
                ))
            })
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every sampler setting a user can give; [`SamplerConfig::with_defaults`] fills the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerOptions {
    pub kind: SamplerKind,
    /// S ≤ T; `None` for the kind's default.
    pub steps: Option<usize>,
    pub spacing: TimestepSpacing,
    /// DDIM only.
    pub eta: f64,
    /// DDPM only.
    pub variance: DdpmVariance,
    pub clip_x0: bool,
}

/// Which sampler and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SamplerConfig {
    Ddpm {
        steps: usize,
        spacing: TimestepSpacing,
        variance: DdpmVariance,
        clip_x0: bool,
    },
    Ddim {
        steps: usize,
        spacing: TimestepSpacing,
        eta: f64,
        clip_x0: bool,
    },
    Dpmpp2m {
        steps: usize,
        spacing: TimestepSpacing,
        clip_x0: bool,
    },
}

impl SamplerConfig {
    /// The sampler `o` asks for on a schedule of `t` steps (values are checked by `build`).
    pub fn with_defaults(o: &SamplerOptions, t: usize) -> Self {
        let steps = o.steps.unwrap_or(o.kind.default_steps(t));
        match o.kind {
            SamplerKind::Ddpm => SamplerConfig::Ddpm {
                steps,
                spacing: o.spacing,
                variance: o.variance,
                clip_x0: o.clip_x0,
            },
            SamplerKind::Ddim => SamplerConfig::Ddim {
                steps,
                spacing: o.spacing,
                eta: o.eta,
                clip_x0: o.clip_x0,
            },
            SamplerKind::Dpmpp2m => SamplerConfig::Dpmpp2m {
                steps,
                spacing: o.spacing,
                clip_x0: o.clip_x0,
            },
        }
    }

    pub fn build(&self, schedule: &NoiseSchedule) -> Result<Box<dyn Sampler>> {
        Ok(match *self {
            SamplerConfig::Ddpm {
                steps,
                spacing,
                variance,
                clip_x0,
            } => Box::new(Ddpm::new(schedule, steps, spacing, variance, clip_x0)?),
            SamplerConfig::Ddim {
                steps,
                spacing,
                eta,
                clip_x0,
            } => Box::new(Ddim::new(schedule, steps, spacing, eta, clip_x0)?),
            SamplerConfig::Dpmpp2m {
                steps,
                spacing,
                clip_x0,
            } => Box::new(DpmSolverPp2m::new(schedule, steps, spacing, clip_x0)?),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            SamplerConfig::Ddpm { .. } => "ddpm",
            SamplerConfig::Ddim { .. } => "ddim",
            SamplerConfig::Dpmpp2m { .. } => "dpmpp2m",
        }
    }

    pub fn steps(&self) -> usize {
        match *self {
            SamplerConfig::Ddpm { steps, .. }
            | SamplerConfig::Ddim { steps, .. }
            | SamplerConfig::Dpmpp2m { steps, .. } => steps,
        }
    }
}

/// The Gaussian the next x is drawn from: mean + std·z, or mean + std_map ⊙ z when the
/// variance is learned per pixel (`std` is then 0).
#[derive(Debug, Clone)]
pub struct StepOutput {
    pub mean: Tensor,
    pub std: f64,
    pub std_map: Option<Tensor>,
}

impl StepOutput {
    /// The same standard deviation for every pixel.
    pub fn scalar(mean: Tensor, std: f64) -> Self {
        Self {
            mean,
            std,
            std_map: None,
        }
    }
}

/// One reverse process.
pub trait Sampler: Send + Sync {
    fn name(&self) -> &'static str;

    /// The schedule indices visited, noisiest first; the model is evaluated at each.
    fn timesteps(&self) -> &[usize];

    /// Step `k` (0 = the first, at `timesteps()[0]`): from x_t and the prediction at that
    /// timestep, the mean and standard deviation of the next x (x_0 after the last step).
    /// `guidance` is s·∇ₓ log p(c | x_t).
    fn step(
        &self,
        k: usize,
        x_t: &Tensor,
        pred: &Prediction,
        guidance: Option<&Tensor>,
        diffusion: &Diffusion,
    ) -> Result<StepOutput>;
}

/// DDPM ancestral sampling (Ho et al. 2020) on a respaced chain: for S < T the chain over the
/// visited timesteps τ has β'_k = 1 − ᾱ_{τ_k}/ᾱ_{τ_{k−1}} (improved-diffusion's respacing).
pub struct Ddpm {
    timesteps_desc: Vec<usize>,
    /// The respaced chain, indexed by position in the increasing timestep list.
    chain: NoiseSchedule,
    variance: DdpmVariance,
    clip_x0: bool,
}

impl Ddpm {
    pub fn new(
        schedule: &NoiseSchedule,
        steps: usize,
        spacing: TimestepSpacing,
        variance: DdpmVariance,
        clip_x0: bool,
    ) -> Result<Self> {
        let ts = spaced_timesteps(schedule.len(), steps, spacing)?;
        let chain = schedule.respaced(&ts)?;
        Ok(Self {
            timesteps_desc: ts.into_iter().rev().collect(),
            chain,
            variance,
            clip_x0,
        })
    }

    /// The Σ that scales the guidance shift Σ·g at chain position j: guided-diffusion's
    /// `model_variance`, which for β̃ is the unclipped posterior variance, 0 at the last step
    /// (x_0 gets no guidance); the noise itself uses the clipped value of [`Self::sigma2`].
    fn guidance_variance(&self, j: usize) -> f64 {
        match self.variance {
            DdpmVariance::BetaTilde => self.chain.posterior_variance[j],
            DdpmVariance::Beta | DdpmVariance::Learned => self.sigma2(j),
        }
    }

    /// σ² of chain position j.
    fn sigma2(&self, j: usize) -> f64 {
        let c = &self.chain;
        match self.variance {
            // A learned variance never gets here (`learned_step`); its v = 0 end is β̃.
            DdpmVariance::BetaTilde | DdpmVariance::Learned => {
                c.posterior_log_variance_clipped[j].exp()
            }
            DdpmVariance::Beta => {
                if j == 0 && c.len() > 1 {
                    c.posterior_variance[1]
                } else {
                    c.betas[j]
                }
            }
        }
    }
}

impl Sampler for Ddpm {
    fn name(&self) -> &'static str {
        "ddpm"
    }

    fn timesteps(&self) -> &[usize] {
        &self.timesteps_desc
    }

    fn step(
        &self,
        k: usize,
        x_t: &Tensor,
        pred: &Prediction,
        guidance: Option<&Tensor>,
        _diffusion: &Diffusion,
    ) -> Result<StepOutput> {
        let j = self.timesteps_desc.len() - 1 - k;
        let c = &self.chain;
        let x0 = if self.clip_x0 {
            pred.x0.clamp(-1f32, 1f32)?
        } else {
            pred.x0.clone()
        };
        let mean = ((&x0 * c.posterior_mean_coef1[j])? + (x_t * c.posterior_mean_coef2[j])?)?;
        if self.variance == DdpmVariance::Learned {
            return self.learned_step(j, mean, pred, guidance);
        }
        let sigma2 = self.sigma2(j);
        let mean = match guidance {
            Some(g) => (mean + (g * self.guidance_variance(j))?)?,
            None => mean,
        };
        // No noise on the last step (x_0 is the mean).
        let std = if j == 0 { 0.0 } else { sigma2.sqrt() };
        Ok(StepOutput::scalar(mean, std))
    }
}

impl Ddpm {
    /// A step with the network's own Σ_θ: log Σ = f·log β'_j + (1−f)·log β̃'_j on the respaced
    /// chain (improved-diffusion's `respace.py` hands the respaced β to the same formula).
    fn learned_step(
        &self,
        j: usize,
        mean: Tensor,
        pred: &Prediction,
        guidance: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let frac = pred.var_frac.as_ref().ok_or_else(|| {
            Error::InvalidSampler(
                "variance = learned needs a network trained with variance = learned".into(),
            )
        })?;
        let c = &self.chain;
        let (max_log, min_log) = (c.betas[j].ln(), c.posterior_log_variance_clipped[j]);
        let var = ((frac * (max_log - min_log))? + min_log)?.exp()?;
        let mean = match guidance {
            Some(g) => (mean + (g * &var)?)?,
            None => mean,
        };
        let std_map = if j == 0 { None } else { Some(var.sqrt()?) };
        Ok(StepOutput {
            mean,
            std: 0.0,
            std_map,
        })
    }
}

/// DDIM (Song et al. 2021) with stochasticity η (0: deterministic; 1: DDPM-like variance).
pub struct Ddim {
    timesteps_desc: Vec<usize>,
    eta: f64,
    clip_x0: bool,
}

impl Ddim {
    pub fn new(
        schedule: &NoiseSchedule,
        steps: usize,
        spacing: TimestepSpacing,
        eta: f64,
        clip_x0: bool,
    ) -> Result<Self> {
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(Error::InvalidSampler(format!("DDIM η = {eta} must be ≥ 0")));
        }
        let ts = spaced_timesteps(schedule.len(), steps, spacing)?;
        Ok(Self {
            timesteps_desc: ts.into_iter().rev().collect(),
            eta,
            clip_x0,
        })
    }
}

impl Sampler for Ddim {
    fn name(&self) -> &'static str {
        "ddim"
    }

    fn timesteps(&self) -> &[usize] {
        &self.timesteps_desc
    }

    fn step(
        &self,
        k: usize,
        x_t: &Tensor,
        pred: &Prediction,
        guidance: Option<&Tensor>,
        diffusion: &Diffusion,
    ) -> Result<StepOutput> {
        let s = &diffusion.schedule;
        let t = self.timesteps_desc[k];
        let ab = s.alpha_bars[t];
        let ab_prev = match self.timesteps_desc.get(k + 1) {
            Some(&tp) => s.alpha_bars[tp],
            None => 1.0,
        };
        let (mut eps, mut x0) = (pred.eps.clone(), pred.x0.clone());
        // guided-diffusion's order (`ddim_sample` → `condition_score`): clip x̂_0 and re-derive
        // ε from it, then shift ε by the guidance and never clip again, so pixels whose x̂_0
        // sits at ±1 are still guided.
        if self.clip_x0 {
            x0 = x0.clamp(-1f32, 1f32)?;
            eps = ((x_t - (&x0 * ab.sqrt())?)? / (1.0 - ab).sqrt())?;
        }
        if let Some(g) = guidance {
            // ε̂ = ε − √(1−ᾱ_t)·g, and the x_0 it implies, x̂_0 = x_0 + (1−ᾱ_t)/√ᾱ_t · g.
            eps = (eps - (g * (1.0 - ab).sqrt())?)?;
            x0 = guided_x0(x0, g, ab)?;
        }
        let sigma = self.eta
            * ((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev))
                .max(0.0)
                .sqrt();
        let dir = (1.0 - ab_prev - sigma * sigma).max(0.0).sqrt();
        let mean = ((&x0 * ab_prev.sqrt())? + (&eps * dir)?)?;
        Ok(StepOutput::scalar(mean, sigma))
    }
}

/// The x̂_0 implied by the guided ε̂ = ε − √(1−ᾱ_t)·g: x̂_0 + (1−ᾱ_t)/√ᾱ_t·g (written so that
/// no guidance leaves x̂_0 bit for bit unchanged; at ᾱ_t = 0 there is no x̂_0 to shift).
fn guided_x0(x0: Tensor, g: &Tensor, ab: f64) -> Result<Tensor> {
    if ab > 0.0 {
        Ok((x0 + (g * ((1.0 - ab) / ab.sqrt()))?)?)
    } else {
        Ok(x0)
    }
}

/// Anything that predicts (ε, x_0) from x_t at schedule indices t: the trained U-Net, a
/// classifier-free-guided pair of branches, or the exact denoiser of a known distribution.
pub trait Denoiser {
    fn predict(&self, x_t: &Tensor, t: &[usize]) -> Result<Prediction>;
}

/// A source of guidance gradients s·∇ₓ log p(c | x_t) (e.g. a noised CLIP).
pub trait Guide {
    fn gradient(&self, x_t: &Tensor, t: &[usize]) -> Result<Tensor>;
}

/// Runs a full reverse process from x_T ~ N(0, I). `on_step(k, S)` is called after each step.
pub fn sample(
    sampler: &dyn Sampler,
    denoiser: &dyn Denoiser,
    guide: Option<&dyn Guide>,
    diffusion: &Diffusion,
    shape: impl Into<Shape>,
    rng: &mut Rng,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    let shape = shape.into();
    let b = shape.dims()[0];
    let mut x = rng.randn(shape, diffusion.device())?;
    let ts = sampler.timesteps().to_vec();
    for (k, &t) in ts.iter().enumerate() {
        let tb = vec![t; b];
        let pred = denoiser.predict(&x, &tb)?;
        let g = match guide {
            Some(g) => Some(g.gradient(&x, &tb)?),
            None => None,
        };
        let out = sampler.step(k, &x, &pred, g.as_ref(), diffusion)?;
        // Detached, so no step keeps the graph of the steps before it alive (with a network
        // whose weights are autograd variables, memory would grow with every step).
        x = match &out.std_map {
            Some(std) => (&out.mean + (rng.randn(x.shape(), x.device())? * std)?)?,
            None if out.std > 0.0 => (out.mean + (rng.randn(x.shape(), x.device())? * out.std)?)?,
            None => out.mean,
        }
        .detach();
        on_step(k + 1, ts.len());
    }
    Ok(x)
}

/// The exact optimal denoiser for data x_0 ~ N(μ, s²·I): E[ε | x_t] is linear in x_t. Used to
/// check samplers without training anything.
pub struct GaussianOracle<'a> {
    pub diffusion: &'a Diffusion,
    pub mean: f64,
    pub std: f64,
}

impl Denoiser for GaussianOracle<'_> {
    fn predict(&self, x_t: &Tensor, t: &[usize]) -> Result<Prediction> {
        let ab = &self.diffusion.schedule.alpha_bars;
        let (mu, s2) = (self.mean, self.std * self.std);
        // x_t ~ N(√ᾱ μ, ᾱ s² + 1 − ᾱ);  E[ε | x_t] = √(1−ᾱ) (x_t − √ᾱ μ) / (ᾱ s² + 1 − ᾱ).
        let gain = self
            .diffusion
            .coef(t, |i| (1.0 - ab[i]).sqrt() / (ab[i] * s2 + 1.0 - ab[i]))?;
        let shift = self.diffusion.coef(t, |i| ab[i].sqrt() * mu)?;
        let eps = x_t.broadcast_sub(&shift)?.broadcast_mul(&gain)?;
        // E[x_0 | x_t] = μ + √ᾱ s² (x_t − √ᾱ μ) / (ᾱ s² + 1 − ᾱ).
        let gain0 = self
            .diffusion
            .coef(t, |i| ab[i].sqrt() * s2 / (ab[i] * s2 + 1.0 - ab[i]))?;
        let x0 = (x_t.broadcast_sub(&shift)?.broadcast_mul(&gain0)? + mu)?;
        Ok(Prediction::fixed(eps, x0))
    }
}

/// The trained network as a denoiser: runs the U-Net and converts its output (ε, x_0 or v).
pub struct UNetDenoiser<'a> {
    pub model: &'a crate::nn::UNet,
    pub diffusion: &'a Diffusion,
    pub objective: crate::diffusion::Objective,
    /// Per-row conditioning (B, cond_dim), or none.
    pub cond: Option<&'a Tensor>,
}

impl Denoiser for UNetDenoiser<'_> {
    fn predict(&self, x_t: &Tensor, t: &[usize]) -> Result<Prediction> {
        let out = self.model.forward(x_t, t, self.cond, None)?;
        self.diffusion.prediction(self.objective, x_t, &out, t)
    }
}

/// Classifier-free guidance (Ho & Salimans 2021; GLIDE): one caption-conditioned network,
/// ε̂ = ε(x_t, ∅) + w·(ε(x_t, c) − ε(x_t, ∅)), both branches in one batched forward. The
/// combination is made on the network's output, whatever the objective (ε, x₀ or v), so
/// w = 1 is the conditional model and w = 0 the unconditional one.
pub struct CfgDenoiser<'a> {
    pub model: &'a crate::nn::UNet,
    pub diffusion: &'a Diffusion,
    pub objective: crate::diffusion::Objective,
    /// (B, cond_dim) embeddings of the prompts, one row per sample.
    pub cond: Tensor,
    /// (B, cond_dim) embeddings of ∅.
    pub null: Tensor,
    pub scale: f64,
}

impl<'a> CfgDenoiser<'a> {
    /// Embeds one prompt per sample row and the matching ∅ rows.
    pub fn new(
        model: &'a crate::nn::UNet,
        diffusion: &'a Diffusion,
        objective: crate::diffusion::Objective,
        prompts: &[&str],
        scale: f64,
    ) -> Result<Self> {
        let device = diffusion.device();
        let cond = model.embed_captions(prompts, device)?.detach();
        let null = model
            .embed_captions(&vec![""; prompts.len()], device)?
            .detach();
        Ok(Self {
            model,
            diffusion,
            objective,
            cond,
            null,
            scale,
        })
    }
}

impl Denoiser for CfgDenoiser<'_> {
    fn predict(&self, x_t: &Tensor, t: &[usize]) -> Result<Prediction> {
        let b = x_t.dim(0)?;
        let x2 = Tensor::cat(&[x_t, x_t], 0)?;
        let t2: Vec<usize> = t.iter().chain(t).copied().collect();
        let c2 = Tensor::cat(&[&self.cond, &self.null], 0)?;
        let out = self.model.forward(&x2, &t2, Some(&c2), None)?;
        let (out, var_values) = crate::diffusion::split_output(&x2, &out)?;
        let cond = out.narrow(0, 0, b)?;
        let uncond = out.narrow(0, b, b)?;
        let guided = (&uncond + ((cond - &uncond)? * self.scale)?)?;
        // A learned variance is the conditional branch's, as in GLIDE's sampling.
        let guided = match var_values {
            Some(v) => Tensor::cat(&[&guided, &v.narrow(0, 0, b)?], 1)?,
            None => guided,
        };
        self.diffusion.prediction(self.objective, x_t, &guided, t)
    }
}
