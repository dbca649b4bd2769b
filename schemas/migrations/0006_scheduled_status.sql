-- `scheduled`: a task recorded by the API with a `not_before` still ahead; it becomes
-- `processing` (or its outcome) when due, like a `queued` one. The check is replaced by one
-- that admits it (existing rows all pass).
ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_partitioned_status_check;
ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('queued', 'scheduled', 'processing', 'completed', 'failed', 'dead'));
