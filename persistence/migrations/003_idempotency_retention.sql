-- Idempotency keys have a retention (Config.IdempotencyRetention). LoadShow
-- reads one show's keys younger than it, a range of the first index; the
-- pruner deletes the older keys of all shows, oldest first, a range of the
-- second. Neither can use the primary key (show_id, idempotency_key) for
-- created_at: without the first, loading a show reads all its expired keys;
-- without the second, every prune round reads the whole table.
--
-- Plain CREATE INDEX, in the migration's transaction: it blocks writes to the
-- table while it builds (seconds for millions of keys), but needs no
-- rewrite. CONCURRENTLY cannot run in a transaction, leaves an invalid index
-- behind when it fails, and waits for every older snapshot, among them
-- those of other processes' Migrate waiting for the migration lock this one
-- holds.
CREATE INDEX idempotency_keys_show_created ON idempotency_keys (show_id, created_at);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
