-- `cancelled`: a final status, like `completed` and `dead`; `cancelled_by` says who asked
-- (`completed_at` when). `cancellations` lists every id a cancel named, with or without a
-- row (a NATS producer's task has none until a worker takes it): workers load it at start
-- and refresh from it, so a task cancelled while no worker listened still never runs.
ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('queued', 'scheduled', 'processing', 'completed', 'failed', 'dead',
                      'cancelled'));
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS cancelled_by text;
CREATE TABLE IF NOT EXISTS cancellations (
    id uuid PRIMARY KEY,
    cancelled_by text NOT NULL,
    cancelled_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS cancellations_cancelled_at ON cancellations (cancelled_at);
-- `cancelled` is final: the index of unfinished rows leaves it out, as it does `completed`
-- and `dead` (so it does not grow with history).
DROP INDEX IF EXISTS tasks_unfinished_idx;
CREATE INDEX tasks_unfinished_idx ON tasks (agent_type, status)
    WHERE status NOT IN ('completed', 'dead', 'cancelled');
