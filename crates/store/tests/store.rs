//! The store against a real SQLite file and, when `DDLAB_TEST_POSTGRES_URL` points at a server
//! (`.ci/run` starts one), a real PostgreSQL database created fresh for each test.

use ddlab_store::*;
use sqlx::Row;

mod common;
use common::postgres_store;
use std::collections::HashSet;
use std::time::Duration;

fn new_run(sweep_id: Option<i64>, hash: &str, schedule: &str, t: i64) -> NewRun {
    NewRun {
        sweep_id,
        name: format!("{schedule}-T{t}"),
        config_hash: hash.into(),
        config_json: format!("{{\"schedule\":\"{schedule}\",\"T\":{t}}}"),
        dataset: "shapes".into(),
        model: "tiny".into(),
        schedule: schedule.into(),
        timesteps: t,
        seed: 0,
        steps_total: 100,
    }
}

fn worker(n: usize) -> WorkerInfo {
    WorkerInfo {
        host: "testhost".into(),
        worker: format!("w{n}"),
        ..Default::default()
    }
}

async fn sqlite_store() -> (Store, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir.path().join("nested/dir/ddlab.sqlite"));
    (Store::connect(&url, true).await.unwrap(), url, dir)
}

async fn lifecycle(store: &Store) {
    let sweep = store
        .upsert_sweep("s1", "desc", "[sweep]\nname = \"s1\"")
        .await
        .unwrap();
    let again = store.upsert_sweep("s1", "desc", "[sweep]").await.unwrap();
    assert_eq!(sweep.id, again.id);
    assert_eq!(sweep.axes, None, "nothing recorded until the runner says");
    let axes = SweepAxes {
        grid_keys: vec!["schedule".into(), "T".into()],
        base_keys: vec!["steps".into()],
    };
    store.set_sweep_axes(sweep.id, &axes).await.unwrap();
    assert_eq!(store.sweep("s1").await.unwrap().axes, Some(axes.clone()));
    let again = store.upsert_sweep("s1", "desc2", "[sweep]").await.unwrap();
    assert_eq!(again.axes, Some(axes), "re-registering keeps them");
    assert!(
        store
            .set_sweep_axes(-1, &SweepAxes::default())
            .await
            .is_err()
    );
    assert_eq!(store.sweep("s1").await.unwrap().description, "desc2");
    assert!(
        store
            .sweep("nope")
            .await
            .unwrap_err()
            .to_string()
            .contains("no sweep named `nope`")
    );

    let a = store
        .ensure_run(&new_run(Some(sweep.id), "h1", "linear", 100))
        .await
        .unwrap();
    let a2 = store
        .ensure_run(&new_run(Some(sweep.id), "h1", "linear", 100))
        .await
        .unwrap();
    assert_eq!(a.id, a2.id, "same config in a sweep is the same run");
    let b = store
        .ensure_run(&new_run(Some(sweep.id), "h2", "cosine", 250))
        .await
        .unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(a.status(), RunStatus::Pending);

    store.start_run(a.id, "cpu", &worker(0)).await.unwrap();
    let rows: Vec<MetricRow> = (1..=1000)
        .flat_map(|s| {
            [("loss", 1.0 / s as f64), ("lr", 1e-4)].map(|(n, v)| MetricRow {
                run_id: a.id,
                step: s,
                name: n.into(),
                value: Some(v),
                wall_time: s as f64,
            })
        })
        .collect();
    store.insert_metrics(&rows).await.unwrap();
    // Re-recording the same steps is idempotent; a non-finite value is stored as NULL.
    store.insert_metrics(&rows[..10]).await.unwrap();
    store
        .insert_metrics(&[MetricRow {
            run_id: a.id,
            step: 1001,
            name: "loss".into(),
            value: Some(f64::NAN),
            wall_time: 0.0,
        }])
        .await
        .unwrap();
    let loss = store.metric_rows(a.id, "loss").await.unwrap();
    assert_eq!(loss.len(), 1001);
    assert_eq!(loss[1000], (1001, None));
    let series = store.metric_series(a.id, "loss", 100).await.unwrap();
    assert!(
        series.len() <= 101 && series.len() >= 90,
        "{}",
        series.len()
    );
    assert!(series[0].1 > series[series.len() - 1].1);
    assert_eq!(store.metric_names(a.id).await.unwrap(), vec!["loss", "lr"]);
    assert_eq!(
        store.delete_metrics_after(a.id, 500).await.unwrap(),
        501 + 500
    );
    assert_eq!(store.metric_rows(a.id, "loss").await.unwrap().len(), 500);

    store
        .progress(a.id, 500, Some("/ck/a.safetensors"))
        .await
        .unwrap();
    let png = vec![0x89, b'P', b'N', b'G', 1, 2, 3];
    let sid = store
        .insert_sample(&NewSample {
            run_id: a.id,
            step: 500,
            sampler: "ddim".into(),
            sample_steps: 50,
            prompt: Some("a red circle".into()),
            guidance: None,
            guidance_scale: None,
            count: 16,
            width: 70,
            height: 70,
            png: png.clone(),
        })
        .await
        .unwrap();
    let (info, bytes) = store.latest_sample(a.id).await.unwrap().unwrap();
    assert_eq!((info.id, info.step, bytes), (sid, 500, png));
    store
        .upsert_eval(a.id, "nll_bpd", Some(3.5), "{\"stderr\":0.1}")
        .await
        .unwrap();
    store
        .upsert_eval(a.id, "nll_bpd", Some(3.25), "{\"stderr\":0.1}")
        .await
        .unwrap();
    store
        .upsert_eval(a.id, "nll_bpd_stderr", Some(0.1), "{}")
        .await
        .unwrap();
    assert_eq!(store.evals(a.id).await.unwrap().len(), 2);
    store
        .finish_run(a.id, RunStatus::Completed, None)
        .await
        .unwrap();

    let sums = store.summaries(Some("s1")).await.unwrap();
    assert_eq!(sums.len(), 2);
    let s = &sums[0];
    assert_eq!(
        (s.t, s.schedule.as_str(), s.status.as_str(), s.steps_done),
        (100, "linear", "completed", 500)
    );
    assert_eq!(s.last_loss, Some(1.0 / 500.0));
    assert_eq!(s.nll_bpd, Some(3.25));
    assert_eq!(sums[1].status, "pending");
    assert!(store.run(a.id).await.unwrap().finished_at.is_some());

    // Standalone runs (no sweep) may share a config.
    let x = store
        .ensure_run(&new_run(None, "h1", "linear", 100))
        .await
        .unwrap();
    let y = store
        .ensure_run(&new_run(None, "h1", "linear", 100))
        .await
        .unwrap();
    assert_ne!(x.id, y.id);
    store.delete_run(y.id).await.unwrap();
    assert!(store.run(y.id).await.is_err());
    assert_eq!(store.integrity_check().await.unwrap(), "ok");
}

