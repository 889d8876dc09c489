//! ddlab's runner: turns run configs and sweep specs into executed runs on the CPU or CUDA GPUs,
//! records everything into the store, and resumes interrupted work.
//!
//! Invariants: no SQL here (the store crate speaks it), no terminal drawing (callers pass an
//! [`execute::Observer`]); files written are checkpoints and sample PNGs under a run directory.

pub mod device;
pub mod error;
pub mod events;
pub mod execute;
pub mod files;
pub mod guidance;
pub mod helper_models;
pub mod loss_by_t;
pub mod provenance;
pub mod prune;
pub mod recorder;
pub mod reevaluate;
pub mod sampling;
pub mod slurm;
pub mod sweep;

pub use error::RunnerError;

use crate::execute::Donor;
use anyhow::Result;
use ddlab_config::{ResolvedRun, RunConfig};
use ddlab_core::Device;
use ddlab_core::data::{DataSplit, DatasetConfig};
use ddlab_store::{NewRun, RunRow, WorkerInfo};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use events::Observer;
use execute::{Outcome, RunContext};
use files::RunFiles;
use prune::PrunePlan;
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

/// Checks that a dataset's images are what the run's model takes (size, channels, count),
/// before anything is recorded: a 28×7 IDX file is one sentence, not an error inside a layer.
pub fn check_images(plan: &ResolvedRun, data: &DataSplit) -> Result<()> {
    let (size, channels) = (plan.image_size, plan.model.in_channels);
    for (part, images) in [("training", &data.train), ("held-out", &data.heldout)] {
        let (h, w, c) = (images.height, images.width, images.channels);
        if (h, w, c) != (size, size, channels) {
            anyhow::bail!(
                "the {part} images of {} are {h}×{w} with {c} channel(s), but the model takes \
                 {size}×{size} images with {channels} channel(s)",
                images.name
            );
        }
        if images.is_empty() {
            anyhow::bail!("the {part} split of {} has no images", images.name);
        }
    }
    Ok(())
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

/// The checkpoint the store recorded for `run`, when there is one.
fn recorded_checkpoint(run: &RunRow) -> Option<PathBuf> {
    let path = run.checkpoint_path.as_deref().map(PathBuf::from)?;
    (run.checkpoint_step > 0).then_some(path)
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
    prune: Option<PrunePlan>,
) -> Result<Outcome> {
    let label = device::device_label(device);
    store.block(store.store().start_run(run.id, &label, &worker_info()))?;
    let recorder = Recorder::new(store.clone(), run.id);
    let donor = find_donor(store, run, plan)?;
    let result = data.get(&plan.dataset).and_then(|d| {
        check_images(plan, &d)?;
        execute::execute(&RunContext {
            plan,
            recorder: &recorder,
            files: RunFiles { dir },
            device: device.clone(),
            data: d,
            stop,
            observer,
            resume_from: recorded_checkpoint(run),
            donor,
            prune,
        })
    });
    let outcome = match result {
        Ok(o) => o,
        // A failure of the run's own inputs (e.g. a corrupt dataset) fails this run only.
        Err(e) => Outcome::Failed {
            error: error::one_line(&e),
        },
    };
    let error = match &outcome {
        Outcome::Failed { error } => Some(error.as_str()),
        _ => None,
    };
    store.block(store.store().finish_run(run.id, outcome.status(), error))?;
    Ok(outcome)
}
