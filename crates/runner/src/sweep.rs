//! Sweeps: register a spec's runs in the store, then work through them.
//!
//! `ddlab sweep` and `ddlab work` share one worker loop: claim the next pending or interrupted
//! run atomically from the store, execute it (resuming from its checkpoint), repeat. So a sweep
//! killed at any moment is finished by launching it again, and workers on other machines can
//! join through a shared PostgreSQL database. Runs left `running` by a dead process are taken
//! back: at once when that process was on this host and is gone, otherwise when its heartbeat
//! is older than [`ddlab_store::STALE_AFTER`].

use anyhow::{Context, Result};
use ddlab_core::Device;
use ddlab_store::{RunRow, RunStatus, SweepRow};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::device::device_label;
use crate::events::Observer;
use crate::execute::Outcome;
use crate::files::run_dir;
use crate::prune::{PrunePlan, apply_rules};
use crate::recorder::SyncStore;
use crate::{DataCache, new_run, run_one, worker_info};
use ddlab_config::{RunConfig, SweepSpec};
use ddlab_store::{SweepAxes, WorkerInfo};

/// How often a live run refreshes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// Loads every distinct dataset of the spec once, so a missing or corrupt file is reported
/// before anything is recorded.
pub fn preflight(spec: &SweepSpec, data: &DataCache) -> Result<()> {
    for r in &spec.runs {
        crate::check_images(&r.resolved, data.get(&r.resolved.dataset)?.as_ref())?;
    }
    Ok(())
}

/// What registering a spec did.
pub struct Registered {
    pub sweep: SweepRow,
    /// Runs that were not in the store before.
    pub new: usize,
    /// Pruned runs the spec's (looser) `[prune]` rules continue.
    pub continued: usize,
}

/// Registers the sweep and every run of its grid, and records its `[prune]` rules. Existing
/// runs (same config) keep their status and records.
pub fn register(store: &SyncStore, spec: &SweepSpec, retry_failed: bool) -> Result<Registered> {
    let s = store.store();
    let sweep = store.block(s.upsert_sweep(&spec.name, &spec.description, &spec.text))?;
    let axes = SweepAxes {
        grid_keys: spec.grid_keys.clone(),
        base_keys: spec.base_keys.clone(),
    };
    store.block(s.set_sweep_axes(sweep.id, &axes))?;
    let before = store.block(s.runs(Some(sweep.id)))?.len();
    for r in &spec.runs {
        store.block(s.ensure_run(&new_run(
            Some(sweep.id),
            &r.name,
            &r.resolved,
            &r.config_hash,
        )))?;
    }
    let after = store.block(s.runs(Some(sweep.id)))?.len();
    if retry_failed {
        store.block(s.reset_failed(sweep.id))?;
    }
    let continued = apply_rules(store, &sweep, spec.prune.as_ref())?;
    Ok(Registered {
        sweep: store.block(s.sweep(&spec.name))?,
        new: after - before,
        continued,
    })
}

/// What the workers of this process may use.
#[derive(Clone)]
pub struct WorkOptions {
    /// One entry per concurrent run slot; a GPU appears `runs_per_gpu` times.
    pub slots: Vec<Device>,
    /// CPU threads for each concurrent CPU run.
    pub cpu_threads_per_run: usize,
    /// Root of run directories (shared storage when workers are on several machines).
    pub out_root: PathBuf,
    /// Keep polling for work that other workers still hold, until the sweep is finished.
    pub wait_for_others: bool,
}

/// Creates the display of one run; the CLI gives progress bars, tests give silence.
pub trait ObserverFactory: Send + Sync {
    fn create(&self, run: &RunRow) -> Box<dyn Observer>;
    /// Called when a run ends.
    fn finished(&self, run: &RunRow, outcome: &Outcome);
}

/// What a worker pass did.
#[derive(Debug, Default, Clone)]
pub struct WorkReport {
    pub completed: usize,
    pub failed: usize,
    pub interrupted: usize,
    pub pruned: usize,
}

/// Whether `worker` ("host:pid") names a process on this host that no longer exists.
fn worker_is_dead_here(worker: Option<&str>) -> bool {
    let me = worker_info();
    let Some((host, pid)) = worker.and_then(|w| w.rsplit_once(':')) else {
        return false;
    };
    host == me.host
        && pid
            .parse::<u32>()
            .is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists())
}

