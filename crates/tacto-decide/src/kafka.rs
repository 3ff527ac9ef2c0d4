//! Decide on Kafka: any number of instances share the events topic through a consumer group.
//!
//! Each instance keeps the accounts of the partitions it owns. After every step it appends the
//! decisions, the contact jobs and the dead letters (together: one broker round trip), then,
//! once they landed, the new state of every account the step changed to the compacted
//! `tacto.decide-state` changelog (co-partitioned with the events: same key, same partition):
//! a state restored from the changelog never has outputs that were not written. Only then it
//! declares the events' offsets done, to be committed within [`COMMIT_EVERY`] (at once when
//! partitions are revoked and at shutdown: a crash in between replays at most that much,
//! recognised as below). A step is kept until all four appends landed: after a failure it polls
//! nothing new and makes again only the appends that did not land (none is repeated, nothing the
//! step decided is dropped). On
//! assignment an instance restores a partition by reading its changelog (the accounts as of the
//! last committed step, or later) and goes on from the committed offset; events it sees again are
//! recognised by their ids, and jobs decided again get the same deterministic ids (dispatch
//! sends a job id once). On revocation it commits and drops the partition's accounts.

use crate::{
    DecideConfig, DecideError, DecideState, Output, apply_record, encode_state_entry,
    output_records,
};
use compact_str::CompactString;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tacto_log::kafka::{GroupConsumer, KafkaLog, KafkaSettings, Rebalanced, read_partition_to_end};
use tacto_log::{EventLog, Record, events, partition_for};
use tacto_model::Timestamp;
use tacto_policy::Policy;

pub use crate::StateEntry;

/// Reads a partition of the decide changelog into `state` (accounts, wakes and addresses).
/// Returns how many entries it read.
pub fn restore_partition(
    settings: &KafkaSettings,
    state: &DecideState,
    partition: u32,
) -> Result<u64, DecideError> {
    let mut entries = Vec::new();
    let n = read_partition_to_end(settings, events::DECIDE_STATE.name(), partition, |d| {
        entries.push(d)
    })?;
    let mut engine = state
        .engine
        .write()
        .map_err(|_| DecideError::Snapshot("state lock poisoned".into()))?;
    let mut dir = state
        .directory
        .write()
        .map_err(|_| DecideError::Snapshot("state lock poisoned".into()))?;
    for d in entries {
        match StateEntry::decode(&d.record.value) {
            Ok(entry) => {
                dir.insert(entry.account.id.to_string(), entry.contacts);
                engine.insert(entry.account, entry.wake);
            }
            Err(e) => {
                tracing::error!(partition, offset = d.position.offset, error = %e, "unreadable changelog entry skipped")
            }
        }
    }
    Ok(n)
}

/// Applies one changelog entry to a read-only view (ingest's account views, dispatch's last
/// look): the account and its addresses; timers are decide's business.
pub fn apply_entry(view: &DecideState, d: tacto_log::Delivered) {
    match StateEntry::decode(&d.record.value) {
        Ok(entry) => {
            if let Ok(mut dir) = view.directory.write() {
                dir.insert(entry.account.id.to_string(), entry.contacts);
            }
            if let Ok(mut e) = view.engine.write() {
                e.insert(entry.account, None);
            }
        }
        Err(e) => tracing::error!(
            partition = d.position.partition,
            offset = d.position.offset,
            error = %e,
            "unreadable decide state skipped"
        ),
    }
}

/// A decide instance on Kafka.
pub struct KafkaDecide {
    log: Arc<KafkaLog>,
    policy: Arc<Policy>,
    config: DecideConfig,
    /// State of the owned partitions (shared with the HTTP health and account views).
    pub state: Arc<DecideState>,
    partitions: u32,
    owned: BTreeSet<u32>,
    pending: Option<Pending>,
}

/// A step's outputs not yet durable: its decisions, contacts and dead letters appended
/// together, then its changelog entries; each exactly once even when another append fails and
/// the write is made again (what landed is not appended twice).
struct Pending {
    /// The step's decisions, encoded into records on the first write.
    outputs: Vec<Output>,
    /// Decisions and contact records, once encoded.
    encoded: Option<(Vec<Record>, Vec<Record>)>,
    dead: Vec<Record>,
    /// Accounts the step changed: their changelog entries are encoded from the state when
    /// written (nothing is folded meanwhile, so it is still the step's state).
    changed: Vec<CompactString>,
    /// Which of the decisions, contacts and dead-letter appends landed.
    landed: [bool; 3],
    /// Whether the changelog append landed (made only after the other three).
    changelog_landed: bool,
    next: BTreeMap<u32, u64>,
}

