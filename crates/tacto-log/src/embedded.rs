//! The embedded backend: one `redb` database file, ACID and crash-safe (copy-on-write B-trees,
//! fsync on every commit). An append returns only after its transaction is durable, so an
//! acknowledged event survives `kill -9` and power loss. After a storage failure (a full
//! disk), the store refuses every operation until reopened; this log reopens it on the next
//! operation, so service resumes by itself once space is back.

use crate::{Appended, Delivered, EventLog, LogError, Position, Record, partition_for};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

const TOPICS: TableDefinition<&str, u32> = TableDefinition::new("topics");
const RECORDS: TableDefinition<(&str, u32, u64), &[u8]> = TableDefinition::new("records");
const ENDS: TableDefinition<(&str, u32), u64> = TableDefinition::new("ends");
const OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("offsets");
const UNIQUE: TableDefinition<(&str, &str), (u32, u64)> = TableDefinition::new("unique");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn storage(e: impl std::fmt::Display) -> LogError {
    LogError::Storage(e.to_string())
}

/// A durable log in one file.
pub struct EmbeddedLog {
    path: PathBuf,
    /// `None` only between closing a failed store and reopening it.
    db: RwLock<Option<Database>>,
    /// A storage error happened: reopen before the next operation.
    failed: AtomicBool,
    notify: watch::Sender<u64>,
}

impl EmbeddedLog {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LogError> {
        let path = path.as_ref().to_owned();
        let db = Self::open_database(&path)?;
        let (notify, _) = watch::channel(0);
        Ok(Self {
            path,
            db: RwLock::new(Some(db)),
            failed: AtomicBool::new(false),
            notify,
        })
    }

    fn open_database(path: &Path) -> Result<Database, LogError> {
        let db = Database::create(path).map_err(storage)?;
        // Create every table up front so readers never see a missing table.
        let tx = db.begin_write().map_err(storage)?;
        {
            tx.open_table(TOPICS).map_err(storage)?;
            tx.open_table(RECORDS).map_err(storage)?;
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
        // The file can be opened again only once the failed handle is closed.
        drop(guard.take());
        *guard = Some(Self::open_database(&self.path)?);
        self.failed.store(false, Ordering::Release);
        tracing::warn!(path = %self.path.display(), "embedded log reopened after a storage failure");
        Ok(())
    }

    fn wake(&self) {
        self.notify.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn topic_partitions(tx: &redb::WriteTransaction, topic: &str) -> Result<u32, LogError> {
        let t = tx.open_table(TOPICS).map_err(storage)?;
        let p = t.get(topic).map_err(storage)?.map(|v| v.value());
        p.ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))
    }

    /// Appends `records` to `topic` inside `tx`, with the tables opened once.
    fn append_all(
        tx: &redb::WriteTransaction,
        topic: &str,
        records: &[Record],
    ) -> Result<Vec<Position>, LogError> {
        let partitions = Self::topic_partitions(tx, topic)?;
        let mut ends = tx.open_table(ENDS).map_err(storage)?;
        let mut table = tx.open_table(RECORDS).map_err(storage)?;
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            out.push(Self::append_in(
                &mut ends, &mut table, topic, partitions, record,
            )?);
        }
        Ok(out)
    }

    fn append_in(
        ends: &mut redb::Table<(&str, u32), u64>,
        table: &mut redb::Table<(&str, u32, u64), &[u8]>,
        topic: &str,
        partitions: u32,
        record: &Record,
    ) -> Result<Position, LogError> {
        let partition = partition_for(&record.key, partitions);
        let offset = ends
            .get((topic, partition))
            .map_err(storage)?
            .map(|v| v.value())
            .unwrap_or(0);
        let bytes = postcard::to_allocvec(record).map_err(storage)?;
        table
            .insert((topic, partition, offset), bytes.as_slice())
            .map_err(storage)?;
        ends.insert((topic, partition), offset + 1)
            .map_err(storage)?;
        Ok(Position { partition, offset })
    }
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
            tx.commit().map_err(storage)
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
            tx.commit().map_err(storage)?;
            self.wake();
            Ok(out)
        })
    }

    fn append_and_commit(
        &self,
        appends: &[(&str, &[Record])],
        group: &str,
        commits: &[(&str, u32, u64)],
    ) -> Result<(), LogError> {
        self.with(|db| {
            if commits.is_empty() && appends.iter().all(|(_, r)| r.is_empty()) {
                return Ok(());
            }
            let tx = db.begin_write().map_err(storage)?;
            let mut wrote = false;
            for (topic, records) in appends {
                if !records.is_empty() {
                    Self::append_all(&tx, topic, records)?;
                    wrote = true;
                }
            }
            {
                let mut offsets = tx.open_table(OFFSETS).map_err(storage)?;
                for (topic, partition, next) in commits {
                    offsets
                        .insert((group, *topic, *partition), *next)
                        .map_err(storage)?;
                }
            }
            tx.commit().map_err(storage)?;
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
            let partitions = Self::topic_partitions(&tx, topic)?;
            let mut out = Vec::with_capacity(items.len());
            let mut wrote = false;
            {
                let mut unique_keys = tx.open_table(UNIQUE).map_err(storage)?;
                let mut ends = tx.open_table(ENDS).map_err(storage)?;
                let mut table = tx.open_table(RECORDS).map_err(storage)?;
                for (unique, record) in items {
                    let seen = unique_keys
                        .get((topic, unique.as_str()))
                        .map_err(storage)?
                        .map(|v| v.value());
                    if let Some((partition, offset)) = seen {
                        out.push(Appended::Duplicate(Position { partition, offset }));
                        continue;
                    }
                    let pos = Self::append_in(&mut ends, &mut table, topic, partitions, record)?;
                    unique_keys
                        .insert((topic, unique.as_str()), (pos.partition, pos.offset))
                        .map_err(storage)?;
                    out.push(Appended::New(pos));
                    wrote = true;
                }
            }
            tx.commit().map_err(storage)?;
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
        self.with(|db| {
            let partitions = self.partitions(topic)?;
            if partition >= partitions {
                return Err(LogError::UnknownPartition {
                    topic: topic.to_owned(),
                    partition,
                });
            }
            let tx = db.begin_read().map_err(storage)?;
            let t = tx.open_table(RECORDS).map_err(storage)?;
            let mut out = Vec::new();
            for item in t
                .range((topic, partition, from)..=(topic, partition, u64::MAX))
                .map_err(storage)?
                .take(max)
            {
                let (k, v) = item.map_err(storage)?;
                let record: Record = postcard::from_bytes(v.value()).map_err(storage)?;
                out.push(Delivered {
                    position: Position {
                        partition,
                        offset: k.value().2,
                    },
                    record,
                });
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
            tx.commit().map_err(storage)
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
            tx.open_table(META)
                .map_err(storage)?
                .insert(name, value)
                .map_err(storage)?;
            tx.commit().map_err(storage)
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
            {
                let mut t = tx.open_table(META).map_err(storage)?;
                for (name, value) in items {
                    t.insert(*name, *value).map_err(storage)?;
                }
            }
            tx.commit().map_err(storage)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        log.append_and_commit(&[("out", &outs)], "g", &[("in", 0, 7)])
            .expect("write");
        assert_eq!(log.committed("g", "in", 0).expect("c"), 7);
        let written: u64 = (0..2).map(|p| log.end_offset("out", p).expect("end")).sum();
        assert_eq!(written, 2);
        // A write that fails part-way (an unknown topic after a good one) leaves nothing.
        let err =
            log.append_and_commit(&[("out", &outs), ("missing", &outs)], "g", &[("in", 0, 9)]);
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
