//! `ddlab train`: one run from a config file and/or `--set key=value`, recorded in the store.

use anyhow::{Context, Result};
use clap::Parser;
use ddlab_runner::device::DeviceRequest;
use ddlab_runner::execute::Outcome;
use ddlab_runner::recorder::SyncStore;
use ddlab_runner::{DataCache, new_run, run_dir, run_one, spec};
use std::path::PathBuf;
use std::process::ExitCode;

use super::{DbArg, stop_flag};
use crate::progress::RunProgress;

/// Train one model and record it in the store.
///
/// Keys come from an optional TOML file of `key = value` lines and from `--set key=value`
/// (which wins); `ddlab keys` lists them all with their defaults. The run writes its
/// checkpoint and sample grids under `--out` and its losses, samples and NLL into the store.
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
    /// Where run directories go.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// auto | cpu | cuda | cuda:N
    #[arg(long, default_value = "auto")]
    device: String,
    #[command(flatten)]
    db: DbArg,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let plan = spec::load_run_config(args.config.as_deref(), &args.set)?;
    let request: DeviceRequest = args.device.parse().map_err(anyhow::Error::msg)?;
    let devices = request.resolve()?;
    if let Some(note) = &devices.note {
        eprintln!("note: {note}");
    }
    let device = devices.devices[0].clone();
    let data = DataCache::default();
    if args.resume.is_none() {
        // A missing or corrupt dataset is reported before anything is recorded.
        data.get(&plan.dataset)?;
    }
    let store = SyncStore::connect(&args.db.db, true)?;
    let run = match args.resume {
        Some(id) => {
            let r = store.block(store.store().run(id))?;
            let cfg: ddlab_runner::config::RunConfig = serde_json::from_str(&r.config_json)
                .context("the stored run config is unreadable")?;
            if args.config.is_some() || !args.set.is_empty() {
                anyhow::bail!(
                    "--resume continues run {id} with its recorded config; drop --config and --set"
                );
            }
            let _ = cfg;
            r
        }
        None => {
            let c = &plan.config;
            let name = args
                .name
                .clone()
                .unwrap_or_else(|| format!("{}-{}-T{}", c.dataset, c.schedule, c.t));
            store.block(store.store().ensure_run(&new_run(
                None,
                &name,
                &plan,
                &plan.config.config_hash(),
            )))?
        }
    };
    let plan = match args.resume {
        Some(_) => {
            let cfg: ddlab_runner::config::RunConfig = serde_json::from_str(&run.config_json)?;
            cfg.resolve().map_err(anyhow::Error::msg)?
        }
        None => plan,
    };
    let dir = run_dir(&args.out, None, &run);
    eprintln!(
        "run {} `{}` on {} → {}",
        run.id,
        run.name,
        ddlab_runner::device::device_label(&device),
        dir.display()
    );
    let stop = stop_flag()?;
    let progress = RunProgress::new(&run.name);
    let outcome = run_one(
        &store,
        &run,
        &plan,
        dir.clone(),
        &device,
        &DataCache::default(),
        &stop,
        &progress,
    )?;
    progress.finish();
    match outcome {
        Outcome::Completed {
            final_loss,
            nll_bpd,
        } => {
            println!("completed run {} `{}`", run.id, run.name);
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
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Interrupted { step } => {
            println!(
                "interrupted run {} at step {step}; continue with: ddlab train --resume {}",
                run.id, run.id
            );
            Ok(ExitCode::from(130))
        }
        Outcome::Failed { error } => {
            eprintln!("error: run {} failed: {error}", run.id);
            Ok(ExitCode::FAILURE)
        }
    }
}
