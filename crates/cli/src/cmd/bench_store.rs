//! `ddlab bench --store ROWS`: a store the size of a large sweep, built with synthetic loss
//! curves, and the readers a user waits on timed against it in alternating rounds: `ddlab
//! runs`, the dashboard's first paint and refresh, `ddlab report`, and what recording a
//! training step costs there.

use anyhow::{Context, Result, bail};
use ddlab_config::RunConfig;
use ddlab_core::schedule::ScheduleKind;
use ddlab_runner::recorder::SyncStore;
use ddlab_store::{MetricRow, NewEval, NewRun, OpenMode, Store};
use ddlab_tui::images::ImageBackend;
use ddlab_tui::loader::Loader;
use ddlab_tui::{App, AppConfig};
use indicatif::ProgressBar;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::progress::bar_style;

/// The sweep the benchmark writes (and finds again with --keep).
const SWEEP: &str = "bench-store";
/// At most this many rows (a 30 GB SQLite file).
pub const MAX_ROWS: u64 = 1_000_000_000;
pub const MAX_RUNS: usize = 100_000;

/// What to build and time.
pub struct StoreBench {
    pub rows: u64,
    pub runs: usize,
    pub db: Option<String>,
    pub keep: bool,
    pub rounds: usize,
    /// The training step whose recording cost is reported, in ms.
    pub step_ms: f64,
}

impl StoreBench {
    fn check(&self) -> Result<()> {
        if !(1..=MAX_RUNS).contains(&self.runs) {
            bail!("--runs must be between 1 and {MAX_RUNS}");
        }
        if self.rows < self.runs as u64 || self.rows > MAX_ROWS {
            bail!(
                "--store ROWS must be between --runs ({}) and {MAX_ROWS}",
                self.runs
            );
        }
        if !(1..=20).contains(&self.rounds) {
            bail!("--rounds must be between 1 and 20");
        }
        if !(self.step_ms.is_finite() && self.step_ms > 0.0) {
            bail!("--step-ms must be a positive number of milliseconds");
        }
        Ok(())
    }

    fn steps_per_run(&self) -> i64 {
        (self.rows / self.runs as u64) as i64
    }

    /// The URL, and the file to remove afterwards when it is ours.
    fn url(&self) -> (String, Option<PathBuf>) {
        match &self.db {
            Some(url) => (url.clone(), None),
            None => {
                let path = PathBuf::from(format!(
                    "runs/bench-store-{}x{}.sqlite",
                    self.runs,
                    self.steps_per_run()
                ));
                (ddlab_store::sqlite_url(&path), Some(path))
            }
        }
    }
}

