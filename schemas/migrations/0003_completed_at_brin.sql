-- `completed_at` is only ever searched by ranges (retention of `tasks_default`, "finished in
-- the last N minutes" counts). A B-tree over it took one more index insertion per task on
-- the hot path — a third of the fleet's write-ahead log — while rows are written in about
-- the order they finish, which is what a BRIN index summarises in a few pages. New day
-- partitions get it when attached.
DROP INDEX IF EXISTS tasks_completed_at_idx;
CREATE INDEX tasks_completed_at_brin ON tasks USING brin (completed_at)
    WITH (autosummarize = on, pages_per_range = 32);
