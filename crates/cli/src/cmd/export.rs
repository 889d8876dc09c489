//! `ddlab export`: a sweep's tables as Parquet or CSV files, for pandas, polars or DuckDB.

use anyhow::Result;
use clap::{Parser, ValueEnum};
use ddlab_config::names::terminal_safe;
use ddlab_export::{ExportOptions, Format};
use ddlab_runner::recorder::SyncStore;
use std::path::PathBuf;
use std::process::ExitCode;

use super::DbArg;

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FormatArg {
    Parquet,
    Csv,
}

/// Export a sweep: runs.EXT (one row per run, one column per configuration key), metrics.EXT
/// (long format: run_id, step, name, value, wall_time), evals.EXT, sweep.EXT (its spec and
/// axes) and spec.toml, into a folder.
///
/// File names are fixed; existing files are not overwritten without --force. Metrics are
/// streamed in batches, so any size of store exports in bounded memory. The store is opened
/// read-only.
#[derive(Parser, Debug)]
#[command(
    after_help = "Example:\n  ddlab export --sweep quickstart --format parquet --out exports/quickstart\n  python -c \"import pandas as pd; print(pd.read_parquet('exports/quickstart/metrics.parquet'))\""
)]
pub struct Args {
    /// The sweep's name.
    #[arg(long)]
    sweep: String,
    /// parquet (Apache Parquet, snappy) or csv.
    #[arg(long, value_enum, default_value = "parquet")]
    format: FormatArg,
    /// The folder to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Overwrite the files of an earlier export in that folder.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    db: DbArg,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let store = SyncStore::open(&a.db.db, ddlab_store::OpenMode::ReadOnly)?;
    let format = match a.format {
        FormatArg::Parquet => Format::Parquet,
        FormatArg::Csv => Format::Csv,
    };
    let mut opts = ExportOptions::new(format, &a.out);
    opts.overwrite = a.force;
    let written = store.block(ddlab_export::export_sweep(store.store(), &a.sweep, &opts))?;
    println!("exported sweep `{}`:", terminal_safe(&a.sweep));
    for w in &written {
        let path = terminal_safe(&w.path.display().to_string());
        // spec.toml is the spec's text, not a table.
        if w.path.extension().is_some_and(|e| e == "toml") {
            println!("  {path}");
        } else {
            println!("  {path}  ({} rows)", w.rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}
