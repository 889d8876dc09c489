//! Differentiable ops used by the models. Each function is the single dispatch point for one
//! operation, so faster kernels can replace candle's compositions without touching the models.

pub mod attention;
pub mod conv;
pub mod cpu;
#[cfg(target_arch = "x86_64")]
pub mod direct;
pub mod gemm;
pub mod groupnorm;
pub mod math;
pub mod optim;

use candle_core::{D, DType, Tensor};

use crate::error::Result;

/// Whether the hand-written CPU kernels apply (f32 on the CPU); elsewhere candle's ops run.
fn fast_cpu(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && !reference_forced()
}

/// `DDLAB_OPS=candle` runs candle's own ops on the CPU too: the stock-candle baseline of the
/// benchmarks (read once).
fn reference_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| std::env::var("DDLAB_OPS").is_ok_and(|v| v == "candle"))
}

/// 2-D convolution plus per-channel bias. `x`: (B, C_in, H, W); `w`: (C_out, C_in, k, k).
pub fn conv2d(x: &Tensor, w: &Tensor, b: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    conv2d_fused(
        x,
        w,
        b,
        ConvOptions {
            stride,
            padding,
            upsample: 1,
        },
        None,
    )
}

/// Geometry of [`conv2d_fused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvOptions {
    pub stride: usize,
    pub padding: usize,
    /// Nearest-neighbour upsampling factor applied to the input first (1 = none).
    pub upsample: usize,
}

