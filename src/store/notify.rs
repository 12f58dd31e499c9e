//! The notification tables (schema step 3): the per-target delivery queue, escalation chains, every delivery
//! attempt, and acknowledge-link tokens. The store only keeps them; which target gets which alarm and when a
//! chain moves on is decided by a [`NotifyRouter`] (`src/notify/routing.rs`), called inside the same transaction
//! that writes the alarm event, so an alarm event and its queued notifications are durable together or not at
//! all.

use std::sync::mpsc;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{from_ms, ms, Store, StoreError};
use crate::event::{AlarmEvent, Priority};
use crate::vitals::Timestamp;

/// Where an escalation chain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainStatus {
    /// Waiting for an acknowledge; the next step is due at `next_at`.
    Running,
    /// Someone acknowledged the alarm: no further step.
    Acknowledged,
    /// The alarm ended before anyone acknowledged it: no further step.
    Ended,
    /// Every step was notified and the last step's wait passed without an acknowledge.
    Exhausted,
}

impl ChainStatus {
    fn name(self) -> &'static str {
        match self {
            ChainStatus::Running => "running",
            ChainStatus::Acknowledged => "acknowledged",
            ChainStatus::Ended => "ended",
            ChainStatus::Exhausted => "exhausted",
        }
    }
}

/// One alarm's escalation chain, as stored (and shown on the dashboard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainState {
    /// The alarm.
    pub alarm_id: String,
    /// Its bed.
    pub bed: String,
    /// The priority whose chain this is.
    pub priority: Priority,
    /// The step reached, 0-based (0: the first step's target has been notified).
    pub step: usize,
    /// How many steps the chain has.
    pub steps: usize,
    /// The target of the step reached.
    pub target: String,
    /// When the next step is due (running chains only).
    pub next_at: Option<Timestamp>,
    /// Where the chain stands.
    pub status: ChainStatus,
    /// Who acknowledged, when acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Every target notified so far through the chain (they also get the alarm's end).
    pub notified: Vec<String>,
    /// When the chain last changed.
    pub updated: Timestamp,
}

/// A notification to queue for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Target name.
    pub target: String,
    /// Why it is sent: `event` for a target that takes the alarm directly, `escalation step N of M` for a chain.
    pub reason: String,
}

/// What a router decided for one alarm event or one due chain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routed {
    /// Notifications to queue (with the alarm's event).
    pub deliveries: Vec<Delivery>,
    /// The chain's new state, when it changed (or started).
    pub chain: Option<ChainState>,
}

/// The routing policy the store calls inside its transactions. Pure: no I/O, time is an argument.
pub trait NotifyRouter: Send + Sync {
    /// An alarm event was stored; `chain` is the alarm's chain so far, if it has one.
    fn route(&self, event: &AlarmEvent, chain: Option<&ChainState>) -> Routed;
    /// A running chain's next step is due at `now`.
    fn advance(&self, chain: &ChainState, now: Timestamp) -> Routed;
}

/// One queued notification, the oldest undelivered of its target.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedNotification {
    /// Queue row id.
    pub id: i64,
    /// Target name.
    pub target: String,
    /// Why it is sent (see [`Delivery::reason`]).
    pub reason: String,
    /// The alarm event to send.
    pub event: AlarmEvent,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before this time (backoff after a failed attempt).
    pub next_attempt: Timestamp,
    /// When it was queued.
    pub created: Timestamp,
}

/// One delivery attempt as the notification log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    /// When the attempt ended.
    pub time: Timestamp,
    /// Target name.
    pub target: String,
    /// The bed.
    pub bed: String,
    /// The alarm.
    pub alarm_id: String,
    /// Queue row id.
    pub queue_id: i64,
    /// 1 for the first attempt of the row.
    pub attempt: u32,
    /// Whether the target took it.
    pub ok: bool,
    /// The receipt (`HTTP 200`, `250 OK`) or the error.
    pub detail: String,
}