#[tokio::test]
async fn lifecycle_sqlite() {
    let (store, _, _dir) = sqlite_store().await;
    lifecycle(&store).await;
}

#[tokio::test]
async fn lifecycle_postgres() {
    if let Some((store, _)) = postgres_store("lifecycle").await {
        lifecycle(&store).await;
    }
}

/// Eight independent pools (as eight processes would have) race to claim 40 runs: each run is
/// claimed exactly once.
async fn claims_are_exclusive(url: &str) {
    let store = Store::connect(url, true).await.unwrap();
    let sweep = store.upsert_sweep("race", "", "").await.unwrap();
    for i in 0..40 {
        store
            .ensure_run(&new_run(Some(sweep.id), &format!("h{i}"), "linear", 10))
            .await
            .unwrap();
    }
    let mut tasks = vec![];
    for w in 0..8 {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let s = Store::connect(&url, true).await.unwrap();
            let mut mine = vec![];
            while let Some(r) = s.claim_next_run(sweep.id, "cpu", &worker(w)).await.unwrap() {
                assert_eq!(r.worker.as_deref(), Some(format!("w{w}").as_str()));
                mine.push(r.id);
            }
            mine
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (40, 40));

    // A run whose worker stopped beating goes back to pending; a fresh one stays.
    let r = store.runs(Some(sweep.id)).await.unwrap()[0].clone();
    assert_eq!(
        store
            .requeue_stale(sweep.id, Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store
            .requeue_stale(sweep.id, Duration::from_millis(1))
            .await
            .unwrap(),
        40
    );
    assert_eq!(store.run(r.id).await.unwrap().status(), RunStatus::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_are_exclusive_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    claims_are_exclusive(&sqlite_url(&dir.path().join("race.sqlite"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_are_exclusive_postgres() {
    if let Some((_, url)) = postgres_store("claims").await {
        claims_are_exclusive(&url).await;
    }
}

#[tokio::test]
async fn bad_urls_and_missing_files_are_one_sentence() {
    let e = Store::connect("mysql://x", true)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("unsupported database URL"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let e = Store::connect(&sqlite_url(&dir.path().join("none.sqlite")), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
    assert!(
        !dir.path().join("none.sqlite").exists(),
        "a read-only open must not create the file"
    );
    let e = Store::connect("postgres://nobody:secret@127.0.0.1:1/none", true)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot open the database") && !e.contains("secret"),
        "{e}"
    );
    assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
}

async fn stalled_runs(store: &Store) {
    let sweep = store.upsert_sweep("st", "", "").await.unwrap();
    let fresh = store
        .ensure_run(&new_run(Some(sweep.id), "h1", "linear", 10))
        .await
        .unwrap();
    let silent = store
        .ensure_run(&new_run(Some(sweep.id), "h2", "linear", 20))
        .await
        .unwrap();
    let done = store
        .ensure_run(&new_run(Some(sweep.id), "h3", "linear", 30))
        .await
        .unwrap();
    for (n, run) in [&fresh, &silent, &done].into_iter().enumerate() {
        store.start_run(run.id, "cpu", &worker(n)).await.unwrap();
    }
    store
        .finish_run(done.id, RunStatus::Completed, None)
        .await
        .unwrap();
    assert!(store.stalled_runs(None).await.unwrap().is_empty());
    // Heartbeats older than STALE_AFTER: the silent one's worker is gone, the done one ended.
    let old = "2000-01-01T00:00:00.000Z";
    for id in [silent.id, done.id] {
        sqlx::query("UPDATE runs SET heartbeat_at = $1 WHERE id = $2")
            .bind(old)
            .bind(id)
            .execute(store.pool())
            .await
            .unwrap();
    }
    let ids = |rows: Vec<RunRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(store.stalled_runs(None).await.unwrap()), [silent.id]);
    assert_eq!(
        ids(store.stalled_runs(Some(sweep.id)).await.unwrap()),
        [silent.id]
    );
    assert!(
        store
            .stalled_runs(Some(sweep.id + 1))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(STALE_AFTER, Duration::from_secs(90));
}

#[tokio::test]
async fn stalled_runs_sqlite() {
    let (store, _, _dir) = sqlite_store().await;
    stalled_runs(&store).await;
}

#[tokio::test]
async fn stalled_runs_postgres() {
    if let Some((store, _)) = postgres_store("stalled").await {
        stalled_runs(&store).await;
    }
}

/// The first migration's version: the schema of the release before the sweep axes.
const INITIAL_VERSION: i64 = 20261125000001;

/// A SQLite file written as the previous release left it: only the initial migration, a sweep
/// and a run.
async fn previous_release_store(path: &std::path::Path) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&format!("{}?mode=rwc", sqlite_url(path)))
        .await
        .unwrap();
    MIGRATOR_SQLITE
        .run_to(INITIAL_VERSION, &pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO sweeps (name, spec_toml, created_at) VALUES ('old', '[grid]', '2026-11-30T00:00:00.000Z')",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO runs (sweep_id, name, config_hash, config_json, dataset, model, schedule,
                           timesteps, seed, steps_total, created_at)
         VALUES (1, 'r', 'h', '{\"T\":10}', 'shapes', 'tiny', 'linear', 10, 0, 5, 'x')",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

#[tokio::test]
async fn previous_release_store_opens_migrates_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    previous_release_store(&path).await;
    let url = sqlite_url(&path);

    // Read-only: refused untouched, with the way out.
    let bytes = std::fs::read(&path).unwrap();
    let e = Store::open_read_only(&url).await.unwrap_err().to_string();
    assert!(
        e.contains("older ddlab") && e.contains("run any writing command"),
        "{e}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "not modified");

    // Writing: migrated, rows kept, the old sweep without recorded axes.
    let store = Store::connect(&url, false).await.unwrap();
    let sweep = store.sweep("old").await.unwrap();
    assert_eq!(
        (sweep.spec_toml.as_str(), sweep.axes.clone()),
        ("[grid]", None)
    );
    let runs = store.runs(Some(sweep.id)).await.unwrap();
    assert_eq!(
        (runs.len(), runs[0].config_json.as_str()),
        (1, "{\"T\":10}")
    );
    store.close().await;
    // Now current, so a reader opens it.
    let reader = Store::open_read_only(&url).await.unwrap();
    assert_eq!(reader.runs(None).await.unwrap().len(), 1);
}

/// A SQLite file of another application, built by `setup`; its bytes.
async fn foreign_sqlite(path: &std::path::Path, setup: &[&str]) -> Vec<u8> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&format!("{}?mode=rwc", sqlite_url(path)))
        .await
        .unwrap();
    for stmt in setup {
        sqlx::query(sqlx::AssertSqlSafe(stmt.to_string()))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    std::fs::read(path).unwrap()
}

/// Every way of opening refuses `path` with one sentence containing `expected`, leaving the
/// file as it was.
async fn refused_untouched(path: &std::path::Path, expected: &str) {
    let bytes = std::fs::read(path).unwrap();
    let url = sqlite_url(path);
    for mode in [OpenMode::Create, OpenMode::Existing, OpenMode::ReadOnly] {
        let started = std::time::Instant::now();
        let e = Store::open(&url, mode).await.unwrap_err().to_string();
        assert!(e.contains(expected) && !e.contains('\n'), "{mode:?}: {e}");
        assert!(e.contains("left it untouched"), "{mode:?}: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refused at once"
        );
        assert_eq!(std::fs::read(path).unwrap(), bytes, "{mode:?} modified it");
    }
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random.bin");
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &noise).unwrap();
    refused_untouched(&path, "is not a SQLite database").await;
    let short = dir.path().join("short.txt");
    std::fs::write(&short, b"hello").unwrap();
    refused_untouched(&short, "is not a SQLite database").await;
}

#[tokio::test]
async fn another_applications_sqlite_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // Tables that clash with ddlab's, and no migrations table.
    let clash = dir.path().join("clash.sqlite");
    foreign_sqlite(
        &clash,
        &[
            "CREATE TABLE runs (x INTEGER)",
            "INSERT INTO runs VALUES (1)",
        ],
    )
    .await;
    refused_untouched(&clash, "its own `runs` table").await;
    // Tables of its own only.
    let other = dir.path().join("other.sqlite");
    foreign_sqlite(&other, &["CREATE TABLE notes (body TEXT)"]).await;
    refused_untouched(&other, "is not a ddlab store").await;
    // Another sqlx application: a migrations table, but not ddlab's migrations.
    let sqlx_app = dir.path().join("sqlx_app.sqlite");
    foreign_sqlite(
        &sqlx_app,
        &[
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
             installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL,
             checksum BLOB NOT NULL, execution_time BIGINT NOT NULL)",
            "INSERT INTO _sqlx_migrations VALUES (1, 'init', CURRENT_TIMESTAMP, 1, x'00', 0)",
            "CREATE TABLE users (name TEXT)",
        ],
    )
    .await;
    refused_untouched(&sqlx_app, "migrations are not ddlab's").await;
}

#[tokio::test]
async fn a_newer_ddlabs_store_is_refused_untouched() {
    let (store, url, _dir) = sqlite_store().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99991231000000, 'future', TRUE, x'00', 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    store.close().await;
    let path = sqlite_path(&url).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for mode in [OpenMode::Create, OpenMode::ReadOnly] {
        let e = Store::open(&url, mode).await.unwrap_err().to_string();
        assert!(
            e.contains("newer ddlab") && e.contains("99991231000000"),
            "{e}"
        );
    }
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[tokio::test]
async fn read_only_open_never_creates_migrates_or_writes() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("sub/none.sqlite");
    let e = Store::open_read_only(&sqlite_url(&missing))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
    assert!(!missing.parent().unwrap().exists(), "nothing created");

    let empty = dir.path().join("empty.sqlite");
    std::fs::write(&empty, b"").unwrap();
    let e = Store::open_read_only(&sqlite_url(&empty))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds no ddlab store yet"), "{e}");
    assert_eq!(std::fs::read(&empty).unwrap(), b"", "not migrated");

    let (store, url, _keep) = sqlite_store().await;
    lifecycle(&store).await;
    store.close().await;
    let path = sqlite_path(&url).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let reader = Store::open_read_only(&url).await.unwrap();
    assert_eq!(reader.mode(), OpenMode::ReadOnly);
    assert_eq!(reader.summaries(Some("s1")).await.unwrap().len(), 2);
    assert!(
        reader.upsert_sweep("x", "", "").await.is_err(),
        "writes fail"
    );
    reader.close().await;
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "not modified");
}

#[tokio::test]
async fn an_empty_sqlite_path_is_one_sentence() {
    for url in ["sqlite://", "sqlite:", "sqlite://?mode=rwc"] {
        for mode in [OpenMode::Create, OpenMode::ReadOnly] {
            let e = Store::open(url, mode).await.unwrap_err().to_string();
            assert!(
                e.contains("names no file") && !e.contains('\n'),
                "{url}: {e}"
            );
        }
    }
}

#[tokio::test]
async fn a_replaced_or_deleted_file_is_noticed() {
    let (store, url, _dir) = sqlite_store().await;
    assert_eq!(store.file_state(), FileState::Unchanged);
    // Closed first, so that no WAL file of the old database is left beside the new one.
    store.close().await;
    let path = sqlite_path(&url).unwrap();
    let moved = path.with_extension("moved");
    std::fs::rename(&path, &moved).unwrap();
    assert_eq!(store.file_state(), FileState::Deleted);
    std::fs::copy(&moved, &path).unwrap();
    assert_eq!(store.file_state(), FileState::Replaced);
    let again = store.reopen().await.unwrap();
    assert_eq!(again.file_state(), FileState::Unchanged);
}

#[tokio::test]
async fn postgres_read_only_open_and_foreign_schema() {
    let Some((store, url)) = postgres_store("readonly").await else {
        return;
    };
    store.upsert_sweep("s", "", "").await.unwrap();
    let reader = Store::open_read_only(&url).await.unwrap();
    assert_eq!(reader.sweeps().await.unwrap().len(), 1);
    assert!(
        reader.upsert_sweep("x", "", "").await.is_err(),
        "writes fail"
    );
    reader.close().await;
    // ddlab's tables without ddlab's migrations record: another schema that clashes.
    sqlx::query("DROP TABLE _sqlx_migrations")
        .execute(store.pool())
        .await
        .unwrap();
    for mode in [OpenMode::Create, OpenMode::ReadOnly] {
        let e = Store::open(&url, mode).await.unwrap_err().to_string();
        assert!(
            e.contains("is not a ddlab store") && !e.contains("ddlab@"),
            "{e}"
        );
    }
    let left: i64 = sqlx::query(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = '_sqlx_migrations'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
    .get(0);
    assert_eq!(left, 0, "left untouched");
    store.close().await;
}

/// The last migration of the release before evaluations had steps and loss-by-t windows.
const BEFORE_EVAL_STEPS: i64 = 20261202000002;

/// Brings an empty database to the release before eval steps and writes what that release
/// wrote: a sweep, a completed run with its metrics and two evaluations.
async fn store_before_eval_steps(pool: &sqlx::AnyPool, migrator: &sqlx::migrate::Migrator) {
    migrator.run_to(BEFORE_EVAL_STEPS, pool).await.unwrap();
    for stmt in [
        "INSERT INTO sweeps (name, spec_toml, created_at) VALUES ('old', '[grid]', 'x')",
        "INSERT INTO runs (sweep_id, name, config_hash, config_json, dataset, model, schedule,
                           timesteps, seed, steps_total, steps_done, status, created_at)
         VALUES (1, 'r', 'h', '{}', 'shapes', 'tiny', 'linear', 10, 0, 5, 5, 'completed', 'x')",
        "INSERT INTO metrics (run_id, step, name, value, wall_time) VALUES (1, 5, 'loss', 0.25, 1.0)",
        "INSERT INTO evals (run_id, name, value, details_json, created_at)
         VALUES (1, 'nll_bpd', 3.5, '{\"images\":8}', '2026-12-01T00:00:00.000Z')",
        "INSERT INTO evals (run_id, name, value, details_json, created_at)
         VALUES (1, 'nll_bpd_stderr', 0.1, '{}', '2026-12-01T00:00:00.000Z')",
    ] {
        sqlx::query(stmt).execute(pool).await.unwrap();
    }
}

/// After the upgrade: the old evaluations kept with the run's step and no method, the summary
/// as before, and evaluations of other steps and methods recorded beside them.
async fn old_evals_survive(store: &Store) {
    let evals = store.evals(1).await.unwrap();
    let kept: Vec<_> = evals
        .iter()
        .map(|e| (e.name.as_str(), e.step, e.method.as_str(), e.value))
        .collect();
    assert_eq!(
        kept,
        [
            ("nll_bpd", 5, "", Some(3.5)),
            ("nll_bpd_stderr", 5, "", Some(0.1))
        ]
    );
    assert_eq!(evals[0].details_json, "{\"images\":8}");
    for (step, method, value) in [(2, "nll images=8", 4.0), (5, "nll images=64", 3.4)] {
        store
            .record_eval(&NewEval {
                run_id: 1,
                name: "nll_bpd",
                step,
                method,
                value: Some(value),
                details_json: "{}",
            })
            .await
            .unwrap();
    }
    assert_eq!(store.evals(1).await.unwrap().len(), 4);
    let summary = store.summaries(Some("old")).await.unwrap();
    assert_eq!(
        (summary[0].nll_bpd, summary[0].last_loss),
        (Some(3.5), Some(0.25))
    );
    assert_eq!(
        own_evals(&store.evals(1).await.unwrap())[0].value,
        Some(3.5)
    );
    let window = LossBucketRow {
        run_id: 1,
        step: 5,
        bucket: 0,
        buckets: 2,
        t_lo: 0,
        t_hi: 5,
        count: 3,
        loss: Some(0.5),
        weighted_loss: None,
        wall_time: 1.0,
    };
    store
        .insert_loss_buckets(std::slice::from_ref(&window))
        .await
        .unwrap();
    assert_eq!(store.latest_loss_profile(1).await.unwrap(), [window]);
    assert_eq!(store.delete_loss_buckets_after(1, 4).await.unwrap(), 1);
}

#[tokio::test]
async fn store_before_eval_steps_keeps_its_evals_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&format!("{}?mode=rwc", sqlite_url(&path)))
        .await
        .unwrap();
    store_before_eval_steps(&pool, &MIGRATOR_SQLITE).await;
    pool.close().await;
    let store = Store::connect(&sqlite_url(&path), false).await.unwrap();
    old_evals_survive(&store).await;
}

