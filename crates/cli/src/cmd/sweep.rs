//! `ddlab sweep`: register a spec's grid of runs and work through it; `ddlab work`: join a
//! registered sweep as a worker (e.g. from another machine through PostgreSQL).

use anyhow::{Result, bail};
use clap::Parser;
use ddlab_config::limits::{DEFAULT_MAX_RUNS, HARD_MAX_RUNS};
use ddlab_config::load_sweep_bounded;
use ddlab_config::names::terminal_safe;
use ddlab_runner::DataCache;
use ddlab_runner::device::DeviceRequest;
use ddlab_runner::files::check_writable;
use ddlab_runner::prune::{resume_pruned, steps_saved};
use ddlab_runner::recorder::SyncStore;
use ddlab_runner::slurm::{self, SlurmOptions, check_db_for_cluster};
use ddlab_runner::sweep::{Registered, WorkOptions, plan_slots, preflight, register, work};
use ddlab_store::RunStatus;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{DbArg, RunsDirArg, stop_flag};
use crate::progress::SweepProgress;

/// Run a sweep: every combination of its [grid] over its [base] keys.
///
/// [[grid.zip]] groups vary several keys together; [[grid.when]] blocks add axes only to the
/// runs that meet a condition (`if = { sampler = "ddim" }`, `unless = { guidance = "none" }`).
/// Points that resolve to the same configuration make one run. --dry-run lists the runs and
/// touches no store.
///
/// Runs are identified by their resolved config, so launching the same spec again skips
/// completed runs, resumes interrupted (or killed) ones from their last checkpoint, and
/// reruns failed ones only with --retry-failed. Ctrl-C checkpoints the active runs and stops.
///
/// A [prune] section stops runs early by asynchronous successive halving: at each rung
/// (training step) a run is ranked against the runs already there and stops, `pruned`, unless
/// it is among the best `keep` fraction; it keeps its checkpoint. Launching the spec again with
/// a larger `keep` (or without [prune]) continues the runs the new rules keep; --resume-pruned
/// continues them all.
#[derive(Parser, Debug)]
#[command(
    after_help = "Examples:\n  ddlab sweep                                  # experiments/quickstart.toml\n  ddlab sweep experiments/mnist-schedules.toml --jobs 2\n  ddlab sweep experiments/quickstart.toml --set steps=100 --db postgres://me@db/ddlab"
)]
pub struct Args {
    /// The sweep spec (TOML with [sweep], [base], [grid], [[grid.zip]] and [[grid.when]]).
    #[arg(default_value = "experiments/quickstart.toml")]
    spec: PathBuf,
    /// Override a [base] key: --set steps=500. On a key the [grid] varies it fixes that axis
    /// to the one value (--set T=1000).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Replace (or add) a [grid] axis: --grid 'T=[100, 1000]'.
    #[arg(long = "grid", value_name = "KEY=[VALUES]")]
    grid: Vec<String>,
    #[command(flatten)]
    slots: SlotArgs,
    /// Run failed runs again.
    #[arg(long)]
    retry_failed: bool,
    /// Continue every pruned run from the checkpoint it kept (it still meets the later rungs;
    /// launch the spec without [prune] to run pruned runs to their end).
    #[arg(long)]
    resume_pruned: bool,
    #[command(flatten)]
    runs_dir: RunsDirArg,
    /// Do not write the report at the end.
    #[arg(long)]
    no_report: bool,
    /// Check the spec and list exactly the runs it makes, without opening a store or running
    /// anything.
    #[arg(long)]
    dry_run: bool,
    /// Refuse a spec whose grid makes more runs than this (guards against a typo that
    /// registers a million runs).
    #[arg(long, default_value_t = DEFAULT_MAX_RUNS, value_name = "N")]
    max_runs: usize,
    /// Register a grid larger than --max-runs all the same (up to 1,000,000 runs).
    #[arg(long)]
    yes: bool,
    /// Register the runs in the store and exit; workers (`ddlab work`) run them.
    #[arg(long)]
    register_only: bool,
    #[command(flatten)]
    slurm: SlurmArgs,
    #[command(flatten)]
    db: DbArg,
}

/// Where and how many runs at once (`ddlab sweep` and `ddlab work`).
#[derive(clap::Args, Debug)]
pub struct SlotArgs {
    /// Runs at once (on GPUs: one slot per GPU, times --runs-per-gpu).
    #[arg(long, short, default_value_t = 1)]
    jobs: usize,
    /// auto | cpu | cuda | cuda:0,1
    #[arg(long, default_value = "auto")]
    device: String,
    /// Small runs that share one GPU.
    #[arg(long, default_value_t = 1)]
    runs_per_gpu: usize,
}