/// Where one queued notification stands.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryState {
    /// When the target took it, if it did.
    pub delivered: Option<Timestamp>,
    /// Attempts so far.
    pub attempts: u32,
    /// The latest attempt's receipt or error.
    pub detail: Option<String>,
}

/// An acknowledge-link token as stored: only a digest of its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    /// Token id (the public half of the link).
    pub id: i64,
    /// Digest of the secret half.
    pub digest: Vec<u8>,
    /// The target whose notification carried the link.
    pub target: String,
    /// The bed.
    pub bed: String,
    /// The alarm it acknowledges.
    pub alarm_id: String,
    /// Not valid after this.
    pub expires: Timestamp,
    /// When it was used, if it was.
    pub used: Option<Timestamp>,
}

/// Undelivered notifications of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetBacklog {
    /// Target name.
    pub target: String,
    /// Rows waiting.
    pub pending: u64,
    /// When the oldest waiting row was queued.
    pub oldest: Option<Timestamp>,
}

/// Called by the store's append inside its transaction, after the alarm event row: queues what the router says
/// and stores the chain.
pub(super) fn on_alarm(
    tx: &Connection,
    router: &dyn NotifyRouter,
    event: &AlarmEvent,
    event_json: &str,
) -> Result<(), StoreError> {
    let chain: Option<ChainState> = tx
        .prepare_cached("SELECT json FROM notify_chains WHERE alarm_id = ?1")?
        .query_row([&event.alarm_id], |r| r.get::<_, String>(0))
        .optional()?
        .map(|j| serde_json::from_str(&j))
        .transpose()?;
    let routed = router.route(event, chain.as_ref());
    apply(tx, &routed, &event.bed, &event.alarm_id, &event.time, event_json)?;
    if routed.chain.is_none() && chain.is_some() {
        // The chain's later steps send the alarm as it is then.
        tx.prepare_cached("UPDATE notify_chains SET event_json = ?2 WHERE alarm_id = ?1")?
            .execute(params![event.alarm_id, event_json])?;
    }
    Ok(())
}

fn apply(
    tx: &Connection,
    routed: &Routed,
    bed: &str,
    alarm_id: &str,
    time: &Timestamp,
    event_json: &str,
) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO notify_queue (target, bed, alarm_id, reason, created_ms, json, next_attempt_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5)",
    )?;
    for d in &routed.deliveries {
        insert.execute(params![d.target, bed, alarm_id, d.reason, ms(time), event_json])?;
    }
    if let Some(chain) = &routed.chain {
        tx.prepare_cached(
            "INSERT INTO notify_chains (alarm_id, bed, state, next_ms, updated_ms, json, event_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (alarm_id) DO UPDATE SET state = excluded.state, next_ms = excluded.next_ms,
               updated_ms = excluded.updated_ms, json = excluded.json, event_json = excluded.event_json",
        )?
        .execute(params![
            chain.alarm_id,
            chain.bed,
            chain.status.name(),
            chain.next_at.as_ref().map(ms),
            ms(&chain.updated),
            serde_json::to_string(chain)?,
            event_json
        ])?;
    }
    Ok(())
}

/// Chains moved on, and when the next running one is due.
pub type Advanced = (usize, Option<Timestamp>);

fn advance_work(tx: &Connection, router: &dyn NotifyRouter, now: Timestamp) -> Result<Advanced, StoreError> {
    let due: Vec<(String, String)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT json, event_json FROM notify_chains WHERE state = 'running' AND next_ms <= ?1 ORDER BY next_ms",
        )?;
        let rows = stmt.query_map([ms(&now)], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let moved = due.len();
    for (json, event_json) in due {
        let chain: ChainState = serde_json::from_str(&json)?;
        let routed = router.advance(&chain, now);
        apply(tx, &routed, &chain.bed, &chain.alarm_id, &now, &event_json)?;
    }
    let next: Option<i64> =
        tx.query_row("SELECT MIN(next_ms) FROM notify_chains WHERE state = 'running'", [], |r| r.get(0))?;
    Ok((moved, next.map(from_ms)))
}

