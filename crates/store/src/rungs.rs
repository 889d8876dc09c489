//! The `rungs` table: each run's value at each rung of its sweep's `[prune]` rules and the
//! decision taken there. A decision is made inside one write transaction that reads what the
//! other workers recorded at the same rung, so two workers never decide on a stale view.

use crate::{Backend, Result, Store, now_rfc3339, sql};
use serde::Serialize;

const RUNG_COLS: &str = "id, sweep_id, run_id, rung, metric, value, group_key, trial_key, \
     decision, rank, trials, kept, threshold, reason, created_at";

/// A rung reached by a run, with what was decided there.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RungRow {
    /// The order in which runs reached their rungs.
    pub id: i64,
    pub sweep_id: i64,
    pub run_id: i64,
    pub rung: i64,
    pub metric: String,
    pub value: Option<f64>,
    pub group_key: String,
    pub trial_key: String,
    /// `continue` or `pruned`.
    pub decision: String,
    pub rank: i64,
    pub trials: i64,
    pub kept: i64,
    pub threshold: Option<f64>,
    pub reason: String,
    pub created_at: String,
}

impl RungRow {
    pub fn pruned(&self) -> bool {
        self.decision == "pruned"
    }
}

/// A run arriving at a rung.
#[derive(Debug, Clone)]
pub struct NewRung<'a> {
    pub sweep_id: i64,
    pub run_id: i64,
    pub rung: i64,
    pub metric: &'a str,
    pub value: Option<f64>,
    pub group_key: &'a str,
    pub trial_key: &'a str,
}

/// What the caller's rule decided from the entries at the rung.
#[derive(Debug, Clone, PartialEq)]
pub struct RungDecision {
    pub go_on: bool,
    pub rank: i64,
    pub trials: i64,
    pub kept: i64,
    pub threshold: Option<f64>,
    pub reason: String,
}

impl Store {
    /// Records `new` and decides, atomically: `decide` sees the (trial, value) of every run of
    /// the group already at this rung plus this run's own (last). A pruned run is marked
    /// `pruned` in the same transaction. A rung already recorded for the run (a resumed run)
    /// returns its earlier decision unchanged.
    pub async fn reach_rung(
        &self,
        new: &NewRung<'_>,
        decide: impl FnOnce(&[(String, Option<f64>)]) -> RungDecision,
    ) -> Result<RungRow> {
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            // One decision at a time per sweep: the row lock orders them like SQLite's
            // IMMEDIATE transaction does.
            sqlx::query("SELECT id FROM sweeps WHERE id = $1 FOR UPDATE")
                .bind(new.sweep_id)
                .execute(&mut *tx)
                .await?;
        }
        let earlier = sqlx::query_as::<_, RungRow>(sql(format!(
            "SELECT {RUNG_COLS} FROM rungs WHERE run_id = $1 AND rung = $2"
        )))
        .bind(new.run_id)
        .bind(new.rung)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = earlier {
            tx.commit().await?;
            return Ok(row);
        }
        let mut entries: Vec<(String, Option<f64>)> = sqlx::query_as(
            "SELECT trial_key, value FROM rungs
             WHERE sweep_id = $1 AND rung = $2 AND group_key = $3 ORDER BY id",
        )
        .bind(new.sweep_id)
        .bind(new.rung)
        .bind(new.group_key)
        .fetch_all(&mut *tx)
        .await?;
        entries.push((new.trial_key.to_string(), new.value));
        let d = decide(&entries);
        let decision = if d.go_on { "continue" } else { "pruned" };
        let now = now_rfc3339();
        let id: i64 = sqlx::query_scalar(crate::sql(format!(
            "INSERT INTO rungs (sweep_id, run_id, rung, metric, value, group_key, trial_key,
                                decision, rank, trials, kept, threshold, reason, created_at)
             VALUES ($1, $2, $3, $4, {}, $6, $7, $8, $9, $10, $11, {}, $13, $14) RETURNING id",
            self.float_arg(5),
            self.float_arg(12)
        )))
        .bind(new.sweep_id)
        .bind(new.run_id)
        .bind(new.rung)
        .bind(new.metric)
        .bind(crate::float_param(new.value))
        .bind(new.group_key)
        .bind(new.trial_key)
        .bind(decision)
        .bind(d.rank)
        .bind(d.trials)
        .bind(d.kept)
        .bind(crate::float_param(d.threshold))
        .bind(&d.reason)
        .bind(&now)
        .fetch_one(&mut *tx)
        .await?;
        if !d.go_on {
            sqlx::query(
                "UPDATE runs SET status = 'pruned', finished_at = $1, error = NULL WHERE id = $2",
            )
            .bind(&now)
            .bind(new.run_id)
            .execute(&mut *tx)
            .await?;
        }
        let row = sqlx::query_as::<_, RungRow>(sql(format!(
            "SELECT {RUNG_COLS} FROM rungs WHERE id = $1"
        )))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Every rung reached in a sweep, in the order reached.
    pub async fn rungs(&self, sweep_id: i64) -> Result<Vec<RungRow>> {
        Ok(sqlx::query_as::<_, RungRow>(sql(format!(
            "SELECT {RUNG_COLS} FROM rungs WHERE sweep_id = $1 ORDER BY id"
        )))
        .bind(sweep_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Where and why each run that is pruned now stopped (its pruning rung), by run.
    pub async fn pruned_rungs(&self) -> Result<Vec<RungRow>> {
        let cols = RUNG_COLS
            .split(", ")
            .map(|c| format!("g.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(sqlx::query_as::<_, RungRow>(sql(format!(
            "SELECT {cols} FROM rungs g JOIN runs r ON r.id = g.run_id
             WHERE r.status = 'pruned' AND g.decision = 'pruned' ORDER BY g.id"
        )))
        .fetch_all(self.pool())
        .await?)
    }

    /// Continues a pruned run: its decision at `rung` becomes `continue` with `reason`, and the
    /// run goes back to pending, to resume from the checkpoint it kept. False when the run was
    /// no longer pruned (another process continued it first).
    pub async fn unprune(&self, run_id: i64, rung: i64, reason: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE runs SET status = 'pending', finished_at = NULL, worker = NULL
             WHERE id = $1 AND status = 'pruned'",
        )
        .bind(run_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            sqlx::query(
                "UPDATE rungs SET decision = 'continue', reason = $1 WHERE run_id = $2 AND rung = $3",
            )
            .bind(reason)
            .bind(run_id)
            .bind(rung)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }
}
