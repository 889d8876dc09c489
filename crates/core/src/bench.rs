//! Throughput benchmark of the U-Net: training steps and sampling steps on random data, pure
//! compute (no file I/O). Binaries add what only a process can know, such as its peak RSS.

use candle_core::{Device, Tensor};
use serde::Serialize;
use std::time::Instant;

use crate::clip::{Clip, ClipConfig, ClipGuide};
use crate::data::DatasetKind;
use crate::diffusion::{Diffusion, Objective};
use crate::error::{Error, Result};
use crate::nn::unet::CaptionConditioning;
use crate::nn::{ParamBuilder, ParamStore, Preset, UNetConfig};
use crate::rng::Rng;
use crate::sampler::{
    CfgDenoiser, DdpmVariance, Denoiser, Guide, Sampler, SamplerConfig, TimestepSpacing,
    UNetDenoiser,
};
use crate::schedule::ScheduleConfig;
use crate::text::dataset_tokenizer;
use crate::train::{StepTimings, TrainConfig, Trainer};

/// Which guided sampling step to time beside the unguided one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchGuidance {
    None,
    /// GLIDE's CLIP guidance: a forward and backward pass of a (randomly initialised) noised
    /// CLIP image encoder per step, on top of the U-Net.
    Clip,
    /// Classifier-free guidance: the caption-conditioned U-Net on a doubled batch.
    Cfg,
}

impl std::str::FromStr for BenchGuidance {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "clip" => Ok(Self::Clip),
            "cfg" => Ok(Self::Cfg),
            _ => Err(format!(
                "unknown guidance `{s}` (expected none, clip or cfg)"
            )),
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// A name for the report: a [`Preset`]'s name, or the name of `model` when that is given.
    pub preset: String,
    /// The network to time, instead of the core preset named `preset`.
    pub model: Option<UNetConfig>,
    pub batch: usize,
    /// Side of the square images; the preset's native size when `None`
    /// ([`Preset::native_image_size`]).
    pub image_size: Option<usize>,
    /// Image channels; the preset's native channels when `None` ([`Preset::native_channels`]).
    pub channels: Option<usize>,
    /// Untimed iterations first (allocator and cache warm-up).
    pub warmup: usize,
    /// Timed iterations; every reported time is a median over these.
    pub iters: usize,
    pub device: Device,
    /// A guided sampling step to time as well (`guided_sample_step_s`).
    pub guidance: BenchGuidance,
}

impl BenchConfig {
    pub fn new(preset: &str, batch: usize, device: Device) -> Self {
        Self {
            preset: preset.to_string(),
            model: None,
            batch,
            image_size: None,
            channels: None,
            warmup: 2,
            iters: 5,
            device,
            guidance: BenchGuidance::None,
        }
    }
}

/// Medians of the timed iterations, in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub preset: String,
    pub batch: usize,
    pub image_size: usize,
    pub channels: usize,
    pub params: usize,
    pub device: String,
    pub threads: usize,
    pub iters: usize,
    pub train_step_s: f64,
    pub forward_s: f64,
    pub backward_s: f64,
    pub optimizer_s: f64,
    /// One reverse-process step: the network without gradients ([`crate::nn::UNet::detached`])
    /// plus the DDPM update.
    pub sample_step_s: f64,
    /// The same step with the weights still autograd variables, as `sampler::sample` runs the
    /// network today: every activation of the step is kept until its end.
    pub sample_step_tracked_s: f64,
    pub guidance: BenchGuidance,
    /// One guided reverse step (the guidance named above), when one was asked for. With `cfg`
    /// the network is the caption-conditioned one, so `sample_step_s` is then measured on it
    /// too and the two are comparable.
    pub guided_sample_step_s: Option<f64>,
    /// Training images per second.
    pub images_per_s: f64,
    /// FLOPs of one training step counted from the layer shapes (convolutions, linear layers,
    /// attention matmuls): the forward pass plus twice that for the backward pass.
    pub flops_per_step: f64,
    /// `flops_per_step / train_step_s` in GFLOP/s.
    pub gflops_per_s: f64,
    /// Every timed training step, for spread.
    pub train_steps_s: Vec<f64>,
    pub sample_steps_s: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

fn device_name(d: &Device) -> String {
    format!("{:?}", d.location()).to_lowercase()
}

/// Side and channels of the images the preset named `name` is made for; 32×32 RGB for a
/// model that is no preset.
fn native_images(name: &str) -> (usize, usize) {
    match name.parse::<Preset>() {
        Ok(p) => (p.native_image_size(), p.native_channels()),
        Err(_) => (32, 3),
    }
}

/// The network and images a benchmark times, resolved and checked from its config.
struct Subject {
    model: UNetConfig,
    size: usize,
    /// The dataset whose caption vocabulary the guided steps read.
    dataset: DatasetKind,
    prompt: &'static str,
}

