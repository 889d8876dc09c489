-- ddlab's schema (PostgreSQL). Times are RFC 3339 UTC text; metrics.wall_time is Unix seconds.
-- An applied migration is never edited: add a new file instead.

CREATE TABLE sweeps (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    description  TEXT NOT NULL DEFAULT '',
    spec_toml    TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    slurm_job_id TEXT
);

CREATE TABLE runs (
    id              BIGSERIAL PRIMARY KEY,
    sweep_id        BIGINT REFERENCES sweeps(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    config_hash     TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'interrupted')),
    config_json     TEXT NOT NULL,
    dataset         TEXT NOT NULL,
    model           TEXT NOT NULL,
    schedule        TEXT NOT NULL,
    timesteps       BIGINT NOT NULL,
    seed            BIGINT NOT NULL,
    steps_total     BIGINT NOT NULL,
    steps_done      BIGINT NOT NULL DEFAULT 0,
    checkpoint_step BIGINT NOT NULL DEFAULT 0,
    checkpoint_path TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,  -- executions started (resumes count)
    device          TEXT,
    host            TEXT,
    worker          TEXT,
    heartbeat_at    TEXT,
    slurm_job       TEXT,
    slurm_task      BIGINT,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    error           TEXT
);
-- One run per distinct config in a sweep; standalone runs (sweep_id NULL) may repeat.
CREATE UNIQUE INDEX runs_sweep_config ON runs (sweep_id, config_hash) WHERE sweep_id IS NOT NULL;
CREATE INDEX runs_status ON runs (sweep_id, status);

CREATE TABLE metrics (
    run_id    BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step      BIGINT NOT NULL,
    name      TEXT NOT NULL,
    value     DOUBLE PRECISION,            -- NULL when not finite (as in SQLite)
    wall_time DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, name, step)
);

CREATE TABLE samples (
    id             BIGSERIAL PRIMARY KEY,
    run_id         BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step           BIGINT NOT NULL,
    sampler        TEXT NOT NULL,
    sample_steps   BIGINT NOT NULL,
    prompt         TEXT,
    guidance       TEXT,
    guidance_scale DOUBLE PRECISION,
    count          BIGINT NOT NULL,
    width          BIGINT NOT NULL,
    height         BIGINT NOT NULL,
    png            BYTEA NOT NULL,
    created_at     TEXT NOT NULL
);
CREATE INDEX samples_run ON samples (run_id, step);

CREATE TABLE evals (
    run_id       BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    value        DOUBLE PRECISION,
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
