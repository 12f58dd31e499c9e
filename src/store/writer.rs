//! The store's writer thread: the only owner of the write connection.
//!
//! Every write is a [`Job`] on a channel. The thread takes everything queued and commits it in **one**
//! transaction (group commit): with `synchronous = FULL` that is one fsync for the whole batch, however many beds
//! wrote. While one batch is being committed the next one queues up, so batches grow with load and a single fsync
//! is never paid per frame. Each job runs in its own savepoint, so a job that fails (e.g. a `bed_seq` refused)
//! rolls back alone and the rest of the batch commits.
//!
//! Jobs someone waits for (alarm and session events, commands) go ahead of background jobs (vitals history,
//! device status, delivery marks): each batch takes every waited-for job first and at most
//! [`BACKGROUND_BESIDE_URGENT`] background jobs beside them, and a batch of background jobs alone holds at most
//! [`MAX_BACKGROUND_BATCH`]. Under overload the background queue grows (up to [`MAX_BACKGROUND`], then it sheds),
//! but an alarm waits for one short commit at most, never for the vitals queued before it. Background jobs keep their order among themselves, and [`Writer::barrier`] waits behind them.
//!
//! Nothing here runs on the async runtime: callers either wait on a plain channel (sync API, for tests and
//! start-up), await a oneshot (bed tasks), or do not wait at all (vitals history, delivery marks).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use chrono::Utc;
use rusqlite::Connection;
use serde::Serialize;
use tokio::sync::{oneshot, watch};

use super::StoreError;
use crate::vitals::Timestamp;

/// Jobs committed together, at most.
pub(super) const MAX_BATCH: usize = 4096;
/// Background jobs in a batch that also carries waited-for jobs, at most: keeps that commit short.
pub(super) const BACKGROUND_BESIDE_URGENT: usize = 256;
/// Background jobs in a batch of their own, at most: the longest commit a waited-for job can arrive behind.
pub(super) const MAX_BACKGROUND_BATCH: usize = 2048;
/// How long jobs nobody waits for (vitals history, delivery marks) gather before they are committed: one commit
/// for a ward's second of vitals instead of one per wake-up, each of which writes WAL frames and takes file locks
/// (at 5,000 beds, a quarter of a core). A waited-for job ends the gathering at once.
pub(super) const BACKGROUND_GATHER: std::time::Duration = std::time::Duration::from_millis(20);
/// Fire-and-forget jobs (vitals history, delivery marks) allowed to wait, at most; beyond that they are dropped
/// and counted rather than letting memory grow while the disk is slow or gone.
pub(super) const MAX_BACKGROUND: usize = 65_536;

/// A write to run inside the next group commit.
pub(super) type Work = Box<dyn FnOnce(&Connection) -> Result<(), StoreError> + Send>;

/// Who waits for a job's outcome.
pub(super) enum Done {
    /// A thread blocked on a channel.
    Sync(mpsc::Sender<Result<(), StoreError>>),
    /// A task awaiting.
    Async(oneshot::Sender<Result<(), StoreError>>),
    /// Nobody (counted in the background queue).
    Background,
}

pub(super) struct Job {
    pub work: Work,
    pub done: Done,
    /// Runs in the background jobs' order (background jobs, and barriers that wait for them).
    pub in_background_order: bool,
}

/// Whether the store can write, for `/api/status`, the dashboard and MQTT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreHealth {
    /// `false` while writes fail (disk full, read-only file, I/O error).
    pub ok: bool,
    /// The last write error, while failing.
    pub last_error: Option<String>,
    /// Since when the store is in this state.
    pub since: Timestamp,
    /// Background writes (vitals history, delivery marks) dropped because too many were waiting.
    pub background_dropped: u64,
}

/// The writer thread's figures, for `/metrics`.
#[derive(Debug)]
pub struct WriterStats {
    /// Jobs sent and not yet taken into a commit (alarm events, vitals history, delivery marks).
    pub queued: AtomicUsize,
    /// How long each group commit took, seconds (the transaction with all its jobs, and its fsync).
    pub commit_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Group commits so far.
    pub commits: AtomicU64,
}

