//! The DDPM U-Net of Ho et al. 2020 (their `diffusion_tf/models/unet.py`): wide ResBlocks with
//! GroupNorm and SiLU, a sinusoidal time embedding through a two-layer MLP, single-head
//! self-attention at chosen resolutions, strided-conv downsampling, nearest-neighbour upsampling,
//! skip connections from every down block. Initialisation follows the reference: PyTorch's
//! defaults everywhere, except the layers Ho initialises at zero (each ResBlock's second conv,
//! each attention output projection and the final conv), so the network starts as the identity
//! plus a zero output.

use candle_core::{Module, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::layers::{Conv2d, Conv2dConfig, GroupNorm, Linear};
use crate::nn::params::ParamBuilder;
use crate::nn::preset::Preset;
use crate::nn::text_encoder::{TextEncoder, TextEncoderConfig};
use crate::ops;
use crate::rng::Rng;
use crate::text::Tokenizer;

/// Architecture hyper-parameters. `Default` is the `mnist` preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    pub in_channels: usize,
    /// Channels at the first level; level i has `base_channels * channel_mult[i]`.
    pub base_channels: usize,
    pub channel_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Downsampling factors at which self-attention is used (1 = full resolution, 4 = a quarter
    /// of the side): independent of the image size, so a preset works for any input.
    pub attention_at: Vec<usize>,
    pub attention_heads: usize,
    pub dropout: f64,
    pub norm_groups: usize,
    /// Width of an optional conditioning vector (class or caption embedding) that is projected
    /// and added to the time embedding.
    pub cond_dim: Option<usize>,
    /// A caption encoder trained with the network (classifier-free guidance): its output is
    /// the conditioning vector, so `cond_dim` equals its `out_dim`.
    #[serde(default)]
    pub text: Option<CaptionConditioning>,
    /// Twice the output channels: ε (or x_0, v) and, per pixel, v ∈ [−1, 1] interpolating the
    /// reverse variance between β̃_t and β_t in log space (Nichol & Dhariwal 2021, §3.1).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub learn_sigma: bool,
}

/// The caption encoder of a text-conditioned U-Net and the vocabulary it reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptionConditioning {
    pub tokenizer: Tokenizer,
    pub encoder: TextEncoderConfig,
}

impl CaptionConditioning {
    /// A small transformer over a dataset's caption vocabulary, as wide as the time embedding.
    pub fn new(tokenizer: Tokenizer, out_dim: usize) -> Self {
        let encoder = TextEncoderConfig {
            vocab_size: tokenizer.len(),
            max_len: tokenizer.max_len,
            width: 64,
            layers: 2,
            heads: 4,
            out_dim,
        };
        Self { tokenizer, encoder }
    }
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self::mnist()
    }
}

impl UNetConfig {
    /// A few thousand parameters: for tests.
    pub fn tiny() -> Self {
        Self {
            in_channels: 1,
            base_channels: 8,
            channel_mult: vec![1, 2],
            num_res_blocks: 1,
            attention_at: vec![2],
            attention_heads: 1,
            dropout: 0.0,
            norm_groups: 4,
            cond_dim: None,
            text: None,
            learn_sigma: false,
        }
    }

    /// The quickstart's model for the 16×16 shapes: base 32, multipliers (1, 2), one ResBlock
    /// per level, attention at half the side.
    pub fn small() -> Self {
        Self {
            in_channels: 3,
            base_channels: 32,
            channel_mult: vec![1, 2],
            num_res_blocks: 1,
            attention_at: vec![2],
            attention_heads: 1,
            dropout: 0.0,
            norm_groups: 8,
            cond_dim: None,
            text: None,
            learn_sigma: false,
        }
    }

    /// 1.16 M parameters: base 32, multipliers (1, 2, 2), two ResBlocks per level, attention at
    /// a quarter of the side (7×7 on 28×28 digits).
    pub fn mnist() -> Self {
        Self {
            in_channels: 1,
            base_channels: 32,
            channel_mult: vec![1, 2, 2],
            num_res_blocks: 2,
            attention_at: vec![4],
            attention_heads: 1,
            dropout: 0.1,
            norm_groups: 32,
            cond_dim: None,
            text: None,
            learn_sigma: false,
        }
    }

    /// Ho et al.'s 35.7 M-parameter CIFAR-10 model: base 128, (1, 2, 2, 2), attention at 16×16.
    pub fn cifar() -> Self {
        Self {
            in_channels: 3,
            base_channels: 128,
            channel_mult: vec![1, 2, 2, 2],
            num_res_blocks: 2,
            attention_at: vec![2],
            attention_heads: 1,
            dropout: 0.1,
            norm_groups: 32,
            cond_dim: None,
            text: None,
            learn_sigma: false,
        }
    }

