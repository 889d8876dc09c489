//! Row types: what the tables hold, as Rust sees them.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::fmt;
use std::str::FromStr;

pub(crate) const SWEEP_COLS: &str =
    "id, name, description, spec_toml, created_at, slurm_job_id, axes_json, prune_json";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepRow {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub spec_toml: String,
    pub created_at: String,
    pub slurm_job_id: Option<String>,
    /// The keys of its grid and base, as recorded at registration; None for a sweep
    /// registered by a ddlab that did not record them (derive what varies from its runs).
    pub axes: Option<SweepAxes>,
    /// Its `[prune]` rules as JSON (the config crate's `PruneRules`); None: no early stopping.
    pub prune_json: Option<String>,
}

/// What a sweep spec says about its runs' config keys, recorded so that no reader parses the
/// spec's TOML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepAxes {
    /// Keys of the spec's grid: what the sweep varies — plain axes, zipped groups, then
    /// conditional axes (which only some runs vary) — in the order run names list them.
    pub grid_keys: Vec<String>,
    /// Keys of the spec's `[base]`: set explicitly for every run, so not defaults.
    pub base_keys: Vec<String>,
}

// By hand because `axes_json` is JSON text decoded into a struct.
impl<'r> sqlx::FromRow<'r, AnyRow> for SweepRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<SweepRow> {
        let axes = match row.try_get::<Option<String>, _>("axes_json")? {
            None => None,
            Some(json) => {
                Some(
                    serde_json::from_str(&json).map_err(|e| sqlx::Error::ColumnDecode {
                        index: "axes_json".into(),
                        source: Box::new(e),
                    })?,
                )
            }
        };
        Ok(SweepRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            spec_toml: row.try_get("spec_toml")?,
            created_at: row.try_get("created_at")?,
            slurm_job_id: row.try_get("slurm_job_id")?,
            axes,
            prune_json: row.try_get("prune_json")?,
        })
    }
}

/// A run's life: pending → running → completed | failed | interrupted (resumable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Interrupted,
    /// Stopped early at a rung of the sweep's `[prune]` rules; keeps its checkpoint.
    Pruned,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Pruned => "pruned",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "pending" => RunStatus::Pending,
            "running" => RunStatus::Running,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "interrupted" => RunStatus::Interrupted,
            "pruned" => RunStatus::Pruned,
            _ => return Err(format!("unknown run status `{s}`")),
        })
    }
}

pub(crate) const RUN_COLS: &str = "id, sweep_id, name, config_hash, status, config_json, dataset, model, \
     schedule, timesteps, seed, steps_total, steps_done, checkpoint_step, checkpoint_path, attempts, device, host, \
     worker, heartbeat_at, slurm_job, slurm_task, created_at, started_at, finished_at, error";

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RunRow {
    pub id: i64,
    pub sweep_id: Option<i64>,
    pub name: String,
    pub config_hash: String,
    pub status: String,
    pub config_json: String,
    pub dataset: String,
    pub model: String,
    pub schedule: String,
    pub timesteps: i64,
    pub seed: i64,
    pub steps_total: i64,
    pub steps_done: i64,
    pub checkpoint_step: i64,
    pub checkpoint_path: Option<String>,
    /// Executions started (a resume counts as one more).
    pub attempts: i64,
    pub device: Option<String>,
    pub host: Option<String>,
    pub worker: Option<String>,
    pub heartbeat_at: Option<String>,
    pub slurm_job: Option<String>,
    pub slurm_task: Option<i64>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

impl RunRow {
    pub fn status(&self) -> RunStatus {
        self.status.parse().unwrap_or(RunStatus::Failed)
    }
}

/// What a new run is registered with.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub sweep_id: Option<i64>,
    pub name: String,
    pub config_hash: String,
    pub config_json: String,
    pub dataset: String,
    pub model: String,
    pub schedule: String,
    pub timesteps: i64,
    pub seed: i64,
    pub steps_total: i64,
}

/// Who executes a run: recorded on it so dashboards can show where it runs.
#[derive(Debug, Clone, Default)]
pub struct WorkerInfo {
    pub host: String,
    /// e.g. `host:pid`.
    pub worker: String,
    pub slurm_job: Option<String>,
    pub slurm_task: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub run_id: i64,
    pub step: i64,
    pub name: String,
    /// None (stored as NULL) for a non-finite value.
    pub value: Option<f64>,
    /// Unix seconds.
    pub wall_time: f64,
}

#[derive(Debug, Clone)]
pub struct NewSample {
    pub run_id: i64,
    pub step: i64,
    pub sampler: String,
    pub sample_steps: i64,
    pub prompt: Option<String>,
    pub guidance: Option<String>,
    pub guidance_scale: Option<f64>,
    pub count: i64,
    pub width: i64,
    pub height: i64,
    pub png: Vec<u8>,
}

pub(crate) const SAMPLE_INFO_COLS: &str = "id, run_id, step, sampler, sample_steps, prompt, guidance, guidance_scale, count, width, height, created_at";

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct SampleInfo {
    pub id: i64,
    pub run_id: i64,
    pub step: i64,
    pub sampler: String,
    pub sample_steps: i64,
    pub prompt: Option<String>,
    pub guidance: Option<String>,
    pub guidance_scale: Option<f64>,
    pub count: i64,
    pub width: i64,
    pub height: i64,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct EvalRow {
    pub run_id: i64,
    pub name: String,
    /// The training step whose weights were evaluated.
    pub step: i64,
    /// How the value was computed, as canonical text: equal text, comparable values. Empty for
    /// an evaluation recorded before provenance was (the run's own, at its end).
    pub method: String,
    pub value: Option<f64>,
    pub details_json: String,
    pub created_at: String,
}

/// An evaluation to record: its value at a training step, computed as `method` says.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEval<'a> {
    pub run_id: i64,
    pub name: &'a str,
    pub step: i64,
    pub method: &'a str,
    pub value: Option<f64>,
    pub details_json: &'a str,
}

/// The training loss of one bucket of t over one flush window (table `loss_buckets`).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct LossBucketRow {
    pub run_id: i64,
    /// The last training step of the window.
    pub step: i64,
    pub bucket: i64,
    pub buckets: i64,
    /// Timestep indices [t_lo, t_hi) of the bucket.
    pub t_lo: i64,
    pub t_hi: i64,
    pub count: i64,
    /// Mean unweighted objective loss of the bucket's examples.
    pub loss: Option<f64>,
    /// Mean min-SNR-weighted loss; `None` when the objective is unweighted.
    pub weighted_loss: Option<f64>,
    pub wall_time: f64,
}

pub(crate) const SUMMARY_COLS: &str = "run_id, sweep, name, dataset, model, schedule, \"T\", seed, status, \
     steps_done, steps_total, last_loss, best_loss, nll_bpd, nll_bpd_stderr, prompt_accuracy, \
     frechet_distance, device, started_at, finished_at, error";

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RunSummary {
    pub run_id: i64,
    pub sweep: Option<String>,
    pub name: String,
    pub dataset: String,
    pub model: String,
    pub schedule: String,
    #[sqlx(rename = "T")]
    #[serde(rename = "T")]
    pub t: i64,
    pub seed: i64,
    pub status: String,
    pub steps_done: i64,
    pub steps_total: i64,
    pub last_loss: Option<f64>,
    pub best_loss: Option<f64>,
    pub nll_bpd: Option<f64>,
    pub nll_bpd_stderr: Option<f64>,
    pub prompt_accuracy: Option<f64>,
    pub frechet_distance: Option<f64>,
    pub device: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}