#[tokio::test]
async fn store_before_eval_steps_keeps_its_evals_postgres() {
    let Some((store, url)) = postgres_store("evalsteps").await else {
        return;
    };
    // Start over from an empty database migrated only to the old release.
    store.close().await;
    let base = url.rsplit_once('/').unwrap().0.to_string();
    let name = format!("ddlab_t_evalsteps_old_{}", std::process::id());
    let admin = sqlx::AnyPool::connect(&std::env::var("DDLAB_TEST_POSTGRES_URL").unwrap())
        .await
        .unwrap();
    for stmt in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(stmt))
            .execute(&admin)
            .await
            .unwrap();
    }
    let old_url = format!("{base}/{name}");
    let pool = sqlx::AnyPool::connect(&old_url).await.unwrap();
    store_before_eval_steps(&pool, &MIGRATOR_POSTGRES).await;
    pool.close().await;
    let store = Store::connect(&old_url, false).await.unwrap();
    old_evals_survive(&store).await;
}

/// Where the previous release left its stores: every migration before early stopping.
const BEFORE_PRUNE: i64 = 20261203000002;

/// What the previous release wrote: a sweep, a completed run with a metric, a loss-by-t window,
/// an evaluation and a sample, and a pending run.
async fn store_before_prune(pool: &sqlx::AnyPool, migrator: &sqlx::migrate::Migrator) {
    migrator.run_to(BEFORE_PRUNE, pool).await.unwrap();
    for stmt in [
        "INSERT INTO sweeps (name, spec_toml, created_at) VALUES ('old', '[grid]', 'x')",
        "INSERT INTO runs (sweep_id, name, config_hash, config_json, dataset, model, schedule,
                           timesteps, seed, steps_total, steps_done, status, created_at)
         VALUES (1, 'a', 'ha', '{}', 'shapes', 'tiny', 'linear', 10, 0, 5, 5, 'completed', 'x')",
        "INSERT INTO runs (sweep_id, name, config_hash, config_json, dataset, model, schedule,
                           timesteps, seed, steps_total, created_at)
         VALUES (1, 'b', 'hb', '{}', 'shapes', 'tiny', 'cosine', 10, 0, 5, 'x')",
        "INSERT INTO metrics (run_id, step, name, value, wall_time) VALUES (1, 5, 'loss', 0.25, 1.0)",
        "INSERT INTO loss_buckets (run_id, step, bucket, buckets, t_lo, t_hi, count, loss, wall_time)
         VALUES (1, 5, 0, 1, 0, 10, 3, 0.5, 1.0)",
        "INSERT INTO evals (run_id, name, step, method, value, details_json, created_at)
         VALUES (1, 'nll_bpd', 5, '', 3.5, '{}', 'x')",
        "INSERT INTO samples (run_id, step, sampler, sample_steps, count, width, height, png, created_at)
         VALUES (1, 5, 'ddpm', 10, 4, 8, 8, 'png', 'x')",
    ] {
        sqlx::query(stmt).execute(pool).await.unwrap();
    }
}

