//! Tacto's dispatch service: consumes the contacts topic and turns each job into a provider
//! call, and each recall into a cancellation.
//!
//! For every job, in order: skip it if it was ever handled before (a job is never sent twice,
//! not even after a crash); wait for the channel's rate limit, but never past the job's
//! `not_after` (then it is handed back as not sent); take a last look (holds, opt-outs, quiet
//! hours and caps re-checked at send time); record the attempt durably; call the adapter;
//! report the outcome as an event. A recall cancels a job not yet attempted and confirms it
//! (`not_sent`); a job already attempted cannot be recalled and is reported so.

pub mod dialer_feed;
pub mod email;
pub mod kafka;
pub mod sendgrid;
pub mod sink;
pub mod templates;
pub mod twilio;
pub mod vicidial;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tacto_decide::DecideState;
use tacto_log::{Delivered, Durability, EventLog, HeaderText, LogError, events};
use tacto_model::{
    AccountId, Channel, ContactJob, Event, EventBody, EventId, JobId, OutcomeStatus, Timestamp,
};
use tacto_policy::{Policy, last_look};

pub use sink::{Adapters, ChannelAdapter, FileSink, Message, SendError, WebhookSink};
use tacto_telemetry::metrics::{self, Counter, labels};
use tacto_telemetry::trace::{TRACEPARENT, continue_trace, traceparent};
use tracing::Instrument;
use vicidial::RecallResult;

tokio::task_local! {
    /// The `traceparent` of the contacts record being handled.
    static JOB_TRACE: Option<String>;
}

/// Dispatch settings.
#[derive(Clone, Debug)]
pub struct DispatchConfig {
    /// Consumer group name.
    pub group: String,
    /// Sends per second per channel (transport limits of the provider account; fractions
    /// allowed, e.g. 0.5 = one every two seconds).
    pub rate_per_second: BTreeMap<Channel, f64>,
    /// Attempts for a failing provider call (retryable errors only).
    pub max_tries: u32,
    /// First retry delay (doubles each time).
    pub backoff: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            group: "tacto-dispatch".into(),
            rate_per_second: BTreeMap::from([
                (Channel::Sms, 50.0),
                (Channel::Email, 100.0),
                (Channel::Voice, 20.0),
            ]),
            max_tries: 4,
            backoff: Duration::from_millis(200),
        }
    }
}

/// What happened to a job at dispatch, kept durably per job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// The provider is being called (if we crash now, the result is unknown: never re-send).
    Attempting,
    /// The provider accepted it.
    Sent,
    /// Not sent: recalled, refused by the last look, or expired.
    NotSent,
    /// The provider refused it.
    Failed,
    /// The process stopped during the call, or the call got no answer (timed out after the
    /// request went out): it may or may not have gone out. Never re-sent; reported as sent
    /// (the conservative reading for caps).
    Ambiguous,
}

impl JobState {
    /// The outcome reported for a job in this state.
    fn outcome(self) -> OutcomeStatus {
        match self {
            JobState::Attempting | JobState::Sent | JobState::Ambiguous => OutcomeStatus::Sent,
            JobState::NotSent => OutcomeStatus::NotSent,
            JobState::Failed => OutcomeStatus::Failed,
        }
    }

    /// The state's name (metrics, logs).
    pub fn name(self) -> &'static str {
        match self {
            JobState::Attempting => "attempting",
            JobState::Sent => "sent",
            JobState::NotSent => "not_sent",
            JobState::Failed => "failed",
            JobState::Ambiguous => "ambiguous",
        }
    }

    /// The stored form.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            JobState::Attempting => b"attempting",
            JobState::Sent => b"sent",
            JobState::NotSent => b"not_sent",
            JobState::Failed => b"failed",
            JobState::Ambiguous => b"ambiguous",
        }
    }

    /// Parses the stored form.
    pub fn parse(b: &[u8]) -> Option<Self> {
        Some(match b {
            b"attempting" => JobState::Attempting,
            b"sent" => JobState::Sent,
            b"not_sent" => JobState::NotSent,
            b"failed" => JobState::Failed,
            b"ambiguous" => JobState::Ambiguous,
            _ => return None,
        })
    }
}

/// Where dispatch keeps each job's state. Writes are durable when they return: a job is
/// recorded as being attempted before the provider is called.
pub trait JobStore: Send + Sync {
    /// The job's state, if it was ever handled.
    fn state(&self, job: &JobId) -> Result<Option<JobState>, LogError>;
    /// Records the job's state (the account decides the partition).
    fn set_state(&self, account: &AccountId, job: &JobId, s: JobState) -> Result<(), LogError>;
    /// Records several jobs' states; in one durable write where the store can. The default
    /// records them one by one, in order.
    fn set_states(&self, states: &[(AccountId, JobId, JobState)]) -> Result<(), LogError> {
        for (account, job, s) in states {
            self.set_state(account, job, *s)?;
        }
        Ok(())
    }
    /// Records jobs' final states and appends their `reports` (unique records of the events
    /// topic) to `log`: in one atomic write, durable as `durability` says, where the store
    /// can (the embedded log, when it is `log`). The default records the states, then appends
    /// the reports, each durably (a crash in between reports them on the replay).
    fn finish_jobs(
        &self,
        log: &dyn EventLog,
        states: &[(AccountId, JobId, JobState)],
        reports: &[(String, tacto_log::Record)],
        durability: Durability,
    ) -> Result<(), LogError> {
        let _ = durability;
        self.set_states(states)?;
        if !reports.is_empty() {
            log.append_unique_many(events::EVENTS.name(), reports)?;
        }
        Ok(())
    }
}

