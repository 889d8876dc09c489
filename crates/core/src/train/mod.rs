//! Training: the denoising objective, AdamW with warm-up and clipping, EMA, checkpoints.
//!
//! Every random draw of step k comes from the stream `Rng::new(seed, k)`, and the data order
//! from per-epoch permutations of the seed, so a run restored from a checkpoint continues
//! bit-for-bit as if it had never stopped.

pub mod ema;
pub mod hybrid;
pub mod optim;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use crate::checkpoint::Checkpoint;
use crate::diffusion::{Diffusion, Objective, split_output};
use crate::error::{Error, Result};
use crate::nn::{ParamBuilder, ParamStore, UNet, UNetConfig};
use crate::rng::Rng;
use crate::schedule::{NoiseSchedule, ScheduleConfig};
use ema::Ema;
use optim::{AdamW, AdamWConfig};

/// Learning-rate shape after the linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// Constant (Ho et al.).
    #[default]
    Constant,
    /// Cosine decay to zero at the last step.
    Cosine,
}

impl FromStr for LrSchedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "constant" => Ok(Self::Constant),
            "cosine" => Ok(Self::Cosine),
            _ => Err(Error::InvalidTraining(format!(
                "unknown lr schedule `{s}` (expected constant or cosine)"
            ))),
        }
    }
}

impl fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Constant => "constant",
            Self::Cosine => "cosine",
        })
    }
}

/// Optimisation hyper-parameters. `Default` follows Ho et al. (lr 2e-4, clip 1, EMA 0.9999)
/// scaled down for short runs where noted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub lr_schedule: LrSchedule,
    pub warmup_steps: usize,
    pub adam: AdamWConfig,
    /// Clip the global gradient norm to this value; 0 disables clipping.
    pub grad_clip: f64,
    pub ema_decay: f64,
    pub objective: Objective,
    /// Min-SNR-γ loss weighting (Hang et al. 2023); `None` is the unweighted L_simple.
    pub min_snr_gamma: Option<f64>,
    pub seed: u64,
    /// For caption-conditioned models: the probability that a training caption is replaced
    /// by ∅, so one network learns ε(x_t, c) and ε(x_t, ∅) (classifier-free guidance).
    #[serde(default = "default_caption_dropout")]
    pub caption_dropout: f64,
    /// λ of L_hybrid = L_simple + λ·L_vlb for a network that learns its variance (L_vlb is the
    /// sum over all T terms, so each step adds λ·T times its one sampled term).
    #[serde(default = "default_hybrid_lambda")]
    pub hybrid_lambda: f64,
}

fn default_hybrid_lambda() -> f64 {
    0.001
}

fn default_caption_dropout() -> f64 {
    0.1
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 64,
            lr: 2e-4,
            lr_schedule: LrSchedule::Constant,
            warmup_steps: 100,
            adam: AdamWConfig::default(),
            grad_clip: 1.0,
            ema_decay: 0.999,
            objective: Objective::Eps,
            min_snr_gamma: None,
            seed: 0,
            caption_dropout: default_caption_dropout(),
            hybrid_lambda: default_hybrid_lambda(),
        }
    }
}

impl TrainConfig {
    pub fn validate(&self, schedule: &ScheduleConfig) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidTraining(m));
        if self.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr = {} must be a positive number", self.lr));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad(format!("ema_decay = {} must be in [0, 1)", self.ema_decay));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return bad(format!("grad_clip = {} must be ≥ 0", self.grad_clip));
        }
        let a = &self.adam;
        if !(0.0..1.0).contains(&a.beta1) || !(0.0..1.0).contains(&a.beta2) || a.eps <= 0.0 {
            return bad("Adam needs β₁, β₂ in [0, 1) and ε > 0".into());
        }
        if !(0.0..=1.0).contains(&self.caption_dropout) {
            return bad(format!(
                "caption_dropout = {} must be in [0, 1]",
                self.caption_dropout
            ));
        }
        if !(self.hybrid_lambda.is_finite() && (0.0..=1.0).contains(&self.hybrid_lambda)) {
            return bad(format!(
                "hybrid_lambda = {} must be in [0, 1]",
                self.hybrid_lambda
            ));
        }
        if !(a.weight_decay.is_finite() && a.weight_decay >= 0.0) {
            return bad(format!("weight_decay = {} must be ≥ 0", a.weight_decay));
        }
        if let Some(g) = self.min_snr_gamma
            && !(g.is_finite() && g > 0.0)
        {
            return bad(format!("min_snr_gamma = {g} must be positive"));
        }
        if schedule.zero_terminal_snr && self.objective == Objective::Eps {
            return bad(
                "zero terminal SNR needs objective = \"v\" or \"x0\": at ᾱ_T = 0 an ε-prediction \
                 carries no information about x_0"
                    .into(),
            );
        }
        Ok(())
    }

    /// Learning rate at (0-based) step `step`.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.lr_schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine => {
                let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let p = ((step - self.warmup_steps) as f64 / span).min(1.0);
                self.lr * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            }
        }
    }
}

