-- Periodic schedules: each fire is a task whose id and creation time derive from the
-- schedule's name and the fire time, so a fire published twice (two workers, a retry) is
-- one task. Workers take due schedules with FOR UPDATE SKIP LOCKED: no leader election.
CREATE TABLE schedules (
    name        text        PRIMARY KEY,
    agent_type  text        NOT NULL,
    data        jsonb       NOT NULL DEFAULT 'null'::jsonb,
    priority    smallint    NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 9),
    every_secs  integer     NOT NULL CHECK (every_secs >= 1),
    -- skip: a fire is dropped while the previous fire's task has not finished.
    overlap     text        NOT NULL DEFAULT 'allow' CHECK (overlap IN ('skip', 'allow')),
    -- After downtime: none drops missed fires, one fires the latest, all fires each.
    catch_up    text        NOT NULL DEFAULT 'one' CHECK (catch_up IN ('none', 'one', 'all')),
    paused      boolean     NOT NULL DEFAULT false,
    next_fire   timestamptz NOT NULL,
    last_fire   timestamptz,
    last_task   uuid,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due_idx ON schedules (next_fire) WHERE NOT paused;
