//! Executes one run: restore from its checkpoint if there is one, train, record, sample,
//! checkpoint, evaluate. The trainer knows nothing of SQL: this module forwards its results to
//! the store through a [`Recorder`].
//!
//! Durability rule: metrics are flushed before every checkpoint is written, and a resumed run
//! first drops the metric rows after its checkpoint (it will recompute them bit for bit), so no
//! row before the last checkpoint is ever lost and none is duplicated.

use anyhow::{Context, Result, anyhow};
use ddlab_core::checkpoint::Checkpoint;
use ddlab_core::data::{DataSplit, batch_indices};
use ddlab_core::diffusion::Diffusion;
use ddlab_core::grid::{default_columns, encode_png, make_grid};
use ddlab_core::nll::nll_bpd;
use ddlab_core::rng::{Rng, streams};
use ddlab_core::sampler::{UNetDenoiser, sample};
use ddlab_core::train::Trainer;
use ddlab_core::{Device, Error as CoreError};
use ddlab_store::{MetricRow, NewSample, RunStatus};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::{GuidanceChoice, ResolvedRun};
use crate::guidance::{self, Kind, Request};
use crate::recorder::Recorder;
use ddlab_core::judge::{feature_stats, load_judge, prompt_accuracy};
use ddlab_core::metrics::frechet_distance;
use ddlab_core::sampler::{CfgDenoiser, Denoiser, Guide};

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed {
        final_loss: Option<f64>,
        nll_bpd: Option<f64>,
    },
    /// Stopped on request after checkpointing at `step`; resumable.
    Interrupted { step: usize },
    /// Diverged or hit an error; the sweep goes on.
    Failed { error: String },
}

impl Outcome {
    pub fn status(&self) -> RunStatus {
        match self {
            Outcome::Completed { .. } => RunStatus::Completed,
            Outcome::Interrupted { .. } => RunStatus::Interrupted,
            Outcome::Failed { .. } => RunStatus::Failed,
        }
    }
}

/// What a run reports while it works (a progress bar, log lines, or nothing).
pub trait Observer: Send + Sync {
    /// Training progress: steps done of total, and the latest loss.
    fn step(&self, done: usize, total: usize, loss: f64);
    /// A phase change ("sampling", "evaluating NLL", …) with its own progress.
    fn phase(&self, name: &str, done: usize, total: usize);
    /// A one-off message worth showing.
    fn note(&self, msg: &str);
}

/// An observer that shows nothing.
pub struct Silent;
impl Observer for Silent {
    fn step(&self, _: usize, _: usize, _: f64) {}
    fn phase(&self, _: &str, _: usize, _: usize) {}
    fn note(&self, _: &str) {}
}

/// Files of one run under its directory.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub dir: PathBuf,
}

impl RunFiles {
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint.safetensors")
    }
    pub fn sample_png(&self, step: usize) -> PathBuf {
        self.dir.join("samples").join(format!("step-{step:07}.png"))
    }
    pub fn final_png(&self) -> PathBuf {
        self.dir.join("samples.png")
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename), so a kill at any
/// moment leaves either the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} into place", path.display()))?;
    Ok(())
}

/// Everything one execution needs.
pub struct RunContext<'a> {
    pub plan: &'a ResolvedRun,
    pub recorder: &'a Recorder,
    pub files: RunFiles,
    pub device: Device,
    pub data: Arc<DataSplit>,
    pub stop: &'a AtomicBool,
    pub observer: &'a dyn Observer,
    /// A finished run with the same training keys to start from instead of training.
    pub donor: Option<Donor>,
}

/// Where a run that shares another's training takes its weights from.
#[derive(Debug, Clone)]
pub struct Donor {
    pub run_id: i64,
    pub checkpoint: PathBuf,
}

