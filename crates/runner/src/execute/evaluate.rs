//! What a run measures from its EMA weights: sample grids (during and after training), the NLL
//! bound, and the guided evaluation (prompt accuracy and Fréchet distance read by a judge).

use anyhow::{Result, anyhow};
use ddlab_core::Tensor;
use ddlab_core::frechet::frechet_distance;
use ddlab_core::grid::{default_columns, encode_png, make_grid};
use ddlab_core::judge::{Judge, feature_stats, prompt_accuracy};
use ddlab_core::nll::{NllConfig, NllResult, nll_bpd};
use ddlab_core::nn::UNet;
use ddlab_core::rng::{Rng, streams};
use ddlab_core::sampler::UNetDenoiser;
use ddlab_core::train::Trainer;
use ddlab_store::NewSample;
use std::path::Path;

use super::{Outcome, RunContext};
use crate::events::{Events, RunEvent};
use crate::files::write_atomic;
use crate::guidance::{self, Prepared, Request};
use crate::provenance::{JudgeMethod, file_hash, nll_method};
use crate::sampling::{Draw, Network, draw_images};

/// After the last step: the final grid, the NLL bound, the guided evaluation.
pub(super) fn final_evaluations(
    ctx: &RunContext,
    trainer: &Trainer,
    events: &mut Events,
    last_loss: Option<f64>,
) -> Result<Outcome> {
    let plan = ctx.plan;
    draw_grid(ctx, trainer, plan.train.steps, events)?;
    let nll = evaluate_nll(ctx, trainer, plan.train.steps, events)?;
    if let Some(failed) = guided_evaluation(ctx, trainer, plan.train.steps, events) {
        return Ok(failed);
    }
    Ok(Outcome::Completed {
        final_loss: last_loss,
        nll_bpd: nll.or(recorded_nll(ctx)?),
    })
}

/// The guided evaluation at `step` for a guided run or one with a judge (during training at
/// `eval_every`, and after the last step); a failure ends the run as failed, said why.
pub(super) fn guided_evaluation(
    ctx: &RunContext,
    trainer: &Trainer,
    step: usize,
    events: &mut Events,
) -> Option<Outcome> {
    let cfg = &ctx.plan.config;
    if !(cfg.guidance.is_guided() || cfg.judge_checkpoint.is_some()) {
        return None;
    }
    let e = evaluate_guidance(ctx, trainer, step, events).err()?;
    Some(Outcome::Failed {
        error: format!("guided evaluation: {}", crate::error::one_line(&e)),
    })
}

/// The EMA weights as an inference network (no autograd graph).
fn ema_network(trainer: &Trainer) -> Result<UNet> {
    Ok(trainer.ema_model()?.detached())
}

/// A grid of `images` scaled for viewing, as PNG bytes and its size.
fn grid_png(images: &Tensor, shown: usize, image_size: usize) -> Result<(Vec<u8>, i64, i64)> {
    let grid = make_grid(
        &images.narrow(0, 0, shown)?,
        default_columns(shown),
        (64 / image_size).max(1),
    )?;
    Ok((
        encode_png(&grid)?,
        grid.width() as i64,
        grid.height() as i64,
    ))
}

/// A grid from the EMA weights, into the store and beside the checkpoint. The noise comes from
/// the run's sampling stream, so the grids of a run are comparable across steps.
pub(super) fn draw_grid(
    ctx: &RunContext,
    trainer: &Trainer,
    step: usize,
    events: &mut Events,
) -> Result<()> {
    let plan = ctx.plan;
    if ctx.recorder.has_sample(step, false)? {
        return Ok(());
    }
    let model = ema_network(trainer)?;
    let net = Network {
        model: &model,
        diffusion: &trainer.diffusion,
        objective: plan.train.objective,
    };
    let (n, c, s) = (
        plan.config.sample_count,
        plan.model.in_channels,
        plan.image_size,
    );
    let unguided = Prepared::unguided(n);
    let draw = Draw {
        sampler: &plan.sampler,
        guidance: &unguided,
        shape: (n, c, s, s),
    };
    let mut rng = Rng::new(plan.train.seed, streams::SAMPLING);
    let images = draw_images(&net, &draw, &mut rng, &mut |k, total| {
        events.phase("sampling", k, total)
    })?;
    let (png, width, height) = grid_png(&images, n, s)?;
    write_atomic(&ctx.files.sample_png(step), &png)?;
    if step == plan.train.steps {
        write_atomic(&ctx.files.final_png(), &png)?;
    }
    events.emit(RunEvent::Sample(&NewSample {
        run_id: ctx.recorder.run_id(),
        step: step as i64,
        sampler: plan.sampler.name().into(),
        sample_steps: plan.sampler.steps() as i64,
        prompt: None,
        guidance: None,
        guidance_scale: None,
        count: n as i64,
        width,
        height,
        png,
    }))
}

