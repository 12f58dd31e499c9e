//! The durable store: SQLite (bundled, WAL) holding the alarm and session event log, the MQTT outbox, thinned
//! vitals history, the latest per-bed state, the audit trail of commands, and the notification queue, chains and
//! log ([`notify`]).
//!
//! Every alarm and session event is written here *before* it is announced, in one transaction with its outbox
//! row, so a broker outage or a daemon crash loses nothing: the publisher drains the outbox and marks rows
//! delivered only when the broker acknowledged them.
//!
//! Durability: `journal_mode = WAL` with `synchronous = FULL`. With WAL, FULL fsyncs the log on every commit, so
//! an event that `append` returned for survives power loss (the alarm log must say whether it does: it does).
//! NORMAL would be faster but may lose the last commits on power loss, which is exactly the alarm that matters.
//! A commit of background writes alone (vitals history, delivery marks) runs with NORMAL: no fsync of its own,
//! made durable by the next FULL commit; a power loss in between can cost those few seconds of history (and
//! resend an event whose delivery mark was lost), never an alarm or session event.
//!
//! Threads: one writer thread owns the write connection and commits whatever has queued in one transaction
//! (group commit, see [`writer`]), so the fsync is paid per batch, not per frame. Reads (history, export, the
//! outbox) use a second connection, which WAL lets run beside the writer. Vitals history and delivery marks are
//! queued without waiting ([`Store::append_background`]); alarm and session events are awaited
//! ([`Store::append_async`]) so they are durable before a bed announces them.
//!
//! Retention (`store.retention_days`, default 30): [`Store::prune`] deletes history, event log, actions and
//! delivered outbox rows older than the cut-off. Undelivered outbox rows older than the cut-off are dropped too
//! (and counted, so the caller can log them): a broker unreachable for the whole retention period must not grow
//! the file without bound. Per-bed counters and latest-state rows are one row per bed and never pruned. Sizing:
//! a vitals row is about 41 bytes (one b-tree per row since schema 4), so about 0.6 MB per bed per monitored hour
//! (`docs/mqtt-api.md`, "Retention"). The retention prune deletes vitals bed by bed, a range of the primary key
//! each, so it never scans the whole table.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::event::{AlarmEvent, BedAlarms, Command, DeviceStatus, Event, SessionEvent};
use crate::vitals::{Parameter, Timestamp, ValueStatus};

mod export;
pub mod notify;
pub mod writer;

pub use export::HistoryRecord;

pub use writer::{StoreHealth, WriterStats};

/// Pages the write-ahead log grows to before the writer copies them into the database (SQLite's default is
/// 1,000). Each bed's newest vitals leaf page is rewritten every second, so a checkpoint every 1,000 pages copies
/// nearly every page it logged (at 5,000 beds, five times a second); at 8,192 pages a hot page logged more than
/// once between two checkpoints is copied once, and there are fewer checkpoint fsyncs. No CPU change was visible
/// at 5,000 beds (`docs/performance.md`). The log's file stays at most about 32 MiB (4 KiB pages).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 8192;

/// Schema version written to `PRAGMA user_version`: 1 is `schema.sql`, each later one is a step in
/// [`MIGRATIONS`].
pub const SCHEMA_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

const SCHEMA: &str = include_str!("schema.sql");

