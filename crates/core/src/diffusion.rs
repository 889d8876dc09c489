//! The forward process q(x_t | x_0) in closed form and the relations between the three things a
//! network may predict (ε, x_0, v). Data live in [-1, 1].

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::schedule::NoiseSchedule;

/// What the network is trained to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// ε (Ho et al.'s L_simple).
    #[default]
    Eps,
    /// x_0 directly.
    X0,
    /// v = √ᾱ·ε − √(1−ᾱ)·x_0 (Salimans & Ho 2022).
    V,
}

impl Objective {
    pub fn name(self) -> &'static str {
        match self {
            Objective::Eps => "eps",
            Objective::X0 => "x0",
            Objective::V => "v",
        }
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Objective {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "eps" | "epsilon" => Ok(Objective::Eps),
            "x0" | "x_0" | "sample" => Ok(Objective::X0),
            "v" | "v-prediction" => Ok(Objective::V),
            _ => Err(Error::InvalidTraining(format!(
                "unknown objective `{s}` (expected eps, x0 or v)"
            ))),
        }
    }
}

/// A denoiser's output expressed both ways, since samplers need both.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub eps: Tensor,
    pub x0: Tensor,
    /// For a network that learns its variance: per pixel, the weight f ∈ [0, 1] of log β_t
    /// against log β̃_t in log Σ_θ (improved-diffusion's `frac`, (v + 1)/2).
    pub var_frac: Option<Tensor>,
}

impl Prediction {
    /// A prediction with a fixed variance.
    pub fn fixed(eps: Tensor, x0: Tensor) -> Self {
        Self {
            eps,
            x0,
            var_frac: None,
        }
    }
}

/// A noise schedule bound to a device: per-timestep coefficients gathered into broadcastable
/// (B, 1, 1, 1) f32 tensors.
#[derive(Debug, Clone)]
pub struct Diffusion {
    pub schedule: NoiseSchedule,
    device: Device,
}

