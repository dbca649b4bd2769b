-- Progress an agent reports while it runs (`{"fraction", "detail", "at"}`), the latest only;
-- handed to the next attempt as its checkpoint after a retry.
ALTER TABLE tasks ADD COLUMN progress jsonb;
