//! `run_stats`, the per-run summary rows behind `run_summary`: kept equal to a direct
//! computation over `metrics` through batched writes (non-finite values included) and the
//! truncation a resumed run makes, and backfilled for a store the previous release wrote. On
//! SQLite and, with `DDLAB_TEST_POSTGRES_URL`, PostgreSQL.

use ddlab_store::*;
use sqlx::Row;

mod common;
use common::postgres_store;

/// Where the previous release left its stores: every migration before `run_stats`.
const PREVIOUS_RELEASE: i64 = 20261204000002;

fn new_run(n: usize) -> NewRun {
    NewRun {
        sweep_id: None,
        name: format!("r{n}"),
        config_hash: format!("h{n}"),
        config_json: "{}".into(),
        dataset: "shapes".into(),
        model: "tiny".into(),
        schedule: "linear".into(),
        timesteps: 10,
        seed: 0,
        steps_total: 1000,
    }
}

/// (last_loss, best_loss) per run as the view defined them before: the value at the newest
/// loss step, and the lowest non-NULL value.
async fn direct(store: &Store) -> Vec<(i64, Option<f64>, Option<f64>)> {
    let rows = sqlx::query(
        "SELECT r.id,
           (SELECT m.value FROM metrics m WHERE m.run_id = r.id AND m.name = 'loss'
             ORDER BY m.step DESC LIMIT 1),
           (SELECT MIN(m.value) FROM metrics m WHERE m.run_id = r.id AND m.name = 'loss')
         FROM runs r ORDER BY r.id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            (
                r.try_get(0).unwrap(),
                r.try_get(1).unwrap(),
                r.try_get(2).unwrap(),
            )
        })
        .collect()
}

async fn summarised(store: &Store) -> Vec<(i64, Option<f64>, Option<f64>)> {
    store
        .summaries(None)
        .await
        .unwrap()
        .iter()
        .map(|s| (s.run_id, s.last_loss, s.best_loss))
        .collect()
}

fn loss(run_id: i64, step: i64, value: f64) -> MetricRow {
    MetricRow {
        run_id,
        step,
        name: "loss".into(),
        value: Some(value),
        wall_time: step as f64,
    }
}

/// A deterministic loss with NaN and infinities at some steps, and a dip at step 37.
fn value(run: i64, step: i64) -> f64 {
    match (step * 7 + run) % 23 {
        0 => f64::NAN,
        5 => f64::INFINITY,
        _ if step == 37 => 0.001 * run as f64,
        k => 1.0 / (step as f64 + 1.0) + k as f64 * 0.01,
    }
}

async fn maintained_like_a_direct_computation(store: &Store) {
    let ids: Vec<i64> = {
        let mut ids = vec![];
        for n in 0..4 {
            ids.push(store.ensure_run(&new_run(n)).await.unwrap().id);
        }
        ids
    };
    // Run 3 never logs a loss; every batch mixes runs and another metric.
    for batch in 0..10 {
        let mut rows = vec![];
        for &id in &ids[..3] {
            for step in batch * 10 + 1..=batch * 10 + 10 {
                rows.push(loss(id, step, value(id, step)));
                rows.push(MetricRow {
                    name: "lr".into(),
                    ..loss(id, step, -5.0)
                });
            }
        }
        store.insert_metrics(&rows).await.unwrap();
        assert_eq!(
            summarised(store).await,
            direct(store).await,
            "batch {batch}"
        );
    }
    // A trailing non-finite loss is the last loss (NULL), never the best.
    store
        .insert_metrics(&[loss(ids[0], 101, f64::NAN)])
        .await
        .unwrap();
    let s = summarised(store).await;
    assert_eq!(s[0].1, None);
    assert_eq!(s, direct(store).await);
    // Resuming from step 30 drops the dip at 37 and what followed: recomputed.
    store.delete_metrics_after(ids[1], 30).await.unwrap();
    assert_eq!(summarised(store).await, direct(store).await);
    // Everything dropped: no summary.
    store.delete_metrics_after(ids[2], 0).await.unwrap();
    let s = summarised(store).await;
    assert_eq!((s[2].1, s[2].2), (None, None));
    assert_eq!(s, direct(store).await);
    // Steps written again after the truncation, out of order across batches.
    store
        .insert_metrics(&[loss(ids[1], 50, 0.5), loss(ids[1], 40, 0.0001)])
        .await
        .unwrap();
    store
        .insert_metrics(&[loss(ids[1], 45, 0.7)])
        .await
        .unwrap();
    let s = summarised(store).await;
    assert_eq!((s[1].1, s[1].2), (Some(0.5), Some(0.0001)));
    assert_eq!(s, direct(store).await);
    // A deleted run takes its summary with it.
    store.delete_run(ids[0]).await.unwrap();
    let left: i64 = sqlx::query("SELECT COUNT(*) FROM run_stats WHERE run_id = $1")
        .bind(ids[0])
        .fetch_one(store.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(left, 0);
}

/// A store whose first float of a kind is NULL still takes values afterwards (sqlx's Any
/// driver binds a NULL f64 as float4 on PostgreSQL; the store binds NaN instead).
async fn a_first_non_finite_value_then_finite_ones(store: &Store) {
    let id = store.ensure_run(&new_run(0)).await.unwrap().id;
    let eval = |value| NewEval {
        run_id: id,
        name: "nll_bpd",
        step: 1,
        method: "m",
        value,
        details_json: "{}",
    };
    store
        .insert_metrics(&[loss(id, 1, f64::NAN)])
        .await
        .unwrap();
    store.record_eval(&eval(None)).await.unwrap();
    store.insert_metrics(&[loss(id, 2, 0.5)]).await.unwrap();
    store.record_eval(&eval(Some(3.25))).await.unwrap();
    assert_eq!(
        store.metric_rows(id, "loss").await.unwrap(),
        [(1, None), (2, Some(0.5))]
    );
    assert_eq!(store.evals(id).await.unwrap()[0].value, Some(3.25));
    assert_eq!(summarised(store).await, [(id, Some(0.5), Some(0.5))]);
}

#[tokio::test]
async fn non_finite_then_finite_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir.path().join("s.sqlite"));
    let store = Store::connect(&url, true).await.unwrap();
    a_first_non_finite_value_then_finite_ones(&store).await;
}

