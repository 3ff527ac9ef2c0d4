//! A write of decide's that fails is made again before anything after it: no decision is
//! skipped, and no offset or snapshot lands ahead of the outputs it covers. Both when decide
//! writes inline (`step`) and when its writer thread writes behind the folds (`run`). A write
//! that takes long does not hold the folds back.
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;
use tacto_decide::{Decide, DecideConfig};
use tacto_log::embedded::EmbeddedLog;
use tacto_log::{
    Appended, BlobVisitor, Delivered, Durability, EventLog, LogError, Position, Record, events,
};
use tacto_model::{Timestamp, synthetic};
use tacto_policy::Policy;

/// The embedded log, except that the next `fail_steps` step writes (`append_and_commit`) and
/// `fail_snapshots` snapshot writes (`put_blobs`) fail without writing anything.
struct FlakyLog {
    inner: EmbeddedLog,
    fail_steps: AtomicU32,
    fail_snapshots: AtomicU32,
    /// Reads of the events topic's last partition that fail.
    fail_reads: AtomicU32,
    /// While true, a snapshot write waits (a slow sync to disk).
    hold_snapshots: AtomicBool,
    /// Snapshot writes that have waited.
    held: AtomicU32,
}

fn take_one(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

fn injected() -> LogError {
    LogError::Storage("injected failure".into())
}

impl EventLog for FlakyLog {
    fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), LogError> {
        self.inner.create_topic(topic, partitions)
    }
    fn partitions(&self, topic: &str) -> Result<u32, LogError> {
        self.inner.partitions(topic)
    }
    fn append(&self, topic: &str, records: &[Record]) -> Result<Vec<Position>, LogError> {
        self.inner.append(topic, records)
    }
    fn append_unique_many(
        &self,
        topic: &str,
        items: &[(String, Record)],
    ) -> Result<Vec<Appended>, LogError> {
        self.inner.append_unique_many(topic, items)
    }
    fn append_and_commit(
        &self,
        appends: Vec<(&str, Vec<Record>)>,
        group: &str,
        commits: &[(&str, u32, u64)],
        durability: Durability,
    ) -> Result<(), LogError> {
        if take_one(&self.fail_steps) {
            return Err(injected());
        }
        self.inner
            .append_and_commit(appends, group, commits, durability)
    }
    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<Delivered>, LogError> {
        if topic == events::EVENTS.name() && partition == 2 && take_one(&self.fail_reads) {
            return Err(injected());
        }
        self.inner.read(topic, partition, from, max)
    }
    fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        self.inner.end_offset(topic, partition)
    }
    fn commit(&self, group: &str, topic: &str, partition: u32, next: u64) -> Result<(), LogError> {
        self.inner.commit(group, topic, partition, next)
    }
    fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<u64, LogError> {
        self.inner.committed(group, topic, partition)
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes()
    }
    fn put_blob(&self, name: &str, value: &[u8]) -> Result<(), LogError> {
        self.inner.put_blob(name, value)
    }
    fn get_blob(&self, name: &str) -> Result<Option<Vec<u8>>, LogError> {
        self.inner.get_blob(name)
    }
    fn put_blobs(&self, items: &[(&str, &[u8])]) -> Result<(), LogError> {
        if take_one(&self.fail_snapshots) {
            return Err(injected());
        }
        if self.hold_snapshots.load(Ordering::SeqCst) {
            self.held.fetch_add(1, Ordering::SeqCst);
            while self.hold_snapshots.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.inner.put_blobs(items)
    }
    fn scan_blobs(&self, prefix: &str, visit: &mut BlobVisitor<'_>) -> Result<u64, LogError> {
        self.inner.scan_blobs(prefix, visit)
    }
}

const ACCOUNTS: u64 = 120;

fn t0() -> Timestamp {
    Timestamp::parse("2026-11-16T15:00:00Z").expect("time")
}

/// A log with `ACCOUNTS` account upserts on the events topic.
fn loaded(dir: &std::path::Path, fail_steps: u32, fail_snapshots: u32) -> Arc<FlakyLog> {
    let inner = EmbeddedLog::open(dir.join("log.redb")).expect("log");
    events::create_topics(&inner, 3).expect("topics");
    let records: Vec<Record> = (0..ACCOUNTS)
        .map(|i| events::to_record(&synthetic::account(5, i, t0())).expect("encode"))
        .collect();
    inner
        .append(events::EVENTS.name(), &records)
        .expect("append");
    Arc::new(FlakyLog {
        inner,
        fail_steps: AtomicU32::new(fail_steps),
        fail_snapshots: AtomicU32::new(fail_snapshots),
        fail_reads: AtomicU32::new(0),
        hold_snapshots: AtomicBool::new(false),
        held: AtomicU32::new(0),
    })
}

/// Small steps, so that a failed write is followed by others.
fn config() -> DecideConfig {
    DecideConfig {
        batch: 8,
        snapshot_every_events: 40,
        ..DecideConfig::default()
    }
}

/// The event ids of every record of a topic (all partitions), sorted.
fn all(log: &dyn EventLog, topic: &str) -> Vec<String> {
    let mut out = Vec::new();
    for p in 0..log.partitions(topic).expect("partitions") {
        out.extend(
            log.read(topic, p, 0, usize::MAX)
                .expect("read")
                .into_iter()
                .map(|d| d.record.header("ce_id").unwrap_or_default().to_owned()),
        );
    }
    out.sort();
    out
}

