//! The `sweeps` table: one row per registered sweep spec, with the axes of its grid.

use crate::rows::SWEEP_COLS;
use crate::{Result, Store, StoreError, SweepAxes, SweepRow, now_rfc3339, sql};

impl Store {
    /// Creates the sweep or returns the existing one of that name (updating its spec text).
    /// Its axes are recorded separately, by [`Store::set_sweep_axes`].
    pub async fn upsert_sweep(
        &self,
        name: &str,
        description: &str,
        spec_toml: &str,
    ) -> Result<SweepRow> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sweeps (name, description, spec_toml, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET description = excluded.description,
                                              spec_toml = excluded.spec_toml",
        )
        .bind(name)
        .bind(description)
        .bind(spec_toml)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query_as::<_, SweepRow>(sql(format!(
            "SELECT {SWEEP_COLS} FROM sweeps WHERE name = $1"
        )))
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Records which keys the sweep's grid varies and which its base sets, so that readers
    /// (dashboard, reports) never parse the spec's TOML. Called when the sweep is registered;
    /// replaces what was recorded before.
    pub async fn set_sweep_axes(&self, sweep_id: i64, axes: &SweepAxes) -> Result<()> {
        let json = serde_json::to_string(axes).expect("a list of strings always serialises");
        let updated = sqlx::query("UPDATE sweeps SET axes_json = $1 WHERE id = $2")
            .bind(json)
            .bind(sweep_id)
            .execute(self.pool())
            .await?
            .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound(format!("no sweep with id {sweep_id}")));
        }
        Ok(())
    }

    /// Records the sweep's `[prune]` rules (JSON), or that it has none; replaces what was
    /// recorded before, so a spec launched again with other rules applies them from then on.
    pub async fn set_sweep_prune(&self, sweep_id: i64, rules_json: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE sweeps SET prune_json = $1 WHERE id = $2")
            .bind(rules_json)
            .bind(sweep_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn sweep(&self, name: &str) -> Result<SweepRow> {
        sqlx::query_as::<_, SweepRow>(sql(format!(
            "SELECT {SWEEP_COLS} FROM sweeps WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no sweep named `{name}` in the store")))
    }

    pub async fn sweeps(&self) -> Result<Vec<SweepRow>> {
        Ok(sqlx::query_as::<_, SweepRow>(sql(format!(
            "SELECT {SWEEP_COLS} FROM sweeps ORDER BY id"
        )))
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn set_sweep_slurm_job(&self, sweep_id: i64, job: &str) -> Result<()> {
        sqlx::query("UPDATE sweeps SET slurm_job_id = $1 WHERE id = $2")
            .bind(job)
            .bind(sweep_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
