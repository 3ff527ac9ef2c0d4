//! The embedded backend: one `redb` database file, ACID and crash-safe (copy-on-write B-trees,
//! fsync on every commit). An append returns only after its transaction is durable, so an
//! acknowledged event survives `kill -9` and power loss. A consumer's step (its outputs and
//! offsets) may be written [`Durability::Deferred`]: atomic and visible at once, on disk with
//! the next immediate write (at most [`MAX_DEFERRAL`] later); a crash loses it together with
//! the progress it records, and the consumer replays. After a storage failure (a full disk),
//! the store refuses every operation until reopened; this log reopens it on the next operation
//! and writes again the deferred writes the failure lost, so service resumes by itself once
//! space is back and no consumer's progress moves back under it.
//!
//! Records are stored in [`segment`]s: the records one transaction appends to a partition,
//! together. Stores written before segments keep their records one per entry; both are read.

mod segment;

use crate::{Appended, Delivered, Durability, EventLog, LogError, Position, Record, partition_for};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const TOPICS: TableDefinition<&str, u32> = TableDefinition::new("topics");
/// Records one per entry, as stores written before segments hold them (read, never written).
const RECORDS: TableDefinition<(&str, u32, u64), &[u8]> = TableDefinition::new("records");
/// Segments by (topic, partition, offset of their first record).
const SEGMENTS: TableDefinition<(&str, u32, u64), &[u8]> = TableDefinition::new("segments");
const ENDS: TableDefinition<(&str, u32), u64> = TableDefinition::new("ends");
const OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("offsets");
const UNIQUE: TableDefinition<(&str, &str), (u32, u64)> = TableDefinition::new("unique");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn storage(e: impl std::fmt::Display) -> LogError {
    LogError::Storage(e.to_string())
}

/// The longest a [`Durability::Deferred`] write waits for an immediate one: a deferred write
/// made later than this after the last immediate write is made immediate itself, so a crash
/// loses at most this much of a consumer's progress (replayed on restart).
pub const MAX_DEFERRAL: Duration = Duration::from_secs(1);

/// The least time between two attempts to reopen the store after a storage failure.
const REOPEN_PAUSE: Duration = Duration::from_millis(200);

/// The default of [`EmbeddedLog::open_with_cache`]: 256 MiB. redb's own default is 1 GiB; the
/// log's hot pages (the tails being appended and read) fit in far less, the operating system's
/// page cache holds the rest, and every mebibyte the process does not grow into is one the
/// kernel does not have to fault in and zero (on the benchmark machine, 57% of decide's time
/// during a load went to that with the 1 GiB cache: BENCHMARKS.md).
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

/// A durable log in one file.
pub struct EmbeddedLog {
    path: PathBuf,
    /// redb's page cache (read cache and write buffer), bytes.
    cache_bytes: usize,
    /// `None` only between closing a failed store and reopening it.
    db: RwLock<Option<Database>>,
    /// A storage error happened: reopen before the next operation.
    failed: AtomicBool,
    notify: watch::Sender<u64>,
    /// When the last immediate (durable) commit ended.
    last_durable: Mutex<Instant>,
    /// The deferred writes since the last immediate commit, in commit order. A clean close
    /// makes them durable; a storage failure would lose them (the store reopens at its last
    /// durable commit), so the reopen writes them again before anything else: a consumer's
    /// progress never moves back under it while the process lives.
    redo: Mutex<Vec<Deferred>>,
    /// When the store was last reopened after a failure, if ever.
    last_reopen: Mutex<Option<Instant>>,
    /// Opens the store on this backend instead of the file (tests inject failures with it).
    #[cfg(test)]
    backend: Option<tests::Backend>,
}

/// A deferred write, kept until an immediate commit has made it durable.
#[derive(Default)]
struct Deferred {
    appends: Vec<(String, Vec<Record>)>,
    group: String,
    commits: Vec<(String, u32, u64)>,
    /// Named blobs stored.
    blobs: Vec<(String, Vec<u8>)>,
    /// Records appended to a topic under unique keys.
    unique: Option<(String, Vec<(String, Record)>)>,
}

impl Deferred {
    /// Writes it again inside `tx` (the unique appends check their keys again).
    fn write_in(&self, tx: &redb::WriteTransaction) -> Result<(), LogError> {
        EmbeddedLog::write_in(tx, &self.appends, &self.group, &self.commits)?;
        EmbeddedLog::blobs_in(
            tx,
            self.blobs.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        )?;
        if let Some((topic, items)) = &self.unique {
            EmbeddedLog::unique_in(tx, topic, items)?;
        }
        Ok(())
    }
}

impl EmbeddedLog {
    /// Opens (or creates) the log at `path`, with a page cache of [`DEFAULT_CACHE_BYTES`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LogError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the log at `path`, with a page cache of at most `cache_bytes`.
    pub fn open_with_cache(path: impl AsRef<Path>, cache_bytes: usize) -> Result<Self, LogError> {
        let path = path.as_ref().to_owned();
        let db = Self::open_database(&path, cache_bytes)?;
        let (notify, _) = watch::channel(0);
        Ok(Self {
            path,
            cache_bytes,
            db: RwLock::new(Some(db)),
            failed: AtomicBool::new(false),
            notify,
            last_durable: Mutex::new(Instant::now()),
            redo: Mutex::new(Vec::new()),
            last_reopen: Mutex::new(None),
            #[cfg(test)]
            backend: None,
        })
    }

