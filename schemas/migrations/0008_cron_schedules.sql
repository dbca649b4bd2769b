-- Schedules by cron expression in a time zone, beside fixed intervals: exactly one of the
-- two says when a schedule fires.
ALTER TABLE schedules ALTER COLUMN every_secs DROP NOT NULL;
ALTER TABLE schedules ADD COLUMN cron text;
ALTER TABLE schedules ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';
ALTER TABLE schedules ADD CONSTRAINT schedules_when CHECK ((every_secs IS NULL) <> (cron IS NULL));
