//! Recalls on the embedded log, with decide and dispatch in one process: a run of recalls is
//! confirmed together, each job exactly once (also when the contacts topic is read again), and
//! jobs recalled while they queue behind the provider's rate limit give their turn up instead
//! of spending it: the next account's reminder does not wait behind them.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tacto_decide::{Decide, DecideConfig};
use tacto_dispatch::{Adapters, Dispatch, DispatchConfig, FileSink};
use tacto_log::embedded::EmbeddedLog;
use tacto_log::{EventLog, events};
use tacto_model::{Channel, Event, EventBody, EventId, OutcomeStatus, samples};
use tacto_policy::Policy;

mod support;
use support::{append, now};

/// Queued accounts behind the rate limit.
const QUEUED: usize = 12;
/// One SMS every 4 s: the queue above would take 48 s to drain if recalled jobs kept their turn.
const SMS_PER_SECOND: f64 = 0.25;

fn payment_in_full(account: &str) -> Event {
    Event {
        id: EventId(format!("{account}-paid").into()),
        occurred_at: now(),
        account_id: tacto_model::AccountId(account.into()),
        source: "webhook".into(),
        body: EventBody::PaymentReceived {
            payment_id: format!("pay-{account}"),
            debt_id: None,
            amount_minor: 45_000,
            currency: "USD".into(),
            method: "card".into(),
        },
    }
}

/// Dispatch's reported outcomes: (job id, status) with how often each.
fn outcomes(log: &EmbeddedLog) -> HashMap<(String, OutcomeStatus), usize> {
    let mut out = HashMap::new();
    for r in support::reported(log) {
        if let Some(job) = r.job {
            *out.entry((job, r.status)).or_default() += 1;
        }
    }
    out
}

fn sent(outbox: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(outbox)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn dispatch(
    log: &Arc<EmbeddedLog>,
    policy: &Arc<Policy>,
    decide: &Decide,
    outbox: &std::path::Path,
    group: &str,
) -> Dispatch {
    let config = DispatchConfig {
        group: group.into(),
        rate_per_second: [(Channel::Sms, SMS_PER_SECOND)].into_iter().collect(),
        ..DispatchConfig::default()
    };
    Dispatch::new(
        log.clone(),
        policy.clone(),
        decide.state.clone(),
        Arc::new(Adapters::new(FileSink::open(outbox).expect("outbox"))),
        config,
    )
    .expect("dispatch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recalled_jobs_are_confirmed_once_and_give_their_turn_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(EmbeddedLog::open(dir.path().join("log.redb")).expect("log"));
    events::create_topics(&*log, 2).expect("topics");
    let policy = support::one_sms_policy();
    let mut decide =
        Decide::restore(log.clone(), policy.clone(), DecideConfig::default()).expect("decide");
    let outbox = dir.path().join("outbox.jsonl");
    let mut dispatch = dispatch(&log, &policy, &decide, &outbox, "tacto-dispatch");

    // Accounts whose reminders queue behind the rate limit (the first is sent at once).
    let accounts: Vec<String> = (0..=QUEUED).map(|i| format!("R-{i}")).collect();
    for a in &accounts {
        append(&*log, &samples::sample_account(a));
    }
    decide.catch_up(now()).expect("decide");
    assert_eq!(dispatch.step(now).await.expect("jobs"), accounts.len());
    let first = Instant::now();
    while sent(&outbox).is_empty() && first.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sent(&outbox).len(),
        1,
        "the first reminder goes out at once"
    );

    // Every one of them pays in full: one run of recalls on the contacts topic.
    for a in &accounts {
        append(&*log, &payment_in_full(a));
    }
    decide.catch_up(now()).expect("decide");
    let recalls = dispatch.step(now).await.expect("recalls");
    assert!(recalls >= QUEUED, "{recalls} recalls read");
    let reported = outcomes(&log);
    let not_sent = reported
        .keys()
        .filter(|(_, s)| *s == OutcomeStatus::NotSent)
        .count();
    assert_eq!(
        not_sent, QUEUED,
        "each queued job confirmed as not sent: {reported:?}"
    );
    assert!(
        reported.values().all(|n| *n == 1),
        "reported twice: {reported:?}"
    );

    // A new account: its reminder waits one rate period at most, not one per recalled job.
    let asked = Instant::now();
    append(&*log, &samples::sample_account("NEXT-1"));
    decide.catch_up(now()).expect("decide");
    dispatch.step(now).await.expect("job");
    while sent(&outbox).len() < 2 && asked.elapsed() < Duration::from_secs(40) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waited = asked.elapsed();
    let lines = sent(&outbox);
    assert_eq!(
        lines.len(),
        2,
        "the next reminder was not sent in {waited:?}"
    );
    assert_eq!(lines[1]["account_id"], "NEXT-1");
    assert!(
        waited < Duration::from_secs(16),
        "the next reminder waited {waited:?} behind recalled jobs"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = outcomes(&log);

    // Read from the start again (another group, the same job states): nothing is sent or
    // reported twice.
    let mut again = dispatch_again(&log, &policy, &decide, &outbox);
    again.step(now).await.expect("replay");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sent(&outbox).len(), 2, "a replay sent again");
    let replayed = outcomes(&log);
    assert!(
        replayed.values().all(|n| *n == 1),
        "reported twice: {replayed:?}"
    );
    assert_eq!(replayed, before);
}

fn dispatch_again(
    log: &Arc<EmbeddedLog>,
    policy: &Arc<Policy>,
    decide: &Decide,
    outbox: &std::path::Path,
) -> Dispatch {
    dispatch(log, policy, decide, outbox, "replay")
}

/// Decide decides the tail of the log again after a restart, so the same job can be on the
/// contacts topic twice: the job goes out once, and a payment arriving afterwards does not get
/// it reported as not sent. (The interleaving where the twin waits behind the rate limit while
/// the first is sent, then meets the payment at its last look, is timing-dependent: the chaos
/// run met it in 3 of 5 runs before dispatch kept jobs in flight apart; this test does not
/// force it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_the_contacts_topic_twice_is_reported_once_as_it_went() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(EmbeddedLog::open(dir.path().join("log.redb")).expect("log"));
    events::create_topics(&*log, 1).expect("topics");
    let policy = support::one_sms_policy();
    let mut decide =
        Decide::restore(log.clone(), policy.clone(), DecideConfig::default()).expect("decide");
    let outbox = dir.path().join("outbox.jsonl");
    let mut dispatch = dispatch(&log, &policy, &decide, &outbox, "tacto-dispatch");
    append(&*log, &samples::sample_account("T-1"));
    decide.catch_up(now()).expect("decide");
    // The job's record, appended once more: its twin.
    let job = log
        .read(events::CONTACTS.name(), 0, 0, 10)
        .expect("read")
        .into_iter()
        .next()
        .expect("a job")
        .record;
    log.append(events::CONTACTS.name(), &[job]).expect("append");
    assert_eq!(dispatch.step(now).await.expect("jobs"), 2);
    let first = Instant::now();
    while sent(&outbox).is_empty() && first.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sent(&outbox).len(), 1, "the job goes out once");
    // Paid in full while the twin may still wait for the next token (one every 4 s).
    append(&*log, &payment_in_full("T-1"));
    decide.catch_up(now()).expect("decide");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let reported = outcomes(&log);
    assert!(
        reported.keys().all(|(_, s)| *s != OutcomeStatus::NotSent),
        "a job that went out was reported not sent: {reported:?}"
    );
    assert_eq!(sent(&outbox).len(), 1, "sent once");
}
