-- Per-run summaries kept as rows: `run_stats` holds each run's newest `loss` step and value
-- and its lowest finite loss, maintained by the store inside the transaction that writes the
-- metric rows (and recomputed from them when a resumed run drops rows after its checkpoint).
-- `run_summary` read them with correlated subqueries over `metrics` before: the best loss
-- scanned every loss row of every run, 5 s for `ddlab runs` at 10^8 rows. Rows of a store
-- written before are backfilled here from its metrics (one pass).
-- Append-only: an applied migration is never edited.

CREATE TABLE run_stats (
    run_id    BIGINT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    last_step BIGINT NOT NULL,  -- the newest step with a `loss` row
    last_loss DOUBLE PRECISION,          -- its value; NULL when not finite
    best_loss DOUBLE PRECISION           -- the lowest finite loss; NULL when none is
);

INSERT INTO run_stats (run_id, last_step, last_loss, best_loss)
SELECT l.run_id, l.step, l.value, b.best
FROM (SELECT run_id, MAX(step) AS step FROM metrics WHERE name = 'loss' GROUP BY run_id) AS t
JOIN metrics l ON l.run_id = t.run_id AND l.name = 'loss' AND l.step = t.step
JOIN (SELECT run_id, MIN(value) AS best FROM metrics WHERE name = 'loss' GROUP BY run_id) AS b
  ON b.run_id = t.run_id;

CREATE OR REPLACE VIEW run_summary AS
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
    st.last_loss AS last_loss,
    st.best_loss AS best_loss,
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
FROM runs r LEFT JOIN sweeps s ON s.id = r.sweep_id
LEFT JOIN run_stats st ON st.run_id = r.id;