impl Subject {
    fn resolve(cfg: &BenchConfig) -> Result<Self> {
        let mut model = match &cfg.model {
            Some(m) => m.clone(),
            None => UNetConfig::preset(&cfg.preset)?,
        };
        let (size, channels) = native_images(&cfg.preset);
        let size = cfg.image_size.unwrap_or(size);
        model.in_channels = cfg.channels.unwrap_or(channels);
        // Captions (for CFG and CLIP) come from the vocabulary of the dataset the preset is for.
        let dataset = if model.in_channels == 1 {
            DatasetKind::Mnist
        } else {
            DatasetKind::Shapes
        };
        if cfg.guidance == BenchGuidance::Cfg {
            let text =
                CaptionConditioning::new(dataset_tokenizer(dataset)?, model.time_embed_dim());
            model.cond_dim = Some(text.encoder.out_dim);
            model.text = Some(text);
        }
        model.validate(size)?;
        if cfg.batch == 0 || cfg.iters == 0 {
            return Err(Error::InvalidBench(
                "the benchmark needs a batch and at least one timed iteration".into(),
            ));
        }
        let prompt = match dataset {
            DatasetKind::Mnist => "a handwritten three",
            _ => "a red circle",
        };
        Ok(Self {
            model,
            size,
            dataset,
            prompt,
        })
    }

    fn shape(&self, batch: usize) -> (usize, usize, usize, usize) {
        (batch, self.model.in_channels, self.size, self.size)
    }
}

/// `warmup + iters` training steps on `x0`; the timed ones' wall time and phases.
fn time_training(
    cfg: &BenchConfig,
    subject: &Subject,
    trainer: &mut Trainer,
    x0: &Tensor,
) -> Result<Vec<(f64, StepTimings)>> {
    let captions: Option<Vec<&str>> =
        (cfg.guidance == BenchGuidance::Cfg).then(|| vec![subject.prompt; cfg.batch]);
    let mut steps = Vec::with_capacity(cfg.iters);
    for i in 0..cfg.warmup + cfg.iters {
        let t0 = Instant::now();
        // A caption-conditioned network embeds its captions in the step, as in training.
        let cond = match &captions {
            Some(c) => Some(trainer.model.embed_captions(c, &cfg.device)?),
            None => None,
        };
        let (_, timing) = trainer.train_step_timed(x0, cond.as_ref())?;
        let total = t0.elapsed().as_secs_f64();
        if i >= cfg.warmup {
            steps.push((total, timing));
        }
    }
    Ok(steps)
}

/// Times DDPM reverse steps from fresh noise, walking down the chain as real sampling does.
struct SamplingClock<'a> {
    cfg: &'a BenchConfig,
    diffusion: &'a Diffusion,
    sampler: Box<dyn Sampler>,
    shape: (usize, usize, usize, usize),
}

impl<'a> SamplingClock<'a> {
    fn new(
        cfg: &'a BenchConfig,
        diffusion: &'a Diffusion,
        shape: (usize, usize, usize, usize),
    ) -> Result<Self> {
        let sampler = SamplerConfig::Ddpm {
            steps: diffusion.num_timesteps(),
            spacing: TimestepSpacing::default(),
            variance: DdpmVariance::BetaTilde,
            clip_x0: true,
        }
        .build(&diffusion.schedule)?;
        Ok(Self {
            cfg,
            diffusion,
            sampler,
            shape,
        })
    }