/// Job states as blobs of the embedded log.
pub struct BlobJobStore(pub Arc<dyn EventLog>);

impl JobStore for BlobJobStore {
    fn state(&self, job: &JobId) -> Result<Option<JobState>, LogError> {
        Ok(self
            .0
            .get_blob(&job_blob(job))?
            .and_then(|b| JobState::parse(&b)))
    }

    fn set_state(&self, _account: &AccountId, job: &JobId, s: JobState) -> Result<(), LogError> {
        self.0.put_blob(&job_blob(job), s.as_bytes())
    }

    fn set_states(&self, states: &[(AccountId, JobId, JobState)]) -> Result<(), LogError> {
        with_blobs(states, |items| self.0.put_blobs(items))
    }

    /// One write of the job store's log (the reports go to it, whatever `log` is: dispatch
    /// passes the same log).
    fn finish_jobs(
        &self,
        _log: &dyn EventLog,
        states: &[(AccountId, JobId, JobState)],
        reports: &[(String, tacto_log::Record)],
        durability: Durability,
    ) -> Result<(), LogError> {
        if states.is_empty() && reports.is_empty() {
            return Ok(());
        }
        with_blobs(states, |items| {
            self.0
                .put_blobs_and_append_unique(items, events::EVENTS.name(), reports, durability)
                .map(|_| ())
        })
    }
}

/// Calls `write` with jobs' states as named blobs.
fn with_blobs<T>(
    states: &[(AccountId, JobId, JobState)],
    write: impl FnOnce(&[(&str, &[u8])]) -> T,
) -> T {
    let names: Vec<String> = states.iter().map(|(_, job, _)| job_blob(job)).collect();
    let items: Vec<(&str, &[u8])> = names
        .iter()
        .zip(states)
        .map(|(name, (_, _, s))| (name.as_str(), s.as_bytes()))
        .collect();
    write(&items)
}

/// The dispatch service.
pub struct Dispatch {
    inner: Arc<Inner>,
    offsets: Vec<u64>,
    /// Offsets of jobs still being handled, per partition: the committed offset never passes
    /// them, so a job waiting for its rate limit when the process dies is handled again.
    in_flight: OffsetsInFlight,
    /// Recalls read from the partition being stepped, not handled yet.
    recalls: Vec<PendingRecall>,
    /// The offsets last committed, per partition (a commit writes only those that moved).
    committed: Vec<u64>,
}

/// What the dispatcher and its per-job tasks share.
struct Inner {
    log: Arc<dyn EventLog>,
    jobs: Arc<dyn JobStore>,
    /// Partitions this instance owns (all of them on the embedded log); a job of a partition
    /// taken away is left to its new owner unless its provider call has started.
    owned: std::sync::RwLock<std::collections::BTreeSet<u32>>,
    /// Ticks when partitions are taken away.
    revocations: tokio::sync::watch::Sender<u64>,
    policy: Arc<Policy>,
    decide: Arc<DecideState>,
    adapters: Arc<Adapters>,
    config: DispatchConfig,
    limiters: BTreeMap<Channel, Gate>,
    /// Serialises job state transitions: a recall and a send never both win.
    transitions: tokio::sync::Mutex<()>,
    /// Jobs being handled now. The same job can be on the contacts topic twice (decide
    /// decides the tail of the log again after a restart, with the same job ids): the twin
    /// that finds its job in flight leaves it to the first.
    in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Jobs waiting to be finished as not sent: whoever takes the transition lock next
    /// finishes all of them in one write (see [`Inner::finish_unsent`]).
    unsent: std::sync::Mutex<Vec<Unsent>>,
    /// Jobs about to be handed to their provider, waiting for their attempt to be recorded:
    /// whoever takes the transition lock next records all of them in one write (see
    /// [`Inner::begin_attempt`]).
    attempts: std::sync::Mutex<Vec<Attempt>>,
}

/// A job about to be handed to its provider, waiting for its attempt to be recorded.
struct Attempt {
    partition: u32,
    account: AccountId,
    job: JobId,
    /// Told whether to call the provider (false: recalled or taken away while it waited), or
    /// why the attempt could not be recorded.
    done: tokio::sync::oneshot::Sender<Result<bool, String>>,
}

/// A job never handed to a provider, waiting to be finished as not sent.
struct Unsent {
    account: AccountId,
    job: JobId,
    channel: Channel,
    /// Its report, made in the job's own trace.
    report: (String, tacto_log::Record),
    /// Told when the job is finished (or why it could not be).
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Holds a job in the set of jobs in flight until dropped.
struct InFlight<'a> {
    set: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    job: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.job);
        }
    }
}

/// A channel's rate limit with the queue in front of it. Jobs wait in arrival order as plain
/// entries ([`Waiting`]: the job and where it came from, no task, no span), and one pump task
/// per channel takes the head, waits for a token (or gives the turn up when the job is no
/// longer wanted), and only then starts the job's task: with a million jobs queued behind a
/// provider's rate, one timer ticks and a million small entries wait, not a million tasks.
/// Each entry is boxed: the queue grows by copying pointers, not the entries (a million
/// unboxed entries would be copied, into freshly faulted memory, at every doubling).
struct Gate {
    limiter: DefaultDirectRateLimiter,
    waiting: std::sync::Mutex<std::collections::VecDeque<Box<Waiting>>>,
    ready: tokio::sync::Notify,
    pumping: std::sync::atomic::AtomicBool,
}