    /// The preset named `name` (see [`Preset`]).
    pub fn preset(name: &str) -> Result<Self> {
        name.parse::<Preset>()
            .map(Preset::config)
            .map_err(|e| Error::InvalidModel(e.to_string()))
    }

    pub fn time_embed_dim(&self) -> usize {
        self.base_channels * 4
    }

    /// Checks the configuration against an input size.
    pub fn validate(&self, image_size: usize) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidModel(m));
        if self.in_channels == 0 || self.base_channels == 0 || self.channel_mult.is_empty() {
            return bad("in_channels, base_channels and channel_mult must be non-empty".into());
        }
        if self.channel_mult.contains(&0) {
            return bad("channel_mult entries must be positive".into());
        }
        if !self.base_channels.is_multiple_of(2) {
            return bad(format!(
                "base_channels = {} must be even (the sinusoidal embedding has sin and cos halves)",
                self.base_channels
            ));
        }
        for &m in &self.channel_mult {
            let ch = m * self.base_channels;
            if self.norm_groups == 0 || !ch.is_multiple_of(self.norm_groups) {
                return bad(format!(
                    "norm_groups = {} does not divide a level's {ch} channels",
                    self.norm_groups
                ));
            }
            if self.attention_heads == 0 || !ch.is_multiple_of(self.attention_heads) {
                return bad(format!(
                    "attention_heads = {} does not divide a level's {ch} channels",
                    self.attention_heads
                ));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout = {} must be in [0, 1)", self.dropout));
        }
        if let Some(text) = &self.text {
            text.encoder.validate()?;
            if self.cond_dim != Some(text.encoder.out_dim) {
                return bad(format!(
                    "cond_dim = {:?} must equal the caption encoder's out_dim {}",
                    self.cond_dim, text.encoder.out_dim
                ));
            }
        }
        let factor = 1usize << (self.channel_mult.len() - 1);
        if image_size == 0 || !image_size.is_multiple_of(factor) {
            return bad(format!(
                "image size {image_size} must be divisible by {factor} ({} levels halve it {} times)",
                self.channel_mult.len(),
                self.channel_mult.len() - 1
            ));
        }
        Ok(())
    }
}

/// Sinusoidal embedding of (possibly fractional) timesteps, as Ho's `get_timestep_embedding`.
pub fn timestep_embedding(t: &[f32], dim: usize, device: &candle_core::Device) -> Result<Tensor> {
    let half = dim / 2;
    let scale = (10000f64).ln() / (half.max(2) - 1) as f64;
    let freqs: Vec<f64> = (0..half).map(|k| (-(k as f64) * scale).exp()).collect();
    let mut v = Vec::with_capacity(t.len() * dim);
    for &ti in t {
        for f in &freqs {
            v.push((ti as f64 * f).sin() as f32);
        }
        for f in &freqs {
            v.push((ti as f64 * f).cos() as f32);
        }
    }
    Ok(Tensor::from_vec(v, (t.len(), dim), device)?)
}

/// A dropout keep-mask for `x` from our seeded generator; `None` in evaluation mode.
fn dropout_mask(x: &Tensor, p: f64, rng: Option<&mut Rng>) -> Result<Option<Tensor>> {
    match rng {
        Some(rng) if p > 0.0 => Ok(Some(rng.dropout_mask(x.shape(), p, x.device())?)),
        _ => Ok(None),
    }
}

#[derive(Debug, Clone)]
struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    temb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    skip: Option<Conv2d>,
    dropout: f64,
}

impl ResBlock {
    fn new(pb: &ParamBuilder, cfg: &UNetConfig, in_ch: usize, out_ch: usize) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::new(&pb.pp("norm1"), cfg.norm_groups, in_ch)?,
            conv1: Conv2d::new(&pb.pp("conv1"), in_ch, out_ch, Conv2dConfig::same(3))?,
            temb_proj: Linear::new(&pb.pp("temb_proj"), cfg.time_embed_dim(), out_ch)?,
            norm2: GroupNorm::new(&pb.pp("norm2"), cfg.norm_groups, out_ch)?,
            conv2: Conv2d::new(
                &pb.pp("conv2"),
                out_ch,
                out_ch,
                Conv2dConfig::same(3).zeroed(),
            )?,
            skip: if in_ch != out_ch {
                Some(Conv2d::new(
                    &pb.pp("skip"),
                    in_ch,
                    out_ch,
                    Conv2dConfig::pointwise(),
                )?)
            } else {
                None
            },
            dropout: cfg.dropout,
        })
    }

    /// `temb_act` is SiLU(time embedding), shared by every block.
    fn forward(&self, x: &Tensor, temb_act: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
        // The time embedding enters as a per-sample bias of conv1.
        let t = self.temb_proj.forward(temb_act)?;
        let h = self
            .conv1
            .forward_with_sample_bias(&self.norm1.forward_silu(x)?, &t)?;
        let mask = dropout_mask(&h, self.dropout, rng)?;
        let h = self.norm2.forward_silu_dropout(&h, mask.as_ref())?;
        let skip = match &self.skip {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        self.conv2.forward_residual(&h, &skip)
    }
}

