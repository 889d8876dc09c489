//! The `evals` table: values per run, evaluation name, training step and method (the canonical
//! text of how each was computed), so evaluations over training and re-evaluations with other
//! settings sit beside each other.

use crate::{EvalRow, NewEval, Result, Store, now_rfc3339};

const EVAL_COLS: &str = "run_id, name, step, method, value, details_json, created_at";

impl Store {
    /// Records (or replaces) an evaluation of one step computed one way.
    pub async fn record_eval(&self, e: &NewEval<'_>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(crate::sql(format!(
            "INSERT INTO evals (run_id, name, step, method, value, details_json, created_at)
             VALUES ($1, $2, $3, $4, {}, $6, $7)
             ON CONFLICT (run_id, name, step, method) DO UPDATE SET value = excluded.value,
                  details_json = excluded.details_json, created_at = excluded.created_at",
            self.float_arg(5)
        )))
        .bind(e.run_id)
        .bind(e.name)
        .bind(e.step)
        .bind(e.method)
        .bind(crate::float_param(e.value))
        .bind(e.details_json)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records an evaluation of the run's latest weights (its `steps_done`) without a method,
    /// as evaluations were recorded before provenance (tests and examples build stores so).
    pub async fn upsert_eval(
        &self,
        run_id: i64,
        name: &str,
        value: Option<f64>,
        details_json: &str,
    ) -> Result<()> {
        let step = self.run(run_id).await?.steps_done;
        self.record_eval(&NewEval {
            run_id,
            name,
            step,
            method: "",
            value,
            details_json,
        })
        .await
    }

    /// Every evaluation of a run, by name, step and method.
    pub async fn evals(&self, run_id: i64) -> Result<Vec<EvalRow>> {
        Ok(sqlx::query_as::<_, EvalRow>(crate::sql(format!(
            "SELECT {EVAL_COLS} FROM evals WHERE run_id = $1 ORDER BY name, step, method"
        )))
        .bind(run_id)
        .fetch_all(self.pool())
        .await?)
    }
}

/// Per name, the evaluation of the latest step that was recorded first there: the run's own
/// final evaluation (as the `run_summary` view picks it), not a later re-evaluation with other
/// settings. In name order.
pub fn own_evals(rows: &[EvalRow]) -> Vec<&EvalRow> {
    let mut own: std::collections::BTreeMap<&str, &EvalRow> = Default::default();
    for e in rows {
        let better =
            |o: &&EvalRow| e.step > o.step || (e.step == o.step && e.created_at < o.created_at);
        if own.get(e.name.as_str()).is_none_or(better) {
            own.insert(&e.name, e);
        }
    }
    own.into_values().collect()
}
