//! Decide restores from its snapshot plus the tail of the log, and ends in the same state as a
//! run that never stopped.
#![allow(missing_docs)]

use std::sync::Arc;
use tacto_decide::{Decide, DecideConfig};
use tacto_log::embedded::EmbeddedLog;
use tacto_log::{EventLog, events};
use tacto_model::{EventBody, Timestamp, synthetic};
use tacto_policy::Policy;

fn load(log: &EmbeddedLog, from: u64, to: u64, at: Timestamp) {
    let mut records = Vec::new();
    for i in from..to {
        let open = synthetic::account(5, i, at);
        if let EventBody::AccountUpserted(d) = &open.body {
            let bal = d.debts.iter().map(|x| x.balance_minor).sum();
            for e in synthetic::behaviour(5, i, at, 1, bal, &d.currency) {
                records.push(events::to_record(&e).expect("encode"));
            }
        }
        records.insert(0, events::to_record(&open).expect("encode"));
    }
    log.append(events::EVENTS.name(), &records).expect("append");
}

/// Snapshots only when a test asks for one.
fn by_hand() -> DecideConfig {
    DecideConfig {
        snapshot_every_events: u64::MAX,
        snapshot_interval: std::time::Duration::from_secs(3600),
        ..DecideConfig::default()
    }
}

fn state(d: &Decide) -> Vec<tacto_policy::Account> {
    let engine = d.state.engine.read().expect("lock");
    let mut v: Vec<_> = engine.store.iter().cloned().collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

#[test]
fn snapshot_plus_tail_equals_an_uninterrupted_run() {
    let t0 = Timestamp::parse("2026-11-16T15:00:00Z").expect("time");
    let t1 = Timestamp::parse("2026-11-16T16:00:00Z").expect("time");
    let policy = Arc::new(Policy::example());
    let config = by_hand();

    // Interrupted: 300 accounts, a snapshot, 200 more accounts, then a restart.
    let dir = tempfile::tempdir().expect("tempdir");
    let log: Arc<dyn EventLog> = {
        let l = EmbeddedLog::open(dir.path().join("a.redb")).expect("log");
        events::create_topics(&l, 3).expect("topics");
        load(&l, 0, 300, t0);
        Arc::new(l)
    };
    let mut d = Decide::restore(log.clone(), policy.clone(), config.clone()).expect("start");
    while d.step(t0).expect("step") > 0 {}
    d.snapshot().expect("snapshot");
    drop(d);
    let raw = dir.path().join("a.redb");
    drop(log);
    let l = EmbeddedLog::open(&raw).expect("reopen");
    load(&l, 300, 500, t0);
    let log: Arc<dyn EventLog> = Arc::new(l);
    let mut restored =
        Decide::restore(log.clone(), policy.clone(), config.clone()).expect("restore");
    assert_eq!(
        state(&restored).len(),
        300,
        "the snapshot holds the first 300"
    );
    while restored.step(t1).expect("step") > 0 {}

    // Uninterrupted: the same 500 accounts in one go.
    let l2 = EmbeddedLog::open(dir.path().join("b.redb")).expect("log");
    events::create_topics(&l2, 3).expect("topics");
    load(&l2, 0, 300, t0);
    load(&l2, 300, 500, t0);
    let mut straight = Decide::restore(Arc::new(l2), policy, config).expect("start");
    while straight.step(t0).expect("step") > 0 {}
    while straight.step(t1).expect("step") > 0 {}

    let (a, b) = (state(&restored), state(&straight));
    assert_eq!(a.len(), 500);
    let ids = |v: &[tacto_policy::Account]| v.iter().map(|x| x.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b));
    // Same facts folded: same balances, holds and flags (decision timing may differ).
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.balance_minor, y.balance_minor, "{}", x.id);
        assert_eq!(x.flags, y.flags, "{}", x.id);
        assert_eq!(x.opted_out, y.opted_out, "{}", x.id);
        assert_eq!(x.profile, y.profile, "{}", x.id);
    }
}

#[test]
fn catch_up_folds_what_was_acknowledged_after_the_snapshot_before_anyone_reads_the_state() {
    let t0 = Timestamp::parse("2026-11-16T15:00:00Z").expect("time");
    let policy = Arc::new(Policy::example());
    let config = by_hand();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.redb");
    {
        let l = EmbeddedLog::open(&path).expect("log");
        events::create_topics(&l, 2).expect("topics");
        load(&l, 0, 50, t0);
        let log: Arc<dyn EventLog> = Arc::new(l);
        let mut d = Decide::restore(log, policy.clone(), config.clone()).expect("start");
        while d.step(t0).expect("step") > 0 {}
        d.snapshot().expect("snapshot");
    }
    // Acknowledged after the snapshot, then the process died.
    let l = EmbeddedLog::open(&path).expect("reopen");
    load(&l, 50, 80, t0);
    let log: Arc<dyn EventLog> = Arc::new(l);
    let mut d = Decide::restore(log, policy, config).expect("restore");
    assert_eq!(state(&d).len(), 50, "restore alone: the snapshot only");
    let folded = d.catch_up(t0).expect("catch up");
    assert!(folded >= 30, "folded {folded}");
    assert_eq!(state(&d).len(), 80, "caught up: every acknowledged account");
    assert_eq!(d.catch_up(t0).expect("again"), 0, "nothing left");
}

