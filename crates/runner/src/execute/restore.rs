//! Where a run's weights start: its own checkpoint (resuming), a donor run's final weights
//! (sharing one training), or fresh.

use anyhow::Result;
use ddlab_core::train::Trainer;
use std::path::Path;

use super::RunContext;
use crate::events::{Events, RunEvent};
use crate::files::read_checkpoint;

/// The checkpoint metadata key holding the run configuration it was written for.
pub(crate) const RUN_CONFIG_KEY: &str = "ddlab.run_config";

fn fresh_trainer(ctx: &RunContext) -> Result<Trainer> {
    let plan = ctx.plan;
    Ok(Trainer::new(
        &plan.model,
        plan.schedule.build()?,
        plan.train.clone(),
        &ctx.device,
    )?)
}

/// A trainer at the run's own checkpoint when there is a usable one; else at a donor's final
/// weights when there is one; else fresh.
pub(super) fn restore_or_fresh(ctx: &RunContext, events: &mut Events) -> Result<Trainer> {
    let mut trainer = fresh_trainer(ctx)?;
    if let Some(ck_path) = &ctx.resume_from {
        match resume(ctx, &mut trainer, ck_path) {
            Ok(()) => {
                events.note(&format!("resuming from step {}", trainer.step_count()))?;
                return Ok(trainer);
            }
            Err(e) => {
                events.note(&format!(
                    "ignoring unusable checkpoint {} ({e}); starting over",
                    ck_path.display()
                ))?;
                return fresh_trainer(ctx);
            }
        }
    }
    if let Some(donor) = &ctx.donor {
        let ck = read_checkpoint(&donor.checkpoint, &ctx.device)?;
        if trainer.restore(&ck).is_ok() {
            events.note(&format!(
                "trained weights shared with run {} (same training keys)",
                donor.run_id
            ))?;
            let details = serde_json::json!({ "checkpoint": donor.checkpoint }).to_string();
            events.emit(RunEvent::Eval {
                name: "trained_by_run",
                step: trainer.step_count(),
                method: "donor",
                value: Some(donor.run_id as f64),
                details: &details,
            })?;
        }
    }
    Ok(trainer)
}

/// Restores the run's own checkpoint. A checkpoint in this run's directory may be another
/// run's (a second database or a changed sweep file with the same output root): only one
/// written for this run's configuration resumes.
fn resume(ctx: &RunContext, trainer: &mut Trainer, path: &Path) -> Result<()> {
    let ck = read_checkpoint(path, &ctx.device)?;
    let config = serde_json::to_string(&ctx.plan.config)?;
    if ck
        .metadata
        .get(RUN_CONFIG_KEY)
        .is_some_and(|c| *c != config)
    {
        anyhow::bail!(
            "it was written for a different run configuration (another database or \
             sweep file using the same output directory)"
        );
    }
    Ok(trainer.restore(&ck)?)
}
