//! The dashboard rendered into ratatui's `TestBackend` from real SQLite stores, loaded through
//! the same [`Loader`] the live app uses, and compared with the committed snapshots in
//! `tests/snapshots/` (`INSTA_UPDATE=always cargo test -p ddlab-tui` rewrites them; review the
//! diff). The temporary directory and wall-clock times are filtered out; run ids come from a
//! fresh database, so they are the same on every run and stay in.

use ddlab_store::{
    MetricRow, NewEval, NewRun, NewSample, RunStatus, Store, SweepAxes, WorkerInfo, sqlite_url,
};
use ddlab_tui::action::{Action, Mode};
use ddlab_tui::halfblock::ColorMode;
use ddlab_tui::images::{ImageBackend, Picture};
use ddlab_tui::layout::Tab;
use ddlab_tui::loader::ChartKind;
use ddlab_tui::loader::Loader;
use ddlab_tui::{App, AppConfig, ui};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;
use ratatui::style::Color;
use std::time::{Duration, Instant};

const SPEC: &str = r#"[sweep]
name = "quickstart"
description = "linear vs cosine noise schedule at T = 100 and T = 1000"

[base]
dataset = "shapes"
model = "small"
steps = 1500
lr = 1e-3

[grid]
schedule = ["linear", "cosine"]
T = [100, 1000]
"#;

struct Fixture {
    rt: tokio::runtime::Runtime,
    store: Store,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(&dir.path().join("ddlab.sqlite"));
        let store = rt.block_on(Store::connect(&url, true)).unwrap();
        Fixture { rt, store, dir }
    }

    /// An app of this size, loaded until what it asks for is what it has.
    fn app(&self, w: u16, h: u16, filter: &str) -> (App, Loader) {
        let app = App::new(
            AppConfig {
                source: self.store.display_url(),
                refresh: Duration::from_secs(1),
                filter: filter.into(),
                images: ImageBackend::HalfBlock(ColorMode::TrueColor),
                images_note: "half blocks (tests)".into(),
            },
            Rect::new(0, 0, w, h),
        );
        let mut loader = Loader::default();
        let mut app = app;
        self.settle(&mut app, &mut loader);
        (app, loader)
    }

    /// Loads as the live loader thread would after each change of request.
    fn settle(&self, app: &mut App, loader: &mut Loader) {
        for _ in 0..5 {
            let req = app.request();
            let snap = self.rt.block_on(loader.load(&self.store, &req)).unwrap();
            app.apply(Ok(snap));
            if app.request() == req {
                return;
            }
        }
        panic!("the request did not settle");
    }

    fn act(&self, app: &mut App, loader: &mut Loader, actions: &[Action]) {
        for a in actions {
            app.update(*a);
        }
        self.settle(app, loader);
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

fn render(app: &App) -> String {
    terminal(app).backend().to_string()
}

fn terminal(app: &App) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(app.size.width, app.size.height)).unwrap();
    ui::render(&mut t, app).unwrap();
    t
}