/// After the upgrade (which rebuilds SQLite's `runs`): every row kept, the runs' ids and
/// statuses unchanged, the foreign keys still cascading, and `pruned` a status a run can have.
async fn rows_survive_the_prune_migration(store: &Store) {
    let runs = store.runs(None).await.unwrap();
    let kept: Vec<_> = runs
        .iter()
        .map(|r| (r.id, r.name.as_str(), r.status()))
        .collect();
    assert_eq!(
        kept,
        [(1, "a", RunStatus::Completed), (2, "b", RunStatus::Pending)]
    );
    assert_eq!(
        store.metric_rows(1, "loss").await.unwrap(),
        [(5, Some(0.25))]
    );
    assert_eq!(store.loss_buckets(1).await.unwrap().len(), 1);
    assert_eq!(store.evals(1).await.unwrap().len(), 1);
    assert_eq!(store.samples(1).await.unwrap().len(), 1);
    assert_eq!(
        store.summaries(Some("old")).await.unwrap()[0].last_loss,
        Some(0.25)
    );
    let sweep = store.sweep("old").await.unwrap();
    assert_eq!(sweep.prune_json, None);
    store.finish_run(2, RunStatus::Pruned, None).await.unwrap();
    assert_eq!(store.run(2).await.unwrap().status(), RunStatus::Pruned);
    // Registering still finds the old run by its config instead of adding one.
    let again = store
        .ensure_run(&new_run(Some(sweep.id), "ha", "linear", 10))
        .await
        .unwrap();
    assert_eq!(again.id, 1);
    store.delete_run(1).await.unwrap();
    assert!(store.loss_buckets(1).await.unwrap().is_empty(), "cascaded");
}

