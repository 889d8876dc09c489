//! The variational term of L_hybrid = L_simple + λ·L_vlb (Nichol & Dhariwal 2021, §3.1) for a
//! network that learns its variance. As in improved-diffusion, the reverse mean inside L_vlb is
//! built from the *detached* objective output, so L_vlb trains only the variance output and
//! L_simple stays the only signal for the mean; x̂_0 is not clipped there.

use candle_core::{DType, Tensor};
use std::f64::consts::{LN_2, SQRT_2};

use crate::diffusion::{Diffusion, Objective};
use crate::error::Result;

/// Per row (B,), bits/dim: L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)), or the
/// decoder's −log p_θ(x_0 | x_1) where t = 0 — the terms the NLL evaluation sums.
/// `main` is the objective part of the output, `var_values` the raw variance part.
pub fn vlb_bits(
    diffusion: &Diffusion,
    objective: Objective,
    x0: &Tensor,
    x_t: &Tensor,
    t: &[usize],
    main: &Tensor,
    var_values: &Tensor,
) -> Result<Tensor> {
    let pred = diffusion.prediction(objective, x_t, &main.detach(), t)?;
    let mu_p = diffusion.q_posterior_mean(&pred.x0, x_t, t)?.detach();
    let frac = ((var_values + 1.0)? * 0.5)?;
    let lv_p = diffusion.learned_log_variance(&frac, t)?;
    let mu_q = diffusion.q_posterior_mean(x0, x_t, t)?;
    let s = &diffusion.schedule;
    let lv_q = diffusion.coef(t, |i| s.posterior_log_variance_clipped[i])?;
    let kl = normal_kl(&mu_q, &lv_q, &mu_p, &lv_p)?;
    // Most batches draw no t = 0: skip the decoder's erf work on the training step then.
    if !t.contains(&0) {
        return Ok((kl.flatten_from(1)?.mean(1)? / LN_2)?);
    }
    let decoder = decoder_nll(x0, &mu_p, &lv_p)?;
    let first: Vec<u8> = t.iter().map(|&i| u8::from(i == 0)).collect();
    let first =
        Tensor::from_vec(first, (t.len(), 1, 1, 1), x0.device())?.broadcast_as(kl.shape())?;
    let nats = first.where_cond(&decoder, &kl)?;
    Ok((nats.flatten_from(1)?.mean(1)? / LN_2)?)
}

/// KL(N(m1, e^{lv1}) ‖ N(m2, e^{lv2})) per element, nats; lv1 broadcasts.
fn normal_kl(m1: &Tensor, lv1: &Tensor, m2: &Tensor, lv2: &Tensor) -> Result<Tensor> {
    let diff = lv2.broadcast_sub(lv1)?;
    let ratio = diff.neg()?.exp()?;
    let mean_term = ((m1 - m2)?.sqr()? * lv2.neg()?.exp()?)?;
    Ok((((diff + ratio)? + mean_term)? - 1.0)?.affine(0.5, 0.0)?)
}

/// −log P(x_0) per element under N(mean, e^{lv}) discretised to 256 bins on [-1, 1], the edge
/// bins open (Ho et al. 2020, eq. 13).
fn decoder_nll(x0: &Tensor, mean: &Tensor, lv: &Tensor) -> Result<Tensor> {
    let inv_std = lv.affine(-0.5, 0.0)?.exp()?;
    let centered = (x0 - mean)?;
    let upper = ((&centered + 1.0 / 255.0)? * &inv_std)?;
    let lower = ((&centered - 1.0 / 255.0)? * &inv_std)?;
    let cdf_upper = std_normal_cdf(&upper)?;
    let one_minus_cdf_lower = std_normal_cdf(&lower.neg()?)?;
    let middle = (&cdf_upper - std_normal_cdf(&lower)?)?;
    let low_edge = x0.lt(-0.999)?;
    let high_edge = x0.gt(0.999)?;
    let p = low_edge.where_cond(
        &cdf_upper,
        &high_edge.where_cond(&one_minus_cdf_lower, &middle)?,
    )?;
    Ok(p.maximum(1e-12)?.log()?.neg()?)
}

/// Φ(x) = (1 + erf(x/√2))/2.
fn std_normal_cdf(x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    Ok(((x / SQRT_2)?.erf()? + 1.0)?.affine(0.5, 0.0)?)
}
