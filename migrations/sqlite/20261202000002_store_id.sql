-- A random id written once into each store. Run folders are named after it, so a checkpoint
-- on disk can only ever be found by the store whose run wrote it (two databases with the same
-- spec and output folder no longer share run folders).
CREATE TABLE store_info (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO store_info (key, value) VALUES ('store_id', lower(hex(randomblob(8))));