pub fn run(b: StoreBench) -> Result<()> {
    b.check()?;
    let (url, own_file) = b.url();
    let store = SyncStore::open(&url, OpenMode::Create)?;
    ensure_built(&store, &b)?;
    let timings = time_rounds(&store, &url, &b)?;
    print_timings(&b, &url, &timings);
    store.block(store.store().close());
    match own_file {
        Some(path) if !b.keep => {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
        _ => eprintln!("kept {url}: a next call with the same sizes reuses it"),
    }
    Ok(())
}

/// Builds the sweep unless a store of these sizes is already there (--keep).
fn ensure_built(store: &SyncStore, b: &StoreBench) -> Result<()> {
    let s = store.store();
    if let Ok(sweep) = store.block(s.sweep(SWEEP)) {
        let runs = store.block(s.runs(Some(sweep.id)))?;
        let complete =
            runs.len() == b.runs && runs.iter().all(|r| r.steps_done == b.steps_per_run());
        if complete {
            eprintln!(
                "reusing the {} runs of `{SWEEP}` already in the store",
                runs.len()
            );
            return Ok(());
        }
        bail!(
            "the store already holds a `{SWEEP}` sweep of other sizes ({} runs); give another --db",
            runs.len()
        );
    }
    build(store, b)
}

/// One run's config: schedule × T × seed, so the report groups them as a sweep would.
fn config(i: usize) -> RunConfig {
    RunConfig {
        schedule: [ScheduleKind::Linear, ScheduleKind::Cosine][i % 2],
        t: [100, 250, 1000][(i / 2) % 3],
        seed: (i / 6) as u64,
        ..Default::default()
    }
}

fn build(store: &SyncStore, b: &StoreBench) -> Result<()> {
    let s = store.store();
    let sweep =
        store.block(s.upsert_sweep(SWEEP, "synthetic loss curves (ddlab bench --store)", ""))?;
    let steps = b.steps_per_run();
    let bar = ProgressBar::new(b.runs as u64);
    bar.set_style(bar_style());
    bar.set_prefix("building");
    let started = Instant::now();
    for i in 0..b.runs {
        let cfg = config(i);
        let run = store.block(s.ensure_run(&NewRun {
            sweep_id: Some(sweep.id),
            name: format!("{} T={} seed={}", cfg.schedule, cfg.t, cfg.seed),
            config_hash: cfg.config_hash(),
            config_json: serde_json::to_string(&cfg)?,
            dataset: "shapes".into(),
            model: "tiny".into(),
            schedule: cfg.schedule.to_string(),
            timesteps: cfg.t as i64,
            seed: cfg.seed as i64,
            steps_total: steps,
        }))?;
        store.block(s.fill_synthetic_loss(run.id, steps))?;
        let nll = 2.0 + (i % 7) as f64 * 0.1;
        store.block(s.record_eval(&NewEval {
            run_id: run.id,
            name: "nll_bpd",
            step: steps,
            method: "synthetic",
            value: Some(nll),
            details_json: "{}",
        }))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    eprintln!(
        "built {} runs × {steps} loss rows in {:.0} s",
        b.runs,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Seconds of each measurement, one entry per round.
#[derive(Default)]
struct Timings {
    runs: Vec<f64>,
    first_paint: Vec<f64>,
    refresh: Vec<f64>,
    report: Vec<f64>,
    record_cost: Vec<f64>,
}

/// Rounds alternate the measurements, so a slow minute of the machine touches all of them.
fn time_rounds(store: &SyncStore, url: &str, b: &StoreBench) -> Result<Timings> {
    let mut t = Timings::default();
    let out = tempfile::tempdir()?;
    for round in 0..b.rounds {
        eprintln!("round {}/{}", round + 1, b.rounds);
        t.runs.push(time_command(&["runs", "--db", url])?);
        let (first, refresh) = time_dashboard(store, url)?;
        t.first_paint.push(first);
        t.refresh.push(refresh);
        let dir = out.path().join(format!("r{round}"));
        let dir = dir.to_string_lossy();
        t.report.push(time_command(&[
            "report", "--sweep", SWEEP, "--db", url, "--out", &dir,
        ])?);
        t.record_cost.push(record_cost(store, b.step_ms)?);
    }
    Ok(t)
}

/// Wall seconds of `ddlab ARGS` as a user runs it (a new process, output discarded).
fn time_command(args: &[&str]) -> Result<f64> {
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let out = Command::new(exe)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "`ddlab {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(seconds)
}

/// The dashboard at 120×40 from a fresh read-only connection: the first paint (connect, load,
/// draw), then the median of three refreshes with the selected run's curve in the request.
fn time_dashboard(store: &SyncStore, url: &str) -> Result<(f64, f64)> {
    let rt = store.runtime();
    let started = Instant::now();
    let reader = rt.block_on(Store::open(url, OpenMode::ReadOnly))?;
    let mut app = App::new(
        AppConfig {
            source: reader.display_url(),
            refresh: Duration::from_secs(1),
            filter: String::new(),
            images: ImageBackend::HalfBlock(ddlab_tui::halfblock::ColorMode::TrueColor),
            images_note: "half blocks (bench)".into(),
        },
        Rect::new(0, 0, 120, 40),
    );
    let mut loader = Loader::default();
    let mut terminal = Terminal::new(TestBackend::new(120, 40))?;
    let snap = rt.block_on(loader.load(&reader, &app.request()))?;
    app.apply(Ok(snap));
    ddlab_tui::ui::render(&mut terminal, &app)?;
    let first = started.elapsed().as_secs_f64();
    let mut refreshes = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let snap = rt.block_on(loader.load(&reader, &app.request()))?;
        app.apply(Ok(snap));
        ddlab_tui::ui::render(&mut terminal, &app)?;
        refreshes.push(started.elapsed().as_secs_f64());
    }
    rt.block_on(reader.close());
    refreshes.sort_by(f64::total_cmp);
    Ok((first, refreshes[1]))
}

/// The share of a `step_ms` training step spent recording it: one 5-second flush of loss, lr
/// and grad-norm rows (as the runner's buffer writes them) into a probe run of this store,
/// divided by the steps it holds. The probe run is deleted after.
fn record_cost(store: &SyncStore, step_ms: f64) -> Result<f64> {
    let s = store.store();
    let probe = store.block(s.ensure_run(&NewRun {
        sweep_id: None,
        name: "bench-store recording probe".into(),
        config_hash: format!("probe-{}", std::process::id()),
        config_json: "{}".into(),
        dataset: "shapes".into(),
        model: "tiny".into(),
        schedule: "linear".into(),
        timesteps: 100,
        seed: 0,
        steps_total: 1_000_000,
    }))?;
    let steps_per_flush = (5000.0 / step_ms).ceil() as i64;
    let mut spent = Duration::ZERO;
    let flushes = 5;
    for f in 0..flushes {
        let rows: Vec<MetricRow> = (1..=steps_per_flush)
            .flat_map(|k| {
                let step = f * steps_per_flush + k;
                ["loss", "lr", "grad_norm"].map(|name| MetricRow {
                    run_id: probe.id,
                    step,
                    name: name.into(),
                    value: Some(1.0 / step as f64),
                    wall_time: step as f64,
                })
            })
            .collect();
        let started = Instant::now();
        store.block(s.insert_metrics(&rows))?;
        store.block(s.progress(probe.id, f * steps_per_flush, None))?;
        spent += started.elapsed();
    }
    store
        .block(s.delete_run(probe.id))
        .context("removing the recording probe")?;
    let per_step_ms = spent.as_secs_f64() * 1000.0 / (flushes * steps_per_flush) as f64;
    Ok(per_step_ms / step_ms)
}

fn range(v: &[f64], scale: f64, digits: usize) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min) * scale;
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max) * scale;
    format!("{lo:.digits$}–{hi:.digits$}")
}

fn print_timings(b: &StoreBench, url: &str, t: &Timings) {
    let redacted = ddlab_store::redact(url);
    println!(
        "store {redacted}: {} runs × {} loss rows ({} rows), {} alternating rounds",
        b.runs,
        b.steps_per_run(),
        b.runs as u64 * b.steps_per_run() as u64,
        b.rounds
    );
    println!("  ddlab runs               {} s", range(&t.runs, 1.0, 2));
    println!(
        "  dashboard first paint    {} s",
        range(&t.first_paint, 1.0, 2)
    );
    println!("  dashboard refresh        {} s", range(&t.refresh, 1.0, 2));
    println!("  ddlab report             {} s", range(&t.report, 1.0, 1));
    println!(
        "  recording ({} ms step)    {} %",
        b.step_ms,
        range(&t.record_cost, 100.0, 3)
    );
}