/// A job waiting in front of its channel's rate limit.
struct Waiting {
    partition: u32,
    offset: u64,
    account: AccountId,
    job: Box<ContactJob>,
    /// The record's trace context headers (`traceparent`, `tracestate`).
    headers: Vec<(HeaderText, HeaderText)>,
    clock: fn() -> Timestamp,
    /// The dispatcher's offsets in flight, to release this one when the job is done.
    offsets: OffsetsInFlight,
}

/// Offsets of jobs still being handled, per partition.
type OffsetsInFlight = Arc<std::sync::Mutex<Vec<std::collections::BTreeSet<u64>>>>;

/// How a job passed its channel's gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Passage {
    /// It has a token (or its channel has no rate limit).
    Token,
    /// It was no longer wanted when its turn came (recalled, refused): it spent no token.
    GaveUp,
    /// Its window closed while it waited.
    WindowClosed,
}

/// A job's outcome as a record of the events topic, with the key that reports it only once
/// and the trace it continues.
fn outcome_record(
    account: &AccountId,
    job: &JobId,
    channel: Channel,
    status: OutcomeStatus,
    now: Timestamp,
    trace: Option<String>,
) -> Result<(String, tacto_log::Record), LogError> {
    let e = Event {
        id: EventId(format!("{job}:dispatch:{status:?}").into()),
        occurred_at: now,
        account_id: account.clone(),
        source: "dispatch".into(),
        body: EventBody::ContactOutcome {
            job_id: Some(job.clone()),
            channel,
            status,
            conversation: false,
            inbound: false,
        },
    };
    let mut record = events::to_record(&e).map_err(|err| LogError::Storage(err.to_string()))?;
    if let Some(tp) = trace {
        record.headers.push((TRACEPARENT.into(), tp.into()));
    }
    Ok((format!("event:{}", e.id), record))
}

fn job_blob(job: &JobId) -> String {
    format!("dispatch/job/{job}")
}

impl Dispatch {
    /// A dispatcher on the embedded log, starting from the group's committed offsets.
    pub fn new(
        log: Arc<dyn EventLog>,
        policy: Arc<Policy>,
        decide: Arc<DecideState>,
        adapters: Arc<Adapters>,
        config: DispatchConfig,
    ) -> Result<Self, LogError> {
        let partitions = log.partitions(events::CONTACTS.name())?;
        let offsets = (0..partitions)
            .map(|p| log.committed(&config.group, events::CONTACTS.name(), p))
            .collect::<Result<Vec<_>, _>>()?;
        let jobs = Arc::new(BlobJobStore(log.clone()));
        let mut d = Self::with_store(log, jobs, policy, decide, adapters, config, partitions)?;
        d.committed.clone_from(&offsets);
        d.offsets = offsets;
        if let Ok(mut o) = d.inner.owned.write() {
            o.extend(0..partitions);
        }
        Ok(d)
    }

    /// A dispatcher over any job store; it owns no partition until told.
    pub fn with_store(
        log: Arc<dyn EventLog>,
        jobs: Arc<dyn JobStore>,
        policy: Arc<Policy>,
        decide: Arc<DecideState>,
        adapters: Arc<Adapters>,
        config: DispatchConfig,
        partitions: u32,
    ) -> Result<Self, LogError> {
        let offsets = vec![0; partitions as usize];
        let limiters = config
            .rate_per_second
            .iter()
            .filter(|(_, r)| **r > 0.0 && r.is_finite())
            .filter_map(|(c, r)| {
                let period = Duration::from_secs_f64(1.0 / r);
                Quota::with_period(period).map(|q| {
                    let gate = Gate {
                        limiter: RateLimiter::direct(q.allow_burst(NonZeroU32::MIN)),
                        waiting: Default::default(),
                        ready: tokio::sync::Notify::new(),
                        pumping: Default::default(),
                    };
                    (*c, gate)
                })
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                log,
                jobs,
                owned: Default::default(),
                revocations: tokio::sync::watch::channel(0).0,
                policy,
                decide,
                adapters,
                config,
                limiters,
                transitions: tokio::sync::Mutex::new(()),
                in_flight: std::sync::Mutex::new(std::collections::HashSet::new()),
                unsent: Default::default(),
                attempts: Default::default(),
            }),
            in_flight: Arc::new(std::sync::Mutex::new(vec![
                Default::default();
                offsets.len()
            ])),
            // Unknown until the first commit writes every partition.
            committed: vec![u64::MAX; offsets.len()],
            offsets,
            recalls: Vec::new(),
        })
    }
}

impl Inner {
    fn state(&self, job: &JobId) -> Result<Option<JobState>, LogError> {
        self.jobs.state(job)
    }

    fn owns(&self, partition: u32) -> bool {
        self.owned.read().is_ok_and(|o| o.contains(&partition))
    }

    /// Drops the jobs of `partitions` waiting in front of any rate limit (they were taken away:
    /// their new owner handles them) and releases their offsets.
    pub(crate) fn drop_waiting(&self, partitions: &[u32]) {
        for gate in self.limiters.values() {
            let dropped: Vec<Box<Waiting>> = match gate.waiting.lock() {
                Ok(mut q) => {
                    let (gone, kept): (Vec<_>, Vec<_>) =
                        q.drain(..).partition(|w| partitions.contains(&w.partition));
                    q.extend(kept);
                    gone
                }
                Err(_) => Vec::new(),
            };
            for w in dropped {
                release(&w.offsets, w.partition, w.offset);
            }
        }
    }

