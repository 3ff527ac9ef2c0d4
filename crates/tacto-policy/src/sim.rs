//! A simulated clock around the decision core: accounts, timers and (optionally) a simulated
//! provider that answers every job. It runs exactly the code the services run (`apply`,
//! `settle`), only with time taken from the events instead of a clock, so a month of a
//! portfolio replays in seconds and the same input always gives the same output.

use crate::account::Account;
use crate::engine::Engine;
use crate::policy::Policy;
use hashbrown::HashMap;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use tacto_model::{AccountId, Channel, Event, EventBody, EventId, JobId, OutcomeStatus, Timestamp};

/// Counts of what happened, for summaries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events by type name.
    pub by_type: BTreeMap<&'static str, u64>,
    /// Scheduled contacts by channel.
    pub contacts: BTreeMap<Channel, u64>,
    /// Deferrals by first reason code (snake_case).
    pub deferrals: BTreeMap<&'static str, u64>,
    /// Suppressions by first reason code.
    pub suppressions: BTreeMap<&'static str, u64>,
    /// Recalls by first reason code (number of jobs).
    pub recalls: BTreeMap<&'static str, u64>,
}

impl Stats {
    /// Adds the counts of another run (over other accounts) to these.
    pub fn merge(&mut self, other: &Stats) {
        fn add<K: Ord + Clone>(a: &mut BTreeMap<K, u64>, b: &BTreeMap<K, u64>) {
            for (k, n) in b {
                *a.entry(k.clone()).or_default() += n;
            }
        }
        add(&mut self.by_type, &other.by_type);
        add(&mut self.contacts, &other.contacts);
        add(&mut self.deferrals, &other.deferrals);
        add(&mut self.suppressions, &other.suppressions);
        add(&mut self.recalls, &other.recalls);
    }

    fn count(&mut self, e: &Event) {
        *self.by_type.entry(e.body.type_name()).or_default() += 1;
        match &e.body {
            EventBody::ContactScheduled(j) => *self.contacts.entry(j.channel).or_default() += 1,
            EventBody::ContactDeferred { decision, .. } => {
                *self.deferrals.entry(decision.first_code()).or_default() += 1
            }
            EventBody::ContactSuppressed { decision, .. } => {
                *self.suppressions.entry(decision.first_code()).or_default() += 1
            }
            EventBody::JobsRecalled { job_ids, decision } => {
                *self.recalls.entry(decision.first_code()).or_default() += job_ids.len() as u64
            }
            _ => {}
        }
    }
}

/// How a simulated provider answers a job: deterministic per job id.
fn simulated_outcome(job: &JobId, channel: Channel) -> (OutcomeStatus, bool, i64) {
    let h = xxhash_rust::xxh3::xxh3_64(job.as_str().as_bytes());
    let minutes = 1 + (h % 20) as i64;
    let r = (h >> 8) % 100;
    let (status, conversation) = match channel {
        Channel::Sms | Channel::Email => {
            if r < 92 {
                (OutcomeStatus::Delivered, false)
            } else {
                (OutcomeStatus::Failed, false)
            }
        }
        Channel::Voice => match r {
            0..45 => (OutcomeStatus::NoAnswer, false),
            45..65 => (OutcomeStatus::Voicemail, false),
            65..75 => (OutcomeStatus::Busy, false),
            75..90 => (OutcomeStatus::RightPartyContact, true),
            90..95 => (OutcomeStatus::WrongParty, false),
            _ => (OutcomeStatus::Disconnected, false),
        },
    };
    (status, conversation, minutes)
}

/// Accounts, timers and a simulated provider on a simulated clock.
pub struct Simulator<'p> {
    policy: &'p Policy,
    engine: Engine,
    outcomes: BinaryHeap<Reverse<(Timestamp, u64)>>,
    pending: HashMap<u64, Event>,
    by_job: HashMap<JobId, u64>,
    next_outcome: u64,
    provider: bool,
    record: bool,
    now: Timestamp,
    /// Every event, in order, when recording.
    pub log: Vec<Event>,
    /// Counts.
    pub stats: Stats,
}

