//! A run's configuration: the flat keys a user writes (in `ddlab train --set`, a config file, or
//! a sweep's `[base]` and `[grid]`), and their resolution into the core's validated configs.
//!
//! Raw keys become settings in two stages (as ripgrep's flags do): [`RunConfig`] is what was
//! written, with defaults; [`ResolvedRun`] holds core configs that have all passed validation,
//! so a run that starts cannot fail on a bad value.

use ddlab_core::data::{DatasetConfig, DatasetKind};
use ddlab_core::diffusion::Objective;
use ddlab_core::nll::NllConfig;
use ddlab_core::nn::UNetConfig;
use ddlab_core::nn::unet::CaptionConditioning;
use ddlab_core::sampler::{DdpmVariance, SamplerConfig, TimestepSpacing};
use ddlab_core::schedule::{ScheduleConfig, ScheduleKind};
use ddlab_core::text::{dataset_tokenizer, parse_prompt};
use ddlab_core::train::optim::AdamWConfig;
use ddlab_core::train::{LrSchedule, TrainConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Which sampler draws a run's sample grids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SamplerKind {
    Ddpm,
    #[default]
    Ddim,
}

/// Guidance used by a run's guided evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GuidanceChoice {
    #[default]
    None,
    /// A noised CLIP's gradient added to the mean (needs `clip_checkpoint`).
    Clip,
    /// Classifier-free (needs `captions = true`).
    Cfg,
}

/// Every key a run understands. `Default` gives a small, fast run on the built-in shapes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    // --- data
    /// shapes | mnist | fashion-mnist | cifar10 | folder
    pub dataset: DatasetKind,
    /// Where the dataset's files are (not used by `shapes`).
    pub data_dir: Option<PathBuf>,
    /// Side length: 16 or 32 for shapes; the resize target for folders.
    pub image_size: Option<usize>,
    /// Generated training images for `shapes`.
    pub shapes_count: usize,

    // --- model
    /// U-Net preset: tiny | small | mnist | cifar.
    pub model: String,
    pub base_channels: Option<usize>,
    pub channel_mult: Option<Vec<usize>>,
    pub num_res_blocks: Option<usize>,
    pub attention_at: Option<Vec<usize>>,
    pub dropout: Option<f64>,
    pub norm_groups: Option<usize>,

    // --- diffusion
    /// linear | cosine | sigmoid | geodiff-sigmoid | quadratic | scaled-linear
    pub schedule: ScheduleKind,
    /// Diffusion steps T.
    #[serde(rename = "T", alias = "timesteps")]
    pub t: usize,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub zero_terminal_snr: bool,
    /// eps | x0 | v
    pub objective: Objective,
    pub min_snr_gamma: Option<f64>,

    // --- optimisation
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub lr_schedule: LrSchedule,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub ema_decay: f64,
    pub seed: u64,

    // --- sampling
    /// ddpm | ddim
    pub sampler: SamplerKind,
    /// Sampling steps S ≤ T (default: T for DDPM, min(T, 50) for DDIM).
    pub sample_steps: Option<usize>,
    /// linspace | leading | trailing
    pub spacing: TimestepSpacing,
    /// DDIM η.
    pub eta: f64,
    /// DDPM σ²: beta-tilde | beta
    pub variance: DdpmVariance,
    pub clip_x0: bool,
    /// Images per sample grid.
    pub sample_count: usize,

    // --- text conditioning and guidance
    /// Train the U-Net on captions (with its own caption encoder) for classifier-free
    /// guidance; mnist and shapes only.
    pub captions: bool,
    /// Probability that a training caption is replaced by ∅.
    pub caption_dropout: f64,
    /// Guided evaluation at the end of the run: none | clip | cfg.
    pub guidance: GuidanceChoice,
    /// CLIP scale s or classifier-free weight w (0: unguided; cfg 1: the conditional model).
    pub guidance_scale: f64,
    /// The prompt of every guided sample; `*` asks for every class in turn.
    pub prompt: String,
    /// A noised CLIP from `ddlab train-clip` (for guidance = "clip").
    pub clip_checkpoint: Option<PathBuf>,
    /// A judge from `ddlab train-judge`: records prompt accuracy and the Fréchet distance of
    /// its features (held-out data against samples).
    pub judge_checkpoint: Option<PathBuf>,
    /// Samples drawn for the guided evaluation.
    pub guided_count: usize,
    /// Draw a grid every N steps (0: only at the end).
    pub sample_every: usize,

    // --- bookkeeping
    /// Write a checkpoint every N steps (and always at the end and on interruption).
    pub checkpoint_every: usize,
    /// Record training metrics every N steps.
    pub log_every: usize,

    // --- evaluation
    /// Compute the NLL bound (bits/dim) on held-out images at the end.
    pub eval_nll: bool,
    pub nll_images: usize,
    /// Timesteps per image for the Monte-Carlo bound (≥ T−1: exact sum).
    pub nll_timesteps: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            dataset: DatasetKind::Shapes,
            data_dir: None,
            image_size: None,
            shapes_count: 20_000,
            model: "small".into(),
            base_channels: None,
            channel_mult: None,
            num_res_blocks: None,
            attention_at: None,
            dropout: None,
            norm_groups: None,
            schedule: ScheduleKind::Linear,
            t: 1000,
            beta_start: None,
            beta_end: None,
            zero_terminal_snr: false,
            objective: Objective::Eps,
            min_snr_gamma: None,
            steps: 2000,
            batch_size: 64,
            lr: 2e-4,
            lr_schedule: LrSchedule::Constant,
            warmup_steps: 100,
            weight_decay: 0.0,
            grad_clip: 1.0,
            ema_decay: 0.999,
            seed: 0,
            sampler: SamplerKind::Ddim,
            sample_steps: None,
            spacing: TimestepSpacing::Trailing,
            eta: 0.0,
            variance: DdpmVariance::BetaTilde,
            clip_x0: true,
            sample_count: 36,
            captions: false,
            caption_dropout: 0.1,
            guidance: GuidanceChoice::None,
            guidance_scale: 0.0,
            prompt: "*".into(),
            clip_checkpoint: None,
            judge_checkpoint: None,
            guided_count: 100,
            sample_every: 0,
            checkpoint_every: 250,
            log_every: 1,
            eval_nll: true,
            nll_images: 256,
            nll_timesteps: 50,
        }
    }
}

