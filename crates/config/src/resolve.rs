//! The second stage of a run's configuration: [`RunConfig`] (what was written) into
//! [`ResolvedRun`] (core configs that all passed validation), so a run that starts cannot fail
//! on a bad value. Each part is checked by its own function; the error is one sentence.

use ddlab_core::data::DatasetConfig;
use ddlab_core::nll::NllConfig;
use ddlab_core::nn::unet::CaptionConditioning;
use ddlab_core::nn::{Preset, UNetConfig, UnknownPreset};
use ddlab_core::sampler::{SamplerConfig, SamplerOptions};
use ddlab_core::schedule::ScheduleConfig;
use ddlab_core::text::{dataset_tokenizer, parse_prompt};
use ddlab_core::train::TrainConfig;
use ddlab_core::train::optim::AdamWConfig;

use crate::error::ConfigError;
use crate::guidance::Guidance;
use crate::keys::RunConfig;

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

type Checked<T> = Result<T, ConfigError>;

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

impl RunConfig {
    /// Validates every key and builds the core configs.
    pub fn resolve(&self) -> Checked<ResolvedRun> {
        self.check_sizes()?;
        let dataset = self.dataset_config()?;
        let image_size = dataset
            .image_size_hint()
            .ok_or_else(|| invalid("image_size is required for this dataset"))?;
        let model = self.model_config(&dataset, image_size)?;
        self.check_guidance()?;
        let schedule = self.schedule_config()?;
        let train = self.train_config(&schedule)?;
        let sampler = self.sampler_config()?;
        self.check_bookkeeping()?;
        let nll = self.nll_config()?;
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

    fn dataset_config(&self) -> Checked<DatasetConfig> {
        let dataset = DatasetConfig {
            kind: self.dataset,
            dir: self.data_dir.clone(),
            image_size: self.image_size,
            shapes_count: self.shapes_count,
            shapes_seed: 0,
        };
        dataset.validate().map_err(|e| invalid(e.to_string()))?;
        Ok(dataset)
    }

    /// The preset with the explicit model keys applied, checked against the image size.
    fn model_config(&self, dataset: &DatasetConfig, image_size: usize) -> Checked<UNetConfig> {
        let preset: Preset = self
            .model
            .parse()
            .map_err(|e: UnknownPreset| invalid(e.to_string()))?;
        let mut model = preset.config();
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
        model.learn_sigma = self.learns_variance();
        if self.captions {
            let tokenizer = dataset_tokenizer(self.dataset).map_err(|e| invalid(e.to_string()))?;
            let text = CaptionConditioning::new(tokenizer, model.time_embed_dim());
            model.cond_dim = Some(text.encoder.out_dim);
            model.text = Some(text);
        }
        model
            .validate(image_size)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(model)
    }

    fn schedule_config(&self) -> Checked<ScheduleConfig> {
        let schedule = ScheduleConfig {
            kind: self.schedule,
            steps: self.t,
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            zero_terminal_snr: self.zero_terminal_snr,
            ..ScheduleConfig::default()
        };
        schedule.build().map_err(|e| invalid(e.to_string()))?;
        Ok(schedule)
    }

    fn train_config(&self, schedule: &ScheduleConfig) -> Checked<TrainConfig> {
        if self.seed > i64::MAX as u64 {
            return Err(invalid(format!(
                "seed = {} is too large (at most {})",
                self.seed,
                i64::MAX
            )));
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
            hybrid_lambda: self.hybrid_lambda,
        };
        train
            .validate(schedule)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(train)
    }

    /// The sampler options these keys ask for.
    pub fn sampler_options(&self) -> SamplerOptions {
        SamplerOptions {
            kind: self.sampler,
            steps: self.sample_steps,
            spacing: self.spacing,
            eta: self.eta,
            variance: self.variance,
            clip_x0: self.clip_x0,
        }
    }

    fn sampler_config(&self) -> Checked<SamplerConfig> {
        let sampler = SamplerConfig::with_defaults(&self.sampler_options(), self.t);
        let sample_steps = sampler.steps();
        if sample_steps == 0 || sample_steps > self.t {
            return Err(invalid(format!(
                "sample_steps = {sample_steps} must be between 1 and T = {}",
                self.t
            )));
        }
        if !(self.eta.is_finite() && self.eta >= 0.0) {
            return Err(invalid(format!("eta = {} must be ≥ 0", self.eta)));
        }
        if self.sample_count == 0 || self.sample_count > 1024 {
            return Err(invalid(format!(
                "sample_count = {} must be between 1 and 1024",
                self.sample_count
            )));
        }
        Ok(sampler)
    }

    fn check_bookkeeping(&self) -> Checked<()> {
        if self.checkpoint_every == 0 || self.log_every == 0 {
            return Err(invalid("checkpoint_every and log_every must be at least 1"));
        }
        Ok(())
    }

    fn nll_config(&self) -> Checked<Option<NllConfig>> {
        if !self.eval_nll {
            return Ok(None);
        }
        if self.nll_images == 0 || self.nll_timesteps == 0 {
            return Err(invalid("nll_images and nll_timesteps must be at least 1"));
        }
        Ok(Some(NllConfig {
            timesteps: self.nll_timesteps,
            variance: self.variance,
            clip_x0: self.clip_x0,
            batch_size: self.batch_size.max(32),
            term_buckets: self.loss_buckets.min(self.t.max(1)),
        }))
    }

    /// The guided-evaluation keys, checked before anything runs.
    fn check_guidance(&self) -> Checked<()> {
        if !(self.guidance_scale.is_finite() && self.guidance_scale >= 0.0) {
            return Err(invalid(format!(
                "guidance_scale = {} must be a finite number ≥ 0",
                self.guidance_scale
            )));
        }
        if self.guidance.is_guided() || self.judge_checkpoint.is_some() {
            self.check_prompt()?;
        }
        match self.guidance {
            Guidance::Cfg if !self.captions => {
                return Err(invalid(
                    "guidance = \"cfg\" needs captions = true (a caption-conditioned U-Net)",
                ));
            }
            Guidance::Clip if self.clip_checkpoint.is_none() => {
                return Err(invalid(
                    "guidance = \"clip\" needs clip_checkpoint (train one with `ddlab train-clip`)",
                ));
            }
            _ => {}
        }
        self.check_helper_files()
    }

    fn check_prompt(&self) -> Checked<()> {
        if self.prompt.trim().is_empty() {
            return Err(invalid(
                "prompt is empty (give a caption, or \"*\" for every class)",
            ));
        }
        if self.guided_count == 0 || self.guided_count > 10_000 {
            return Err(invalid(format!(
                "guided_count = {} must be between 1 and 10000",
                self.guided_count
            )));
        }
        if self.prompt != "*" {
            parse_prompt(self.dataset, &self.prompt).map_err(|e| invalid(e.to_string()))?;
        }
        Ok(())
    }

    /// The CLIP and judge checkpoints named must exist.
    fn check_helper_files(&self) -> Checked<()> {
        for (key, path, command) in [
            ("clip_checkpoint", &self.clip_checkpoint, "train-clip"),
            ("judge_checkpoint", &self.judge_checkpoint, "train-judge"),
        ] {
            if let Some(p) = path
                && !p.is_file()
            {
                return Err(invalid(format!(
                    "{key} = {} is not a file (make it first with `ddlab {command} --dataset {} -o {}`)",
                    p.display(),
                    self.dataset.name(),
                    p.display()
                )));
            }
        }
        Ok(())
    }
}
