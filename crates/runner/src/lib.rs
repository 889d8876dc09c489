//! ddlab's runner: turns run configs and sweep specs into executed runs on the CPU or CUDA GPUs,
//! records everything into the store, and resumes interrupted work.
//!
//! Invariants: no SQL here (the store crate speaks it), no terminal drawing (callers pass an
//! [`execute::Observer`]); files written are checkpoints and sample PNGs under a run directory.

pub mod config;
pub mod device;
pub mod execute;
pub mod guidance;
pub mod guidance_models;
pub mod recorder;
pub mod slurm;
pub mod spec;
pub mod sweep;

use crate::config::RunConfig;
use crate::execute::Donor;
use anyhow::Result;
use ddlab_core::Device;
use ddlab_core::data::{DataSplit, DatasetConfig};
use ddlab_store::{NewRun, RunRow, WorkerInfo};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use config::ResolvedRun;
use execute::{Observer, Outcome, RunContext, RunFiles};
use recorder::{Recorder, SyncStore};

/// Loaded datasets shared by the runs of one process.
#[derive(Default, Clone)]
pub struct DataCache {
    inner: Arc<Mutex<HashMap<String, Arc<DataSplit>>>>,
}

impl DataCache {
    pub fn get(&self, cfg: &DatasetConfig) -> Result<Arc<DataSplit>> {
        let key = serde_json::to_string(cfg)?;
        if let Some(d) = self.inner.lock().unwrap().get(&key) {
            return Ok(d.clone());
        }
        let split = Arc::new(cfg.load()?);
        self.inner.lock().unwrap().insert(key, split.clone());
        Ok(split)
    }
}

/// This process as a worker: host, `host:pid`, and the Slurm job/array task if under Slurm.
pub fn worker_info() -> WorkerInfo {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    WorkerInfo {
        worker: format!("{host}:{}", std::process::id()),
        host,
        slurm_job: env("SLURM_ARRAY_JOB_ID").or_else(|| env("SLURM_JOB_ID")),
        slurm_task: env("SLURM_ARRAY_TASK_ID").and_then(|v| v.parse().ok()),
    }
}

/// The store record of a new run for a resolved config.
pub fn new_run(sweep_id: Option<i64>, name: &str, plan: &ResolvedRun, config_hash: &str) -> NewRun {
    let c = &plan.config;
    NewRun {
        sweep_id,
        name: name.to_string(),
        config_hash: config_hash.to_string(),
        config_json: serde_json::to_string(c).expect("config serialises"),
        dataset: c.dataset.to_string(),
        model: c.model.clone(),
        schedule: c.schedule.to_string(),
        timesteps: c.t as i64,
        seed: c.seed as i64,
        steps_total: c.steps as i64,
    }
}

/// Directory of a run: `<root>/<sweep or "train">/<run id>-<name>`.
pub fn run_dir(root: &Path, sweep: Option<&str>, run: &RunRow) -> PathBuf {
    let safe: String = run
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "=-_.,".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    root.join(sweep.unwrap_or("train"))
        .join(format!("{:05}-{safe}", run.id))
}

/// A completed run of the same sweep whose trained weights this run can start from: the same
/// training keys (only sampling, guidance or evaluation keys differ) and a final checkpoint
/// still on disk. Sweeps over guidance scales or samplers then train once.
fn find_donor(store: &SyncStore, run: &RunRow, plan: &ResolvedRun) -> Result<Option<Donor>> {
    let Some(sweep_id) = run.sweep_id else {
        return Ok(None);
    };
    let mine = plan.config.training_identity();
    let steps = plan.train.steps as i64;
    for other in store.block(store.store().runs(Some(sweep_id)))? {
        if other.id == run.id
            || other.status() != ddlab_store::RunStatus::Completed
            || other.checkpoint_step != steps
        {
            continue;
        }
        let Some(path) = other.checkpoint_path.as_deref().map(PathBuf::from) else {
            continue;
        };
        let same = serde_json::from_str::<RunConfig>(&other.config_json)
            .is_ok_and(|c| c.training_identity() == mine);
        if same && path.is_file() {
            return Ok(Some(Donor {
                run_id: other.id,
                checkpoint: path,
            }));
        }
    }
    Ok(None)
}

/// Marks the run running, executes it, records how it ended. Returns the outcome.
#[allow(clippy::too_many_arguments)]
pub fn run_one(
    store: &SyncStore,
    run: &RunRow,
    plan: &ResolvedRun,
    dir: PathBuf,
    device: &Device,
    data: &DataCache,
    stop: &AtomicBool,
    observer: &dyn Observer,
) -> Result<Outcome> {
    let label = device::device_label(device);
    store.block(store.store().start_run(run.id, &label, &worker_info()))?;
    let recorder = Recorder::new(store.clone(), run.id);
    let donor = find_donor(store, run, plan)?;
    let result = data.get(&plan.dataset).and_then(|d| {
        execute::execute(&RunContext {
            plan,
            recorder: &recorder,
            files: RunFiles { dir },
            device: device.clone(),
            data: d,
            stop,
            observer,
            donor,
        })
    });
    let outcome = match result {
        Ok(o) => o,
        // A failure of the run's own inputs (e.g. a corrupt dataset) fails this run only.
        Err(e) => Outcome::Failed {
            error: format!("{e:#}"),
        },
    };
    let error = match &outcome {
        Outcome::Failed { error } => Some(error.as_str()),
        _ => None,
    };
    store.block(store.store().finish_run(run.id, outcome.status(), error))?;
    Ok(outcome)
}