/// The U-Net presets by name. `small` is the quick shapes model.
pub fn model_preset(name: &str) -> Option<UNetConfig> {
    match name {
        "small" => Some(UNetConfig {
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
        }),
        other => UNetConfig::preset(other).ok(),
    }
}

pub const MODEL_PRESETS: [&str; 4] = ["tiny", "small", "mnist", "cifar"];

/// A run configuration whose every part passed validation.
#[derive(Debug, Clone)]
pub struct ResolvedRun {
    pub config: RunConfig,
    pub dataset: DatasetConfig,
    pub model: UNetConfig,
    pub schedule: ScheduleConfig,
    pub train: TrainConfig,
    pub sampler: SamplerConfig,
    pub nll: Option<NllConfig>,
    pub image_size: usize,
}

impl RunConfig {
    /// Validates every key and builds the core configs. The error is one sentence.
    pub fn resolve(&self) -> Result<ResolvedRun, String> {
        let dataset = DatasetConfig {
            kind: self.dataset,
            dir: self.data_dir.clone(),
            image_size: self.image_size,
            shapes_count: self.shapes_count,
            shapes_seed: 0,
        };
        dataset.validate().map_err(|e| e.to_string())?;
        let image_size = dataset
            .image_size_hint()
            .ok_or("image_size is required for this dataset")?;

        let mut model = model_preset(&self.model).ok_or_else(|| {
            format!(
                "unknown model preset `{}` (expected one of: {})",
                self.model,
                MODEL_PRESETS.join(", ")
            )
        })?;
        model.in_channels = dataset.channels_hint();
        if let Some(v) = self.base_channels {
            model.base_channels = v;
        }
        if let Some(v) = &self.channel_mult {
            model.channel_mult = v.clone();
        }
        if let Some(v) = self.num_res_blocks {
            model.num_res_blocks = v;
        }
        if let Some(v) = &self.attention_at {
            model.attention_at = v.clone();
        }
        if let Some(v) = self.dropout {
            model.dropout = v;
        }
        if let Some(v) = self.norm_groups {
            model.norm_groups = v;
        }
        if self.captions {
            let tokenizer = dataset_tokenizer(self.dataset).map_err(|e| e.to_string())?;
            let text = CaptionConditioning::new(tokenizer, model.time_embed_dim());
            model.cond_dim = Some(text.encoder.out_dim);
            model.text = Some(text);
        }
        model.validate(image_size).map_err(|e| e.to_string())?;
        self.check_guidance()?;

        let schedule = ScheduleConfig {
            kind: self.schedule,
            steps: self.t,
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            zero_terminal_snr: self.zero_terminal_snr,
            ..ScheduleConfig::default()
        };
        schedule.build().map_err(|e| e.to_string())?;

        if self.seed > i64::MAX as u64 {
            return Err(format!(
                "seed = {} is too large (at most {})",
                self.seed,
                i64::MAX
            ));
        }
        let train = TrainConfig {
            steps: self.steps,
            batch_size: self.batch_size,
            lr: self.lr,
            lr_schedule: self.lr_schedule,
            warmup_steps: self.warmup_steps,
            adam: AdamWConfig {
                weight_decay: self.weight_decay,
                ..AdamWConfig::default()
            },
            grad_clip: self.grad_clip,
            ema_decay: self.ema_decay,
            objective: self.objective,
            min_snr_gamma: self.min_snr_gamma,
            seed: self.seed,
            caption_dropout: self.caption_dropout,
        };
        train.validate(&schedule).map_err(|e| e.to_string())?;

        let sample_steps = self.sample_steps.unwrap_or(match self.sampler {
            SamplerKind::Ddpm => self.t,
            SamplerKind::Ddim => self.t.min(50),
        });
        if sample_steps == 0 || sample_steps > self.t {
            return Err(format!(
                "sample_steps = {sample_steps} must be between 1 and T = {}",
                self.t
            ));
        }
        if !(self.eta.is_finite() && self.eta >= 0.0) {
            return Err(format!("eta = {} must be ≥ 0", self.eta));
        }
        let sampler = match self.sampler {
            SamplerKind::Ddpm => SamplerConfig::Ddpm {
                steps: sample_steps,
                spacing: self.spacing,
                variance: self.variance,
                clip_x0: self.clip_x0,
            },
            SamplerKind::Ddim => SamplerConfig::Ddim {
                steps: sample_steps,
                spacing: self.spacing,
                eta: self.eta,
                clip_x0: self.clip_x0,
            },
        };
        if self.sample_count == 0 || self.sample_count > 1024 {
            return Err(format!(
                "sample_count = {} must be between 1 and 1024",
                self.sample_count
            ));
        }
        if self.checkpoint_every == 0 || self.log_every == 0 {
            return Err("checkpoint_every and log_every must be at least 1".into());
        }
        let nll = if self.eval_nll {
            if self.nll_images == 0 || self.nll_timesteps == 0 {
                return Err("nll_images and nll_timesteps must be at least 1".into());
            }
            Some(NllConfig {
                timesteps: self.nll_timesteps,
                variance: self.variance,
                clip_x0: self.clip_x0,
                batch_size: self.batch_size.max(32),
            })
        } else {
            None
        };
        Ok(ResolvedRun {
            config: self.clone(),
            dataset,
            model,
            schedule,
            train,
            sampler,
            nll,
            image_size,
        })
    }

