//! Noise schedules: β_t and every quantity derived from it, in f64.
//!
//! Indexing: the paper's t runs 1..=T; arrays here are indexed by `i = t - 1`, which is also the
//! integer timestep the model sees (as in improved-diffusion and diffusers).

use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The family a β schedule is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// Ho et al. 2020: β linear from 1e-4 to 0.02 at T = 1000, both ends scaled by 1000/T
    /// (improved-diffusion's extension to any T).
    Linear,
    /// Nichol & Dhariwal 2021: ᾱ(t) = cos²(((t/T)+s)/(1+s)·π/2), s = 0.008, β clipped at 0.999.
    Cosine,
    /// Chen 2023 as lucidrains' denoising-diffusion-pytorch defines it: a sigmoid on ᾱ
    /// (start −3, end 3, τ 1), β clipped to [0, 0.999].
    Sigmoid,
    /// The GeoDiff schedule that diffusers calls `sigmoid`: a sigmoid on β over [−6, 6],
    /// scaled into [beta_start, beta_end].
    GeodiffSigmoid,
    /// Ho's `quad`: β = linspace(√β_start, √β_end, T)², β from 1e-4 to 0.02.
    Quadratic,
    /// diffusers' `scaled_linear` (Stable Diffusion): the same square-of-linspace shape with
    /// β from 0.00085 to 0.012.
    ScaledLinear,
}

impl ScheduleKind {
    pub const ALL: [ScheduleKind; 6] = [
        ScheduleKind::Linear,
        ScheduleKind::Cosine,
        ScheduleKind::Sigmoid,
        ScheduleKind::GeodiffSigmoid,
        ScheduleKind::Quadratic,
        ScheduleKind::ScaledLinear,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::Linear => "linear",
            ScheduleKind::Cosine => "cosine",
            ScheduleKind::Sigmoid => "sigmoid",
            ScheduleKind::GeodiffSigmoid => "geodiff-sigmoid",
            ScheduleKind::Quadratic => "quadratic",
            ScheduleKind::ScaledLinear => "scaled-linear",
        }
    }

    /// The (β_start, β_end) pair the reference uses, for the kinds that take one.
    pub fn default_beta_range(self) -> Option<(f64, f64)> {
        match self {
            ScheduleKind::Linear | ScheduleKind::Quadratic | ScheduleKind::GeodiffSigmoid => {
                Some((1e-4, 0.02))
            }
            ScheduleKind::ScaledLinear => Some((0.00085, 0.012)),
            ScheduleKind::Cosine | ScheduleKind::Sigmoid => None,
        }
    }
}

impl fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ScheduleKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        ScheduleKind::ALL
            .into_iter()
            .find(|k| k.name() == norm)
            .ok_or_else(|| {
                let names: Vec<_> = ScheduleKind::ALL.iter().map(|k| k.name()).collect();
                Error::InvalidSchedule(format!(
                    "unknown schedule `{s}` (expected one of: {})",
                    names.join(", ")
                ))
            })
    }
}

/// Everything that defines a schedule. `Default` is Ho's linear schedule at T = 1000.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    /// Number of diffusion steps T (≥ 1).
    pub steps: usize,
    /// Overrides the kind's β range (linear, quadratic, scaled-linear, geodiff-sigmoid). For
    /// `linear` these are the T = 1000 values before the 1000/T scaling.
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    /// Offset s of the cosine schedule.
    pub cosine_s: f64,
    /// Sigmoid (Chen 2023) parameters.
    pub sigmoid_start: f64,
    pub sigmoid_end: f64,
    pub sigmoid_tau: f64,
    /// Rescale to zero terminal SNR (Lin et al. 2023, Algorithm 1): ᾱ_T = 0 exactly.
    pub zero_terminal_snr: bool,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Linear,
            steps: 1000,
            beta_start: None,
            beta_end: None,
            cosine_s: 0.008,
            sigmoid_start: -3.0,
            sigmoid_end: 3.0,
            sigmoid_tau: 1.0,
            zero_terminal_snr: false,
        }
    }
}

impl ScheduleConfig {
    pub fn new(kind: ScheduleKind, steps: usize) -> Self {
        Self {
            kind,
            steps,
            ..Self::default()
        }
    }

    pub fn build(&self) -> Result<NoiseSchedule> {
        NoiseSchedule::from_config(self)
    }

    fn beta_range(&self) -> Result<(f64, f64)> {
        let (start, end) = self.kind.default_beta_range().ok_or_else(|| {
            Error::InvalidSchedule(format!("the {} schedule takes no β range", self.kind))
        })?;
        let (start, end) = (
            self.beta_start.unwrap_or(start),
            self.beta_end.unwrap_or(end),
        );
        for (name, b) in [("beta_start", start), ("beta_end", end)] {
            if !(b > 0.0 && b < 1.0) {
                return Err(Error::InvalidSchedule(format!(
                    "{name} = {b} is outside (0, 1)"
                )));
            }
        }
        if start > end {
            return Err(Error::InvalidSchedule(format!(
                "beta_start = {start} is larger than beta_end = {end}"
            )));
        }
        Ok((start, end))
    }