impl<'p> Simulator<'p> {
    /// A simulator. `provider`: answer every job with a simulated outcome. `record`: keep the
    /// full event log in [`Simulator::log`].
    pub fn new(policy: &'p Policy, provider: bool, record: bool) -> Self {
        Self {
            policy,
            engine: Engine::new(),
            outcomes: BinaryHeap::new(),
            pending: HashMap::new(),
            by_job: HashMap::new(),
            next_outcome: 0,
            provider,
            record,
            now: Timestamp::from_micros(i64::MIN),
            log: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// Reserves room in [`Simulator::log`] for `events` more events. The room is address space
    /// until written, so reserving generously costs nothing, and saves the copies (and fresh
    /// pages) of a log that doubles its way up to millions of events.
    pub fn reserve_log(&mut self, events: usize) {
        if self.record {
            self.log.reserve(events);
        }
    }

    /// The simulated time.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// An account's state.
    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.engine.store.get(id.as_str())
    }

    /// Every account.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.engine.store.iter()
    }

    /// Feeds an input event: time first moves to its `occurred_at` (firing timers and provider
    /// answers due before it); events dated in the past are applied at the current time.
    /// Returns how many decisions the event itself caused (when recording, the last ones in
    /// [`Simulator::log`]).
    pub fn push(&mut self, e: Event) -> usize {
        self.advance_to(e.occurred_at);
        self.now = self.now.max(e.occurred_at);
        self.input(e)
    }

    fn input(&mut self, e: Event) -> usize {
        let Some(outputs) = self.engine.input(&e, self.now, self.policy) else {
            return 0;
        };
        self.observe(&e);
        if self.record {
            self.log.push(e);
        }
        self.outputs(outputs)
    }

    fn outputs(&mut self, events: Vec<Event>) -> usize {
        for e in &events {
            self.observe(e);
            if self.provider {
                self.answer(e);
            }
        }
        let n = events.len();
        if self.record {
            self.log.extend(events);
        }
        n
    }

    fn observe(&mut self, e: &Event) {
        self.stats.count(e);
    }

    fn answer(&mut self, e: &Event) {
        match &e.body {
            EventBody::ContactScheduled(job) => {
                let (status, conversation, minutes) = simulated_outcome(&job.job_id, job.channel);
                let at = job.not_before.plus(chrono::TimeDelta::minutes(minutes));
                let n = self.next_outcome;
                self.next_outcome += 1;
                let mut id = compact_str::CompactString::with_capacity(job.job_id.0.len() + 8);
                id.push_str(job.job_id.as_str());
                id.push_str(":outcome");
                self.pending.insert(
                    n,
                    Event {
                        id: EventId(id),
                        occurred_at: at,
                        account_id: e.account_id.clone(),
                        source: "simulated-provider".into(),
                        body: EventBody::ContactOutcome {
                            job_id: Some(job.job_id.clone()),
                            channel: job.channel,
                            status,
                            conversation,
                            inbound: false,
                        },
                    },
                );
                self.by_job.insert(job.job_id.clone(), n);
                self.outcomes.push(Reverse((at, n)));
            }
            EventBody::JobsRecalled { job_ids, .. } => {
                // Work not yet sent is cancelled at the provider: it reports "not sent".
                for id in job_ids {
                    if let Some(n) = self.by_job.remove(id)
                        && let Some(ev) = self.pending.get_mut(&n)
                        && ev.occurred_at > e.occurred_at
                        && let EventBody::ContactOutcome {
                            status,
                            conversation,
                            ..
                        } = &mut ev.body
                    {
                        *status = OutcomeStatus::NotSent;
                        *conversation = false;
                        ev.occurred_at = e.occurred_at;
                        self.outcomes.push(Reverse((e.occurred_at, n)));
                    }
                }
            }
            _ => {}
        }
    }

    /// Moves the clock to `t`, firing every timer and provider answer due by then, in time
    /// order.
    pub fn advance_to(&mut self, t: Timestamp) {
        loop {
            let timer = self.engine.peek();
            let outcome = self.outcomes.peek().map(|Reverse((w, _))| *w);
            let next = match (timer, outcome) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next > t {
                break;
            }
            self.now = self.now.max(next);
            if outcome == Some(next) {
                // An answer moved earlier by a recall is in the heap twice: only the entry at
                // its current time delivers it.
                if let Some(Reverse((_, n))) = self.outcomes.pop()
                    && self.pending.get(&n).is_some_and(|e| e.occurred_at == next)
                    && let Some(e) = self.pending.remove(&n)
                {
                    if let EventBody::ContactOutcome {
                        job_id: Some(j), ..
                    } = &e.body
                    {
                        self.by_job.remove(j);
                    }
                    self.input(e);
                }
                continue;
            }
            if let Some(events) = self.engine.fire_next(self.now, self.policy) {
                self.outputs(events);
            }
        }
        self.now = self.now.max(t);
    }
}

