//! `ddlab eval --sweep`: the finished runs of a sweep evaluated again from their final
//! checkpoints with other settings (more images, more timesteps, another judge), recorded beside
//! the runs' own evaluations under their own method text. Resumable: an evaluation already
//! recorded with the same method at the same step is not computed again.

use anyhow::{Context, Result, bail};
use ddlab_config::limits::{MAX_NLL_IMAGES, MAX_T};
use ddlab_config::{ResolvedRun, RunConfig};
use ddlab_core::Device;
use ddlab_core::data::DataSplit;
use ddlab_core::diffusion::Diffusion;
use ddlab_core::frechet::frechet_distance;
use ddlab_core::judge::{Judge, feature_stats};
use ddlab_core::nll::{NllConfig, nll_bpd};
use ddlab_core::rng::{Rng, streams};
use ddlab_core::sampler::{DdpmVariance, UNetDenoiser};
use ddlab_core::train::LoadedModel;
use ddlab_store::{NewEval, RunRow, RunStatus};
use std::path::{Path, PathBuf};

use crate::events::Observer;
use crate::execute::evaluate::nll_details;
use crate::files::read_checkpoint;
use crate::guidance::{self, Prepared};
use crate::provenance::{JudgeMethod, file_hash, nll_method};
use crate::recorder::SyncStore;
use crate::sampling::{Draw, Network, draw_images};

/// The NLL bound with these settings (the run's own clip_x0 and buckets are kept).
#[derive(Debug, Clone)]
pub struct NllSettings {
    pub images: usize,
    pub timesteps: usize,
    pub variance: DdpmVariance,
}

/// The judge's Fréchet distance (and prompt accuracy, for guided runs) on `samples` samples.
#[derive(Debug, Clone)]
pub struct JudgeSettings {
    pub samples: usize,
    pub judge: PathBuf,
}

/// What to evaluate again.
#[derive(Debug, Clone)]
pub struct Request {
    pub sweep: String,
    pub nll: Option<NllSettings>,
    pub judge: Option<JudgeSettings>,
    /// The evaluation stream's seed; `None`: each run's own seed.
    pub seed: Option<u64>,
    /// Read datasets from here instead of the runs' recorded paths.
    pub data_dir: Option<PathBuf>,
}

/// The most samples one judged re-evaluation draws.
pub const MAX_JUDGE_SAMPLES: usize = 10_000;

impl Request {
    /// The settings alone, before the store is opened.
    pub fn check(&self) -> Result<()> {
        if self.nll.is_none() && self.judge.is_none() {
            bail!("nothing to evaluate: pass --nll, --frechet or both");
        }
        if let Some(n) = &self.nll {
            if !(1..=MAX_NLL_IMAGES).contains(&n.images) {
                bail!("--images must be between 1 and {MAX_NLL_IMAGES}");
            }
            if !(1..=MAX_T).contains(&n.timesteps) {
                bail!("--timesteps must be between 1 and {MAX_T}");
            }
        }
        if let Some(j) = &self.judge
            && !(2..=MAX_JUDGE_SAMPLES).contains(&j.samples)
        {
            bail!(
                "--samples must be between 2 and {MAX_JUDGE_SAMPLES} (a Fréchet distance needs two)"
            );
        }
        Ok(())
    }
}

/// What a re-evaluation did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// Evaluations computed and recorded now.
    pub computed: usize,
    /// Evaluations found already recorded with the same method (an earlier, maybe killed, call).
    pub already: usize,
    /// Runs left out, each with why (not finished, no checkpoint).
    pub skipped: Vec<(String, String)>,
}

/// One finished run, checked and ready: its config, plan and checkpoint.
struct Pending {
    row: RunRow,
    plan: ResolvedRun,
    checkpoint: PathBuf,
}

/// Evaluates the finished runs of `req.sweep` again. Everything is checked (the sweep, each
/// run's config and checkpoint file, the judge against each run's images) before the first
/// value is recorded.
pub fn reevaluate(
    store: &SyncStore,
    req: &Request,
    device: &Device,
    observer: &dyn Observer,
) -> Result<Summary> {
    req.check()?;
    let sweep = store.block(store.store().sweep(&req.sweep))?;
    let rows = store.block(store.store().runs(Some(sweep.id)))?;
    let mut summary = Summary::default();
    let mut pending = Vec::new();
    for row in rows {
        match pending_run(row, req)? {
            Ok(p) => pending.push(p),
            Err(skip) => summary.skipped.push(skip),
        }
    }
    if pending.is_empty() {
        bail!(
            "sweep `{}` has no completed run with a checkpoint",
            req.sweep
        );
    }
    let judge = match &req.judge {
        Some(j) => Some(checked_judge(j, &pending, device)?),
        None => None,
    };
    let cache = crate::DataCache::default();
    for (i, p) in pending.iter().enumerate() {
        observer.note(&format!("[{}/{}] {}", i + 1, pending.len(), p.row.name));
        let data = cache.get(&p.plan.dataset)?;
        crate::check_images(&p.plan, &data)?;
        let run = RunEval {
            store,
            pending: p,
            data: &data,
            req,
            device,
            observer,
        };
        let (computed, already) = run.evaluate(judge.as_ref())?;
        summary.computed += computed;
        summary.already += already;
    }
    Ok(summary)
}