impl Store {
    /// Moves on every running chain whose next step is due at `now` (queueing its notifications in the same
    /// transaction); says how many moved and when the next one is due.
    pub async fn advance_chains(
        &self,
        router: std::sync::Arc<dyn NotifyRouter>,
        now: Timestamp,
    ) -> Result<Advanced, StoreError> {
        let (tx, rx) = mpsc::channel();
        self.writer
            .write_async(Box::new(move |conn| {
                let next = advance_work(conn, router.as_ref(), now)?;
                let _ = tx.send(next);
                Ok(())
            }))
            .await?;
        rx.recv().map_err(|_| StoreError::Failed("advancing the chains reported nothing".into()))
    }

    /// The oldest undelivered notification of `target` (deliveries to one target keep their order).
    pub fn notify_head(&self, target: &str) -> Result<Option<QueuedNotification>, StoreError> {
        let conn = self.lock();
        let row = conn
            .prepare_cached(
                "SELECT id, reason, json, attempts, next_attempt_ms, created_ms FROM notify_queue
                 WHERE target = ?1 AND delivered_ms IS NULL ORDER BY id LIMIT 1",
            )?
            .query_row([target], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .optional()?;
        let Some((id, reason, json, attempts, next, created)) = row else { return Ok(None) };
        let event = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt { id, reason: e.to_string() })?;
        Ok(Some(QueuedNotification {
            id,
            target: target.to_owned(),
            reason,
            event,
            attempts: attempts.clamp(0, i64::from(u32::MAX)) as u32,
            next_attempt: from_ms(next),
            created: from_ms(created),
        }))
    }

