-- ddlab's schema (SQLite). Times are RFC 3339 UTC text; metrics.wall_time is Unix seconds.
-- An applied migration is never edited: add a new file instead.

CREATE TABLE sweeps (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL UNIQUE,
    description  TEXT NOT NULL DEFAULT '',
    spec_toml    TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    slurm_job_id TEXT
);

CREATE TABLE runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sweep_id        INTEGER REFERENCES sweeps(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    config_hash     TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'interrupted')),
    config_json     TEXT NOT NULL,
    dataset         TEXT NOT NULL,
    model           TEXT NOT NULL,
    schedule        TEXT NOT NULL,
    timesteps       INTEGER NOT NULL,
    seed            INTEGER NOT NULL,
    steps_total     INTEGER NOT NULL,
    steps_done      INTEGER NOT NULL DEFAULT 0,
    checkpoint_step INTEGER NOT NULL DEFAULT 0,
    checkpoint_path TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,  -- executions started (resumes count)
    device          TEXT,
    host            TEXT,
    worker          TEXT,
    heartbeat_at    TEXT,
    slurm_job       TEXT,
    slurm_task      INTEGER,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    error           TEXT
);
-- One run per distinct config in a sweep; standalone runs (sweep_id NULL) may repeat.
CREATE UNIQUE INDEX runs_sweep_config ON runs (sweep_id, config_hash) WHERE sweep_id IS NOT NULL;
CREATE INDEX runs_status ON runs (sweep_id, status);

CREATE TABLE metrics (
    run_id    INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step      INTEGER NOT NULL,
    name      TEXT NOT NULL,
    value     REAL,            -- NULL when not finite (SQLite has no NaN)
    wall_time REAL NOT NULL,
    PRIMARY KEY (run_id, name, step)
) WITHOUT ROWID;

CREATE TABLE samples (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id         INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step           INTEGER NOT NULL,
    sampler        TEXT NOT NULL,
    sample_steps   INTEGER NOT NULL,
    prompt         TEXT,
    guidance       TEXT,
    guidance_scale REAL,
    count          INTEGER NOT NULL,
    width          INTEGER NOT NULL,
    height         INTEGER NOT NULL,
    png            BLOB NOT NULL,
    created_at     TEXT NOT NULL
);
CREATE INDEX samples_run ON samples (run_id, step);

CREATE TABLE evals (
    run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    value        REAL,
    details_json TEXT NOT NULL DEFAULT '{}',
    created_at   TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);

CREATE VIEW run_summary AS
SELECT
    r.id AS run_id,
    s.name AS sweep,
    r.name AS name,
    r.dataset,
    r.model,
    r.schedule,
    r.timesteps AS "T",
    r.seed,
    r.status,
    r.steps_done,
    r.steps_total,
    (SELECT m.value FROM metrics m WHERE m.run_id = r.id AND m.name = 'loss'
      ORDER BY m.step DESC LIMIT 1) AS last_loss,
    (SELECT MIN(m.value) FROM metrics m WHERE m.run_id = r.id AND m.name = 'loss') AS best_loss,
    (SELECT e.value FROM evals e WHERE e.run_id = r.id AND e.name = 'nll_bpd') AS nll_bpd,
    (SELECT e.value FROM evals e WHERE e.run_id = r.id AND e.name = 'nll_bpd_stderr') AS nll_bpd_stderr,
    (SELECT e.value FROM evals e WHERE e.run_id = r.id AND e.name = 'prompt_accuracy') AS prompt_accuracy,
    (SELECT e.value FROM evals e WHERE e.run_id = r.id AND e.name = 'frechet_distance') AS frechet_distance,
    r.device,
    r.started_at,
    r.finished_at,
    r.error
FROM runs r LEFT JOIN sweeps s ON s.id = r.sweep_id;