/// A run that can be evaluated again, or why not (`Err` inside: a skip, not a failure).
fn pending_run(
    row: RunRow,
    req: &Request,
) -> Result<std::result::Result<Pending, (String, String)>> {
    if row.status != RunStatus::Completed.as_str() {
        let why = format!("status {}", row.status);
        return Ok(Err((row.name, why)));
    }
    let Some(path) = row.checkpoint_path.clone() else {
        return Ok(Err((row.name, "no checkpoint recorded".into())));
    };
    let checkpoint = PathBuf::from(path);
    if !checkpoint.is_file() {
        bail!(
            "run {} ({}): its checkpoint {} is missing (run the command where the sweep ran, \
             or from the directory that holds its runs/)",
            row.id,
            row.name,
            checkpoint.display()
        );
    }
    let mut config: RunConfig = serde_json::from_str(&row.config_json)
        .with_context(|| format!("run {}: its recorded config does not parse", row.id))?;
    if let Some(dir) = &req.data_dir {
        config.data_dir = Some(dir.clone());
    }
    let plan = config
        .resolve()
        .with_context(|| format!("run {} ({})", row.id, row.name))?;
    Ok(Ok(Pending {
        row,
        plan,
        checkpoint,
    }))
}

/// The judge, loaded once and checked against every run's images.
fn checked_judge(j: &JudgeSettings, pending: &[Pending], device: &Device) -> Result<LoadedJudge> {
    let first = &pending[0].plan;
    let (judge, accuracy) = guidance::load_checked_judge(
        &j.judge,
        first.config.dataset,
        first.model.in_channels,
        first.image_size,
        device,
    )?;
    for p in pending {
        let plan = &p.plan;
        judge
            .config
            .check_compatible(plan.config.dataset, plan.model.in_channels, plan.image_size)
            .with_context(|| format!("run {} ({})", p.row.id, p.row.name))?;
    }
    Ok(LoadedJudge {
        judge,
        accuracy,
        hash: file_hash(&j.judge)?,
        path: j.judge.clone(),
        samples: j.samples,
    })
}

struct LoadedJudge {
    judge: Judge,
    accuracy: f64,
    hash: String,
    path: PathBuf,
    samples: usize,
}

/// One run's re-evaluation.
struct RunEval<'a> {
    store: &'a SyncStore,
    pending: &'a Pending,
    data: &'a DataSplit,
    req: &'a Request,
    device: &'a Device,
    observer: &'a dyn Observer,
}