impl Pending {
    fn new(
        outputs: Vec<Output>,
        dead: Vec<Record>,
        changed: Vec<CompactString>,
        next: BTreeMap<u32, u64>,
    ) -> Self {
        Self {
            outputs,
            encoded: None,
            dead,
            changed,
            landed: [false; 3],
            changelog_landed: false,
            next,
        }
    }

    /// Appends what has not landed yet. A failure leaves the rest for the next call.
    fn write(&mut self, log: &dyn EventLog, state: &DecideState) -> Result<(), DecideError> {
        if self.encoded.is_none() {
            self.encoded = Some(output_records(std::slice::from_ref(&self.outputs))?);
        }
        let (decisions, contacts) = self
            .encoded
            .as_ref()
            .map_or((&[][..], &[][..]), |(d, c)| (d.as_slice(), c.as_slice()));
        let outputs: [(&str, &[Record]); 3] = [
            (events::DECISIONS.name(), decisions),
            (events::CONTACTS.name(), contacts),
            (events::DEAD_LETTERS.name(), &self.dead),
        ];
        let todo: Vec<usize> = (0..outputs.len()).filter(|&i| !self.landed[i]).collect();
        if !todo.is_empty() {
            let appends: Vec<(&str, &[Record])> = todo.iter().map(|&i| outputs[i]).collect();
            let mut failed = None;
            for (&i, result) in todo.iter().zip(log.append_each(&appends)) {
                match result {
                    Ok(_) => self.landed[i] = true,
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
        if !self.changelog_landed {
            let entries = changelog_records(state, &self.changed)?;
            log.append(events::DECIDE_STATE.name(), &entries)?;
            self.changelog_landed = true;
        }
        Ok(())
    }
}

/// The changelog records of the accounts `changed`, as they are in `state` now.
fn changelog_records(
    state: &DecideState,
    changed: &[CompactString],
) -> Result<Vec<Record>, DecideError> {
    let poisoned = || DecideError::Snapshot("state lock poisoned".into());
    let engine = state.engine.read().map_err(|_| poisoned())?;
    let dir = state.directory.read().map_err(|_| poisoned())?;
    let mut records = Vec::with_capacity(changed.len());
    for id in changed {
        if let Some(entry) = encode_state_entry(&engine, &dir, id)? {
            records.push(Record::new(id.as_str(), entry));
        }
    }
    Ok(records)
}

impl KafkaDecide {
    /// An instance that will join the group on [`KafkaDecide::run`].
    pub fn new(
        log: Arc<KafkaLog>,
        policy: Arc<Policy>,
        config: DecideConfig,
    ) -> Result<Self, DecideError> {
        let partitions = log.partitions(events::EVENTS.name())?;
        let state = Arc::new(DecideState::default());
        if let Ok(mut e) = state.engine.write() {
            e.track_changes();
        }
        Ok(Self {
            log,
            policy,
            config,
            state,
            partitions,
            owned: BTreeSet::new(),
            pending: None,
        })
    }

    fn rebalanced(&mut self, change: Rebalanced, shutdown: &tokio::sync::watch::Receiver<bool>) {
        match change {
            Rebalanced::Assigned(ps) => {
                // A partition is processed only once its state is back: retry until it is (the
                // assignment is not announced again), or until the process is told to stop:
                // a partition not restored is not owned, so none of its offsets is committed.
                for p in ps {
                    let restored = retry_until_stopped(shutdown, RESTORE_RETRY, || {
                        restore_partition(self.log.settings(), &self.state, p).inspect_err(|e| {
                            tracing::error!(partition = p, error = %e, "cannot restore the partition; retrying");
                        })
                    });
                    match restored {
                        Some(n) => {
                            tracing::info!(partition = p, accounts = n, "partition restored");
                            self.owned.insert(p);
                        }
                        None => {
                            tracing::info!(partition = p, "stopping: partition not restored");
                            return;
                        }
                    }
                }
            }
            Rebalanced::Revoked(ps) => {
                let parts = self.partitions;
                let gone: BTreeSet<u32> = ps.into_iter().collect();
                let keep = |id: &str| !gone.contains(&partition_for(id, parts));
                if let Ok(mut e) = self.state.engine.write() {
                    e.retain(keep);
                }
                if let Ok(mut d) = self.state.directory.write() {
                    d.retain(|id, _| keep(id));
                }
                self.owned.retain(|p| !gone.contains(p));
            }
        }
    }

    /// One step: records of owned partitions and due timers in, decisions and state out, then
    /// the offsets are declared done. Returns how many records it consumed.
    fn step(
        &mut self,
        consumer: &GroupConsumer,
        now: Timestamp,
        wait: Duration,
        shutdown: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<usize, DecideError> {
        self.flush(consumer)?;
        let (changes, batch) = consumer.poll(self.config.batch, wait)?;
        for c in changes {
            self.rebalanced(c, shutdown);
        }
        let mut outputs: Vec<Output> = Vec::new();
        let mut dead: Vec<Record> = Vec::new();
        let mut next: BTreeMap<u32, u64> = Default::default();
        let changed = {
            let mut engine = self
                .state
                .engine
                .write()
                .map_err(|_| DecideError::Snapshot("state lock poisoned".into()))?;
            for d in batch
                .iter()
                .filter(|d| self.owned.contains(&d.position.partition))
            {
                apply_record(
                    &self.state,
                    &mut engine,
                    &self.policy,
                    d,
                    now,
                    &mut outputs,
                    &mut dead,
                    // Its changelog is written after each step, no snapshot in between.
                    None,
                );
                next.insert(d.position.partition, d.position.offset + 1);
            }
            outputs.extend(
                engine
                    .fire_due(now, &self.policy)
                    .into_iter()
                    .map(Output::untraced),
            );
            engine.take_changed()
        };
        // From here the step is kept until it is written: nothing it decided can be dropped.
        self.pending = Some(Pending::new(outputs, dead, changed, next));
        self.flush(consumer)?;
        Ok(batch.len())
    }

    /// Appends a step's outputs, then declares its offsets done. Until this succeeds the
    /// instance polls nothing new (the step's state change is already in memory).
    fn flush(&mut self, consumer: &GroupConsumer) -> Result<(), DecideError> {
        let Some(p) = self.pending.as_mut() else {
            return Ok(());
        };
        p.write(&*self.log, &self.state)?;
        for (part, n) in &p.next {
            consumer.done(*part, *n);
        }
        self.pending = None;
        Ok(())
    }

    /// Joins the group and runs until `shutdown` turns true (blocking: run it on a thread of
    /// its own or in `spawn_blocking`).
    pub fn run(
        mut self,
        group_settings: &KafkaSettings,
        clock: fn() -> Timestamp,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), DecideError> {
        // Decide handles a batch completely before it polls again, so at a revocation there is
        // nothing in flight: the hook has nothing to wait for.
        let consumer = GroupConsumer::join(
            group_settings,
            &self.config.group,
            events::EVENTS.name(),
            Box::new(|_| {}),
        )?;
        self.state.ready.store(true, Ordering::Release);
        let mut last_commit = std::time::Instant::now();
        while !*shutdown.borrow() {
            if last_commit.elapsed() >= COMMIT_EVERY {
                consumer.commit();
                last_commit = std::time::Instant::now();
            }
            let wait = self
                .state
                .until_next_timer(clock(), Duration::from_millis(200));
            if let Err(e) = self.step(&consumer, clock(), wait, &shutdown) {
                tracing::error!(error = %e, "decide step failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        consumer.commit();
        Ok(())
    }
}

/// How often the offsets of the steps written are committed. A commit per step was one more
/// synchronous broker round trip before the next step could start; committing less often only
/// lengthens the replay after a crash, whose events are recognised by their ids.
const COMMIT_EVERY: Duration = Duration::from_millis(500);

/// How long a failed partition restore waits before it tries again.
const RESTORE_RETRY: Duration = Duration::from_millis(500);

/// Calls `attempt` until it succeeds, `pause` apart; `None` as soon as `shutdown` turns true
/// (checked before each attempt and during each pause).
fn retry_until_stopped<T, E>(
    shutdown: &tokio::sync::watch::Receiver<bool>,
    pause: Duration,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Option<T> {
    const TICK: Duration = Duration::from_millis(50);
    loop {
        if *shutdown.borrow() {
            return None;
        }
        if let Ok(v) = attempt() {
            return Some(v);
        }
        let until = std::time::Instant::now() + pause;
        while std::time::Instant::now() < until {
            if *shutdown.borrow() {
                return None;
            }
            std::thread::sleep(TICK.min(pause));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Contacts;
    use tacto_log::embedded::EmbeddedLog;
    use tacto_log::{Delivered, Position};
    use tacto_model::{IdentityAnswers, samples, synthetic};

    /// Every record of `topic`, in order.
    fn all(log: &dyn EventLog, topic: &str) -> Vec<Record> {
        (0..log.partitions(topic).expect("partitions"))
            .flat_map(|p| log.read(topic, p, 0, 10_000).expect("read"))
            .map(|d| d.record)
            .collect()
    }

    /// A restore that keeps failing (an unreachable broker) gives up once the process is told
    /// to stop, within a pause; one that fails then succeeds returns its value.
    #[test]
    fn a_failing_retry_stops_when_told_to() {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let _ = stop.send(true);
        });
        let started = std::time::Instant::now();
        let mut tries = 0;
        let got: Option<()> = retry_until_stopped(&shutdown, Duration::from_secs(3600), || {
            tries += 1;
            Err("AllBrokersDown")
        });
        stopper.join().expect("stopper");
        assert_eq!(got, None);
        assert_eq!(tries, 1, "one try, then the pause was cut short");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );

        let (_stop, running) = tokio::sync::watch::channel(false);
        let mut left = 2;
        let got = retry_until_stopped(&running, Duration::from_millis(1), || {
            if left == 0 {
                Ok(7)
            } else {
                left -= 1;
                Err("not yet")
            }
        });
        assert_eq!(got, Some(7));
    }

    #[test]
    fn a_step_written_again_after_a_failed_append_lands_every_record_exactly_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EmbeddedLog::open(dir.path().join("log.redb")).expect("log");
        // No dead-letter topic yet: the third of the step's four appends fails.
        for t in [events::DECISIONS, events::CONTACTS, events::DECIDE_STATE] {
            log.create_topic(t.name(), 2).expect("topic");
        }
        let state = DecideState::default();
        let policy = Policy::example();
        let now = Timestamp::parse("2026-11-16T15:00:00Z").expect("time");
        let mut outputs = Vec::new();
        let mut dead = Vec::new();
        let changed = {
            let mut engine = state.engine.write().expect("lock");
            engine.track_changes();
            let mut batch: Vec<Record> = (0..4)
                .map(|i| events::to_record(&synthetic::account(5, i, now)).expect("encode"))
                .collect();
            batch.push(Record::new("A-bad", b"not an event".to_vec()));
            for (offset, record) in batch.into_iter().enumerate() {
                let d = Delivered {
                    position: Position {
                        partition: 0,
                        offset: offset as u64,
                    },
                    record,
                };
                apply_record(
                    &state,
                    &mut engine,
                    &policy,
                    &d,
                    now,
                    &mut outputs,
                    &mut dead,
                    None,
                );
            }
            engine.take_changed()
        };
        let mut pending = Pending::new(outputs, dead, changed, BTreeMap::new());
        assert!(matches!(
            pending.write(&log, &state),
            Err(DecideError::Log(tacto_log::LogError::UnknownTopic(_)))
        ));
        assert_eq!(
            pending.landed,
            [true, true, false],
            "decisions and contacts landed"
        );
        assert!(!pending.changelog_landed);
        assert!(
            all(&log, events::DECIDE_STATE.name()).is_empty(),
            "no state is written before every output landed"
        );
        log.create_topic(events::DEAD_LETTERS.name(), 2)
            .expect("topic");
        pending.write(&log, &state).expect("written again");
        pending.write(&log, &state).expect("nothing left to write");

        let (decisions, contacts) = pending.encoded.as_ref().expect("encoded");
        let scheduled = contacts.len();
        assert!(scheduled > 0, "jobs scheduled");
        assert_eq!(all(&log, events::DECISIONS.name()).len(), decisions.len());
        assert_eq!(all(&log, events::CONTACTS.name()).len(), scheduled);
        assert_eq!(all(&log, events::DEAD_LETTERS.name()).len(), 1);
        assert_eq!(all(&log, events::DECIDE_STATE.name()).len(), 4);
    }

    #[test]
    fn changelog_entries_round_trip_and_other_layouts_are_refused_by_name() {
        let mut account = tacto_policy::decide::empty("A-1");
        account.apply(&samples::sample_account("A-1"));
        let entry = StateEntry {
            account,
            wake: None,
            contacts: Contacts {
                addresses: Vec::new(),
                identity: Some(IdentityAnswers {
                    birth_date: None,
                    document_last_digits: Some("4321".into()),
                }),
            },
        };
        let bytes = entry.encode().expect("encode");
        let back = StateEntry::decode(&bytes).expect("decode");
        assert_eq!(back.account, entry.account);
        assert_eq!(back.contacts, entry.contacts);
        // A value of the first layout (no prefix) is named, not misread.
        let old = postcard::to_allocvec(&entry.account).expect("encode");
        let err = StateEntry::decode(&old).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("another Tacto version")),
            "{err:?}"
        );
    }
}
