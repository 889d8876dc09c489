//! Training the two models guided sampling needs, recorded in the store like any run: the
//! noised CLIP (`ddlab train-clip`) and the judge classifier (`ddlab train-judge`).

use anyhow::Result;
use ddlab_core::Device;
use ddlab_core::clip::{ClipConfig, ClipTrainConfig, ClipTrainer, zero_shot_accuracy};
use ddlab_core::data::{DataSplit, DatasetConfig, DatasetKind};
use ddlab_core::judge::{JudgeConfig, JudgeTrainConfig, JudgeTrainer, accuracy};
use ddlab_store::{NewEval, NewRun, RunStatus};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::events::Observer;
use crate::files::write_atomic;
use crate::recorder::{Recorder, SyncStore, unix_now};
use crate::worker_info;

/// What kind of helper model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelperKind {
    Clip,
    Judge,
}

impl HelperKind {
    pub fn name(self) -> &'static str {
        match self {
            HelperKind::Clip => "clip",
            HelperKind::Judge => "judge",
        }
    }
}

#[derive(Debug, Clone)]
pub struct HelperRun {
    pub kind: HelperKind,
    pub dataset: DatasetConfig,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: Option<f64>,
    pub seed: u64,
}

/// How the run ended and what it measured.
#[derive(Debug, Clone)]
pub struct HelperOutcome {
    pub run_id: i64,
    pub interrupted: bool,
    /// (name, value) of the final evaluations.
    pub evals: Vec<(String, f64)>,
}

/// Trains a CLIP or a judge on `data`, records it, writes its checkpoint to `out`.
pub fn train_helper(
    store: &SyncStore,
    spec: &HelperRun,
    data: &DataSplit,
    out: &Path,
    device: &Device,
    stop: &AtomicBool,
    observer: &dyn Observer,
) -> Result<HelperOutcome> {
    let (c, size) = (data.train.channels, data.train.height);
    if data.train.attributes.is_empty() {
        anyhow::bail!(
            "the {} dataset has no labels or captions to train a {} on",
            spec.dataset.kind,
            spec.kind.name()
        );
    }
    let config_json = serde_json::json!({
        "kind": spec.kind.name(), "dataset": spec.dataset.kind, "data_dir": spec.dataset.dir,
        "steps": spec.steps, "batch_size": spec.batch_size, "lr": spec.lr, "seed": spec.seed,
        "out": out,
    });
    let run = store.block(store.store().ensure_run(&NewRun {
        sweep_id: None,
        name: format!("{}-{}", spec.kind.name(), spec.dataset.kind),
        config_hash: String::new(),
        config_json: config_json.to_string(),
        dataset: spec.dataset.kind.to_string(),
        model: spec.kind.name().into(),
        schedule: "cosine".into(),
        timesteps: 1000,
        seed: spec.seed as i64,
        steps_total: spec.steps as i64,
    }))?;
    store.block(store.store().start_run(
        run.id,
        &crate::device::device_label(device),
        &worker_info(),
    ))?;
    let recorder = Recorder::new(store.clone(), run.id);
    let job = Job {
        rec: &recorder,
        spec,
        data,
        out,
        device,
        stop,
        observer,
        channels: c,
        size,
    };
    let result = match spec.kind {
        HelperKind::Clip => train_clip(&job),
        HelperKind::Judge => train_judge(&job),
    };
    match &result {
        Ok(o) if o.interrupted => store.block(store.store().finish_run(
            run.id,
            RunStatus::Interrupted,
            None,
        ))?,
        Ok(_) => store.block(store.store().finish_run(run.id, RunStatus::Completed, None))?,
        Err(e) => store.block(store.store().finish_run(
            run.id,
            RunStatus::Failed,
            Some(&format!("{e:#}")),
        ))?,
    }
    result.map(|mut o| {
        o.run_id = run.id;
        o
    })
}

/// One helper model's training: where it records, what it trains on, where it writes.
struct Job<'a> {
    rec: &'a Recorder,
    spec: &'a HelperRun,
    data: &'a DataSplit,
    out: &'a Path,
    device: &'a Device,
    stop: &'a AtomicBool,
    observer: &'a dyn Observer,
    channels: usize,
    size: usize,
}