/// What one optimisation step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The step just taken, counting from 1.
    pub step: usize,
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
}

/// One training example's share of a step: its timestep index and its loss, unweighted and
/// (under min-SNR-γ) weighted as the objective weighs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExampleLoss {
    pub t: usize,
    pub loss: f64,
    pub weighted: Option<f64>,
}

/// Wall time of the phases of one training step, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepTimings {
    /// Noising, the network and the loss (down to a host scalar).
    pub forward_s: f64,
    /// `loss.backward()`.
    pub backward_s: f64,
    /// Gradient norm and clipping, AdamW and the EMA update.
    pub optimizer_s: f64,
}

/// A model, its optimiser and its EMA, advanced one batch at a time.
pub struct Trainer {
    pub model: UNet,
    pub params: ParamStore,
    pub diffusion: Diffusion,
    pub config: TrainConfig,
    optimizer: AdamW,
    ema: Ema,
    step: usize,
    last_examples: Vec<ExampleLoss>,
}

impl Trainer {
    pub fn new(
        model_cfg: &UNetConfig,
        schedule: NoiseSchedule,
        config: TrainConfig,
        device: &Device,
    ) -> Result<Self> {
        config.validate(&schedule.config)?;
        let params = ParamStore::new();
        let model = UNet::new(&ParamBuilder::new(&params, config.seed, device), model_cfg)?;
        let vars = params.vars();
        let optimizer = AdamW::new(vars.clone(), config.adam.clone())?;
        let ema = Ema::new(&vars, config.ema_decay)?;
        Ok(Self {
            model,
            params,
            diffusion: Diffusion::new(schedule, device),
            config,
            optimizer,
            ema,
            step: 0,
            last_examples: Vec::new(),
        })
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// The loss of one batch and its graph (no update). `x0` in [-1, 1].
    pub fn loss(&self, x0: &Tensor, cond: Option<&Tensor>, rng: &mut Rng) -> Result<Tensor> {
        Ok(self.loss_with_examples(x0, cond, rng)?.0)
    }

    /// [`Trainer::loss`] and each example's timestep and loss. The per-example values are the
    /// ones the batch loss is the mean of, copied to the host (b numbers): recording the loss
    /// by noise level costs no second forward pass and leaves the graph as it was.
    pub fn loss_with_examples(
        &self,
        x0: &Tensor,
        cond: Option<&Tensor>,
        rng: &mut Rng,
    ) -> Result<(Tensor, Vec<ExampleLoss>)> {
        let b = x0.dim(0)?;
        let t_steps = self.diffusion.num_timesteps();
        let t: Vec<usize> = (0..b).map(|_| rng.below(t_steps)).collect();
        let noise = rng.randn(x0.shape(), x0.device())?;
        let x_t = self.diffusion.q_sample(x0, &t, &noise)?;
        let out = self.model.forward(&x_t, &t, cond, Some(rng))?;
        let (out, var_values) = split_output(&x_t, &out)?;
        let target = self
            .diffusion
            .target(self.config.objective, x0, &noise, &t)?;
        let per_sample = (&out - target)?.sqr()?.flatten_from(1)?.mean(1)?;
        let plain: Vec<f64> = per_sample.to_dtype(DType::F64)?.to_vec1()?;
        let weights = self.min_snr_weights(&t);
        let mut examples: Vec<ExampleLoss> = t
            .iter()
            .zip(&plain)
            .map(|(&t, &loss)| ExampleLoss {
                t,
                loss,
                weighted: None,
            })
            .collect();
        let per_sample = match weights {
            None => per_sample,
            Some(w) => {
                for (e, &w) in examples.iter_mut().zip(&w) {
                    e.weighted = Some(e.loss * f64::from(w));
                }
                (per_sample * Tensor::from_vec(w, b, x0.device())?)?
            }
        };
        let per_sample = match var_values {
            None => per_sample,
            Some(v) => {
                let d = &self.diffusion;
                let vb = hybrid::vlb_bits(d, self.config.objective, x0, &x_t, &t, &out, &v)?;
                (per_sample + (vb * (self.config.hybrid_lambda * t_steps as f64))?)?
            }
        };
        Ok((per_sample.mean_all()?, examples))
    }

    /// The min-SNR-γ weight of each timestep, or `None` for the unweighted objective.
    fn min_snr_weights(&self, t: &[usize]) -> Option<Vec<f32>> {
        let gamma = self.config.min_snr_gamma?;
        let s = &self.diffusion.schedule;
        let objective = self.config.objective;
        Some(
            t.iter()
                .map(|&i| {
                    let snr = s.snr(i);
                    let clipped = snr.min(gamma);
                    (match objective {
                        Objective::Eps => clipped / snr,
                        Objective::X0 => clipped,
                        Objective::V => clipped / (snr + 1.0),
                    }) as f32
                })
                .collect(),
        )
    }

    /// Each example of the last step: its timestep and its loss (empty before the first step).
    pub fn last_examples(&self) -> &[ExampleLoss] {
        &self.last_examples
    }

    /// One optimisation step on a batch. A non-finite loss is an error and nothing is updated.
    pub fn train_step(&mut self, x0: &Tensor, cond: Option<&Tensor>) -> Result<StepStats> {
        Ok(self.train_step_timed(x0, cond)?.0)
    }

    /// [`Trainer::train_step`], also reporting the wall time of its three phases.
    pub fn train_step_timed(
        &mut self,
        x0: &Tensor,
        cond: Option<&Tensor>,
    ) -> Result<(StepStats, StepTimings)> {
        let start = Instant::now();
        let mut rng = Rng::new(
            self.config.seed,
            crate::rng::streams::TRAIN + self.step as u64,
        );
        let (loss, examples) = self.loss_with_examples(x0, cond, &mut rng)?;
        self.last_examples = examples;
        let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !loss_value.is_finite() {
            return Err(Error::Diverged {
                step: self.step + 1,
                loss: loss_value,
            });
        }
        let forward_done = Instant::now();
        let grads = loss.backward()?;
        // On a GPU the kernels run asynchronously: wait for them so that the phases are timed
        // where they run (a no-op on the CPU).
        x0.device().synchronize()?;
        let backward_done = Instant::now();
        let vars = self.params.named_vars();
        let mut g = Vec::with_capacity(vars.len());
        for (name, var) in &vars {
            match grads.get(var.as_tensor()) {
                Some(t) => g.push(t.clone()),
                None => {
                    return Err(Error::InvalidModel(format!(
                        "parameter `{name}` received no gradient"
                    )));
                }
            }
        }
        // The graph (every activation) is no longer needed: free it before the update.
        drop(grads);
        drop(loss);
        let grad_norm = optim::global_norm(&g)?;
        // The norm is summed in f64, but past √f32::MAX the f32 squares in Adam's second moment
        // overflow and the weights would silently stop moving: that is divergence too.
        if !grad_norm.is_finite() || grad_norm > f64::from(f32::MAX).sqrt() {
            return Err(Error::Diverged {
                step: self.step + 1,
                loss: grad_norm,
            });
        }
        let grad_scale = if self.config.grad_clip > 0.0 && grad_norm > self.config.grad_clip {
            self.config.grad_clip / (grad_norm + 1e-6)
        } else {
            1.0
        };
        let lr = self.config.lr_at(self.step);
        self.optimizer.step(&g, lr, grad_scale)?;
        self.step += 1;
        let plain: Vec<Var> = vars.into_iter().map(|(_, v)| v).collect();
        self.ema.update(&plain, self.step as u64)?;
        x0.device().synchronize()?;
        let done = Instant::now();
        Ok((
            StepStats {
                step: self.step,
                loss: loss_value,
                grad_norm,
                lr,
            },
            StepTimings {
                forward_s: (forward_done - start).as_secs_f64(),
                backward_s: (backward_done - forward_done).as_secs_f64(),
                optimizer_s: (done - backward_done).as_secs_f64(),
            },
        ))
    }

    /// One step of a caption-conditioned model: each caption is dropped to ∅ with probability
    /// `caption_dropout` (a deterministic draw per step, so resumed runs repeat it), then
    /// embedded by the network's own caption encoder, which trains with it.
    pub fn train_step_captioned(&mut self, x0: &Tensor, captions: &[&str]) -> Result<StepStats> {
        let kept = self.drop_captions(captions);
        let cond = self.model.embed_captions(&kept, x0.device())?;
        self.train_step(x0, Some(&cond))
    }

    /// The captions of the next step after caption dropout.
    pub fn drop_captions<'a>(&self, captions: &[&'a str]) -> Vec<&'a str> {
        let mut rng = Rng::new(
            self.config.seed,
            crate::rng::streams::CAPTIONS + self.step as u64,
        );
        let p = self.config.caption_dropout;
        captions
            .iter()
            .map(|c| if rng.uniform() < p { "" } else { c })
            .collect()
    }

    /// A copy of the network carrying the EMA weights.
    pub fn ema_model(&self) -> Result<UNet> {
        let store = ParamStore::new();
        let model = UNet::new(
            &ParamBuilder::new(&store, 0, self.diffusion.device()),
            &self.model.config,
        )?;
        let names = self.params.named_vars();
        let map = names
            .iter()
            .zip(&self.ema.shadow)
            .map(|((n, _), t)| (n.clone(), t.clone()))
            .collect();
        store.load(&map, "")?;
        Ok(model)
    }

    /// Everything needed to continue exactly: weights, EMA, Adam moments, counters, configs.
    /// The tensors are views of the live state, which the next step updates in place:
    /// serialise the checkpoint (`to_bytes`) before training on.
    pub fn checkpoint(&self, extra_metadata: BTreeMap<String, String>) -> Result<Checkpoint> {
        let mut ck = Checkpoint::default();
        let (m, v) = self.optimizer.moments();
        for (i, (name, var)) in self.params.named_vars().into_iter().enumerate() {
            ck.tensors
                .insert(format!("model.{name}"), var.as_tensor().clone());
            ck.tensors
                .insert(format!("ema.{name}"), self.ema.shadow[i].clone());
            ck.tensors.insert(format!("adam.m.{name}"), m[i].clone());
            ck.tensors.insert(format!("adam.v.{name}"), v[i].clone());
        }
        ck.metadata = extra_metadata;
        ck.set_json("ddlab.model", &self.model.config)?;
        ck.set_json("ddlab.schedule", &self.diffusion.schedule.config)?;
        ck.set_json("ddlab.train", &self.config)?;
        ck.metadata
            .insert("ddlab.step".into(), self.step.to_string());
        ck.metadata
            .insert("ddlab.adam_t".into(), self.optimizer.t.to_string());
        Ok(ck)
    }

    /// Restores a checkpoint written by [`Trainer::checkpoint`] for the same configuration.
    pub fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        let model_cfg: UNetConfig = ck.get_json("ddlab.model")?;
        if model_cfg != self.model.config {
            return Err(Error::Checkpoint(
                "the checkpoint was made for a different model configuration".into(),
            ));
        }
        self.params.load(&ck.tensors, "model.")?;
        let device = self.diffusion.device().clone();
        let fetch = |key: String| -> Result<Tensor> {
            ck.tensors
                .get(&key)
                .ok_or_else(|| Error::Checkpoint(format!("tensor `{key}` is missing")))?
                .to_device(&device)
                // A copy of its own: the CPU update writes moments and shadows in place.
                .and_then(|t| t.copy())
                .map_err(Error::from)
        };
        let names: Vec<String> = self
            .params
            .named_vars()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let mut m = Vec::new();
        let mut v = Vec::new();
        let mut shadow = Vec::new();
        for n in &names {
            m.push(fetch(format!("adam.m.{n}"))?);
            v.push(fetch(format!("adam.v.{n}"))?);
            shadow.push(fetch(format!("ema.{n}"))?);
        }
        let adam_t = ck.get_parsed::<u64>("ddlab.adam_t")?;
        self.optimizer.set_moments(m, v, adam_t);
        self.ema.shadow = shadow;
        self.step = ck.get_parsed::<usize>("ddlab.step")?;
        Ok(())
    }
}

/// A network restored for inference from a checkpoint: its configs and its EMA (or raw) weights.
pub struct LoadedModel {
    pub model: UNet,
    pub schedule: NoiseSchedule,
    pub train: TrainConfig,
    pub step: usize,
}

impl LoadedModel {
    pub fn from_checkpoint(ck: &Checkpoint, device: &Device, use_ema: bool) -> Result<Self> {
        let model_cfg: UNetConfig = ck.get_json("ddlab.model")?;
        let schedule_cfg: ScheduleConfig = ck.get_json("ddlab.schedule")?;
        let train: TrainConfig = ck.get_json("ddlab.train")?;
        let store = ParamStore::new();
        let model = UNet::new(&ParamBuilder::new(&store, 0, device), &model_cfg)?;
        store.load(&ck.tensors, if use_ema { "ema." } else { "model." })?;
        Ok(Self {
            model,
            schedule: schedule_cfg.build()?,
            train,
            step: ck.get_parsed("ddlab.step")?,
        })
    }
}
