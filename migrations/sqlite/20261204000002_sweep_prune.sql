-- A sweep's `[prune]` rules as JSON text (NULL: no early stopping), recorded at registration
-- beside its axes, so `ddlab work` and Slurm workers apply the rules without the spec file.
-- Append-only: an applied migration is never edited.

ALTER TABLE sweeps ADD COLUMN prune_json TEXT;
