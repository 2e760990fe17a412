-- schema/0002_task_ways.sql — the number of classes N of each recorded
-- generation. A class-token model generates heads of any N from 2 to its
-- max_ways, so the model version alone no longer says how many classes a
-- task's head has. Rows recorded before this migration read 0 ("not
-- recorded"; their model's one N is in its version's metadata).
ALTER TABLE tasks ADD COLUMN ways INTEGER NOT NULL DEFAULT 0 CHECK (ways >= 0);

PRAGMA user_version = 2;
