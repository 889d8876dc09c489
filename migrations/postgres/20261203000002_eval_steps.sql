-- Evaluations over training: `evals` gains the training step whose (EMA) weights were
-- evaluated and `method`, the canonical text of how the value was computed (kind, images,
-- timesteps, sampler, steps, seed, judge checkpoint hash: the same text means comparable
-- values). The key becomes (run_id, name, step, method), so a run records its NLL every
-- `eval_every` steps and `ddlab eval --sweep` records other settings beside the originals.
-- Rows from before: every evaluation then ran after the last step, so their step is the run's
-- steps_done; their method is '' (recorded before provenance: the run's own evaluation under
-- its config, described by details_json). run_summary shows the latest step's first value.
-- Append-only: an applied migration is never edited.

ALTER TABLE evals ADD COLUMN step BIGINT;
ALTER TABLE evals ADD COLUMN method TEXT NOT NULL DEFAULT '';
UPDATE evals e SET step = r.steps_done FROM runs r WHERE r.id = e.run_id;
UPDATE evals SET step = 0 WHERE step IS NULL;
ALTER TABLE evals ALTER COLUMN step SET NOT NULL;
ALTER TABLE evals DROP CONSTRAINT evals_pkey;
ALTER TABLE evals ADD PRIMARY KEY (run_id, name, step, method);

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