impl Diffusion {
    pub fn new(schedule: NoiseSchedule, device: &Device) -> Self {
        Self {
            schedule,
            device: device.clone(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// T.
    pub fn num_timesteps(&self) -> usize {
        self.schedule.len()
    }

    /// Gathers `f(i)` for every batch row's timestep into a (B, 1, 1, 1) tensor.
    pub fn coef(&self, t: &[usize], f: impl Fn(usize) -> f64) -> Result<Tensor> {
        let v: Vec<f32> = t.iter().map(|&i| f(i) as f32).collect();
        Ok(Tensor::from_vec(v, (t.len(), 1, 1, 1), &self.device)?)
    }

    fn sqrt_ab(&self, t: &[usize]) -> Result<Tensor> {
        let ab = &self.schedule.alpha_bars;
        self.coef(t, |i| ab[i].sqrt())
    }

    fn sqrt_1m_ab(&self, t: &[usize]) -> Result<Tensor> {
        let ab = &self.schedule.alpha_bars;
        self.coef(t, |i| (1.0 - ab[i]).sqrt())
    }

    /// x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε.
    pub fn q_sample(&self, x0: &Tensor, t: &[usize], noise: &Tensor) -> Result<Tensor> {
        let a = x0.broadcast_mul(&self.sqrt_ab(t)?)?;
        let b = noise.broadcast_mul(&self.sqrt_1m_ab(t)?)?;
        Ok((a + b)?)
    }

    /// What the network should output for this objective.
    pub fn target(
        &self,
        objective: Objective,
        x0: &Tensor,
        noise: &Tensor,
        t: &[usize],
    ) -> Result<Tensor> {
        Ok(match objective {
            Objective::Eps => noise.clone(),
            Objective::X0 => x0.clone(),
            Objective::V => {
                (noise.broadcast_mul(&self.sqrt_ab(t)?)?
                    - x0.broadcast_mul(&self.sqrt_1m_ab(t)?)?)?
            }
        })
    }

    /// Converts a network output into (ε, x_0), and for a network with twice x_t's channels
    /// (a learned variance) the variance weight from the second half. The v and x_0 forms
    /// never divide by √ᾱ, so they stay finite at ᾱ_T = 0 (zero terminal SNR).
    pub fn prediction(
        &self,
        objective: Objective,
        x_t: &Tensor,
        out: &Tensor,
        t: &[usize],
    ) -> Result<Prediction> {
        let (main, var_values) = split_output(x_t, out)?;
        let mut pred = self.mean_prediction(objective, x_t, &main, t)?;
        if let Some(v) = var_values {
            pred.var_frac = Some(((v + 1.0)? * 0.5)?);
        }
        Ok(pred)
    }

    /// (ε, x_0) from the part of the output that predicts the objective.
    fn mean_prediction(
        &self,
        objective: Objective,
        x_t: &Tensor,
        out: &Tensor,
        t: &[usize],
    ) -> Result<Prediction> {
        let sa = self.sqrt_ab(t)?;
        let s1 = self.sqrt_1m_ab(t)?;
        Ok(match objective {
            Objective::Eps => Prediction::fixed(
                out.clone(),
                (x_t - out.broadcast_mul(&s1)?)?.broadcast_div(&sa)?,
            ),
            Objective::X0 => Prediction::fixed(
                (x_t - out.broadcast_mul(&sa)?)?.broadcast_div(&s1)?,
                out.clone(),
            ),
            Objective::V => Prediction::fixed(
                (x_t.broadcast_mul(&s1)? + out.broadcast_mul(&sa)?)?,
                (x_t.broadcast_mul(&sa)? - out.broadcast_mul(&s1)?)?,
            ),
        })
    }

    /// log Σ_θ = f·log β_t + (1 − f)·log β̃_t (β̃ clipped at t = 0 as everywhere), per pixel.
    pub fn learned_log_variance(&self, frac: &Tensor, t: &[usize]) -> Result<Tensor> {
        let s = &self.schedule;
        let max_log = self.coef(t, |i| s.betas[i].ln())?;
        let min_log = self.coef(t, |i| s.posterior_log_variance_clipped[i])?;
        Ok((frac.broadcast_mul(&max_log)?
            + (frac.ones_like()? - frac)?.broadcast_mul(&min_log)?)?)
    }

    /// ε implied by x_t and an x_0 estimate.
    pub fn eps_from_x0(&self, x_t: &Tensor, x0: &Tensor, t: &[usize]) -> Result<Tensor> {
        Ok((x_t - x0.broadcast_mul(&self.sqrt_ab(t)?)?)?.broadcast_div(&self.sqrt_1m_ab(t)?)?)
    }

    /// Mean of the posterior q(x_{t−1} | x_t, x_0).
    pub fn q_posterior_mean(&self, x0: &Tensor, x_t: &Tensor, t: &[usize]) -> Result<Tensor> {
        let s = &self.schedule;
        let c1 = self.coef(t, |i| s.posterior_mean_coef1[i])?;
        let c2 = self.coef(t, |i| s.posterior_mean_coef2[i])?;
        Ok((x0.broadcast_mul(&c1)? + x_t.broadcast_mul(&c2)?)?)
    }
}

/// The network output's objective part and, when it has twice x_t's channels, its variance
/// part (raw values v, read as [−1, 1]).
pub fn split_output(x_t: &Tensor, out: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
    let (c, c_out) = (x_t.dim(1)?, out.dim(1)?);
    if c_out == c {
        Ok((out.clone(), None))
    } else if c_out == 2 * c {
        Ok((out.narrow(1, 0, c)?, Some(out.narrow(1, c, c)?)))
    } else {
        Err(Error::InvalidModel(format!(
            "the network outputs {c_out} channels for {c}-channel images (expected {c}, or {} with a learned variance)",
            2 * c
        )))
    }
}