    /// The raw β_1..β_T of the schedule family, before clipping checks and rescaling.
    fn raw_betas(&self) -> Result<Vec<f64>> {
        let t_steps = self.steps;
        Ok(match self.kind {
            ScheduleKind::Linear => {
                let (start, end) = self.beta_range()?;
                let scale = 1000.0 / t_steps as f64;
                linspace(scale * start, scale * end, t_steps)
            }
            ScheduleKind::Quadratic | ScheduleKind::ScaledLinear => {
                let (start, end) = self.beta_range()?;
                linspace(start.sqrt(), end.sqrt(), t_steps)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            ScheduleKind::GeodiffSigmoid => {
                let (start, end) = self.beta_range()?;
                linspace(-6.0, 6.0, t_steps)
                    .into_iter()
                    .map(|x| sigmoid(x) * (end - start) + start)
                    .collect()
            }
            ScheduleKind::Cosine => {
                let s = self.cosine_s;
                if !(s.is_finite() && s > 0.0) {
                    return Err(Error::InvalidSchedule(format!(
                        "cosine_s = {s} must be a positive number"
                    )));
                }
                let alpha_bar = |u: f64| ((u + s) / (1.0 + s) * PI / 2.0).cos().powi(2);
                (0..t_steps)
                    .map(|i| {
                        let t1 = i as f64 / t_steps as f64;
                        let t2 = (i + 1) as f64 / t_steps as f64;
                        (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                    })
                    .collect()
            }
            ScheduleKind::Sigmoid => {
                let (start, end, tau) = (self.sigmoid_start, self.sigmoid_end, self.sigmoid_tau);
                if !(tau.is_finite() && tau > 0.0 && start.is_finite() && end.is_finite())
                    || start >= end
                {
                    return Err(Error::InvalidSchedule(format!(
                        "sigmoid schedule needs start < end and τ > 0 (got start {start}, end {end}, τ {tau})"
                    )));
                }
                let v_start = sigmoid(start / tau);
                let v_end = sigmoid(end / tau);
                let ab: Vec<f64> = (0..=t_steps)
                    .map(|i| {
                        let u = i as f64 / t_steps as f64;
                        (-sigmoid((u * (end - start) + start) / tau) + v_end) / (v_end - v_start)
                    })
                    .collect();
                let ab0 = ab[0];
                (0..t_steps)
                    .map(|i| (1.0 - (ab[i + 1] / ab0) / (ab[i] / ab0)).clamp(0.0, 0.999))
                    .collect()
            }
        })
    }
}

/// A fully computed schedule. Every array has length T and is indexed by i = t − 1.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    pub config: ScheduleConfig,
    pub betas: Vec<f64>,
    pub alphas: Vec<f64>,
    pub alpha_bars: Vec<f64>,
    /// ᾱ_{t−1}, with ᾱ_0 = 1.
    pub alpha_bars_prev: Vec<f64>,
    /// β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t); β̃_1 = 0.
    pub posterior_variance: Vec<f64>,
    /// log β̃_t with the t = 1 entry replaced by t = 2's (β̃_1 = 0), as in improved-diffusion.
    pub posterior_log_variance_clipped: Vec<f64>,
    /// Posterior mean μ̃_t = coef1 · x_0 + coef2 · x_t.
    pub posterior_mean_coef1: Vec<f64>,
    pub posterior_mean_coef2: Vec<f64>,
}

/// The most diffusion steps a schedule may have: a bound, so that a typo cannot allocate
/// gigabytes of schedule arrays (DDPM uses 1,000; 100,000 is far past any published T).
pub const MAX_STEPS: usize = 100_000;

impl NoiseSchedule {
    pub fn from_config(config: &ScheduleConfig) -> Result<Self> {
        if config.steps == 0 {
            return Err(Error::InvalidSchedule(
                "T = 0: a schedule needs at least one diffusion step".into(),
            ));
        }
        if config.steps > MAX_STEPS {
            return Err(Error::InvalidSchedule(format!(
                "T = {} is too large (at most {MAX_STEPS})",
                config.steps
            )));
        }
        let mut betas = config.raw_betas()?;
        for (i, &b) in betas.iter().enumerate() {
            if !(b > 0.0 && b < 1.0) {
                return Err(Error::InvalidSchedule(format!(
                    "the {} schedule at T = {} gives β_{} = {b}, outside (0, 1){}",
                    config.kind,
                    config.steps,
                    i + 1,
                    if config.kind == ScheduleKind::Linear && b >= 1.0 {
                        " (the 1000/T scaling needs T ≥ 21 unless T = 1, or a smaller beta_end)"
                    } else {
                        ""
                    }
                )));
            }
        }
        if config.zero_terminal_snr {
            if config.steps < 2 {
                return Err(Error::InvalidSchedule(
                    "zero terminal SNR needs T ≥ 2 (with T = 1 it would leave no signal at all)"
                        .into(),
                ));
            }
            betas = rescale_zero_terminal_snr(&betas);
        }
        Self::from_betas(config.clone(), betas)
    }