    fn open_store(&self) -> Result<Database, LogError> {
        #[cfg(test)]
        if let Some(backend) = &self.backend {
            let db = redb::Builder::new()
                .create_with_backend(backend.open())
                .map_err(storage)?;
            return Self::create_tables(db);
        }
        Self::open_database(&self.path, self.cache_bytes)
    }

    fn open_database(path: &Path, cache_bytes: usize) -> Result<Database, LogError> {
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(storage)?;
        Self::create_tables(db)
    }

    fn create_tables(db: Database) -> Result<Database, LogError> {
        // Create every table up front so readers never see a missing table.
        let tx = db.begin_write().map_err(storage)?;
        {
            tx.open_table(TOPICS).map_err(storage)?;
            tx.open_table(RECORDS).map_err(storage)?;
            tx.open_table(SEGMENTS).map_err(storage)?;
            tx.open_table(ENDS).map_err(storage)?;
            tx.open_table(OFFSETS).map_err(storage)?;
            tx.open_table(UNIQUE).map_err(storage)?;
            tx.open_table(META).map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        Ok(db)
    }

    /// Runs `op` on the store, reopening it first if an earlier operation failed. A storage
    /// error marks it failed (redb refuses everything after an IO error until reopened).
    fn with<T>(&self, op: impl FnOnce(&Database) -> Result<T, LogError>) -> Result<T, LogError> {
        if self.failed.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let guard = self
            .db
            .read()
            .map_err(|_| LogError::Storage("log lock poisoned".into()))?;
        let db = guard
            .as_ref()
            .ok_or_else(|| LogError::Storage("the log is closed after a failure".into()))?;
        let result = op(db);
        if matches!(result, Err(LogError::Storage(_))) {
            self.failed.store(true, Ordering::Release);
        }
        result
    }

    fn reopen(&self) -> Result<(), LogError> {
        let mut guard = self
            .db
            .write()
            .map_err(|_| LogError::Storage("log lock poisoned".into()))?;
        if !self.failed.load(Ordering::Acquire) && guard.is_some() {
            return Ok(()); // another caller reopened it
        }
        // Opening a store after a failure verifies the whole file: while the failure lasts (a
        // full disk), one attempt per REOPEN_PAUSE, and the operations between fail at once
        // rather than queue behind one verification after another.
        let mut last = self
            .last_reopen
            .lock()
            .map_err(|_| LogError::Storage("log lock poisoned".into()))?;
        if last.is_some_and(|at| at.elapsed() < REOPEN_PAUSE) {
            return Err(LogError::Storage(
                "the store is recovering from a storage failure".into(),
            ));
        }
        *last = Some(Instant::now());
        drop(last);
        // The file can be opened again only once the failed handle is closed.
        drop(guard.take());
        let db = self.open_store()?;
        self.write_again(&db)?;
        *guard = Some(db);
        self.failed.store(false, Ordering::Release);
        tracing::warn!(path = %self.path.display(), "embedded log reopened after a storage failure");
        Ok(())
    }

    /// Writes the deferred writes a storage failure lost into the reopened store `db`, in one
    /// immediate commit. On failure they stay kept, for the next reopen.
    fn write_again(&self, db: &Database) -> Result<(), LogError> {
        let mut redo = self
            .redo
            .lock()
            .map_err(|_| LogError::Storage("log lock poisoned".into()))?;
        if redo.is_empty() {
            return Ok(());
        }
        let tx = db.begin_write().map_err(storage)?;
        for d in redo.iter() {
            d.write_in(&tx)?;
        }
        tx.commit().map_err(storage)?;
        if let Ok(mut at) = self.last_durable.lock() {
            *at = Instant::now();
        }
        tracing::warn!(
            writes = redo.len(),
            "deferred writes lost by the storage failure written again"
        );
        redo.clear();
        Ok(())
    }

    /// Commits `tx`: deferred when asked and the last immediate commit is recent enough (the
    /// write, made by `deferred`, is then kept until an immediate commit), immediate otherwise.
    fn finish(
        &self,
        mut tx: redb::WriteTransaction,
        durability: Durability,
        deferred: impl FnOnce() -> Deferred,
    ) -> Result<(), LogError> {
        // Held across the commit: the kept writes are in commit order.
        let mut redo = self
            .redo
            .lock()
            .map_err(|_| LogError::Storage("log lock poisoned".into()))?;
        let defer = durability == Durability::Deferred
            && self
                .last_durable
                .lock()
                .is_ok_and(|at| at.elapsed() < MAX_DEFERRAL);
        if defer {
            tx.set_durability(redb::Durability::None).map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        if defer {
            redo.push(deferred());
        } else {
            // Durable, and with it every deferred commit before it. Their records are freed
            // once the lock is released (thousands of records: the other writers need not wait).
            let durable = std::mem::take(&mut *redo);
            if let Ok(mut at) = self.last_durable.lock() {
                *at = Instant::now();
            }
            drop(redo);
            drop(durable);
        }
        Ok(())
    }

    /// Commits `tx` durably.
    fn finish_now(&self, tx: redb::WriteTransaction) -> Result<(), LogError> {
        self.finish(tx, Durability::Immediate, Deferred::default)
    }

    /// Appends and offsets of one consumer's step, inside `tx`. Returns whether it appended.
    fn write_in<T: AsRef<str>>(
        tx: &redb::WriteTransaction,
        appends: &[(T, Vec<Record>)],
        group: &str,
        commits: &[(T, u32, u64)],
    ) -> Result<bool, LogError> {
        let mut wrote = false;
        for (topic, records) in appends {
            if !records.is_empty() {
                Self::append_all(tx, topic.as_ref(), records)?;
                wrote = true;
            }
        }
        let mut offsets = tx.open_table(OFFSETS).map_err(storage)?;
        for (topic, partition, next) in commits {
            offsets
                .insert((group, topic.as_ref(), *partition), *next)
                .map_err(storage)?;
        }
        Ok(wrote)
    }

    /// Stores named blobs inside `tx`.
    fn blobs_in<'a>(
        tx: &redb::WriteTransaction,
        items: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<(), LogError> {
        let mut t = tx.open_table(META).map_err(storage)?;
        for (name, value) in items {
            t.insert(name, value).map_err(storage)?;
        }
        Ok(())
    }

    /// Appends each record to `topic` inside `tx` unless its unique key was appended before.
    /// Returns what happened to each, and whether anything was appended.
    fn unique_in(
        tx: &redb::WriteTransaction,
        topic: &str,
        items: &[(String, Record)],
    ) -> Result<(Vec<Appended>, bool), LogError> {
        let mut appends = Appends::new(tx, topic)?;
        let mut out = Vec::with_capacity(items.len());
        let mut wrote = false;
        let mut unique_keys = tx.open_table(UNIQUE).map_err(storage)?;
        for (unique, record) in items {
            // One walk down the unique keys' B-tree for a new key (the usual case), not a look-up
            // then an insert: the key goes in with the position the record will take, and a
            // duplicate (the key was there) gets its first position back.
            let pos = appends.next_position(&record.key)?;
            let seen = unique_keys
                .insert((topic, unique.as_str()), (pos.partition, pos.offset))
                .map_err(storage)?
                .map(|v| v.value());
            if let Some(first) = seen {
                unique_keys
                    .insert((topic, unique.as_str()), first)
                    .map_err(storage)?;
                let (partition, offset) = first;
                out.push(Appended::Duplicate(Position { partition, offset }));
                continue;
            }
            appends.push(record)?;
            out.push(Appended::New(pos));
            wrote = true;
        }
        appends.finish()?;
        Ok((out, wrote))
    }

    fn wake(&self) {
        self.notify.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn topic_partitions(tx: &redb::WriteTransaction, topic: &str) -> Result<u32, LogError> {
        let t = tx.open_table(TOPICS).map_err(storage)?;
        let p = t.get(topic).map_err(storage)?.map(|v| v.value());
        p.ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))
    }

    /// Appends `records` to `topic` inside `tx`.
    fn append_all(
        tx: &redb::WriteTransaction,
        topic: &str,
        records: &[Record],
    ) -> Result<Vec<Position>, LogError> {
        let mut appends = Appends::new(tx, topic)?;
        let out = records
            .iter()
            .map(|r| appends.push(r))
            .collect::<Result<Vec<_>, _>>()?;
        appends.finish()?;
        Ok(out)
    }
}

/// The records one transaction appends to a topic: each partition's go into segments, written
/// when full and at [`Appends::finish`], which also moves the partitions' ends.
struct Appends<'t> {
    topic: &'t str,
    partitions: u32,
    ends: redb::Table<'t, (&'static str, u32), u64>,
    segments: redb::Table<'t, (&'static str, u32, u64), &'static [u8]>,
    /// By partition: the segment being filled.
    open: HashMap<u32, Open>,
}

