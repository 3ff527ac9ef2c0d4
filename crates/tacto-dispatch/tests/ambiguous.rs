//! A provider call that got no answer may have gone out: dispatch records the job as ambiguous
//! (reported sent) and never calls a provider without idempotency keys for it again; a
//! receiver that recognises a repeat is tried again, and the job is ambiguous if no try got an
//! answer; an error the provider answered with (a 503) is retried. Decide and dispatch on the
//! embedded log in one process.
#![allow(missing_docs)]

use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tacto_decide::{Decide, DecideConfig};
use tacto_dispatch::{Adapters, ChannelAdapter, Dispatch, DispatchConfig, Message, SendError};
use tacto_log::embedded::EmbeddedLog;
use tacto_log::events;
use tacto_model::{OutcomeStatus, samples};

mod support;
use support::now;

/// How a scripted provider answers each call of an account, in order; calls past the script
/// are accepted.
#[derive(Clone, Copy, Debug)]
enum Reply {
    /// The request went out, no answer came back.
    NoAnswer,
    /// The same, from a receiver that recognises a repeat.
    NoAnswerIdempotent,
    /// The provider answered 503.
    Unavailable,
}

#[derive(Default)]
struct ScriptedProvider {
    script: HashMap<String, Vec<Reply>>,
    calls: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
}

impl ScriptedProvider {
    fn calls(&self, account: &str) -> usize {
        self.calls
            .lock()
            .expect("calls")
            .get(account)
            .copied()
            .unwrap_or(0)
    }
}

impl ChannelAdapter for ScriptedProvider {
    fn send<'a>(&'a self, m: &'a Message) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            self.total.fetch_add(1, Ordering::SeqCst);
            let call = {
                let mut calls = self.calls.lock().expect("calls");
                let n = calls.entry(m.account_id.clone()).or_default();
                *n += 1;
                *n - 1
            };
            match self.script.get(&m.account_id).and_then(|s| s.get(call)) {
                Some(Reply::NoAnswer) => Err(SendError::Ambiguous("timed out".into())),
                Some(Reply::NoAnswerIdempotent) => Err(SendError::Unanswered("timed out".into())),
                Some(Reply::Unavailable) => Err(SendError::Retryable("503".into())),
                None => Ok(()),
            }
        })
    }
}

/// Shares the scripted provider with the test.
struct Shared(Arc<ScriptedProvider>);

impl ChannelAdapter for Shared {
    fn send<'a>(&'a self, m: &'a Message) -> BoxFuture<'a, Result<(), SendError>> {
        self.0.send(m)
    }
}

/// Dispatch's reported outcomes, by account.
fn outcomes(log: &EmbeddedLog) -> Vec<(String, OutcomeStatus)> {
    let mut out: Vec<_> = support::reported(log)
        .into_iter()
        .map(|r| (r.account, r.status))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_an_answer_is_never_repeated_and_counts_as_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(EmbeddedLog::open(dir.path().join("log.redb")).expect("log"));
    events::create_topics(&*log, 2).expect("topics");
    let policy = support::one_sms_policy();
    let mut decide =
        Decide::restore(log.clone(), policy.clone(), DecideConfig::default()).expect("decide");
    let provider = Arc::new(ScriptedProvider {
        script: [
            ("HUNG-1".to_string(), vec![Reply::NoAnswer]),
            (
                "BUSY-1".to_string(),
                vec![Reply::Unavailable, Reply::Unavailable],
            ),
            ("ECHO-1".to_string(), vec![Reply::NoAnswerIdempotent]),
            ("LOST-1".to_string(), vec![Reply::NoAnswerIdempotent; 4]),
        ]
        .into_iter()
        .collect(),
        ..ScriptedProvider::default()
    });
    let config = DispatchConfig {
        backoff: Duration::from_millis(10),
        ..DispatchConfig::default()
    };
    let mut dispatch = Dispatch::new(
        log.clone(),
        policy.clone(),
        decide.state.clone(),
        Arc::new(Adapters::new(Shared(provider.clone()))),
        config,
    )
    .expect("dispatch");

    let accounts = ["HUNG-1", "BUSY-1", "ECHO-1", "LOST-1"];
    for a in accounts {
        support::append(&*log, &samples::sample_account(a));
    }
    decide.catch_up(now()).expect("decide");
    assert_eq!(dispatch.step(now).await.expect("jobs"), accounts.len());
    let started = Instant::now();
    while outcomes(&log).len() < accounts.len() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        outcomes(&log),
        vec![
            ("BUSY-1".to_string(), OutcomeStatus::Sent),
            ("ECHO-1".to_string(), OutcomeStatus::Sent),
            ("HUNG-1".to_string(), OutcomeStatus::Sent),
            ("LOST-1".to_string(), OutcomeStatus::Sent),
        ]
    );
    assert_eq!(provider.calls("BUSY-1"), 3, "two 503s, then accepted");
    assert_eq!(provider.calls("HUNG-1"), 1, "no answer: never called again");
    assert_eq!(provider.calls("ECHO-1"), 2, "no answer, then accepted");
    assert_eq!(provider.calls("LOST-1"), 4, "no answer to every try (4)");

    // Read from the start again: the ambiguous job stays as it was.
    let mut again = Dispatch::new(
        log.clone(),
        policy,
        decide.state.clone(),
        Arc::new(Adapters::new(Shared(provider.clone()))),
        DispatchConfig {
            group: "replay".into(),
            ..DispatchConfig::default()
        },
    )
    .expect("dispatch");
    again.step(now).await.expect("replay");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        provider.total.load(Ordering::SeqCst),
        10,
        "a replay called again"
    );
    assert_eq!(
        outcomes(&log).len(),
        accounts.len(),
        "a replay reported again"
    );
}
