//! A small transformer over caption tokens: token and position embeddings, pre-norm blocks of
//! masked self-attention and an MLP, a final LayerNorm, then the mean over real (non-pad)
//! tokens projected to `out_dim`. Used by CLIP's text tower and by the caption conditioning of
//! classifier-free-guided U-Nets.

use candle_core::{D, DType, Device, Module, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::layers::Linear;
use crate::nn::params::{Init, ParamBuilder};
use crate::ops;
use crate::text::{Encoded, PAD};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextEncoderConfig {
    pub vocab_size: usize,
    pub max_len: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub out_dim: usize,
}

impl TextEncoderConfig {
    pub fn validate(&self) -> Result<()> {
        if self.heads == 0
            || !self.width.is_multiple_of(self.heads)
            || self.vocab_size < 4
            || self.max_len == 0
        {
            return Err(Error::InvalidModel(format!(
                "text encoder: width {} must be a multiple of heads {}, with a vocabulary and a length",
                self.width, self.heads
            )));
        }
        Ok(())
    }
}

/// LayerNorm over the last dimension, from differentiable primitives.
#[derive(Debug, Clone)]
struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
}

impl LayerNorm {
    fn new(pb: &ParamBuilder, dim: usize) -> Result<Self> {
        Ok(Self {
            gamma: pb.get(dim, "weight", Init::Ones)?,
            beta: pb.get(dim, "bias", Init::Zeros)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
        Ok(xn.broadcast_mul(&self.gamma)?.broadcast_add(&self.beta)?)
    }
}

/// A dense layer over the last dimension of (B, L, W) (candle's matmul does not broadcast a
/// rank-3 input against a rank-2 weight).
fn dense(layer: &Linear, x: &Tensor) -> Result<Tensor> {
    let (b, l, w) = x.dims3()?;
    let y = layer.forward(&x.reshape((b * l, w))?)?;
    let out = y.dim(1)?;
    Ok(y.reshape((b, l, out))?)
}

#[derive(Debug, Clone)]
struct Block {
    ln1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl Block {
    fn new(pb: &ParamBuilder, w: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            ln1: LayerNorm::new(&pb.pp("ln1"), w)?,
            qkv: Linear::new(&pb.pp("qkv"), w, 3 * w)?,
            proj: Linear::new(&pb.pp("proj"), w, w)?,
            ln2: LayerNorm::new(&pb.pp("ln2"), w)?,
            fc1: Linear::new(&pb.pp("fc1"), w, 4 * w)?,
            fc2: Linear::new(&pb.pp("fc2"), 4 * w, w)?,
            heads,
        })
    }

    /// `x`: (B, L, W); `key_bias`: (B, 1, 1, L) with −1e9 at padding.
    fn forward(&self, x: &Tensor, key_bias: &Tensor) -> Result<Tensor> {
        let (b, l, w) = x.dims3()?;
        let (h, hd) = (self.heads, w / self.heads);
        let qkv = dense(&self.qkv, &self.ln1.forward(x)?)?.reshape((b, l, 3, h, hd))?;
        let part = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, i, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?) // (B, H, L, hd)
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let logits =
            (q.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?.broadcast_add(key_bias)?;
        let attn = ops::softmax_last_dim(&logits)?;
        let out = attn
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, l, w))?;
        let x = (x + dense(&self.proj, &out)?)?;
        let m = dense(
            &self.fc2,
            &ops::silu(&dense(&self.fc1, &self.ln2.forward(&x)?)?)?,
        )?;
        Ok((x + m)?)
    }
}

#[derive(Debug, Clone)]
pub struct TextEncoder {
    pub config: TextEncoderConfig,
    tokens: Tensor,
    positions: Tensor,
    blocks: Vec<Block>,
    ln_final: LayerNorm,
    out: Linear,
}

impl TextEncoder {
    pub fn new(pb: &ParamBuilder, cfg: &TextEncoderConfig) -> Result<Self> {
        cfg.validate()?;
        let w = cfg.width;
        Ok(Self {
            config: cfg.clone(),
            // PyTorch's nn.Embedding starts at N(0, 1); a uniform of the same variance.
            tokens: pb.get((cfg.vocab_size, w), "tokens", Init::Uniform(3f64.sqrt()))?,
            positions: pb.get(
                (cfg.max_len, w),
                "positions",
                Init::Uniform(0.02 * 3f64.sqrt()),
            )?,
            blocks: (0..cfg.layers)
                .map(|i| Block::new(&pb.pp(format!("block.{i}")), w, cfg.heads))
                .collect::<Result<_>>()?,
            ln_final: LayerNorm::new(&pb.pp("ln_final"), w)?,
            out: Linear::new(&pb.pp("out"), w, cfg.out_dim)?,
        })
    }

    /// (B, out_dim) embeddings of encoded captions.
    pub fn forward(&self, enc: &Encoded, device: &Device) -> Result<Tensor> {
        let (b, l) = (enc.batch, enc.max_len.min(self.config.max_len));
        let ids: Vec<u32> = (0..b)
            .flat_map(|i| {
                enc.ids[i * enc.max_len..i * enc.max_len + l]
                    .iter()
                    .copied()
            })
            .collect();
        let real: Vec<f32> = ids
            .iter()
            .map(|&t| if t == PAD { 0.0 } else { 1.0 })
            .collect();
        let ids_t = Tensor::from_vec(ids, b * l, device)?;
        let x = self
            .tokens
            .index_select(&ids_t, 0)?
            .reshape((b, l, self.config.width))?;
        let x = x.broadcast_add(&self.positions.narrow(0, 0, l)?.unsqueeze(0)?)?;
        let mask = Tensor::from_vec(real, (b, l), device)?;
        let key_bias = ((mask.clone() - 1.0)? * 1e9)?.reshape((b, 1, 1, l))?;
        let mut x = x;
        for blk in &self.blocks {
            x = blk.forward(&x, &key_bias)?;
        }
        let x = self.ln_final.forward(&x)?;
        // Mean over real tokens (every caption has at least one: <null> or a word).
        let m = mask.unsqueeze(2)?;
        let pooled = x
            .broadcast_mul(&m)?
            .sum(1)?
            .broadcast_div(&m.sum(1)?.clamp(1f32, f32::MAX)?)?;
        Ok(self.out.forward(&pooled)?.to_dtype(DType::F32)?)
    }
}