impl RunEval<'_> {
    /// Computes what is not recorded yet: (computed, already recorded).
    fn evaluate(&self, judge: Option<&LoadedJudge>) -> Result<(usize, usize)> {
        let nll_method = self.req.nll.as_ref().map(|n| self.nll_method(n));
        let judge_method = judge.map(|j| self.judge_method(j));
        let nll_due = match &nll_method {
            Some(m) => !self.has("nll_bpd", m)?,
            None => false,
        };
        let judge_due = match &judge_method {
            Some(m) => !self.has("frechet_distance", m)?,
            None => false,
        };
        let asked = nll_method.is_some() as usize + judge_method.is_some() as usize;
        let due = nll_due as usize + judge_due as usize;
        if due == 0 {
            return Ok((0, asked));
        }
        let ck = read_checkpoint(&self.pending.checkpoint, self.device)?;
        let model = LoadedModel::from_checkpoint(&ck, self.device, true)
            .with_context(|| self.pending.checkpoint.display().to_string())?;
        if nll_due && let (Some(n), Some(m)) = (&self.req.nll, &nll_method) {
            self.evaluate_nll(&model, n, m)?;
        }
        if judge_due && let (Some(j), Some(m)) = (judge, &judge_method) {
            self.evaluate_judge(&model, j, m)?;
        }
        Ok((due, asked - due))
    }

    fn seed(&self) -> u64 {
        self.req.seed.unwrap_or(self.pending.plan.train.seed)
    }

    fn step(&self) -> i64 {
        self.pending.row.checkpoint_step
    }

    fn has(&self, name: &str, method: &str) -> Result<bool> {
        self.store
            .has_eval(self.pending.row.id, name, self.step(), method)
    }

    fn nll_config(&self, n: &NllSettings) -> NllConfig {
        let cfg = &self.pending.plan.config;
        NllConfig {
            timesteps: n.timesteps,
            variance: n.variance,
            clip_x0: cfg.clip_x0,
            batch_size: 128,
            term_buckets: cfg.loss_buckets.min(cfg.t.max(1)),
        }
    }

    /// The images asked for, capped by the held-out split as the run's own evaluation caps
    /// them (so asking for more than there are finds the same method).
    fn nll_images(&self, n: &NllSettings) -> usize {
        n.images.min(self.data.heldout.len())
    }

    fn nll_method(&self, n: &NllSettings) -> String {
        nll_method(self.nll_images(n), &self.nll_config(n), self.seed())
    }

    fn record(&self, name: &str, method: &str, value: f64, details: &str) -> Result<()> {
        let e = NewEval {
            run_id: self.pending.row.id,
            name,
            step: self.step(),
            method,
            value: Some(value),
            details_json: details,
        };
        Ok(self.store.block(self.store.store().record_eval(&e))?)
    }

    fn evaluate_nll(&self, m: &LoadedModel, n: &NllSettings, method: &str) -> Result<()> {
        let cfg = self.nll_config(n);
        let diffusion = Diffusion::new(m.schedule.clone(), self.device);
        let model = m.model.detached();
        let denoiser = UNetDenoiser {
            model: &model,
            diffusion: &diffusion,
            objective: m.train.objective,
            cond: None,
        };
        let held = self.data.heldout.head(self.nll_images(n), self.device)?;
        let mut rng = Rng::new(self.seed(), streams::EVAL);
        let r = nll_bpd(&denoiser, &diffusion, &held, &cfg, &mut rng, &mut |d, t| {
            self.observer.phase("NLL", d, t)
        })?;
        let details = nll_details(&r, &cfg, self.seed())?;
        // The value and its error in one transaction each; the error first, so a kill between
        // them leaves the value to compute (the resume check looks at `nll_bpd`).
        self.record("nll_bpd_stderr", method, r.stderr, &details)?;
        self.record("nll_bpd", method, r.bpd, &details)
    }

    fn judge_method(&self, j: &LoadedJudge) -> String {
        let plan = &self.pending.plan;
        JudgeMethod {
            samples: j.samples,
            sampler: plan.sampler.name(),
            steps: plan.sampler.steps(),
            guidance: plan.config.guidance.name(),
            scale: plan.config.guidance_scale,
            seed: self.seed(),
            judge_hash: &j.hash,
        }
        .text()
    }

    /// `samples` draws with the run's sampler and guidance, read by the judge.
    fn evaluate_judge(&self, m: &LoadedModel, j: &LoadedJudge, method: &str) -> Result<()> {
        let plan = &self.pending.plan;
        let prepared = self.prepare_guidance(j.samples)?;
        let diffusion = Diffusion::new(m.schedule.clone(), self.device);
        let model = m.model.detached();
        let net = Network {
            model: &model,
            diffusion: &diffusion,
            objective: m.train.objective,
        };
        let (c, s) = (plan.model.in_channels, plan.image_size);
        let draw = Draw {
            sampler: &plan.sampler,
            guidance: &prepared,
            shape: (j.samples, c, s, s),
        };
        let mut rng = Rng::new(self.seed(), streams::GUIDED);
        let images = draw_images(&net, &draw, &mut rng, &mut |k, t| {
            self.observer.phase("sampling", k, t)
        })?;
        let heldout = &self.data.heldout;
        let held = heldout.head(j.samples.min(heldout.len()), self.device)?;
        self.observer.phase("judging", 0, 1);
        let fd = frechet_distance(
            &feature_stats(&j.judge, &held)?,
            &feature_stats(&j.judge, &images)?,
        );
        let details = self.judge_details(j, &prepared, held.dim(0)?);
        self.record("judge_accuracy", method, j.accuracy, &details)?;
        if plan.config.guidance.is_guided() && prepared.constraints.iter().all(Option::is_some) {
            let share = guidance::prompt_share(&j.judge, &images, &prepared)?;
            self.record("prompt_accuracy", method, share, &details)?;
        }
        self.observer.phase("judging", 1, 1);
        self.record("frechet_distance", method, fd, &details)
    }

    fn prepare_guidance(&self, n: usize) -> Result<Prepared> {
        let plan = &self.pending.plan;
        let cfg = &plan.config;
        if !cfg.guidance.is_guided() {
            return Ok(Prepared::unguided(n));
        }
        let prepared = guidance::prepare(
            &guidance::Request {
                prompt: Some(cfg.prompt.as_str()),
                kind: cfg.guidance,
                clip: cfg.clip_checkpoint.as_deref(),
                scale: cfg.guidance_scale,
                dataset: cfg.dataset,
                channels: plan.model.in_channels,
                image_size: plan.image_size,
                n,
            },
            self.device,
        )?;
        for w in &prepared.warnings {
            self.observer.note(&format!("warning: {w}"));
        }
        Ok(prepared)
    }

    fn judge_details(&self, j: &LoadedJudge, prepared: &Prepared, held: usize) -> String {
        let plan = &self.pending.plan;
        serde_json::json!({
            "reevaluation": true,
            "guidance": plan.config.guidance.name(),
            "scale": plan.config.guidance_scale,
            "prompt": prepared.prompt_label(),
            "samples": j.samples,
            "heldout": held,
            "sampler": plan.sampler.name(),
            "sample_steps": plan.sampler.steps(),
            "seed": self.seed(),
            "judge": display(&j.path),
            "judge_sha256_8": j.hash,
            "judge_accuracy": j.accuracy,
        })
        .to_string()
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
