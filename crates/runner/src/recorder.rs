//! The store seen from synchronous training code: a blocking facade over the async [`Store`],
//! a per-run [`Recorder`], and [`RunRecorder`], the run events' durable consumer with its
//! [`MetricBuffer`].

use anyhow::Result;
use ddlab_config::RunConfig;
use ddlab_core::train::{ExampleLoss, StepStats};
use ddlab_store::{
    LossBucketRow, MetricRow, NewEval, NewRung, NewSample, OpenMode, RungDecision, RungRow, Store,
};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::{EventSink, RunEvent};
use crate::loss_by_t::LossByT;

/// A [`Store`] with its own runtime, callable from any thread.
#[derive(Clone)]
pub struct SyncStore {
    store: Store,
    rt: Arc<tokio::runtime::Runtime>,
}

impl SyncStore {
    /// Opens the store at `url` (creating a SQLite file when `create`).
    pub fn connect(url: &str, create: bool) -> Result<Self> {
        let mode = if create {
            OpenMode::Create
        } else {
            OpenMode::Existing
        };
        Self::open(url, mode)
    }

    /// Opens the store at `url` as `mode` says; `ReadOnly` never creates or migrates it.
    pub fn open(url: &str, mode: OpenMode) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let store = rt.block_on(Store::open(url, mode))?;
        Ok(Self {
            store,
            rt: Arc::new(rt),
        })
    }

    /// Runs one store call to completion.
    pub fn block<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// Whether `run_id` already has the evaluation `name` at `step` by `method`.
    pub fn has_eval(&self, run_id: i64, name: &str, step: i64, method: &str) -> Result<bool> {
        let evals = self.block(self.store.evals(run_id))?;
        Ok(evals
            .iter()
            .any(|e| e.name == name && e.step == step && e.method == method))
    }
}

/// Where one run's results go.
pub struct Recorder {
    store: SyncStore,
    run_id: i64,
}

impl Recorder {
    pub fn new(store: SyncStore, run_id: i64) -> Self {
        Self { store, run_id }
    }

    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    pub fn metric(&self, step: usize, name: &str, value: f64, wall_time: f64) -> MetricRow {
        MetricRow {
            run_id: self.run_id,
            step: step as i64,
            name: name.to_string(),
            value: Some(value),
            wall_time,
        }
    }

    /// Writes a batch of metric rows in one transaction.
    pub fn metrics(&self, rows: Vec<MetricRow>) -> Result<()> {
        Ok(self.store.block(self.store.store().insert_metrics(&rows))?)
    }

    /// Drops the metric rows and the loss-by-t windows after `step`.
    pub fn truncate_metrics_after(&self, step: usize) -> Result<()> {
        let store = self.store.store();
        self.store
            .block(store.delete_metrics_after(self.run_id, step as i64))?;
        self.store
            .block(store.delete_loss_buckets_after(self.run_id, step as i64))?;
        Ok(())
    }

    /// Writes the loss-by-t rows of a window.
    pub fn loss_buckets(&self, rows: &[LossBucketRow]) -> Result<()> {
        Ok(self
            .store
            .block(self.store.store().insert_loss_buckets(rows))?)
    }

    pub fn checkpointed(&self, step: usize, path: &Path) -> Result<()> {
        let p = path.display().to_string();
        Ok(self.store.block(
            self.store
                .store()
                .progress(self.run_id, step as i64, Some(&p)),
        )?)
    }

    pub fn heartbeat(&self, step: usize) -> Result<()> {
        Ok(self
            .store
            .block(self.store.store().progress(self.run_id, step as i64, None))?)
    }

    /// Whether a grid of this step (guided or not) is already recorded: a run resumed after a
    /// kill draws each scheduled grid exactly once.
    pub fn has_sample(&self, step: usize, guided: bool) -> Result<bool> {
        let samples = self.store.block(self.store.store().samples(self.run_id))?;
        Ok(samples
            .iter()
            .any(|s| s.step == step as i64 && s.guidance.is_some() == guided))
    }

    /// Whether an evaluation of this name is recorded at this step (any method).
    pub fn has_eval_step(&self, name: &str, step: usize) -> Result<bool> {
        let evals = self.store.block(self.store.store().evals(self.run_id))?;
        Ok(evals
            .iter()
            .any(|e| e.name == name && e.step == step as i64))
    }

    /// The first value recorded for this name at this step (any method), if any.
    pub fn eval_value(&self, name: &str, step: usize) -> Result<Option<f64>> {
        let evals = self.store.block(self.store.store().evals(self.run_id))?;
        Ok(evals
            .iter()
            .filter(|e| e.name == name && e.step == step as i64)
            .min_by(|a, b| a.created_at.cmp(&b.created_at))
            .and_then(|e| e.value))
    }

    /// Whether an evaluation of this name, step and method is recorded: a resumed run or a
    /// repeated `ddlab eval --sweep` computes each one once.
    pub fn has_eval_at(&self, name: &str, step: usize, method: &str) -> Result<bool> {
        self.store.has_eval(self.run_id, name, step as i64, method)
    }

    /// The mean of a metric over the steps `after < step <= upto` (None: not finite).
    pub fn metric_mean(&self, name: &str, after: usize, upto: usize) -> Result<Option<f64>> {
        let store = self.store.store();
        let (mean, rows) =
            self.store
                .block(store.metric_mean(self.run_id, name, after as i64, upto as i64))?;
        if rows == 0 {
            anyhow::bail!("no `{name}` recorded between steps {after} and {upto}");
        }
        Ok(mean)
    }

