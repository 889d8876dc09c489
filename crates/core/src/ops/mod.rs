//! Differentiable ops used by the models. Each function is the single dispatch point for one
//! operation, so faster kernels can replace candle's compositions without touching the models.

pub mod conv;
pub mod gemm;

use candle_core::{D, DType, Tensor};

use crate::error::Result;

/// Whether the hand-written CPU kernels apply (f32 on the CPU); elsewhere candle's ops run.
fn fast_cpu(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// 2-D convolution plus per-channel bias. `x`: (B, C_in, H, W); `w`: (C_out, C_in, k, k).
pub fn conv2d(x: &Tensor, w: &Tensor, b: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if fast_cpu(x) {
        return Ok(x.contiguous()?.apply_op3(
            &w.contiguous()?,
            &b.contiguous()?,
            conv::Conv2dOp {
                stride,
                pad: padding,
            },
        )?);
    }
    conv2d_reference(x, w, b, stride, padding)
}

/// candle's own convolution: used off the CPU, and as the reference in tests.
pub fn conv2d_reference(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let y = x.conv2d(w, padding, stride, 1, 1)?;
    Ok(y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?)
}

/// GroupNorm over (C/groups, H, W) per sample, then affine, then optionally SiLU.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (b, c) = (dims[0], dims[1]);
    let xg = x.reshape((b, groups, ()))?;
    let n = xg.dim(2)? as f64;
    let mean = (xg.sum_keepdim(2)? / n)?;
    let xc = xg.broadcast_sub(&mean)?;
    let var = (xc.sqr()?.sum_keepdim(2)? / n)?;
    let xn = xc
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape(dims.as_slice())?;
    let mut shape = vec![1usize; dims.len()];
    shape[1] = c;
    let y = xn
        .broadcast_mul(&gamma.reshape(shape.as_slice())?)?
        .broadcast_add(&beta.reshape(shape.as_slice())?)?;
    Ok(if silu { y.silu()? } else { y })
}

pub fn silu(x: &Tensor) -> Result<Tensor> {
    Ok(x.silu()?)
}

/// Softmax over the last dimension, built from differentiable ops (candle-nn's
/// `softmax_last_dim` has no backward and would silently stop gradients).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    Ok(e.broadcast_div(&s)?)
}

/// Hyper-parameters of one AdamW update.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// 1 − β₁ᵗ and 1 − β₂ᵗ.
    pub bias_correction1: f64,
    pub bias_correction2: f64,
}

/// One AdamW update of `var` in place, updating its moments `m` and `v`.
pub fn adamw_step(
    var: &candle_core::Var,
    m: &mut Tensor,
    v: &mut Tensor,
    g: &Tensor,
    p: AdamWStep,
) -> Result<()> {
    *m = ((&*m * p.beta1)? + (g * (1.0 - p.beta1))?)?;
    *v = ((&*v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
    let m_hat = (&*m / p.bias_correction1)?;
    let v_hat = (&*v / p.bias_correction2)?;
    let update = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
    let theta = var.as_tensor();
    let next = ((theta * (1.0 - p.lr * p.weight_decay))? - (update * p.lr)?)?;
    var.set(&next)?;
    Ok(())
}
