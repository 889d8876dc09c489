//! Exponential moving average of the weights, the copy used for sampling and evaluation.

use candle_core::{Tensor, Var};

use crate::error::Result;

pub struct Ema {
    pub decay: f64,
    pub shadow: Vec<Tensor>,
}

impl Ema {
    pub fn new(vars: &[Var], decay: f64) -> Result<Self> {
        let shadow = vars
            .iter()
            .map(|v| v.as_tensor().copy().map(|t| t.detach()))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { decay, shadow })
    }

    /// The decay in effect after `updates` updates: min(decay, (1 + n)/(10 + n)), so that a short
    /// run's average is not dominated by the random initialisation.
    pub fn effective_decay(&self, updates: u64) -> f64 {
        let n = updates as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    pub fn update(&mut self, vars: &[Var], updates: u64) -> Result<()> {
        let d = self.effective_decay(updates);
        for (s, v) in self.shadow.iter_mut().zip(vars) {
            crate::ops::ema_update(s, v.as_tensor(), d)?;
        }
        Ok(())
    }
}
