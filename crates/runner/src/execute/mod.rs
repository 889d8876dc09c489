//! Executes one run: restore from its checkpoint (or a donor's), train, sample, checkpoint,
//! evaluate. Each step emits [`RunEvent`]s; the store and the display consume them, so this
//! module knows nothing of SQL or terminals.
//!
//! Durability rule: metrics are flushed before every checkpoint is written, and a resumed run
//! first drops the metric rows after its checkpoint (it will recompute them bit for bit), so no
//! row before the last checkpoint is ever lost and none is duplicated.

pub(crate) mod evaluate;
mod restore;
mod rung;
mod train_loop;

use anyhow::Result;
use ddlab_config::ResolvedRun;
use ddlab_core::Device;
use ddlab_core::data::DataSplit;
use ddlab_store::RunStatus;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::events::{Events, Observer, RunEvent};
use crate::files::RunFiles;
use crate::prune::PrunePlan;
use crate::recorder::{Recorder, RunRecorder};

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
    /// Stopped at a rung of the sweep's `[prune]` rules after checkpointing at `step`.
    Pruned { step: usize, reason: String },
}

impl Outcome {
    pub fn status(&self) -> RunStatus {
        match self {
            Outcome::Completed { .. } => RunStatus::Completed,
            Outcome::Interrupted { .. } => RunStatus::Interrupted,
            Outcome::Failed { .. } => RunStatus::Failed,
            Outcome::Pruned { .. } => RunStatus::Pruned,
        }
    }
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
    /// The checkpoint this run's store recorded for it, to resume from. A checkpoint file the
    /// store did not record (another database's run in the same folder) is never resumed.
    pub resume_from: Option<PathBuf>,
    /// A finished run with the same training keys to start from instead of training.
    pub donor: Option<Donor>,
    /// The sweep's `[prune]` rules as they apply to this run.
    pub prune: Option<PrunePlan>,
}

/// Where a run that shares another's training takes its weights from.
#[derive(Debug, Clone)]
pub struct Donor {
    pub run_id: i64,
    pub checkpoint: PathBuf,
}

/// Runs to completion, interruption or failure. Errors of the run itself (divergence, a bad
/// value met at run time) become `Outcome::Failed`; only infrastructure failures (the store or
/// the disk) are returned as `Err`.
pub fn execute(ctx: &RunContext) -> Result<Outcome> {
    let mut sink = RunRecorder::new(ctx.recorder, &ctx.plan.config);
    let mut events = Events {
        sink: &mut sink,
        observer: ctx.observer,
    };
    let mut trainer = restore::restore_or_fresh(ctx, &mut events)?;
    events.emit(RunEvent::Started {
        step: trainer.step_count(),
    })?;
    let last_loss = match train_loop::train(ctx, &mut trainer, &mut events)? {
        train_loop::Trained::Finished { last_loss } => last_loss,
        train_loop::Trained::Stopped(outcome) => return Ok(outcome),
    };
    evaluate::final_evaluations(ctx, &trainer, &mut events, last_loss)
}