/// Multi-head self-attention over spatial positions (Ho: one head), with a residual.
#[derive(Debug, Clone)]
struct AttentionBlock {
    norm: GroupNorm,
    qkv: Conv2d,
    proj_out: Conv2d,
    heads: usize,
}

impl AttentionBlock {
    fn new(pb: &ParamBuilder, cfg: &UNetConfig, ch: usize) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::new(&pb.pp("norm"), cfg.norm_groups, ch)?,
            qkv: Conv2d::new(&pb.pp("qkv"), ch, 3 * ch, Conv2dConfig::pointwise())?,
            proj_out: Conv2d::new(
                &pb.pp("proj_out"),
                ch,
                ch,
                Conv2dConfig::pointwise().zeroed(),
            )?,
            heads: cfg.attention_heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let qkv = self.qkv.forward(&self.norm.forward(x)?)?;
        let out = ops::attention(&qkv, self.heads)?;
        self.proj_out.forward_residual(&out, x)
    }
}

impl ResBlock {
    fn detached(&self) -> Self {
        Self {
            norm1: self.norm1.detached(),
            conv1: self.conv1.detached(),
            temb_proj: self.temb_proj.detached(),
            norm2: self.norm2.detached(),
            conv2: self.conv2.detached(),
            skip: self.skip.as_ref().map(Conv2d::detached),
            dropout: self.dropout,
        }
    }

    fn flops(&self, b: usize, h: usize, w: usize) -> f64 {
        let skip = self.skip.as_ref().map_or(0.0, |s| s.flops(b, h, w));
        self.conv1.flops(b, h, w) + self.temb_proj.flops(b) + self.conv2.flops(b, h, w) + skip
    }
}

impl AttentionBlock {
    fn detached(&self) -> Self {
        Self {
            norm: self.norm.detached(),
            qkv: self.qkv.detached(),
            proj_out: self.proj_out.detached(),
            heads: self.heads,
        }
    }

    /// The two 1×1 convs plus QKᵀ and attn·V (2·N²·C multiply-adds per image).
    fn flops(&self, b: usize, h: usize, w: usize) -> f64 {
        let c = self.proj_out.out_channels();
        let n = h * w;
        self.qkv.flops(b, h, w) + self.proj_out.flops(b, h, w) + 4.0 * (b * n * n * c) as f64
    }
}

#[derive(Debug, Clone)]
enum Block {
    Res(ResBlock),
    Attn(AttentionBlock),
    Down(Conv2d),
    Up(Conv2d),
}

impl Block {
    fn forward(&self, x: &Tensor, temb_act: &Tensor, rng: &mut Option<&mut Rng>) -> Result<Tensor> {
        match self {
            Block::Res(r) => r.forward(x, temb_act, rng.as_deref_mut()),
            Block::Attn(a) => a.forward(x),
            Block::Down(c) => c.forward(x),
            Block::Up(c) => c.forward_upsampled(x, 2),
        }
    }
}

impl Block {
    fn detached(&self) -> Self {
        match self {
            Block::Res(r) => Block::Res(r.detached()),
            Block::Attn(a) => Block::Attn(a.detached()),
            Block::Down(c) => Block::Down(c.detached()),
            Block::Up(c) => Block::Up(c.detached()),
        }
    }

    /// FLOPs of the block and its output side lengths.
    fn flops(&self, b: usize, h: usize, w: usize) -> (f64, usize, usize) {
        match self {
            Block::Res(r) => (r.flops(b, h, w), h, w),
            Block::Attn(a) => (a.flops(b, h, w), h, w),
            Block::Down(c) => {
                let (ho, wo) = c.out_size(h, w);
                (c.flops(b, h, w), ho, wo)
            }
            Block::Up(c) => (c.flops(b, 2 * h, 2 * w), 2 * h, 2 * w),
        }
    }
}

