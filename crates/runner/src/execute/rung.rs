//! A run at a rung of its sweep's `[prune]` rules: checkpoint (a pruned run keeps its weights),
//! measure, and let the store decide against the runs already there.

use anyhow::{Result, anyhow};
use ddlab_config::PruneMetric;
use ddlab_core::train::Trainer;
use ddlab_store::NewRung;

use super::{Outcome, RunContext, evaluate, train_loop};
use crate::events::{Events, RunEvent};
use crate::prune::PrunePlan;

/// Whether `step` is one of the run's rungs.
pub(super) fn is_rung(ctx: &RunContext, step: usize) -> bool {
    ctx.prune
        .as_ref()
        .is_some_and(|p| p.rules.rungs_below(ctx.plan.train.steps).any(|r| r == step))
}

/// Decides at rung `step` (the checkpoint of `step` is already written): `Some(Pruned)` when
/// the run stops here. A decision already recorded (a resumed run) is not taken again.
pub(super) fn decide(
    ctx: &RunContext,
    trainer: &Trainer,
    step: usize,
    events: &mut Events,
) -> Result<Option<Outcome>> {
    let Some(plan) = &ctx.prune else {
        return Ok(None);
    };
    let value = measure(ctx, plan, trainer, step, events)?;
    let row = ctx.recorder.reach_rung(
        &NewRung {
            sweep_id: plan.sweep_id,
            run_id: ctx.recorder.run_id(),
            rung: step as i64,
            metric: plan.rules.metric.name(),
            value,
            group_key: &plan.group,
            trial_key: &plan.trial,
        },
        |entries| plan.decide(step, entries),
    )?;
    if !row.pruned() {
        events.note(&format!("rung {step}: goes on ({})", row.reason))?;
        return Ok(None);
    }
    events.emit(RunEvent::Pruned {
        step,
        reason: &row.reason,
    })?;
    Ok(Some(Outcome::Pruned {
        step,
        reason: row.reason,
    }))
}

/// The run's value at the rung: its mean loss over the window before it, or its NLL there.
fn measure(
    ctx: &RunContext,
    plan: &PrunePlan,
    trainer: &Trainer,
    step: usize,
    events: &mut Events,
) -> Result<Option<f64>> {
    match plan.rules.metric {
        PruneMetric::Loss => {
            // The loss is recorded every `log_every` steps: a window never holds none.
            let window = plan.rules.window.max(ctx.plan.config.log_every);
            ctx.recorder
                .metric_mean("loss", step.saturating_sub(window), step)
        }
        PruneMetric::NllBpd => match evaluate::evaluate_nll(ctx, trainer, step, events)? {
            Some(v) => Ok(Some(v)),
            // Already evaluated at this step (eval_every, or before a kill).
            None => ctx
                .recorder
                .eval_value("nll_bpd", step)?
                .map(Some)
                .ok_or_else(|| anyhow!("the NLL at rung {step} was neither computed nor recorded")),
        },
    }
}

/// Makes sure the checkpoint of the rung's step is on disk before anything is decided.
pub(super) fn checkpoint_for(
    ctx: &RunContext,
    trainer: &Trainer,
    step: usize,
    events: &mut Events,
) -> Result<()> {
    if !step.is_multiple_of(ctx.plan.config.checkpoint_every) {
        train_loop::checkpoint(ctx, trainer, events)?;
    }
    Ok(())
}
