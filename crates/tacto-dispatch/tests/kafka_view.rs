//! Dispatch on Kafka reads decide's account states from the `tacto.decide-state` changelog,
//! which decide appends *after* the jobs of a step. A job that arrives before the state that
//! made it must wait for that state, not be refused by the last look as "unknown" (which
//! silently lost reminders whenever the broker was slow between the two appends). And a recall
//! that is the last record of what dispatch reads is confirmed at once.
#![allow(missing_docs)]

use rdkafka::mocking::MockCluster;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tacto_decide::kafka::StateEntry;
use tacto_decide::{Address, Contacts};
use tacto_dispatch::{Adapters, DispatchConfig, FileSink};
use tacto_log::kafka::{KafkaLog, KafkaSettings};
use tacto_log::{EventLog, Record, events};
use tacto_model::{Channel, Event, EventBody, EventId, OutcomeStatus, samples};
use tacto_policy::Policy;
use tacto_policy::engine::Engine;

mod support;
use support::now;

/// What decide would append for a new account: its job record and its state record.
fn decide_outputs(engine: &mut Engine, policy: &Policy, account: &str) -> (Record, Record) {
    let outputs = engine
        .input(&samples::sample_account(account), now(), policy)
        .expect("applied");
    let job = outputs
        .iter()
        .find(|e| matches!(e.body, EventBody::ContactScheduled(_)))
        .expect("a job at 10:00 in New York");
    (
        events::to_record(job).expect("record"),
        state_record(engine, account),
    )
}

/// The `decide-state` record decide would append for the account now.
fn state_record(engine: &Engine, account: &str) -> Record {
    let entry = StateEntry {
        account: engine.store.get(account).expect("state").clone(),
        wake: engine.wake_of(account),
        contacts: Contacts {
            addresses: vec![Address {
                point_id: "mobile".into(),
                channel: Channel::Sms,
                address: "+12125550100".into(),
            }],
            identity: None,
        },
    };
    Record::new(account, entry.encode().expect("encode"))
}

fn sent(outbox: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(outbox)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A mock cluster with Tacto's topics, and a log on it.
fn broker() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    Arc<KafkaLog>,
) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    for t in [
        events::EVENTS,
        events::CONTACTS,
        events::DEAD_LETTERS,
        events::DECIDE_STATE,
        events::DISPATCH_JOBS,
    ] {
        cluster.create_topic(t.name(), 2, 1).expect("topic");
    }
    let mut settings = KafkaSettings::new(cluster.bootstrap_servers());
    settings.session_timeout = Duration::from_secs(6);
    let log = Arc::new(KafkaLog::connect(settings).expect("connect"));
    (cluster, log)
}

