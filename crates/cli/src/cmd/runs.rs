//! `ddlab runs`: the runs in the store, one line each.

use anyhow::Result;
use clap::Parser;
use ddlab_config::names::terminal_safe;
use ddlab_runner::recorder::SyncStore;
use std::process::ExitCode;

use super::DbArg;

/// List runs (from the `run_summary` view).
#[derive(Parser, Debug)]
pub struct Args {
    /// Only this sweep's runs.
    #[arg(long)]
    sweep: Option<String>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArg,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let store = SyncStore::open(&a.db.db, ddlab_store::OpenMode::ReadOnly)?;
    if let Some(s) = &a.sweep {
        store.block(store.store().sweep(s))?;
    }
    if a.json {
        for r in store.block(store.store().summaries(a.sweep.as_deref()))? {
            println!("{}", serde_json::to_string(&r)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&store, a.sweep.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

/// The summary table printed by `runs` and at the end of a sweep.
pub fn print_table(store: &SyncStore, sweep: Option<&str>) -> Result<()> {
    let rows = store.block(store.store().summaries(sweep))?;
    let all = store.block(store.store().runs(None))?;
    let run = |id: i64| all.iter().find(|r| r.id == id);
    let host = |id: i64| run(id).and_then(|r| r.host.clone()).unwrap_or_default();
    // Slurm's `JOB_TASK`, the name squeue and sacct use.
    let slurm = |id: i64| match run(id).map(|r| (&r.slurm_job, r.slurm_task)) {
        Some((Some(j), Some(t))) => format!("{j}_{t}"),
        Some((Some(j), None)) => j.clone(),
        _ => String::new(),
    };
    let with_slurm = all.iter().any(|r| r.slurm_job.is_some());
    let mut header = vec![
        "id", "sweep", "name", "status", "steps", "loss", "NLL b/d", "device", "host",
    ];
    if with_slurm {
        header.extend(["slurm", "attempts"]);
    }
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in &rows {
        table.push(vec![
            r.run_id.to_string(),
            r.sweep.clone().unwrap_or_else(|| "(train)".into()),
            r.name.clone(),
            r.status.clone(),
            format!("{}/{}", r.steps_done, r.steps_total),
            opt(r.last_loss, 4),
            match (r.nll_bpd, r.nll_bpd_stderr) {
                (Some(b), Some(e)) => format!("{b:.3}±{e:.3}"),
                (b, _) => opt(b, 3),
            },
            r.device.clone().unwrap_or_default(),
            host(r.run_id),
        ]);
        if with_slurm {
            let attempts = run(r.run_id).map_or(0, |r| r.attempts);
            table
                .last_mut()
                .unwrap()
                .extend([slurm(r.run_id), attempts.to_string()]);
        }
    }
    if rows.is_empty() {
        println!(
            "no runs{}",
            sweep
                .map(|s| format!(" in sweep `{}`", terminal_safe(s)))
                .unwrap_or_default()
        );
        return Ok(());
    }
    // Names and errors come from specs and other users' runs: never raw to the terminal.
    for cell in table.iter_mut().flatten() {
        *cell = terminal_safe(cell);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (i, row) in table.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
        if i == 0 {
            println!(
                "{}",
                widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  ")
            );
        }
    }
    for r in rows.iter().filter(|r| r.error.is_some()) {
        println!(
            "run {} failed: {}",
            r.run_id,
            terminal_safe(r.error.as_deref().unwrap_or(""))
        );
    }
    Ok(())
}