    /// Returns when `partition` is taken away from this instance.
    async fn revoked(&self, partition: u32) {
        let mut rx = self.revocations.subscribe();
        while self.owns(partition) {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The record reporting a job's outcome, continuing the job's trace.
    fn job_report(
        account: &AccountId,
        job: &JobId,
        channel: Channel,
        status: OutcomeStatus,
        now: Timestamp,
    ) -> Result<(String, tacto_log::Record), LogError> {
        let incoming = JOB_TRACE.try_with(|t| t.clone()).ok().flatten();
        let trace = traceparent(&tracing::Span::current(), incoming.as_deref());
        outcome_record(account, job, channel, status, now, trace)
    }

    fn report(
        &self,
        account: &AccountId,
        job: &JobId,
        channel: Channel,
        status: OutcomeStatus,
        now: Timestamp,
    ) -> Result<(), LogError> {
        let (unique, record) = Self::job_report(account, job, channel, status, now)?;
        // Reported at most once, however often a replay reports it again.
        self.log
            .append_unique(events::EVENTS.name(), &unique, &record)?;
        Ok(())
    }

    /// Reports that the provider refused a job because the customer opted out of the channel
    /// with it (e.g. replied STOP to the sender before Tacto heard of it).
    fn report_opt_out(
        &self,
        account: &AccountId,
        job: &ContactJob,
        now: Timestamp,
    ) -> Result<(), LogError> {
        let e = Event {
            id: EventId(format!("{}:dispatch:opted-out", job.job_id).into()),
            occurred_at: now,
            account_id: account.clone(),
            source: "dispatch".into(),
            body: EventBody::OptedOut {
                channel: Some(job.channel),
                via: "provider".into(),
            },
        };
        let record = events::to_record(&e).map_err(|err| LogError::Storage(err.to_string()))?;
        self.log
            .append_unique(events::EVENTS.name(), &format!("event:{}", e.id), &record)?;
        Ok(())
    }

    /// Records a job's final state and reports the outcome that state stands for (an ambiguous
    /// job is reported sent), in one deferred write: only the attempt must reach the disk
    /// before the provider is called. A crash that loses this write (at most
    /// [`tacto_log::embedded::MAX_DEFERRAL`] of them) leaves the job as it was before:
    /// attempted, so reported ambiguous, i.e. sent (the conservative reading for caps), or
    /// never attempted, so handled again from the replayed contacts topic.
    fn finish(
        &self,
        account: &AccountId,
        job: &ContactJob,
        state: JobState,
        at: Timestamp,
    ) -> Result<(), LogError> {
        let report = Self::job_report(account, &job.job_id, job.channel, state.outcome(), at)?;
        self.jobs.finish_jobs(
            &*self.log,
            &[(account.clone(), job.job_id.clone(), state)],
            &[report],
            Durability::Deferred,
        )?;
        count_job(job.channel, state.name());
        Ok(())
    }

    /// Marks a job in flight, unless it is already (then `None`).
    fn enter(&self, job: &JobId) -> Option<InFlight<'_>> {
        let mut set = self.in_flight.lock().ok()?;
        set.insert(job.0.to_string()).then(|| InFlight {
            set: &self.in_flight,
            job: job.0.to_string(),
        })
    }

    /// Finishes a job that was never handed to a provider as not sent, unless it is finished
    /// already: the same job can be on the contacts topic twice (decide decides the tail of the
    /// log again after a restart, with the same job ids), and the twin may have sent it while
    /// this one waited.
    ///
    /// Group commit: the job joins a queue, and whoever takes the transition lock next finishes
    /// every job queued by then in one write (on Kafka one round trip to the broker for the
    /// states and one for the reports, instead of two per job while the lock is held).
    async fn finish_unsent(
        &self,
        account: &AccountId,
        job: &ContactJob,
        at: Timestamp,
    ) -> Result<(), LogError> {
        let report = Self::job_report(
            account,
            &job.job_id,
            job.channel,
            OutcomeStatus::NotSent,
            at,
        )?;
        let (done, finished) = tokio::sync::oneshot::channel();
        let unsent = Unsent {
            account: account.clone(),
            job: job.job_id.clone(),
            channel: job.channel,
            report,
            done,
        };
        self.group_commit(&self.unsent, unsent, finished, |q| {
            self.finish_unsent_now(q)
        })
        .await
    }

    /// Group commit under the transition lock: queues `item`, takes the lock, and hands every
    /// item queued by then to `write` (one write for all of them); then waits for `item`'s
    /// answer, given by this task's `write` or by one that took the lock before it.
    async fn group_commit<T, R>(
        &self,
        queue: &std::sync::Mutex<Vec<T>>,
        item: T,
        answer: tokio::sync::oneshot::Receiver<Result<R, String>>,
        write: impl FnOnce(Vec<T>),
    ) -> Result<R, LogError> {
        queue.lock().map_err(|_| poisoned())?.push(item);
        {
            let _t = self.transitions.lock().await;
            let queued = std::mem::take(&mut *queue.lock().map_err(|_| poisoned())?);
            write(queued);
        }
        match answer.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(why)) => Err(LogError::Storage(why)),
            Err(_) => Err(LogError::Storage("a queued write was dropped".into())),
        }
    }

    /// Records that a job is about to be handed to its provider, unless it was recalled
    /// (finished) or its partition taken away while it waited: whether to call the provider.
    /// The check and the record are one step against recalls (under the transition lock).
    ///
    /// Group commit, as [`Inner::finish_unsent`]: the job joins a queue, and whoever takes the
    /// lock next records every attempt queued by then in one durable write. One write per job
    /// held the lock for a broker round trip each: with a busy broker, jobs leaving their rate
    /// limit at 100/s kept the lock taken and a payment's recall queued behind them for
    /// seconds.
    async fn begin_attempt(
        &self,
        partition: u32,
        account: &AccountId,
        job: &JobId,
    ) -> Result<bool, LogError> {
        let (done, recorded) = tokio::sync::oneshot::channel();
        let attempt = Attempt {
            partition,
            account: account.clone(),
            job: job.clone(),
            done,
        };
        self.group_commit(&self.attempts, attempt, recorded, |q| {
            self.begin_attempts_now(q)
        })
        .await
    }

    /// Records `queued` attempts in one write, under the transition lock, and tells each
    /// whether to call its provider. A job finished already (recalled) or whose partition was
    /// taken away is not attempted; a job whose task gave up waiting is left alone.
    fn begin_attempts_now(&self, queued: Vec<Attempt>) {
        let mut states = Vec::with_capacity(queued.len());
        let mut go = Vec::with_capacity(queued.len());
        for a in queued {
            if a.done.is_closed() {
                continue;
            }
            match self.state(&a.job) {
                Ok(None) if self.owns(a.partition) => {
                    states.push((a.account, a.job, JobState::Attempting));
                    go.push(a.done);
                }
                // Recalled while it waited, or taken away: its new owner handles it.
                Ok(_) => _ = a.done.send(Ok(false)),
                Err(e) => _ = a.done.send(Err(e.to_string())),
            }
        }
        let result = if states.is_empty() {
            Ok(())
        } else {
            self.jobs.set_states(&states).map_err(|e| e.to_string())
        };
        for done in go {
            let _ = done.send(result.clone().map(|()| true));
        }
    }

    /// Finishes `queued` jobs as not sent in one write, under the transition lock, and tells
    /// each how it went. A job finished already (recalled, or sent by its twin) is left as it
    /// is; a job whose task gave up waiting (its partition was taken away) is left to the new
    /// owner.
    fn finish_unsent_now(&self, queued: Vec<Unsent>) {
        let mut seen = std::collections::HashSet::new();
        let mut states = Vec::new();
        let mut reports = Vec::new();
        let mut waiting = Vec::with_capacity(queued.len());
        let mut failed = Vec::new();
        let mut channels = Vec::new();
        for u in queued {
            if u.done.is_closed() {
                continue;
            }
            match self.state(&u.job) {
                Ok(None) if seen.insert(u.job.clone()) => {
                    states.push((u.account.clone(), u.job.clone(), JobState::NotSent));
                    reports.push(u.report);
                    channels.push(u.channel);
                }
                Ok(_) => {}
                Err(e) => {
                    failed.push((u.done, e.to_string()));
                    continue;
                }
            }
            waiting.push(u.done);
        }
        let result = if states.is_empty() {
            Ok(())
        } else {
            self.jobs
                .finish_jobs(&*self.log, &states, &reports, Durability::Deferred)
                .map_err(|e| e.to_string())
        };
        if result.is_ok() {
            for channel in channels {
                count_job(channel, JobState::NotSent.name());
            }
        }
        for done in waiting {
            let _ = done.send(result.clone());
        }
        for (done, why) in failed {
            let _ = done.send(Err(why));
        }
    }

    /// The last look: whether the account's current state forbids this job now (a payment, a
    /// STOP, a hold that arrived after the job was decided; an unknown account).
    fn refused_by_last_look(&self, account: &AccountId, job: &ContactJob, now: Timestamp) -> bool {
        let verdict = match self.decide.account(account.as_str()) {
            Some(a) => last_look(&a, job, now, &self.policy),
            None => Err(Vec::new()),
        };
        match verdict {
            Ok(()) => false,
            Err(reasons) => {
                let codes: Vec<_> = reasons.iter().map(|r| r.code).collect();
                tracing::info!(job = %job.job_id, ?codes, "refused by the last look");
                true
            }
        }
    }

    /// Whether the job is neither finished (recalled) nor refused by the last look now; quiet
    /// (the checks after the rate limit log the reason).
    fn still_wanted(&self, account: &AccountId, job: &ContactJob, now: Timestamp) -> bool {
        matches!(self.state(&job.job_id), Ok(None))
            && self
                .decide
                .account(account.as_str())
                .is_some_and(|a| last_look(&a, job, now, &self.policy).is_ok())
    }

    async fn handle_job(
        &self,
        partition: u32,
        account: &AccountId,
        job: &ContactJob,
        clock: fn() -> Timestamp,
        passage: Passage,
    ) -> Result<(), LogError> {
        let Some(_in_flight) = self.enter(&job.job_id) else {
            tracing::info!(job = %job.job_id, "the same job is being handled already");
            return Ok(());
        };
        match self.state(&job.job_id)? {
            None => {}
            Some(JobState::Attempting) => {
                // We stopped in the middle of this call last time: it may have gone out.
                tracing::warn!(job = %job.job_id, "ambiguous attempt after a restart: not re-sent");
                let _t = self.transitions.lock().await;
                return self.finish(account, job, JobState::Ambiguous, clock());
            }
            Some(done) => {
                // Handled before (a replay after a restart): report its outcome again, in case
                // the process stopped between recording it and reporting it (reports are
                // de-duplicated).
                return self.report(account, &job.job_id, job.channel, done.outcome(), clock());
            }
        }
        if passage == Passage::WindowClosed {
            tracing::info!(job = %job.job_id, "window closed while rate limited: handed back");
            return self.finish_unsent(account, job, clock()).await;
        }
        // The last look: state may have changed since the job was made (a payment, a STOP).
        let now = clock();
        if self.refused_by_last_look(account, job, now) {
            return self.finish_unsent(account, job, now).await;
        }
        let Some(address) =
            self.decide
                .address(account.as_str(), &job.contact_point_id, job.channel)
        else {
            tracing::warn!(job = %job.job_id, "no address for the contact point");
            return self.finish_unsent(account, job, now).await;
        };
        // Recorded before the call: after a crash this job is never sent again.
        if !self.begin_attempt(partition, account, &job.job_id).await? {
            return Ok(());
        }
        let msg = Message::new(account, job, address, now);
        let mut delay = self.config.backoff;
        // Whether the last try went out and got no answer: the provider may have taken it.
        let mut unanswered = false;
        for attempt in 1..=self.config.max_tries.max(1) {
            let calling = std::time::Instant::now();
            let result = self.adapters.for_channel(job.channel).send(&msg).await;
            unanswered = matches!(result, Err(SendError::Unanswered(_)));
            metrics::metrics()
                .provider_latency
                .get_or_create(&labels([("channel", job.channel.as_str())]))
                .observe(calling.elapsed().as_secs_f64());
            match result {
                Ok(()) => {
                    return self.finish(account, job, JobState::Sent, clock());
                }
                Err(SendError::Retryable(why) | SendError::Unanswered(why))
                    if attempt < self.config.max_tries =>
                {
                    tracing::warn!(job = %job.job_id, attempt, error = %why, "provider error; retrying");
                    if clock().plus(chrono_delta(delay)) > job.not_after {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    // A retry is a new contact attempt: the payment or STOP that arrived
                    // during the backoff stops it.
                    if self.refused_by_last_look(account, job, clock()) {
                        break;
                    }
                }
                Err(SendError::Ambiguous(why)) => {
                    // It may have gone out: never sent again, counted as sent.
                    tracing::warn!(job = %job.job_id, error = %why, "no answer from the provider: ambiguous, not retried");
                    return self.finish(account, job, JobState::Ambiguous, clock());
                }
                Err(SendError::OptedOut(why)) => {
                    tracing::info!(job = %job.job_id, reason = %why, "the recipient opted out with the provider");
                    self.report_opt_out(account, job, clock())?;
                    break;
                }
                Err(e) => {
                    tracing::warn!(job = %job.job_id, error = %e, "provider refused the job");
                    break;
                }
            }
        }
        let state = if unanswered {
            tracing::warn!(job = %job.job_id, "the last try got no answer: ambiguous");
            JobState::Ambiguous
        } else {
            JobState::Failed
        };
        self.finish(account, job, state, clock())
    }

    /// Handles a run of recalls under one transition lock. Jobs not attempted yet are cancelled
    /// and confirmed as not sent, the whole run in one deferred write (the jobs' states and
    /// their reports: a crash that loses it loses the recall's progress with it, and the
    /// replayed recall cancels them again); jobs already with a provider are cancelled there
    /// where the provider can, and that is recorded at once.
    async fn handle_recalls(
        &self,
        recalls: &[PendingRecall],
        now: Timestamp,
    ) -> Result<(), LogError> {
        let _t = self.transitions.lock().await;
        let mut seen = std::collections::HashSet::new();
        let mut states = Vec::new();
        let mut reports = Vec::new();
        for r in recalls {
            let account = &r.account;
            for job in &r.jobs {
                if !seen.insert(job) {
                    continue; // recalled twice in this run: handled once
                }
                let channel = self.job_channel(account, job);
                // Whether this run cancelled the job, and whether it reports it not sent.
                let (cancelled, confirmed) = match self.state(job)? {
                    // Not attempted yet: cancelled here.
                    None => {
                        states.push((account.clone(), job.clone(), JobState::NotSent));
                        (true, true)
                    }
                    // Confirmed before (a replay): the report is de-duplicated.
                    Some(JobState::NotSent) => (false, true),
                    // Handed to the provider (or maybe: ambiguous): cancel what it still holds,
                    // and record it at once (asking the provider again would not confirm it).
                    Some(JobState::Sent | JobState::Ambiguous) => {
                        let cancelled = self
                            .recall_at_provider(account, job, channel)
                            .instrument(r.span.clone())
                            .await;
                        if cancelled {
                            self.jobs.set_state(account, job, JobState::NotSent)?;
                        }
                        (cancelled, cancelled)
                    }
                    Some(s) => {
                        r.span.in_scope(
                            || tracing::info!(%job, state = ?s, "recall failed: already finished"),
                        );
                        (false, false)
                    }
                };
                if cancelled {
                    count_job(channel, "recalled");
                    r.span.in_scope(|| tracing::info!(%job, "recall confirmed"));
                }
                if confirmed {
                    reports.push(outcome_record(
                        account,
                        job,
                        channel,
                        OutcomeStatus::NotSent,
                        now,
                        r.trace.clone(),
                    )?);
                }
            }
        }
        // Reported at most once, however often a replay reports it again.
        self.jobs
            .finish_jobs(&*self.log, &states, &reports, Durability::Deferred)?;
        Ok(())
    }

    /// The channel of one of the account's jobs (SMS when the account does not know it).
    fn job_channel(&self, account: &AccountId, job: &JobId) -> Channel {
        self.decide
            .account(account.as_str())
            .and_then(|a| {
                a.attempts
                    .iter()
                    .find(|x| x.key.job_id(a.id.as_str()) == *job)
                    .map(|x| x.channel)
            })
            .unwrap_or(Channel::Sms)
    }

    /// Asks the provider to cancel a job it holds; whether it did.
    async fn recall_at_provider(&self, account: &AccountId, job: &JobId, channel: Channel) -> bool {
        match self
            .adapters
            .for_channel(channel)
            .recall(account.as_str(), job.as_str())
            .await
        {
            Some(RecallResult::Cancelled) => {
                tracing::info!(%job, "recall confirmed by the provider");
                true
            }
            Some(RecallResult::Failed(why)) => {
                count_job(channel, "recall_failed");
                tracing::warn!(%job, reason = %why, "recall failed at the provider");
                false
            }
            None => {
                tracing::info!(%job, "recall failed: already with the provider");
                false
            }
        }
    }
}

