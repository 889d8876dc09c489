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

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
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
    pub fn new(
        pb: &ParamBuilder,
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        zero_init: bool,
    ) -> Result<Self> {
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

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d(x, &self.weight, &self.bias, self.stride, self.padding)
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

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::group_norm(x, self.groups, &self.gamma, &self.beta, self.eps, false)
    }

    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        ops::group_norm(x, self.groups, &self.gamma, &self.beta, self.eps, true)
    }
}