    /// The guided-evaluation keys, checked before anything runs.
    fn check_guidance(&self) -> Result<(), String> {
        if !(self.guidance_scale.is_finite() && self.guidance_scale >= 0.0) {
            return Err(format!(
                "guidance_scale = {} must be a finite number ≥ 0",
                self.guidance_scale
            ));
        }
        let guided = self.guidance != GuidanceChoice::None;
        if guided || self.judge_checkpoint.is_some() {
            if self.prompt.trim().is_empty() {
                return Err("prompt is empty (give a caption, or \"*\" for every class)".into());
            }
            if self.guided_count == 0 || self.guided_count > 10_000 {
                return Err(format!(
                    "guided_count = {} must be between 1 and 10000",
                    self.guided_count
                ));
            }
            if self.prompt != "*" {
                parse_prompt(self.dataset, &self.prompt).map_err(|e| e.to_string())?;
            }
        }
        match self.guidance {
            GuidanceChoice::Cfg if !self.captions => {
                return Err(
                    "guidance = \"cfg\" needs captions = true (a caption-conditioned U-Net)".into(),
                );
            }
            GuidanceChoice::Clip if self.clip_checkpoint.is_none() => {
                return Err(
                    "guidance = \"clip\" needs clip_checkpoint (train one with `ddlab train-clip`)"
                        .into(),
                );
            }
            _ => {}
        }
        for (key, path, command) in [
            ("clip_checkpoint", &self.clip_checkpoint, "train-clip"),
            ("judge_checkpoint", &self.judge_checkpoint, "train-judge"),
        ] {
            if let Some(p) = path
                && !p.is_file()
            {
                return Err(format!(
                    "{key} = {} is not a file (make it first with `ddlab {command} --dataset {} -o {}`)",
                    p.display(),
                    self.dataset.name(),
                    p.display()
                ));
            }
        }
        Ok(())
    }