/// The NLL bound of the EMA weights at training step `step`, recorded with the step and how it
/// was computed; `None` when the run does not evaluate it. Every step draws the same timesteps
/// and noise (the evaluation stream of the seed), so the values of one run differ only by its
/// weights. A value already recorded (a resumed run) is not computed again.
pub(super) fn evaluate_nll(
    ctx: &RunContext,
    trainer: &Trainer,
    step: usize,
    events: &mut Events,
) -> Result<Option<f64>> {
    let plan = ctx.plan;
    let Some(cfg) = &plan.nll else {
        return Ok(None);
    };
    let images = plan.config.nll_images.min(ctx.data.heldout.len());
    let method = nll_method(images, cfg, plan.train.seed);
    if ctx.recorder.has_eval_at("nll_bpd", step, &method)? {
        return Ok(None);
    }
    let model = ema_network(trainer)?;
    let denoiser = UNetDenoiser {
        model: &model,
        diffusion: &trainer.diffusion,
        objective: plan.train.objective,
        cond: None,
    };
    let held = ctx.data.heldout.head(images, &ctx.device)?;
    let mut rng = Rng::new(plan.train.seed, streams::EVAL);
    let r = nll_bpd(
        &denoiser,
        &trainer.diffusion,
        &held,
        cfg,
        &mut rng,
        &mut |d, t| events.phase("NLL", d, t),
    )
    .map_err(|e| anyhow!(e))?;
    let details = nll_details(&r, cfg, plan.train.seed)?;
    for (name, value) in [("nll_bpd", r.bpd), ("nll_bpd_stderr", r.stderr)] {
        events.emit(RunEvent::Eval {
            name,
            step,
            method: &method,
            value: Some(value),
            details: &details,
        })?;
    }
    Ok(Some(r.bpd))
}

/// The NLL result with the settings that made it (the provenance a reader shows).
pub(crate) fn nll_details(r: &NllResult, cfg: &NllConfig, seed: u64) -> Result<String> {
    let mut details = serde_json::to_value(r)?;
    details["variance"] = serde_json::json!(cfg.variance.to_string());
    details["clip_x0"] = serde_json::json!(cfg.clip_x0);
    details["seed"] = serde_json::json!(seed);
    Ok(details.to_string())
}

/// The guided evaluation: `guided_count` samples with the run's guidance, scale and prompt; a
/// grid of them into the store (carrying prompt, guidance and scale); with a judge, its metrics.
fn evaluate_guidance(
    ctx: &RunContext,
    trainer: &Trainer,
    step: usize,
    events: &mut Events,
) -> Result<()> {
    let plan = ctx.plan;
    let cfg = &plan.config;
    let (c, s, n) = (plan.model.in_channels, plan.image_size, cfg.guided_count);
    let guided = cfg.guidance.is_guided();
    if guided_evaluation_done(ctx, step)? {
        return Ok(());
    }
    let prepared = guidance::prepare(
        &Request {
            prompt: guided.then_some(cfg.prompt.as_str()),
            kind: cfg.guidance,
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
        events.note(&format!("warning: {w}"))?;
    }
    let judge = match &cfg.judge_checkpoint {
        Some(path) => Some((
            path.as_path(),
            guidance::load_checked_judge(path, cfg.dataset, c, s, &ctx.device)?,
        )),
        None => None,
    };
    let model = ema_network(trainer)?;
    let net = Network {
        model: &model,
        diffusion: &trainer.diffusion,
        objective: plan.train.objective,
    };
    let draw = Draw {
        sampler: &plan.sampler,
        guidance: &prepared,
        shape: (n, c, s, s),
    };
    let mut rng = Rng::new(plan.train.seed, streams::GUIDED);
    let started = std::time::Instant::now();
    let images = draw_images(&net, &draw, &mut rng, &mut |k, total| {
        events.phase("guided sampling", k, total)
    })?;
    let at = Drawn {
        step,
        images: &images,
        prepared: &prepared,
    };
    record_sampling_time(
        ctx,
        step,
        started.elapsed().as_secs_f64() / n as f64,
        events,
    )?;
    record_guided_grid(ctx, &at, events)?;
    match judge {
        Some((path, judge)) => judge_metrics(ctx, path, judge, &at, events),
        None => Ok(()),
    }
}

/// The guided draw of one training step.
struct Drawn<'a> {
    step: usize,
    images: &'a Tensor,
    prepared: &'a Prepared,
}

