//! DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): the reverse ODE solved in the
//! data-prediction form on half-log-SNR λ = log(α/σ), with α = √ᾱ and σ = √(1−ᾱ). Each step
//! reuses the previous step's x̂_0 for a second-order correction, so it costs one network
//! evaluation like DDIM; the first step and the last (to σ = 0, λ = ∞) are first order, which
//! is exactly DDIM with η = 0 (diffusers' `lower_order_final` with `final_sigmas_type="zero"`).

use std::sync::Mutex;

use candle_core::Tensor;

use super::{Sampler, StepOutput, TimestepSpacing, guided_x0, spaced_timesteps};
use crate::diffusion::{Diffusion, Prediction};
use crate::error::{Error, Result};
use crate::schedule::NoiseSchedule;

pub struct DpmSolverPp2m {
    timesteps_desc: Vec<usize>,
    clip_x0: bool,
    /// x̂_0 of the step before (its index k), the multistep's only memory. A sampler value
    /// serves one reverse process at a time; step 0 starts a new one.
    previous: Mutex<Option<(usize, Tensor)>>,
}

impl DpmSolverPp2m {
    pub fn new(
        schedule: &NoiseSchedule,
        steps: usize,
        spacing: TimestepSpacing,
        clip_x0: bool,
    ) -> Result<Self> {
        let ts = spaced_timesteps(schedule.len(), steps, spacing)?;
        Self::with_timesteps(schedule, ts.into_iter().rev().collect(), clip_x0)
    }

    /// On an explicit list of schedule indices, noisiest first (diffusers' `timesteps=`).
    pub fn with_timesteps(
        schedule: &NoiseSchedule,
        timesteps_desc: Vec<usize>,
        clip_x0: bool,
    ) -> Result<Self> {
        let decreasing = timesteps_desc.windows(2).all(|w| w[0] > w[1]);
        if timesteps_desc.is_empty() || !decreasing || timesteps_desc[0] >= schedule.len() {
            return Err(Error::InvalidSampler(format!(
                "DPM-Solver++ timesteps must be strictly decreasing indices below T = {}",
                schedule.len()
            )));
        }
        Ok(Self {
            timesteps_desc,
            clip_x0,
            previous: Mutex::new(None),
        })
    }

    /// ᾱ at step position k of the visited list; 1 (clean data) past its end.
    fn alpha_bar(&self, k: usize, schedule: &NoiseSchedule) -> f64 {
        self.timesteps_desc
            .get(k)
            .map_or(1.0, |&t| schedule.alpha_bars[t])
    }

    /// The x̂_0 this step uses: clipped first, then shifted by the guidance as DDIM does
    /// (x̂_0 + (1−ᾱ_t)/√ᾱ_t·g is the x_0 implied by ε − √(1−ᾱ_t)·g).
    fn data_prediction(
        &self,
        pred: &Prediction,
        guidance: Option<&Tensor>,
        ab: f64,
    ) -> Result<Tensor> {
        let x0 = if self.clip_x0 {
            pred.x0.clamp(-1f32, 1f32)?
        } else {
            pred.x0.clone()
        };
        match guidance {
            Some(g) => guided_x0(x0, g, ab),
            None => Ok(x0),
        }
    }
}

/// λ = log(α/σ) for ᾱ.
fn half_log_snr(ab: f64) -> f64 {
    0.5 * (ab.ln() - (1.0 - ab).ln())
}

impl Sampler for DpmSolverPp2m {
    fn name(&self) -> &'static str {
        "dpmpp2m"
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
        let (ab, ab_next) = (self.alpha_bar(k, s), self.alpha_bar(k + 1, s));
        let x0 = self.data_prediction(pred, guidance, ab)?;
        let mut previous = self.previous.lock().unwrap_or_else(|e| e.into_inner());
        let history = match previous.take() {
            Some((j, m)) if k > 0 && j + 1 == k => Some(m),
            _ => None,
        };
        *previous = Some((k, x0.clone()));
        let last = k + 1 == self.timesteps_desc.len();
        let mean = match history {
            // To σ = 0 (or with nothing to extrapolate from) the update is first order, and at
            // σ_next = 0 it returns x̂_0 itself.
            _ if last || ab_next >= 1.0 => x0,
            None => first_order(x_t, &x0, ab, ab_next)?,
            Some(x0_prev) => {
                let ab_prev = self.alpha_bar(k - 1, s);
                second_order(x_t, &x0, &x0_prev, [ab_prev, ab, ab_next])?
            }
        };
        Ok(StepOutput::scalar(mean, 0.0))
    }
}

/// x_next = (σ_next/σ)·x − α_next·(e^{−h} − 1)·x̂_0, h = λ_next − λ (DDIM with η = 0).
fn first_order(x_t: &Tensor, x0: &Tensor, ab: f64, ab_next: f64) -> Result<Tensor> {
    let h = half_log_snr(ab_next) - half_log_snr(ab);
    let ratio = ((1.0 - ab_next) / (1.0 - ab)).sqrt();
    let a = ab_next.sqrt() * (-(-h).exp_m1());
    Ok(((x_t * ratio)? + (x0 * a)?)?)
}

/// The 2M update: D = x̂_0 + (1/(2r))·(x̂_0 − x̂_0,prev), r = h_prev/h, in place of x̂_0.
fn second_order(x_t: &Tensor, x0: &Tensor, x0_prev: &Tensor, ab: [f64; 3]) -> Result<Tensor> {
    let [ab_prev, ab_now, ab_next] = ab;
    let (l_prev, l_now, l_next) = (
        half_log_snr(ab_prev),
        half_log_snr(ab_now),
        half_log_snr(ab_next),
    );
    let (h, h_prev) = (l_next - l_now, l_now - l_prev);
    let r = h_prev / h;
    let d = ((x0 * (1.0 + 0.5 / r))? - (x0_prev * (0.5 / r))?)?;
    first_order(x_t, &d, ab_now, ab_next)
}