#[tokio::test]
async fn non_finite_then_finite_postgres() {
    let Some((store, _)) = postgres_store("nanfirst").await else {
        return;
    };
    a_first_non_finite_value_then_finite_ones(&store).await;
}

#[tokio::test]
async fn run_stats_follow_the_metrics_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir.path().join("s.sqlite"));
    let store = Store::connect(&url, true).await.unwrap();
    maintained_like_a_direct_computation(&store).await;
}

#[tokio::test]
async fn run_stats_follow_the_metrics_postgres() {
    let Some((store, _)) = postgres_store("runstats").await else {
        return;
    };
    maintained_like_a_direct_computation(&store).await;
}

/// What the previous release wrote: three runs, one with a NULL (non-finite) last loss, one
/// with no loss at all, and the rows of another metric.
async fn previous_release(pool: &sqlx::AnyPool, migrator: &sqlx::migrate::Migrator) {
    migrator.run_to(PREVIOUS_RELEASE, pool).await.unwrap();
    for n in 1..=3 {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO runs (name, config_hash, config_json, dataset, model, schedule,
                               timesteps, seed, steps_total, created_at)
             VALUES ('r{n}', 'h{n}', '{{}}', 'shapes', 'tiny', 'linear', 10, 0, 5, 'x')"
        )))
        .execute(pool)
        .await
        .unwrap();
    }
    for (run, step, v) in [
        (1, 1, "0.9"),
        (1, 2, "0.2"),
        (1, 3, "0.4"),
        (2, 1, "0.7"),
        (2, 2, "NULL"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO metrics (run_id, step, name, value, wall_time)
             VALUES ({run}, {step}, 'loss', {v}, 0.0), ({run}, {step}, 'lr', 0.01, 0.0)"
        )))
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO metrics (run_id, step, name, value, wall_time) VALUES (3, 1, 'lr', 0.1, 0.0)",
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn backfilled(store: &Store) {
    let expected = vec![
        (1, Some(0.4), Some(0.2)),
        (2, None, Some(0.7)),
        (3, None, None),
    ];
    assert_eq!(direct(store).await, expected, "the rows are intact");
    assert_eq!(
        summarised(store).await,
        expected,
        "and summarised as before"
    );
    // Writing on goes on from the backfilled rows.
    store.insert_metrics(&[loss(2, 3, 0.1)]).await.unwrap();
    assert_eq!(summarised(store).await[1], (2, Some(0.1), Some(0.1)));
    assert_eq!(store.metric_rows(1, "lr").await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_previous_release_store_gets_its_summaries_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&format!("{}?mode=rwc", sqlite_url(&path)))
        .await
        .unwrap();
    previous_release(&pool, &MIGRATOR_SQLITE).await;
    pool.close().await;
    let store = Store::connect(&sqlite_url(&path), false).await.unwrap();
    assert_eq!(store.integrity_check().await.unwrap(), "ok");
    backfilled(&store).await;
}

#[tokio::test]
async fn a_previous_release_store_gets_its_summaries_postgres() {
    let Some((store, url)) = postgres_store("runstatsold").await else {
        return;
    };
    let pool = store.pool().clone();
    for stmt in ["DROP SCHEMA public CASCADE", "CREATE SCHEMA public"] {
        sqlx::query(stmt).execute(&pool).await.unwrap();
    }
    previous_release(&pool, &MIGRATOR_POSTGRES).await;
    store.close().await;
    let store = Store::connect(&url, false).await.unwrap();
    backfilled(&store).await;
}