    /// Builds every derived quantity from β. β_T = 1 is accepted only for a zero-terminal-SNR
    /// schedule; otherwise every β must lie in (0, 1).
    fn from_betas(config: ScheduleConfig, betas: Vec<f64>) -> Result<Self> {
        let t_steps = betas.len();
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let mut alpha_bars = Vec::with_capacity(t_steps);
        let mut acc = 1.0;
        for &a in &alphas {
            acc *= a;
            alpha_bars.push(acc);
        }
        for i in 1..t_steps {
            if alpha_bars[i] >= alpha_bars[i - 1] || alpha_bars[i].is_nan() {
                return Err(Error::InvalidSchedule(format!(
                    "ᾱ is not strictly decreasing at t = {} ({} after {})",
                    i + 1,
                    alpha_bars[i],
                    alpha_bars[i - 1]
                )));
            }
        }
        let mut alpha_bars_prev = vec![1.0];
        alpha_bars_prev.extend_from_slice(&alpha_bars[..t_steps - 1]);
        let posterior_variance: Vec<f64> = (0..t_steps)
            .map(|i| betas[i] * (1.0 - alpha_bars_prev[i]) / (1.0 - alpha_bars[i]))
            .collect();
        let posterior_log_variance_clipped = (0..t_steps)
            .map(|i| {
                let v = if i == 0 && t_steps > 1 {
                    posterior_variance[1]
                } else {
                    posterior_variance[i]
                };
                // T = 1 has β̃_1 = 0 and nothing to borrow from: fall back to β_1.
                if v > 0.0 { v.ln() } else { betas[i].ln() }
            })
            .collect();
        let posterior_mean_coef1 = (0..t_steps)
            .map(|i| betas[i] * alpha_bars_prev[i].sqrt() / (1.0 - alpha_bars[i]))
            .collect();
        let posterior_mean_coef2 = (0..t_steps)
            .map(|i| (1.0 - alpha_bars_prev[i]) * alphas[i].sqrt() / (1.0 - alpha_bars[i]))
            .collect();
        Ok(Self {
            config,
            betas,
            alphas,
            alpha_bars,
            alpha_bars_prev,
            posterior_variance,
            posterior_log_variance_clipped,
            posterior_mean_coef1,
            posterior_mean_coef2,
        })
    }

    /// The chain over a subsequence of timesteps (increasing indices): β'_k =
    /// 1 − ᾱ_{τ_k}/ᾱ_{τ_{k−1}}, so that ᾱ' at each visited step equals the original ᾱ.
    pub fn respaced(&self, timesteps: &[usize]) -> Result<NoiseSchedule> {
        let mut last = 1.0;
        let mut betas = Vec::with_capacity(timesteps.len());
        for &t in timesteps {
            let ab = *self.alpha_bars.get(t).ok_or_else(|| {
                Error::InvalidSampler(format!("timestep {t} is outside 0..{}", self.len()))
            })?;
            betas.push(1.0 - ab / last);
            last = ab;
        }
        let mut config = self.config.clone();
        config.steps = timesteps.len();
        Self::from_betas(config, betas)
    }

    /// T.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) at index i.
    pub fn snr(&self, i: usize) -> f64 {
        self.alpha_bars[i] / (1.0 - self.alpha_bars[i])
    }

    /// One row per t for `ddlab schedule` and the reports.
    pub fn rows(&self) -> Vec<ScheduleRow> {
        (0..self.len())
            .map(|i| ScheduleRow {
                t: i + 1,
                beta: self.betas[i],
                alpha_bar: self.alpha_bars[i],
                snr: self.snr(i),
                posterior_variance: self.posterior_variance[i],
            })
            .collect()
    }
}

/// The columns `ddlab schedule` prints.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScheduleRow {
    pub t: usize,
    pub beta: f64,
    pub alpha_bar: f64,
    pub snr: f64,
    pub posterior_variance: f64,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// numpy's `linspace(start, end, n)`: n = 1 gives `[start]`.
pub(crate) fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f64;
            // numpy computes start + i*step and pins the last element to `end`.
            let mut v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
            v[n - 1] = end;
            v
        }
    }
}

/// Lin et al. 2023, Algorithm 1: shift and scale √ᾱ so that √ᾱ_T = 0 while √ᾱ_1 is unchanged.
fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    let mut sqrt_ab: Vec<f64> = betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc.sqrt()
        })
        .collect();
    let (a0, at) = (sqrt_ab[0], sqrt_ab[sqrt_ab.len() - 1]);
    for v in &mut sqrt_ab {
        *v = (*v - at) * a0 / (a0 - at);
    }
    let ab: Vec<f64> = sqrt_ab.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(ab.len());
    out.push(1.0 - ab[0]);
    for i in 1..ab.len() {
        out.push(1.0 - ab[i] / ab[i - 1]);
    }
    out
}