/// Flags of `ddlab sweep --slurm` (see README, "Many machines").
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Slurm (many machines)")]
pub struct SlurmArgs {
    /// Register the runs, then write an sbatch script: a job array of `ddlab work` workers.
    #[arg(long)]
    slurm: bool,
    /// Array tasks, i.e. workers (default: the unfinished runs, at most 4).
    #[arg(long, requires = "slurm")]
    workers: Option<usize>,
    /// Slurm partition (#SBATCH --partition).
    #[arg(long, requires = "slurm")]
    partition: Option<String>,
    /// GPUs per worker (#SBATCH --gres=gpu:G); 0 trains on the CPU.
    #[arg(long, default_value_t = 0, requires = "slurm")]
    gpus_per_task: usize,
    /// CPU cores per worker (#SBATCH --cpus-per-task, and the worker's --threads).
    #[arg(long, requires = "slurm")]
    cpus_per_task: Option<usize>,
    /// Time limit per worker, HH:MM:SS or D-HH:MM:SS (#SBATCH --time). Two minutes before it
    /// Slurm sends SIGUSR1 and the worker checkpoints and hands its run back.
    #[arg(long, requires = "slurm")]
    time: Option<String>,
    /// Submit the script with sbatch and record the job id on the sweep.
    #[arg(long, requires = "slurm")]
    submit: bool,
    /// Allow a SQLite database: every task runs on this machine (no network file system).
    #[arg(long, requires = "slurm")]
    single_node: bool,
    /// Checkpoints and run directories, on storage every node can read (default: --runs-dir).
    #[arg(long, requires = "slurm")]
    checkpoint_dir: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let max_runs = if a.yes { HARD_MAX_RUNS } else { a.max_runs };
    let spec = load_sweep_bounded(&a.spec, &a.set, &a.grid, max_runs)?;
    if a.dry_run {
        print_plan(&spec);
        return Ok(ExitCode::SUCCESS);
    }
    if a.slots.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    if a.slurm.slurm {
        check_db_for_cluster(&a.db.db, a.slurm.single_node)?;
        slurm::check_flags(a.slurm.workers, a.slurm.time.as_deref())?;
    }
    let request: DeviceRequest = a.slots.device.parse()?;
    // The Slurm workers pick their own devices on their nodes.
    let devices = if a.slurm.slurm {
        DeviceRequest::Cpu.resolve()?
    } else {
        request.resolve()?
    };
    let data = DataCache::default();
    preflight(&spec, &data)?;
    if !a.slurm.slurm && !a.register_only {
        check_writable(&a.runs_dir.runs_dir, true)?;
    }
    let store = SyncStore::connect(&a.db.db, true)?;
    let Registered {
        sweep,
        new,
        continued,
    } = register(&store, &spec, a.retry_failed)?;
    let resumed = if a.resume_pruned {
        resume_pruned(&store, sweep.id)?
    } else {
        0
    };
    if continued + resumed > 0 {
        eprintln!("continuing {} pruned run(s)", continued + resumed);
    }
    let runs = store.block(store.store().runs(Some(sweep.id)))?;
    let count = |s: RunStatus| runs.iter().filter(|r| r.status() == s).count();
    let done = count(RunStatus::Completed);
    eprintln!(
        "sweep `{}`: {} runs ({} new, {} completed, {} to resume, {} pruned, {} failed{}) → {}",
        sweep.name,
        runs.len(),
        new,
        done,
        count(RunStatus::Interrupted) + count(RunStatus::Running),
        count(RunStatus::Pruned),
        count(RunStatus::Failed),
        if a.retry_failed { ", retried" } else { "" },
        store.store().display_url()
    );
    if a.slurm.slurm {
        let unfinished = runs
            .iter()
            .filter(|r| {
                !matches!(
                    r.status(),
                    RunStatus::Completed | RunStatus::Failed | RunStatus::Pruned
                )
            })
            .count();
        return launch_slurm(&a, &store, &sweep, unfinished);
    }
    if a.register_only {
        println!(
            "registered; start workers with: ddlab work --sweep {} --db {}",
            sweep.name,
            store.store().display_url()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(note) = &devices.note {
        eprintln!("note: {note}");
    }
    let (slots, per_run) = plan_slots(&devices.devices, a.slots.jobs, a.slots.runs_per_gpu);
    let opts = WorkOptions {
        slots,
        cpu_threads_per_run: per_run,
        out_root: a.runs_dir.runs_dir.clone(),
        wait_for_others: true,
    };
    let stop = stop_flag()?;
    let settled = done + count(RunStatus::Failed) + count(RunStatus::Pruned);
    let progress = SweepProgress::new(runs.len(), settled);
    let report = work(&store, &sweep, &opts, &data, &stop, &progress)?;
    progress.finish();
    finish_sweep(&a, &store, &sweep, report.interrupted > 0, &stop)
}

/// `--dry-run`: the runs the spec makes (hash and name), and the points merged into them.
fn print_plan(spec: &ddlab_config::SweepSpec) {
    println!("sweep `{}`: {} runs", spec.name, spec.runs.len());
    for r in &spec.runs {
        println!("  {}  {}", r.config_hash, terminal_safe(&r.name));
    }
    if !spec.merged.is_empty() {
        println!(
            "{} point(s) of the grid repeat an earlier run:",
            spec.merged.len()
        );
        for m in &spec.merged {
            let (name, same) = (terminal_safe(&m.name), terminal_safe(&m.same_as));
            println!("  {name}  = {same}");
        }
    }
}

/// After the work: the table, where the results are, the report, and the exit code.
fn finish_sweep(
    a: &Args,
    store: &SyncStore,
    sweep: &ddlab_store::SweepRow,
    interrupted: bool,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<ExitCode> {
    super::runs::print_table(store, Some(&sweep.name))?;
    let runs = store.block(store.store().runs(Some(sweep.id)))?;
    let failed = runs
        .iter()
        .filter(|r| r.status() == RunStatus::Failed)
        .count();
    print_pruning(&runs);
    let url = store.store().display_url();
    match ddlab_store::sqlite_path(&url) {
        Some(p) => println!(
            "\ndatabase: {url}   (try: sqlite3 {} 'select * from run_summary')",
            p.display()
        ),
        None => println!("\ndatabase: {url}"),
    }
    if !a.no_report {
        let dir = super::report::default_dir(&sweep.name);
        match super::report::write_report(store, &sweep.name, &dir) {
            Ok(r) => println!("report:   {}", r.index.display()),
            Err(e) => eprintln!("warning: the report could not be written: {e:#}"),
        }
    }
    if stop.load(std::sync::atomic::Ordering::SeqCst) || interrupted {
        println!("stopped; run the same command again to resume");
        return Ok(ExitCode::from(130));
    }
    if failed > 0 {
        println!(
            "{failed} run(s) failed; `ddlab runs --sweep {}` shows why, --retry-failed reruns them",
            sweep.name
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The compute pruning saved: the runs it stopped and the training steps they did not take.
fn print_pruning(runs: &[ddlab_store::RunRow]) {
    let pruned = runs
        .iter()
        .filter(|r| r.status() == RunStatus::Pruned)
        .count();
    if pruned == 0 {
        return;
    }
    let saved = steps_saved(runs);
    let planned: i64 = runs.iter().map(|r| r.steps_total).sum();
    println!(
        "\npruned: {pruned} of {} runs; {saved} of {planned} training steps not taken ({:.0}% saved)",
        runs.len(),
        100.0 * saved as f64 / planned.max(1) as f64
    );
}

/// Writes (and with --submit, submits) the sbatch script of a sweep's workers.
fn launch_slurm(
    a: &Args,
    store: &SyncStore,
    sweep: &ddlab_store::SweepRow,
    unfinished: usize,
) -> Result<ExitCode> {
    let o = &a.slurm;
    if unfinished == 0 {
        println!(
            "every run of `{}` has finished; nothing to submit",
            sweep.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    let cwd = std::env::current_dir()?;
    let checkpoint_dir = cwd.join(o.checkpoint_dir.as_ref().unwrap_or(&a.runs_dir.runs_dir));
    let slurm_dir = checkpoint_dir.join(&sweep.name).join("slurm");
    let opts = SlurmOptions {
        sweep: sweep.name.clone(),
        db_url: a.db.db.clone(),
        workers: o.workers.unwrap_or(unfinished.min(4)),
        partition: o.partition.clone(),
        gpus_per_task: o.gpus_per_task,
        cpus_per_task: o.cpus_per_task,
        time: o.time.clone(),
        checkpoint_dir,
        log_dir: slurm_dir.clone(),
        workdir: cwd,
        ddlab: std::env::current_exe()?,
    };
    let path = slurm::write_script(&opts, &slurm_dir.join("workers.sbatch"))?;
    println!("sbatch script: {}", path.display());
    if !o.submit {
        println!("submit it with: sbatch {}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let job = slurm::submit(&path)?;
    store.block(store.store().set_sweep_slurm_job(sweep.id, &job))?;
    println!(
        "submitted job {job}: {} workers (array 0-{})",
        opts.workers,
        opts.workers - 1
    );
    println!("watch:   ddlab tui --db {}", store.store().display_url());
    println!(
        "         squeue -j {job}    (logs: {}/)",
        slurm_dir.display()
    );
    println!(
        "results: ddlab runs --sweep {} --db {}",
        sweep.name,
        store.store().display_url()
    );
    println!(
        "cancel:  ddlab cancel --sweep {} --db {}",
        sweep.name,
        store.store().display_url()
    );
    Ok(ExitCode::SUCCESS)
}

/// Cancel a sweep's Slurm job: scancel every array task (workers checkpoint on SIGTERM) and
/// mark the sweep's unfinished runs interrupted; `ddlab sweep --slurm --submit` resumes them.
#[derive(Parser, Debug)]
pub struct CancelArgs {
    /// The sweep's name.
    #[arg(long)]
    sweep: String,
    #[command(flatten)]
    db: DbArg,
}

pub fn cancel_cmd(a: CancelArgs) -> Result<ExitCode> {
    let store = SyncStore::connect(&a.db.db, false)?;
    let sweep = store.block(store.store().sweep(&a.sweep))?;
    let Some(job) = &sweep.slurm_job_id else {
        bail!(
            "sweep `{}` has no Slurm job recorded (it was not submitted with --slurm --submit)",
            sweep.name
        );
    };
    slurm::cancel(job)?;
    let n = store.block(
        store
            .store()
            .interrupt_unfinished(sweep.id, &format!("cancelled (Slurm job {job})")),
    )?;
    println!("cancelled Slurm job {job}; {n} unfinished run(s) marked interrupted");
    Ok(ExitCode::SUCCESS)
}

/// Join a sweep already registered in the store and work on its runs until none is left.
#[derive(Parser, Debug)]
pub struct WorkArgs {
    /// The sweep's name.
    #[arg(long)]
    sweep: String,
    #[command(flatten)]
    slots: SlotArgs,
    /// Where run folders go; shared storage when workers are on several machines.
    #[arg(long, aliases = ["out", "runs-dir"], default_value = "runs", value_name = "DIR")]
    checkpoint_dir: PathBuf,
    #[command(flatten)]
    db: DbArg,
}

pub fn work_cmd(a: WorkArgs) -> Result<ExitCode> {
    let request: DeviceRequest = a.slots.device.parse()?;
    let devices = request.resolve()?;
    let store = SyncStore::connect(&a.db.db, false)?;
    let sweep = store.block(store.store().sweep(&a.sweep))?;
    let runs = store.block(store.store().runs(Some(sweep.id)))?;
    let (slots, per_run) = plan_slots(&devices.devices, a.slots.jobs.max(1), a.slots.runs_per_gpu);
    let opts = WorkOptions {
        slots,
        cpu_threads_per_run: per_run,
        out_root: a.checkpoint_dir,
        wait_for_others: true,
    };
    let stop = stop_flag()?;
    let done = runs
        .iter()
        .filter(|r| {
            matches!(
                r.status(),
                RunStatus::Completed | RunStatus::Failed | RunStatus::Pruned
            )
        })
        .count();
    let progress = SweepProgress::new(runs.len(), done);
    let report = work(
        &store,
        &sweep,
        &opts,
        &DataCache::default(),
        &stop,
        &progress,
    )?;
    progress.finish();
    println!(
        "worker {}: {} completed, {} pruned, {} failed, {} interrupted",
        ddlab_runner::worker_info().worker,
        report.completed,
        report.pruned,
        report.failed,
        report.interrupted
    );
    if report.interrupted > 0 && super::stopped_for_time_limit() {
        println!("time limit near: checkpointed and handed back; another worker resumes them");
        return Ok(ExitCode::SUCCESS);
    }
    Ok(if report.interrupted > 0 {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}
