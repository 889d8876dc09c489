//! What one load of the store produced: plain owned data that the UI thread reads and never
//! has to wait for.

use ddlab_store::{EvalRow, RunStatus};
use image::RgbImage;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Everything the dashboard shows, as of one load.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// Every run in the store, oldest first (filtering and sorting happen in the UI, instantly).
    pub runs: Vec<RunInfo>,
    pub sweeps: Vec<SweepInfo>,
    /// Downsampled loss curves `(step, loss)` of the runs the UI asked for.
    pub series: BTreeMap<i64, Arc<Vec<(f64, f64)>>>,
    /// Evals and newest sample grid of the selected run.
    pub detail: Option<Detail>,
}

/// One row of the runs table.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub id: i64,
    pub sweep_id: Option<i64>,
    pub sweep: Option<String>,
    pub name: String,
    pub status: RunStatus,
    /// Running, but its worker has not sent a heartbeat for a while (probably dead).
    pub stalled: bool,
    pub steps_done: i64,
    pub steps_total: i64,
    /// The newest `steps_per_s` metric.
    pub steps_per_s: Option<f64>,
    pub last_loss: Option<f64>,
    pub best_loss: Option<f64>,
    pub nll_bpd: Option<f64>,
    pub nll_bpd_stderr: Option<f64>,
    pub dataset: String,
    pub model: String,
    pub schedule: String,
    pub t: i64,
    pub seed: i64,
    pub device: Option<String>,
    pub host: Option<String>,
    pub worker: Option<String>,
    /// The Slurm array job and task that ran it last, when it ran under Slurm.
    pub slurm_job: Option<String>,
    pub slurm_task: Option<i64>,
    pub attempts: i64,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// The run's flat config (`config_json`), in key order.
    pub config: serde_json::Map<String, serde_json::Value>,
}

impl RunInfo {
    /// Seconds left at the current speed, for a run that is running.
    pub fn eta_secs(&self) -> Option<f64> {
        let sps = self.steps_per_s.filter(|s| *s > 0.0)?;
        (self.status == RunStatus::Running && !self.stalled)
            .then(|| (self.steps_total - self.steps_done).max(0) as f64 / sps)
    }

    /// Slurm's name for the task, `JOB_TASK` (as `squeue` and `sacct` show it), or the job.
    pub fn slurm(&self) -> Option<String> {
        let job = self.slurm_job.as_deref()?;
        Some(match self.slurm_task {
            Some(t) => format!("{job}_{t}"),
            None => job.to_string(),
        })
    }

    /// A pending run with nothing recorded, for unit tests to adjust with `..`.
    #[cfg(test)]
    pub(crate) fn blank(id: i64) -> RunInfo {
        RunInfo {
            id,
            sweep_id: None,
            sweep: None,
            name: String::new(),
            status: RunStatus::Pending,
            stalled: false,
            steps_done: 0,
            steps_total: 1,
            steps_per_s: None,
            last_loss: None,
            best_loss: None,
            nll_bpd: None,
            nll_bpd_stderr: None,
            dataset: String::new(),
            model: String::new(),
            schedule: String::new(),
            t: 0,
            seed: 0,
            device: None,
            host: None,
            worker: None,
            slurm_job: None,
            slurm_task: None,
            attempts: 0,
            started_at: None,
            finished_at: None,
            error: None,
            config: serde_json::Map::new(),
        }
    }

    /// Done fraction in [0, 1].
    pub fn progress(&self) -> f64 {
        if self.steps_total <= 0 {
            return 0.0;
        }
        (self.steps_done as f64 / self.steps_total as f64).clamp(0.0, 1.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SweepInfo {
    pub id: i64,
    pub name: String,
    pub description: String,
    /// Keys of the spec's `[grid]`: what the sweep varies.
    pub grid_keys: Vec<String>,
    /// Keys of the spec's `[base]`: set explicitly, so not defaults.
    pub base_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Detail {
    pub run_id: i64,
    pub evals: Vec<EvalRow>,
    pub sample: Option<Arc<SampleImage>>,
}

/// The newest sample grid of a run, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleImage {
    pub id: i64,
    pub step: i64,
    pub sampler: String,
    pub sample_steps: i64,
    pub count: i64,
    /// The decoded grid, or why it could not be decoded.
    pub image: Result<RgbImage, String>,
}
