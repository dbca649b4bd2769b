-- Claim checks: a task's data or an agent's result too large for a message or a row lives
-- in the Object Store; the row keeps where (`{"bucket", "name", "size"}`), and `data` /
-- `result` are then null. Nullable, no default: adding them rewrites nothing.
ALTER TABLE tasks ADD COLUMN data_ref jsonb, ADD COLUMN result_ref jsonb;
