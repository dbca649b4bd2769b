-- Unique tasks: who holds each idempotency key. Not a unique index on `tasks`: a partitioned
-- table's unique index must include the partition key (`created_at`), and a key must be
-- unique across days. A key is free again when its holder finished (`held_until` NULL,
-- "until finished") or when `held_until` passed ("ttl").
CREATE TABLE task_keys (
    idempotency_key text PRIMARY KEY,
    task_id uuid NOT NULL,
    task_created_at timestamptz NOT NULL,
    held_until timestamptz,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