/// How many shards a simulation splits its accounts into by default: one per core.
pub fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The shard (of `shards`) that simulates an account: a stable hash of its id, so every event
/// of an account lands in the same shard, on every run and machine.
///
/// Accounts never affect one another in a simulation: every account's decisions depend on its
/// own events and timers and on the time, which is each event's own. So simulating each shard
/// on its own [`Simulator`] (on its own thread), every shard's clock run to the same end,
/// gives every account exactly the events one simulator over all of them gives; only the
/// interleaving of different accounts' events at the same instant differs.
pub fn shard_of(account: &str, shards: usize) -> usize {
    let shards = shards.max(1) as u64;
    // The remainder is below `shards`, itself a `usize`.
    (xxhash_rust::xxh3::xxh3_64(account.as_bytes()) % shards) as usize
}

/// The inputs of a synthetic portfolio (`tacto_model::synthetic`): `accounts` accounts opened
/// at `start` and what their customers do over `days` days, in time order.
pub fn synthetic_inputs(seed: u64, accounts: u64, start: Timestamp, days: u32) -> Vec<Event> {
    synthetic_inputs_of(seed, 0..accounts, start, days)
}

/// [`synthetic_inputs`] of some of the portfolio's accounts (by index), in time order: one
/// shard of a simulation split over threads.
pub fn synthetic_inputs_of(
    seed: u64,
    accounts: impl IntoIterator<Item = u64>,
    start: Timestamp,
    days: u32,
) -> Vec<Event> {
    let mut inputs = Vec::new();
    for i in accounts {
        let open = tacto_model::synthetic::account(seed, i, start);
        if let EventBody::AccountUpserted(d) = &open.body {
            let balance = d.debts.iter().map(|x| x.balance_minor).sum();
            inputs.extend(tacto_model::synthetic::behaviour(
                seed,
                i,
                start,
                days,
                balance,
                &d.currency,
            ));
        }
        inputs.push(open);
    }
    inputs.sort_by_key(|e| e.occurred_at);
    inputs
}

/// What two policies do with the same inputs (each with the simulated provider).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comparison {
    /// The first policy's version and what it did.
    pub a: (String, Stats),
    /// The second policy's version and what it did.
    pub b: (String, Stats),
}

/// Runs `inputs` (in time order) under `policy` with the simulated provider until `until`.
pub fn run_stats(policy: &Policy, inputs: &[Event], until: Timestamp) -> Stats {
    let mut sim = Simulator::new(policy, true, false);
    for e in inputs {
        sim.push(e.clone());
    }
    sim.advance_to(until);
    sim.stats
}

/// Runs the same inputs under two policies, the two runs on two threads.
pub fn compare(a: &Policy, b: &Policy, inputs: &[Event], until: Timestamp) -> Comparison {
    let (sa, sb) = std::thread::scope(|s| {
        let other = s.spawn(|| run_stats(b, inputs, until));
        let first = run_stats(a, inputs, until);
        // A panic in the other run is a defect of the core: carry it on here.
        let second = other
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (first, second)
    });
    Comparison {
        a: (a.version().to_owned(), sa),
        b: (b.version().to_owned(), sb),
    }
}

