//! A CLIP trained on *noised* images (Nichol et al. 2021, GLIDE): an image encoder f(x_t, t)
//! and a text encoder g(c) mapped into one space, trained with a symmetric InfoNCE loss and a
//! learned temperature on pairs (x_t, caption) at random t.
//!
//! Two choices worth knowing:
//! - f receives t as its noise level, log SNR(t), not as an index: one CLIP then guides U-Nets
//!   trained with any schedule and any T, since equal noise levels mean equal inputs.
//! - A batch holds many images that one caption describes (ten MNIST classes in a batch of
//!   128), so the InfoNCE targets are all matching pairs rather than the diagonal alone;
//!   treating a second "seven" as a negative would teach the model to tell sevens apart.

use candle_core::{D, DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::data::{DatasetKind, ImageDataset, batch_indices};
use crate::diffusion::Diffusion;
use crate::error::{Error, Result};
use crate::nn::layers::{Conv2d, Conv2dConfig, GroupNorm, Linear};
use crate::nn::params::{Init, ParamBuilder, ParamStore};
use crate::nn::text_encoder::{TextEncoder, TextEncoderConfig};
use crate::nn::unet::timestep_embedding;
use crate::ops;
use crate::rng::Rng;
use crate::schedule::{NoiseSchedule, ScheduleConfig, ScheduleKind};
use crate::text::{Tokenizer, class_prompts, dataset_tokenizer, phrasings, satisfies};
use crate::train::optim::{AdamW, AdamWConfig};

/// Maps log SNR to the range the sinusoidal embedding was made for (0..1000): clean images
/// (λ ≥ 15) at 1000, pure noise (λ ≤ −15) at 0.
pub fn noise_level_code(log_snr: f64) -> f32 {
    let l = if log_snr.is_nan() {
        -15.0
    } else {
        log_snr.clamp(-15.0, 15.0)
    };
    ((l + 15.0) / 30.0 * 1000.0) as f32
}

/// log SNR of each row's timestep under `schedule`.
pub fn log_snrs(schedule: &NoiseSchedule, t: &[usize]) -> Vec<f64> {
    t.iter().map(|&i| schedule.snr(i).ln()).collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    pub dataset: DatasetKind,
    pub in_channels: usize,
    pub image_size: usize,
    /// Channels of each image stage; each stage halves the side.
    pub channels: Vec<usize>,
    pub embed_dim: usize,
    pub text: TextEncoderConfig,
    pub tokenizer: Tokenizer,
    /// The schedule whose noise levels the encoder is trained on.
    pub schedule: ScheduleConfig,
}

impl ClipConfig {
    /// The default small CLIP for a dataset.
    pub fn for_dataset(kind: DatasetKind, in_channels: usize, image_size: usize) -> Result<Self> {
        let tokenizer = dataset_tokenizer(kind)?;
        let embed_dim = 64;
        Ok(Self {
            dataset: kind,
            in_channels,
            image_size,
            channels: vec![32, 64, 96],
            embed_dim,
            text: TextEncoderConfig {
                vocab_size: tokenizer.len(),
                max_len: tokenizer.max_len,
                width: 64,
                layers: 2,
                heads: 4,
                out_dim: embed_dim,
            },
            tokenizer,
            schedule: ScheduleConfig::new(ScheduleKind::Cosine, 1000),
        })
    }
}

#[derive(Debug, Clone)]
struct Stage {
    conv1: Conv2d,
    norm1: GroupNorm,
    temb: Linear,
    conv2: Conv2d,
    norm2: GroupNorm,
}

/// f(x_t, λ): conv stages with a noise-level embedding added after the first norm of each.
#[derive(Debug, Clone)]
pub struct ImageEncoder {
    conv_in: Conv2d,
    temb1: Linear,
    temb2: Linear,
    stages: Vec<Stage>,
    out: Linear,
    base: usize,
}

fn groups(c: usize) -> usize {
    [8, 4, 2, 1]
        .into_iter()
        .find(|g| c.is_multiple_of(*g))
        .unwrap_or(1)
}

impl ImageEncoder {
    fn new(pb: &ParamBuilder, cfg: &ClipConfig) -> Result<Self> {
        let base = cfg.channels[0];
        let temb_dim = base * 4;
        let mut stages = vec![];
        let mut cur = base;
        for (i, &c) in cfg.channels.iter().enumerate() {
            let p = pb.pp(format!("stage.{i}"));
            stages.push(Stage {
                conv1: Conv2d::new(&p.pp("conv1"), cur, c, Conv2dConfig::same(3))?,
                norm1: GroupNorm::new(&p.pp("norm1"), groups(c), c)?,
                temb: Linear::new(&p.pp("temb"), temb_dim, c)?,
                conv2: Conv2d::new(&p.pp("conv2"), c, c, Conv2dConfig::downsample())?,
                norm2: GroupNorm::new(&p.pp("norm2"), groups(c), c)?,
            });
            cur = c;
        }
        Ok(Self {
            conv_in: Conv2d::new(
                &pb.pp("conv_in"),
                cfg.in_channels,
                base,
                Conv2dConfig::same(3),
            )?,
            temb1: Linear::new(&pb.pp("temb.0"), base, temb_dim)?,
            temb2: Linear::new(&pb.pp("temb.1"), temb_dim, temb_dim)?,
            stages,
            out: Linear::new(&pb.pp("out"), cur, cfg.embed_dim)?,
            base,
        })
    }

    /// Unnormalised (B, D) embedding.
    fn forward(&self, x: &Tensor, log_snr: &[f64]) -> Result<Tensor> {
        use candle_core::Module;
        let codes: Vec<f32> = log_snr.iter().map(|&l| noise_level_code(l)).collect();
        let emb = timestep_embedding(&codes, self.base, x.device())?;
        let temb = ops::silu(
            &self
                .temb2
                .forward(&ops::silu(&self.temb1.forward(&emb)?)?)?,
        )?;
        let mut h = self.conv_in.forward(x)?;
        for s in &self.stages {
            let t = s.temb.forward(&temb)?.unsqueeze(2)?.unsqueeze(3)?;
            h = ops::silu(&s.norm1.forward(&s.conv1.forward(&h)?)?.broadcast_add(&t)?)?;
            h = s.norm2.forward_silu(&s.conv2.forward(&h)?)?;
        }
        let pooled = h.mean(D::Minus1)?.mean(D::Minus1)?;
        Ok(self.out.forward(&pooled)?)
    }
}

fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let n = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .clamp(1e-12f32, f32::MAX)?
        .sqrt()?;
    Ok(x.broadcast_div(&n)?)
}

