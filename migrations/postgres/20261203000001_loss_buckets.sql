-- The training loss by noise level: per flush window of a run (the rows written together,
-- every few seconds and before each checkpoint), the mean loss of the examples whose timestep
-- fell in each of `buckets` equal buckets of [0, T). A table rather than metric names because
-- a bucket is a row of its own (its bounds, its count, two means) that readers select by
-- bucket and step; names like `loss_t3` would have to be parsed back by every reader.
-- Append-only: an applied migration is never edited.

CREATE TABLE loss_buckets (
    run_id        BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step          BIGINT NOT NULL,   -- the last training step of the window
    bucket        BIGINT NOT NULL,   -- 0 .. buckets-1
    buckets       BIGINT NOT NULL,
    t_lo          BIGINT NOT NULL,   -- timestep indices [t_lo, t_hi) of the bucket
    t_hi          BIGINT NOT NULL,
    count         BIGINT NOT NULL,   -- examples of the window in the bucket
    loss          DOUBLE PRECISION,           -- their mean unweighted objective loss (NULL: not finite)
    weighted_loss DOUBLE PRECISION,           -- their mean min-SNR-weighted loss; NULL when unweighted
    wall_time     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, step, bucket)
);