    /// Records one attempt of a queued notification in the notification log, and marks the row delivered
    /// (`outcome` Ok) or due again at `retry_at` (Err), in one transaction.
    pub async fn notify_attempted(
        &self,
        item: &QueuedNotification,
        outcome: Result<String, String>,
        at: Timestamp,
        retry_at: Timestamp,
    ) -> Result<(), StoreError> {
        let (id, target, bed, alarm) =
            (item.id, item.target.clone(), item.event.bed.to_string(), item.event.alarm_id.clone());
        let attempt = i64::from(item.attempts) + 1;
        self.writer
            .write_async(Box::new(move |conn| {
                let (ok, detail) = match &outcome {
                    Ok(d) => (true, d.as_str()),
                    Err(e) => (false, e.as_str()),
                };
                conn.prepare_cached(
                    "INSERT INTO notify_attempts (time_ms, target, bed, alarm_id, queue_id, attempt, ok, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![ms(&at), target, bed, alarm, id, attempt, ok, detail])?;
                if ok {
                    conn.prepare_cached(
                        "UPDATE notify_queue SET attempts = ?2, delivered_ms = ?3, last_error = NULL WHERE id = ?1",
                    )?
                    .execute(params![id, attempt, ms(&at)])?;
                } else {
                    conn.prepare_cached(
                        "UPDATE notify_queue SET attempts = ?2, next_attempt_ms = ?3, last_error = ?4 WHERE id = ?1",
                    )?
                    .execute(params![id, attempt, ms(&retry_at), detail])?;
                }
                Ok(())
            }))
            .await
    }

    /// The bed of alarm `alarm_id` if `target` was ever sent it (for a target's acknowledge: only an alarm the
    /// target was told of).
    pub fn notify_alarm_bed(&self, target: &str, alarm_id: &str) -> Result<Option<String>, StoreError> {
        let conn = self.lock();
        let bed = conn
            .prepare_cached("SELECT bed FROM notify_queue WHERE target = ?1 AND alarm_id = ?2 LIMIT 1")?
            .query_row([target, alarm_id], |r| r.get::<_, String>(0))
            .optional()?;
        Ok(bed)
    }

    /// Where the first notification of alarm `alarm_id` to `target` stands (its queue row and latest attempt);
    /// `None` while nothing is queued.
    pub fn notify_first_delivery(&self, target: &str, alarm_id: &str) -> Result<Option<DeliveryState>, StoreError> {
        let conn = self.lock();
        let row = conn
            .prepare_cached(
                "SELECT q.delivered_ms, q.attempts, a.detail FROM notify_queue q
                 LEFT JOIN notify_attempts a ON a.id = (SELECT MAX(id) FROM notify_attempts WHERE queue_id = q.id)
                 WHERE q.target = ?1 AND q.alarm_id = ?2 ORDER BY q.id LIMIT 1",
            )?
            .query_row([target, alarm_id], |r| {
                Ok(DeliveryState {
                    delivered: r.get::<_, Option<i64>>(0)?.map(from_ms),
                    attempts: r.get::<_, i64>(1)?.clamp(0, i64::from(u32::MAX)) as u32,
                    detail: r.get(2)?,
                })
            })
            .optional()?;
        Ok(row)
    }

    /// Undelivered notifications per target (targets with none are absent).
    pub fn notify_backlog(&self) -> Result<Vec<TargetBacklog>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT target, COUNT(*), MIN(created_ms) FROM notify_queue WHERE delivered_ms IS NULL
             GROUP BY target ORDER BY target",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(TargetBacklog {
                target: r.get(0)?,
                pending: r.get::<_, i64>(1)? as u64,
                oldest: r.get::<_, Option<i64>>(2)?.map(from_ms),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The notification log of a bed with `from <= time < to`, oldest first.
    pub fn notify_attempts(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<AttemptRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT time_ms, target, bed, alarm_id, queue_id, attempt, ok, detail FROM notify_attempts
             WHERE bed = ?1 AND time_ms >= ?2 AND time_ms < ?3 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![bed, ms(&from), ms(&to)], |r| {
            Ok(AttemptRecord {
                time: from_ms(r.get(0)?),
                target: r.get(1)?,
                bed: r.get(2)?,
                alarm_id: r.get(3)?,
                queue_id: r.get(4)?,
                attempt: r.get::<_, i64>(5)?.clamp(0, i64::from(u32::MAX)) as u32,
                ok: r.get(6)?,
                detail: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Chains that are running, or that changed since `since` (for the dashboard), oldest first.
    pub fn notify_chains(&self, since: Timestamp) -> Result<Vec<ChainState>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT json FROM notify_chains WHERE state = 'running' OR updated_ms >= ?1 ORDER BY updated_ms",
        )?;
        let rows = stmt.query_map([ms(&since)], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for json in rows {
            out.push(serde_json::from_str(&json?)?);
        }
        Ok(out)
    }

    /// Stores a new acknowledge-link token (only the digest of its secret) and returns its id.
    #[allow(clippy::too_many_arguments)]
    pub async fn notify_issue_token(
        &self,
        digest: Vec<u8>,
        target: &str,
        bed: &str,
        alarm_id: &str,
        now: Timestamp,
        expires: Timestamp,
    ) -> Result<i64, StoreError> {
        let (target, bed, alarm_id) = (target.to_owned(), bed.to_owned(), alarm_id.to_owned());
        let (tx, rx) = mpsc::channel();
        self.writer
            .write_async(Box::new(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO notify_tokens (digest, target, bed, alarm_id, created_ms, expires_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![digest, target, bed, alarm_id, ms(&now), ms(&expires)])?;
                let _ = tx.send(conn.last_insert_rowid());
                Ok(())
            }))
            .await?;
        rx.recv().map_err(|_| StoreError::Failed("issuing a token reported nothing".into()))
    }

    /// The token with this id, if there is one.
    pub fn notify_token(&self, id: i64) -> Result<Option<TokenRecord>, StoreError> {
        let conn = self.lock();
        let record = conn
            .prepare_cached(
                "SELECT id, digest, target, bed, alarm_id, expires_ms, used_ms FROM notify_tokens WHERE id = ?1",
            )?
            .query_row([id], |r| {
                Ok(TokenRecord {
                    id: r.get(0)?,
                    digest: r.get(1)?,
                    target: r.get(2)?,
                    bed: r.get(3)?,
                    alarm_id: r.get(4)?,
                    expires: from_ms(r.get(5)?),
                    used: r.get::<_, Option<i64>>(6)?.map(from_ms),
                })
            })
            .optional()?;
        Ok(record)
    }

    /// Marks a token used at `now`; `false` when it was already used or has expired (a second use, or two uses
    /// at once: only one wins).
    pub async fn notify_consume_token(&self, id: i64, now: Timestamp) -> Result<bool, StoreError> {
        let (tx, rx) = mpsc::channel();
        self.writer
            .write_async(Box::new(move |conn| {
                let n = conn
                    .prepare_cached(
                        "UPDATE notify_tokens SET used_ms = ?2 WHERE id = ?1 AND used_ms IS NULL AND expires_ms > ?2",
                    )?
                    .execute(params![id, ms(&now)])?;
                let _ = tx.send(n == 1);
                Ok(())
            }))
            .await?;
        rx.recv().map_err(|_| StoreError::Failed("using a token reported nothing".into()))
    }
}

/// Retention of the notification tables: delivered rows, attempts, finished chains and tokens older than `cut`
/// go; undelivered rows older than `cut` go too and are counted (a target unreachable for the whole retention
/// period must not grow the file without bound).
pub(super) fn prune(tx: &Connection, cut: i64) -> Result<(usize, usize), StoreError> {
    let delivered = tx.execute("DELETE FROM notify_queue WHERE delivered_ms IS NOT NULL AND created_ms < ?1", [cut])?;
    let undelivered = tx.execute("DELETE FROM notify_queue WHERE delivered_ms IS NULL AND created_ms < ?1", [cut])?;
    tx.execute("DELETE FROM notify_attempts WHERE time_ms < ?1", [cut])?;
    tx.execute("DELETE FROM notify_chains WHERE state != 'running' AND updated_ms < ?1", [cut])?;
    tx.execute("DELETE FROM notify_tokens WHERE expires_ms < ?1", [cut])?;
    Ok((delivered, undelivered))
}

/// Schema step 3 (see `MIGRATIONS` in the store).
pub(super) const MIGRATION: &str = "
    CREATE TABLE notify_queue (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        target          TEXT    NOT NULL,
        bed             TEXT    NOT NULL,
        alarm_id        TEXT    NOT NULL,
        reason          TEXT    NOT NULL,
        created_ms      INTEGER NOT NULL,
        json            TEXT    NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        delivered_ms    INTEGER,
        last_error      TEXT
    );
    CREATE INDEX notify_queue_pending ON notify_queue (target, id) WHERE delivered_ms IS NULL;
    CREATE TABLE notify_chains (
        alarm_id   TEXT PRIMARY KEY,
        bed        TEXT    NOT NULL,
        state      TEXT    NOT NULL,
        next_ms    INTEGER,
        updated_ms INTEGER NOT NULL,
        json       TEXT    NOT NULL,
        event_json TEXT    NOT NULL
    );
    CREATE INDEX notify_chains_due ON notify_chains (next_ms) WHERE state = 'running';
    CREATE TABLE notify_attempts (
        id       INTEGER PRIMARY KEY,
        time_ms  INTEGER NOT NULL,
        target   TEXT    NOT NULL,
        bed      TEXT    NOT NULL,
        alarm_id TEXT    NOT NULL,
        queue_id INTEGER NOT NULL,
        attempt  INTEGER NOT NULL,
        ok       INTEGER NOT NULL,
        detail   TEXT    NOT NULL
    );
    CREATE INDEX notify_attempts_bed_time ON notify_attempts (bed, time_ms);
    CREATE TABLE notify_tokens (
        id         INTEGER PRIMARY KEY,
        digest     BLOB    NOT NULL,
        target     TEXT    NOT NULL,
        bed        TEXT    NOT NULL,
        alarm_id   TEXT    NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        used_ms    INTEGER
    );";