impl Default for WriterStats {
    fn default() -> Self {
        // 0.25 ms .. ~4 s: an fsync on a healthy SSD is well under 10 ms; seconds mean a failing disk.
        let buckets = prometheus_client::metrics::histogram::exponential_buckets(0.00025, 2.0, 15);
        WriterStats {
            queued: AtomicUsize::new(0),
            commit_seconds: prometheus_client::metrics::histogram::Histogram::new(buckets),
            commits: AtomicU64::new(0),
        }
    }
}

/// The sending side, shared by every clone of the store.
pub(super) struct Writer {
    tx: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
    background: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
    health: watch::Receiver<StoreHealth>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub fn start(conn: Connection) -> Result<Writer, std::io::Error> {
        let (tx, rx) = mpsc::channel();
        let background = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let (health_tx, health) =
            watch::channel(StoreHealth { ok: true, last_error: None, since: Utc::now(), background_dropped: 0 });
        let (bg, dr) = (background.clone(), dropped.clone());
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new().name("vigil-store-writer".into()).spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(conn, rx, bg, dr, &health_tx, &thread_stats)
            }));
            if outcome.is_err() {
                // Every later write fails with "the store writer has stopped"; say so where people look.
                tracing::error!("the store writer thread died; nothing more can be stored");
                health_tx.send_modify(|h| {
                    h.ok = false;
                    h.last_error = Some("the store writer thread died".into());
                    h.since = Utc::now();
                });
            }
        })?;
        Ok(Writer { tx, stats, background, dropped, health })
    }

    /// Queues a job, counted in [`WriterStats::queued`] (before it is sent, so the thread never counts below 0).
    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.send(job).map_err(|_| {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            Self::closed()
        })
    }

    /// The thread's figures.
    pub fn stats(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }

    fn closed() -> StoreError {
        StoreError::Failed("the store writer has stopped".into())
    }

    /// Runs `work` in the next group commit and blocks this thread until it is durable.
    pub fn write(&self, work: Work) -> Result<(), StoreError> {
        let (done, rx) = mpsc::channel();
        self.send(Job { work, done: Done::Sync(done), in_background_order: false })?;
        rx.recv().map_err(|_| Self::closed())?
    }

    /// Blocks until every job queued before it, background jobs too, is committed.
    pub fn barrier(&self) -> Result<(), StoreError> {
        let (done, rx) = mpsc::channel();
        self.send(Job { work: Box::new(|_| Ok(())), done: Done::Sync(done), in_background_order: true })?;
        rx.recv().map_err(|_| Self::closed())?
    }

    /// Runs `work` in the next group commit; resolves once it is durable.
    pub async fn write_async(&self, work: Work) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.send(Job { work, done: Done::Async(done), in_background_order: false })?;
        rx.await.map_err(|_| Self::closed())?
    }

    /// Queues `work` for a later group commit without waiting; dropped (and counted) when too many wait.
    pub fn write_background(&self, work: Work) {
        if self.background.fetch_add(1, Ordering::Relaxed) >= MAX_BACKGROUND {
            self.background.fetch_sub(1, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.send(Job { work, done: Done::Background, in_background_order: true }).is_err() {
            self.background.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The store's health, updated after every commit that changes it.
    pub fn health(&self) -> watch::Receiver<StoreHealth> {
        self.health.clone()
    }
}

fn run(
    mut conn: Connection,
    rx: mpsc::Receiver<Job>,
    background: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
    health: &watch::Sender<StoreHealth>,
    stats: &WriterStats,
) {
    let mut queue = Queue::default();
    // The connection is opened with `synchronous = FULL` (store/mod.rs).
    let mut synchronous_full = true;
    loop {
        if queue.is_empty() {
            match rx.recv() {
                Ok(job) => queue.push(job),
                Err(_) => return,
            }
        }
        while let Ok(job) = rx.try_recv() {
            queue.push(job);
        }
        if queue.waited == 0 {
            gather(&rx, &mut queue);
        }
        let jobs = queue.next_batch();
        stats.queued.fetch_sub(jobs.len(), Ordering::Relaxed);
        // A batch nobody waits for needs no fsync of its own: in WAL mode NORMAL still commits in order and never
        // corrupts, and the next waited-for commit's fsync makes it durable with everything before it. Only a
        // power loss in between can cost those last background writes (vitals history, delivery marks).
        let durable = jobs.iter().any(|j| !matches!(j.done, Done::Background));
        if durable != synchronous_full {
            match conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" }) {
                Ok(()) => synchronous_full = durable,
                Err(e) => tracing::warn!(error = %e, "cannot switch the store's synchronous mode"),
            }
        }
        let done_background = jobs.iter().filter(|j| matches!(j.done, Done::Background)).count();
        let started = std::time::Instant::now();
        let (answers, result) = commit(&mut conn, jobs);
        stats.commit_seconds.observe(started.elapsed().as_secs_f64());
        stats.commits.fetch_add(1, Ordering::Relaxed);
        background.fetch_sub(done_background, Ordering::Relaxed);
        let dropped_now = dropped.load(Ordering::Relaxed);
        health.send_if_modified(|h| {
            let mut changed = h.background_dropped != dropped_now;
            h.background_dropped = dropped_now;
            match &result {
                Ok(()) if !h.ok => {
                    tracing::warn!("store writes work again");
                    *h = StoreHealth { ok: true, last_error: None, since: Utc::now(), background_dropped: dropped_now };
                    changed = true;
                }
                Err(e) if h.ok || h.last_error.as_deref() != Some(e.as_str()) => {
                    if h.ok {
                        tracing::error!(error = %e, "store writes fail: events are shown but not stored until it recovers");
                        h.since = Utc::now();
                    }
                    h.ok = false;
                    h.last_error = Some(e.clone());
                    changed = true;
                }
                _ => {}
            }
            changed
        });
        // Answered after the health is updated, so a caller that saw its write fail sees the failure there too.
        for (done, r) in answers {
            answer(done, r);
        }
    }
}

/// Takes more jobs for up to [`BACKGROUND_GATHER`], until one that somebody waits for arrives or a background
/// batch is full.
fn gather(rx: &mpsc::Receiver<Job>, queue: &mut Queue) {
    let until = std::time::Instant::now() + BACKGROUND_GATHER;
    while queue.waited == 0 && queue.background.len() < MAX_BACKGROUND_BATCH {
        let Some(left) = until.checked_duration_since(std::time::Instant::now()) else { return };
        match rx.recv_timeout(left) {
            Ok(job) => queue.push(job),
            // Timed out, or every sender is gone: the loop's next receive sees that.
            Err(_) => return,
        }
    }
}

/// Jobs taken off the channel and not yet committed, in their two orders.
#[derive(Default)]
struct Queue {
    urgent: std::collections::VecDeque<Job>,
    background: std::collections::VecDeque<Job>,
    /// How many of them somebody waits for.
    waited: usize,
}

impl Queue {
    fn push(&mut self, job: Job) {
        if !matches!(job.done, Done::Background) {
            self.waited += 1;
        }
        if job.in_background_order {
            self.background.push_back(job);
        } else {
            self.urgent.push_back(job);
        }
    }

    fn is_empty(&self) -> bool {
        self.urgent.is_empty() && self.background.is_empty()
    }

    /// Every waited-for job (up to [`MAX_BATCH`]) first, then background jobs: a few beside urgent ones, else
    /// [`MAX_BACKGROUND_BATCH`].
    fn next_batch(&mut self) -> Vec<Job> {
        let urgent = self.urgent.len().min(MAX_BATCH);
        let beside = if urgent > 0 { BACKGROUND_BESIDE_URGENT } else { MAX_BACKGROUND_BATCH };
        let background = self.background.len().min(beside).min(MAX_BATCH - urgent);
        let mut jobs: Vec<Job> = self.urgent.drain(..urgent).collect();
        jobs.extend(self.background.drain(..background));
        self.waited -= jobs.iter().filter(|j| !matches!(j.done, Done::Background)).count();
        jobs
    }
}

type Answers = Vec<(Done, Result<(), StoreError>)>;

/// One group commit. Returns each job's outcome, and the store failure (not a single job's refusal) as text
/// for the health state.
fn commit(conn: &mut Connection, jobs: Vec<Job>) -> (Answers, Result<(), String>) {
    let mut outcomes = Vec::with_capacity(jobs.len());
    // IMMEDIATE takes the write lock up front, so waiting for another process's writer goes through the busy
    // timeout; a deferred transaction that read first and then writes fails at once with SQLITE_BUSY.
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let text = e.to_string();
            let answers = jobs.into_iter().map(|j| (j.done, Err(StoreError::Failed(text.clone())))).collect();
            return (answers, Err(text));
        }
    };
    let mut io_error: Option<String> = None;
    for job in jobs {
        let r = match run_cached(&tx, "SAVEPOINT job") {
            Ok(()) => {
                let r = (job.work)(&tx);
                let end = if r.is_ok() {
                    run_cached(&tx, "RELEASE job")
                } else {
                    tx.execute_batch("ROLLBACK TO job; RELEASE job")
                };
                match (r, end) {
                    (Ok(()), Ok(())) => Ok(()),
                    (Ok(()), Err(e)) => Err(StoreError::Sqlite(e)),
                    (Err(e), _) => Err(e),
                }
            }
            Err(e) => Err(StoreError::Sqlite(e)),
        };
        if let Err(StoreError::Sqlite(e)) = &r {
            use rusqlite::ErrorCode as C;
            // Disk full, read-only, I/O: a store failure, not one refused job.
            if matches!(
                e.sqlite_error_code(),
                Some(
                    C::DiskFull
                        | C::ReadOnly
                        | C::SystemIoFailure
                        | C::CannotOpen
                        | C::DatabaseBusy
                        | C::DatabaseLocked
                )
            ) {
                io_error.get_or_insert_with(|| e.to_string());
            }
        }
        outcomes.push((job.done, r));
    }
    let committed = tx.commit().map_err(|e| e.to_string());
    let failure = committed.clone().err().or(io_error);
    let answers = outcomes
        .into_iter()
        .map(|(done, r)| {
            let r = match &committed {
                Ok(()) => r,
                Err(text) => Err(StoreError::Failed(text.clone())),
            };
            if let (Done::Background, Err(e)) = (&done, &r) {
                tracing::debug!(error = %e, "background store write failed");
            }
            (done, r)
        })
        .collect();
    (answers, failure.map_or(Ok(()), Err))
}