/// A recall read from the contacts topic, handled with the run of recalls it came in.
struct PendingRecall {
    partition: usize,
    offset: u64,
    account: AccountId,
    jobs: Vec<JobId>,
    span: tracing::Span,
    /// The trace its confirmation continues.
    trace: Option<String>,
}

impl Dispatch {
    /// Handles what is on the contacts topic now; returns how many records it consumed. Each
    /// job runs in its own task (waiting for its rate limit does not hold up recalls).
    pub async fn step(&mut self, clock: fn() -> Timestamp) -> Result<usize, LogError> {
        let mut consumed = 0;
        for p in 0..self.offsets.len() {
            let batch =
                self.inner
                    .log
                    .read(events::CONTACTS.name(), p as u32, self.offsets[p], 256)?;
            for d in &batch {
                consumed += 1;
                self.handle(d, clock).await?;
            }
            self.flush_recalls(clock).await?;
        }
        self.commit()?;
        Ok(consumed)
    }

    /// Handles the recalls read so far (all of one partition) as one run, then moves the
    /// partition's offset past them. On an error they stay pending and the offset stays: the
    /// next call handles them again (confirmations are idempotent).
    pub(crate) async fn flush_recalls(&mut self, clock: fn() -> Timestamp) -> Result<(), LogError> {
        let Some((partition, last)) = self.recalls.last().map(|r| (r.partition, r.offset)) else {
            return Ok(());
        };
        self.inner.handle_recalls(&self.recalls, clock()).await?;
        self.recalls.clear();
        self.offsets[partition] = last + 1;
        Ok(())
    }