/// The network ε_θ(x_t, t[, c]).
#[derive(Debug, Clone)]
pub struct UNet {
    pub config: UNetConfig,
    temb1: Linear,
    temb2: Linear,
    cond_proj: Option<Linear>,
    text: Option<TextEncoder>,
    conv_in: Conv2d,
    /// Each down stage is one block whose output is kept as a skip.
    down: Vec<Vec<Block>>,
    mid: Vec<Block>,
    /// Each up stage starts by concatenating one skip.
    up: Vec<Vec<Block>>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    pub fn new(pb: &ParamBuilder, cfg: &UNetConfig) -> Result<Self> {
        let ch = cfg.base_channels;
        let temb_dim = cfg.time_embed_dim();
        let levels = cfg.channel_mult.len();
        let temb1 = Linear::new(&pb.pp("temb.0"), ch, temb_dim)?;
        let temb2 = Linear::new(&pb.pp("temb.1"), temb_dim, temb_dim)?;
        let cond_proj = match cfg.cond_dim {
            Some(d) => Some(Linear::new(&pb.pp("cond_proj"), d, temb_dim)?),
            None => None,
        };
        let text = match &cfg.text {
            Some(t) => Some(TextEncoder::new(&pb.pp("text"), &t.encoder)?),
            None => None,
        };
        let conv_in = Conv2d::new(
            &pb.pp("conv_in"),
            cfg.in_channels,
            ch,
            Conv2dConfig::same(3),
        )?;

        let mut down = Vec::new();
        let mut skip_ch = vec![ch];
        let mut cur = ch;
        let mut ds = 1;
        for (level, &mult) in cfg.channel_mult.iter().enumerate() {
            let out = ch * mult;
            for i in 0..cfg.num_res_blocks {
                let p = pb.pp(format!("down.{level}.{i}"));
                let mut stage = vec![Block::Res(ResBlock::new(&p.pp("res"), cfg, cur, out)?)];
                cur = out;
                if cfg.attention_at.contains(&ds) {
                    stage.push(Block::Attn(AttentionBlock::new(&p.pp("attn"), cfg, cur)?));
                }
                down.push(stage);
                skip_ch.push(cur);
            }
            if level + 1 < levels {
                let p = pb.pp(format!("down.{level}.downsample"));
                down.push(vec![Block::Down(Conv2d::new(
                    &p,
                    cur,
                    cur,
                    Conv2dConfig::downsample(),
                )?)]);
                skip_ch.push(cur);
                ds *= 2;
            }
        }

        let mid = vec![
            Block::Res(ResBlock::new(&pb.pp("mid.res1"), cfg, cur, cur)?),
            Block::Attn(AttentionBlock::new(&pb.pp("mid.attn"), cfg, cur)?),
            Block::Res(ResBlock::new(&pb.pp("mid.res2"), cfg, cur, cur)?),
        ];

        let mut up = Vec::new();
        for (level, &mult) in cfg.channel_mult.iter().enumerate().rev() {
            let out = ch * mult;
            for i in 0..=cfg.num_res_blocks {
                let p = pb.pp(format!("up.{level}.{i}"));
                let skip = skip_ch.pop().expect("one skip per down stage");
                let mut stage = vec![Block::Res(ResBlock::new(
                    &p.pp("res"),
                    cfg,
                    cur + skip,
                    out,
                )?)];
                cur = out;
                if cfg.attention_at.contains(&ds) {
                    stage.push(Block::Attn(AttentionBlock::new(&p.pp("attn"), cfg, cur)?));
                }
                if level > 0 && i == cfg.num_res_blocks {
                    let p = pb.pp(format!("up.{level}.upsample"));
                    stage.push(Block::Up(Conv2d::new(&p, cur, cur, Conv2dConfig::same(3))?));
                    ds /= 2;
                }
                up.push(stage);
            }
        }

        Ok(Self {
            config: cfg.clone(),
            temb1,
            temb2,
            cond_proj,
            text,
            conv_in,
            down,
            mid,
            up,
            norm_out: GroupNorm::new(&pb.pp("norm_out"), cfg.norm_groups, cur)?,
            conv_out: Conv2d::new(
                &pb.pp("conv_out"),
                cur,
                cfg.in_channels * if cfg.learn_sigma { 2 } else { 1 },
                Conv2dConfig::same(3).zeroed(),
            )?,
        })
    }

