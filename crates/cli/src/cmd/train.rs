//! `ddlab train`: one run from a config file and/or `--set key=value`, recorded in the store.

use anyhow::{Context, Result};
use clap::Parser;
use ddlab_config::names::terminal_safe;
use ddlab_config::{ResolvedRun, RunConfig};
use ddlab_runner::device::DeviceRequest;
use ddlab_runner::execute::Outcome;
use ddlab_runner::files::{check_writable, run_dir};
use ddlab_runner::recorder::SyncStore;
use ddlab_runner::{DataCache, check_images, new_run, run_one};
use ddlab_store::RunRow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{DbArg, RunsDirArg, stop_flag};
use crate::progress::RunProgress;

/// Train one model and record it in the store.
///
/// Keys come from an optional TOML file of `key = value` lines and from `--set key=value`
/// (which wins); `ddlab keys` lists them all with their defaults. The run writes its
/// checkpoint and sample grids under `--runs-dir` and its losses, samples and NLL into the store.
/// Ctrl-C checkpoints and stops; running the same command again does not resume (use a sweep
/// for resumable runs) — pass `--resume RUN_ID` to continue a stopped run.
#[derive(Parser, Debug)]
#[command(
    after_help = "Example: ddlab train --set dataset=mnist --set data_dir=../shared/data/mnist --set model=mnist --set steps=500"
)]
pub struct Args {
    /// TOML file of run keys.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Override a key: --set schedule=cosine --set T=250.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Run name (default: dataset, schedule and T).
    #[arg(long)]
    name: Option<String>,
    /// Continue the stopped or interrupted run with this id from its checkpoint.
    #[arg(long, value_name = "RUN_ID")]
    resume: Option<i64>,
    #[command(flatten)]
    runs_dir: RunsDirArg,
    /// auto | cpu | cuda | cuda:N
    #[arg(long, default_value = "auto")]
    device: String,
    #[command(flatten)]
    db: DbArg,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let plan = ddlab_config::load_run_config(args.config.as_deref(), &args.set)?;
    if let Some(name) = &args.name {
        ddlab_config::names::check_run_name(name)?;
    }
    if args.resume.is_some() && (args.config.is_some() || !args.set.is_empty()) {
        anyhow::bail!("--resume continues a run with its recorded config; drop --config and --set");
    }
    let request: DeviceRequest = args.device.parse()?;
    let devices = request.resolve()?;
    if let Some(note) = &devices.note {
        eprintln!("note: {note}");
    }
    let device = devices.devices[0].clone();
    let data = DataCache::default();
    if args.resume.is_none() {
        // A missing or corrupt dataset, or images the model cannot take, are reported before
        // anything is recorded.
        check_images(&plan, data.get(&plan.dataset)?.as_ref())?;
    }
    check_writable(&args.runs_dir.runs_dir, true)?;
    // Resuming needs the run's database; a new run may create it.
    let store =
        SyncStore::connect(&args.db.db, args.resume.is_none()).with_context(|| {
            match args.resume {
                Some(id) => format!("cannot resume run {id}"),
                None => "cannot open the database".into(),
            }
        })?;
    let (run, plan) = match args.resume {
        Some(id) => recorded_run(&store, id)?,
        None => (register(&store, &args, &plan)?, plan),
    };
    let store_id = store.block(store.store().store_id())?;
    let dir = run_dir(&args.runs_dir.runs_dir, &store_id, None, &run);
    eprintln!(
        "run {} `{}` on {} → {}",
        run.id,
        terminal_safe(&run.name),
        ddlab_runner::device::device_label(&device),
        dir.display()
    );
    let stop = stop_flag()?;
    let progress = RunProgress::new(&terminal_safe(&run.name));
    let outcome = run_one(
        &store,
        &run,
        &plan,
        dir.clone(),
        &device,
        &data,
        &stop,
        &progress,
        // A single run has no sweep to be ranked in: it never stops early.
        None,
    )?;
    progress.finish();
    Ok(print_outcome(&store, &run, &dir, outcome))
}

/// A run to continue, with its recorded configuration.
fn recorded_run(store: &SyncStore, id: i64) -> Result<(RunRow, ResolvedRun)> {
    let run = store.block(store.store().run(id))?;
    let cfg: RunConfig =
        serde_json::from_str(&run.config_json).context("the stored run config is unreadable")?;
    let plan = cfg.resolve()?;
    Ok((run, plan))
}

/// Records a new run (or finds the identical one) under `--name` or a name from its keys.
fn register(store: &SyncStore, args: &Args, plan: &ResolvedRun) -> Result<RunRow> {
    let c = &plan.config;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}-T{}", c.dataset, c.schedule, c.t));
    let record = new_run(None, &name, plan, &plan.config.config_hash());
    Ok(store.block(store.store().ensure_run(&record))?)
}

fn print_outcome(store: &SyncStore, run: &RunRow, dir: &Path, outcome: Outcome) -> ExitCode {
    let name = terminal_safe(&run.name);
    match outcome {
        Outcome::Completed {
            final_loss,
            nll_bpd,
        } => {
            println!("completed run {} `{name}`", run.id);
            if let Some(l) = final_loss {
                println!("  final loss   {l:.5}");
            }
            if let Some(b) = nll_bpd {
                println!("  NLL          {b:.4} bits/dim (held-out)");
            }
            println!("  samples      {}", dir.join("samples.png").display());
            println!(
                "  checkpoint   {}",
                dir.join("checkpoint.safetensors").display()
            );
            println!("  database     {}", store.store().display_url());
            ExitCode::SUCCESS
        }
        Outcome::Interrupted { step } => {
            println!(
                "interrupted run {} at step {step}; continue with: ddlab train --resume {}",
                run.id, run.id
            );
            ExitCode::from(130)
        }
        Outcome::Failed { error } => {
            eprintln!("error: run {} failed: {}", run.id, terminal_safe(&error));
            ExitCode::FAILURE
        }
        Outcome::Pruned { step, reason } => {
            println!(
                "run {} pruned at step {step}: {}",
                run.id,
                terminal_safe(&reason)
            );
            ExitCode::SUCCESS
        }
    }
}
