//! The `evals` table: one value (and JSON details) per run and evaluation name.

use crate::{EvalRow, Result, Store, now_rfc3339};

impl Store {
    /// Records (or replaces) an evaluation result.
    pub async fn upsert_eval(
        &self,
        run_id: i64,
        name: &str,
        value: Option<f64>,
        details_json: &str,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO evals (run_id, name, value, details_json, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (run_id, name) DO UPDATE SET value = excluded.value,
                  details_json = excluded.details_json, created_at = excluded.created_at",
        )
        .bind(run_id)
        .bind(name)
        .bind(value.filter(|v| v.is_finite()))
        .bind(details_json)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn evals(&self, run_id: i64) -> Result<Vec<EvalRow>> {
        Ok(sqlx::query_as::<_, EvalRow>(
            "SELECT run_id, name, value, details_json, created_at FROM evals WHERE run_id = $1 ORDER BY name",
        )
        .bind(run_id)
        .fetch_all(self.pool())
        .await?)
    }
}
