//! Per-run summaries across tables: the `run_summary` view and the newest value of a metric
//! for every run. Readers that refresh every second while a sweep writes (the dashboard) use
//! them, so each is a handful of index seeks, never a scan of the metrics table.

use crate::rows::SUMMARY_COLS;
use crate::{Result, RunSummary, Store, sql};
use sqlx::Row;
use std::collections::HashMap;

impl Store {
    /// One row per run from the `run_summary` view.
    pub async fn summaries(&self, sweep: Option<&str>) -> Result<Vec<RunSummary>> {
        let q = match sweep {
            Some(_) => {
                format!("SELECT {SUMMARY_COLS} FROM run_summary WHERE sweep = $1 ORDER BY run_id")
            }
            None => format!("SELECT {SUMMARY_COLS} FROM run_summary ORDER BY run_id"),
        };
        let mut query = sqlx::query_as::<_, RunSummary>(sql(q));
        if let Some(s) = sweep {
            query = query.bind(s);
        }
        Ok(query.fetch_all(self.pool()).await?)
    }

    /// The newest non-NULL value of metric `name` for every run that has one, by run id.
    /// One seek per run on the metrics primary key (run_id, name, step), read backwards.
    pub async fn latest_metric_values(&self, name: &str) -> Result<HashMap<i64, f64>> {
        let rows = sqlx::query(
            "SELECT r.id,
                    (SELECT m.value FROM metrics m
                      WHERE m.run_id = r.id AND m.name = $1 AND m.value IS NOT NULL
                      ORDER BY m.step DESC LIMIT 1) AS v
             FROM runs r",
        )
        .bind(name)
        .fetch_all(self.pool())
        .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            if let Some(v) = r.try_get::<Option<f64>, _>(1)? {
                out.insert(r.try_get::<i64, _>(0)?, v);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::*;

    async fn check(store: &Store) {
        let mut ids = Vec::new();
        for n in 0..3 {
            let run = store
                .ensure_run(&NewRun {
                    sweep_id: None,
                    name: format!("r{n}"),
                    config_hash: format!("h{n}"),
                    config_json: "{}".into(),
                    dataset: "shapes".into(),
                    model: "tiny".into(),
                    schedule: "linear".into(),
                    timesteps: 10,
                    seed: 0,
                    steps_total: 100,
                })
                .await
                .unwrap();
            ids.push(run.id);
        }
        let row = |run_id, step, value| MetricRow {
            run_id,
            step,
            name: "steps_per_s".into(),
            value,
            wall_time: 0.0,
        };
        // Run 0: the newest step wins; run 1: a trailing non-finite value is skipped;
        // run 2: no such metric.
        store
            .insert_metrics(&[
                row(ids[0], 20, Some(3.0)),
                row(ids[0], 40, Some(5.0)),
                row(ids[1], 20, Some(7.0)),
                row(ids[1], 40, Some(f64::NAN)),
            ])
            .await
            .unwrap();
        let got = store.latest_metric_values("steps_per_s").await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[&ids[0]], 5.0);
        assert_eq!(got[&ids[1]], 7.0);
    }

    #[tokio::test]
    async fn latest_metric_values_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&sqlite_url(&dir.path().join("d.sqlite")), true)
            .await
            .unwrap();
        check(&store).await;
    }

    /// On a fresh database of the server at `DDLAB_TEST_POSTGRES_URL`, as the store's tests.
    #[tokio::test]
    async fn latest_metric_values_postgres() {
        let Ok(admin) = std::env::var("DDLAB_TEST_POSTGRES_URL") else {
            eprintln!("SKIPPED on PostgreSQL: set DDLAB_TEST_POSTGRES_URL to run it");
            return;
        };
        sqlx::any::install_default_drivers();
        let name = format!("ddlab_t_summary_{}", std::process::id());
        let pool = sqlx::AnyPool::connect(&admin).await.unwrap();
        for stmt in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(stmt))
                .execute(&pool)
                .await
                .unwrap();
        }
        let base = admin.rsplit_once('/').unwrap().0;
        let store = Store::connect(&format!("{base}/{name}"), true)
            .await
            .unwrap();
        check(&store).await;
        store.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name}")))
            .execute(&pool)
            .await
            .unwrap();
    }
}