/// `residual + conv2d(upsample(x), w) + b`, where `b` is (C_out) or per sample (B, C_out) and
/// the residual, if any, has the output's shape. On the CPU the upsampling, bias and residual
/// are fused into the convolution.
pub fn conv2d_fused(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    opts: ConvOptions,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    if !fast_cpu(x) {
        return conv2d_fused_reference(x, w, b, opts, residual);
    }
    let (x, w, b) = (x.contiguous()?, w.contiguous()?, b.contiguous()?);
    let (stride, pad, up) = (opts.stride, opts.padding, opts.upsample);
    match residual {
        Some(r) if b.rank() == 1 => {
            let (c_out, c_in, k, k2) = w.dims4()?;
            let wb = Tensor::cat(
                &[&w.reshape((c_out, c_in * k * k2))?, &b.reshape((c_out, 1))?],
                1,
            )?;
            let op = conv::Conv2dResidualOp {
                stride,
                pad,
                up,
                kernel: (c_out, c_in, k, k2),
            };
            Ok(x.apply_op3(&wb, &r.contiguous()?, op)?)
        }
        _ => {
            let y = x.apply_op3(&w, &b, conv::Conv2dOp { stride, pad, up })?;
            Ok(match residual {
                Some(r) => (y + r)?,
                None => y,
            })
        }
    }
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

/// candle's composition of [`conv2d_fused`].
pub fn conv2d_fused_reference(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    opts: ConvOptions,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let x = if opts.upsample > 1 {
        let (_, _, h, w) = x.dims4()?;
        x.upsample_nearest2d(h * opts.upsample, w * opts.upsample)?
    } else {
        x.clone()
    };
    let y = x.conv2d(w, opts.padding, opts.stride, 1, 1)?;
    let b = match b.rank() {
        1 => b.reshape((1, b.dim(0)?, 1, 1))?,
        _ => b.reshape((b.dim(0)?, b.dim(1)?, 1, 1))?,
    };
    let y = y.broadcast_add(&b)?;
    Ok(match residual {
        Some(r) => (y + r)?,
        None => y,
    })
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
    group_norm_masked(x, groups, gamma, beta, eps, silu, None)
}

/// [`group_norm`] followed by multiplication with a dropout keep-mask of x's shape (entries 0
/// or 1/(1 − p)); the mask takes no gradient.
pub fn group_norm_masked(
    x: &Tensor,
    groups: usize,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    silu: bool,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    if fast_cpu(x) {
        let op = groupnorm::GroupNormOp::new(groups, eps, silu, mask.cloned());
        return Ok(x
            .contiguous()?
            .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?);
    }
    let y = group_norm_reference(x, groups, gamma, beta, eps, silu)?;
    Ok(match mask {
        Some(m) => (y * m)?,
        None => y,
    })
}

/// candle's composition of GroupNorm: used off the CPU, and as the reference in tests.
pub fn group_norm_reference(
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

/// Self-attention over spatial positions: `qkv` (B, 3C, H, W) is read as (B, 3, heads, C/heads,
/// H·W); the result (B, C, H, W) is, per head, V·softmax(QᵀK/√(C/heads))ᵀ.
pub fn attention(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    if fast_cpu(qkv) {
        return Ok(qkv
            .contiguous()?
            .apply_op1(attention::AttentionOp { heads })?);
    }
    attention_reference(qkv, heads)
}

/// candle's composition of [`attention`].
pub fn attention_reference(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = qkv.dims().to_vec();
    let (b, c) = (dims[0], dims[1] / 3);
    let (hd, n) = (c / heads, dims[2..].iter().product::<usize>());
    let qkv = qkv.reshape((b, 3, heads, hd, n))?;
    let q = qkv.narrow(1, 0, 1)?.reshape((b * heads, hd, n))?;
    let k = qkv.narrow(1, 1, 1)?.reshape((b * heads, hd, n))?;
    let v = qkv.narrow(1, 2, 1)?.reshape((b * heads, hd, n))?;
    let scale = 1.0 / (hd as f64).sqrt();
    // logits[i, j] = q_i · k_j over channels: (B·h, N, N)
    let logits = (q.t()?.contiguous()?.matmul(&k.contiguous()?)? * scale)?;
    let attn = softmax_last_dim(&logits)?;
    // out[:, c, i] = Σ_j v[c, j] attn[i, j]
    let out = v.contiguous()?.matmul(&attn.t()?.contiguous()?)?;
    let mut shape = dims;
    shape[1] = c;
    Ok(out.reshape(shape)?)
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
    /// Factor applied to the gradient first (gradient-norm clipping; 1 for none).
    pub grad_scale: f64,
}

/// One AdamW update of `var` in place, updating its moments `m` and `v`, which must not share
/// storage with anything else (on the CPU they are written in place).
pub fn adamw_step(
    var: &candle_core::Var,
    m: &mut Tensor,
    v: &mut Tensor,
    g: &Tensor,
    p: AdamWStep,
) -> Result<()> {
    let theta = var.as_tensor();
    if fast_cpu(theta) && [&*m, &*v, g].iter().all(|t| fast_cpu(t)) {
        if shares_storage(m, v) {
            return Err(crate::Error::InvalidModel(
                "the AdamW moments m and v share storage; give each its own tensor".into(),
            ));
        }
        let g = g.contiguous()?;
        for (moment, beta, square) in [(&*m, p.beta1, false), (&*v, p.beta2, true)] {
            moment.inplace_op2(
                &g,
                &optim::MomentUpdate {
                    beta: beta as f32,
                    one_minus_beta: (1.0 - beta) as f32,
                    grad_scale: p.grad_scale as f32,
                    square,
                },
            )?;
        }
        theta.inplace_op3(
            m,
            v,
            &optim::AdamWParamUpdate {
                lr: p.lr as f32,
                decay: (1.0 - p.lr * p.weight_decay) as f32,
                eps: p.eps as f32,
                inv_bias_correction1: (1.0 / p.bias_correction1) as f32,
                inv_bias_correction2: (1.0 / p.bias_correction2) as f32,
            },
        )?;
        return Ok(());
    }
    let scaled;
    let g = if p.grad_scale == 1.0 {
        g
    } else {
        scaled = (g * p.grad_scale)?;
        &scaled
    };
    *m = ((&*m * p.beta1)? + (g * (1.0 - p.beta1))?)?;
    *v = ((&*v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
    let m_hat = (&*m / p.bias_correction1)?;
    let v_hat = (&*v / p.bias_correction2)?;
    let update = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
    let next = ((theta * (1.0 - p.lr * p.weight_decay))? - (update * p.lr)?)?;
    var.set(&next)?;
    Ok(())
}

/// Whether two tensors are views of one storage.
fn shares_storage(a: &Tensor, b: &Tensor) -> bool {
    // One lock at a time: two read guards held together could deadlock against a writer
    // waiting on the same storage.
    let address = |t: &Tensor| {
        let (s, _) = t.storage_and_layout();
        &*s as *const _ as usize
    };
    address(a) == address(b)
}

/// `shadow ← decay·shadow + (1 − decay)·theta`; on the CPU in place, so `shadow` must not share
/// storage with anything else.
pub fn ema_update(shadow: &mut Tensor, theta: &Tensor, decay: f64) -> Result<()> {
    if fast_cpu(shadow) && fast_cpu(theta) {
        shadow.inplace_op2(
            &theta.contiguous()?,
            &optim::EmaUpdate {
                decay: decay as f32,
                one_minus_decay: (1.0 - decay) as f32,
            },
        )?;
    } else {
        *shadow = ((&*shadow * decay)? + (theta * (1.0 - decay))?)?.detach();
    }
    Ok(())
}

/// Σ x² over every element, in f64.
pub fn sum_of_squares(x: &Tensor) -> Result<f64> {
    let s = if fast_cpu(x) {
        x.contiguous()?.apply_op1_no_bwd(&optim::SumOfSquares)?
    } else {
        x.sqr()?.sum_all()?.to_dtype(DType::F64)?
    };
    Ok(s.to_scalar::<f64>()?)
}