    /// Handles one record of the contacts topic: a job starts its own task, a recall joins the
    /// run of recalls handled together (before the next other record or the next record of
    /// another partition; callers flush the run at the end of a batch), an undecodable record
    /// goes to the dead letters. Moves the partition's offset on.
    async fn handle(&mut self, d: &Delivered, clock: fn() -> Timestamp) -> Result<(), LogError> {
        let p = d.position.partition as usize;
        let decoded = events::from_record(&d.record);
        let recall = matches!(
            &decoded,
            Ok(Event {
                body: EventBody::JobsRecalled { .. },
                ..
            })
        );
        let other_partition = self.recalls.first().is_some_and(|r| r.partition != p);
        if !recall || other_partition {
            self.flush_recalls(clock).await?;
        }
        let inner = &self.inner;
        // Looked up once: this runs for every record.
        static CONSUMED: std::sync::OnceLock<Counter> = std::sync::OnceLock::new();
        CONSUMED
            .get_or_init(|| {
                metrics::metrics()
                    .events_consumed
                    .get_or_create(&labels([
                        ("service", "dispatch"),
                        ("topic", events::CONTACTS.name()),
                    ]))
                    .clone()
            })
            .inc();
        match decoded {
            Ok(e) => match e.body {
                EventBody::ContactScheduled(mut job) => {
                    // The decision's reasons (rules, legal sources) are on the decisions topic;
                    // a job waiting for its rate limit does not need to hold them.
                    job.decision.reasons = Vec::new();
                    if let Ok(mut f) = self.in_flight.lock() {
                        f[p].insert(d.position.offset);
                    }
                    let w = Waiting {
                        partition: p as u32,
                        offset: d.position.offset,
                        account: e.account_id.clone(),
                        job,
                        // Only the trace context: the other headers (event id, type,
                        // source, time) would cost a queued job more than the job itself.
                        headers: d
                            .record
                            .headers
                            .iter()
                            .filter(|(k, _)| k == TRACEPARENT || k == "tracestate")
                            .cloned()
                            .collect(),
                        clock,
                        offsets: self.in_flight.clone(),
                    };
                    match inner.limiters.get(&w.job.channel) {
                        Some(gate) => {
                            let channel = w.job.channel;
                            if let Ok(mut q) = gate.waiting.lock() {
                                q.push_back(Box::new(w));
                            }
                            gate.ready.notify_one();
                            if !gate.pumping.swap(true, std::sync::atomic::Ordering::AcqRel) {
                                tokio::spawn(pump(inner.clone(), channel));
                            }
                        }
                        None => start_job(inner.clone(), w, Passage::Token),
                    }
                }
                EventBody::JobsRecalled { job_ids, .. } => {
                    let span = tracing::info_span!("dispatch.recall");
                    continue_trace(&span, &d.record.headers);
                    let trace = traceparent(&span, d.record.header(TRACEPARENT));
                    self.recalls.push(PendingRecall {
                        partition: p,
                        offset: d.position.offset,
                        account: e.account_id,
                        jobs: job_ids,
                        span,
                        trace,
                    });
                    return Ok(()); // the offset moves when the run is handled
                }
                _ => {}
            },
            Err(err) => {
                let why = err.to_string();
                tracing::warn!(partition = p, offset = d.position.offset, error = %why, "dead letter");
                metrics::metrics()
                    .dead_letters
                    .get_or_create(&labels([("service", "dispatch")]))
                    .inc();
                inner.log.append(
                    events::DEAD_LETTERS.name(),
                    &[events::dead_letter(&d.record, &why)],
                )?;
            }
        }
        self.offsets[p] = d.position.offset + 1;
        Ok(())
    }