#[tokio::test]
async fn store_before_prune_keeps_its_rows_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&format!("{}?mode=rwc", sqlite_url(&path)))
        .await
        .unwrap();
    store_before_prune(&pool, &MIGRATOR_SQLITE).await;
    pool.close().await;
    let store = Store::connect(&sqlite_url(&path), false).await.unwrap();
    assert_eq!(store.integrity_check().await.unwrap(), "ok");
    let dangling: Vec<sqlx::any::AnyRow> = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert!(dangling.is_empty());
    rows_survive_the_prune_migration(&store).await;
}

#[tokio::test]
async fn store_before_prune_keeps_its_rows_postgres() {
    let Some((store, url)) = postgres_store("beforeprune").await else {
        return;
    };
    // Start over from a database migrated only to the previous release.
    let pool = store.pool().clone();
    for stmt in ["DROP SCHEMA public CASCADE", "CREATE SCHEMA public"] {
        sqlx::query(stmt).execute(&pool).await.unwrap();
    }
    store_before_prune(&pool, &MIGRATOR_POSTGRES).await;
    store.close().await;
    let store = Store::connect(&url, false).await.unwrap();
    rows_survive_the_prune_migration(&store).await;
}

fn decide_top_half(entries: &[(String, Option<f64>)]) -> RungDecision {
    // The newest entry is the caller's: it goes on when its value is in the better half.
    let own = entries.last().unwrap().1.unwrap();
    let better = entries.iter().filter(|e| e.1.unwrap() < own).count();
    let kept = entries.len().div_ceil(2);
    RungDecision {
        go_on: better < kept,
        rank: better as i64 + 1,
        trials: entries.len() as i64,
        kept: kept as i64,
        threshold: None,
        reason: format!("saw {}", entries.len()),
    }
}

