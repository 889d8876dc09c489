-- no-transaction
-- Early stopping (`[prune]`, asynchronous successive halving): a run may end `pruned` at a
-- rung, keeping its checkpoint to be continued later. SQLite cannot change a CHECK constraint
-- in place, so `runs` is rebuilt (SQLite's documented procedure: foreign keys off, copy,
-- drop, rename, in one transaction). Foreign keys must be off outside the transaction, which
-- is why this file runs without sqlx's own; it is idempotent, so a crash after its COMMIT and
-- before the migration is recorded is repaired by running it again.
-- `rungs`: one row per run per rung reached, with the decision and the numbers behind it.
-- `sweeps.prune_json`: the sweep's rules, so workers that never saw the spec apply them.
-- Append-only: an applied migration is never edited.

PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

DROP VIEW IF EXISTS run_summary;

CREATE TABLE runs_with_pruned (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sweep_id        INTEGER REFERENCES sweeps(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    config_hash     TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'interrupted', 'pruned')),
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
    attempts        INTEGER NOT NULL DEFAULT 0,
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
INSERT INTO runs_with_pruned SELECT * FROM runs;
DROP TABLE runs;
ALTER TABLE runs_with_pruned RENAME TO runs;
CREATE UNIQUE INDEX runs_sweep_config ON runs (sweep_id, config_hash) WHERE sweep_id IS NOT NULL;
CREATE INDEX runs_status ON runs (sweep_id, status);

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
    (SELECT e.value FROM evals e WHERE e.run_id = r.id AND e.name = 'nll_bpd'
      ORDER BY e.step DESC, e.created_at LIMIT 1) AS nll_bpd,
    (SELECT e.value FROM evals e WHERE e.run_id = r.id AND e.name = 'nll_bpd_stderr'
      ORDER BY e.step DESC, e.created_at LIMIT 1) AS nll_bpd_stderr,
    (SELECT e.value FROM evals e WHERE e.run_id = r.id AND e.name = 'prompt_accuracy'
      ORDER BY e.step DESC, e.created_at LIMIT 1) AS prompt_accuracy,
    (SELECT e.value FROM evals e WHERE e.run_id = r.id AND e.name = 'frechet_distance'
      ORDER BY e.step DESC, e.created_at LIMIT 1) AS frechet_distance,
    r.device,
    r.started_at,
    r.finished_at,
    r.error
FROM runs r LEFT JOIN sweeps s ON s.id = r.sweep_id;

CREATE TABLE IF NOT EXISTS rungs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order runs reached their rungs in
    sweep_id   INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    run_id     INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    rung       INTEGER NOT NULL,   -- the training step
    metric     TEXT NOT NULL,      -- loss | nll_bpd
    value      REAL,               -- the run's own value; NULL when not finite
    group_key  TEXT NOT NULL,      -- JSON of the `within` keys' values ('' = the whole sweep)
    trial_key  TEXT NOT NULL,      -- the run's identity without its seed
    decision   TEXT NOT NULL CHECK (decision IN ('continue', 'pruned')),
    rank       INTEGER NOT NULL,   -- of its trial (seeds averaged) among the trials at the rung
    trials     INTEGER NOT NULL,
    kept       INTEGER NOT NULL,   -- how many trials went on
    threshold  REAL,               -- the value of the last trial that went on
    reason     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (run_id, rung)
);
CREATE INDEX IF NOT EXISTS rungs_by_group ON rungs (sweep_id, rung, group_key);

COMMIT;
PRAGMA foreign_keys = ON;
