-- When a delayed task is due: read by `GET /v1/tasks/{id}` and by the legacy mirror, which
-- shows a `scheduled` task in `scheduled_tasks` scored by this time. Nullable, no default:
-- adding it rewrites nothing.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS not_before timestamptz;
