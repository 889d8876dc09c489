//! The `runs` table: registering runs, their life cycle (claim, progress, finish, requeue) and
//! which of them have lost their worker.

use crate::rows::RUN_COLS;
use crate::{Backend, NewRun, Result, RunRow, RunStatus, Store, StoreError, WorkerInfo};
use crate::{now_rfc3339, sql, time};
use sqlx::Row;
use std::time::Duration;

/// A running run whose heartbeat is older than this has lost its worker: workers refresh it
/// every few seconds, so 90 s is many missed beats. The runner requeues such runs; the
/// dashboard shows them as stalled.
pub const STALE_AFTER: Duration = Duration::from_secs(90);

impl Store {
    /// Registers a run; in a sweep, a run with the same config hash is returned instead.
    pub async fn ensure_run(&self, new: &NewRun) -> Result<RunRow> {
        let mut tx = self.begin_write().await?;
        if let Some(sweep_id) = new.sweep_id {
            let existing = sqlx::query_as::<_, RunRow>(sql(format!(
                "SELECT {RUN_COLS} FROM runs WHERE sweep_id = $1 AND config_hash = $2"
            )))
            .bind(sweep_id)
            .bind(&new.config_hash)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = existing {
                tx.commit().await?;
                return Ok(r);
            }
        }
        let id: i64 = sqlx::query(
            "INSERT INTO runs (sweep_id, name, config_hash, config_json, dataset, model, schedule,
                               timesteps, seed, steps_total, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(new.sweep_id)
        .bind(&new.name)
        .bind(&new.config_hash)
        .bind(&new.config_json)
        .bind(&new.dataset)
        .bind(&new.model)
        .bind(&new.schedule)
        .bind(new.timesteps)
        .bind(new.seed)
        .bind(new.steps_total)
        .bind(now_rfc3339())
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let row =
            sqlx::query_as::<_, RunRow>(sql(format!("SELECT {RUN_COLS} FROM runs WHERE id = $1")))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn run(&self, id: i64) -> Result<RunRow> {
        sqlx::query_as::<_, RunRow>(sql(format!("SELECT {RUN_COLS} FROM runs WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no run with id {id}")))
    }

    /// Runs of one sweep, or all runs, oldest first.
    pub async fn runs(&self, sweep_id: Option<i64>) -> Result<Vec<RunRow>> {
        let q = match sweep_id {
            Some(_) => format!("SELECT {RUN_COLS} FROM runs WHERE sweep_id = $1 ORDER BY id"),
            None => format!("SELECT {RUN_COLS} FROM runs ORDER BY id"),
        };
        let mut query = sqlx::query_as::<_, RunRow>(sql(q));
        if let Some(s) = sweep_id {
            query = query.bind(s);
        }
        Ok(query.fetch_all(self.pool()).await?)
    }

    /// Marks a run as running on this worker and counts the attempt.
    pub async fn start_run(&self, id: i64, device: &str, worker: &WorkerInfo) -> Result<()> {
        let now = now_rfc3339();
        sqlx::query(
            "UPDATE runs SET status = 'running', device = $1, host = $2, worker = $3,
                    slurm_job = $4, slurm_task = $5, heartbeat_at = $6, attempts = attempts + 1,
                    started_at = COALESCE(started_at, $6), finished_at = NULL, error = NULL
             WHERE id = $7",
        )
        .bind(device)
        .bind(&worker.host)
        .bind(&worker.worker)
        .bind(&worker.slurm_job)
        .bind(worker.slurm_task)
        .bind(&now)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Sets the final (or interrupted) status of a run.
    pub async fn finish_run(&self, id: i64, status: RunStatus, error: Option<&str>) -> Result<()> {
        let finished = matches!(
            status,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Pruned
        )
        .then(now_rfc3339);
        sqlx::query("UPDATE runs SET status = $1, error = $2, finished_at = $3 WHERE id = $4")
            .bind(status.as_str())
            .bind(error)
            .bind(finished)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records progress; `checkpoint` when a checkpoint at `steps_done` was just written.
    pub async fn progress(&self, id: i64, steps_done: i64, checkpoint: Option<&str>) -> Result<()> {
        let now = now_rfc3339();
        match checkpoint {
            Some(path) => {
                sqlx::query(
                    "UPDATE runs SET steps_done = $1, checkpoint_step = $1, checkpoint_path = $2,
                            heartbeat_at = $3 WHERE id = $4",
                )
                .bind(steps_done)
                .bind(path)
                .bind(now)
                .bind(id)
                .execute(self.pool())
                .await?
            }
            None => {
                sqlx::query("UPDATE runs SET steps_done = $1, heartbeat_at = $2 WHERE id = $3")
                    .bind(steps_done)
                    .bind(now)
                    .bind(id)
                    .execute(self.pool())
                    .await?
            }
        };
        Ok(())
    }

    /// Puts failed runs of a sweep back to pending (`--retry-failed`).
    pub async fn reset_failed(&self, sweep_id: i64) -> Result<u64> {
        Ok(sqlx::query("UPDATE runs SET status = 'pending', error = NULL WHERE sweep_id = $1 AND status = 'failed'")
            .bind(sweep_id)
            .execute(self.pool())
            .await?
            .rows_affected())
    }

    /// Claims the next runnable run of a sweep (pending or interrupted) for this worker, or
    /// None when there is none. Atomic across processes and machines.
    pub async fn claim_next_run(
        &self,
        sweep_id: i64,
        device: &str,
        worker: &WorkerInfo,
    ) -> Result<Option<RunRow>> {
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let now = now_rfc3339();
        let mut tx = self.begin_write().await?;
        let id: Option<i64> = sqlx::query(sql(format!(
            "UPDATE runs SET status = 'running', device = $1, host = $2, worker = $3, slurm_job = $4,
                    slurm_task = $5, heartbeat_at = $6, started_at = COALESCE(started_at, $6),
                    finished_at = NULL, error = NULL
             WHERE id = (SELECT id FROM runs WHERE sweep_id = $7 AND status IN ('pending', 'interrupted')
                         ORDER BY id LIMIT 1 {lock})
             RETURNING id"
        )))
        .bind(device)
        .bind(&worker.host)
        .bind(&worker.worker)
        .bind(&worker.slurm_job)
        .bind(worker.slurm_task)
        .bind(&now)
        .bind(sweep_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
        tx.commit().await?;
        match id {
            Some(id) => Ok(Some(self.run(id).await?)),
            None => Ok(None),
        }
    }

    /// Returns runs whose worker stopped sending heartbeats to `pending`, so another worker
    /// resumes them from their checkpoint. Returns how many were requeued.
    pub async fn requeue_stale(&self, sweep_id: i64, stale_after: Duration) -> Result<u64> {
        let cutoff = time::rfc3339_ago(stale_after);
        Ok(sqlx::query(
            "UPDATE runs SET status = 'pending', worker = NULL
             WHERE sweep_id = $1 AND status = 'running' AND heartbeat_at < $2",
        )
        .bind(sweep_id)
        .bind(cutoff)
        .execute(self.pool())
        .await?
        .rows_affected())
    }

    /// Marks every unfinished run of a sweep (pending or running) `interrupted` with a reason;
    /// they resume when workers start again. Returns how many.
    pub async fn interrupt_unfinished(&self, sweep_id: i64, reason: &str) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE runs SET status = 'interrupted', error = $1
             WHERE sweep_id = $2 AND status IN ('pending', 'running')",
        )
        .bind(reason)
        .bind(sweep_id)
        .execute(self.pool())
        .await?
        .rows_affected())
    }

    /// Releases a run this worker holds back to `pending` (e.g. before a time limit).
    pub async fn release_run(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE runs SET status = 'pending', worker = NULL WHERE id = $1 AND status = 'running'")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Deletes runs (and their rows) by id.
    pub async fn delete_run(&self, id: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for table in ["metrics", "samples", "evals"] {
            sqlx::query(sql(format!("DELETE FROM {table} WHERE run_id = $1")))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM runs WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Running runs (of one sweep, or of all) whose heartbeat is older than [`STALE_AFTER`],
    /// oldest first: their worker has probably gone.
    pub async fn stalled_runs(&self, sweep_id: Option<i64>) -> Result<Vec<RunRow>> {
        // Fixed-width RFC 3339 UTC text: text order is time order in both backends.
        let cutoff = time::rfc3339_ago(STALE_AFTER);
        let q = match sweep_id {
            Some(_) => format!(
                "SELECT {RUN_COLS} FROM runs WHERE status = 'running' AND heartbeat_at < $1
                 AND sweep_id = $2 ORDER BY id"
            ),
            None => format!(
                "SELECT {RUN_COLS} FROM runs WHERE status = 'running' AND heartbeat_at < $1
                 ORDER BY id"
            ),
        };
        let mut query = sqlx::query_as::<_, RunRow>(sql(q)).bind(cutoff);
        if let Some(s) = sweep_id {
            query = query.bind(s);
        }
        Ok(query.fetch_all(self.pool()).await?)
    }
}
