-- schema/0001_init.sql — the first registry schema (models, versions,
-- aliases, tasks, settings). Applied once, inside one transaction, by
-- ltdi_registry_open when PRAGMA user_version is 0; the last statement moves
-- user_version to this file's number so the bump commits with the schema.
-- Times are Unix milliseconds. docs/REGISTRY.md describes every column.

CREATE TABLE models (
  name        TEXT PRIMARY KEY NOT NULL CHECK (length(name) BETWEEN 1 AND 63),
  created_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE model_versions (
  name        TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
  version     INTEGER NOT NULL CHECK (version >= 1),
  path        TEXT NOT NULL,
  sha256      TEXT NOT NULL CHECK (length(sha256) = 64),
  size_bytes  INTEGER NOT NULL CHECK (size_bytes >= 0),
  status      TEXT NOT NULL CHECK (status IN ('LOADING', 'READY', 'FAILED')),
  reason      TEXT NOT NULL DEFAULT '',
  metadata    TEXT CHECK (metadata IS NULL OR json_valid(metadata)),
  created_at  INTEGER NOT NULL,
  loaded      INTEGER NOT NULL DEFAULT 0 CHECK (loaded IN (0, 1)),
  PRIMARY KEY (name, version)
) WITHOUT ROWID;

-- "name@latest" and the default-model choice look up READY versions.
CREATE INDEX model_versions_ready ON model_versions(status, created_at);

CREATE TABLE aliases (
  name        TEXT NOT NULL,
  alias       TEXT NOT NULL CHECK (length(alias) BETWEEN 1 AND 63),
  version     INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL,
  PRIMARY KEY (name, alias),
  FOREIGN KEY (name, version) REFERENCES model_versions(name, version)
    ON DELETE CASCADE
) WITHOUT ROWID;

-- seq is the stable, never-reused paging key (AUTOINCREMENT: a VACUUM or a
-- deleted newest row cannot renumber or recycle it); task_id is the content
-- address the API exposes.
CREATE TABLE tasks (
  seq               INTEGER PRIMARY KEY AUTOINCREMENT,
  task_id           TEXT NOT NULL UNIQUE CHECK (length(task_id) BETWEEN 1 AND 64),
  model             TEXT NOT NULL,
  version           INTEGER NOT NULL,
  seed              INTEGER NOT NULL,
  steps             INTEGER NOT NULL CHECK (steps >= 1),
  samples           INTEGER NOT NULL CHECK (samples >= 1),
  embedding_sha256  TEXT NOT NULL CHECK (length(embedding_sha256) = 64),
  weights           BLOB NOT NULL CHECK (length(weights) > 0),
  support_accuracy  REAL,
  support_loss      REAL,
  queue_ms          REAL,
  compute_ms        REAL,
  batch_size        INTEGER NOT NULL DEFAULT 0,
  created_at        INTEGER NOT NULL,
  FOREIGN KEY (model, version) REFERENCES model_versions(name, version)
);

-- GET /v1/tasks?model=… pages newest first within one model.
CREATE INDEX tasks_model_seq ON tasks(model, seq);

CREATE TABLE settings (
  key    TEXT PRIMARY KEY NOT NULL,
  value  TEXT NOT NULL
) WITHOUT ROWID;

PRAGMA user_version = 1;