impl Comparison {
    /// One row per figure, `(section, label, a, b)`: events by type, contacts by channel,
    /// deferrals, suppressions and recalled jobs by reason. Labels present in either run.
    pub fn rows(&self) -> Vec<(&'static str, String, u64, u64)> {
        fn merge<K: Ord + Clone + ToString>(
            out: &mut Vec<(&'static str, String, u64, u64)>,
            section: &'static str,
            a: &BTreeMap<K, u64>,
            b: &BTreeMap<K, u64>,
        ) {
            let keys: std::collections::BTreeSet<&K> = a.keys().chain(b.keys()).collect();
            for k in keys {
                out.push((
                    section,
                    k.to_string(),
                    a.get(k).copied().unwrap_or(0),
                    b.get(k).copied().unwrap_or(0),
                ));
            }
        }
        let (a, b) = (&self.a.1, &self.b.1);
        let mut out = Vec::new();
        merge(&mut out, "contacts", &a.contacts, &b.contacts);
        merge(&mut out, "deferrals", &a.deferrals, &b.deferrals);
        merge(&mut out, "suppressions", &a.suppressions, &b.suppressions);
        merge(&mut out, "recalled jobs", &a.recalls, &b.recalls);
        merge(&mut out, "events", &a.by_type, &b.by_type);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tacto_model::synthetic;

    #[test]
    fn two_policies_are_compared_on_the_same_portfolio() {
        let a = Policy::example();
        let b = Policy::from_toml(
            &crate::policy::EXAMPLE_POLICY
                .replace("max = 2\nwindow_hours = 24", "max = 1\nwindow_hours = 24")
                .replace("version = \"example-2026-11\"", "version = \"one-a-day\""),
        )
        .expect("stricter policy");
        let start = Timestamp::parse("2026-11-02T00:00:00Z").expect("time");
        let inputs = synthetic_inputs(7, 300, start, 14);
        let c = compare(&a, &b, &inputs, start.plus(chrono::TimeDelta::days(14)));
        // A stricter cap defers more contacts (deferred, never dropped).
        let capped = |s: &Stats| s.deferrals.get("frequency_cap").copied().unwrap_or(0);
        assert!(capped(&c.b.1) > capped(&c.a.1), "{c:?}");
        assert_eq!(c.b.0, "one-a-day");
        let rows = c.rows();
        assert!(rows.iter().any(|r| r.0 == "contacts" && r.1 == "sms"));
        assert_eq!(
            c,
            compare(&a, &b, &inputs, start.plus(chrono::TimeDelta::days(14)))
        );
    }

    /// Each account's events, in order, by account.
    fn by_account(log: &[Event]) -> BTreeMap<String, Vec<&Event>> {
        let mut m: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
        for e in log {
            m.entry(e.account_id.as_str().to_owned())
                .or_default()
                .push(e);
        }
        m
    }

    #[test]
    fn shards_give_every_account_the_events_one_simulator_gives() {
        let policy = Policy::example();
        let start = Timestamp::parse("2026-11-02T00:00:00Z").expect("time");
        let inputs = synthetic_inputs(11, 400, start, 30);
        // One simulator's clock reaches the last input of any account: every shard's must.
        let last = inputs.iter().map(|e| e.occurred_at).max().expect("inputs");
        let until = start.plus(chrono::TimeDelta::days(30)).max(last);
        let mut one = Simulator::new(&policy, true, true);
        for e in inputs.clone() {
            one.push(e);
        }
        one.advance_to(until);

        let mut shards = vec![Vec::new(); 3];
        for e in inputs {
            shards[shard_of(e.account_id.as_str(), 3)].push(e);
        }
        assert!(shards.iter().all(|s| s.len() > 100), "uneven shards");
        let mut log = Vec::new();
        let mut stats = Stats::default();
        for shard in shards {
            let mut sim = Simulator::new(&policy, true, true);
            for e in shard {
                sim.push(e);
            }
            sim.advance_to(until);
            log.extend(sim.log);
            stats.merge(&sim.stats);
        }
        assert_eq!(stats, one.stats);
        assert_eq!(log.len(), one.log.len());
        assert_eq!(by_account(&log), by_account(&one.log));
        // The split is by account, whatever the number of shards: synthetic shards agree.
        let some = synthetic_inputs_of(11, (0..400).filter(|i| i % 2 == 1), start, 30);
        let all = synthetic_inputs(11, 400, start, 30);
        let odd: Vec<&Event> = all
            .iter()
            .filter(|e| some.iter().any(|x| x.account_id == e.account_id))
            .collect();
        assert_eq!(some.iter().collect::<Vec<_>>(), odd);
    }

    #[test]
    fn a_simulated_month_is_deterministic_and_contacts_happen() {
        let policy = Policy::example();
        let start = Timestamp::parse("2026-11-02T00:00:00Z").expect("time");
        let run = || {
            let mut sim = Simulator::new(&policy, true, true);
            let mut inputs = Vec::new();
            for i in 0..200 {
                let open = synthetic::account(3, i, start);
                if let EventBody::AccountUpserted(d) = &open.body {
                    let bal = d.debts.iter().map(|x| x.balance_minor).sum();
                    inputs.extend(synthetic::behaviour(3, i, start, 30, bal, &d.currency));
                }
                inputs.push(open);
            }
            inputs.sort_by_key(|e| e.occurred_at);
            for e in inputs {
                sim.push(e);
            }
            sim.advance_to(start.plus(chrono::TimeDelta::days(30)));
            (sim.log, sim.stats)
        };
        let (a, sa) = run();
        let (b, _) = run();
        assert_eq!(a, b);
        assert!(sa.contacts.values().sum::<u64>() > 200, "{sa:?}");
        assert!(sa.by_type.get("contact_deferred").copied().unwrap_or(0) > 0);
    }
}