/// What decide writes when nothing fails.
fn clean_decisions() -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = loaded(dir.path(), 0, 0);
    let mut d = Decide::restore(log.clone(), Arc::new(Policy::example()), config()).expect("start");
    while d.step(t0()).expect("step") > 0 {}
    let decisions = all(&*log, events::DECISIONS.name());
    assert!(decisions.len() as u64 >= ACCOUNTS, "a decision per account");
    decisions
}

/// The offsets decide committed equal the end of every partition of the events topic.
fn assert_all_committed(log: &dyn EventLog) {
    for p in 0..log.partitions(events::EVENTS.name()).expect("partitions") {
        assert_eq!(
            log.committed("tacto-decide", events::EVENTS.name(), p)
                .expect("committed"),
            log.end_offset(events::EVENTS.name(), p).expect("end"),
            "partition {p}"
        );
    }
}

/// Steps `d` until it has nothing left to fold, returning how many steps failed.
fn step_until_caught_up(d: &mut Decide) -> u32 {
    let mut failures = 0;
    loop {
        match d.step(t0()) {
            Ok(0) => return failures,
            Ok(_) => {}
            Err(_) => failures += 1,
        }
    }
}

/// How many accounts a decide restarted on `log` restores.
fn restored_accounts(log: Arc<FlakyLog>) -> u64 {
    let restored = Decide::restore(log, Arc::new(Policy::example()), config()).expect("restore");
    let accounts = restored.state.engine.read().expect("lock").store.len();
    accounts as u64
}

#[test]
fn a_step_whose_write_failed_is_written_by_the_next_before_anything_new() {
    let expected = clean_decisions();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = loaded(dir.path(), 2, 1);
    let mut d = Decide::restore(log.clone(), Arc::new(Policy::example()), config()).expect("start");
    let failures = step_until_caught_up(&mut d);
    assert_eq!(failures, 3, "two step writes and one snapshot write failed");
    assert_eq!(all(&*log, events::DECISIONS.name()), expected);
    assert_all_committed(&*log);

    // The snapshot that failed was written again: a restart restores every account.
    d.snapshot().expect("snapshot");
    assert_eq!(restored_accounts(log), ACCOUNTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_thread_makes_a_failed_write_again_before_the_ones_behind_it() {
    let expected = clean_decisions();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = loaded(dir.path(), 3, 1);
    let d = Decide::restore(log.clone(), Arc::new(Policy::example()), config()).expect("start");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(d.run(t0, stopped));
    // Three failed step writes and a failed snapshot cost four retry pauses of 0.5 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while all(&*log, events::DECISIONS.name()).len() < expected.len() {
        assert!(tokio::time::Instant::now() < deadline, "decisions missing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).expect("stop");
    running.await.expect("join").expect("run");
    assert_eq!(all(&*log, events::DECISIONS.name()), expected);
    assert_eq!(
        log.fail_steps.load(Ordering::SeqCst),
        0,
        "failures injected"
    );
    assert_eq!(
        log.fail_snapshots.load(Ordering::SeqCst),
        0,
        "failures injected"
    );
    assert_all_committed(&*log);
    assert_eq!(restored_accounts(log), ACCOUNTS);
}

#[test]
fn a_read_that_fails_midway_loses_nothing_the_partitions_before_it_folded() {
    let expected = clean_decisions();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = loaded(dir.path(), 0, 0);
    log.fail_reads.store(2, Ordering::SeqCst);
    let mut d = Decide::restore(log.clone(), Arc::new(Policy::example()), config()).expect("start");
    let failures = step_until_caught_up(&mut d);
    assert_eq!(failures, 2, "two reads of partition 2 failed");
    assert_eq!(all(&*log, events::DECISIONS.name()), expected);
    assert_all_committed(&*log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folding_goes_on_while_a_snapshot_write_takes_long() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = loaded(dir.path(), 0, 0);
    log.hold_snapshots.store(true, Ordering::SeqCst);
    // A failed assertion releases the held write, so that the runtime can stop.
    struct Release(Arc<FlakyLog>);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.hold_snapshots.store(false, Ordering::SeqCst);
        }
    }
    let _release = Release(log.clone());
    let d = Decide::restore(log.clone(), Arc::new(Policy::example()), config()).expect("start");
    let state = d.state.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(d.run(t0, stopped));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while log.held.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot written"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Many more steps than the writer's queue holds arrive while the snapshot is held.
    const MORE: u64 = 1_200;
    let records: Vec<Record> = (ACCOUNTS..ACCOUNTS + MORE)
        .map(|i| events::to_record(&synthetic::account(5, i, t0())).expect("encode"))
        .collect();
    log.inner
        .append(events::EVENTS.name(), &records)
        .expect("append");
    let folded = || state.engine.read().expect("lock").store.len() as u64;
    while folded() < ACCOUNTS + MORE {
        assert!(
            tokio::time::Instant::now() < deadline,
            "folding stopped behind the held write at {} accounts",
            folded()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        log.held.load(Ordering::SeqCst),
        1,
        "still the first snapshot"
    );
    assert!(
        all(&*log, events::DECISIONS.name()).len() < (ACCOUNTS + MORE) as usize,
        "the held write keeps the later steps out of the log"
    );

    // Released, every write lands in order.
    log.hold_snapshots.store(false, Ordering::SeqCst);
    while all(&*log, events::DECISIONS.name()).len() < (ACCOUNTS + MORE) as usize {
        assert!(tokio::time::Instant::now() < deadline, "decisions missing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).expect("stop");
    running.await.expect("join").expect("run");
    assert_all_committed(&*log);
    assert_eq!(restored_accounts(log), ACCOUNTS + MORE);
}