/// Wall seconds per sample of the guided or judged draw, with what decides it: the sampler,
/// its steps and the threads (the few-step sampler study plots it against the steps).
fn record_sampling_time(
    ctx: &RunContext,
    step: usize,
    seconds: f64,
    events: &mut Events,
) -> Result<()> {
    let plan = ctx.plan;
    let details = serde_json::json!({
        "sampler": plan.sampler.name(),
        "steps": plan.sampler.steps(),
        "samples": plan.config.guided_count,
        "threads": crate::device::cpu_threads(),
        "device": format!("{:?}", ctx.device),
    })
    .to_string();
    let method = format!(
        "timing samples={} sampler={} steps={} threads={}",
        plan.config.guided_count,
        plan.sampler.name(),
        plan.sampler.steps(),
        crate::device::cpu_threads()
    );
    events.emit(RunEvent::Eval {
        name: "seconds_per_sample",
        step,
        method: &method,
        value: Some(seconds),
        details: &details,
    })
}

/// The run's NLL at its last step as recorded earlier (a resumed run that evaluated it before
/// being killed).
fn recorded_nll(ctx: &RunContext) -> Result<Option<f64>> {
    ctx.recorder.eval_value("nll_bpd", ctx.plan.train.steps)
}

/// Whether a run resumed after a kill already recorded this step's guided grid and judge
/// metrics.
fn guided_evaluation_done(ctx: &RunContext, step: usize) -> Result<bool> {
    let cfg = &ctx.plan.config;
    let rec = ctx.recorder;
    let grid = !cfg.guidance.is_guided() || rec.has_sample(step, true)?;
    let judged = cfg.judge_checkpoint.is_none() || rec.has_eval_step("frechet_distance", step)?;
    Ok(grid && judged)
}

fn record_guided_grid(ctx: &RunContext, at: &Drawn, events: &mut Events) -> Result<()> {
    let (plan, cfg) = (ctx.plan, &ctx.plan.config);
    let shown = cfg.guided_count.min(100);
    let (png, width, height) = grid_png(at.images, shown, plan.image_size)?;
    let prepared = at.prepared;
    write_atomic(&ctx.files.guided_png(), &png)?;
    let guided = cfg.guidance.is_guided();
    if guided && ctx.recorder.has_sample(at.step, true)? {
        return Ok(());
    }
    events.emit(RunEvent::Sample(&NewSample {
        run_id: ctx.recorder.run_id(),
        step: at.step as i64,
        sampler: plan.sampler.name().into(),
        sample_steps: plan.sampler.steps() as i64,
        prompt: prepared.prompt_label(),
        guidance: guided.then(|| cfg.guidance.name().to_string()),
        guidance_scale: guided.then_some(cfg.guidance_scale),
        count: shown as i64,
        width,
        height,
        png,
    }))
}

/// With a judge: the judge's own held-out accuracy, the share of samples it reads as their
/// prompt, and the Fréchet distance of its penultimate features (held-out against samples).
fn judge_metrics(
    ctx: &RunContext,
    judge_path: &Path,
    (judge, judge_accuracy): (Judge, f64),
    at: &Drawn,
    events: &mut Events,
) -> Result<()> {
    let (images, prepared) = (at.images, at.prepared);
    let (plan, cfg) = (ctx.plan, &ctx.plan.config);
    let n = cfg.guided_count;
    let judge_hash = file_hash(judge_path)?;
    let method = JudgeMethod {
        samples: n,
        sampler: plan.sampler.name(),
        steps: plan.sampler.steps(),
        guidance: cfg.guidance.name(),
        scale: cfg.guidance_scale,
        seed: plan.train.seed,
        judge_hash: &judge_hash,
    }
    .text();
    let details = serde_json::json!({
        "guidance": cfg.guidance.name(),
        "scale": cfg.guidance_scale,
        "prompt": prepared.prompt_label(),
        "samples": n,
        "sampler": plan.sampler.name(),
        "sample_steps": plan.sampler.steps(),
        "seed": plan.train.seed,
        "judge": judge_path,
        "judge_sha256_8": judge_hash,
        "judge_accuracy": judge_accuracy,
    })
    .to_string();
    let step = at.step;
    let mut eval = |name: &str, value: f64| {
        events.emit(RunEvent::Eval {
            name,
            step,
            method: &method,
            value: Some(value),
            details: &details,
        })
    };
    eval("judge_accuracy", judge_accuracy)?;
    if cfg.guidance.is_guided()
        && let Some(wanted) = prepared
            .constraints
            .iter()
            .copied()
            .collect::<Option<Vec<_>>>()
    {
        eval("prompt_accuracy", prompt_accuracy(&judge, images, &wanted)?)?;
    }
    let held = ctx
        .data
        .heldout
        .head(n.min(ctx.data.heldout.len()), &ctx.device)?;
    let fd = frechet_distance(
        &feature_stats(&judge, &held)?,
        &feature_stats(&judge, images)?,
    );
    eval("frechet_distance", fd)
}