/// The two towers and the temperature.
#[derive(Debug, Clone)]
pub struct Clip {
    pub config: ClipConfig,
    image: ImageEncoder,
    text: TextEncoder,
    /// log of the logit scale (1/temperature), CLIP's initial value ln(1/0.07).
    log_scale: Tensor,
}

impl Clip {
    pub fn new(pb: &ParamBuilder, cfg: &ClipConfig) -> Result<Self> {
        if cfg.channels.is_empty() || !cfg.channels[0].is_multiple_of(2) {
            return Err(Error::InvalidModel(
                "CLIP channels must be non-empty, the first even".into(),
            ));
        }
        // Starts at zero here; the trainer sets CLIP's initial ln(1/0.07).
        let log_scale = pb.get(1, "log_scale", Init::Zeros)?;
        Ok(Self {
            config: cfg.clone(),
            image: ImageEncoder::new(&pb.pp("image"), cfg)?,
            text: TextEncoder::new(&pb.pp("text"), &cfg.text)?,
            log_scale,
        })
    }

    /// L2-normalised f(x_t, λ), (B, D).
    pub fn encode_image(&self, x: &Tensor, log_snr: &[f64]) -> Result<Tensor> {
        l2_normalize(&self.image.forward(x, log_snr)?)
    }

    /// L2-normalised g(c), (B, D).
    pub fn encode_text(&self, captions: &[&str], device: &Device) -> Result<Tensor> {
        let enc = self.config.tokenizer.encode(captions);
        l2_normalize(&self.text.forward(&enc, device)?)
    }

    /// exp(log_scale), capped at 100 as in CLIP.
    pub fn logit_scale(&self) -> Result<Tensor> {
        Ok(self.log_scale.clamp(0f32, 100f32.ln())?.exp()?)
    }
}

/// Cross-entropy of `logits` rows against target distributions `targets` (same shape).
fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let logp = shifted.broadcast_sub(&lse)?;
    Ok((targets * logp)?.sum(D::Minus1)?.neg()?.mean_all()?)
}

/// Symmetric InfoNCE with every matching pair as a positive. `matches[i][j]`: caption j
/// describes image i.
pub fn clip_loss(
    img: &Tensor,
    txt: &Tensor,
    scale: &Tensor,
    matches: &[Vec<bool>],
) -> Result<Tensor> {
    let b = matches.len();
    let logits = img.matmul(&txt.t()?)?.broadcast_mul(scale)?;
    let mut rows = vec![0f32; b * b];
    let mut cols = vec![0f32; b * b];
    for i in 0..b {
        let n = matches[i].iter().filter(|&&m| m).count().max(1) as f32;
        for j in 0..b {
            if matches[i][j] {
                rows[i * b + j] = 1.0 / n;
            }
        }
    }
    for j in 0..b {
        let n = (0..b).filter(|&i| matches[i][j]).count().max(1) as f32;
        for i in 0..b {
            if matches[i][j] {
                cols[j * b + i] = 1.0 / n;
            }
        }
    }
    let dev = img.device();
    let rows = Tensor::from_vec(rows, (b, b), dev)?;
    let cols = Tensor::from_vec(cols, (b, b), dev)?;
    let a = soft_cross_entropy(&logits, &rows)?;
    let c = soft_cross_entropy(&logits.t()?.contiguous()?, &cols)?;
    Ok(((a + c)? * 0.5)?)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipTrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    pub seed: u64,
}