    /// The first offset of `partition` not fully handled (what may be committed).
    fn handled_upto(&self, partition: usize) -> u64 {
        let lowest = self
            .in_flight
            .lock()
            .ok()
            .and_then(|f| f.get(partition).and_then(|s| s.first().copied()));
        let next = self.offsets.get(partition).copied().unwrap_or(0);
        lowest.map_or(next, |o| o.min(next))
    }

    /// Commits, per partition, the first offset not fully handled: the partitions whose offset
    /// moved, in one deferred write (none when nothing moved). A crash can move them back; the
    /// jobs read again find their durable states.
    fn commit(&mut self) -> Result<(), LogError> {
        let moved: Vec<(&str, u32, u64)> = (0..self.offsets.len())
            .map(|p| (p, self.handled_upto(p)))
            .filter(|&(p, upto)| self.committed.get(p) != Some(&upto))
            .map(|(p, upto)| (events::CONTACTS.name(), p as u32, upto))
            .collect();
        if moved.is_empty() {
            return Ok(());
        }
        self.inner.log.append_and_commit(
            Vec::new(),
            &self.inner.config.group,
            &moved,
            Durability::Deferred,
        )?;
        for &(_, p, upto) in &moved {
            if let Some(c) = self.committed.get_mut(p as usize) {
                *c = upto;
            }
        }
        Ok(())
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(
        mut self,
        clock: fn() -> Timestamp,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), LogError> {
        let mut changes = self.inner.log.changes();
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            match self.step(clock).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {
                    // Jobs finished since the last step move the committed offset on.
                    if let Err(e) = self.commit() {
                        tracing::error!(error = %e, "cannot commit dispatch offsets");
                    }
                }
                Err(e) => tracing::error!(error = %e, "dispatch step failed; retrying"),
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// How long a job whose handling failed (its state or outcome could not be written: a broker
/// outage, a full disk) waits before it is handled again, at first and at most.
const JOB_RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Starts a job's task once it passed its gate; releases its offset when the task ends. A job
/// whose handling fails is handled again (its offset stays in flight, so the committed offset
/// does not pass it) until it succeeds or its partition is taken away: its new owner handles it
/// from the committed offset. Handling again is safe: a job recorded as attempted is reported
/// ambiguous, never sent again.
fn start_job(inner: Arc<Inner>, w: Waiting, passage: Passage) {
    let span = tracing::info_span!("dispatch.job", channel = w.job.channel.as_str());
    continue_trace(&span, &w.headers);
    let incoming = w
        .headers
        .iter()
        .find(|(k, _)| k == TRACEPARENT)
        .map(|(_, v)| v.clone().into_owned());
    let task = async move {
        let mut pause = JOB_RETRY.0;
        while let Err(err) = inner
            .handle_job(w.partition, &w.account, &w.job, w.clock, passage)
            .await
        {
            tracing::error!(job = %w.job.job_id, error = %err, retry_in = ?pause, "dispatch failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = inner.revoked(w.partition) => break,
            }
            pause = (pause * 2).min(JOB_RETRY.1);
        }
        release(&w.offsets, w.partition, w.offset);
    };
    tokio::spawn(JOB_TRACE.scope(incoming, task.instrument(span)));
}

fn release(offsets: &OffsetsInFlight, partition: u32, offset: u64) {
    if let Ok(mut f) = offsets.lock()
        && let Some(s) = f.get_mut(partition as usize)
    {
        s.remove(&offset);
    }
}

/// The pump of one channel's gate: takes the head of the queue, waits for a token unless the
/// job is no longer wanted (then it gives its turn up), never past the job's window, and
/// starts the job. A job of a partition taken away is left to its new owner.
async fn pump(inner: Arc<Inner>, channel: Channel) {
    let Some(gate) = inner.limiters.get(&channel) else {
        return;
    };
    loop {
        let head = gate.waiting.lock().ok().and_then(|mut q| q.pop_front());
        let Some(w) = head else {
            gate.ready.notified().await;
            continue;
        };
        if !inner.owns(w.partition) {
            release(&w.offsets, w.partition, w.offset);
            continue;
        }
        let now = (w.clock)();
        if !inner.still_wanted(&w.account, &w.job, now) {
            start_job(inner.clone(), *w, Passage::GaveUp);
            continue;
        }
        let left = w
            .job
            .not_after
            .since(now)
            .to_std()
            .unwrap_or(Duration::ZERO);
        let waiting = std::time::Instant::now();
        let passage = tokio::select! {
            r = tokio::time::timeout(left, gate.limiter.until_ready()) => {
                if r.is_ok() { Passage::Token } else { Passage::WindowClosed }
            }
            _ = inner.revoked(w.partition) => {
                tracing::info!(job = %w.job.job_id, "partition taken away: left to its new owner");
                release(&w.offsets, w.partition, w.offset);
                continue;
            }
        };
        metrics::metrics()
            .rate_limit_wait
            .get_or_create(&labels([("channel", channel.as_str())]))
            .observe(waiting.elapsed().as_secs_f64());
        start_job(inner.clone(), *w, passage);
    }
}

/// Counts a job's end at dispatch (`tacto_jobs_total`).
fn count_job(channel: Channel, status: &str) {
    metrics::metrics()
        .jobs
        .get_or_create(&labels([("channel", channel.as_str()), ("status", status)]))
        .inc();
}

fn poisoned() -> LogError {
    LogError::Storage("lock poisoned".into())
}

fn chrono_delta(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

#[cfg(test)]
mod tests;
