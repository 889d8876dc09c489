-- The training loss by noise level: per flush window of a run (the rows written together,
-- every few seconds and before each checkpoint), the mean loss of the examples whose timestep
-- fell in each of `buckets` equal buckets of [0, T). A table rather than metric names because
-- a bucket is a row of its own (its bounds, its count, two means) that readers select by
-- bucket and step; names like `loss_t3` would have to be parsed back by every reader.
-- Append-only: an applied migration is never edited.

CREATE TABLE loss_buckets (
    run_id        INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step          INTEGER NOT NULL,   -- the last training step of the window
    bucket        INTEGER NOT NULL,   -- 0 .. buckets-1
    buckets       INTEGER NOT NULL,
    t_lo          INTEGER NOT NULL,   -- timestep indices [t_lo, t_hi) of the bucket
    t_hi          INTEGER NOT NULL,
    count         INTEGER NOT NULL,   -- examples of the window in the bucket
    loss          REAL,           -- their mean unweighted objective loss (NULL: not finite)
    weighted_loss REAL,           -- their mean min-SNR-weighted loss; NULL when unweighted
    wall_time     REAL NOT NULL,
    PRIMARY KEY (run_id, step, bucket)
) WITHOUT ROWID;