    /// Records this run at a rung and decides there, atomically (see [`Store::reach_rung`]).
    pub fn reach_rung(
        &self,
        new: &NewRung,
        decide: impl FnOnce(&[(String, Option<f64>)]) -> RungDecision,
    ) -> Result<RungRow> {
        Ok(self
            .store
            .block(self.store.store().reach_rung(new, decide))?)
    }

    pub fn sample(&self, s: &NewSample) -> Result<()> {
        self.store.block(self.store.store().insert_sample(s))?;
        Ok(())
    }

    pub fn eval(&self, e: &NewEval) -> Result<()> {
        Ok(self.store.block(self.store.store().record_eval(e))?)
    }
}

/// Metric rows waiting to be written, flushed in one transaction every few seconds and before
/// every checkpoint.
pub struct MetricBuffer {
    pending: Vec<MetricRow>,
    last_flush: Instant,
    /// Start of the current speed window: (time, step).
    window: (Instant, usize),
}

/// How often buffered metrics are written while training.
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// Steps per `steps_per_s` measurement.
const SPEED_WINDOW: usize = 20;

impl Default for MetricBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricBuffer {
    pub fn new() -> Self {
        Self {
            pending: vec![],
            last_flush: Instant::now(),
            window: (Instant::now(), 0),
        }
    }

    /// Measures speed from `step` on.
    fn restart(&mut self, step: usize) {
        self.window = (Instant::now(), step);
    }

    fn push(&mut self, run_id: i64, step: usize, name: &str, value: f64) {
        self.pending.push(MetricRow {
            run_id,
            step: step as i64,
            name: name.to_string(),
            value: Some(value),
            wall_time: unix_now(),
        });
    }

    /// The speed over the last window, every [`SPEED_WINDOW`] steps.
    fn measure_speed(&mut self, run_id: i64, done: usize) {
        if !done.is_multiple_of(SPEED_WINDOW) {
            return;
        }
        let secs = self.window.0.elapsed().as_secs_f64();
        if secs > 0.0 {
            let speed = (done - self.window.1) as f64 / secs;
            self.push(run_id, done, "steps_per_s", speed);
        }
        self.window = (Instant::now(), done);
    }

    fn take(&mut self) -> Vec<MetricRow> {
        self.last_flush = Instant::now();
        std::mem::take(&mut self.pending)
    }

    fn due(&self) -> bool {
        self.last_flush.elapsed() > FLUSH_EVERY
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Records a run's events in the store: training metrics every `log_every` steps (buffered),
/// the loss by t per flush window, checkpoints, sample grids and evaluations.
pub struct RunRecorder<'a> {
    recorder: &'a Recorder,
    buffer: MetricBuffer,
    loss_by_t: LossByT,
    log_every: usize,
}

impl<'a> RunRecorder<'a> {
    pub fn new(recorder: &'a Recorder, config: &RunConfig) -> Self {
        Self {
            recorder,
            buffer: MetricBuffer::new(),
            loss_by_t: LossByT::new(config.t, config.loss_buckets.min(config.t.max(1))),
            log_every: config.log_every,
        }
    }

    /// Drops the rows recorded after `step` (they will be recomputed bit for bit) and starts
    /// an empty loss-by-t window.
    fn started(&mut self, step: usize) -> Result<()> {
        self.buffer.restart(step);
        self.loss_by_t.take(0, 0.0);
        self.recorder.truncate_metrics_after(step)
    }

    /// Writes every buffered row now; the loss-by-t window closes with them, so a window
    /// never straddles a checkpoint.
    pub fn flush(&mut self) -> Result<()> {
        self.recorder.metrics(self.buffer.take())?;
        let rows = self.loss_by_t.take(self.recorder.run_id(), unix_now());
        self.recorder.loss_buckets(&rows)
    }

    fn step(&mut self, stats: &StepStats, examples: &[ExampleLoss], total: usize) -> Result<()> {
        let (run_id, done) = (self.recorder.run_id(), stats.step);
        self.loss_by_t.add(done, examples);
        if done % self.log_every == 0 || done == total {
            for (name, value) in [
                ("loss", stats.loss),
                ("grad_norm", stats.grad_norm),
                ("lr", stats.lr),
            ] {
                self.buffer.push(run_id, done, name, value);
            }
        }
        self.buffer.measure_speed(run_id, done);
        // Between checkpoints, buffered rows go out every few seconds with a heartbeat.
        if self.buffer.due() {
            self.flush()?;
            self.recorder.heartbeat(done)?;
        }
        Ok(())
    }
}

impl EventSink for RunRecorder<'_> {
    fn handle(&mut self, event: &RunEvent) -> Result<()> {
        match *event {
            RunEvent::Started { step } => self.started(step),
            RunEvent::Step {
                stats,
                examples,
                total,
            } => self.step(stats, examples, total),
            RunEvent::Checkpointing { .. } | RunEvent::Failed { .. } => self.flush(),
            RunEvent::Checkpointed { step, path } => self.recorder.checkpointed(step, path),
            RunEvent::Sample(sample) => self.recorder.sample(sample),
            RunEvent::Eval {
                name,
                step,
                method,
                value,
                details,
            } => self.recorder.eval(&NewEval {
                run_id: self.recorder.run_id(),
                name,
                step: step as i64,
                method,
                value,
                details_json: details,
            }),
            // The store marked the run pruned when it decided.
            RunEvent::Note(_) | RunEvent::Pruned { .. } => Ok(()),
        }
    }
}
