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
    /// With the chart by t: the latest loss-by-t window `(t/T of the bucket's centre, loss)`
    /// of the same runs.
    pub profiles: BTreeMap<i64, Arc<Vec<(f64, f64)>>>,
    /// With the NLL chart: the same runs' NLL over training.
    pub nll: BTreeMap<i64, Arc<NllCurve>>,
    /// Evals and newest sample grid of the selected run.
    pub detail: Option<Detail>,
    /// With the grid view: the newest sample grid of each run shown, by run.
    pub grids: BTreeMap<i64, Arc<SampleImage>>,
}

/// A run's NLL bound against its training step, computed one way: the way of the run's own
/// final evaluation (re-evaluations with other settings are other curves, not points of it).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NllCurve {
    /// `evals.method` of every point.
    pub method: String,
    /// (training step, bits/dim).
    pub points: Vec<(f64, f64)>,
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
    /// For a pruned run: the rung it stopped at and why.
    pub pruned: Option<(i64, String)>,
    /// The run's flat config (`config_json`), in key order.
    pub config: serde_json::Map<String, serde_json::Value>,
}

impl RunInfo {
    /// Seconds of training left at the current speed, for a run that is training (not for one
    /// past its last step, which is sampling and evaluating).
    pub fn eta_secs(&self) -> Option<f64> {
        let sps = self.steps_per_s.filter(|s| *s > 0.0)?;
        let left = self.steps_total - self.steps_done;
        (self.status == RunStatus::Running && !self.stalled && left > 0).then(|| left as f64 / sps)
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
            pruned: None,
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
    /// For a guided grid: its prompt, guidance and scale.
    pub prompt: Option<String>,
    pub guidance: Option<String>,
    pub guidance_scale: Option<f64>,
    /// The decoded grid, or why it could not be decoded.
    pub image: Result<RgbImage, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_only_while_training() {
        let run = |status, done, stalled| RunInfo {
            status,
            steps_done: done,
            steps_total: 1000,
            steps_per_s: Some(4.0),
            stalled,
            ..RunInfo::blank(1)
        };
        assert_eq!(run(RunStatus::Running, 600, false).eta_secs(), Some(100.0));
        // Past the last step it samples and evaluates: no training time left to estimate.
        assert_eq!(run(RunStatus::Running, 1000, false).eta_secs(), None);
        assert_eq!(run(RunStatus::Running, 600, true).eta_secs(), None);
        assert_eq!(run(RunStatus::Interrupted, 600, false).eta_secs(), None);
        assert_eq!(run(RunStatus::Running, 600, false).progress(), 0.6);
    }

    #[test]
    fn slurm_task_names() {
        let mut r = RunInfo::blank(1);
        assert_eq!(r.slurm(), None);
        r.slurm_job = Some("73125".into());
        assert_eq!(r.slurm().as_deref(), Some("73125"));
        r.slurm_task = Some(3);
        assert_eq!(r.slurm().as_deref(), Some("73125_3"));
    }
}
