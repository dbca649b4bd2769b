-- Finished rows expire a whole day at a time instead of row by row: `tasks` is partitioned
-- by the task's creation time, one partition per UTC day (`tasks_pYYYYMMDD`), created a few
-- days ahead and dropped once older than the retention period, by the workers or by
-- `swarmd prune` (src/store/retention.rs). A row whose day has no partition (a producer's
-- clock far off, or a day before the fleet started) waits in `tasks_default`.
--
-- A row is keyed by the task's id and creation time together: both travel in the envelope,
-- so every delivery of a task finds the same row, and lookups on the hot path touch one
-- partition only.
--
-- Rows already stored are kept (copied into `tasks_default`).
CREATE TABLE tasks_partitioned (
    id              uuid        NOT NULL,
    agent_type      text        NOT NULL,
    priority        smallint    NOT NULL CHECK (priority BETWEEN 0 AND 9),
    data            jsonb       NOT NULL,
    status          text        NOT NULL
                    CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    max_attempts    integer     NOT NULL DEFAULT 3,
    result          jsonb,
    last_error      text,
    -- One entry per failed attempt: {"attempt", "error", "at"}.
    errors          jsonb       NOT NULL DEFAULT '[]'::jsonb,
    worker_id       text,
    idempotency_key text,
    -- Set when the task replays a dead letter: the id of the dead task.
    replay_of       uuid,
    -- The OpenTelemetry trace the task belongs to (32 hex digits), when traced.
    trace_id        text,
    created_at      timestamptz NOT NULL,
    started_at      timestamptz,
    completed_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (created_at);

CREATE TABLE tasks_default PARTITION OF tasks_partitioned DEFAULT;

INSERT INTO tasks_partitioned SELECT * FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_partitioned RENAME TO tasks;

ALTER TABLE tasks ADD CONSTRAINT tasks_pkey PRIMARY KEY (id, created_at);
-- Only unfinished rows are indexed by status: a task whose first write is its outcome never
-- enters this index, and the index does not grow with history.
CREATE INDEX tasks_unfinished_idx ON tasks (agent_type, status)
    WHERE status NOT IN ('completed', 'dead');
CREATE INDEX tasks_completed_at_idx ON tasks (completed_at);
