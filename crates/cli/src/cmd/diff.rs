//! `ddlab diff`: runs side by side — the configuration keys that differ, then final metrics.

use anyhow::Result;
use clap::Parser;
use ddlab_config::names::terminal_safe;
use ddlab_report::diff::RunDiff;
use ddlab_runner::recorder::SyncStore;
use std::process::ExitCode;

use super::DbArg;

/// Compare runs: only the configuration keys whose values differ between them, then each
/// run's final metrics (the newest value of loss, grad_norm, …) and evals side by side.
///
/// Runs are named by the ids `ddlab runs` lists; they may come from different sweeps. The
/// store is opened read-only.
#[derive(Parser, Debug)]
#[command(after_help = "Example:\n  ddlab runs --sweep quickstart\n  ddlab diff 1 3 4")]
pub struct Args {
    /// Two or more run ids (the `id` column of `ddlab runs`).
    #[arg(required = true, num_args = 2.., value_name = "RUN")]
    runs: Vec<i64>,
    #[command(flatten)]
    db: DbArg,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let store = SyncStore::open(&a.db.db, ddlab_store::OpenMode::ReadOnly)?;
    let diff = store.block(ddlab_report::diff::load(store.store(), &a.runs))?;
    print_diff(&diff);
    Ok(ExitCode::SUCCESS)
}

/// A number in a column: four decimals, or scientific notation when that would hide it.
fn number(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e6) => format!("{x:.4e}"),
        Some(x) => format!("{x:.4}"),
    }
}

fn print_diff(d: &RunDiff) {
    let mut rows: Vec<Vec<String>> = vec![];
    let head = |label: &str| vec![label.to_string()];
    let mut line = head("run");
    line.extend(d.runs.iter().map(|r| r.id.to_string()));
    rows.push(line);
    let mut line = head("name");
    line.extend(d.runs.iter().map(|r| r.name.clone()));
    rows.push(line);
    let mut line = head("status");
    line.extend(
        d.runs
            .iter()
            .map(|r| format!("{} {}/{}", r.status, r.steps_done, r.steps_total)),
    );
    rows.push(line);
    rows.push(head(if d.keys.is_empty() {
        "config: identical"
    } else {
        "config (differing keys)"
    }));
    for (k, vs) in &d.keys {
        let mut line = head(&format!("  {k}"));
        line.extend(vs.iter().cloned());
        rows.push(line);
    }
    rows.push(head("final metrics"));
    for (k, vs) in &d.metrics {
        let mut line = head(&format!("  {k}"));
        line.extend(vs.iter().map(|v| number(*v)));
        rows.push(line);
    }
    print_columns(&rows);
}

/// Left-aligned columns; every cell escaped first (names and values come from specs).
fn print_columns(rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| terminal_safe(c)).collect())
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter(|r| r.len() > 1)
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}
