//! Dispatch on Kafka: any number of instances share the contacts topic through a consumer group.
//!
//! Per owned partition an instance keeps the job states (restored from the compacted
//! `tacto.dispatch-jobs` changelog, written before every provider call) and a read-only view of
//! decide's account states (following `tacto.decide-state`, caught up before each batch so the
//! last look sees at least the state that made the jobs). When partitions are taken away, jobs
//! still waiting for their rate limit are left to the new owner, and the revocation waits for
//! provider calls already started to be recorded before the offsets are committed: a job is
//! never handled by two instances at once.

use crate::{Adapters, Dispatch, DispatchConfig, JobState, JobStore};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tacto_decide::DecideState;
use tacto_decide::kafka::apply_entry;
use tacto_log::kafka::{
    GroupConsumer, KafkaLog, PartitionFollower, Rebalanced, read_partition_to_end,
};
use tacto_log::{EventLog, LogError, Record, events, partition_for};
use tacto_model::{AccountId, JobId, Timestamp};
use tacto_policy::Policy;

/// Job states in the `tacto.dispatch-jobs` changelog, cached per owned partition.
pub struct KafkaJobStore {
    log: Arc<KafkaLog>,
    partitions: u32,
    states: RwLock<HashMap<u32, HashMap<String, JobState>>>,
}

impl KafkaJobStore {
    /// A store that knows no partition yet.
    pub fn new(log: Arc<KafkaLog>, partitions: u32) -> Self {
        Self {
            log,
            partitions,
            states: RwLock::new(HashMap::new()),
        }
    }

    /// Reads a partition's job states from the changelog.
    pub fn restore(&self, partition: u32) -> Result<u64, LogError> {
        let mut map = HashMap::new();
        let n = read_partition_to_end(
            self.log.settings(),
            events::DISPATCH_JOBS.name(),
            partition,
            |d| match JobState::parse(&d.record.value) {
                Some(s) => {
                    map.insert(d.record.key, s);
                }
                None => tracing::error!(
                    partition,
                    offset = d.position.offset,
                    "unreadable job state skipped"
                ),
            },
        )?;
        self.states
            .write()
            .map_err(|_| LogError::Storage("lock poisoned".into()))?
            .insert(partition, map);
        Ok(n)
    }

    /// Forgets the job states of partitions taken away.
    pub fn forget(&self, partitions: &[u32]) {
        if let Ok(mut s) = self.states.write() {
            s.retain(|p, _| !partitions.contains(p));
        }
    }
}

impl JobStore for KafkaJobStore {
    fn state(&self, job: &JobId) -> Result<Option<JobState>, LogError> {
        let states = self
            .states
            .read()
            .map_err(|_| LogError::Storage("lock poisoned".into()))?;
        Ok(states.values().find_map(|m| m.get(job.as_str()).copied()))
    }

    fn set_state(&self, account: &AccountId, job: &JobId, s: JobState) -> Result<(), LogError> {
        self.set_states(&[(account.clone(), job.clone(), s)])
    }

    /// One produce of all the states, acknowledged before any is cached.
    fn set_states(&self, states: &[(AccountId, JobId, JobState)]) -> Result<(), LogError> {
        if states.is_empty() {
            return Ok(());
        }
        let records: Vec<(u32, Record)> = states
            .iter()
            .map(|(account, job, s)| {
                let partition = partition_for(account.as_str(), self.partitions);
                (partition, Record::new(job.as_str(), s.as_bytes().to_vec()))
            })
            .collect();
        let routed: Vec<(u32, &Record)> = records.iter().map(|(p, r)| (*p, r)).collect();
        tokio::task::block_in_place(|| self.log.append_to(events::DISPATCH_JOBS.name(), &routed))?;
        let mut cache = self
            .states
            .write()
            .map_err(|_| LogError::Storage("lock poisoned".into()))?;
        for ((_, job, s), (partition, _)) in states.iter().zip(&records) {
            cache
                .entry(*partition)
                .or_default()
                .insert(job.0.to_string(), *s);
        }
        Ok(())
    }
}

/// How long dispatch waits for decide's state to include the jobs it is about to handle.
/// Decide appends a step's jobs before the state they came from (so that a crash in between
/// makes it decide them again rather than lose them): the state normally follows within
/// milliseconds, and within a rebalance when decide died in between.
const VIEW_WAIT: Duration = Duration::from_secs(30);