/// Schema changes after version 1, in order: `MIGRATIONS[i]` takes a file from version `i + 1` to `i + 2`. Each
/// runs in one transaction with its `user_version` bump, so a crash mid-migration leaves the old version. Append
/// only; never edit a released step.
const MIGRATIONS: &[&str] = &[
    // 2: outbox rows the broker can never take are quarantined instead of blocking the rows behind them; the
    // retention prune gets an index on time alone (it deletes by time across every bed).
    "ALTER TABLE outbox ADD COLUMN quarantined_ms INTEGER;
     ALTER TABLE outbox ADD COLUMN quarantine_reason TEXT;
     DROP INDEX IF EXISTS outbox_pending;
     CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_ms IS NULL AND quarantined_ms IS NULL;
     CREATE INDEX IF NOT EXISTS vitals_time ON vitals (time_ms);",
    // 3: notification targets and escalation chains (src/store/notify.rs).
    notify::MIGRATION,
    // 4: vitals history in one b-tree per row. The key (bed, second, parameter) serves the history and export
    // (one range scan per bed) and the prune (a range per bed), so both secondary indexes go: each row was
    // written to three b-trees, which left the writer behind under overload (docs/performance.md). Rebuilds
    // the table: on a big file this copies every row once, in this one transaction (see docs/operations.md).
    "CREATE TABLE vitals_v4 (
         bed       TEXT    NOT NULL,
         parameter TEXT    NOT NULL,
         second    INTEGER NOT NULL,
         time_ms   INTEGER NOT NULL,
         value     REAL,
         status    TEXT    NOT NULL,
         PRIMARY KEY (bed, second, parameter)
     ) WITHOUT ROWID;
     INSERT INTO vitals_v4 (bed, parameter, second, time_ms, value, status)
         SELECT bed, parameter, second, time_ms, value, status FROM vitals ORDER BY bed, second, parameter;
     DROP TABLE vitals;
     ALTER TABLE vitals_v4 RENAME TO vitals;",
];

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or prepared.
    #[error("store.path: cannot open '{path}': {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file was written by a newer Vigil with a schema this one does not know.
    #[error("store.path: '{path}' has schema version {found}, newer than this Vigil understands ({SCHEMA_VERSION})")]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
    },
    /// An alarm event's `bed_seq` is not after the last stored one: a consumer would see a repeat.
    #[error("bed '{bed}': alarm event bed_seq {got} is not after the stored {last} (expected {})", last + 1)]
    BedSeq {
        /// The bed.
        bed: String,
        /// The last stored bed_seq.
        last: u64,
        /// The one offered.
        got: u64,
    },
    /// An outbox row could not be read back (a bug or a damaged file).
    #[error("outbox row {id}: {reason}")]
    Corrupt {
        /// Row id.
        id: i64,
        /// Why.
        reason: String,
    },
    /// SQLite failed.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// JSON (de)serialisation failed.
    #[error("store: {0}")]
    Json(#[from] serde_json::Error),
    /// The write could not be committed (disk full, read-only, I/O), or the writer has stopped.
    #[error("store: {0}")]
    Failed(String),
}

/// One row of vitals history: receive time, parameter, value, status.
pub type VitalsRow = (Timestamp, Parameter, Option<f64>, ValueStatus);

/// Where one outbox row stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// When the broker acknowledged it, if it has.
    pub delivered: Option<Timestamp>,
    /// Why it was set aside, if the broker can never take it.
    pub quarantined: Option<String>,
}

/// One event waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    /// Outbox row id: publication order, and the key for [`Store::mark_delivered`].
    pub id: i64,
    /// An [`Event::Alarm`] or [`Event::Session`].
    pub event: Event,
}

/// One command a person sent, as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// When it arrived.
    pub time: Timestamp,
    /// Who sent it (user name), as claimed or verified.
    pub actor: String,
    /// The bed.
    pub bed: String,
    /// The command, when it parses as one a request may carry (not Vigil's own self-test: see `request`).
    pub command: Option<Command>,
    /// The request as received (for malformed ones) or as parsed.
    pub request: String,
    /// Whether it ran.
    pub ok: bool,
    /// Why not, when refused.
    pub reason: Option<String>,
}

/// How much [`Store::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    /// Vitals rows.
    pub vitals: usize,
    /// Alarm and session events.
    pub events: usize,
    /// Action records.
    pub actions: usize,
    /// Delivered outbox rows and delivered notifications.
    pub delivered: usize,
    /// Outbox rows never acknowledged by a broker, and notifications no target took, dropped because they
    /// outlived retention.
    pub undelivered: usize,
}

/// The store. Cheap to clone. Writes go to the writer thread; reads use the read connection.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    writer: Arc<writer::Writer>,
    path: PathBuf,
    /// Decides which notifications an alarm event queues ([`Store::with_notify_router`]); none: no notifications.
    router: Option<Arc<dyn notify::NotifyRouter>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn ms(t: &Timestamp) -> i64 {
    t.timestamp_millis()
}

fn from_ms(ms: i64) -> Timestamp {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default()
}

fn status_name(s: ValueStatus) -> &'static str {
    match s {
        ValueStatus::Valid => "valid",
        ValueStatus::Questionable => "questionable",
        ValueStatus::Unavailable => "unavailable",
        ValueStatus::Demo => "demo",
    }
}

