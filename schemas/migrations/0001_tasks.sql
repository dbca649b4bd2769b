-- Tasks and their outcomes, keyed by task id: the fleet's durable record.
CREATE TABLE IF NOT EXISTS tasks (
    id              uuid PRIMARY KEY,
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
);

CREATE INDEX IF NOT EXISTS tasks_status_agent_idx ON tasks (status, agent_type);
CREATE INDEX IF NOT EXISTS tasks_completed_at_idx ON tasks (completed_at);