const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Runs to completion, interruption or failure. Errors of the run itself (divergence, a bad
/// value met at run time) become `Outcome::Failed`; only infrastructure failures (the store or
/// the disk) are returned as `Err`.
pub fn execute(ctx: &RunContext) -> Result<Outcome> {
    let plan = ctx.plan;
    let schedule = plan.schedule.build()?;
    let mut trainer = Trainer::new(&plan.model, schedule, plan.train.clone(), &ctx.device)?;

    // Resume.
    let ck_path = ctx.files.checkpoint();
    if ck_path.exists() {
        let bytes = std::fs::read(&ck_path)
            .with_context(|| format!("cannot read {}", ck_path.display()))?;
        // A checkpoint in this run's directory may be another run's: the directory is named
        // by sweep, run id and name, so a second database (or a changed sweep file) with the
        // same output root finds the first one's. Only this run's own configuration resumes.
        let config = serde_json::to_string(&plan.config)?;
        let own = |ck: Checkpoint| -> ddlab_core::Result<Checkpoint> {
            match ck.metadata.get("ddlab.run_config") {
                Some(c) if *c != config => Err(ddlab_core::Error::Checkpoint(
                    "it was written for a different run configuration (another database or \
                     sweep file using the same output directory)"
                        .into(),
                )),
                _ => Ok(ck),
            }
        };
        match Checkpoint::from_bytes(&bytes, &ctx.device)
            .and_then(own)
            .and_then(|ck| trainer.restore(&ck))
        {
            Ok(()) => ctx
                .observer
                .note(&format!("resuming from step {}", trainer.step_count())),
            Err(e) => {
                ctx.observer.note(&format!(
                    "ignoring unusable checkpoint {} ({e}); starting over",
                    ck_path.display()
                ));
                trainer = Trainer::new(
                    &plan.model,
                    plan.schedule.build()?,
                    plan.train.clone(),
                    &ctx.device,
                )?;
            }
        }
    }
    if let (false, Some(donor)) = (ck_path.exists(), &ctx.donor) {
        let bytes = std::fs::read(&donor.checkpoint)
            .with_context(|| format!("cannot read {}", donor.checkpoint.display()))?;
        let ck = Checkpoint::from_bytes(&bytes, &ctx.device)?;
        if trainer.restore(&ck).is_ok() {
            ctx.observer.note(&format!(
                "trained weights shared with run {} (same training keys)",
                donor.run_id
            ));
            let details = serde_json::json!({ "checkpoint": donor.checkpoint }).to_string();
            ctx.recorder
                .eval("trained_by_run", Some(donor.run_id as f64), &details)?;
        }
    }
    let start_step = trainer.step_count();
    ctx.recorder.truncate_metrics_after(start_step)?;

    let total = plan.train.steps;
    let train = &ctx.data.train;
    let mut pending: Vec<MetricRow> = Vec::new();
    let mut last_flush = Instant::now();
    let mut window = (Instant::now(), start_step);
    let mut last_loss = None;

    let checkpoint = |trainer: &Trainer, pending: &mut Vec<MetricRow>| -> Result<()> {
        ctx.recorder.metrics(std::mem::take(pending))?;
        let mut meta = BTreeMap::new();
        meta.insert(
            "ddlab.run_config".to_string(),
            serde_json::to_string(&plan.config)?,
        );
        let bytes = trainer.checkpoint(meta)?.to_bytes()?;
        write_atomic(&ck_path, &bytes)?;
        ctx.recorder.checkpointed(trainer.step_count(), &ck_path)?;
        Ok(())
    };

    while trainer.step_count() < total {
        if ctx.stop.load(Ordering::SeqCst) {
            checkpoint(&trainer, &mut pending)?;
            return Ok(Outcome::Interrupted {
                step: trainer.step_count(),
            });
        }
        let step = trainer.step_count();
        let idx = batch_indices(train.len(), plan.train.batch_size, plan.train.seed, step);
        let x0 = train.batch(&idx, &ctx.device)?;
        let stepped = if plan.config.captions {
            training_captions(ctx, &idx, step).and_then(|captions| {
                let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
                Ok(trainer.train_step_captioned(&x0, &refs)?)
            })
        } else {
            trainer.train_step(&x0, None).map_err(anyhow::Error::from)
        };
        let stats = match stepped.map_err(|e| match e.downcast::<CoreError>() {
            Ok(core) => core,
            Err(other) => CoreError::InvalidTraining(format!("{other:#}")),
        }) {
            Ok(s) => s,
            Err(e @ CoreError::Diverged { .. }) => {
                ctx.recorder.metrics(std::mem::take(&mut pending))?;
                return Ok(Outcome::Failed {
                    error: e.to_string(),
                });
            }
            Err(e) => {
                return Ok(Outcome::Failed {
                    error: e.to_string(),
                });
            }
        };
        last_loss = Some(stats.loss);
        let done = stats.step;
        if done % plan.config.log_every == 0 || done == total {
            let wall = unix_now();
            for (name, value) in [
                ("loss", stats.loss),
                ("grad_norm", stats.grad_norm),
                ("lr", stats.lr),
            ] {
                pending.push(ctx.recorder.metric(done, name, value, wall));
            }
        }
        if done % 20 == 0 {
            let secs = window.0.elapsed().as_secs_f64();
            if secs > 0.0 {
                pending.push(ctx.recorder.metric(
                    done,
                    "steps_per_s",
                    (done - window.1) as f64 / secs,
                    unix_now(),
                ));
            }
            window = (Instant::now(), done);
        }
        ctx.observer.step(done, total, stats.loss);
        if done % plan.config.checkpoint_every == 0 && done < total {
            checkpoint(&trainer, &mut pending)?;
        } else if last_flush.elapsed() > FLUSH_EVERY {
            ctx.recorder.metrics(std::mem::take(&mut pending))?;
            ctx.recorder.heartbeat(done)?;
            last_flush = Instant::now();
        }
        if plan.config.sample_every > 0 && done % plan.config.sample_every == 0 && done < total {
            draw_samples(ctx, &trainer, done, false)?;
        }
    }
    checkpoint(&trainer, &mut pending)?;

    draw_samples(ctx, &trainer, total, true)?;
    let nll = match &plan.nll {
        Some(cfg) => Some(evaluate_nll(ctx, &trainer, cfg)?),
        None => None,
    };
    let guided = plan.config.guidance != GuidanceChoice::None;
    if (guided || plan.config.judge_checkpoint.is_some())
        && let Err(e) = evaluate_guidance(ctx, &trainer)
    {
        return Ok(Outcome::Failed {
            error: format!("guided evaluation: {e:#}"),
        });
    }
    Ok(Outcome::Completed {
        final_loss: last_loss,
        nll_bpd: nll,
    })
}

/// One phrasing of each image's caption, drawn from this step's stream (so a resumed run
/// sees the same captions).
fn training_captions(ctx: &RunContext, idx: &[usize], step: usize) -> Result<Vec<String>> {
    let train = &ctx.data.train;
    if train.attributes.len() != train.len() {
        return Err(anyhow!(
            "captions = true needs a dataset with captions ({} has none)",
            train.name
        ));
    }
    let attrs: Vec<[u8; 3]> = idx.iter().map(|&i| train.attributes[i]).collect();
    let mut rng = Rng::new(ctx.plan.train.seed, streams::PHRASINGS + step as u64);
    Ok(ddlab_core::text::training_captions(
        ctx.plan.config.dataset,
        &attrs,
        &mut rng,
    )?)
}

/// The guided evaluation: `guided_count` samples with the run's guidance, scale and prompt; a
/// grid of them into the store (carrying prompt, guidance and scale); with a judge, the share
/// it reads as the prompt, the Fréchet distance of its penultimate features between held-out
/// images and the samples, and the judge's own held-out accuracy beside them.
fn evaluate_guidance(ctx: &RunContext, trainer: &Trainer) -> Result<()> {
    let plan = ctx.plan;
    let cfg = &plan.config;
    let model = trainer.ema_model()?.detached();
    let diffusion = &trainer.diffusion;
    let (c, s, n) = (plan.model.in_channels, plan.image_size, cfg.guided_count);
    let kind = match cfg.guidance {
        GuidanceChoice::None => None,
        GuidanceChoice::Clip => Some(Kind::Clip),
        GuidanceChoice::Cfg => Some(Kind::Cfg),
    };
    let prepared = guidance::prepare(
        &Request {
            prompt: kind.map(|_| cfg.prompt.as_str()),
            kind,
            clip: cfg.clip_checkpoint.as_deref(),
            scale: cfg.guidance_scale,
            dataset: cfg.dataset,
            channels: c,
            image_size: s,
            n,
        },
        &ctx.device,
    )?;
    for w in &prepared.warnings {
        ctx.observer.note(&format!("warning: {w}"));
    }
    let prompts: Vec<&str> = prepared.prompts.iter().map(String::as_str).collect();
    let cfg_denoiser;
    let plain;
    let denoiser: &dyn Denoiser = if kind == Some(Kind::Cfg) {
        cfg_denoiser = CfgDenoiser::new(
            &model,
            diffusion,
            plan.train.objective,
            &prompts,
            cfg.guidance_scale,
        )?;
        &cfg_denoiser
    } else {
        plain = UNetDenoiser {
            model: &model,
            diffusion,
            objective: plan.train.objective,
            // A caption-conditioned network reads ∅ (unguided, or CLIP-guided) without one.
            cond: None,
        };
        &plain
    };
    let guide = prepared.clip_guide(&diffusion.schedule)?;
    let sampler = plan.sampler.build(&diffusion.schedule)?;
    let mut rng = Rng::new(plan.train.seed, streams::GUIDED);
    let images = sample(
        sampler.as_ref(),
        denoiser,
        guide.as_ref().map(|g| g as &dyn Guide),
        diffusion,
        (n, c, s, s),
        &mut rng,
        &mut |k, total| ctx.observer.phase("guided sampling", k, total),
    )?;
    let shown = n.min(100);
    let grid = make_grid(
        &images.narrow(0, 0, shown)?,
        default_columns(shown),
        (64 / s).max(1),
    )?;
    let png = encode_png(&grid)?;
    write_atomic(&ctx.files.dir.join("guided.png"), &png)?;
    ctx.recorder.sample(NewSample {
        run_id: ctx.recorder.run_id(),
        step: plan.train.steps as i64,
        sampler: plan.sampler.name().into(),
        sample_steps: plan.sampler.steps() as i64,
        prompt: prepared.prompt_label(),
        guidance: kind.map(|k| k.name().to_string()),
        guidance_scale: kind.map(|_| cfg.guidance_scale),
        count: shown as i64,
        width: grid.width() as i64,
        height: grid.height() as i64,
        png,
    })?;

    let Some(judge_path) = &cfg.judge_checkpoint else {
        return Ok(());
    };
    let (judge, judge_accuracy) = load_judge(
        &guidance::read_checkpoint(judge_path, &ctx.device)?,
        &ctx.device,
    )
    .with_context(|| judge_path.display().to_string())?;
    judge
        .config
        .check_compatible(cfg.dataset, c, s)
        .with_context(|| judge_path.display().to_string())?;
    let details = serde_json::json!({
        "guidance": kind.map_or("none", |k| k.name()),
        "scale": cfg.guidance_scale,
        "prompt": prepared.prompt_label(),
        "samples": n,
        "judge": judge_path,
        "judge_accuracy": judge_accuracy,
    })
    .to_string();
    ctx.recorder
        .eval("judge_accuracy", Some(judge_accuracy), &details)?;
    if kind.is_some()
        && let Some(wanted) = prepared
            .constraints
            .iter()
            .copied()
            .collect::<Option<Vec<_>>>()
    {
        let acc = prompt_accuracy(&judge, &images, &wanted)?;
        ctx.recorder.eval("prompt_accuracy", Some(acc), &details)?;
    }
    let held = ctx
        .data
        .heldout
        .head(n.min(ctx.data.heldout.len()), &ctx.device)?;
    let fd = frechet_distance(
        &feature_stats(&judge, &held)?,
        &feature_stats(&judge, &images)?,
    );
    ctx.recorder.eval("frechet_distance", Some(fd), &details)?;
    Ok(())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A grid from the EMA weights, into the store and beside the checkpoint. The noise comes from
/// the stream of this step, so the grids of a run are comparable across steps.
fn draw_samples(ctx: &RunContext, trainer: &Trainer, step: usize, last: bool) -> Result<()> {
    let plan = ctx.plan;
    let model = trainer.ema_model()?.detached();
    let diffusion: &Diffusion = &trainer.diffusion;
    let sampler = plan.sampler.build(&diffusion.schedule)?;
    let denoiser = UNetDenoiser {
        model: &model,
        diffusion,
        objective: plan.train.objective,
        cond: None,
    };
    let n = plan.config.sample_count;
    let c = plan.model.in_channels;
    let s = plan.image_size;
    let mut rng = Rng::new(plan.train.seed, streams::SAMPLING);
    let images = sample(
        sampler.as_ref(),
        &denoiser,
        None,
        diffusion,
        (n, c, s, s),
        &mut rng,
        &mut |k, total| ctx.observer.phase("sampling", k, total),
    )?;
    let grid = make_grid(&images, default_columns(n), (64 / s).max(1))?;
    let png = encode_png(&grid)?;
    write_atomic(&ctx.files.sample_png(step), &png)?;
    if last {
        write_atomic(&ctx.files.final_png(), &png)?;
    }
    ctx.recorder.sample(NewSample {
        run_id: ctx.recorder.run_id(),
        step: step as i64,
        sampler: plan.sampler.name().into(),
        sample_steps: plan.sampler.steps() as i64,
        prompt: None,
        guidance: None,
        guidance_scale: None,
        count: n as i64,
        width: grid.width() as i64,
        height: grid.height() as i64,
        png,
    })?;
    Ok(())
}

fn evaluate_nll(
    ctx: &RunContext,
    trainer: &Trainer,
    cfg: &ddlab_core::nll::NllConfig,
) -> Result<f64> {
    let plan = ctx.plan;
    let model = trainer.ema_model()?.detached();
    let diffusion = &trainer.diffusion;
    let denoiser = UNetDenoiser {
        model: &model,
        diffusion,
        objective: plan.train.objective,
        cond: None,
    };
    let held = ctx.data.heldout.head(plan.config.nll_images, &ctx.device)?;
    let mut rng = Rng::new(plan.train.seed, streams::EVAL);
    let r = nll_bpd(&denoiser, diffusion, &held, cfg, &mut rng, &mut |d, t| {
        ctx.observer.phase("NLL", d, t)
    })
    .map_err(|e| anyhow!(e))?;
    let details = serde_json::to_string(&r)?;
    ctx.recorder.eval("nll_bpd", Some(r.bpd), &details)?;
    ctx.recorder
        .eval("nll_bpd_stderr", Some(r.stderr), &details)?;
    Ok(r.bpd)
}
