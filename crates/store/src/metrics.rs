//! The `metrics` table: batched writes, truncation on resume, and curves averaged in the
//! database.

use crate::{MetricRow, Result, Store, sql};
use sqlx::Row;

impl Store {
    /// Writes a batch of metric rows in one transaction (idempotent per (run, name, step)).
    pub async fn insert_metrics(&self, rows: &[MetricRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for chunk in rows.chunks(400) {
            let mut stmt =
                String::from("INSERT INTO metrics (run_id, step, name, value, wall_time) VALUES ");
            for i in 0..chunk.len() {
                let b = i * 5;
                if i > 0 {
                    stmt.push(',');
                }
                stmt.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5
                ));
            }
            stmt.push_str(
                " ON CONFLICT (run_id, name, step) DO UPDATE SET value = excluded.value, wall_time = excluded.wall_time",
            );
            let mut q = sqlx::query(sql(stmt));
            for r in chunk {
                q = q
                    .bind(r.run_id)
                    .bind(r.step)
                    .bind(r.name.as_str())
                    .bind(r.value.filter(|v| v.is_finite()))
                    .bind(r.wall_time);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Drops metric rows after `step` (before re-running steps from a checkpoint).
    pub async fn delete_metrics_after(&self, run_id: i64, step: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM metrics WHERE run_id = $1 AND step > $2")
                .bind(run_id)
                .bind(step)
                .execute(self.pool())
                .await?
                .rows_affected(),
        )
    }

    /// Metric names recorded for a run.
    pub async fn metric_names(&self, run_id: i64) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT name FROM metrics WHERE run_id = $1 ORDER BY name")
            .bind(run_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(Into::into))
            .collect()
    }

    /// A metric's curve with at most about `max_points` points: consecutive steps are averaged
    /// into equal buckets inside the database, so a million-row curve costs one small result.
    pub async fn metric_series(
        &self,
        run_id: i64,
        name: &str,
        max_points: usize,
    ) -> Result<Vec<(i64, f64)>> {
        let stats = sqlx::query(
            "SELECT COUNT(*), COALESCE(MAX(step), 0) FROM metrics WHERE run_id = $1 AND name = $2",
        )
        .bind(run_id)
        .bind(name)
        .fetch_one(self.pool())
        .await?;
        let count: i64 = stats.try_get(0)?;
        let max_step: i64 = stats.try_get(1)?;
        if count == 0 {
            return Ok(vec![]);
        }
        let bucket = ((max_step + 1) as f64 / max_points.max(1) as f64)
            .ceil()
            .max(1.0) as i64;
        let rows = sqlx::query(
            "SELECT MIN(step) AS s, AVG(value) AS v FROM metrics
             WHERE run_id = $1 AND name = $2 AND value IS NOT NULL
             GROUP BY step / $3 ORDER BY s",
        )
        .bind(run_id)
        .bind(name)
        .bind(bucket)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<f64, _>(1)?)))
            .collect()
    }

    /// The newest non-NULL value of each of a run's metrics, with its step, by name: one seek per
    /// metric on the primary key, read backwards.
    pub async fn final_metrics(&self, run_id: i64) -> Result<Vec<(String, i64, f64)>> {
        let mut out = vec![];
        for name in self.metric_names(run_id).await? {
            let row = sqlx::query(
                "SELECT step, value FROM metrics WHERE run_id = $1 AND name = $2 AND value IS NOT NULL
                 ORDER BY step DESC LIMIT 1",
            )
            .bind(run_id)
            .bind(&name)
            .fetch_optional(self.pool())
            .await?;
            if let Some(r) = row {
                out.push((name, r.try_get(0)?, r.try_get(1)?));
            }
        }
        Ok(out)
    }

    /// At most `limit` of a run's metric rows after `after` (a name and step), in primary-key
    /// order (name, step): a reader pages through a run of any size in bounded memory, each
    /// page one index range.
    pub async fn metric_page(
        &self,
        run_id: i64,
        after: Option<(&str, i64)>,
        limit: usize,
    ) -> Result<Vec<MetricRow>> {
        let (name, step) = after.unwrap_or(("", i64::MIN));
        let rows = sqlx::query(
            "SELECT step, name, value, wall_time FROM metrics
             WHERE run_id = $1 AND (name, step) > ($2, $3) ORDER BY name, step LIMIT $4",
        )
        .bind(run_id)
        .bind(name)
        .bind(step)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MetricRow {
                    run_id,
                    step: r.try_get(0)?,
                    name: r.try_get(1)?,
                    value: r.try_get(2)?,
                    wall_time: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Every row of one metric (for reports and tests).
    pub async fn metric_rows(&self, run_id: i64, name: &str) -> Result<Vec<(i64, Option<f64>)>> {
        let rows = sqlx::query(
            "SELECT step, value FROM metrics WHERE run_id = $1 AND name = $2 ORDER BY step",
        )
        .bind(run_id)
        .bind(name)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// The mean of a metric over the steps `after < step <= upto`, with how many rows it has;
    /// the mean is None when any of them is not finite (recorded as NULL) or there are none.
    pub async fn metric_mean(
        &self,
        run_id: i64,
        name: &str,
        after: i64,
        upto: i64,
    ) -> Result<(Option<f64>, i64)> {
        let (mean, rows, finite): (Option<f64>, i64, i64) = sqlx::query_as(
            "SELECT AVG(value), COUNT(*), COUNT(value) FROM metrics
             WHERE run_id = $1 AND name = $2 AND step > $3 AND step <= $4",
        )
        .bind(run_id)
        .bind(name)
        .bind(after)
        .bind(upto)
        .fetch_one(self.pool())
        .await?;
        Ok((mean.filter(|_| finite == rows), rows))
    }
}
