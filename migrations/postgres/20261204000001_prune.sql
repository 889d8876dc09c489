-- Early stopping (`[prune]`, asynchronous successive halving): a run may end `pruned` at a
-- rung, keeping its checkpoint to be continued later.
-- `rungs`: one row per run per rung reached, with the decision and the numbers behind it.
-- Append-only: an applied migration is never edited.

ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'interrupted', 'pruned'));

CREATE TABLE rungs (
    id         BIGSERIAL PRIMARY KEY,  -- the order runs reached their rungs in
    sweep_id   BIGINT NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    run_id     BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    rung       BIGINT NOT NULL,   -- the training step
    metric     TEXT NOT NULL,     -- loss | nll_bpd
    value      DOUBLE PRECISION,  -- the run's own value; NULL when not finite
    group_key  TEXT NOT NULL,     -- JSON of the `within` keys' values ('' = the whole sweep)
    trial_key  TEXT NOT NULL,     -- the run's identity without its seed
    decision   TEXT NOT NULL CHECK (decision IN ('continue', 'pruned')),
    rank       BIGINT NOT NULL,   -- of its trial (seeds averaged) among the trials at the rung
    trials     BIGINT NOT NULL,
    kept       BIGINT NOT NULL,   -- how many trials went on
    threshold  DOUBLE PRECISION,  -- the value of the last trial that went on
    reason     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (run_id, rung)
);
CREATE INDEX rungs_by_group ON rungs (sweep_id, rung, group_key);