/// Snapshot with the temporary directory and the wall-clock times filtered out.
macro_rules! snap {
    ($fx:expr, $name:expr, $app:expr) => {{
        let dir = $fx.dir.path().display().to_string();
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(&regex_escape(&dir), "[TMP]");
        // Same width as the time, so the panels' borders stay where they are.
        settings.add_filter(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "YYYY-MM-DD hh:mm:ss");
        settings.bind(|| insta::assert_snapshot!($name, render($app)));
    }};
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$#&-~".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// A deterministic, plausible loss curve.
fn loss_at(step: i64, floor: f64) -> f64 {
    floor + 0.9 * (-(step as f64) / 300.0).exp() + 0.01 * ((step as f64) * 0.7).sin()
}

fn loss_rows(run_id: i64, steps: std::ops::RangeInclusive<i64>, floor: f64) -> Vec<MetricRow> {
    steps
        .map(|s| MetricRow {
            run_id,
            step: s,
            name: "loss".into(),
            value: Some(loss_at(s, floor)),
            wall_time: 1.7e9 + s as f64,
        })
        .collect()
}

fn metric(run_id: i64, step: i64, name: &str, value: f64) -> MetricRow {
    MetricRow {
        run_id,
        step,
        name: name.into(),
        value: Some(value),
        wall_time: 1.7e9 + step as f64,
    }
}

/// A 24×24 grid of four coloured 12×12 tiles, as PNG.
fn tiny_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(24, 24, |x, y| match (x < 12, y < 12) {
        (true, true) => image::Rgb([220, 40, 40]),
        (false, true) => image::Rgb([40, 200, 60]),
        (true, false) => image::Rgb([40, 60, 220]),
        (false, false) => image::Rgb([240, 240, 240]),
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn sample(run_id: i64, step: i64, png: Vec<u8>) -> NewSample {
    NewSample {
        run_id,
        step,
        sampler: "ddim".into(),
        sample_steps: 50,
        prompt: None,
        guidance: None,
        guidance_scale: None,
        count: 4,
        width: 24,
        height: 24,
        png,
    }
}

fn worker() -> WorkerInfo {
    WorkerInfo {
        host: "node-a".into(),
        worker: "node-a:4242".into(),
        slurm_job: None,
        slurm_task: None,
    }
}

/// A worker of task 1 of the Slurm array job 73125.
fn slurm_worker() -> WorkerInfo {
    WorkerInfo {
        host: "gpu-07".into(),
        worker: "gpu-07:918".into(),
        slurm_job: Some("73125".into()),
        slurm_task: Some(1),
    }
}

struct Ids {
    completed: i64,
    running: i64,
    failed: i64,
    standalone: i64,
}

/// The quickstart sweep in the middle of its work: one run completed with evals and samples,
/// one running (in a Slurm array task, on another machine), one failed, one pending; plus a
/// standalone run.
fn running_sweep(fx: &Fixture) -> Ids {
    let s = &fx.store;
    fx.block(async {
        let sweep = s
            .upsert_sweep(
                "quickstart",
                "linear vs cosine noise schedule at T = 100 and T = 1000",
                SPEC,
            )
            .await
            .unwrap();
        // As the runner records them at registration (in the order the TOML table gave them).
        let axes = SweepAxes {
            grid_keys: vec!["T".into(), "schedule".into()],
            base_keys: ["dataset", "lr", "model", "steps"]
                .map(String::from)
                .to_vec(),
        };
        s.set_sweep_axes(sweep.id, &axes).await.unwrap();
        let mut ids = Vec::new();
        for (schedule, t) in [
            ("linear", 100),
            ("linear", 1000),
            ("cosine", 100),
            ("cosine", 1000),
        ] {
            let name = format!("schedule={schedule},T={t}");
            let config = serde_json::json!({
                "dataset": "shapes", "model": "small", "schedule": schedule, "T": t,
                "steps": 1500, "batch_size": 32, "lr": 0.001, "seed": 0, "ema_decay": 0.999,
                "data_dir": null,
            });
            let run = s
                .ensure_run(&NewRun {
                    sweep_id: Some(sweep.id),
                    name,
                    config_hash: format!("{schedule}-{t}"),
                    config_json: config.to_string(),
                    dataset: "shapes".into(),
                    model: "small".into(),
                    schedule: schedule.into(),
                    timesteps: t,
                    seed: 0,
                    steps_total: 1500,
                })
                .await
                .unwrap();
            ids.push(run.id);
        }
        let (completed, running, failed, pending) = (ids[0], ids[1], ids[2], ids[3]);

        s.start_run(completed, "cpu", &worker()).await.unwrap();
        s.insert_metrics(&loss_rows(completed, 1..=1500, 0.03))
            .await
            .unwrap();
        s.insert_metrics(&[metric(completed, 1500, "steps_per_s", 6.5)])
            .await
            .unwrap();
        s.progress(completed, 1500, None).await.unwrap();
        s.insert_sample(&sample(completed, 1500, tiny_png()))
            .await
            .unwrap();
        s.upsert_eval(completed, "nll_bpd", Some(3.412), "{}")
            .await
            .unwrap();
        s.upsert_eval(completed, "nll_bpd_stderr", Some(0.051), "{}")
            .await
            .unwrap();
        s.finish_run(completed, RunStatus::Completed, None)
            .await
            .unwrap();

        s.start_run(running, "cuda:0", &slurm_worker())
            .await
            .unwrap();
        s.insert_metrics(&loss_rows(running, 1..=600, 0.05))
            .await
            .unwrap();
        s.insert_metrics(&[
            metric(running, 580, "steps_per_s", 3.8),
            metric(running, 600, "steps_per_s", 4.0),
        ])
        .await
        .unwrap();
        s.progress(running, 600, None).await.unwrap();

        s.start_run(failed, "cpu", &worker()).await.unwrap();
        s.insert_metrics(&loss_rows(failed, 1..=412, 0.04))
            .await
            .unwrap();
        s.progress(failed, 412, None).await.unwrap();
        s.finish_run(
            failed,
            RunStatus::Failed,
            Some("training diverged at step 412: the loss is NaN (try a lower lr or grad_clip)"),
        )
        .await
        .unwrap();

        let standalone = s
            .ensure_run(&NewRun {
                sweep_id: None,
                name: "train-sigmoid".into(),
                config_hash: "lone".into(),
                config_json: serde_json::json!({"schedule": "sigmoid", "T": 500, "steps": 200})
                    .to_string(),
                dataset: "shapes".into(),
                model: "tiny".into(),
                schedule: "sigmoid".into(),
                timesteps: 500,
                seed: 1,
                steps_total: 200,
            })
            .await
            .unwrap()
            .id;
        let _ = pending;
        Ids {
            completed,
            running,
            failed,
            standalone,
        }
    })
}

#[test]
fn empty_database() {
    let fx = Fixture::new();
    for (w, h) in [(80, 24), (160, 48)] {
        let (app, _) = fx.app(w, h, "");
        snap!(fx, format!("empty_{w}x{h}"), &app);
    }
}

#[test]
fn running_sweep_with_progress_and_eta() {
    let fx = Fixture::new();
    let ids = running_sweep(&fx);
    for (w, h) in [(80, 24), (160, 48)] {
        let (mut app, mut loader) = fx.app(w, h, "");
        // Compare the completed run, then select the running one: two curves.
        fx.act(
            &mut app,
            &mut loader,
            &[Action::ToggleCompare, Action::Down],
        );
        assert_eq!(app.selected, Some(ids.running));
        assert_eq!(app.compared, vec![ids.completed]);
        assert_eq!(app.chart.series.len(), 2);
        let running = app.selected_run().unwrap();
        // 900 steps left at 4 steps/s.
        assert_eq!(running.eta_secs(), Some(225.0));
        snap!(fx, format!("running_sweep_{w}x{h}"), &app);
    }
}

#[test]
fn failed_run_shows_its_error() {
    let fx = Fixture::new();
    let ids = running_sweep(&fx);
    let (mut app, mut loader) = fx.app(80, 24, "");
    fx.act(
        &mut app,
        &mut loader,
        &[Action::Down, Action::Down, Action::NextTab, Action::NextTab],
    );
    assert_eq!(app.selected, Some(ids.failed));
    assert_eq!(app.tab, Tab::Details);
    snap!(fx, "failed_run_80x24", &app);

    let (mut app, mut loader) = fx.app(160, 48, "");
    fx.act(&mut app, &mut loader, &[Action::Down, Action::Down]);
    snap!(fx, "failed_run_160x48", &app);
    // The status is red wherever it appears.
    let t = terminal(&app);
    let buf = t.backend().buffer();
    let reds = (0..buf.area.height)
        .filter(|&y| {
            let row: String = (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect();
            row.find(" failed ").is_some_and(|i| {
                let x = row[..i + 1].chars().count() as u16;
                buf[(x, y)].fg == Color::Red
            })
        })
        .count();
    assert!(
        reds >= 2,
        "the failed status is red in the table and the details"
    );
}

#[test]
fn sample_grid_in_half_blocks() {
    let fx = Fixture::new();
    running_sweep(&fx);
    let (mut app, mut loader) = fx.app(80, 24, "");
    fx.act(&mut app, &mut loader, &[Action::NextTab]);
    assert_eq!(app.tab, Tab::Sample);
    snap!(fx, "sample_80x24", &app);
    // The 24×24 grid fills the panel's height (two pixels per row) in true colour; its
    // top-left tile is red.
    let Some(Picture::Cells(cells)) = app.sample.as_ref() else {
        panic!("a resampled grid in half blocks")
    };
    let image_rows = ddlab_tui::ui::sample::image_area(app.areas.sample).height;
    assert_eq!(cells.height, image_rows);
    assert_eq!(
        cells.cells[0],
        (Color::Rgb(220, 40, 40), Color::Rgb(220, 40, 40))
    );
    let t = terminal(&app);
    let buf = t.backend().buffer();
    let drawn = buf.content().iter().filter(|c| c.symbol() == "▀").count();
    assert_eq!(drawn, cells.cells.len());
}

#[test]
fn corrupt_sample_is_reported() {
    let fx = Fixture::new();
    let ids = running_sweep(&fx);
    fx.block(
        fx.store
            .insert_sample(&sample(ids.running, 500, b"not a png".to_vec())),
    )
    .unwrap();
    let (mut app, mut loader) = fx.app(80, 24, "");
    fx.act(&mut app, &mut loader, &[Action::Down, Action::NextTab]);
    assert!(render(&app).contains("cannot decode the sample grid"));
}

#[test]
fn filter_sort_and_help() {
    let fx = Fixture::new();
    let ids = running_sweep(&fx);
    let (mut app, mut loader) = fx.app(80, 24, "");
    let mut typing = vec![Action::OpenFilter];
    typing.extend("schedule=cosine".chars().map(Action::FilterChar));
    fx.act(&mut app, &mut loader, &typing);
    snap!(fx, "filter_typing_80x24", &app);
    fx.act(
        &mut app,
        &mut loader,
        &[Action::FilterApply, Action::CycleSort],
    );
    assert_eq!(app.visible_runs, 2);
    assert_eq!(app.selected, Some(ids.failed));
    snap!(fx, "filter_cosine_sorted_by_name_80x24", &app);

    // The initial filter of `--sweep` hides runs outside it.
    let (app, _) = fx.app(80, 24, "sweep=quickstart");
    assert_eq!(app.visible_runs, 4);
    assert!(!render(&app).contains("train-sigmoid"));
    let (app, _) = fx.app(80, 24, "");
    assert_eq!(app.visible_runs, 5);
    let (app, _) = fx.app(80, 24, "id=5");
    assert_eq!(app.selected, Some(ids.standalone));
    assert!(render(&app).contains("train-sigmoid"));

    let (mut app, mut loader) = fx.app(80, 24, "");
    fx.act(&mut app, &mut loader, &[Action::ToggleHelp]);
    snap!(fx, "help_80x24", &app);
}

#[test]
fn unchanged_store_does_not_redraw() {
    let fx = Fixture::new();
    let ids = running_sweep(&fx);
    let (mut app, mut loader) = fx.app(120, 40, "");
    let req = app.request();
    let again = fx.block(loader.load(&fx.store, &req)).unwrap();
    assert!(!app.apply(Ok(again)), "nothing changed, nothing to draw");

    // The sweep writes: new loss rows and progress.
    fx.block(async {
        fx.store
            .insert_metrics(&loss_rows(ids.completed, 1501..=1510, 0.03))
            .await
            .unwrap();
        fx.store.progress(ids.completed, 1510, None).await.unwrap();
    });
    let next = fx.block(loader.load(&fx.store, &req)).unwrap();
    assert!(app.apply(Ok(next)));

    // A failed load keeps the data and shows the error once.
    assert!(app.apply(Err("database error: disk I/O error".into())));
    assert!(!app.apply(Err("database error: disk I/O error".into())));
    assert!(app.snapshot.is_some());
    assert!(render(&app).contains("⚠ database error: disk I/O error"));
}

#[test]
fn million_point_curve_is_downsampled_in_sql() {
    let fx = Fixture::new();
    let run = fx
        .block(fx.store.ensure_run(&NewRun {
            sweep_id: None,
            name: "long".into(),
            config_hash: "long".into(),
            config_json: "{}".into(),
            dataset: "shapes".into(),
            model: "tiny".into(),
            schedule: "linear".into(),
            timesteps: 1000,
            seed: 0,
            steps_total: 1_000_000,
        }))
        .unwrap()
        .id;
    let t0 = Instant::now();
    const N: i64 = 1_000_000;
    // loss = step, so each bucket's average is its middle step. The first 20k rows go through
    // `insert_metrics` in batches as a run writes them; a million that way would make this
    // test slow, so the other 980k are generated inside SQLite in one statement.
    const VIA_API: i64 = 20_000;
    for start in (0..VIA_API).step_by(10_000) {
        let rows: Vec<MetricRow> = (start..start + 10_000)
            .map(|s| MetricRow {
                run_id: run,
                step: s,
                name: "loss".into(),
                value: Some(s as f64),
                wall_time: 0.0,
            })
            .collect();
        fx.block(fx.store.insert_metrics(&rows)).unwrap();
    }
    fx.block(
        sqlx::query(
            "INSERT INTO metrics (run_id, step, name, value, wall_time)
             WITH RECURSIVE s(n) AS (SELECT $2 UNION ALL SELECT n + 1 FROM s WHERE n + 1 < $3)
             SELECT $1, n, 'loss', n, 0.0 FROM s",
        )
        .bind(run)
        .bind(VIA_API)
        .bind(N)
        .execute(fx.store.pool()),
    )
    .unwrap();
    // One bucket over everything: the mean of 0..N proves every row is there.
    let all = fx.block(fx.store.metric_series(run, "loss", 1)).unwrap();
    assert_eq!(all, vec![(0, (N - 1) as f64 / 2.0)]);
    let inserted = t0.elapsed();

    let (app, mut loader) = fx.app(160, 48, "");
    let req = app.request();
    assert_eq!(req.series_runs, vec![run]);
    let t1 = Instant::now();
    let snap = fx.block(loader.load(&fx.store, &req)).unwrap();
    let loaded = t1.elapsed();
    let series = &snap.series[&run];
    assert!(
        series.len() <= req.max_points + 1,
        "{} points",
        series.len()
    );
    assert!(
        series.len() >= req.max_points / 2,
        "{} points",
        series.len()
    );
    let bucket = (N as f64 / req.max_points as f64).ceil();
    let (s0, v0) = series[0];
    assert_eq!(s0, 0.0);
    assert!(
        (v0 - (bucket - 1.0) / 2.0).abs() < 1e-6,
        "first bucket average {v0}"
    );
    assert_eq!(
        series.last().unwrap().0,
        (N as f64 / bucket).floor() * bucket
    );

    let t2 = Instant::now();
    let mut app = app;
    app.apply(Ok(snap));
    let text = render(&app);
    let drawn = t2.elapsed();
    assert!(text.contains("993k"), "the x axis reaches the last bucket");
    // For information only (`--nocapture`): timings are not asserted.
    eprintln!("10^6 rows: insert {inserted:?}, load {loaded:?}, prepare+draw {drawn:?}");
}

#[test]
fn missing_database_is_an_error_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs").join("ddlab.sqlite");
    let err = ddlab_tui::run(&sqlite_url(&path), ddlab_tui::TuiOptions::default()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("does not exist"), "{msg}");
    assert!(!msg.contains('\n'), "one sentence: {msg}");
    assert!(!path.parent().unwrap().exists(), "nothing was created");
}

#[test]
fn unknown_sweep_is_an_error_before_the_screen_is_touched() {
    let fx = Fixture::new();
    running_sweep(&fx);
    let url = sqlite_url(&fx.dir.path().join("ddlab.sqlite"));
    let options = ddlab_tui::TuiOptions {
        sweep: Some("no-such-sweep".into()),
        ..Default::default()
    };
    let msg = format!("{:#}", ddlab_tui::run(&url, options).unwrap_err());
    assert!(msg.contains("no-such-sweep"), "{msg}");
}

#[test]
fn silent_worker_shows_as_stalled_without_an_eta() {
    let fx = Fixture::new();
    let ids = running_sweep(&fx);
    let (app, _) = fx.app(120, 40, "status=running");
    assert_eq!(app.selected_run().unwrap().eta_secs(), Some(225.0));
    assert!(!render(&app).contains("stalled"));

    // The worker's last heartbeat was ten minutes ago: it is probably dead.
    let old = "2000-01-01T00:00:00.000Z";
    fx.block(
        sqlx::query("UPDATE runs SET heartbeat_at = $1 WHERE id = $2")
            .bind(old)
            .bind(ids.running)
            .execute(fx.store.pool()),
    )
    .unwrap();
    let (app, _) = fx.app(120, 40, "status=stalled");
    let run = app
        .selected_run()
        .expect("the stalled run passes `status=stalled`");
    assert_eq!(run.id, ids.running);
    assert!(run.stalled);
    assert_eq!(run.eta_secs(), None);
    let text = render(&app);
    assert!(text.contains("1 stalled"), "the sweep heading counts it");
    assert!(text.contains("stalled    "), "the status column says so");
}

#[test]
fn log_scale_and_smoothing_change_the_curves_not_the_data() {
    let fx = Fixture::new();
    let ids = running_sweep(&fx);
    let (mut app, mut loader) = fx.app(120, 40, "");
    assert_eq!(app.selected, Some(ids.completed));
    let linear = app.chart.series[0].points.clone();
    fx.act(&mut app, &mut loader, &[Action::ToggleLog]);
    let log = &app.chart.series[0].points;
    assert_eq!(log.len(), linear.len());
    for (a, b) in linear.iter().zip(log) {
        assert_eq!(a.0, b.0);
        assert!((a.1.log10() - b.1).abs() < 1e-12);
    }
    assert!(render(&app).contains("(log)"));
    fx.act(
        &mut app,
        &mut loader,
        &[Action::ToggleLog, Action::ToggleSmooth],
    );
    let smooth = &app.chart.series[0].points;
    let roughness =
        |p: &[(f64, f64)]| -> f64 { p.windows(2).map(|w| (w[1].1 - w[0].1).abs()).sum() };
    assert!(roughness(smooth) < roughness(&linear));
    assert!(render(&app).contains("(EMA)"));
}

#[test]
fn selected_row_stays_readable() {
    let fx = Fixture::new();
    running_sweep(&fx);
    let (mut app, mut loader) = fx.app(160, 48, "");
    // The pending run: grey status, grey bar and dashes, on the selection's grey background.
    fx.act(
        &mut app,
        &mut loader,
        &[Action::Down, Action::Down, Action::Down],
    );
    assert_eq!(
        app.selected_run().map(|r| r.status),
        Some(RunStatus::Pending)
    );
    let t = terminal(&app);
    let buf = t.backend().buffer();
    let y = (0..buf.area.height)
        .find(|&y| {
            let row: String = (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect();
            row.contains("schedule=cosine,T=1000") && row.contains("pending")
        })
        .expect("the pending run's row");
    let mut checked = 0;
    for x in 1..buf.area.width - 1 {
        let c = &buf[(x, y)];
        assert_eq!(c.bg, ddlab_tui::ui::runs_table::SELECTED_BG, "column {x}");
        if c.symbol() != " " {
            assert_ne!(c.fg, c.bg, "`{}` at column {x} is invisible", c.symbol());
            checked += 1;
        }
    }
    assert!(checked > 40, "{checked} cells checked");
}

#[test]
fn sweep_without_recorded_axes_varies_what_its_runs_differ_in() {
    let fx = Fixture::new();
    let ids = running_sweep(&fx);
    // As a sweep registered by the previous release: no axes recorded.
    fx.block(sqlx::query("UPDATE sweeps SET axes_json = NULL").execute(fx.store.pool()))
        .unwrap();
    let mut loader = Loader::default();
    let snap = fx
        .block(loader.load(&fx.store, &Default::default()))
        .unwrap();
    let mut grid = snap.sweeps[0].grid_keys.clone();
    grid.sort();
    assert_eq!(grid, ["T", "schedule"]);
    assert!(snap.sweeps[0].base_keys.is_empty());
    assert!(snap.runs.iter().any(|r| r.id == ids.running));
}

#[test]
fn deleted_database_is_reported_and_a_recreated_one_reopened() {
    let fx = Fixture::new();
    running_sweep(&fx);
    let path = fx.dir.path().join("ddlab.sqlite");
    let url = sqlite_url(&path);
    let mut store = fx.block(Store::open_read_only(&url)).unwrap();
    let mut loader = Loader::default();
    let req = Default::default();
    let before = fx
        .block(loader.load_following_file(&mut store, &req))
        .unwrap();
    assert_eq!(before.runs.len(), 5);
    // Loaded now: once the file is gone, the fixture's own pool would create an empty one.
    let (mut app, _) = fx.app(120, 30, "");

    // Deleted (with its WAL files) while the dashboard and the fixture still hold it open.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let err = fx
        .block(loader.load_following_file(&mut store, &req))
        .unwrap_err();
    assert!(err.contains("was deleted"), "{err}");
    app.apply(Err(err));
    assert!(render(&app).contains("was deleted"), "the header says so");

    // A new sweep recreates the file: the dashboard shows its runs, not the old ones.
    let fresh = fx.block(Store::connect(&url, true)).unwrap();
    let run = fx
        .block(fresh.ensure_run(&NewRun {
            sweep_id: None,
            name: "after-recreation".into(),
            config_hash: "h".into(),
            config_json: "{}".into(),
            dataset: "shapes".into(),
            model: "small".into(),
            schedule: "linear".into(),
            timesteps: 100,
            seed: 0,
            steps_total: 10,
        }))
        .unwrap();
    let after = fx
        .block(loader.load_following_file(&mut store, &req))
        .unwrap();
    let names: Vec<_> = after.runs.iter().map(|r| (r.id, r.name.as_str())).collect();
    assert_eq!(names, [(run.id, "after-recreation")]);
}

/// Issue 19: a pruned run shows where and why it stopped, and `d` puts the compared runs side
/// by side with only the keys that differ.
#[test]
fn pruned_run_and_the_diff_of_compared_runs() {
    let fx = Fixture::new();
    let ids = running_sweep(&fx);
    let pending = ids.failed + 1;
    fx.block(async {
        let s = &fx.store;
        s.start_run(pending, "cpu", &worker()).await.unwrap();
        s.insert_metrics(&loss_rows(pending, 1..=500, 0.09))
            .await
            .unwrap();
        s.progress(pending, 500, None).await.unwrap();
        let sweep = s.sweep("quickstart").await.unwrap();
        let rung = ddlab_store::NewRung {
            sweep_id: sweep.id,
            run_id: pending,
            rung: 500,
            metric: "loss",
            value: Some(0.0912),
            group_key: "",
            trial_key: "t",
        };
        s.reach_rung(&rung, |_| ddlab_store::RungDecision {
            go_on: false,
            rank: 2,
            trials: 2,
            kept: 1,
            threshold: Some(0.0532),
            reason: "loss 0.09120 ranks 2 of 2 at step 500: the best 1 go on (keep 0.33), threshold 0.05320".into(),
        })
        .await
        .unwrap();
    });
    let (mut app, mut loader) = fx.app(120, 40, "");
    // The pruned run (last of the sweep) and the completed one, compared.
    app.selected = Some(ids.completed);
    fx.act(&mut app, &mut loader, &[Action::ToggleCompare]);
    app.selected = Some(pending);
    fx.act(&mut app, &mut loader, &[Action::ToggleCompare]);
    assert_eq!(app.compared, [ids.completed, pending]);
    let text = render(&app);
    assert!(text.contains("pruned at step 500: loss 0.09120"), "{text}");
    snap!(fx, "pruned_run_details_120x40", &app);
    fx.act(&mut app, &mut loader, &[Action::ToggleDiff]);
    let text = render(&app);
    assert!(
        text.contains("pruned@500") && text.contains("schedule"),
        "{text}"
    );
    assert!(
        !text.contains("batch_size"),
        "equal keys are left out:\n{text}"
    );
    snap!(fx, "diff_of_compared_120x40", &app);
    let (mut small, mut loader) = fx.app(80, 24, "");
    fx.act(
        &mut small,
        &mut loader,
        &[
            Action::ToggleCompare,
            Action::Down,
            Action::ToggleCompare,
            Action::ToggleDiff,
            Action::NextTab,
            Action::NextTab,
        ],
    );
    snap!(fx, "diff_of_compared_80x24", &small);
}

/// Issue 17: `t` shows the compared runs' latest loss-by-t window against t/T.
#[test]
fn loss_by_t_view_of_the_compared_runs() {
    let fx = Fixture::new();
    let ids = running_sweep(&fx);
    fx.block(async {
        // The ε loss falls with t; run 2's (T = 1000) is higher at small t.
        for (run, t, scale) in [(ids.completed, 100, 1.0), (ids.running, 1000, 1.6)] {
            let rows: Vec<ddlab_store::LossBucketRow> = (0..10)
                .map(|b| ddlab_store::LossBucketRow {
                    run_id: run,
                    step: 500,
                    bucket: b,
                    buckets: 10,
                    t_lo: b * t / 10,
                    t_hi: (b + 1) * t / 10,
                    count: 40,
                    loss: Some(scale * 0.2 / (1.0 + b as f64)),
                    weighted_loss: None,
                    wall_time: 1.0,
                })
                .collect();
            fx.store.insert_loss_buckets(&rows).await.unwrap();
        }
    });
    let (mut app, mut loader) = fx.app(120, 40, "");
    app.selected = Some(ids.completed);
    fx.act(&mut app, &mut loader, &[Action::ToggleCompare]);
    app.selected = Some(ids.running);
    fx.act(
        &mut app,
        &mut loader,
        &[Action::ToggleCompare, Action::ToggleByT],
    );
    assert_eq!(app.chart.kind, ChartKind::LossByT);
    let xs: Vec<f64> = app.chart.series[0].points.iter().map(|p| p.0).collect();
    assert_eq!((xs[0], xs[9]), (0.05, 0.95), "bucket centres as t/T");
    let text = render(&app);
    assert!(text.contains("by t/T, latest window"), "{text}");
    snap!(fx, "loss_by_t_120x40", &app);
    // Back to the loss by step.
    fx.act(&mut app, &mut loader, &[Action::ToggleByT]);
    assert!(app.chart.kind == ChartKind::Loss && app.chart.series[0].points.len() > 10);
}

/// A grid laid out as core's `make_grid` lays one out: `count` tiles of `tile` pixels with a
/// one-pixel grey gutter, tile k in colour `colours[k % len]`.
fn layout_png(count: u32, tile: u32, colours: &[[u8; 3]]) -> (Vec<u8>, i64, i64) {
    let cols = (count as f64).sqrt().ceil() as u32;
    let rows = count.div_ceil(cols);
    let pitch = tile + 1;
    let (w, h) = (cols * pitch + 1, rows * pitch + 1);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let (cx, cy) = (x / pitch, y / pitch);
        let k = cy * cols + cx;
        if x % pitch == 0 || y % pitch == 0 || k >= count {
            image::Rgb([48, 48, 48])
        } else {
            image::Rgb(colours[k as usize % colours.len()])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    (out.into_inner(), w as i64, h as i64)
}

/// Issue 17: `i` lays out every run's newest grid by two keys of the sweep.
#[test]
fn grid_view_of_the_sweep() {
    let fx = Fixture::new();
    let ids = running_sweep(&fx);
    let colours = [[230, 60, 40], [40, 180, 90], [60, 80, 230], [230, 230, 60]];
    fx.block(async {
        // A 16-image grid for three runs of the sweep (the fourth, pending, has none yet).
        for (k, run) in [ids.completed, ids.running, ids.failed]
            .into_iter()
            .enumerate()
        {
            let mut shifted = colours;
            shifted.rotate_left(k);
            let (png, width, height) = layout_png(16, 12, &shifted);
            let grid = NewSample {
                count: 16,
                width,
                height,
                ..sample(run, 400, png)
            };
            fx.store.insert_sample(&grid).await.unwrap();
        }
    });
    let (mut app, mut loader) = fx.app(120, 40, "");
    fx.act(&mut app, &mut loader, &[Action::ToggleGrid]);
    assert_eq!(app.mode, Mode::Grid);
    let m = app.matrix.clone().expect("a matrix");
    // The sweep's axes in its order: T down the rows, schedule across.
    assert_eq!(m.row_key.as_deref(), Some("T"));
    assert_eq!(m.col_key.as_deref(), Some("schedule"));
    assert_eq!(m.rows, ["100", "1000"]);
    assert_eq!(m.cols, ["linear", "cosine"]);
    let pending = ids.failed + 1;
    assert_eq!(
        m.cells,
        [
            Some(ids.completed),
            Some(ids.failed),
            Some(ids.running),
            Some(pending)
        ]
    );
    assert_eq!(app.request().grid_runs.len(), 4);
    assert_eq!(app.grid_pictures.len(), 3, "three grids, one pending run");
    // Large cells: more than one tile per side, chosen to keep tiles readable.
    assert!(app.grid_side_shown >= 2, "{}", app.grid_side_shown);
    let text = render(&app);
    assert!(text.contains("no grid yet"), "{text}");
    assert!(text.contains("T↓ schedule→"), "{text}");
    snap!(fx, "grid_view_120x40", &app);

    // Down moves to T = 1000 in the same column; right to cosine.
    fx.act(
        &mut app,
        &mut loader,
        &[Action::GridMove { rows: 1, cols: 0 }],
    );
    assert_eq!(app.selected, Some(ids.running));
    fx.act(
        &mut app,
        &mut loader,
        &[Action::GridMove { rows: 0, cols: 1 }],
    );
    assert_eq!(app.selected, Some(pending));
    // One tile each, then the columns by nothing: schedule is held at the selection's.
    fx.act(&mut app, &mut loader, &[Action::FewerTiles; 8]);
    assert_eq!((app.grid_side, app.grid_side_shown), (Some(1), 1));
    fx.act(&mut app, &mut loader, &[Action::CycleGridCols]);
    let m = app.matrix.clone().unwrap();
    assert_eq!(m.col_key, None);
    assert_eq!(m.fixed, [("schedule".to_string(), "cosine".to_string())]);
    assert_eq!(m.cells, [Some(ids.failed), Some(pending)]);
    // Back to the dashboard.
    fx.act(&mut app, &mut loader, &[Action::ToggleGrid]);
    assert_eq!(app.mode, Mode::Normal);
    assert!(app.request().grid_runs.is_empty());

    let (mut small, mut loader) = fx.app(80, 24, "");
    fx.act(&mut small, &mut loader, &[Action::ToggleGrid]);
    assert_eq!(small.grid_pictures.len(), 3);
    snap!(fx, "grid_view_80x24", &small);
    // The filter narrows the matrix and returns to the grid view.
    let mut typing = vec![Action::OpenFilter];
    typing.extend("schedule=linear".chars().map(Action::FilterChar));
    typing.push(Action::FilterApply);
    fx.act(&mut small, &mut loader, &typing);
    assert_eq!(small.mode, Mode::Grid);
    let m = small.matrix.clone().unwrap();
    assert_eq!((m.row_key.as_deref(), m.col_key), (Some("T"), None));
}

/// Issue 17: `n` plots the NLL over training in the way each run's own evaluation was made,
/// and says so when the compared runs' ways differ.
#[test]
fn nll_over_training_of_the_compared_runs() {
    let fx = Fixture::new();
    let ids = running_sweep(&fx);
    let method = |images: u32| {
        format!("nll images={images} timesteps=50 variance=beta-tilde clip_x0=true seed=0")
    };
    fx.block(async {
        let s = &fx.store;
        let record = |run_id, step, images, value| {
            let m = method(images);
            async move {
                s.record_eval(&NewEval {
                    run_id,
                    name: "nll_bpd",
                    step,
                    method: &m,
                    value: Some(value),
                    details_json: "{}",
                })
                .await
                .unwrap()
            }
        };
        // The running run: eval_every = 200 with 256 images.
        for (step, v) in [(200, 5.1), (400, 4.4), (600, 4.1)] {
            record(ids.running, step, 256, v).await;
        }
        // The failed run with 128 images, and later a re-evaluation with 1024 (not its own).
        record(ids.failed, 400, 128, 4.6).await;
        // Timestamps have milliseconds: the re-evaluation is recorded after the run's own.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        record(ids.failed, 400, 1024, 4.5).await;
    });
    let (mut app, mut loader) = fx.app(120, 40, "");
    app.selected = Some(ids.running);
    fx.act(&mut app, &mut loader, &[Action::ToggleCompare]);
    app.selected = Some(ids.failed);
    fx.act(
        &mut app,
        &mut loader,
        &[Action::ToggleCompare, Action::ToggleNll],
    );
    let chart = &app.chart;
    assert_eq!(chart.kind, ChartKind::Nll);
    assert_eq!(
        chart.series[0].points,
        [(200.0, 5.1), (400.0, 4.4), (600.0, 4.1)]
    );
    // The failed run's own evaluation only: one point, not the re-evaluation.
    assert_eq!(chart.series[1].points, [(400.0, 4.6)]);
    assert!(chart.methods_differ);
    assert!(
        chart.series[0].label.ends_with("[images=256]"),
        "{}",
        chart.series[0].label
    );
    assert!(chart.series[1].label.ends_with("[images=128]"));
    let text = render(&app);
    assert!(text.contains("⚠ computed differently"), "{text}");
    snap!(fx, "nll_over_training_120x40", &app);
    // Alone, a run's curve has no warning; `n` again is the loss.
    fx.act(&mut app, &mut loader, &[Action::ClearCompare]);
    assert!(!app.chart.methods_differ);
    fx.act(&mut app, &mut loader, &[Action::ToggleNll]);
    assert_eq!(app.chart.kind, ChartKind::Loss);
}