/// Eight workers reach one rung at once: each decision saw exactly the runs recorded before it
/// (1, 2, …, 8 entries: none lost, none twice), pruned runs are marked in the same step, and
/// a run reaching a rung again gets its first decision back.
async fn rung_decisions_are_serial(url: &str) {
    let store = Store::connect(url, true).await.unwrap();
    let sweep = store.upsert_sweep("asha", "", "").await.unwrap();
    let mut ids = vec![];
    for i in 0..8 {
        let r = store
            .ensure_run(&new_run(Some(sweep.id), &format!("h{i}"), "linear", 10))
            .await
            .unwrap();
        ids.push(r.id);
    }
    let mut tasks = vec![];
    for (i, id) in ids.iter().copied().enumerate() {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let s = Store::connect(&url, true).await.unwrap();
            let trial = format!("t{i}");
            let new = NewRung {
                sweep_id: sweep.id,
                run_id: id,
                rung: 50,
                metric: "loss",
                value: Some(i as f64),
                group_key: "",
                trial_key: &trial,
            };
            s.reach_rung(&new, decide_top_half).await.unwrap()
        }));
    }
    let mut rows = vec![];
    for t in tasks {
        rows.push(t.await.unwrap());
    }
    rows.sort_by_key(|r| r.id);
    let seen: Vec<String> = rows.iter().map(|r| r.reason.clone()).collect();
    assert_eq!(
        seen,
        (1..=8).map(|n| format!("saw {n}")).collect::<Vec<_>>()
    );
    for r in &rows {
        let status = store.run(r.run_id).await.unwrap().status();
        assert_eq!(r.pruned(), status == RunStatus::Pruned, "{r:?}");
    }
    let recorded = store.rungs(sweep.id).await.unwrap();
    assert_eq!(recorded, rows);
    let first = &rows[0];
    let again = NewRung {
        sweep_id: sweep.id,
        run_id: first.run_id,
        rung: 50,
        metric: "loss",
        value: Some(-1.0),
        group_key: "",
        trial_key: "x",
    };
    let back = store
        .reach_rung(&again, |_| panic!("decided twice"))
        .await
        .unwrap();
    assert_eq!(&back, first);
    // Continuing a pruned run flips its decision and puts it back in the queue.
    let mut pruned = rows.iter().filter(|r| r.pruned()).count();
    if let Some(p) = rows.iter().find(|r| r.pruned()) {
        assert!(store.unprune(p.run_id, 50, "continued").await.unwrap());
        assert!(!store.unprune(p.run_id, 50, "continued").await.unwrap());
        assert_eq!(
            store.run(p.run_id).await.unwrap().status(),
            RunStatus::Pending
        );
        pruned -= 1;
    }
    assert_eq!(store.pruned_rungs().await.unwrap().len(), pruned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rung_decisions_are_serial_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    rung_decisions_are_serial(&sqlite_url(&dir.path().join("asha.sqlite"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rung_decisions_are_serial_postgres() {
    if let Some((_, url)) = postgres_store("rungs").await {
        rung_decisions_are_serial(&url).await;
    }
}
