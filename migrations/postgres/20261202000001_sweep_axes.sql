-- The axes of a sweep's grid, recorded when the sweep is registered, so that readers (the
-- dashboard, reports) never parse `spec_toml`: JSON text {"grid_keys": [...], "base_keys": [...]}.
-- A JSON column rather than a table of keys because the axes are written once with the sweep,
-- always read whole with it and never queried by key, and because NULL tells apart a sweep
-- registered before this migration (nothing recorded: readers derive what varies from the
-- runs' config_json) from one whose grid is empty.
-- Append-only: an applied migration is never edited.

ALTER TABLE sweeps ADD COLUMN axes_json TEXT;
