//! Unit tests of the dispatcher's internals.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use tacto_log::embedded::EmbeddedLog;
use tacto_model::samples;

/// The blob store, counting its writes of finished jobs and failing the first `failing` of
/// them (a broker outage).
struct CountingStore {
    blobs: BlobJobStore,
    finishes: AtomicUsize,
    /// Writes of several states at once (attempts recorded together).
    state_writes: AtomicUsize,
    failing: usize,
}

impl JobStore for CountingStore {
    fn state(&self, job: &JobId) -> Result<Option<JobState>, LogError> {
        self.blobs.state(job)
    }

    fn set_state(&self, account: &AccountId, job: &JobId, s: JobState) -> Result<(), LogError> {
        self.blobs.set_state(account, job, s)
    }

    fn set_states(&self, states: &[(AccountId, JobId, JobState)]) -> Result<(), LogError> {
        self.state_writes.fetch_add(1, Ordering::SeqCst);
        self.blobs.set_states(states)
    }

    fn finish_jobs(
        &self,
        log: &dyn EventLog,
        states: &[(AccountId, JobId, JobState)],
        reports: &[(String, tacto_log::Record)],
        durability: Durability,
    ) -> Result<(), LogError> {
        if self.finishes.fetch_add(1, Ordering::SeqCst) < self.failing {
            return Err(LogError::Storage("the broker is down".into()));
        }
        self.blobs.finish_jobs(log, states, reports, durability)
    }
}

fn sample_job(id: &str) -> ContactJob {
    let mut job = samples::sample_events()
        .into_iter()
        .find_map(|e| match e.body {
            EventBody::ContactScheduled(job) => Some(*job),
            _ => None,
        })
        .expect("the samples schedule a job");
    job.job_id = JobId(id.into());
    job
}

/// Not-sent outcomes reported on the events topic, per job.
fn not_sent_reports(log: &EmbeddedLog) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for p in 0..log.partitions(events::EVENTS.name()).expect("partitions") {
        for d in log.read(events::EVENTS.name(), p, 0, 10_000).expect("read") {
            if let Ok(Event {
                body:
                    EventBody::ContactOutcome {
                        job_id: Some(job),
                        status: OutcomeStatus::NotSent,
                        ..
                    },
                ..
            }) = events::from_record(&d.record)
            {
                *out.entry(job.to_string()).or_default() += 1;
            }
        }
    }
    out
}

/// A dispatcher over a counting store whose first `failing` writes of finished jobs fail, on
/// an embedded log in `dir`; it knows no account.
fn dispatcher(
    dir: &std::path::Path,
    failing: usize,
) -> (Arc<EmbeddedLog>, Arc<CountingStore>, Dispatch) {
    let log = Arc::new(EmbeddedLog::open(dir.join("log.redb")).expect("log"));
    events::create_topics(&*log, 2).expect("topics");
    let store = Arc::new(CountingStore {
        blobs: BlobJobStore(log.clone()),
        finishes: AtomicUsize::new(0),
        state_writes: AtomicUsize::new(0),
        failing,
    });
    let policy = Policy::from_toml(
        "version = \"t\"\n[[segments]]\nname = \"all\"\ncadence = \"main\"\n[cadences.main]\nsteps = []\n",
    )
    .expect("policy");
    let sink = crate::FileSink::open(dir.join("outbox.jsonl")).expect("outbox");
    let d = Dispatch::with_store(
        log.clone(),
        store.clone(),
        Arc::new(policy),
        Arc::new(DecideState::default()),
        Arc::new(Adapters::new(sink)),
        DispatchConfig::default(),
        2,
    )
    .expect("dispatch");
    d.inner.owned.write().expect("owned").extend(0..2);
    (log, store, d)
}

