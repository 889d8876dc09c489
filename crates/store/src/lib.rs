//! ddlab's experiment store, the only crate that speaks SQL.
//!
//! One code path for both backends through `sqlx::AnyPool`: SQLite is the embedded default
//! (`sqlite://runs/ddlab.sqlite`, WAL mode, a long busy timeout and `BEGIN IMMEDIATE` writes so
//! that many processes can write at once), PostgreSQL serves many machines (runs are claimed
//! with `FOR UPDATE SKIP LOCKED`). The schema lives in the top-level `migrations/`, one folder
//! per backend, applied on connect. Queries are checked at run time, so a fresh clone builds
//! with no database present.

mod dashboard;
mod rows;
mod time;

pub use rows::*;
pub use time::now_rfc3339;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub static MIGRATOR_SQLITE: Migrator = sqlx::migrate!("../../migrations/sqlite");
pub static MIGRATOR_POSTGRES: Migrator = sqlx::migrate!("../../migrations/postgres");

/// How long opening a database may take before it is reported unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the store lives unless `--db` or `DDLAB_DB` says otherwise.
pub const DEFAULT_URL: &str = "sqlite://runs/ddlab.sqlite";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL `{0}` (expected sqlite://PATH or postgres://USER@HOST/DB)")]
    UnsupportedUrl(String),
    #[error(
        "the database {0} does not exist (run `ddlab sweep` or `ddlab train` first, or pass --db)"
    )]
    Missing(PathBuf),
    // The causes are part of the message, not error sources, so a chain printer does not
    // repeat them.
    #[error("cannot open the database {url}: {reason}")]
    Connect { url: String, reason: sqlx::Error },
    #[error("cannot apply the schema migrations to {url}: {reason}")]
    Migrate {
        url: String,
        reason: sqlx::migrate::MigrateError,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool to the store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: String,
}

/// Hides a password in a URL for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The file behind a `sqlite:` URL (None for in-memory databases).
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        None
    } else {
        Some(PathBuf::from(path))
    }
}