fn train_clip(job: &Job) -> Result<HelperOutcome> {
    let (rec, spec, data, device) = (job.rec, job.spec, job.data, job.device);
    let cfg = ClipConfig::for_dataset(spec.dataset.kind, job.channels, job.size)?;
    let train = ClipTrainConfig {
        steps: spec.steps,
        batch_size: spec.batch_size,
        lr: spec.lr.unwrap_or(ClipTrainConfig::default().lr),
        warmup_steps: (spec.steps / 20).max(1),
        seed: spec.seed,
    };
    let mut trainer = ClipTrainer::new(&cfg, train, device)?;
    let t_steps = cfg.schedule.steps;
    // Zero-shot accuracy at these fractions of T (0 = nearly clean).
    let probes: Vec<usize> = [0.0, 0.25, 0.5, 0.75]
        .iter()
        .map(|f| ((t_steps as f64 * f) as usize).min(t_steps - 1))
        .collect();
    let mut rows = vec![];
    let mut interrupted = false;
    for _ in 0..spec.steps {
        if job.stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let s = trainer.train_step(&data.train)?;
        rows.push(rec.metric(s.step, "loss", s.loss, unix_now()));
        rows.push(rec.metric(s.step, "temperature", s.temperature, unix_now()));
        job.observer.step(s.step, spec.steps, s.loss);
        if s.step % 250 == 0 || s.step == spec.steps {
            let acc = zero_shot_accuracy(
                &trainer.clip,
                &data.heldout,
                256,
                probes[2],
                spec.seed,
                device,
            )?;
            rows.push(rec.metric(
                s.step,
                &format!("zero_shot_acc_t{}", probes[2]),
                acc,
                unix_now(),
            ));
            rec.metrics(std::mem::take(&mut rows))?;
            rec.heartbeat(s.step)?;
        }
    }
    rec.metrics(rows)?;
    let mut evals = vec![];
    for (k, &t) in probes.iter().enumerate() {
        job.observer.phase("zero-shot", k + 1, probes.len());
        let acc = zero_shot_accuracy(&trainer.clip, &data.heldout, 1000, t, spec.seed, device)?;
        let name = format!("zero_shot_acc_t{t}");
        let images = data.heldout.len().min(1000);
        rec.eval(&NewEval {
            run_id: rec.run_id(),
            name: &name,
            step: trainer.step_count() as i64,
            method: &format!("zero-shot t={t} images={images} seed={}", spec.seed),
            value: Some(acc),
            details_json: &serde_json::json!({"t": t, "T": t_steps, "images": images}).to_string(),
        })?;
        evals.push((name, acc));
    }
    // CLIP guidance multiplies its gradient by this (GLIDE's cond_fn), so users see it.
    let logit_scale = trainer.clip.logit_scale()?.to_vec1::<f32>()?[0] as f64;
    rec.eval(&NewEval {
        run_id: rec.run_id(),
        name: "logit_scale",
        step: trainer.step_count() as i64,
        method: "exp(log_scale) clamped to [1, 100]",
        value: Some(logit_scale),
        details_json: "{}",
    })?;
    evals.push(("logit_scale".into(), logit_scale));
    write_atomic(job.out, &trainer.checkpoint()?.to_bytes()?)?;
    rec.checkpointed(trainer.step_count(), job.out)?;
    Ok(HelperOutcome {
        run_id: rec.run_id(),
        interrupted,
        evals,
    })
}

fn train_judge(job: &Job) -> Result<HelperOutcome> {
    let (rec, spec, data, device) = (job.rec, job.spec, job.data, job.device);
    let cfg = JudgeConfig::for_dataset(spec.dataset.kind, job.channels, job.size)?;
    let train = JudgeTrainConfig {
        steps: spec.steps,
        batch_size: spec.batch_size,
        lr: spec.lr.unwrap_or(JudgeTrainConfig::default().lr),
        seed: spec.seed,
    };
    let mut trainer = JudgeTrainer::new(&cfg, train, device)?;
    let mut rows = vec![];
    let mut interrupted = false;
    for _ in 0..spec.steps {
        if job.stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let loss = trainer.train_step(&data.train)?;
        let step = trainer.step_count();
        rows.push(rec.metric(step, "loss", loss, unix_now()));
        job.observer.step(step, spec.steps, loss);
        if step % 250 == 0 {
            rec.metrics(std::mem::take(&mut rows))?;
            rec.heartbeat(step)?;
        }
    }
    rec.metrics(rows)?;
    job.observer.phase("held-out accuracy", 0, 1);
    let acc = accuracy(&trainer.judge, &data.heldout, data.heldout.len(), device)?;
    rec.eval(&NewEval {
        run_id: rec.run_id(),
        name: "judge_accuracy",
        step: trainer.step_count() as i64,
        method: &format!("held-out images={}", data.heldout.len()),
        value: Some(acc),
        details_json: &serde_json::json!({"images": data.heldout.len(), "heads": cfg.heads})
            .to_string(),
    })?;
    write_atomic(job.out, &trainer.checkpoint(acc)?.to_bytes()?)?;
    rec.checkpointed(trainer.step_count(), job.out)?;
    Ok(HelperOutcome {
        run_id: rec.run_id(),
        interrupted,
        evals: vec![("judge_accuracy".into(), acc)],
    })
}

/// The dataset kinds text conditioning supports.
pub fn check_text_dataset(kind: DatasetKind) -> Result<()> {
    match kind {
        DatasetKind::Mnist | DatasetKind::Shapes => Ok(()),
        other => anyhow::bail!(
            "CLIPs, judges and text prompts are available for mnist and shapes, not {other}"
        ),
    }
}