/// Puts runs whose worker is gone back to pending: a stale heartbeat, a dead process on this
/// host, or a Slurm array task that has ended. Returns how many.
pub fn reclaim_orphans(store: &SyncStore, sweep_id: i64) -> Result<u64> {
    let s = store.store();
    let mut n = store.block(s.requeue_stale(sweep_id, ddlab_store::STALE_AFTER))?;
    for r in store.block(s.runs(Some(sweep_id)))? {
        if r.status() != RunStatus::Running {
            continue;
        }
        let slurm_task_ended = match (&r.slurm_job, r.slurm_task) {
            (Some(job), Some(task)) => crate::slurm::task_ended(job, task),
            _ => false,
        };
        if worker_is_dead_here(r.worker.as_deref()) || slurm_task_ended {
            store.block(s.release_run(r.id))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Refreshes a run's heartbeat in the background until dropped.
struct Heartbeat {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(store: SyncStore, run_id: i64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut waited = Duration::ZERO;
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                waited += Duration::from_millis(200);
                if waited >= HEARTBEAT_EVERY {
                    waited = Duration::ZERO;
                    // Progress is written by the run itself; only the time is refreshed here.
                    let _ = store.block(async {
                        let r = store.store().run(run_id).await?;
                        store.store().progress(run_id, r.steps_done, None).await
                    });
                }
            }
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Counts of how this process's runs ended, shared by its slots.
#[derive(Default)]
struct Tally {
    completed: AtomicUsize,
    failed: AtomicUsize,
    interrupted: AtomicUsize,
    pruned: AtomicUsize,
}

impl Tally {
    fn count(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Completed { .. } => &self.completed,
            Outcome::Failed { .. } => &self.failed,
            Outcome::Interrupted { .. } => &self.interrupted,
            Outcome::Pruned { .. } => &self.pruned,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }

    fn report(self) -> WorkReport {
        WorkReport {
            completed: self.completed.into_inner(),
            failed: self.failed.into_inner(),
            interrupted: self.interrupted.into_inner(),
            pruned: self.pruned.into_inner(),
        }
    }
}

/// What every slot of this process shares.
struct Shared<'a> {
    store: &'a SyncStore,
    sweep: &'a SweepRow,
    opts: &'a WorkOptions,
    data: &'a DataCache,
    stop: &'a AtomicBool,
    observers: &'a dyn ObserverFactory,
    worker: WorkerInfo,
    /// Names this database's run folders.
    store_id: String,
    tally: Tally,
}

/// Works through the sweep's runs with one thread per slot until none is left (or `stop`).
pub fn work(
    store: &SyncStore,
    sweep: &SweepRow,
    opts: &WorkOptions,
    data: &DataCache,
    stop: &AtomicBool,
    observers: &dyn ObserverFactory,
) -> Result<WorkReport> {
    reclaim_orphans(store, sweep.id)?;
    let shared = Shared {
        store,
        sweep,
        opts,
        data,
        stop,
        observers,
        worker: worker_info(),
        store_id: store.block(store.store().store_id())?,
        tally: Tally::default(),
    };
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = opts
            .slots
            .iter()
            .enumerate()
            .map(|(slot, device)| {
                let shared = &shared;
                scope.spawn(move || run_slot(shared, slot, device))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")))
            })
            .collect()
    });
    for r in results {
        r?;
    }
    Ok(shared.tally.report())
}

/// One slot: claim the next run, execute it, repeat until the sweep has nothing left for it.
fn run_slot(shared: &Shared, slot: usize, device: &Device) -> Result<()> {
    let (store, sweep) = (shared.store, shared.sweep);
    // Each CPU slot gets its own share of the cores. The kernels split their work for that
    // share; they run on candle's barrier pool when it is free and on this slot's rayon pool
    // when another slot holds it (ddlab_core::ops::cpu).
    let threads = if device.is_cpu() {
        shared.opts.cpu_threads_per_run.max(1)
    } else {
        1
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("ddlab-slot{slot}-{i}"))
        .build()?;
    let label = device_label(device);
    while !shared.stop.load(Ordering::SeqCst) {
        let claimed = store.block(store.store().claim_next_run(
            sweep.id,
            &label,
            &shared.worker,
        ))?;
        let Some(run) = claimed else {
            if !shared.opts.wait_for_others || !others_still_working(store, sweep.id)? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_secs(2));
            reclaim_orphans(store, sweep.id)?;
            continue;
        };
        let outcome = pool.install(|| {
            ddlab_core::ops::cpu::with_threads(threads, || execute_claimed(shared, &run, device))
        })?;
        shared.tally.count(&outcome);
        shared.observers.finished(&run, &outcome);
    }
    Ok(())
}

/// Executes a claimed run; a recorded config that no longer resolves fails that run only.
fn execute_claimed(shared: &Shared, run: &RunRow, device: &Device) -> Result<Outcome> {
    let store = shared.store;
    let cfg: RunConfig = serde_json::from_str(&run.config_json)
        .with_context(|| format!("run {} has an unreadable config", run.id))?;
    match cfg.resolve() {
        Ok(plan) => {
            let root = &shared.opts.out_root;
            let dir = run_dir(root, &shared.store_id, Some(&shared.sweep.name), run);
            let prune = PrunePlan::for_run(shared.sweep, &cfg)?;
            let observer = shared.observers.create(run);
            let _beat = Heartbeat::start(store.clone(), run.id);
            run_one(
                store,
                run,
                &plan,
                dir,
                device,
                shared.data,
                shared.stop,
                observer.as_ref(),
                prune,
            )
        }
        Err(e) => {
            let error = format!("invalid configuration: {e}");
            store.block(
                store
                    .store()
                    .finish_run(run.id, RunStatus::Failed, Some(&error)),
            )?;
            Ok(Outcome::Failed { error })
        }
    }
}

/// True while some run of the sweep is running elsewhere or waiting.
fn others_still_working(store: &SyncStore, sweep_id: i64) -> Result<bool> {
    let runs = store.block(store.store().runs(Some(sweep_id)))?;
    Ok(runs.iter().any(|r| {
        matches!(
            r.status(),
            RunStatus::Running | RunStatus::Pending | RunStatus::Interrupted
        )
    }))
}

/// Concurrency for `--jobs`: with GPUs, one slot per GPU (times `runs_per_gpu`); on the CPU,
/// `jobs` slots sharing the cores.
pub fn plan_slots(devices: &[Device], jobs: usize, runs_per_gpu: usize) -> (Vec<Device>, usize) {
    let cores = crate::device::cpu_threads();
    if devices.iter().all(|d| d.is_cpu()) {
        let jobs = jobs.max(1);
        (vec![Device::Cpu; jobs], (cores / jobs).max(1))
    } else {
        let per = runs_per_gpu.max(1);
        let slots: Vec<Device> = devices
            .iter()
            .flat_map(|d| std::iter::repeat_n(d.clone(), per))
            .collect();
        (slots, (cores / devices.len().max(1)).max(1))
    }
}