/// Whether `ok` turned true within `limit`.
fn within(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[test]
fn a_job_that_arrives_before_its_account_state_waits_for_it() {
    let (cluster, log) = broker();
    let _cluster = cluster;
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = dir.path().join("outbox.jsonl");
    let policy = support::one_sms_policy();
    let adapters = Arc::new(Adapters::new(FileSink::open(&outbox).expect("outbox")));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let worker = rt.spawn(tacto_dispatch::kafka::run(
        log.clone(),
        policy.clone(),
        adapters,
        DispatchConfig::default(),
        now,
        stopped,
    ));
    let mut engine = Engine::new();
    // A first account, state first: once it is sent, dispatch is in the group and consuming.
    let (job, state) = decide_outputs(&mut engine, &policy, "W-1");
    log.append(events::DECIDE_STATE.name(), &[state])
        .expect("state");
    log.append(events::CONTACTS.name(), &[job]).expect("job");
    let warmed_up = within(Duration::from_secs(60), || sent(&outbox).len() == 1);
    // The second account as decide writes it: the job, and the state a moment later.
    let waited = warmed_up && {
        let (job, state) = decide_outputs(&mut engine, &policy, "L-1");
        log.append(events::CONTACTS.name(), &[job]).expect("job");
        std::thread::sleep(Duration::from_millis(1500));
        log.append(events::DECIDE_STATE.name(), &[state])
            .expect("state");
        within(Duration::from_secs(30), || sent(&outbox).len() == 2)
    };
    // Stopped before asserting, so that a failure does not hang on the running service.
    stop.send(true).expect("stop");
    let ran = rt.block_on(worker);
    rt.shutdown_timeout(Duration::from_secs(5));
    assert!(warmed_up, "the first job (state first) was never sent");
    assert!(
        waited,
        "the job that came before its state was not sent: {:?}",
        sent(&outbox)
    );
    assert_eq!(sent(&outbox)[1]["account_id"], "L-1");
    ran.expect("joined").expect("dispatch ran");
}

/// How often the events topic reports `status` for jobs of `account`.
fn reported(log: &KafkaLog, account: &str, status: OutcomeStatus) -> usize {
    (0..2)
        .flat_map(|p| {
            log.read(events::EVENTS.name(), p, 0, 1_000)
                .unwrap_or_default()
        })
        .filter_map(|d| events::from_record(&d.record).ok())
        .filter(|e| {
            e.account_id.as_str() == account
                && matches!(e.body, EventBody::ContactOutcome { status: s, .. } if s == status)
        })
        .count()
}

/// A recall that is the last record dispatch reads (nothing comes after it) is handled at
/// once, not when the next job arrives.
#[test]
fn a_recall_at_the_end_of_a_batch_is_confirmed_at_once() {
    let (_cluster, log) = broker();
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = dir.path().join("outbox.jsonl");
    let policy = support::one_sms_policy();
    let adapters = Arc::new(Adapters::new(FileSink::open(&outbox).expect("outbox")));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // One SMS a minute: the second job waits for its turn while it is recalled.
    let config = DispatchConfig {
        rate_per_second: [(Channel::Sms, 1.0 / 60.0)].into_iter().collect(),
        ..DispatchConfig::default()
    };
    let worker = rt.spawn(tacto_dispatch::kafka::run(
        log.clone(),
        policy.clone(),
        adapters,
        config,
        now,
        stopped,
    ));
    let mut engine = Engine::new();
    let mut send = |account: &str| {
        let (job, state) = decide_outputs(&mut engine, &policy, account);
        log.append(events::DECIDE_STATE.name(), &[state])
            .expect("state");
        log.append(events::CONTACTS.name(), &[job]).expect("job");
    };
    send("W-2");
    let warmed_up = within(Duration::from_secs(60), || sent(&outbox).len() == 1);
    send("Q-2");
    let recalled = warmed_up && {
        std::thread::sleep(Duration::from_millis(500));
        let paid = Event {
            id: EventId("Q-2-paid".into()),
            occurred_at: now(),
            account_id: tacto_model::AccountId("Q-2".into()),
            source: "webhook".into(),
            body: EventBody::PaymentReceived {
                payment_id: "pay-Q-2".into(),
                debt_id: None,
                amount_minor: 45_000,
                currency: "USD".into(),
                method: "card".into(),
            },
        };
        let outputs = engine.input(&paid, now(), &policy).expect("applied");
        let recall = outputs
            .iter()
            .find(|e| matches!(e.body, EventBody::JobsRecalled { .. }))
            .expect("the payment recalls the queued job");
        log.append(
            events::CONTACTS.name(),
            &[events::to_record(recall).expect("record")],
        )
        .expect("recall");
        log.append(events::DECIDE_STATE.name(), &[state_record(&engine, "Q-2")])
            .expect("state");
        within(Duration::from_secs(20), || {
            reported(&log, "Q-2", OutcomeStatus::NotSent) == 1
        })
    };
    stop.send(true).expect("stop");
    let ran = rt.block_on(worker);
    rt.shutdown_timeout(Duration::from_secs(5));
    assert!(warmed_up, "the first job was never sent");
    assert!(recalled, "the recall was not confirmed");
    assert_eq!(sent(&outbox).len(), 1, "the recalled job was sent");
    ran.expect("joined").expect("dispatch ran");
}
