//! The training loop: one step per batch until the run's steps are done or it is asked to
//! stop, checkpointing on schedule and drawing grids on schedule.

use anyhow::Result;
use ddlab_core::Error as CoreError;
use ddlab_core::data::batch_indices;
use ddlab_core::rng::{Rng, streams};
use ddlab_core::train::{StepStats, Trainer};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::restore::RUN_CONFIG_KEY;
use super::{Outcome, RunContext, evaluate, rung};
use crate::events::{Events, RunEvent};
use crate::files::write_atomic;

/// How the loop ended.
pub(super) enum Trained {
    /// Every step is done.
    Finished { last_loss: Option<f64> },
    /// Interrupted or failed: the run ends with this outcome.
    Stopped(Outcome),
}

/// Flushes what came before, writes the checkpoint atomically, then records it.
pub(super) fn checkpoint(ctx: &RunContext, trainer: &Trainer, events: &mut Events) -> Result<()> {
    let step = trainer.step_count();
    events.emit(RunEvent::Checkpointing { step })?;
    let mut meta = BTreeMap::new();
    meta.insert(
        RUN_CONFIG_KEY.to_string(),
        serde_json::to_string(&ctx.plan.config)?,
    );
    let bytes = trainer.checkpoint(meta)?.to_bytes()?;
    let path = ctx.files.checkpoint();
    write_atomic(&path, &bytes)?;
    events.emit(RunEvent::Checkpointed { step, path: &path })
}

pub(super) fn train(
    ctx: &RunContext,
    trainer: &mut Trainer,
    events: &mut Events,
) -> Result<Trained> {
    let (total, cfg) = (ctx.plan.train.steps, &ctx.plan.config);
    // A kill between a checkpoint and the grid of the same step lost that grid: draw it now
    // (from the same weights; a grid already recorded is not drawn again).
    let resumed_at = trainer.step_count();
    if resumed_at > 0 && is_due(cfg.sample_every, resumed_at, total) {
        evaluate::draw_grid(ctx, trainer, resumed_at, events)?;
    }
    // Likewise an evaluation of that step (recorded ones are not computed again).
    if resumed_at > 0
        && is_due(cfg.eval_every, resumed_at, total)
        && let Some(outcome) = evaluate_at(ctx, trainer, resumed_at, events)?
    {
        return Ok(Trained::Stopped(outcome));
    }
    // And a rung's decision (one already taken is returned as it was, so a run continued
    // after pruning goes on from here).
    if rung::is_rung(ctx, resumed_at)
        && let Some(outcome) = rung::decide(ctx, trainer, resumed_at, events)?
    {
        return Ok(Trained::Stopped(outcome));
    }
    let mut last_loss = None;
    while trainer.step_count() < total {
        if ctx.stop.load(Ordering::SeqCst) {
            checkpoint(ctx, trainer, events)?;
            let step = trainer.step_count();
            return Ok(Trained::Stopped(Outcome::Interrupted { step }));
        }
        let stats = match train_step(ctx, trainer) {
            Ok(stats) => stats,
            Err(e) => return Ok(Trained::Stopped(failed(e, events)?)),
        };
        last_loss = Some(stats.loss);
        let done = stats.step;
        events.emit(RunEvent::Step {
            stats: &stats,
            examples: trainer.last_examples(),
            total,
        })?;
        if done % cfg.checkpoint_every == 0 && done < total {
            checkpoint(ctx, trainer, events)?;
        }
        if is_due(cfg.sample_every, done, total) {
            evaluate::draw_grid(ctx, trainer, done, events)?;
        }
        if is_due(cfg.eval_every, done, total)
            && let Some(outcome) = evaluate_at(ctx, trainer, done, events)?
        {
            return Ok(Trained::Stopped(outcome));
        }
        if rung::is_rung(ctx, done) {
            rung::checkpoint_for(ctx, trainer, done, events)?;
            if let Some(outcome) = rung::decide(ctx, trainer, done, events)? {
                return Ok(Trained::Stopped(outcome));
            }
        }
    }
    checkpoint(ctx, trainer, events)?;
    Ok(Trained::Finished { last_loss })
}

/// The evaluations of `eval_every`: the NLL bound, and the guided one (judge metrics) for a
/// guided or judged run; `Some` when the guided one failed and ends the run.
fn evaluate_at(
    ctx: &RunContext,
    trainer: &Trainer,
    step: usize,
    events: &mut Events,
) -> Result<Option<Outcome>> {
    evaluate::evaluate_nll(ctx, trainer, step, events)?;
    Ok(evaluate::guided_evaluation(ctx, trainer, step, events))
}

/// Whether something scheduled every `every` steps (0: never) falls on step `done` before the
/// last (the last step has its own, final, grid and evaluation).
fn is_due(every: usize, done: usize, total: usize) -> bool {
    every > 0 && done.is_multiple_of(every) && done < total
}

/// The outcome of a step that failed. Rows of the steps before a divergence are kept: they
/// show how it diverged.
fn failed(e: CoreError, events: &mut Events) -> Result<Outcome> {
    let error = crate::error::one_line(&e.into());
    events.emit(RunEvent::Failed { error: &error })?;
    Ok(Outcome::Failed { error })
}

/// One optimisation step on this step's batch (and captions, for a captioned model).
fn train_step(ctx: &RunContext, trainer: &mut Trainer) -> ddlab_core::Result<StepStats> {
    let plan = ctx.plan;
    let step = trainer.step_count();
    let train = &ctx.data.train;
    let idx = batch_indices(train.len(), plan.train.batch_size, plan.train.seed, step);
    let x0 = train.batch(&idx, &ctx.device)?;
    if !plan.config.captions {
        return trainer.train_step(&x0, None);
    }
    let captions = training_captions(ctx, &idx, step)?;
    let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
    trainer.train_step_captioned(&x0, &refs)
}

/// One phrasing of each image's caption, drawn from this step's stream (so a resumed run
/// sees the same captions).
fn training_captions(
    ctx: &RunContext,
    idx: &[usize],
    step: usize,
) -> ddlab_core::Result<Vec<String>> {
    let train = &ctx.data.train;
    if train.attributes.len() != train.len() {
        return Err(CoreError::InvalidTraining(format!(
            "captions = true needs a dataset with captions ({} has none)",
            train.name
        )));
    }
    let attrs: Vec<[u8; 3]> = idx.iter().map(|&i| train.attributes[i]).collect();
    let mut rng = Rng::new(ctx.plan.train.seed, streams::PHRASINGS + step as u64);
    ddlab_core::text::training_captions(ctx.plan.config.dataset, &attrs, &mut rng)
}
