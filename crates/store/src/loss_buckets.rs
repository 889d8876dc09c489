//! The `loss_buckets` table: the training loss by bucket of t, one row per bucket and flush
//! window, truncated with the metrics on resume.

use crate::{LossBucketRow, Result, Store, sql};

const COLS: &str =
    "run_id, step, bucket, buckets, t_lo, t_hi, count, loss, weighted_loss, wall_time";

impl Store {
    /// Writes the buckets of one or more windows in one transaction (idempotent per
    /// (run, step, bucket)).
    pub async fn insert_loss_buckets(&self, rows: &[LossBucketRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for chunk in rows.chunks(200) {
            let mut stmt = format!("INSERT INTO loss_buckets ({COLS}) VALUES ");
            for i in 0..chunk.len() {
                let b = i * 10;
                if i > 0 {
                    stmt.push(',');
                }
                let marks: Vec<String> = (1..=10)
                    .map(|k| match k {
                        8 | 9 => self.float_arg(b + k),
                        _ => format!("${}", b + k),
                    })
                    .collect();
                stmt.push_str(&format!("({})", marks.join(", ")));
            }
            stmt.push_str(
                " ON CONFLICT (run_id, step, bucket) DO UPDATE SET count = excluded.count, \
                 loss = excluded.loss, weighted_loss = excluded.weighted_loss, \
                 wall_time = excluded.wall_time",
            );
            let mut q = sqlx::query(sql(stmt));
            for r in chunk {
                q = q
                    .bind(r.run_id)
                    .bind(r.step)
                    .bind(r.bucket)
                    .bind(r.buckets)
                    .bind(r.t_lo)
                    .bind(r.t_hi)
                    .bind(r.count)
                    .bind(crate::float_param(r.loss))
                    .bind(crate::float_param(r.weighted_loss))
                    .bind(r.wall_time);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Drops the windows after `step` (before re-running steps from a checkpoint).
    pub async fn delete_loss_buckets_after(&self, run_id: i64, step: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM loss_buckets WHERE run_id = $1 AND step > $2")
                .bind(run_id)
                .bind(step)
                .execute(self.pool())
                .await?
                .rows_affected(),
        )
    }

    /// Every window of a run, by step then bucket (the heatmap of step × t).
    pub async fn loss_buckets(&self, run_id: i64) -> Result<Vec<LossBucketRow>> {
        Ok(sqlx::query_as::<_, LossBucketRow>(sql(format!(
            "SELECT {COLS} FROM loss_buckets WHERE run_id = $1 ORDER BY step, bucket"
        )))
        .bind(run_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// The buckets of a run's latest window: its current loss profile across t.
    pub async fn latest_loss_profile(&self, run_id: i64) -> Result<Vec<LossBucketRow>> {
        Ok(sqlx::query_as::<_, LossBucketRow>(sql(format!(
            "SELECT {COLS} FROM loss_buckets WHERE run_id = $1 AND step =
               (SELECT MAX(step) FROM loss_buckets WHERE run_id = $2) ORDER BY bucket"
        )))
        .bind(run_id)
        .bind(run_id)
        .fetch_all(self.pool())
        .await?)
    }
}
