//! The judge: an independent classifier of clean images (its own weights, its own training,
//! nothing shared with the CLIP), used to score samples without downloading anything:
//! prompt accuracy (does the sample show what the prompt asked for?) and a Fréchet distance
//! between its penultimate features of held-out data and of samples.
//!
//! MNIST has one head (ten digits); shapes has three (shape, colour, position).

use candle_core::{D, DType, Device, Module, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::data::shapes::{COLOURS, POSITIONS, SHAPES};
use crate::data::{DatasetKind, ImageDataset, batch_indices};
use crate::error::{Error, Result};
use crate::frechet::FeatureStats;
use crate::nn::layers::{Conv2d, Conv2dConfig, GroupNorm, Linear};
use crate::nn::params::{ParamBuilder, ParamStore};
use crate::ops;
use crate::rng::Rng;
use crate::text::{Constraint, satisfies};
use crate::train::optim::{AdamW, AdamWConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeConfig {
    pub dataset: DatasetKind,
    pub in_channels: usize,
    pub image_size: usize,
    pub channels: Vec<usize>,
    pub feature_dim: usize,
    /// Classes of each head, in attribute order.
    pub heads: Vec<usize>,
}

impl JudgeConfig {
    pub fn for_dataset(kind: DatasetKind, in_channels: usize, image_size: usize) -> Result<Self> {
        let heads = match kind {
            DatasetKind::Mnist => vec![10],
            DatasetKind::Shapes => vec![SHAPES.len(), COLOURS.len(), POSITIONS.len()],
            other => {
                return Err(Error::Guidance(format!(
                    "a judge is available for mnist and shapes, not {other}"
                )));
            }
        };
        Ok(Self {
            dataset: kind,
            in_channels,
            image_size,
            channels: vec![32, 64, 128],
            feature_dim: 128,
            heads,
        })
    }

    /// Checks that images of this kind and size can be judged.
    pub fn check_compatible(&self, kind: DatasetKind, channels: usize, size: usize) -> Result<()> {
        if self.dataset != kind || self.in_channels != channels || self.image_size != size {
            return Err(Error::Guidance(format!(
                "the judge was made for {} images of {}×{}×{}, not {kind} images of {channels}×{size}×{size}",
                self.dataset, self.in_channels, self.image_size, self.image_size
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Stage {
    conv1: Conv2d,
    norm1: GroupNorm,
    conv2: Conv2d,
    norm2: GroupNorm,
}

#[derive(Debug, Clone)]
pub struct Judge {
    pub config: JudgeConfig,
    stages: Vec<Stage>,
    fc: Linear,
    head: Linear,
}

impl Judge {
    pub fn new(pb: &ParamBuilder, cfg: &JudgeConfig) -> Result<Self> {
        let mut cur = cfg.in_channels;
        let mut stages = vec![];
        for (i, &c) in cfg.channels.iter().enumerate() {
            let p = pb.pp(format!("stage.{i}"));
            let g = [8, 4, 2, 1].into_iter().find(|g| c % g == 0).unwrap_or(1);
            stages.push(Stage {
                conv1: Conv2d::new(&p.pp("conv1"), cur, c, Conv2dConfig::same(3))?,
                norm1: GroupNorm::new(&p.pp("norm1"), g, c)?,
                conv2: Conv2d::new(&p.pp("conv2"), c, c, Conv2dConfig::downsample())?,
                norm2: GroupNorm::new(&p.pp("norm2"), g, c)?,
            });
            cur = c;
        }
        Ok(Self {
            config: cfg.clone(),
            stages,
            fc: Linear::new(&pb.pp("fc"), cur, cfg.feature_dim)?,
            head: Linear::new(&pb.pp("head"), cfg.feature_dim, cfg.heads.iter().sum())?,
        })
    }

    /// Penultimate features (B, feature_dim).
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for s in &self.stages {
            h = s.norm1.forward_silu(&s.conv1.forward(&h)?)?;
            h = s.norm2.forward_silu(&s.conv2.forward(&h)?)?;
        }
        let pooled = h.mean(D::Minus1)?.mean(D::Minus1)?;
        ops::silu(&self.fc.forward(&pooled)?)
    }

    /// Logits of every head, concatenated.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.head.forward(&self.features(x)?)?)
    }

    /// Predicted attributes per image.
    pub fn predict(&self, x: &Tensor) -> Result<Vec<[u8; 3]>> {
        let logits = self.logits(x)?;
        let b = logits.dim(0)?;
        let mut out = vec![[0u8; 3]; b];
        let mut off = 0;
        for (h, &n) in self.config.heads.iter().enumerate() {
            let best: Vec<u32> = logits.narrow(1, off, n)?.argmax(D::Minus1)?.to_vec1()?;
            for (o, v) in out.iter_mut().zip(best) {
                o[h] = v as u8;
            }
            off += n;
        }
        Ok(out)
    }

    /// Cross-entropy summed over heads, mean over the batch.
    fn loss(&self, x: &Tensor, attrs: &[[u8; 3]]) -> Result<Tensor> {
        let logits = self.logits(x)?;
        let mut total: Option<Tensor> = None;
        let mut off = 0;
        for (h, &n) in self.config.heads.iter().enumerate() {
            let target: Vec<u32> = attrs.iter().map(|a| a[h] as u32).collect();
            let target = Tensor::new(target.as_slice(), x.device())?;
            let l =
                candle_nn::loss::cross_entropy(&logits.narrow(1, off, n)?.contiguous()?, &target)?;
            total = Some(match total {
                Some(t) => (t + l)?,
                None => l,
            });
            off += n;
        }
        total.ok_or_else(|| Error::InvalidModel("a judge needs at least one head".into()))
    }
}

/// Share of images whose every attribute the judge reads right.
pub fn accuracy(judge: &Judge, data: &ImageDataset, n: usize, device: &Device) -> Result<f64> {
    let n = n.min(data.len());
    let heads = judge.config.heads.len();
    let mut correct = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        let pred = judge.predict(&data.batch(chunk, device)?)?;
        for (p, &i) in pred.iter().zip(chunk) {
            if p[..heads] == data.attributes[i][..heads] {
                correct += 1;
            }
        }
    }
    Ok(correct as f64 / n.max(1) as f64)
}

/// Share of `images` that satisfy their row's prompt constraint.
pub fn prompt_accuracy(judge: &Judge, images: &Tensor, wanted: &[Constraint]) -> Result<f64> {
    let pred = judge.predict(images)?;
    let ok = pred
        .iter()
        .zip(wanted)
        .filter(|(p, c)| satisfies(c, p))
        .count();
    Ok(ok as f64 / pred.len().max(1) as f64)
}

/// Feature statistics of a set of images, in batches.
pub fn feature_stats(judge: &Judge, images: &Tensor) -> Result<FeatureStats> {
    let n = images.dim(0)?;
    let mut feats: Vec<f32> = Vec::with_capacity(n * judge.config.feature_dim);
    let mut start = 0;
    while start < n {
        let len = 256.min(n - start);
        let f = judge.features(&images.narrow(0, start, len)?)?;
        feats.extend(f.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        start += len;
    }
    FeatureStats::from_rows(&feats, judge.config.feature_dim)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeTrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
}

impl Default for JudgeTrainConfig {
    fn default() -> Self {
        Self {
            steps: 1500,
            batch_size: 128,
            lr: 2e-3,
            seed: 0,
        }
    }
}

pub struct JudgeTrainer {
    pub judge: Judge,
    pub params: ParamStore,
    pub train: JudgeTrainConfig,
    optimizer: AdamW,
    step: usize,
    device: Device,
}

impl JudgeTrainer {
    pub fn new(cfg: &JudgeConfig, train: JudgeTrainConfig, device: &Device) -> Result<Self> {
        if train.steps == 0 || train.batch_size == 0 || train.lr.is_nan() || train.lr <= 0.0 {
            return Err(Error::InvalidTraining(
                "judge training needs steps, batch_size and lr > 0".into(),
            ));
        }
        let params = ParamStore::new();
        // A seed stream of its own, so the judge never shares an initialisation with a CLIP.
        let judge = Judge::new(
            &ParamBuilder::new(&params, train.seed ^ 0x006a_7564_6765, device),
            cfg,
        )?;
        let optimizer = AdamW::new(
            params.vars(),
            AdamWConfig {
                weight_decay: 1e-4,
                ..Default::default()
            },
        )?;
        Ok(Self {
            judge,
            params,
            train,
            optimizer,
            step: 0,
            device: device.clone(),
        })
    }

    /// One step; returns the loss. Cosine learning-rate decay over the run.
    pub fn train_step(&mut self, data: &ImageDataset) -> Result<f64> {
        let b = self.train.batch_size.min(data.len());
        let idx = batch_indices(data.len(), b, self.train.seed, self.step);
        let clean = data.batch(&idx, &self.device)?;
        // A little pixel noise makes the judge robust to the grain of generated images.
        let mut rng = Rng::new(self.train.seed, self.step as u64);
        let x = (&clean + (rng.randn(clean.shape(), &self.device)? * 0.05)?)?;
        let attrs: Vec<[u8; 3]> = idx.iter().map(|&i| data.attributes[i]).collect();
        let loss = self.judge.loss(&x, &attrs)?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            return Err(Error::Diverged {
                step: self.step + 1,
                loss: value,
            });
        }
        let grads = loss.backward()?;
        let g: Vec<Tensor> = self
            .params
            .vars()
            .iter()
            .map(|v| {
                grads
                    .get(v.as_tensor())
                    .cloned()
                    .map_or_else(|| v.zeros_like(), Ok)
            })
            .collect::<candle_core::Result<_>>()?;
        let p = self.step as f64 / self.train.steps as f64;
        let lr = self.train.lr * 0.5 * (1.0 + (std::f64::consts::PI * p.min(1.0)).cos());
        self.optimizer.step(&g, lr, 1.0)?;
        self.step += 1;
        Ok(value)
    }

    pub fn step_count(&self) -> usize {
        self.step
    }

    pub fn checkpoint(&self, heldout_accuracy: f64) -> Result<Checkpoint> {
        let mut ck = Checkpoint::default();
        ck.tensors.extend(self.params.tensors("judge."));
        ck.set_json("ddlab.judge", &self.judge.config)?;
        ck.metadata.insert("ddlab.kind".into(), "judge".into());
        ck.metadata
            .insert("ddlab.step".into(), self.step.to_string());
        ck.metadata.insert(
            "ddlab.heldout_accuracy".into(),
            heldout_accuracy.to_string(),
        );
        Ok(ck)
    }
}

/// A judge and its own held-out accuracy, from a checkpoint.
pub fn load_judge(ck: &Checkpoint, device: &Device) -> Result<(Judge, f64)> {
    if ck.metadata.get("ddlab.kind").map(String::as_str) != Some("judge") {
        return Err(Error::Checkpoint(
            "this is not a judge checkpoint (train one with `ddlab train-judge`)".into(),
        ));
    }
    let cfg: JudgeConfig = ck.get_json("ddlab.judge")?;
    let store = ParamStore::new();
    let judge = Judge::new(&ParamBuilder::new(&store, 0, device), &cfg)?;
    store.load(&ck.tensors, "judge.")?;
    let acc = ck.get_parsed::<f64>("ddlab.heldout_accuracy")?;
    Ok((judge, acc))
}
