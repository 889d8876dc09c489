//! AdamW (Loshchilov & Hutter) with its state exposed, so a checkpoint can restore it exactly.
//! candle-nn's `AdamW` keeps its moments private, which rules out bit-identical resume.

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay, applied to weights of rank ≥ 2 only (not biases or norms).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

pub struct AdamW {
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates taken so far (for bias correction).
    pub t: u64,
    cfg: AdamWConfig,
}

impl AdamW {
    pub fn new(vars: Vec<Var>, cfg: AdamWConfig) -> Result<Self> {
        let m = vars
            .iter()
            .map(|v| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        // Separate allocations: the CPU update writes each in place.
        let v = vars
            .iter()
            .map(|v| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            m,
            v,
            t: 0,
            cfg,
        })
    }

    /// One update with gradients in the same order as the variables, each multiplied by
    /// `grad_scale` first (gradient clipping; 1 for none).
    pub fn step(&mut self, grads: &[Tensor], lr: f64, grad_scale: f64) -> Result<()> {
        self.t += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.cfg;
        let bc1 = 1.0 - beta1.powi(self.t as i32);
        let bc2 = 1.0 - beta2.powi(self.t as i32);
        for (i, (var, g)) in self.vars.iter().zip(grads).enumerate() {
            crate::ops::adamw_step(
                var,
                &mut self.m[i],
                &mut self.v[i],
                g,
                crate::ops::AdamWStep {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay: if var.rank() >= 2 { weight_decay } else { 0.0 },
                    bias_correction1: bc1,
                    bias_correction2: bc2,
                    grad_scale,
                },
            )?;
        }
        Ok(())
    }

    /// First and second moments, in variable order.
    pub fn moments(&self) -> (&[Tensor], &[Tensor]) {
        (&self.m, &self.v)
    }

    /// Restores the moments (tensors of their own: they are updated in place on the CPU).
    pub fn set_moments(&mut self, m: Vec<Tensor>, v: Vec<Tensor>, t: u64) {
        self.m = m;
        self.v = v;
        self.t = t;
    }
}

/// The global L2 norm of a set of gradients.
pub fn global_norm(grads: &[Tensor]) -> Result<f64> {
    let mut total = 0f64;
    for g in grads {
        total += crate::ops::sum_of_squares(g)?;
    }
    Ok(total.sqrt())
}