/// Reads decide's changelog until the view includes the state that made every record of
/// `batch` (or [`VIEW_WAIT`] has passed: the last look then decides on what it has, and an
/// unknown job is not sent). It applies what the follower has already fetched, then waits for
/// records only while the view is behind. It never asks for the end offsets: on the follower's
/// connection that request would queue behind its own waiting fetch (a broker answers one
/// connection's requests in order) and cost up to a whole `fetch.wait.max.ms`.
async fn catch_up_with(
    follower: &mut PartitionFollower,
    view: &DecideState,
    batch: &[&tacto_log::Delivered],
) {
    let started = Instant::now();
    let behind = |view: &DecideState| {
        batch.iter().any(|r| {
            r.record
                .header("ce_id")
                .is_some_and(|id| !view.includes_output(&r.record.key, id))
        })
    };
    let mut wait = Duration::ZERO;
    loop {
        while let Err(e) =
            tokio::task::block_in_place(|| follower.receive(wait, 10_000, |r| apply_entry(view, r)))
        {
            tracing::error!(error = %e, "cannot read decide's state; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !behind(view) {
            return;
        }
        if started.elapsed() > VIEW_WAIT {
            tracing::warn!(waited = ?started.elapsed(), "decide's state does not include some jobs yet: the last look decides on what it has");
            return;
        }
        wait = Duration::from_millis(50);
    }
}

/// Runs a dispatch instance on Kafka until `shutdown` turns true. Needs the multi-threaded
/// Tokio runtime (consumer calls block in place).
pub async fn run(
    log: Arc<KafkaLog>,
    policy: Arc<Policy>,
    adapters: Arc<Adapters>,
    config: DispatchConfig,
    clock: fn() -> Timestamp,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), LogError> {
    let partitions = log.partitions(events::CONTACTS.name())?;
    let view = Arc::new(DecideState::default());
    let jobs = Arc::new(KafkaJobStore::new(log.clone(), partitions));
    let dyn_log: Arc<dyn EventLog> = log.clone();
    let group = config.group.clone();
    let mut d = Dispatch::with_store(
        dyn_log,
        jobs.clone(),
        policy,
        view.clone(),
        adapters,
        config,
        partitions,
    )?;
    let inner = d.inner.clone();
    let in_flight = d.in_flight.clone();
    let hook = Box::new(move |ps: &[u32]| {
        if let Ok(mut o) = inner.owned.write() {
            o.retain(|p| !ps.contains(p));
        }
        inner.revocations.send_modify(|n| *n = n.wrapping_add(1));
        // Jobs waiting for their rate limit give up now; calls already started finish and
        // record their outcome before the partitions go.
        inner.drop_waiting(ps);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let busy = in_flight.lock().is_ok_and(|f| {
                ps.iter()
                    .any(|p| f.get(*p as usize).is_some_and(|s| !s.is_empty()))
            });
            if !busy || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let settings = log.settings().clone();
    let consumer = GroupConsumer::join(&settings, &group, events::CONTACTS.name(), hook)?;
    let mut follower = PartitionFollower::new(&settings, events::DECIDE_STATE.name())?;
    let mut seen: BTreeSet<u32> = BTreeSet::new();
    let mut last_commit = Instant::now();
    while !*shutdown.borrow() {
        let (changes, batch) =
            match tokio::task::block_in_place(|| consumer.poll(256, Duration::from_millis(200))) {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, "poll failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
        for c in changes {
            match c {
                Rebalanced::Assigned(ps) => {
                    for p in &ps {
                        while let Err(e) = tokio::task::block_in_place(|| jobs.restore(*p)) {
                            tracing::error!(partition = p, error = %e, "cannot restore job states; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                    while let Err(e) = follower.follow(&ps) {
                        tracing::error!(error = %e, "cannot follow decide's state; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    if let Ok(mut o) = d.inner.owned.write() {
                        o.extend(ps.iter().copied());
                    }
                }
                Rebalanced::Revoked(ps) => {
                    jobs.forget(&ps);
                    while let Err(e) = follower.unfollow(&ps) {
                        tracing::error!(error = %e, "cannot stop following decide's state; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    seen.retain(|p| !ps.contains(p));
                    let keep = |id: &str| !ps.contains(&partition_for(id, partitions));
                    if let Ok(mut e) = view.engine.write() {
                        e.retain(keep);
                    }
                    if let Ok(mut dir) = view.directory.write() {
                        dir.retain(|id, _| keep(id));
                    }
                }
            }
        }
        let mine: Vec<_> = batch
            .iter()
            .filter(|r| d.inner.owns(r.position.partition))
            .collect();
        if !mine.is_empty() {
            catch_up_with(&mut follower, &view, &mine).await;
        }
        for r in mine {
            while let Err(e) = d.handle(r, clock).await {
                tracing::error!(error = %e, "dispatch failed; retrying the record");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            seen.insert(r.position.partition);
        }
        // The batch's last run of recalls.
        while let Err(e) = d.flush_recalls(clock).await {
            tracing::error!(error = %e, "dispatch failed; retrying the recalls");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for p in &seen {
            consumer.done(*p, d.handled_upto(*p as usize));
        }
        if last_commit.elapsed() > Duration::from_millis(500) {
            tokio::task::block_in_place(|| consumer.commit());
            last_commit = Instant::now();
        }
        if shutdown.has_changed().unwrap_or(true) && *shutdown.borrow_and_update() {
            break;
        }
    }
    tokio::task::block_in_place(|| consumer.commit());
    Ok(())
}