    /// The conditioning vectors (B, cond_dim) of captions; an empty caption is ∅, the
    /// unconditional input of classifier-free guidance. Unknown words are read as `<unk>`.
    pub fn embed_captions(
        &self,
        captions: &[&str],
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        match (&self.text, &self.config.text) {
            (Some(enc), Some(cfg)) => enc.forward(&cfg.tokenizer.encode(captions), device),
            _ => Err(Error::Guidance(
                "this model was not trained on captions (train it with captions = true for \
                 classifier-free guidance)"
                    .into(),
            )),
        }
    }

    /// A copy for inference: the weights share storage with this network (so later updates
    /// show through) but are not autograd variables, so a forward pass records no graph and
    /// frees each activation as soon as it is used, like PyTorch's `no_grad`. Its outputs
    /// carry no gradient with respect to the weights.
    pub fn detached(&self) -> UNet {
        let stages = |v: &Vec<Vec<Block>>| -> Vec<Vec<Block>> {
            v.iter()
                .map(|s| s.iter().map(Block::detached).collect())
                .collect()
        };
        UNet {
            config: self.config.clone(),
            temb1: self.temb1.detached(),
            temb2: self.temb2.detached(),
            cond_proj: self.cond_proj.as_ref().map(Linear::detached),
            // Small, and used once per sampling run: kept as it is.
            text: self.text.clone(),
            conv_in: self.conv_in.detached(),
            down: stages(&self.down),
            mid: self.mid.iter().map(Block::detached).collect(),
            up: stages(&self.up),
            norm_out: self.norm_out.detached(),
            conv_out: self.conv_out.detached(),
        }
    }

    /// FLOPs of one forward pass over a (batch, C, height, width) input (2 per multiply-add),
    /// counted from the layer shapes: convolutions, linear layers and the attention matmuls.
    /// Norms, activations and other elementwise work are not counted.
    pub fn flops(&self, batch: usize, height: usize, width: usize) -> f64 {
        let mut total = self.temb1.flops(batch) + self.temb2.flops(batch);
        if let Some(p) = &self.cond_proj {
            total += p.flops(batch);
        }
        total += self.conv_in.flops(batch, height, width);
        let (mut h, mut w) = (height, width);
        for block in self.down.iter().flatten() {
            let (f, ho, wo) = block.flops(batch, h, w);
            (total, h, w) = (total + f, ho, wo);
        }
        for block in &self.mid {
            total += block.flops(batch, h, w).0;
        }
        // Concatenating a skip changes channels, not sides.
        for stage in &self.up {
            for block in stage {
                let (f, ho, wo) = block.flops(batch, h, w);
                (total, h, w) = (total + f, ho, wo);
            }
        }
        total + self.conv_out.flops(batch, h, w)
    }

    /// `x`: (B, C, H, W) noisy images; `t`: the integer timestep of each row; `cond`: optional
    /// (B, cond_dim) conditioning (none for a caption-conditioned network means ∅); `rng`: dropout randomness in training, `None` in evaluation.
    pub fn forward(
        &self,
        x: &Tensor,
        t: &[usize],
        cond: Option<&Tensor>,
        mut rng: Option<&mut Rng>,
    ) -> Result<Tensor> {
        let tf: Vec<f32> = t.iter().map(|&v| v as f32).collect();
        let emb = timestep_embedding(&tf, self.config.base_channels, x.device())?;
        let mut temb = self
            .temb2
            .forward(&ops::silu(&self.temb1.forward(&emb)?)?)?;
        // A caption-conditioned network given no caption reads ∅.
        let null;
        let cond = match (cond, &self.text) {
            (None, Some(_)) => {
                null = self.embed_captions(&vec![""; x.dim(0)?], x.device())?;
                Some(&null)
            }
            (c, _) => c,
        };
        match (&self.cond_proj, cond) {
            (Some(p), Some(c)) => temb = (temb + p.forward(c)?)?,
            (None, Some(_)) => {
                return Err(Error::InvalidModel(
                    "a conditioning vector was given to an unconditional U-Net".into(),
                ));
            }
            _ => {}
        }
        let temb_act = ops::silu(&temb)?;

        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for stage in &self.down {
            for block in stage {
                h = block.forward(&h, &temb_act, &mut rng)?;
            }
            skips.push(h.clone());
        }
        for block in &self.mid {
            h = block.forward(&h, &temb_act, &mut rng)?;
        }
        for stage in &self.up {
            let skip = skips.pop().expect("one skip per up stage");
            h = Tensor::cat(&[&h, &skip], 1)?;
            for block in stage {
                h = block.forward(&h, &temb_act, &mut rng)?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}
