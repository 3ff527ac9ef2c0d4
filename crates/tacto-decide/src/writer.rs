//! What decide writes to the log after a fold, and the thread that writes it while the next
//! fold runs.
//!
//! Every write is made in the order the folds made them, and a write that fails is made again
//! until it lands: a step's offsets cover the steps before it, and a snapshot's head covers
//! every step folded before it, so nothing may land ahead of a write that did not.

use crate::{DecideError, Output, SNAPSHOT, output_records};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;
use tacto_log::{Durability, EventLog, Record, events};

/// How many writes the writer may be behind the folds before a fold waits for it.
pub const QUEUE: usize = 4;

/// How many records (decisions, contacts and dead letters) the folds may hold unsent while
/// the writer's queue is full, before a fold waits for it: a bound on the memory they take.
pub const MAX_UNSENT: usize = 65_536;

/// The pause before a failed write is made again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// How many times a write is tried once decide is stopping before the writer gives up (what it
/// did not write is folded again from the log on the next start: its offsets were not
/// committed).
const TRIES_WHEN_STOPPING: u32 = 5;

/// A step's outputs, dead letters and the offsets it consumed to.
pub struct Folded {
    /// The decisions, one vector per fold: steps the writer has not taken yet are joined by
    /// moving their vectors, not their outputs (concatenating them grew one vector of up to
    /// tens of megabytes, copied into fresh pages at every doubling).
    pub(crate) outputs: Vec<Vec<Output>>,
    pub(crate) dead: Vec<Record>,
    /// (partition of the events topic, next offset to read).
    pub(crate) commits: Vec<(u32, u64)>,
}

impl Folded {
    /// How many records this step writes.
    pub(crate) fn records(&self) -> usize {
        self.outputs.iter().map(Vec::len).sum::<usize>() + self.dead.len()
    }

    /// Takes in the step folded after this one: one write then makes both (their outputs in
    /// order, and each partition's offset as far as the later step read).
    pub(crate) fn absorb(&mut self, next: Folded) {
        self.outputs.extend(next.outputs);
        self.dead.extend(next.dead);
        for (partition, offset) in next.commits {
            match self.commits.iter_mut().find(|(p, _)| *p == partition) {
                Some(commit) => commit.1 = commit.1.max(offset),
                None => self.commits.push((partition, offset)),
            }
        }
    }
}

/// A snapshot encoded from the state as it was when it began, to be written.
pub struct EncodedSnapshot {
    /// `decide/account/{id}` entries of the accounts changed since the previous snapshot.
    pub(crate) entries: Vec<(String, Vec<u8>)>,
    /// The encoded head (offsets covered).
    pub(crate) head: Vec<u8>,
    /// Accounts in the state.
    pub(crate) accounts: usize,
}

/// One write decide owes the log.
pub enum Write {
    /// A step: decisions (jobs and recalls also to the contacts topic), dead letters and the
    /// offsets consumed, in one atomic write, deferred ([`Durability::Deferred`]): a replay of
    /// the events makes it again, and dispatch's durable record of an attempt carries it to
    /// disk. Decisions first: the audit trail never misses a job dispatch has seen.
    Step(Folded),
    /// A snapshot: the head and the changed accounts, in one atomic, immediate write.
    Snapshot(EncodedSnapshot),
}

impl Write {
    /// Makes this write.
    pub fn write(&self, log: &dyn EventLog, group: &str) -> Result<(), DecideError> {
        match self {
            Write::Step(f) => {
                let (decisions, contacts) = output_records(&f.outputs)?;
                let commits: Vec<(&str, u32, u64)> = f
                    .commits
                    .iter()
                    .map(|&(p, next)| (events::EVENTS.name(), p, next))
                    .collect();
                log.append_and_commit(
                    vec![
                        (events::DECISIONS.name(), decisions),
                        (events::CONTACTS.name(), contacts),
                        (events::DEAD_LETTERS.name(), f.dead.clone()),
                    ],
                    group,
                    &commits,
                    Durability::Deferred,
                )?;
            }
            Write::Snapshot(s) => {
                let mut items: Vec<(&str, &[u8])> = s
                    .entries
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_slice()))
                    .collect();
                // In key order, into the store's B-tree one leaf after another: most are (the
                // slices take the accounts in order), those encoded early before a change not.
                items.sort_unstable_by_key(|(n, _)| *n);
                items.push((SNAPSHOT, &s.head));
                let started = std::time::Instant::now();
                log.put_blobs(&items)?;
                tracing::info!(
                    millis = started.elapsed().as_millis() as u64,
                    accounts = s.accounts,
                    written = s.entries.len(),
                    bytes = s.entries.iter().map(|(_, v)| v.len()).sum::<usize>(),
                    "snapshot written"
                );
            }
        }
        Ok(())
    }
}

/// The error of a send to a writer that has stopped.
fn stopped() -> DecideError {
    DecideError::WriterStopped("it gave up on a write".into())
}

/// A thread that makes decide's writes in order while decide folds the next steps.
pub struct Writer {
    queue: Option<SyncSender<Write>>,
    thread: Option<JoinHandle<Result<(), DecideError>>>,
    stopping: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the writer on `log`, committing offsets for consumer group `group`.
    pub fn spawn(log: Arc<dyn EventLog>, group: String) -> Result<Self, DecideError> {
        let (queue, writes) = sync_channel(QUEUE);
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("decide-writer".into())
            .spawn(move || write_all(&*log, &group, writes, &stop))
            .map_err(|e| DecideError::WriterStopped(format!("could not start: {e}")))?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
            stopping,
        })
    }

    /// Queues a write; waits while [`QUEUE`] writes are already waiting.
    pub fn send(&self, write: Write) -> Result<(), DecideError> {
        self.queue
            .as_ref()
            .ok_or_else(stopped)?
            .send(write)
            .map_err(|_| stopped())
    }

    /// Queues a write unless [`QUEUE`] writes are already waiting; then hands it back.
    pub fn try_send(&self, write: Write) -> Result<Option<Write>, DecideError> {
        match self.queue.as_ref().ok_or_else(stopped)?.try_send(write) {
            Ok(()) => Ok(None),
            Err(TrySendError::Full(write)) => Ok(Some(write)),
            Err(TrySendError::Disconnected(_)) => Err(stopped()),
        }
    }

    /// Makes every queued write and stops. A write that keeps failing is given up after a few
    /// tries (an error): the steps not written are folded again on the next start.
    pub fn finish(mut self) -> Result<(), DecideError> {
        self.stopping.store(true, Ordering::Release);
        self.queue = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(done)) => done,
            Some(Err(_)) => Err(DecideError::WriterStopped("it panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Dropped without `finish` (decide failed): let the thread end after what is queued.
        self.stopping.store(true, Ordering::Release);
    }
}

/// The writer thread: each write in turn, made again until it lands.
fn write_all(
    log: &dyn EventLog,
    group: &str,
    writes: Receiver<Write>,
    stopping: &AtomicBool,
) -> Result<(), DecideError> {
    for write in writes {
        let mut failures = 0;
        while let Err(e) = write.write(log, group) {
            failures += 1;
            tracing::error!(error = %e, failures, "decide's write failed; making it again");
            if stopping.load(Ordering::Acquire) && failures >= TRIES_WHEN_STOPPING {
                return Err(DecideError::WriterStopped(format!(
                    "gave up after {failures} failed tries while stopping ({e}); the steps not \
                     written are folded again from the log on the next start"
                )));
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }
    Ok(())
}