/// A partition's segment being filled.
struct Open {
    /// Offset of its first record.
    first: u64,
    /// Offset the next record gets.
    next: u64,
    bytes: Vec<u8>,
}

impl<'t> Appends<'t> {
    fn new(tx: &'t redb::WriteTransaction, topic: &'t str) -> Result<Self, LogError> {
        Ok(Self {
            topic,
            partitions: EmbeddedLog::topic_partitions(tx, topic)?,
            ends: tx.open_table(ENDS).map_err(storage)?,
            segments: tx.open_table(SEGMENTS).map_err(storage)?,
            open: HashMap::new(),
        })
    }

    /// Where the next record with `key` goes (what [`Appends::push`] of it returns).
    fn next_position(&mut self, key: &str) -> Result<Position, LogError> {
        let partition = partition_for(key, self.partitions);
        let offset = Self::open(&mut self.open, &self.ends, self.topic, partition)?.next;
        Ok(Position { partition, offset })
    }

    /// The segment being filled of `partition`, opened at its end.
    fn open<'o>(
        open: &'o mut HashMap<u32, Open>,
        ends: &redb::Table<'t, (&'static str, u32), u64>,
        topic: &str,
        partition: u32,
    ) -> Result<&'o mut Open, LogError> {
        Ok(match open.entry(partition) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let end = ends
                    .get((topic, partition))
                    .map_err(storage)?
                    .map_or(0, |v| v.value());
                v.insert(Open {
                    first: end,
                    next: end,
                    bytes: Vec::new(),
                })
            }
        })
    }

    /// Appends `record` to its key's partition; returns where it goes.
    fn push(&mut self, record: &Record) -> Result<Position, LogError> {
        let partition = partition_for(&record.key, self.partitions);
        let open = Self::open(&mut self.open, &self.ends, self.topic, partition)?;
        if !open.bytes.is_empty()
            && open.bytes.len() + 4 + record.key.len() + record.value.len() > segment::SEGMENT_BYTES
        {
            write_segment(&mut self.segments, self.topic, partition, open)?;
            open.bytes.clear();
            open.first = open.next;
        }
        segment::push(&mut open.bytes, record)?;
        let offset = open.next;
        open.next += 1;
        Ok(Position { partition, offset })
    }

    /// Writes the open segments and the partitions' new ends.
    fn finish(mut self) -> Result<(), LogError> {
        for (partition, open) in self.open.drain() {
            if !open.bytes.is_empty() {
                write_segment(&mut self.segments, self.topic, partition, &open)?;
            }
            self.ends
                .insert((self.topic, partition), open.next)
                .map_err(storage)?;
        }
        Ok(())
    }
}