    /// The timed steps' wall times. x is detached between steps so that no step keeps the
    /// previous step's graph alive.
    fn time(
        &self,
        rng: &mut Rng,
        denoiser: &dyn Denoiser,
        guide: Option<&dyn Guide>,
    ) -> Result<Vec<f64>> {
        let (cfg, ts) = (self.cfg, self.sampler.timesteps());
        let mut x = rng.randn(self.shape, &cfg.device)?;
        let mut times = Vec::with_capacity(cfg.iters);
        for i in 0..cfg.warmup + cfg.iters {
            // The values do not change the cost.
            let k = i % ts.len();
            let t0 = Instant::now();
            let tb = vec![ts[k]; cfg.batch];
            let pred = denoiser.predict(&x, &tb)?;
            let g = match guide {
                Some(g) => Some(g.gradient(&x, &tb)?),
                None => None,
            };
            let out = self
                .sampler
                .step(k, &x, &pred, g.as_ref(), self.diffusion)?;
            x = (out.mean + (rng.randn(self.shape, &cfg.device)? * out.std)?)?.detach();
            // Force the result (a no-op on the CPU, a sync on a GPU).
            x.device().synchronize()?;
            if i >= cfg.warmup {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
        Ok(times)
    }
}

/// Sampling-step times: unguided on the `detached` network and on the autograd-tracked
/// `ema` one, then guided when asked for.
struct SamplingTimes {
    detached: Vec<f64>,
    tracked: Vec<f64>,
    guided: Option<Vec<f64>>,
}

/// Times sampling with the EMA network, as a sampler uses it, and its `detached` copy (no
/// graph, like PyTorch's no_grad).
fn time_sampling(
    cfg: &BenchConfig,
    subject: &Subject,
    trainer: &Trainer,
    rng: &mut Rng,
) -> Result<SamplingTimes> {
    let ema = trainer.ema_model()?;
    let detached = ema.detached();
    let diffusion = &trainer.diffusion;
    let clock = SamplingClock::new(cfg, diffusion, subject.shape(cfg.batch))?;
    let prompts = vec![subject.prompt; cfg.batch];
    // The unguided step; a caption-conditioned network (CFG) reads its prompt's embedding.
    let cond = match cfg.guidance {
        BenchGuidance::Cfg => Some(detached.embed_captions(&prompts, &cfg.device)?),
        _ => None,
    };
    let plain = |model| UNetDenoiser {
        model,
        diffusion,
        objective: Objective::Eps,
        cond: cond.as_ref(),
    };
    let samples = clock.time(rng, &plain(&detached), None)?;
    let samples_tracked = clock.time(rng, &plain(&ema), None)?;
    let guided = match cfg.guidance {
        BenchGuidance::None => None,
        BenchGuidance::Cfg => {
            let cfg_denoiser =
                CfgDenoiser::new(&detached, diffusion, Objective::Eps, &prompts, 3.0)?;
            Some(clock.time(rng, &cfg_denoiser, None)?)
        }
        BenchGuidance::Clip => {
            let clip_cfg =
                ClipConfig::for_dataset(subject.dataset, subject.model.in_channels, subject.size)?;
            let store = ParamStore::new();
            let clip = Clip::new(&ParamBuilder::new(&store, 0, &cfg.device), &clip_cfg)?;
            let text = clip.encode_text(&prompts, &cfg.device)?.detach();
            let guide = ClipGuide {
                clip: &clip,
                schedule: &diffusion.schedule,
                text,
                scale: 3.0,
            };
            Some(clock.time(rng, &plain(&detached), Some(&guide))?)
        }
    };
    Ok(SamplingTimes {
        detached: samples,
        tracked: samples_tracked,
        guided,
    })
}

/// Runs the benchmark: `warmup + iters` training steps, then `warmup + iters` sampling steps
/// with the EMA copy of the network.
pub fn run(cfg: &BenchConfig) -> Result<BenchReport> {
    let subject = Subject::resolve(cfg)?;
    let schedule = ScheduleConfig::default().build()?;
    let train = TrainConfig {
        batch_size: cfg.batch,
        warmup_steps: 0,
        objective: Objective::Eps,
        ..Default::default()
    };
    let mut trainer = Trainer::new(&subject.model, schedule, train, &cfg.device)?;
    let mut rng = Rng::new(0, 1);
    // Data in [-1, 1] like real images.
    let x0 = rng
        .randn(subject.shape(cfg.batch), &cfg.device)?
        .clamp(-1f32, 1f32)?;
    let steps = time_training(cfg, &subject, &mut trainer, &x0)?;
    let sampling = time_sampling(cfg, &subject, &trainer, &mut rng)?;
    Ok(report(cfg, &subject, &trainer, &steps, sampling))
}

/// Medians of the timed steps, and the rates derived from them.
fn report(
    cfg: &BenchConfig,
    subject: &Subject,
    trainer: &Trainer,
    steps: &[(f64, StepTimings)],
    sampling: SamplingTimes,
) -> BenchReport {
    let size = subject.size;
    let train_steps_s: Vec<f64> = steps.iter().map(|s| s.0).collect();
    let train_step_s = median(&train_steps_s);
    let flops_per_step = 3.0 * trainer.model.flops(cfg.batch, size, size);
    let phase =
        |f: fn(&StepTimings) -> f64| median(&steps.iter().map(|s| f(&s.1)).collect::<Vec<_>>());
    BenchReport {
        preset: cfg.preset.clone(),
        batch: cfg.batch,
        image_size: size,
        channels: subject.model.in_channels,
        params: trainer.params.num_params(),
        device: device_name(&cfg.device),
        threads: crate::ops::cpu::threads(),
        iters: cfg.iters,
        train_step_s,
        forward_s: phase(|t| t.forward_s),
        backward_s: phase(|t| t.backward_s),
        optimizer_s: phase(|t| t.optimizer_s),
        sample_step_s: median(&sampling.detached),
        sample_step_tracked_s: median(&sampling.tracked),
        guidance: cfg.guidance,
        guided_sample_step_s: sampling.guided.as_deref().map(median),
        images_per_s: cfg.batch as f64 / train_step_s,
        flops_per_step,
        gflops_per_s: flops_per_step / train_step_s / 1e9,
        train_steps_s,
        sample_steps_s: sampling.detached,
    }
}
