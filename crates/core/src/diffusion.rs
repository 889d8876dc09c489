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

    /// Converts a network output into (ε, x_0). The v and x_0 forms never divide by √ᾱ, so they
    /// stay finite at ᾱ_T = 0 (zero terminal SNR).
    pub fn prediction(
        &self,
        objective: Objective,
        x_t: &Tensor,
        out: &Tensor,
        t: &[usize],
    ) -> Result<Prediction> {
        let sa = self.sqrt_ab(t)?;
        let s1 = self.sqrt_1m_ab(t)?;
        Ok(match objective {
            Objective::Eps => Prediction {
                x0: (x_t - out.broadcast_mul(&s1)?)?.broadcast_div(&sa)?,
                eps: out.clone(),
            },
            Objective::X0 => Prediction {
                eps: (x_t - out.broadcast_mul(&sa)?)?.broadcast_div(&s1)?,
                x0: out.clone(),
            },
            Objective::V => Prediction {
                x0: (x_t.broadcast_mul(&sa)? - out.broadcast_mul(&s1)?)?,
                eps: (x_t.broadcast_mul(&s1)? + out.broadcast_mul(&sa)?)?,
            },
        })
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
