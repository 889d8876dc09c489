//! `ddlab report`: charts, sample grids, index.html and summary.md for a sweep.

use anyhow::Result;
use clap::Parser;
use ddlab_config::names::{MAX_SWEEP_NAME, path_component, terminal_safe};
use ddlab_runner::recorder::SyncStore;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::DbArg;

/// Write a sweep's comparison report: loss curves, NLL and final loss against T per schedule,
/// the schedules themselves, every run's samples, index.html and summary.md.
#[derive(Parser, Debug)]
pub struct Args {
    /// The sweep's name.
    #[arg(long)]
    sweep: String,
    /// Output folder (default: reports/<sweep>).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    db: DbArg,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let store = SyncStore::open(&a.db.db, ddlab_store::OpenMode::ReadOnly)?;
    let safe = path_component(&a.sweep, MAX_SWEEP_NAME);
    if a.out.is_none() && safe != a.sweep {
        anyhow::bail!(
            "the sweep name \"{}\" cannot name a report folder; give one with --out DIR",
            terminal_safe(&a.sweep)
        );
    }
    let dir = a.out.unwrap_or_else(|| default_dir(&a.sweep));
    let r = write_report(&store, &a.sweep, &dir)?;
    println!(
        "report of `{}` ({} runs): {}",
        terminal_safe(&a.sweep),
        r.runs,
        r.index.display()
    );
    println!("  summary  {}", r.summary.display());
    for (title, f) in &r.charts {
        println!("  chart    {} — {}", f.png.display(), title);
    }
    Ok(ExitCode::SUCCESS)
}

/// `reports/<sweep>`, with the name made safe as a folder name.
pub fn default_dir(sweep: &str) -> PathBuf {
    Path::new("reports").join(path_component(sweep, MAX_SWEEP_NAME))
}

pub fn write_report(store: &SyncStore, sweep: &str, dir: &Path) -> Result<ddlab_report::Report> {
    store.block(ddlab_report::build(store.store(), sweep, dir))
}