/// Seals `open`'s records and stores them under the offset of its first.
fn write_segment(
    segments: &mut redb::Table<'_, (&'static str, u32, u64), &'static [u8]>,
    topic: &str,
    partition: u32,
    open: &Open,
) -> Result<(), LogError> {
    segments
        .insert(
            (topic, partition, open.first),
            segment::seal(&open.bytes)?.as_slice(),
        )
        .map_err(storage)?;
    Ok(())
}

impl EventLog for EmbeddedLog {
    fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), LogError> {
        self.with(|db| {
            let partitions = partitions.max(1);
            let tx = db.begin_write().map_err(storage)?;
            {
                let mut t = tx.open_table(TOPICS).map_err(storage)?;
                let existing = t.get(topic).map_err(storage)?.map(|v| v.value());
                match existing {
                    Some(p) if p == partitions => {}
                    Some(existing) => {
                        return Err(LogError::PartitionMismatch {
                            topic: topic.to_owned(),
                            existing,
                            requested: partitions,
                        });
                    }
                    None => {
                        t.insert(topic, partitions).map_err(storage)?;
                    }
                }
            }
            self.finish_now(tx)
        })
    }

    fn partitions(&self, topic: &str) -> Result<u32, LogError> {
        self.with(|db| {
            let tx = db.begin_read().map_err(storage)?;
            let t = tx.open_table(TOPICS).map_err(storage)?;
            let p = t.get(topic).map_err(storage)?.map(|v| v.value());
            p.ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))
        })
    }

    fn append(&self, topic: &str, records: &[Record]) -> Result<Vec<Position>, LogError> {
        self.with(|db| {
            if records.is_empty() {
                return Ok(Vec::new());
            }
            let tx = db.begin_write().map_err(storage)?;
            let out = Self::append_all(&tx, topic, records)?;
            self.finish_now(tx)?;
            self.wake();
            Ok(out)
        })
    }

    fn append_and_commit(
        &self,
        appends: Vec<(&str, Vec<Record>)>,
        group: &str,
        commits: &[(&str, u32, u64)],
        durability: Durability,
    ) -> Result<(), LogError> {
        self.with(|db| {
            if commits.is_empty() && appends.iter().all(|(_, r)| r.is_empty()) {
                return Ok(());
            }
            let tx = db.begin_write().map_err(storage)?;
            let wrote = Self::write_in(&tx, &appends, group, commits)?;
            self.finish(tx, durability, || Deferred {
                appends: appends
                    .into_iter()
                    .filter(|(_, r)| !r.is_empty())
                    .map(|(t, r)| (t.to_owned(), r))
                    .collect(),
                group: group.to_owned(),
                commits: commits
                    .iter()
                    .map(|(t, p, n)| ((*t).to_owned(), *p, *n))
                    .collect(),
                ..Deferred::default()
            })?;
            if wrote {
                self.wake();
            }
            Ok(())
        })
    }

    fn append_unique_many(
        &self,
        topic: &str,
        items: &[(String, Record)],
    ) -> Result<Vec<Appended>, LogError> {
        self.with(|db| {
            let tx = db.begin_write().map_err(storage)?;
            let (out, wrote) = Self::unique_in(&tx, topic, items)?;
            self.finish_now(tx)?;
            if wrote {
                self.wake();
            }
            Ok(out)
        })
    }

    fn put_blobs_and_append_unique(
        &self,
        blobs: &[(&str, &[u8])],
        topic: &str,
        items: &[(String, Record)],
        durability: Durability,
    ) -> Result<Vec<Appended>, LogError> {
        self.with(|db| {
            let tx = db.begin_write().map_err(storage)?;
            Self::blobs_in(&tx, blobs.iter().copied())?;
            let (out, wrote) = Self::unique_in(&tx, topic, items)?;
            self.finish(tx, durability, || Deferred {
                blobs: blobs
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
                    .collect(),
                unique: Some((topic.to_owned(), items.to_vec())),
                ..Deferred::default()
            })?;
            if wrote {
                self.wake();
            }
            Ok(out)
        })
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<Delivered>, LogError> {
        // One read transaction, and no nested `with`: a nested call would take the store's
        // lock again, and wait forever behind a reopen queued after the first.
        self.with(|db| {
            let tx = db.begin_read().map_err(storage)?;
            let partitions = tx
                .open_table(TOPICS)
                .map_err(storage)?
                .get(topic)
                .map_err(storage)?
                .map(|v| v.value())
                .ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))?;
            if partition >= partitions {
                return Err(LogError::UnknownPartition {
                    topic: topic.to_owned(),
                    partition,
                });
            }
            let mut out = Vec::new();
            // Records from before segments (older stores only), then segments.
            let old = tx.open_table(RECORDS).map_err(storage)?;
            for item in old
                .range((topic, partition, from)..=(topic, partition, u64::MAX))
                .map_err(storage)?
                .take(max)
            {
                let (k, v) = item.map_err(storage)?;
                out.push(Delivered {
                    position: Position {
                        partition,
                        offset: k.value().2,
                    },
                    record: segment::decode(v.value())?,
                });
            }
            let from = out.last().map_or(from, |d| d.position.offset + 1);
            let segments = tx.open_table(SEGMENTS).map_err(storage)?;
            // The segment holding `from` starts at or before it.
            let start = segments
                .range((topic, partition, 0)..=(topic, partition, from))
                .map_err(storage)?
                .next_back()
                .transpose()
                .map_err(storage)?
                .map_or(from, |(k, _)| k.value().2);
            'segments: for item in segments
                .range((topic, partition, start)..=(topic, partition, u64::MAX))
                .map_err(storage)?
            {
                let (k, v) = item.map_err(storage)?;
                let records = segment::unseal(v.value())?;
                for (offset, stored) in (k.value().2..).zip(segment::Records::of(&records)) {
                    if out.len() >= max {
                        break 'segments;
                    }
                    let stored = stored?;
                    if offset >= from {
                        out.push(Delivered {
                            position: Position { partition, offset },
                            record: segment::decode(stored)?,
                        });
                    }
                }
            }
            Ok(out)
        })
    }

    fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        self.with(|db| {
            let tx = db.begin_read().map_err(storage)?;
            let t = tx.open_table(ENDS).map_err(storage)?;
            Ok(t.get((topic, partition))
                .map_err(storage)?
                .map(|v| v.value())
                .unwrap_or(0))
        })
    }

    fn commit(&self, group: &str, topic: &str, partition: u32, next: u64) -> Result<(), LogError> {
        self.with(|db| {
            let tx = db.begin_write().map_err(storage)?;
            tx.open_table(OFFSETS)
                .map_err(storage)?
                .insert((group, topic, partition), next)
                .map_err(storage)?;
            self.finish_now(tx)
        })
    }

    fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<u64, LogError> {
        self.with(|db| {
            let tx = db.begin_read().map_err(storage)?;
            let t = tx.open_table(OFFSETS).map_err(storage)?;
            Ok(t.get((group, topic, partition))
                .map_err(storage)?
                .map(|v| v.value())
                .unwrap_or(0))
        })
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    fn put_blob(&self, name: &str, value: &[u8]) -> Result<(), LogError> {
        self.with(|db| {
            let tx = db.begin_write().map_err(storage)?;
            Self::blobs_in(&tx, [(name, value)])?;
            self.finish_now(tx)
        })
    }

    fn get_blob(&self, name: &str) -> Result<Option<Vec<u8>>, LogError> {
        self.with(|db| {
            let tx = db.begin_read().map_err(storage)?;
            let t = tx.open_table(META).map_err(storage)?;
            Ok(t.get(name).map_err(storage)?.map(|v| v.value().to_vec()))
        })
    }

    fn scan_blobs(
        &self,
        prefix: &str,
        visit: &mut crate::BlobVisitor<'_>,
    ) -> Result<u64, LogError> {
        self.with(|db| {
            let tx = db.begin_read().map_err(storage)?;
            let t = tx.open_table(META).map_err(storage)?;
            let mut n = 0;
            for entry in t.range(prefix..).map_err(storage)? {
                let (k, v) = entry.map_err(storage)?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                visit(k.value(), v.value())?;
                n += 1;
            }
            Ok(n)
        })
    }

    fn put_blobs(&self, items: &[(&str, &[u8])]) -> Result<(), LogError> {
        if items.is_empty() {
            return Ok(());
        }
        self.with(|db| {
            let tx = db.begin_write().map_err(storage)?;
            Self::blobs_in(&tx, items.iter().copied())?;
            self.finish_now(tx)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::StorageBackend;
    use redb::backends::InMemoryBackend;
    use std::sync::Arc;

    /// One store in memory that outlives the databases opened on it, and a switch that makes
    /// its writes fail as a full disk would.
    #[derive(Clone, Default)]
    pub(super) struct Backend {
        store: Arc<InMemoryBackend>,
        full: Arc<AtomicBool>,
    }

    impl Backend {
        /// A backend for one open of the store.
        pub(super) fn open(&self) -> impl StorageBackend {
            self.clone()
        }
    }

    impl std::fmt::Debug for Backend {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Backend")
        }
    }

    impl StorageBackend for Backend {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.store.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            self.store.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.fail()?;
            self.store.set_len(len)
        }
        fn sync_data(&self) -> Result<(), std::io::Error> {
            self.fail()?;
            self.store.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            self.fail()?;
            self.store.write(offset, data)
        }
    }

    impl Backend {
        fn fail(&self) -> Result<(), std::io::Error> {
            if self.full.load(Ordering::Acquire) {
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
            }
            Ok(())
        }
    }

    #[test]
    fn deferred_writes_lost_by_a_storage_failure_are_written_again() {
        let backend = Backend::default();
        let mut log = EmbeddedLog::open(tempfile::tempdir().expect("dir").path().join("unused"))
            .expect("open");
        log.backend = Some(backend.clone());
        log.failed.store(true, Ordering::Release); // reopen on the injected backend
        log.create_topic("in", 1).expect("topic");
        log.create_topic("out", 1).expect("topic");
        let step = |n: u64| {
            log.append_and_commit(
                vec![("out", vec![rec("k", &n.to_string())])],
                "g",
                &[("in", 0, n)],
                Durability::Deferred,
            )
        };
        step(1).expect("deferred 1");
        step(2).expect("deferred 2");
        // The disk fills up: the next immediate write fails, and the store, reopened at its
        // last durable commit, would have lost both deferred writes.
        backend.full.store(true, Ordering::Release);
        assert!(matches!(
            log.append("in", &[rec("k", "x")]),
            Err(LogError::Storage(_))
        ));
        // While it stays full, the reopen fails and keeps them for the next one; attempts
        // closer together than REOPEN_PAUSE fail at once.
        std::thread::sleep(REOPEN_PAUSE);
        assert!(log.end_offset("out", 0).is_err());
        assert_eq!(log.redo.lock().expect("redo").len(), 2);
        assert!(log.end_offset("out", 0).is_err());
        backend.full.store(false, Ordering::Release);
        std::thread::sleep(REOPEN_PAUSE);
        assert_eq!(log.committed("g", "in", 0).expect("committed"), 2);
        let out: Vec<_> = log
            .read("out", 0, 0, 10)
            .expect("read")
            .into_iter()
            .map(|d| (d.position.offset, d.record.value))
            .collect();
        assert_eq!(out, vec![(0, b"1".to_vec()), (1, b"2".to_vec())]);
        // Written once: an immediate write afterwards does not write them a third time.
        log.append("in", &[rec("k", "y")]).expect("append");
        step(3).expect("deferred 3");
        assert_eq!(log.end_offset("out", 0).expect("end"), 3);
    }

    #[test]
    fn deferred_blobs_and_unique_appends_lost_by_a_storage_failure_are_written_again() {
        let backend = Backend::default();
        let mut log = EmbeddedLog::open(tempfile::tempdir().expect("dir").path().join("unused"))
            .expect("open");
        log.backend = Some(backend.clone());
        log.failed.store(true, Ordering::Release);
        log.create_topic("events", 1).expect("topic");
        let report = |n: &str| (format!("report:{n}"), rec("k", n));
        let first = log
            .put_blobs_and_append_unique(
                &[("job/1", b"sent")],
                "events",
                &[report("1")],
                Durability::Deferred,
            )
            .expect("deferred");
        assert!(matches!(first[..], [Appended::New(_)]));
        // Visible at once, and still unique.
        assert_eq!(log.get_blob("job/1").expect("get"), Some(b"sent".to_vec()));
        let again = log
            .put_blobs_and_append_unique(&[], "events", &[report("1")], Durability::Deferred)
            .expect("deferred");
        assert!(matches!(again[..], [Appended::Duplicate(_)]));
        backend.full.store(true, Ordering::Release);
        assert!(log.put_blob("job/2", b"attempting").is_err());
        backend.full.store(false, Ordering::Release);
        std::thread::sleep(REOPEN_PAUSE);
        assert_eq!(log.get_blob("job/1").expect("get"), Some(b"sent".to_vec()));
        assert_eq!(log.end_offset("events", 0).expect("end"), 1);
        let dup = log
            .append_unique("events", "report:1", &rec("k", "1"))
            .expect("append");
        assert!(matches!(dup, Appended::Duplicate(_)));
    }

    #[test]
    fn an_immediate_write_makes_the_deferred_ones_before_it_durable() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("l");
        let log = EmbeddedLog::open(&path).expect("open");
        log.create_topic("out", 1).expect("topic");
        log.append_and_commit(
            vec![("out", vec![rec("k", "1")])],
            "g",
            &[("in", 0, 1)],
            Durability::Deferred,
        )
        .expect("deferred");
        assert_eq!(log.redo.lock().expect("redo").len(), 1);
        log.put_blob("b", b"v").expect("immediate");
        assert!(log.redo.lock().expect("redo").is_empty());
        drop(log);
        let log = EmbeddedLog::open(&path).expect("reopen");
        assert_eq!(log.committed("g", "in", 0).expect("committed"), 1);
        assert_eq!(log.end_offset("out", 0).expect("end"), 1);
    }

    fn rec(key: &str, v: &str) -> Record {
        Record::new(key, v.as_bytes().to_vec())
    }

    #[test]
    fn appends_survive_reopening_and_keys_keep_their_partition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.redb");
        let positions = {
            let log = EmbeddedLog::open(&path).expect("open");
            log.create_topic("t", 4).expect("topic");
            log.append("t", &[rec("a", "1"), rec("b", "2"), rec("a", "3")])
                .expect("append")
        };
        assert_eq!(positions[0].partition, positions[2].partition);
        assert!(positions[2].offset > positions[0].offset);
        let log = EmbeddedLog::open(&path).expect("reopen");
        let p = positions[0].partition;
        let got = log.read("t", p, 0, 10).expect("read");
        let values: Vec<_> = got
            .iter()
            .filter(|d| d.record.key == "a")
            .map(|d| d.record.value.clone())
            .collect();
        assert_eq!(values, vec![b"1".to_vec(), b"3".to_vec()]);
        assert_eq!(log.end_offset("t", p).expect("end"), got.len() as u64);
    }

    #[test]
    fn outputs_and_offsets_land_together_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EmbeddedLog::open(dir.path().join("l")).expect("open");
        log.create_topic("in", 1).expect("topic");
        log.create_topic("out", 2).expect("topic");
        let outs = [rec("a", "1"), rec("b", "2")];
        log.append_and_commit(
            vec![("out", outs.to_vec())],
            "g",
            &[("in", 0, 7)],
            Durability::Immediate,
        )
        .expect("write");
        assert_eq!(log.committed("g", "in", 0).expect("c"), 7);
        let written: u64 = (0..2).map(|p| log.end_offset("out", p).expect("end")).sum();
        assert_eq!(written, 2);
        // A write that fails part-way (an unknown topic after a good one) leaves nothing.
        let err = log.append_and_commit(
            vec![("out", outs.to_vec()), ("missing", outs.to_vec())],
            "g",
            &[("in", 0, 9)],
            Durability::Immediate,
        );
        assert!(matches!(err, Err(LogError::UnknownTopic(t)) if t == "missing"));
        assert_eq!(log.committed("g", "in", 0).expect("c"), 7);
        let written: u64 = (0..2).map(|p| log.end_offset("out", p).expect("end")).sum();
        assert_eq!(written, 2);
    }

    #[test]
    fn consumer_offsets_are_per_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EmbeddedLog::open(dir.path().join("l")).expect("open");
        log.create_topic("t", 1).expect("topic");
        assert_eq!(log.committed("g", "t", 0).expect("c"), 0);
        log.commit("g", "t", 0, 5).expect("commit");
        assert_eq!(log.committed("g", "t", 0).expect("c"), 5);
        assert_eq!(log.committed("h", "t", 0).expect("c"), 0);
    }

    #[test]
    fn unique_appends_are_written_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EmbeddedLog::open(dir.path().join("l")).expect("open");
        log.create_topic("t", 2).expect("topic");
        let first = log.append_unique("t", "evt-1", &rec("a", "x")).expect("1");
        let again = log.append_unique("t", "evt-1", &rec("a", "y")).expect("2");
        let Appended::New(pos) = first else {
            panic!("first append must be new")
        };
        assert_eq!(again, Appended::Duplicate(pos));
        assert_eq!(log.end_offset("t", pos.partition).expect("end"), 1);
        // In one batch: a key seen before, a key twice, a new key. A duplicate keeps pointing
        // at the first record with its key, whichever batch it came in.
        let items: Vec<(String, Record)> = [("evt-1", "z"), ("evt-2", "b"), ("evt-2", "c")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), rec("a", v)))
            .collect();
        let out = log.append_unique_many("t", &items).expect("many");
        let Appended::New(second) = out[1] else {
            panic!("evt-2 is new: {out:?}")
        };
        assert_eq!(
            out,
            [
                Appended::Duplicate(pos),
                Appended::New(second),
                Appended::Duplicate(second)
            ]
        );
        assert_eq!(second.offset, 1);
        let read = log.read("t", pos.partition, 0, 10).expect("read");
        let values: Vec<&[u8]> = read.iter().map(|d| d.record.value.as_slice()).collect();
        assert_eq!(values, [b"x", b"b"]);
        let again = log.append_unique("t", "evt-1", &rec("a", "w")).expect("3");
        assert_eq!(again, Appended::Duplicate(pos));
        let again = log.append_unique("t", "evt-2", &rec("a", "w")).expect("4");
        assert_eq!(again, Appended::Duplicate(second));
    }

    #[test]
    fn blobs_written_together_are_all_there_after_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l");
        {
            let log = EmbeddedLog::open(&path).expect("open");
            log.put_blob("a", b"old").expect("put");
            log.put_blobs(&[("a", b"1"), ("b", b"2"), ("c", b"")])
                .expect("put many");
            log.put_blobs(&[]).expect("nothing");
        }
        let log = EmbeddedLog::open(&path).expect("reopen");
        assert_eq!(log.get_blob("a").expect("a"), Some(b"1".to_vec()));
        assert_eq!(log.get_blob("b").expect("b"), Some(b"2".to_vec()));
        assert_eq!(log.get_blob("c").expect("c"), Some(Vec::new()));
        assert_eq!(log.get_blob("d").expect("d"), None);
        // A prefix scan sees exactly the names under the prefix, in order.
        log.put_blobs(&[("p/2", b"two"), ("p/1", b"one"), ("q", b"no"), ("p", b"no")])
            .expect("put");
        let mut seen = Vec::new();
        let n = log
            .scan_blobs("p/", &mut |k, v| {
                seen.push((k.to_owned(), v.to_vec()));
                Ok(())
            })
            .expect("scan");
        assert_eq!(n, 2);
        assert_eq!(
            seen,
            vec![
                ("p/1".to_owned(), b"one".to_vec()),
                ("p/2".to_owned(), b"two".to_vec())
            ]
        );
    }

    #[test]
    fn reads_from_any_offset_see_exactly_the_records_appended_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EmbeddedLog::open(dir.path().join("l")).expect("open");
        log.create_topic("t", 1).expect("topic");
        // Transactions of 1 to 60 records, some larger than a segment, so that reads start
        // and stop inside segments, at their edges, and across transactions.
        let mut all = Vec::new();
        for (batch, n) in [1, 60, 7, 3, 45].into_iter().enumerate() {
            let records: Vec<Record> = (0..n)
                .map(|i| {
                    let size = if i % 17 == 5 { 20_000 } else { 40 + 13 * i };
                    Record::new("k", vec![(batch * 64 + i) as u8; size])
                })
                .collect();
            let positions = if batch % 2 == 0 {
                log.append("t", &records).expect("append")
            } else {
                let items: Vec<(String, Record)> = records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (format!("{batch}-{i}"), r.clone()))
                    .collect();
                log.append_unique_many("t", &items)
                    .expect("append")
                    .into_iter()
                    .map(|a| match a {
                        Appended::New(p) => p,
                        Appended::Duplicate(_) => panic!("no duplicates here"),
                    })
                    .collect()
            };
            for (p, r) in positions.iter().zip(records) {
                assert_eq!(p.offset, all.len() as u64);
                all.push(r);
            }
        }
        assert_eq!(log.end_offset("t", 0).expect("end"), all.len() as u64);
        for from in 0..=all.len() + 1 {
            for max in [1, 2, 5, 40, 1_000] {
                let got = log.read("t", 0, from as u64, max).expect("read");
                let want: Vec<_> = all.iter().skip(from).take(max).collect();
                assert_eq!(got.len(), want.len(), "from {from} max {max}");
                for (i, (d, r)) in got.iter().zip(want).enumerate() {
                    assert_eq!(d.position.offset, (from + i) as u64);
                    assert_eq!(&d.record, r, "from {from} max {max}");
                }
            }
        }
    }

    #[test]
    fn a_store_with_records_from_before_segments_reads_them_then_the_new_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l");
        let old: Vec<Record> = (0..5).map(|i| rec("k", &format!("old {i}"))).collect();
        {
            // As the previous version wrote them: one entry per record.
            let log = EmbeddedLog::open(&path).expect("open");
            log.create_topic("t", 1).expect("topic");
            let db = log.db.read().expect("lock");
            let tx = db.as_ref().expect("open").begin_write().expect("tx");
            {
                let mut records = tx.open_table(RECORDS).expect("records");
                for (i, r) in old.iter().enumerate() {
                    let stored = postcard::to_allocvec(r).expect("encode");
                    records
                        .insert(("t", 0, i as u64), stored.as_slice())
                        .expect("insert");
                }
                let mut ends = tx.open_table(ENDS).expect("ends");
                ends.insert(("t", 0), old.len() as u64).expect("end");
            }
            tx.commit().expect("commit");
        }
        let log = EmbeddedLog::open(&path).expect("reopen");
        let new: Vec<Record> = (0..4).map(|i| rec("k", &format!("new {i}"))).collect();
        let positions = log.append("t", &new).expect("append");
        assert_eq!(positions[0].offset, 5);
        let every: Vec<Record> = old.into_iter().chain(new).collect();
        for from in 0..every.len() {
            for max in [1, 3, 100] {
                let got: Vec<Record> = log
                    .read("t", 0, from as u64, max)
                    .expect("read")
                    .into_iter()
                    .map(|d| d.record)
                    .collect();
                let want: Vec<Record> = every.iter().skip(from).take(max).cloned().collect();
                assert_eq!(got, want, "from {from} max {max}");
            }
        }
    }

    #[test]
    fn errors_name_the_topic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EmbeddedLog::open(dir.path().join("l")).expect("open");
        assert!(matches!(
            log.append("nope", &[rec("a", "1")]),
            Err(LogError::UnknownTopic(_))
        ));
        log.create_topic("t", 2).expect("topic");
        assert!(matches!(
            log.create_topic("t", 3),
            Err(LogError::PartitionMismatch { .. })
        ));
        assert!(matches!(
            log.read("t", 7, 0, 1),
            Err(LogError::UnknownPartition { .. })
        ));
    }
}