/// A statement run once per job, prepared once per connection.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn answer(done: Done, r: Result<(), StoreError>) {
    match done {
        Done::Sync(tx) => {
            let _ = tx.send(r);
        }
        Done::Async(tx) => {
            let _ = tx.send(r);
        }
        Done::Background => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn job(in_background_order: bool) -> Job {
        Job { work: Box::new(|_| Ok(())), done: Done::Background, in_background_order }
    }

    #[test]
    fn batches_of_background_jobs_stay_short_and_urgent_jobs_take_only_a_few_beside_them() {
        let mut q = Queue::default();
        (0..5_000).for_each(|_| q.push(job(true)));
        assert_eq!(q.next_batch().len(), MAX_BACKGROUND_BATCH);
        (0..3).for_each(|_| q.push(job(false)));
        let batch = q.next_batch();
        assert_eq!(batch.len(), 3 + BACKGROUND_BESIDE_URGENT);
        assert!(batch[..3].iter().all(|j| !j.in_background_order), "the urgent ones first");
        assert_eq!(q.background.len(), 5_000 - MAX_BACKGROUND_BATCH - BACKGROUND_BESIDE_URGENT, "none lost");
    }

    #[test]
    fn a_waited_for_write_commits_with_fsync_even_after_batches_of_background_writes_committed_without() {
        let writer = Writer::start(Connection::open_in_memory().unwrap()).unwrap();
        let mode = |conn: &Connection| conn.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0)).unwrap();
        let (tx, seen) = mpsc::channel();
        writer.write_background(Box::new(move |conn| {
            tx.send(mode(conn)).unwrap();
            Ok(())
        }));
        assert_eq!(seen.recv().unwrap(), 1, "NORMAL for a batch nobody waits for");
        let (tx, seen) = mpsc::channel();
        writer.write_background(Box::new(|_| Ok(())));
        writer
            .write(Box::new(move |conn| {
                tx.send(mode(conn)).unwrap();
                Ok(())
            }))
            .unwrap();
        assert_eq!(seen.recv().unwrap(), 2, "FULL for a batch with a waited-for write");
    }

    #[test]
    fn a_waited_for_write_goes_ahead_of_the_background_jobs_queued_before_it_and_a_barrier_waits_for_them() {
        let writer = Writer::start(Connection::open_in_memory().unwrap()).unwrap();
        // Hold the thread in a first commit while the queue fills behind it.
        let (release, held) = mpsc::channel::<()>();
        let (started_tx, started) = mpsc::channel::<()>();
        writer.write_background(Box::new(move |_| {
            let _ = started_tx.send(());
            let _ = held.recv();
            Ok(())
        }));
        started.recv().unwrap();
        let background_done = Arc::new(AtomicUsize::new(0));
        for _ in 0..5_000 {
            let n = background_done.clone();
            writer.write_background(Box::new(move |_| {
                n.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }));
        }
        let writer = Arc::new(writer);
        let (seen_tx, seen) = mpsc::channel();
        let (w, n) = (writer.clone(), background_done.clone());
        let urgent = std::thread::spawn(move || {
            w.write(Box::new(move |_| {
                let _ = seen_tx.send(n.load(Ordering::Relaxed));
                Ok(())
            }))
        });
        // The urgent job is on the channel before the thread is released (it is sent before `write` blocks).
        while writer.stats.queued.load(Ordering::Relaxed) < 5_001 {
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        urgent.join().unwrap().unwrap();
        let before_urgent = seen.recv().unwrap();
        assert!(before_urgent <= BACKGROUND_BESIDE_URGENT, "{before_urgent} background jobs ran before the alarm");
        writer.barrier().unwrap();
        assert_eq!(background_done.load(Ordering::Relaxed), 5_000, "the barrier waited for every background job");
    }

    #[test]
    fn jobs_nobody_waits_for_gather_for_a_moment_before_they_are_committed() {
        let (tx, rx) = mpsc::channel();
        let mut queue = Queue::default();
        queue.push(job(true));
        (0..5).for_each(|_| tx.send(job(true)).unwrap());
        let started = std::time::Instant::now();
        gather(&rx, &mut queue);
        assert!(started.elapsed() >= BACKGROUND_GATHER, "waited for more before committing");
        assert_eq!(queue.background.len(), 6);
    }

    #[test]
    fn a_job_somebody_waits_for_ends_the_gathering() {
        let (tx, rx) = mpsc::channel();
        let mut queue = Queue::default();
        queue.push(job(true));
        let (answer, _) = mpsc::channel();
        tx.send(job(true)).unwrap();
        tx.send(Job { work: Box::new(|_| Ok(())), done: Done::Sync(answer), in_background_order: false }).unwrap();
        (0..2).for_each(|_| tx.send(job(true)).unwrap());
        gather(&rx, &mut queue);
        assert_eq!((queue.background.len(), queue.urgent.len(), queue.waited), (2, 1, 1));
        assert_eq!(rx.try_iter().count(), 2, "what came after it waits for the next batch");
        queue.next_batch();
        assert_eq!(queue.waited, 0, "counted out with the batch");
    }
}
