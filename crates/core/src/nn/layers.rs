//! The few layer types the U-Net is made of. Each forwards through [`crate::ops`], the one place
//! that decides how an op runs on a device (fused CPU kernels or candle's own ops).

use candle_core::{Module, Tensor};

use crate::error::Result;
use crate::nn::params::{Init, ParamBuilder};
use crate::ops;

/// Dense layer, PyTorch's default initialisation (U(±1/√fan_in) for weight and bias).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    pub fn new(pb: &ParamBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        let bound = 1.0 / (in_dim as f64).sqrt();
        Ok(Self {
            weight: pb.get((out_dim, in_dim), "weight", Init::Uniform(bound))?,
            bias: pb.get(out_dim, "bias", Init::Uniform(bound))?,
        })
    }
}

impl Linear {
    /// A copy whose weights share storage but are not tracked by autograd (see
    /// [`crate::nn::UNet::detached`]).
    pub fn detached(&self) -> Self {
        Self {
            weight: self.weight.detach(),
            bias: self.bias.detach(),
        }
    }

    /// Multiply-add FLOPs (2 per MAC) of one forward pass over `rows` inputs.
    pub fn flops(&self, rows: usize) -> f64 {
        2.0 * (rows * self.weight.elem_count()) as f64
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }
}

/// The shape and initialisation of a [`Conv2d`]: a square `kernel`, `stride` and `padding`,
/// and whether its weight and bias start at zero (else PyTorch's default initialisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub zero_init: bool,
}

impl Conv2dConfig {
    /// A `kernel × kernel` stride-1 conv padded to keep the image size (odd `kernel`).
    pub fn same(kernel: usize) -> Self {
        Self {
            kernel,
            stride: 1,
            padding: kernel / 2,
            zero_init: false,
        }
    }

    /// A 1×1 conv: a linear map of the channels at every position.
    pub fn pointwise() -> Self {
        Self::same(1)
    }

    /// A 3×3 stride-2 conv with padding 1: halves the image size.
    pub fn downsample() -> Self {
        Self {
            stride: 2,
            ..Self::same(3)
        }
    }

    /// The same conv with weight and bias starting at zero.
    pub fn zeroed(self) -> Self {
        Self {
            zero_init: true,
            ..self
        }
    }
}

/// 2-D convolution with square kernel, PyTorch's default init unless told to start at zero.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    pub fn new(pb: &ParamBuilder, in_ch: usize, out_ch: usize, cfg: Conv2dConfig) -> Result<Self> {
        let Conv2dConfig {
            kernel,
            stride,
            padding,
            zero_init,
        } = cfg;
        let bound = 1.0 / ((in_ch * kernel * kernel) as f64).sqrt();
        let w_init = if zero_init {
            Init::Zeros
        } else {
            Init::Uniform(bound)
        };
        let b_init = if zero_init {
            Init::Zeros
        } else {
            Init::Uniform(bound)
        };
        Ok(Self {
            weight: pb.get((out_ch, in_ch, kernel, kernel), "weight", w_init)?,
            bias: pb.get(out_ch, "bias", b_init)?,
            stride,
            padding,
        })
    }

    /// A copy whose weights share storage but are not tracked by autograd.
    pub fn detached(&self) -> Self {
        Self {
            weight: self.weight.detach(),
            bias: self.bias.detach(),
            ..*self
        }
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Output side lengths for an `h × w` input.
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let k = self.weight.dims()[2];
        let f = |n: usize| (n + 2 * self.padding - k) / self.stride + 1;
        (f(h), f(w))
    }

    /// Multiply-add FLOPs (2 per MAC) of one forward pass over a (batch, C_in, h, w) input.
    pub fn flops(&self, batch: usize, h: usize, w: usize) -> f64 {
        let (ho, wo) = self.out_size(h, w);
        2.0 * (batch * ho * wo * self.weight.elem_count()) as f64
    }

    fn options(&self, upsample: usize) -> ops::ConvOptions {
        ops::ConvOptions {
            stride: self.stride,
            padding: self.padding,
            upsample,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d(x, &self.weight, &self.bias, self.stride, self.padding)
    }

    /// The convolution with `extra` (B, C_out) added to the bias of each sample.
    pub fn forward_with_sample_bias(&self, x: &Tensor, extra: &Tensor) -> Result<Tensor> {
        let bias = extra.broadcast_add(&self.bias)?;
        ops::conv2d_fused(x, &self.weight, &bias, self.options(1), None)
    }

    /// `residual + conv(x)`.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        ops::conv2d_fused(x, &self.weight, &self.bias, self.options(1), Some(residual))
    }

    /// The convolution of x nearest-upsampled by `factor`.
    pub fn forward_upsampled(&self, x: &Tensor, factor: usize) -> Result<Tensor> {
        ops::conv2d_fused(x, &self.weight, &self.bias, self.options(factor), None)
    }
}

/// GroupNorm with learned per-channel scale and shift; `forward_silu` fuses the SiLU that
/// follows every norm in the U-Net.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    gamma: Tensor,
    beta: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(pb: &ParamBuilder, groups: usize, channels: usize) -> Result<Self> {
        Ok(Self {
            gamma: pb.get(channels, "weight", Init::Ones)?,
            beta: pb.get(channels, "bias", Init::Zeros)?,
            groups,
            eps: 1e-5,
        })
    }

    /// A copy whose weights share storage but are not tracked by autograd.
    pub fn detached(&self) -> Self {
        Self {
            gamma: self.gamma.detach(),
            beta: self.beta.detach(),
            ..*self
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::group_norm(x, self.groups, &self.gamma, &self.beta, self.eps, false)
    }

    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        ops::group_norm(x, self.groups, &self.gamma, &self.beta, self.eps, true)
    }

    /// Norm, SiLU, then a dropout keep-mask (entries 0 or 1/(1 − p)) if given.
    pub fn forward_silu_dropout(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        ops::group_norm_masked(
            x,
            self.groups,
            &self.gamma,
            &self.beta,
            self.eps,
            true,
            mask,
        )
    }
}
