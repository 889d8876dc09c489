//! What a run emits while it works, and who listens. The executor only emits [`RunEvent`]s; the
//! store's [`crate::recorder::RunRecorder`] and the user's [`Observer`] (a progress bar, log
//! lines, or nothing) consume them alike, as burn-train's learner feeds its event processors.

use anyhow::Result;
use ddlab_core::train::{ExampleLoss, StepStats};
use ddlab_store::NewSample;
use std::path::Path;

/// One thing that happened in a run.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// Training starts (or resumes) after `step`: whatever was recorded past it is redone.
    Started { step: usize },
    /// Something worth telling the user ("resuming from step 40").
    Note(&'a str),
    /// A training step finished (`stats.step` of `total`), with its examples' timesteps and
    /// losses.
    Step {
        stats: &'a StepStats,
        examples: &'a [ExampleLoss],
        total: usize,
    },
    /// A checkpoint of `step` is about to be written: what came before it must be durable.
    Checkpointing { step: usize },
    /// The checkpoint of `step` is on disk at `path`.
    Checkpointed { step: usize, path: &'a Path },
    /// The run stopped at a rung of its sweep's `[prune]` rules (already recorded), `reason`
    /// saying why in one line.
    Pruned { step: usize, reason: &'a str },
    /// The run failed (diverged, or a value it met cannot be used): keep what it recorded.
    Failed { error: &'a str },
    /// A sample grid was drawn.
    Sample(&'a NewSample),
    /// An evaluation's result of the weights of training step `step`: `method` is how it was
    /// computed as canonical text (see [`crate::provenance`]), `details` the same and more, as
    /// JSON.
    Eval {
        name: &'a str,
        step: usize,
        method: &'a str,
        value: Option<f64>,
        details: &'a str,
    },
}

/// Shows a run's progress to the user. Infallible: a display never stops a run.
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

/// Forwards a run's events to what the user sees.
fn show(observer: &dyn Observer, event: &RunEvent) {
    match *event {
        RunEvent::Note(msg) => observer.note(msg),
        RunEvent::Pruned { step, reason } => {
            observer.note(&format!("pruned at step {step}: {reason}"))
        }
        RunEvent::Step { stats, total, .. } => observer.step(stats.step, total, stats.loss),
        _ => {}
    }
}

/// A consumer of run events that can fail (the store).
pub trait EventSink {
    fn handle(&mut self, event: &RunEvent) -> Result<()>;
}

/// The listeners of one run: the durable sink first, then the display.
pub struct Events<'a> {
    pub sink: &'a mut dyn EventSink,
    pub observer: &'a dyn Observer,
}

impl Events<'_> {
    /// Hands `event` to every listener; a failure of the sink (the store, the disk) is the
    /// run's infrastructure failing and is returned.
    pub fn emit(&mut self, event: RunEvent) -> Result<()> {
        self.sink.handle(&event)?;
        show(self.observer, &event);
        Ok(())
    }

    pub fn note(&mut self, msg: &str) -> Result<()> {
        self.emit(RunEvent::Note(msg))
    }

    /// Progress of a phase that is not training ("sampling", "NLL"), for the core's loops: shown,
    /// not recorded, so it needs no event.
    pub fn phase(&self, name: &str, done: usize, total: usize) {
        self.observer.phase(name, done, total);
    }
}
