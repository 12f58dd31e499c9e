-- Vigil store schema, version 1 (PRAGMA user_version). Times are Unix milliseconds (UTC) so that range queries
-- compare integers; the full event is kept as JSON so nothing is lost in the mapping.

-- Every alarm lifecycle event, in the order it happened. (bed, bed_seq) is unique: bed_seq never repeats.
CREATE TABLE IF NOT EXISTS alarm_events (
    id       INTEGER PRIMARY KEY,
    bed      TEXT    NOT NULL,
    time_ms  INTEGER NOT NULL,
    bed_seq  INTEGER NOT NULL,
    alarm_id TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    json     TEXT    NOT NULL,
    UNIQUE (bed, bed_seq)
);
CREATE INDEX IF NOT EXISTS alarm_events_bed_time ON alarm_events (bed, time_ms);

-- Every session lifecycle event.
CREATE TABLE IF NOT EXISTS session_events (
    id      INTEGER PRIMARY KEY,
    bed     TEXT    NOT NULL,
    time_ms INTEGER NOT NULL,
    json    TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS session_events_bed_time ON session_events (bed, time_ms);

-- The highest bed_seq ever stored per bed. Never pruned, so the counter survives retention.
CREATE TABLE IF NOT EXISTS bed_counters (
    bed          TEXT PRIMARY KEY,
    last_bed_seq INTEGER NOT NULL
);

-- Events waiting for the broker's acknowledgement, in publication order. Written in the same transaction as the
-- event log; a row is marked delivered when its PUBACK arrives.
CREATE TABLE IF NOT EXISTS outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    bed          TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    json         TEXT    NOT NULL,
    delivered_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE delivered_ms IS NULL;

-- Vitals history, thinned to one row per bed, parameter and second of the value's receive time.
CREATE TABLE IF NOT EXISTS vitals (
    bed       TEXT    NOT NULL,
    parameter TEXT    NOT NULL,
    second    INTEGER NOT NULL,
    time_ms   INTEGER NOT NULL,
    value     REAL,
    status    TEXT    NOT NULL,
    PRIMARY KEY (bed, parameter, second)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vitals_bed_time ON vitals (bed, time_ms);

-- Latest state per bed: `alarms`, `session`, `device:<source>`. One row each; replaced, never pruned.
CREATE TABLE IF NOT EXISTS latest (
    bed     TEXT NOT NULL,
    key     TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    json    TEXT NOT NULL,
    PRIMARY KEY (bed, key)
) WITHOUT ROWID;

-- Every command a person sent, accepted or refused (audit trail).
CREATE TABLE IF NOT EXISTS actions (
    id      INTEGER PRIMARY KEY,
    bed     TEXT    NOT NULL,
    time_ms INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    command TEXT,
    request TEXT    NOT NULL,
    ok      INTEGER NOT NULL,
    reason  TEXT
);
CREATE INDEX IF NOT EXISTS actions_bed_time ON actions (bed, time_ms);

-- Small named counters that must survive restarts (e.g. the MQTT status birth sequence).
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