    /// The keys that decide the trained weights: the identity with every sampling, evaluation
    /// and bookkeeping key at its default. Runs that share it can share one training.
    pub fn training_identity(&self) -> BTreeMap<String, serde_json::Value> {
        let d = RunConfig::default();
        let trained = RunConfig {
            sampler: d.sampler,
            sample_steps: d.sample_steps,
            spacing: d.spacing,
            eta: d.eta,
            variance: d.variance,
            clip_x0: d.clip_x0,
            sample_count: d.sample_count,
            sample_every: d.sample_every,
            guidance: d.guidance,
            guidance_scale: d.guidance_scale,
            prompt: d.prompt.clone(),
            clip_checkpoint: d.clip_checkpoint.clone(),
            judge_checkpoint: d.judge_checkpoint.clone(),
            guided_count: d.guided_count,
            checkpoint_every: d.checkpoint_every,
            log_every: d.log_every,
            eval_nll: d.eval_nll,
            nll_images: d.nll_images,
            nll_timesteps: d.nll_timesteps,
            ..self.clone()
        };
        trained.identity()
    }

    /// The keys that differ from the defaults: a run's identity. Adding a new key with a
    /// default later leaves the identity of existing runs unchanged.
    pub fn identity(&self) -> BTreeMap<String, serde_json::Value> {
        let mine = serde_json::to_value(self).expect("config serialises");
        let base = serde_json::to_value(RunConfig::default()).expect("config serialises");
        let (serde_json::Value::Object(mine), serde_json::Value::Object(base)) = (mine, base)
        else {
            unreachable!("a struct serialises to an object")
        };
        mine.into_iter()
            .filter(|(k, v)| base.get(k) != Some(v))
            .collect()
    }

    /// A short stable hash of the identity.
    pub fn config_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let canonical = serde_json::to_string(&self.identity()).expect("identity serialises");
        let digest = Sha256::digest(canonical.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// Every key's name, for error messages and `--help`.
    pub fn keys() -> Vec<String> {
        match serde_json::to_value(RunConfig::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => vec![],
        }
    }
}