impl Store {
    /// Opens (and, with `create`, creates) the store at `url` and brings its schema up to date.
    /// Without `create`, a missing SQLite file is an error rather than a new empty database.
    pub async fn connect(url: &str, create: bool) -> Result<Store> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let mut connect_url = url.to_string();
        if backend == Backend::Sqlite
            && let Some(path) = sqlite_path(url)
        {
            if !path.exists() {
                if !create {
                    return Err(StoreError::Missing(path));
                }
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| StoreError::Connect {
                        url: url.to_string(),
                        reason: sqlx::Error::Io(e),
                    })?;
                }
            }
            if !url.contains("mode=") {
                connect_url.push_str(if url.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
        }
        let opts = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(120));
        let opts = if backend == Backend::Sqlite {
            opts.after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    // A minute of patience for writers; WAL lets readers run beside a writer.
                    conn.execute("PRAGMA busy_timeout = 60000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            })
        } else {
            opts
        };
        // sqlx retries refused connections until the acquire timeout; an unreachable server
        // should be reported within seconds instead.
        let pool = match tokio::time::timeout(CONNECT_TIMEOUT, opts.connect(&connect_url)).await {
            Ok(Ok(pool)) => pool,
            Ok(Err(reason)) => {
                return Err(StoreError::Connect {
                    url: redact(url),
                    reason,
                });
            }
            Err(_) => {
                return Err(StoreError::Connect {
                    url: redact(url),
                    reason: sqlx::Error::PoolTimedOut,
                });
            }
        };
        let store = Store {
            pool,
            backend,
            url: url.to_string(),
        };
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&store.pool)
                .await?;
        }
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &MIGRATOR_SQLITE,
            Backend::Postgres => &MIGRATOR_POSTGRES,
        };
        // Several processes may open a new SQLite file at once; the loser of the race sees the
        // tables appear under it and succeeds on a second look.
        let mut attempt = 0;
        loop {
            match migrator.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 5 && self.backend == Backend::Sqlite => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                    let _ = e;
                }
                Err(reason) => {
                    return Err(StoreError::Migrate {
                        url: redact(&self.url),
                        reason,
                    });
                }
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL with any password hidden.
    pub fn display_url(&self) -> String {
        redact(&self.url)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`), so
    /// the busy timeout applies instead of an immediate "database is locked" on upgrade.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    // ---- sweeps ------------------------------------------------------------------------

    /// Creates the sweep or returns the existing one of that name (updating its spec text).
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

    /// This store's random id, written once by a migration: run folders are named after it, so
    /// a checkpoint on disk is only ever found by the store whose run wrote it.
    pub async fn store_id(&self) -> Result<String> {
        let id: Option<(String,)> =
            sqlx::query_as("SELECT value FROM store_info WHERE key = 'store_id'")
                .fetch_optional(&self.pool)
                .await?;
        id.map(|(v,)| v)
            .ok_or_else(|| StoreError::NotFound("this store has no store id".into()))
    }

    pub async fn sweep(&self, name: &str) -> Result<SweepRow> {
        sqlx::query_as::<_, SweepRow>(sql(format!(
            "SELECT {SWEEP_COLS} FROM sweeps WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no sweep named `{name}` in the store")))
    }

    pub async fn sweeps(&self) -> Result<Vec<SweepRow>> {
        Ok(sqlx::query_as::<_, SweepRow>(sql(format!(
            "SELECT {SWEEP_COLS} FROM sweeps ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn set_sweep_slurm_job(&self, sweep_id: i64, job: &str) -> Result<()> {
        sqlx::query("UPDATE sweeps SET slurm_job_id = $1 WHERE id = $2")
            .bind(job)
            .bind(sweep_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- runs --------------------------------------------------------------------------

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
            .fetch_optional(&self.pool)
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
        Ok(query.fetch_all(&self.pool).await?)
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sets the final (or interrupted) status of a run.
    pub async fn finish_run(&self, id: i64, status: RunStatus, error: Option<&str>) -> Result<()> {
        let finished = matches!(status, RunStatus::Completed | RunStatus::Failed).then(now_rfc3339);
        sqlx::query("UPDATE runs SET status = $1, error = $2, finished_at = $3 WHERE id = $4")
            .bind(status.as_str())
            .bind(error)
            .bind(finished)
            .bind(id)
            .execute(&self.pool)
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
                .execute(&self.pool)
                .await?
            }
            None => {
                sqlx::query("UPDATE runs SET steps_done = $1, heartbeat_at = $2 WHERE id = $3")
                    .bind(steps_done)
                    .bind(now)
                    .bind(id)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(())
    }

    /// Puts failed runs of a sweep back to pending (`--retry-failed`).
    pub async fn reset_failed(&self, sweep_id: i64) -> Result<u64> {
        Ok(sqlx::query("UPDATE runs SET status = 'pending', error = NULL WHERE sweep_id = $1 AND status = 'failed'")
            .bind(sweep_id)
            .execute(&self.pool)
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
        .execute(&self.pool)
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
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Releases a run this worker holds back to `pending` (e.g. before a time limit).
    pub async fn release_run(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE runs SET status = 'pending', worker = NULL WHERE id = $1 AND status = 'running'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- metrics -----------------------------------------------------------------------

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
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Metric names recorded for a run.
    pub async fn metric_names(&self, run_id: i64) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT name FROM metrics WHERE run_id = $1 ORDER BY name")
            .bind(run_id)
            .fetch_all(&self.pool)
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
        .fetch_one(&self.pool)
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
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<f64, _>(1)?)))
            .collect()
    }

    /// Every row of one metric (for reports and tests).
    pub async fn metric_rows(&self, run_id: i64, name: &str) -> Result<Vec<(i64, Option<f64>)>> {
        let rows = sqlx::query(
            "SELECT step, value FROM metrics WHERE run_id = $1 AND name = $2 ORDER BY step",
        )
        .bind(run_id)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    // ---- samples and evals -------------------------------------------------------------

    pub async fn insert_sample(&self, s: &NewSample) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let id = sqlx::query(
            "INSERT INTO samples (run_id, step, sampler, sample_steps, prompt, guidance, guidance_scale,
                                  count, width, height, png, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
        )
        .bind(s.run_id)
        .bind(s.step)
        .bind(&s.sampler)
        .bind(s.sample_steps)
        .bind(&s.prompt)
        .bind(&s.guidance)
        .bind(s.guidance_scale)
        .bind(s.count)
        .bind(s.width)
        .bind(s.height)
        .bind(&s.png)
        .bind(now_rfc3339())
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        tx.commit().await?;
        Ok(id)
    }

    /// Sample metadata of a run (no image bytes), newest last.
    pub async fn samples(&self, run_id: i64) -> Result<Vec<SampleInfo>> {
        Ok(sqlx::query_as::<_, SampleInfo>(sql(format!(
            "SELECT {SAMPLE_INFO_COLS} FROM samples WHERE run_id = $1 ORDER BY step, id"
        )))
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn sample_png(&self, sample_id: i64) -> Result<Vec<u8>> {
        let row = sqlx::query("SELECT png FROM samples WHERE id = $1")
            .bind(sample_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no sample with id {sample_id}")))?;
        Ok(row.try_get(0)?)
    }

    /// The newest sample grid of a run.
    pub async fn latest_sample(&self, run_id: i64) -> Result<Option<(SampleInfo, Vec<u8>)>> {
        let info = sqlx::query_as::<_, SampleInfo>(sql(format!(
            "SELECT {SAMPLE_INFO_COLS} FROM samples WHERE run_id = $1 ORDER BY step DESC, id DESC LIMIT 1"
        )))
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?;
        match info {
            Some(i) => {
                let png = self.sample_png(i.id).await?;
                Ok(Some((i, png)))
            }
            None => Ok(None),
        }
    }

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
        .fetch_all(&self.pool)
        .await?)
    }

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
        Ok(query.fetch_all(&self.pool).await?)
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

    /// SQLite's own consistency check ("ok" when sound); PostgreSQL answers "ok".
    pub async fn integrity_check(&self) -> Result<String> {
        match self.backend {
            Backend::Sqlite => Ok(sqlx::query("PRAGMA integrity_check")
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?),
            Backend::Postgres => Ok("ok".into()),
        }
    }
}

/// Marks SQL text assembled in this file from constant fragments (column lists, table names,
/// placeholders) as audited: no user input is ever formatted into a statement.
fn sql(text: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(text)
}

/// Resolves the database URL: explicit, else `DDLAB_DB`, else the default file.
pub fn resolve_url(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| std::env::var("DDLAB_DB").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_URL.to_string())
}

/// Turns a path into a `sqlite://` URL.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}