/// Waits until `len()` reaches `n` (tasks queued for the transition lock); fails after 10 s.
async fn queued(len: impl Fn() -> usize, n: usize) {
    let started = std::time::Instant::now();
    while len() < n {
        assert!(started.elapsed() < Duration::from_secs(10), "not queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Jobs finished as not sent while the transition lock is busy are written together, once
/// each; a job finished already keeps its state and gets no second report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_not_sent_are_finished_together_once_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, store, d) = dispatcher(dir.path(), 0);
    let inner = d.inner.clone();
    let account = AccountId("A-1".into());
    inner
        .jobs
        .set_state(&account, &JobId("sent-before".into()), JobState::Sent)
        .expect("state");
    let at = Timestamp::parse("2026-11-23T15:00:00Z").expect("time");

    // Hold the lock (a recall in progress) while 40 jobs, one of them twice and one sent
    // before, are finished as not sent.
    let held = inner.transitions.lock().await;
    let mut ids: Vec<String> = (0..38).map(|i| format!("job-{i}")).collect();
    ids.push("job-0".into());
    ids.push("sent-before".into());
    let mut tasks = Vec::new();
    for id in &ids {
        let (inner, account, job) = (inner.clone(), account.clone(), sample_job(id));
        tasks.push(tokio::spawn(async move {
            inner.finish_unsent(&account, &job, at).await
        }));
    }
    queued(|| inner.unsent.lock().expect("queue").len(), ids.len()).await;
    drop(held);
    for t in tasks {
        t.await.expect("task").expect("finished");
    }

    assert_eq!(
        store.finishes.load(Ordering::SeqCst),
        1,
        "one write for all"
    );
    for i in 0..38 {
        let job = JobId(format!("job-{i}").into());
        assert_eq!(inner.state(&job).expect("state"), Some(JobState::NotSent));
    }
    let sent_before = JobId("sent-before".into());
    assert_eq!(
        inner.state(&sent_before).expect("state"),
        Some(JobState::Sent)
    );
    let reports = not_sent_reports(&log);
    assert_eq!(reports.len(), 38, "{reports:?}");
    assert!(reports.values().all(|n| *n == 1), "{reports:?}");
    assert!(!reports.contains_key("sent-before"));
}

/// Jobs about to be handed to their provider while the transition lock is busy (a recall
/// in progress) have their attempts recorded together, in one write; a job recalled while it
/// waited, or whose partition was taken away, is not attempted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_waiting_for_the_lock_are_recorded_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, store, d) = dispatcher(dir.path(), 0);
    let inner = d.inner.clone();
    let account = AccountId("A-1".into());
    let held = inner.transitions.lock().await;
    // 30 jobs of owned partitions, one recalled while it waits, one of a partition not owned.
    let mut jobs: Vec<(u32, String)> = (0..30).map(|i| (i % 2, format!("job-{i}"))).collect();
    jobs.push((0, "recalled".into()));
    jobs.push((7, "taken-away".into()));
    let mut tasks = Vec::new();
    for (partition, id) in &jobs {
        let (inner, account, job, partition) = (
            inner.clone(),
            account.clone(),
            JobId(id.clone().into()),
            *partition,
        );
        tasks.push(tokio::spawn(async move {
            inner.begin_attempt(partition, &account, &job).await
        }));
    }
    queued(|| inner.attempts.lock().expect("queue").len(), jobs.len()).await;
    // The recall lands while they wait.
    inner
        .jobs
        .set_state(&account, &JobId("recalled".into()), JobState::NotSent)
        .expect("state");
    drop(held);
    let mut go = Vec::new();
    for t in tasks {
        go.push(t.await.expect("task").expect("recorded"));
    }

    assert_eq!(
        store.state_writes.load(Ordering::SeqCst),
        1,
        "one write for all"
    );
    assert!(go[..30].iter().all(|g| *g), "{go:?}");
    assert!(!go[30] && !go[31], "{go:?}");
    for (_, id) in &jobs[..30] {
        let job = JobId(id.clone().into());
        assert_eq!(
            inner.state(&job).expect("state"),
            Some(JobState::Attempting)
        );
    }
    let recalled = JobId("recalled".into());
    assert_eq!(
        inner.state(&recalled).expect("state"),
        Some(JobState::NotSent)
    );
    let taken = JobId("taken-away".into());
    assert_eq!(inner.state(&taken).expect("state"), None);
}

/// A job whose outcome cannot be written (the broker is down) is handled again until it is,
/// and its offset stays in flight until then: the committed offset never passes a job without
/// an outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_outcome_cannot_be_written_is_handled_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, store, d) = dispatcher(dir.path(), 2);
    let offsets = d.in_flight.clone();
    offsets.lock().expect("offsets")[1].insert(41);
    let job = sample_job("unknown-account-job");
    let waiting = Waiting {
        partition: 1,
        offset: 41,
        account: AccountId("A-unknown".into()),
        job: Box::new(job),
        headers: Vec::new(),
        clock: || Timestamp::parse("2026-11-23T15:00:00Z").expect("time"),
        offsets: offsets.clone(),
    };
    // Unknown to decide's state: refused by the last look, finished as not sent.
    start_job(d.inner.clone(), waiting, Passage::Token);

    let started = std::time::Instant::now();
    while offsets.lock().expect("offsets")[1].contains(&41) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the job never finished"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        store.finishes.load(Ordering::SeqCst),
        3,
        "two failed writes, then one"
    );
    let job = JobId("unknown-account-job".into());
    assert_eq!(d.inner.state(&job).expect("state"), Some(JobState::NotSent));
    assert_eq!(not_sent_reports(&log).get("unknown-account-job"), Some(&1));
}