impl Default for ClipTrainConfig {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch_size: 128,
            lr: 1e-3,
            warmup_steps: 100,
            seed: 0,
        }
    }
}

/// Trains a CLIP on a dataset's images and their phrasings.
pub struct ClipTrainer {
    pub clip: Clip,
    pub params: ParamStore,
    pub train: ClipTrainConfig,
    diffusion: Diffusion,
    optimizer: AdamW,
    step: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct ClipStepStats {
    pub step: usize,
    pub loss: f64,
    pub temperature: f64,
}

impl ClipTrainer {
    pub fn new(cfg: &ClipConfig, train: ClipTrainConfig, device: &Device) -> Result<Self> {
        if train.steps == 0 || train.batch_size < 2 || train.lr.is_nan() || train.lr <= 0.0 {
            return Err(Error::InvalidTraining(
                "CLIP training needs steps ≥ 1, batch_size ≥ 2, lr > 0".into(),
            ));
        }
        let params = ParamStore::new();
        let clip = Clip::new(&ParamBuilder::new(&params, train.seed, device), cfg)?;
        // CLIP's initial temperature 0.07.
        for (name, var) in params.named_vars() {
            if name == "log_scale" {
                var.set(&Tensor::new(&[(1.0f32 / 0.07).ln()], device)?)?;
            }
        }
        let optimizer = AdamW::new(
            params.vars(),
            AdamWConfig {
                weight_decay: 0.01,
                ..Default::default()
            },
        )?;
        let diffusion = Diffusion::new(cfg.schedule.build()?, device);
        Ok(Self {
            clip,
            params,
            train,
            diffusion,
            optimizer,
            step: 0,
        })
    }

    pub fn step_count(&self) -> usize {
        self.step
    }

    /// One step on a batch of `data`: noised images at random t against random phrasings.
    pub fn train_step(&mut self, data: &ImageDataset) -> Result<ClipStepStats> {
        let device = self.diffusion.device().clone();
        let mut rng = Rng::new(self.train.seed, self.step as u64);
        let b = self.train.batch_size.min(data.len());
        let idx = batch_indices(data.len(), b, self.train.seed, self.step);
        let x0 = data.batch(&idx, &device)?;
        let t_steps = self.diffusion.num_timesteps();
        let t: Vec<usize> = (0..b).map(|_| rng.below(t_steps)).collect();
        let noise = rng.randn(x0.shape(), &device)?;
        let x_t = self.diffusion.q_sample(&x0, &t, &noise)?;
        let attrs: Vec<[u8; 3]> = idx.iter().map(|&i| data.attributes[i]).collect();
        let mut texts = Vec::with_capacity(b);
        let mut constraints = Vec::with_capacity(b);
        for a in &attrs {
            let mut ph = phrasings(self.clip.config.dataset, a)?;
            let p = ph.swap_remove(rng.below(ph.len()));
            texts.push(p.text);
            constraints.push(p.constraint);
        }
        let matches: Vec<Vec<bool>> = attrs
            .iter()
            .map(|a| constraints.iter().map(|c| satisfies(c, a)).collect())
            .collect();
        let img = self
            .clip
            .encode_image(&x_t, &log_snrs(&self.diffusion.schedule, &t))?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let txt = self.clip.encode_text(&refs, &device)?;
        let scale = self.clip.logit_scale()?;
        let loss = clip_loss(&img, &txt, &scale, &matches)?;
        let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !loss_value.is_finite() {
            return Err(Error::Diverged {
                step: self.step + 1,
                loss: loss_value,
            });
        }
        let grads = loss.backward()?;
        let vars = self.params.vars();
        let g: Vec<Tensor> = vars
            .iter()
            .map(|v| {
                grads
                    .get(v.as_tensor())
                    .cloned()
                    .map_or_else(|| v.zeros_like(), Ok)
            })
            .collect::<candle_core::Result<_>>()?;
        let norm = crate::train::optim::global_norm(&g)?;
        let lr = self.train.lr
            * ((self.step + 1) as f64 / self.train.warmup_steps.max(1) as f64).min(1.0);
        // Clipped to norm 1.
        self.optimizer
            .step(&g, lr, if norm > 1.0 { 1.0 / norm } else { 1.0 })?;
        self.step += 1;
        let temperature = 1.0
            / scale
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?[0];
        Ok(ClipStepStats {
            step: self.step,
            loss: loss_value,
            temperature,
        })
    }

