//! A sweep out of the store, in the formats people analyse with: Parquet (through the Apache
//! Arrow crates) or CSV, one file per table under a folder the user names —
//! `runs` (one column per configuration key), `metrics` (long format: run_id, step, name,
//! value, wall_time), `evals`, `sweep` (its spec and axes), and `spec.toml` as written.
//!
//! Invariants: reads the store only (read-only is enough); file names are fixed, never built
//! from a sweep or run name; an existing file is never overwritten unless asked; metrics are
//! read and written in bounded pages, so a store of 10⁸ rows exports in bounded memory; each
//! file appears complete or not at all (written beside, then renamed).

mod out;
mod sink;
mod tables;

use anyhow::Result;
use ddlab_store::Store;
use std::path::PathBuf;

use out::OutDir;
pub use out::file_names;
use sink::TableSink;

/// The file format of the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Csv,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
        }
    }
}

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub format: Format,
    pub dir: PathBuf,
    /// Replace files of an earlier export instead of refusing.
    pub overwrite: bool,
    /// Rows per batch (and per metrics page read from the store).
    pub batch_rows: usize,
}

impl ExportOptions {
    pub fn new(format: Format, dir: impl Into<PathBuf>) -> Self {
        ExportOptions {
            format,
            dir: dir.into(),
            overwrite: false,
            batch_rows: 65_536,
        }
    }
}

/// One written file and its row count.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub path: PathBuf,
    pub rows: usize,
}

/// Writes sweep `sweep`'s tables into `opts.dir`; returns the files in order.
pub async fn export_sweep(
    store: &Store,
    sweep: &str,
    opts: &ExportOptions,
) -> Result<Vec<Written>> {
    let sweep = store.sweep(sweep).await?;
    let dir = OutDir::prepare(&opts.dir, opts.format, opts.overwrite)?;
    let runs = store.runs(Some(sweep.id)).await?;
    let batch = opts.batch_rows.max(1);
    let mut written = vec![];

    let mut sink = TableSink::create(&dir, "runs", opts.format, tables::runs_schema(&runs))?;
    for chunk in runs.chunks(batch) {
        sink.write(&tables::runs_batch(sink.schema(), chunk)?)?;
    }
    written.push(sink.finish()?);

    written.push(tables::write_metrics(store, &dir, opts.format, &runs, batch).await?);
    written.push(tables::write_evals(store, &dir, opts.format, &runs, batch).await?);

    let mut sink = TableSink::create(&dir, "sweep", opts.format, tables::sweep_schema())?;
    sink.write(&tables::sweep_batch(&sweep)?)?;
    written.push(sink.finish()?);
    written.push(dir.write_text("spec.toml", &sweep.spec_toml)?);
    Ok(written)
}
