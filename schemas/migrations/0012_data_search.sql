-- Search inside task data (`GET /v1/tasks?contains=`, the dashboard): JSON containment
-- (`data @> '{"customer": 42}'`) served by a GIN index with the smaller `jsonb_path_ops`
-- operator class. Partitions created later inherit it.
CREATE INDEX IF NOT EXISTS tasks_data_search ON tasks USING gin (data jsonb_path_ops);