    pub fn checkpoint(&self) -> Result<Checkpoint> {
        save_clip(&self.clip, &self.params, self.step)
    }
}

/// Zero-shot accuracy: the share of `data`'s first `n` images, noised to timestep `t` of the
/// CLIP's schedule, whose best-matching class prompt is right.
pub fn zero_shot_accuracy(
    clip: &Clip,
    data: &ImageDataset,
    n: usize,
    t: usize,
    seed: u64,
    device: &Device,
) -> Result<f64> {
    let prompts = class_prompts(clip.config.dataset)?;
    let refs: Vec<&str> = prompts.iter().map(|p| p.text.as_str()).collect();
    let txt = clip.encode_text(&refs, device)?;
    let schedule = clip.config.schedule.build()?;
    let diffusion = Diffusion::new(schedule, device);
    let mut rng = Rng::new(seed, crate::rng::streams::EVAL + t as u64);
    let n = n.min(data.len());
    let mut correct = 0usize;
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        let x0 = data.batch(chunk, device)?;
        let tt = vec![t; chunk.len()];
        let noise = rng.randn(x0.shape(), device)?;
        let x_t = diffusion.q_sample(&x0, &tt, &noise)?;
        let img = clip.encode_image(&x_t, &log_snrs(&diffusion.schedule, &tt))?;
        let best: Vec<u32> = img.matmul(&txt.t()?)?.argmax(D::Minus1)?.to_vec1()?;
        for (k, &i) in chunk.iter().enumerate() {
            if satisfies(&prompts[best[k] as usize].constraint, &data.attributes[i]) {
                correct += 1;
            }
        }
    }
    Ok(correct as f64 / n.max(1) as f64)
}

/// A CLIP checkpoint: its weights under `clip.` and its config.
pub fn save_clip(_clip: &Clip, params: &ParamStore, step: usize) -> Result<Checkpoint> {
    let mut ck = Checkpoint::default();
    for (k, v) in params.tensors("clip.") {
        ck.tensors.insert(k, v);
    }
    ck.set_json("ddlab.clip", &_clip.config)?;
    ck.metadata.insert("ddlab.kind".into(), "clip".into());
    ck.metadata.insert("ddlab.step".into(), step.to_string());
    Ok(ck)
}

pub fn load_clip(ck: &Checkpoint, device: &Device) -> Result<Clip> {
    if ck.metadata.get("ddlab.kind").map(String::as_str) != Some("clip") {
        return Err(Error::Checkpoint(
            "this is not a CLIP checkpoint (train one with `ddlab train-clip`)".into(),
        ));
    }
    let cfg: ClipConfig = ck.get_json("ddlab.clip")?;
    let store = ParamStore::new();
    let clip = Clip::new(&ParamBuilder::new(&store, 0, device), &cfg)?;
    store.load(&ck.tensors, "clip.")?;
    Ok(clip)
}

/// s·∇ₓ(e^ℓ·f(x_t, t)·g(c)) with ℓ CLIP's learned log logit scale: GLIDE's `cond_fn`, and
/// s·∇ₓ log p(c | x_t) for the softmax over captions that CLIP was trained with (the
/// normaliser's gradient aside), through candle's autograd.
pub struct ClipGuide<'a> {
    pub clip: &'a Clip,
    /// The sampler's schedule (its t is converted to a noise level).
    pub schedule: &'a NoiseSchedule,
    /// (B, D) normalised text embeddings, one per sample row.
    pub text: Tensor,
    pub scale: f64,
}

impl ClipGuide<'_> {
    /// The matching score f(x_t, t)·g(c) of each row, and its gradient with respect to x_t.
    pub fn score_and_grad(&self, x_t: &Tensor, t: &[usize]) -> Result<(Tensor, Tensor)> {
        let x = Var::from_tensor(&x_t.detach())?;
        let f = self
            .clip
            .encode_image(x.as_tensor(), &log_snrs(self.schedule, t))?;
        let score = (f * &self.text)?.sum(D::Minus1)?;
        let grads = score.sum_all()?.backward()?;
        let g = grads
            .get(x.as_tensor())
            .ok_or_else(|| Error::Guidance("the CLIP score does not depend on the image".into()))?
            .clone();
        Ok((score.detach(), g))
    }
}

impl crate::sampler::Guide for ClipGuide<'_> {
    fn gradient(&self, x_t: &Tensor, t: &[usize]) -> Result<Tensor> {
        let (_, g) = self.score_and_grad(x_t, t)?;
        let logit_scale = self
            .clip
            .logit_scale()?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?[0];
        Ok((g * (self.scale * logit_scale))?)
    }
}