fn status_from(s: &str) -> ValueStatus {
    match s {
        "questionable" => ValueStatus::Questionable,
        "unavailable" => ValueStatus::Unavailable,
        "demo" => ValueStatus::Demo,
        _ => ValueStatus::Valid,
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`, switches it to WAL and applies the schema.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let fail = |reason: String| StoreError::Open { path: path.to_path_buf(), reason };
        let mut conn = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(|e| fail(e.to_string()))?;
        let mode: String =
            conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(|e| fail(e.to_string()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(fail(format!("the file system does not support WAL (journal_mode is {mode})")));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;").map_err(|e| fail(e.to_string()))?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES).map_err(|e| fail(e.to_string()))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| fail(e.to_string()))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { path: path.to_path_buf(), found: version });
        }
        migrate(&mut conn, version).map_err(|e| fail(e.to_string()))?;
        // The read connection: WAL readers see every committed write and never wait for the writer.
        let read = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        read.busy_timeout(Duration::from_secs(5)).map_err(|e| fail(e.to_string()))?;
        let writer = writer::Writer::start(conn).map_err(|e| fail(format!("cannot start the writer thread: {e}")))?;
        Ok(Store { conn: Arc::new(Mutex::new(read)), writer: Arc::new(writer), path: path.to_path_buf(), router: None })
    }

    /// This store with a notification router: from now on every alarm event appended queues the notifications
    /// the router decides, in the same transaction as the event (`src/store/notify.rs`).
    pub fn with_notify_router(mut self, router: Arc<dyn notify::NotifyRouter>) -> Store {
        self.router = Some(router);
        self
    }

    /// Whether writes succeed, updated after every commit that changes it.
    pub fn health(&self) -> tokio::sync::watch::Receiver<StoreHealth> {
        self.writer.health()
    }

    /// Waits until everything queued before this call (background writes too) is committed.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.writer.barrier()
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-transaction rolls the transaction back when it is dropped; the connection stays usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes events durably, in one transaction: alarm and session events to the event log and the outbox,
    /// vitals to the thinned history, alarm snapshots, sessions and device status to the latest-state rows.
    ///
    /// Alarm events must carry `bed_seq` = the bed's last stored `bed_seq` + 1 ([`Store::next_bed_seq`]); anything
    /// else is refused with [`StoreError::BedSeq`] and nothing in the batch is written.
    ///
    /// Blocks the calling thread until the batch is durable; async code uses [`Store::append_async`].
    pub fn append(&self, events: &[Event]) -> Result<(), StoreError> {
        let events = events.to_vec();
        let router = self.router.clone();
        self.writer.write(Box::new(move |conn| append_all(conn, &events, router.as_deref())))
    }

    /// [`Store::append`] for async code: resolves once the batch is durable (committed and fsynced), without
    /// blocking a runtime thread.
    pub async fn append_async(&self, events: Vec<Event>) -> Result<(), StoreError> {
        let router = self.router.clone();
        self.writer.write_async(Box::new(move |conn| append_all(conn, &events, router.as_deref()))).await
    }

    /// Queues events (vitals history, device status) for the next group commit without waiting. Under a slow or
    /// failed disk they may be dropped (counted in [`StoreHealth::background_dropped`]): never use it for alarm
    /// or session events.
    pub fn append_background(&self, events: Vec<Event>) {
        let router = self.router.clone();
        self.writer.write_background(Box::new(move |conn| append_all(conn, &events, router.as_deref())));
    }

    /// The `bed_seq` the bed's next alarm event must carry: 1 + the highest ever stored, 1 for a new bed.
    pub fn next_bed_seq(&self, bed: &str) -> Result<u64, StoreError> {
        let conn = self.lock();
        Ok(last_bed_seq(&conn, bed)? + 1)
    }

    /// The highest `session_seq` ever stored for the bed (0 for none): the bed task numbers on from it.
    pub fn last_session_seq(&self, bed: &str) -> Result<u64, StoreError> {
        self.counter(&format!("session_seq:{bed}"))
    }

    /// Up to `limit` outbox events not yet acknowledged by a broker, oldest first.
    pub fn pending(&self, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        self.pending_after(0, limit)
    }

    /// Like [`Store::pending`], only rows with an id greater than `after` (what the publisher has not sent yet).
    pub fn pending_after(&self, after: i64, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, json FROM outbox WHERE delivered_ms IS NULL AND quarantined_ms IS NULL AND id > ?1
             ORDER BY id LIMIT ?2",
        )?;
        let rows =
            stmt.query_map(params![after, limit as i64], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row?;
            let event = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt { id, reason: e.to_string() })?;
            out.push(OutboxItem { id, event });
        }
        Ok(out)
    }

    /// How many outbox rows wait for a broker's acknowledgement.
    pub fn pending_count(&self) -> Result<u64, StoreError> {
        let conn = self.lock();
        Ok(conn.query_row(
            "SELECT COUNT(*) FROM outbox WHERE delivered_ms IS NULL AND quarantined_ms IS NULL",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// How many outbox rows wait for a broker's acknowledgement, and when the oldest of them was written (for
    /// `/metrics`: an outbox that ages is a broker that does not take alarms).
    pub fn outbox_backlog(&self) -> Result<(u64, Option<Timestamp>), StoreError> {
        let conn = self.lock();
        let (count, oldest) = conn.query_row(
            "SELECT COUNT(*), MIN(created_ms) FROM outbox WHERE delivered_ms IS NULL AND quarantined_ms IS NULL",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?)),
        )?;
        Ok((count as u64, oldest.map(from_ms)))
    }

    /// The id of the newest outbox row (0 when empty): rows written after this have larger ids.
    pub fn outbox_last_id(&self) -> Result<i64, StoreError> {
        let conn = self.lock();
        Ok(conn.query_row("SELECT COALESCE(MAX(id), 0) FROM outbox", [], |r| r.get::<_, i64>(0))?)
    }

    /// The stored alarm event `bed_seq` of `bed`, read back from the event log.
    pub fn stored_alarm(&self, bed: &str, bed_seq: u64) -> Result<Option<AlarmEvent>, StoreError> {
        let conn = self.lock();
        let json: Option<String> = conn
            .prepare_cached("SELECT json FROM alarm_events WHERE bed = ?1 AND bed_seq = ?2")?
            .query_row(params![bed, bed_seq as i64], |r| r.get(0))
            .optional()?;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }

    /// Where the outbox row of alarm event `bed_seq` of `bed` stands, among the rows after `after_id` (see
    /// [`Store::outbox_last_id`]): `None` when there is no such row.
    pub fn alarm_delivery(&self, bed: &str, bed_seq: u64, after_id: i64) -> Result<Option<Delivery>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT delivered_ms, quarantine_reason FROM outbox WHERE id > ?1 AND bed = ?2
             AND json_extract(json, '$.type') = 'alarm' AND json_extract(json, '$.bed_seq') = ?3",
        )?;
        let found = stmt
            .query_row(params![after_id, bed, bed_seq as i64], |r| {
                Ok(Delivery { delivered: r.get::<_, Option<i64>>(0)?.map(from_ms), quarantined: r.get(1)? })
            })
            .optional()?;
        Ok(found)
    }

    /// The writer thread's own figures: jobs waiting, commit durations.
    pub fn writer_stats(&self) -> Arc<WriterStats> {
        self.writer.stats()
    }

    /// Resolves once a no-op job went through the writer thread: proof that it is alive and not wedged (the
    /// systemd watchdog asks this). It says nothing about the disk: [`Store::health`] does.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.writer.write_async(Box::new(|_| Ok(()))).await
    }

    /// Sets an outbox row aside that the broker can never take (e.g. larger than its packet limit): it is no
    /// longer pending, so it blocks nothing behind it; the event itself stays in the event log.
    pub fn quarantine(&self, id: i64, reason: &str, at: Timestamp) -> Result<(), StoreError> {
        let reason = reason.to_owned();
        self.writer.write(Box::new(move |conn| {
            conn.prepare_cached("UPDATE outbox SET quarantined_ms = ?2, quarantine_reason = ?3 WHERE id = ?1")?
                .execute(params![id, ms(&at), reason])?;
            Ok(())
        }))
    }

    /// How many outbox rows were quarantined (ever, within retention).
    pub fn quarantined_count(&self) -> Result<u64, StoreError> {
        let conn = self.lock();
        Ok(conn.query_row("SELECT COUNT(*) FROM outbox WHERE quarantined_ms IS NOT NULL", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// Marks outbox rows as acknowledged by the broker at `at`.
    pub fn mark_delivered(&self, ids: &[i64], at: Timestamp) -> Result<(), StoreError> {
        self.writer.write(mark_delivered_work(ids.to_vec(), at))
    }

    /// [`Store::mark_delivered`] without waiting: a mark lost to a crash or a failed disk only means the event is
    /// sent once more (consumers drop the duplicate by `alarm_id` + `seq`).
    pub fn mark_delivered_background(&self, ids: Vec<i64>, at: Timestamp) {
        self.writer.write_background(mark_delivered_work(ids, at));
    }

    /// The value of a named counter (0 when never set).
    pub fn counter(&self, name: &str) -> Result<u64, StoreError> {
        let conn = self.lock();
        let v: Option<i64> = conn
            .prepare_cached("SELECT value FROM counters WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// Sets a named counter.
    pub fn set_counter(&self, name: &str, value: u64) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.writer.write(Box::new(move |conn| {
            conn.prepare_cached("INSERT OR REPLACE INTO counters (name, value) VALUES (?1, ?2)")?
                .execute(params![name, value as i64])?;
            Ok(())
        }))
    }

    /// Records a command a person sent and what came of it (audit trail).
    pub fn record_action(
        &self,
        time: Timestamp,
        actor: &str,
        bed: &str,
        command: &Command,
        outcome: Result<(), String>,
    ) -> Result<(), StoreError> {
        let request = serde_json::to_string(command)?;
        self.insert_action(time, actor, bed, Some(&request), &request, outcome)
    }

    /// Records a request that could not even be parsed as a command (kept for the audit trail).
    pub fn record_rejected(
        &self,
        time: Timestamp,
        actor: &str,
        bed: &str,
        request: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.insert_action(time, actor, bed, None, request, Err(reason.to_owned()))
    }

    fn insert_action(
        &self,
        time: Timestamp,
        actor: &str,
        bed: &str,
        command: Option<&str>,
        request: &str,
        outcome: Result<(), String>,
    ) -> Result<(), StoreError> {
        let (ok, reason) = match outcome {
            Ok(()) => (true, None),
            Err(r) => (false, Some(r)),
        };
        let (actor, bed, command, request) =
            (actor.to_owned(), bed.to_owned(), command.map(str::to_owned), request.to_owned());
        self.writer.write(Box::new(move |conn| {
            conn.prepare_cached(
                "INSERT INTO actions (bed, time_ms, actor, command, request, ok, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![bed, ms(&time), actor, command, request, ok, reason])?;
            Ok(())
        }))
    }

    /// Deletes what is older than `older_than` (see the module documentation for what is kept).
    pub fn prune(&self, older_than: Timestamp) -> Result<PruneStats, StoreError> {
        let cut = ms(&older_than);
        let (stats_tx, stats_rx) = std::sync::mpsc::channel();
        self.writer.write(Box::new(move |tx| {
            let stats = prune_work(tx, cut)?;
            let _ = stats_tx.send(stats);
            Ok(())
        }))?;
        stats_rx.recv().map_err(|_| StoreError::Failed("prune reported nothing".into()))
    }
}

/// The next bed after `after` (the first with `None`) that has vitals history: a seek in the primary key.
const VITALS_NEXT_BED: &str = "SELECT bed FROM vitals WHERE bed > ?1 ORDER BY bed LIMIT 1";
const VITALS_FIRST_BED: &str = "SELECT bed FROM vitals ORDER BY bed LIMIT 1";

/// One bed's vitals rows with `time_ms < ?3`: a range of the primary key (`?2` is the cut's second).
const VITALS_PRUNE_BED: &str = "DELETE FROM vitals WHERE bed = ?1 AND second <= ?2 AND time_ms < ?3";

/// Deletes the vitals rows older than `cut` of every bed with history (configured or not), bed by bed, so no
/// statement scans the whole table.
fn prune_vitals(tx: &Connection, cut: i64) -> Result<usize, StoreError> {
    let mut next = tx.prepare_cached(VITALS_NEXT_BED)?;
    let mut delete = tx.prepare_cached(VITALS_PRUNE_BED)?;
    let mut bed: Option<String> = tx.prepare_cached(VITALS_FIRST_BED)?.query_row([], |r| r.get(0)).optional()?;
    let mut deleted = 0;
    while let Some(b) = bed {
        deleted += delete.execute(params![b, cut.div_euclid(1000), cut])?;
        bed = next.query_row([&b], |r| r.get(0)).optional()?;
    }
    Ok(deleted)
}

fn prune_work(tx: &Connection, cut: i64) -> Result<PruneStats, StoreError> {
    {
        let stats = PruneStats {
            vitals: prune_vitals(tx, cut)?,
            events: tx.execute("DELETE FROM alarm_events WHERE time_ms < ?1", [cut])?
                + tx.execute("DELETE FROM session_events WHERE time_ms < ?1", [cut])?,
            actions: tx.execute("DELETE FROM actions WHERE time_ms < ?1", [cut])?,
            delivered: tx.execute(
                "DELETE FROM outbox WHERE (delivered_ms IS NOT NULL OR quarantined_ms IS NOT NULL) AND created_ms < ?1",
                [cut],
            )?,
            undelivered: tx.execute("DELETE FROM outbox WHERE delivered_ms IS NULL AND created_ms < ?1", [cut])?,
        };
        let (delivered, undelivered) = notify::prune(tx, cut)?;
        Ok(PruneStats { delivered: stats.delivered + delivered, undelivered: stats.undelivered + undelivered, ..stats })
    }
}

/// A bed's vitals with `?2 <= time_ms < ?3`, by time then parameter. `?4` and `?5` are the seconds of `?2` and
/// `?3`: the primary key's range; `second` is the floor of `time_ms` / 1000, so ordering by it first is the
/// same order and lets SQLite sort only within each second.
const VITALS_HISTORY: &str = "SELECT time_ms, parameter, value, status FROM vitals
     WHERE bed = ?1 AND second >= ?4 AND second <= ?5 AND time_ms >= ?2 AND time_ms < ?3
     ORDER BY second, time_ms, parameter";

impl Store {
    /// Vitals history of a bed with `from <= time < to`, oldest first.
    pub fn vitals(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<VitalsRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(VITALS_HISTORY)?;
        let (from, to) = (ms(&from), ms(&to));
        let rows = stmt.query_map(params![bed, from, to, from.div_euclid(1000), to.div_euclid(1000)], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<f64>>(2)?, r.get::<_, String>(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (t, p, v, s) = row?;
            if let Some(p) = Parameter::from_name(&p) {
                out.push((from_ms(t), p, v, status_from(&s)));
            }
        }
        Ok(out)
    }

    /// Alarm events of a bed with `from <= time < to`, in `bed_seq` order.
    pub fn alarm_events(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<AlarmEvent>, StoreError> {
        self.json_rows(
            "SELECT json FROM alarm_events WHERE bed = ?1 AND time_ms >= ?2 AND time_ms < ?3 ORDER BY bed_seq",
            bed,
            from,
            to,
        )
    }

    /// Session events of a bed with `from <= time < to`, oldest first.
    pub fn session_events(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<SessionEvent>, StoreError> {
        self.json_rows(
            "SELECT json FROM session_events WHERE bed = ?1 AND time_ms >= ?2 AND time_ms < ?3 ORDER BY id",
            bed,
            from,
            to,
        )
    }

    fn json_rows<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        bed: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<T>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![bed, ms(&from), ms(&to)], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?)?);
        }
        Ok(out)
    }

    /// Commands sent for a bed with `from <= time < to`, oldest first.
    pub fn actions(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<ActionRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT time_ms, actor, bed, command, request, ok, reason FROM actions
             WHERE bed = ?1 AND time_ms >= ?2 AND time_ms < ?3 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![bed, ms(&from), ms(&to)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, bool>(5)?,
                r.get::<_, Option<String>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (t, actor, bed, command, request, ok, reason) = row?;
            // A command no outside request can carry (Vigil's own self-test) does not parse as one: it stays
            // in the record as `request`.
            let command = command.and_then(|c| serde_json::from_str(&c).ok());
            out.push(ActionRecord { time: from_ms(t), actor, bed, command, request, ok, reason });
        }
        Ok(out)
    }

    /// The bed's latest session event (kept past retention), for the retained `session` topic after a restart.
    pub fn latest_session(&self, bed: &str) -> Result<Option<SessionEvent>, StoreError> {
        self.latest(bed, "session")
    }

    /// The bed's latest alarm snapshot, for the retained `alarms` topic after a restart.
    pub fn latest_alarms(&self, bed: &str) -> Result<Option<BedAlarms>, StoreError> {
        self.latest(bed, "alarms")
    }

    /// The latest status of each of the bed's sources.
    pub fn latest_devices(&self, bed: &str) -> Result<Vec<DeviceStatus>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT json FROM latest WHERE bed = ?1 AND key LIKE 'device:%' ORDER BY key")?;
        let rows = stmt.query_map([bed], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?)?);
        }
        Ok(out)
    }

    fn latest<T: serde::de::DeserializeOwned>(&self, bed: &str, key: &str) -> Result<Option<T>, StoreError> {
        let conn = self.lock();
        let json: Option<String> = conn
            .prepare_cached("SELECT json FROM latest WHERE bed = ?1 AND key = ?2")?
            .query_row(params![bed, key], |r| r.get(0))
            .optional()?;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }
}

/// Brings a file from `version` (0: new or empty) to [`SCHEMA_VERSION`].
fn migrate(conn: &mut Connection, version: i64) -> Result<(), rusqlite::Error> {
    if version < 1 {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", 1)?;
        tx.commit()?;
    }
    let mut migrated = false;
    for (i, step) in MIGRATIONS.iter().enumerate() {
        let to = i as i64 + 2;
        if version.max(1) < to {
            tracing::info!(version = to, "store schema migrating");
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(step)?;
            tx.pragma_update(None, "user_version", to)?;
            tx.commit()?;
            tracing::info!(version = to, "store schema migrated");
            migrated = true;
        }
    }
    if migrated {
        // A migration that rebuilt a table left a write-ahead log about the table's size, which would otherwise
        // stay that big on disk for as long as the daemon runs.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(())
}

fn last_bed_seq(conn: &Connection, bed: &str) -> Result<u64, StoreError> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT last_bed_seq FROM bed_counters WHERE bed = ?1")?
        .query_row([bed], |r| r.get(0))
        .optional()?;
    Ok(last.unwrap_or(0) as u64)
}

fn mark_delivered_work(ids: Vec<i64>, at: Timestamp) -> writer::Work {
    Box::new(move |conn| {
        let mut stmt = conn.prepare_cached("UPDATE outbox SET delivered_ms = ?2 WHERE id = ?1")?;
        for id in ids {
            stmt.execute(params![id, ms(&at)])?;
        }
        Ok(())
    })
}

fn append_all(
    conn: &Connection,
    events: &[Event],
    router: Option<&dyn notify::NotifyRouter>,
) -> Result<(), StoreError> {
    for event in events {
        append_one(conn, event, router)?;
    }
    Ok(())
}

fn put_latest(tx: &Connection, bed: &str, key: &str, time: &Timestamp, json: &str) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT OR REPLACE INTO latest (bed, key, time_ms, json) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![bed, key, ms(time), json])?;
    Ok(())
}

fn to_outbox(tx: &Connection, bed: &str, time: &Timestamp, event_json: &str) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO outbox (bed, created_ms, json) VALUES (?1, ?2, ?3)")?.execute(params![
        bed,
        ms(time),
        event_json
    ])?;
    Ok(())
}

fn append_one(tx: &Connection, event: &Event, router: Option<&dyn notify::NotifyRouter>) -> Result<(), StoreError> {
    match event {
        Event::Alarm(a) => {
            let last = last_bed_seq(tx, &a.bed)?;
            if a.bed_seq <= last {
                return Err(StoreError::BedSeq { bed: a.bed.to_string(), last, got: a.bed_seq });
            }
            if a.bed_seq > last + 1 {
                // Events were lost before they reached the store (an earlier write failed). Refusing this one
                // would lose every later alarm too; storing it leaves the gap that tells consumers of the loss.
                tracing::warn!(bed = %a.bed, last, got = a.bed_seq, "alarm events lost before storage: bed_seq gap");
            }
            let json = serde_json::to_string(a)?;
            tx.prepare_cached(
                "INSERT INTO alarm_events (bed, time_ms, bed_seq, alarm_id, seq, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![&*a.bed, ms(&a.time), a.bed_seq as i64, a.alarm_id, a.seq, json])?;
            tx.prepare_cached("INSERT OR REPLACE INTO bed_counters (bed, last_bed_seq) VALUES (?1, ?2)")?
                .execute(params![&*a.bed, a.bed_seq as i64])?;
            to_outbox(tx, &a.bed, &a.time, &serde_json::to_string(event)?)?;
            if let Some(router) = router {
                notify::on_alarm(tx, router, a, &json)?;
            }
        }
        Event::Session(s) => {
            let json = serde_json::to_string(s)?;
            tx.prepare_cached("INSERT INTO session_events (bed, time_ms, json) VALUES (?1, ?2, ?3)")?
                .execute(params![&*s.bed, ms(&s.time), json])?;
            put_latest(tx, &s.bed, "session", &s.time, &json)?;
            tx.prepare_cached(
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
            )?
            .execute(params![format!("session_seq:{}", s.bed), s.session_seq as i64])?;
            to_outbox(tx, &s.bed, &s.time, &serde_json::to_string(event)?)?;
        }
        Event::Vitals(v) => {
            let mut stmt = tx.prepare_cached(
                // The latest value of each second wins; a value repeated in later updates (NIBP) is not rewritten.
                "INSERT INTO vitals (bed, parameter, second, time_ms, value, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (bed, second, parameter) DO UPDATE
                 SET time_ms = excluded.time_ms, value = excluded.value, status = excluded.status
                 WHERE excluded.time_ms > vitals.time_ms",
            )?;
            for value in &v.values {
                let t = ms(&value.time);
                stmt.execute(params![
                    &*v.bed,
                    value.parameter.name(),
                    t.div_euclid(1000),
                    t,
                    value.value,
                    status_name(value.status)
                ])?;
            }
        }
        Event::Alarms(a) => put_latest(tx, &a.bed, "alarms", &a.time, &serde_json::to_string(a)?)?,
        Event::Device(d) => {
            put_latest(tx, &d.bed, &format!("device:{}", d.source), &d.time, &serde_json::to_string(d)?)?
        }
    }
    Ok(())
}

/// Prunes the store once an hour (and once at start) to keep `retention_days`, until cancelled. Logs what it
/// removed; dropping undelivered outbox rows is a warning.
pub async fn run_retention(store: Store, retention_days: u32, cancel: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        let cut = Utc::now() - chrono::Duration::days(i64::from(retention_days));
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.prune(cut)).await {
            Ok(Ok(stats)) => {
                if stats.undelivered > 0 {
                    tracing::warn!(
                        undelivered = stats.undelivered,
                        retention_days,
                        "dropped outbox events never acknowledged by a broker within the retention period"
                    );
                }
                tracing::debug!(?stats, "store pruned");
            }
            Ok(Err(e)) => tracing::error!(error = %e, "store pruning failed"),
            Err(e) => tracing::error!(error = %e, "store pruning task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Column `column` of every row of `sql`.
    fn strings(conn: &Connection, sql: &str, args: impl rusqlite::Params, column: usize) -> Vec<String> {
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt.query_map(args, |r| r.get::<_, String>(column)).unwrap();
        rows.map(|r| r.unwrap()).collect()
    }

    /// `EXPLAIN QUERY PLAN` of `sql`, one line per step.
    fn plan(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> Vec<String> {
        strings(conn, &format!("EXPLAIN QUERY PLAN {sql}"), args, 3)
    }

    /// Every step of `plan` that reads `vitals` is a search of its primary key, and there is at least one.
    fn assert_vitals_by_primary_key(plan: &[String]) {
        let steps: Vec<_> = plan.iter().filter(|s| s.contains(" vitals")).collect();
        assert!(!steps.is_empty(), "{plan:?}");
        for step in steps {
            assert!(step.starts_with("SEARCH vitals USING PRIMARY KEY (bed"), "not by the key: {step} in {plan:?}");
        }
    }

    #[test]
    fn the_writer_checkpoints_the_log_every_few_thousand_pages_not_every_thousand() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("vigil.db")).unwrap();
        let (tx, seen) = std::sync::mpsc::channel();
        store
            .writer
            .write(Box::new(move |conn| {
                tx.send(conn.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get::<_, i64>(0))?).unwrap();
                Ok(())
            }))
            .unwrap();
        assert_eq!(seen.recv().unwrap(), WAL_AUTOCHECKPOINT_PAGES);
    }

    #[test]
    fn the_history_query_the_export_and_the_prune_read_vitals_by_the_primary_key_never_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("vigil.db")).unwrap();
        let conn = store.lock();
        assert_vitals_by_primary_key(&plan(&conn, VITALS_HISTORY, params!["chair-1", 0, 1, 0, 0]));
        let history = plan(&conn, VITALS_HISTORY, params!["chair-1", 0, 1, 0, 0]);
        assert!(!history.iter().any(|s| s == "USE TEMP B-TREE FOR ORDER BY"), "a sort of the whole range: {history:?}");
        let export = plan(&conn, export::RECORDS, params!["chair-1", 0, 1, true, 0, 0]);
        assert_vitals_by_primary_key(&export);
        assert_vitals_by_primary_key(&plan(&conn, VITALS_PRUNE_BED, params!["chair-1", 0, 1]));
        assert_vitals_by_primary_key(&plan(&conn, VITALS_NEXT_BED, params!["chair-1"]));
        let first = plan(&conn, VITALS_FIRST_BED, []);
        assert!(first.iter().all(|s| s.starts_with("SCAN vitals") && !s.contains("TEMP")), "{first:?}");
    }

    #[test]
    fn a_version_3_file_with_vitals_opens_as_version_4_with_every_row_kept_and_the_old_indexes_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        {
            // A file as version 3 wrote it: schema.sql, migrations 2 and 3, vitals rows of two beds.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            MIGRATIONS[..2].iter().for_each(|step| conn.execute_batch(step).unwrap());
            conn.pragma_update(None, "user_version", 3).unwrap();
            let mut insert = conn
                .prepare("INSERT INTO vitals (bed, parameter, second, time_ms, value, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
                .unwrap();
            for bed in ["chair-1", "chair-2"] {
                for s in 0..100i64 {
                    for (p, v) in [("spo2", 97.0), ("pr", 71.0)] {
                        insert
                            .execute(params![bed, p, 1_800_000_000 + s, 1_800_000_000_000 + s * 1000 + 250, v, "valid"])
                            .unwrap();
                    }
                }
            }
        }
        let store = Store::open(&path).unwrap();
        let wal = std::fs::metadata(dir.path().join("v3.db-wal")).map(|m| m.len()).unwrap_or(0);
        assert_eq!(wal, 0, "the log the migration wrote is checkpointed and truncated");
        let conn = store.lock();
        assert_eq!(conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).unwrap(), 4);
        assert_eq!(conn.query_row("SELECT COUNT(*) FROM vitals", [], |r| r.get::<_, i64>(0)).unwrap(), 400);
        let indexes =
            strings(&conn, "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'vitals'", [], 0);
        assert!(indexes.is_empty(), "vitals_bed_time and vitals_time are gone: {indexes:?}");
        let key = strings(&conn, "SELECT name FROM pragma_table_info('vitals') WHERE pk > 0 ORDER BY pk", [], 0);
        assert_eq!(key, ["bed", "second", "parameter"]);
        drop(conn);
        let from = from_ms(1_800_000_000_000);
        let rows = store.vitals("chair-2", from, from + chrono::Duration::seconds(100)).unwrap();
        assert_eq!(rows.len(), 200);
        assert_eq!(
            rows[0],
            (from + chrono::Duration::milliseconds(250), Parameter::Pr, Some(71.0), ValueStatus::Valid)
        );
        assert_eq!(rows[1].1, Parameter::Spo2);
    }
}
