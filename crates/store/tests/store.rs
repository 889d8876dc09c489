//! The store against a real SQLite file and, when `DDLAB_TEST_POSTGRES_URL` points at a server
//! (`.ci/run` starts one), a real PostgreSQL database created fresh for each test.

use ddlab_store::*;
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

/// A fresh database on the test server, or None (with a visible note) when none is configured.
async fn postgres_store(test: &str) -> Option<(Store, String)> {
    let Ok(admin) = std::env::var("DDLAB_TEST_POSTGRES_URL") else {
        eprintln!("SKIPPED {test} on PostgreSQL: set DDLAB_TEST_POSTGRES_URL to run it");
        return None;
    };
    sqlx::any::install_default_drivers();
    let name = format!("ddlab_t_{}_{}", test, std::process::id());
    let pool = sqlx::AnyPool::connect(&admin)
        .await
        .expect("cannot reach DDLAB_TEST_POSTGRES_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    let url = format!("{base}/{name}");
    Some((Store::connect(&url, true).await.unwrap(), url))
}

async fn lifecycle(store: &Store) {
    let sweep = store
        .upsert_sweep("s1", "desc", "[sweep]\nname = \"s1\"")
        .await
        .unwrap();
    let again = store.upsert_sweep("s1", "desc2", "[sweep]").await.unwrap();
    assert_eq!(sweep.id, again.id);
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