#[test]
fn snapshots_write_only_what_changed_and_restore_the_whole_state() {
    let t0 = Timestamp::parse("2026-11-16T15:00:00Z").expect("time");
    let policy = Arc::new(Policy::example());
    let config = by_hand();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("d.redb");
    let before = {
        let l = EmbeddedLog::open(&path).expect("log");
        events::create_topics(&l, 2).expect("topics");
        load(&l, 0, 200, t0);
        let log: Arc<dyn EventLog> = Arc::new(l);
        let mut d = Decide::restore(log.clone(), policy.clone(), config.clone()).expect("start");
        while d.step(t0).expect("step") > 0 {}
        assert_eq!(
            d.snapshot().expect("first"),
            200,
            "the first snapshot writes every account"
        );
        assert_eq!(
            d.snapshot().expect("idle"),
            0,
            "nothing changed, nothing written"
        );
        // 20 more accounts: the next snapshot writes those (and any account whose state moved).
        let mut records = Vec::new();
        for i in 200..220 {
            records.push(events::to_record(&synthetic::account(5, i, t0)).expect("encode"));
        }
        log.append(events::EVENTS.name(), &records).expect("append");
        while d.step(t0).expect("step") > 0 {}
        assert_eq!(
            d.snapshot().expect("third"),
            20,
            "only the accounts that changed"
        );
        state(&d)
    };
    let l = EmbeddedLog::open(&path).expect("reopen");
    let d = Decide::restore(Arc::new(l), policy, config).expect("restore");
    assert_eq!(
        state(&d),
        before,
        "the head and every entry give back the same state"
    );
}

/// A payment of `amount_minor` for account `i` of the synthetic portfolio, in its currency.
fn payment(i: u64, at: Timestamp, amount_minor: i64) -> tacto_model::Event {
    let open = synthetic::account(5, i, at);
    let EventBody::AccountUpserted(d) = &open.body else {
        panic!("an account opens with an upsert");
    };
    tacto_model::Event {
        id: tacto_model::EventId(format!("{}-part", open.account_id).into()),
        occurred_at: at,
        account_id: open.account_id.clone(),
        source: "webhook".into(),
        body: EventBody::PaymentReceived {
            payment_id: format!("pay-{}", open.account_id),
            debt_id: None,
            amount_minor,
            currency: d.currency.clone(),
            method: "card".into(),
        },
    }
}

fn wakes(d: &Decide, accounts: &[tacto_policy::Account]) -> Vec<Option<Timestamp>> {
    let engine = d.state.engine.read().expect("lock");
    accounts
        .iter()
        .map(|a| engine.wake_of(a.id.as_str()))
        .collect()
}

#[test]
fn a_snapshot_encoded_while_decide_folds_on_holds_the_state_it_began_with() {
    let t0 = Timestamp::parse("2026-11-16T15:00:00Z").expect("time");
    // A day later: the timers of most accounts are due.
    let t1 = Timestamp::parse("2026-11-17T15:00:00Z").expect("time");
    let policy = Arc::new(Policy::example());
    let accounts = 6_000;
    let config = DecideConfig {
        // The whole load in one fold, and a snapshot begun right after it.
        batch: 100_000,
        snapshot_every_events: 1,
        snapshot_interval: std::time::Duration::from_secs(3600),
        ..DecideConfig::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("e.redb");
    let l = EmbeddedLog::open(&path).expect("log");
    events::create_topics(&l, 2).expect("topics");
    load(&l, 0, accounts, t0);
    let log: Arc<dyn EventLog> = Arc::new(l);
    let mut d = Decide::restore(log.clone(), policy.clone(), config.clone()).expect("start");
    assert!(d.step(t0).expect("load") > 0);
    assert!(
        d.snapshot_in_progress(),
        "the load's fold began a snapshot of every account"
    );
    let began = state(&d);
    let began_wakes = wakes(&d, &began);
    assert_eq!(began.len(), accounts as usize);

    // While it is encoded a slice at a time, payments arrive for accounts the slices have not
    // reached yet (their ids sort last) ...
    let mut ids: Vec<_> = (0..accounts)
        .map(|i| (synthetic::account_id(i).to_string(), i))
        .collect();
    ids.sort();
    let paid: Vec<u64> = ids.iter().rev().step_by(7).take(200).map(|x| x.1).collect();
    let records: Vec<_> = paid
        .iter()
        .map(|&i| events::to_record(&payment(i, t0, 1_000)).expect("encode"))
        .collect();
    log.append(events::EVENTS.name(), &records).expect("append");
    assert_eq!(d.step(t0).expect("payments"), paid.len());
    assert!(
        d.snapshot_in_progress(),
        "one fold's slice does not finish {accounts} accounts"
    );
    // ... and a day later the timers fire, changing more of them.
    let mut steps = 0;
    while d.snapshot_in_progress() {
        d.step(t1).expect("step");
        steps += 1;
    }
    assert!(steps >= 1);
    let after = state(&d);
    let changed = began.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert!(
        changed >= paid.len(),
        "the folds changed {changed} accounts the snapshot owed"
    );

    // A restart restores exactly the state the snapshot began with ...
    drop(d);
    let mut restored = Decide::restore(log, policy, config).expect("restore");
    let restored_state = state(&restored);
    assert!(
        restored_state == began,
        "the snapshot holds every account as it was when it began"
    );
    assert_eq!(wakes(&restored, &restored_state), began_wakes);
    // ... and folding the events after its head gives back the state decide had.
    while restored.step(t1).expect("step") > 0 {}
    let caught_up = state(&restored);
    for (x, y) in caught_up.iter().zip(&after) {
        assert_eq!(x.balance_minor, y.balance_minor, "{}", x.id);
        assert_eq!(x.flags, y.flags, "{}", x.id);
    }
}
