//! Tacto's decide service: consumes the events topic, folds every event into its account's
//! state, decides (policy, packs, timers) and appends the decisions: all of them to the
//! decisions topic, jobs and recalls also to the contacts topic. Processing is at-least-once and
//! idempotent: offsets are committed only after the decisions are durable, and a replayed event
//! is recognised by the account state. Restart = the last snapshot plus the tail of the log.

pub mod kafka;
mod snapshotting;
mod writer;

use serde::{Deserialize, Serialize};
use snapshotting::Snapshotting;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tacto_log::{Delivered, EventLog, LogError, Record, events};
use tacto_model::validate::validate_input;
use tacto_model::{Channel, Event, EventBody, IdentityAnswers, Timestamp};
use tacto_policy::engine::Engine;
use tacto_policy::store::AccountStore;
use tacto_policy::{Account, Policy};
use tacto_telemetry::metrics::{self, Counter, labels};
use tacto_telemetry::trace::{TRACEPARENT, continue_trace, traceparent};
use writer::{Folded, Write, Writer};

/// Decide settings.
#[derive(Clone, Debug)]
pub struct DecideConfig {
    /// Consumer group name (offsets).
    pub group: String,
    /// Records read per partition per step.
    pub batch: usize,
    /// Snapshot after this many events…
    pub snapshot_every_events: u64,
    /// …or this much time, whichever comes first (when anything changed).
    pub snapshot_interval: Duration,
}

impl Default for DecideConfig {
    fn default() -> Self {
        Self {
            group: "tacto-decide".into(),
            batch: 512,
            snapshot_every_events: 50_000,
            snapshot_interval: Duration::from_secs(30),
        }
    }
}

/// Decide failures.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A snapshot could not be written or read.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// Decide's writer stopped (it gave up on a write while shutting down).
    #[error("decide's writer stopped: {0}")]
    WriterStopped(String),
}

/// One contact address (personal data: kept out of account state and logs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Contact point id.
    pub point_id: String,
    /// Channel.
    pub channel: Channel,
    /// Phone or email.
    pub address: String,
}

/// An account's personal data that decide keeps beside (never in) its state: where to reach
/// the customer, and the answers of the self-service identity check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contacts {
    /// Contact addresses.
    pub addresses: Vec<Address>,
    /// Identity check answers, if the system of record sent any.
    pub identity: Option<IdentityAnswers>,
}

/// State shared with ingest (account views) and dispatch (last look, addresses).
#[derive(Default)]
pub struct DecideState {
    /// Accounts and timers.
    pub engine: RwLock<Engine>,
    /// Personal data by account id.
    pub directory: RwLock<HashMap<String, Contacts>>,
    ready: AtomicBool,
}

impl DecideState {
    /// Marks the state restored and current (readiness).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// How long until the earliest timer is due, at most `max`.
    pub fn until_next_timer(&self, now: Timestamp, max: Duration) -> Duration {
        self.engine
            .read()
            .ok()
            .and_then(|e| e.peek())
            .map_or(max, |w| w.since(now).to_std().unwrap_or(Duration::ZERO))
            .min(max)
    }

    /// Whether the state is restored and current.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// An account's state (a copy).
    pub fn account(&self, id: &str) -> Option<Account> {
        self.engine.read().ok()?.store.get(id).cloned()
    }

    /// Whether this copy of the state includes decide's output `event_id` for `account` (see
    /// [`Account::includes_output`]); an id that is not an output is always included.
    pub fn includes_output(&self, account: &str, event_id: &str) -> bool {
        if tacto_policy::account::output_sequence(account, event_id).is_none() {
            return true;
        }
        self.engine.read().is_ok_and(|e| {
            e.store
                .get(account)
                .is_some_and(|a| a.includes_output(event_id))
        })
    }

    /// The address of an account's contact point.
    pub fn address(&self, account: &str, point: &str, channel: Channel) -> Option<String> {
        self.directory
            .read()
            .ok()?
            .get(account)?
            .addresses
            .iter()
            .find(|a| a.point_id == point && a.channel == channel)
            .map(|a| a.address.clone())
    }
}

impl tacto_ingest::AccountView for DecideState {
    fn account(&self, id: &str) -> Option<serde_json::Value> {
        let a = DecideState::account(self, id)?;
        let queued: Vec<String> = a
            .queued()
            .map(|q| q.key.job_id(a.id.as_str()).0.into())
            .collect();
        let mut v = serde_json::to_value(&a).ok()?;
        if let Some(o) = v.as_object_mut() {
            o.insert("queued_jobs".into(), serde_json::json!(queued));
            o.remove("recent");
        }
        Some(v)
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn state(&self, id: &str) -> Option<Account> {
        DecideState::account(self, id)
    }

    fn identity(&self, id: &str) -> Option<IdentityAnswers> {
        self.directory.read().ok()?.get(id)?.identity.clone()
    }

    fn addresses(&self, id: &str) -> Vec<(Channel, String, String)> {
        self.directory
            .read()
            .ok()
            .and_then(|d| {
                d.get(id).map(|c| {
                    c.addresses
                        .iter()
                        .map(|a| (a.channel, a.point_id.clone(), a.address.clone()))
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    fn accounts_with_address(&self, channel: Channel, address: &str) -> Vec<String> {
        self.directory
            .read()
            .map(|d| {
                d.iter()
                    .filter(|(_, c)| {
                        c.addresses
                            .iter()
                            .any(|p| p.channel == channel && p.address == address)
                    })
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The head of a snapshot: the offsets it covers. The accounts are entries of their own
/// (`decide/account/{id}`, a [`StateEntry`] each), written when they change: a snapshot writes
/// the head and the accounts changed since the last one in one atomic write, so its cost grows
/// with the activity since the last snapshot, not with the portfolio.
#[derive(Serialize, Deserialize)]
struct SnapshotHead {
    version: u32,
    offsets: Vec<u64>,
    accounts: u64,
}

const SNAPSHOT: &str = "decide/snapshot";
const ACCOUNT_PREFIX: &str = "decide/account/";
/// The layout of the snapshot (head and account entries). A snapshot of another layout is
/// refused by name.
const SNAPSHOT_VERSION: u32 = 3;

/// One account's entry in a snapshot or in the Kafka changelog: everything decide needs to
/// resume it.
#[derive(Serialize, Deserialize)]
pub struct StateEntry {
    /// The account's folded state.
    pub account: Account,
    /// Its pending wake-up.
    pub wake: Option<Timestamp>,
    /// Its personal data: contact addresses and identity answers (as on the events topic).
    pub contacts: Contacts,
}

/// The first two bytes of an encoded [`StateEntry`]: `T` and its layout version. Entries of
/// another layout are refused by name instead of being misread.
const ENTRY_MAGIC: [u8; 2] = [b'T', 2];

/// A [`StateEntry`] made of borrowed parts: the same encoding, without copying an account to
/// encode it.
#[derive(Serialize)]
struct StateEntryRef<'a> {
    account: &'a Account,
    wake: Option<Timestamp>,
    contacts: &'a Contacts,
}

impl StateEntryRef<'_> {
    fn encode(&self) -> Result<Vec<u8>, DecideError> {
        // Sized for a usual entry (about 250 bytes): grown from the two magic bytes, it was
        // reallocated five times per account.
        let mut out = Vec::with_capacity(384);
        out.extend_from_slice(&ENTRY_MAGIC);
        postcard::to_extend(self, out)
            .map_err(|e| DecideError::Snapshot(format!("state entry: {e}")))
    }
}

/// An account's [`StateEntry`] encoded from the state as it is (its account, its wake-up and
/// its personal data), or `None` for an account the state does not hold.
fn encode_state_entry(
    engine: &Engine,
    directory: &HashMap<String, Contacts>,
    id: &str,
) -> Result<Option<Vec<u8>>, DecideError> {
    let Some(account) = engine.store.get(id) else {
        return Ok(None);
    };
    let none = Contacts::default();
    StateEntryRef {
        account,
        wake: engine.wake_of(id),
        contacts: directory.get(id).unwrap_or(&none),
    }
    .encode()
    .map(Some)
}

impl StateEntry {
    /// Encodes an entry.
    pub fn encode(&self) -> Result<Vec<u8>, DecideError> {
        StateEntryRef {
            account: &self.account,
            wake: self.wake,
            contacts: &self.contacts,
        }
        .encode()
    }

    /// Decodes an entry.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecideError> {
        let body = bytes.strip_prefix(&ENTRY_MAGIC[..]).ok_or_else(|| {
            DecideError::Snapshot(format!(
                "state entry: not a layout-{} entry (written by another Tacto version)",
                ENTRY_MAGIC[1]
            ))
        })?;
        postcard::from_bytes(body).map_err(|e| DecideError::Snapshot(format!("state entry: {e}")))
    }
}

/// How often decide, with nothing to fold, tries again to hand writes to a writer whose queue
/// was full.
const HAND_OVER_POLL: Duration = Duration::from_millis(2);

/// The decide service.
pub struct Decide {
    log: Arc<dyn EventLog>,
    policy: Arc<Policy>,
    config: DecideConfig,
    /// Shared state.
    pub state: Arc<DecideState>,
    offsets: Vec<u64>,
    since_snapshot: u64,
    last_snapshot: Instant,
    /// A snapshot being encoded a slice per fold.
    snapshotting: Option<Snapshotting>,
    /// Writes made by folds but not in the log yet, in order (a failed write waits here and is
    /// made again before anything new is folded).
    unwritten: VecDeque<Write>,
}

/// The personal data an account upsert carries (replacing what was known).
fn contacts(e: &Event) -> Option<Contacts> {
    match &e.body {
        EventBody::AccountUpserted(d) => Some(Contacts {
            addresses: d
                .contact_points
                .iter()
                .map(|p| Address {
                    point_id: p.id.clone(),
                    channel: p.channel,
                    address: p.address.clone(),
                })
                .collect(),
            identity: d.identity.clone(),
        }),
        _ => None,
    }
}

/// A decision with the trace context of the event that led to it.
pub struct Output {
    /// The decision.
    pub event: Event,
    /// The W3C `traceparent` to put on its records.
    pub traceparent: Option<String>,
}

impl Output {
    fn untraced(event: Event) -> Self {
        Self {
            event,
            traceparent: None,
        }
    }
}

/// Applies one record: decodes and validates it (a record that fails goes to `dead` with the
/// reason), remembers its addresses, folds it into its account and decides. Both backends
/// process records through this; a snapshot in progress gets the account first.
#[allow(clippy::too_many_arguments)]
fn apply_record(
    state: &DecideState,
    engine: &mut Engine,
    policy: &Policy,
    d: &Delivered,
    now: Timestamp,
    outputs: &mut Vec<Output>,
    dead: &mut Vec<Record>,
    snapshotting: Option<&mut Snapshotting>,
) {
    let span = tracing::info_span!(
        "decide.event",
        partition = d.position.partition,
        offset = d.position.offset
    );
    continue_trace(&span, &d.record.headers);
    let _entered = span.enter();
    // Looked up once: this runs for every event.
    static CONSUMED: std::sync::OnceLock<Counter> = std::sync::OnceLock::new();
    CONSUMED
        .get_or_init(|| {
            metrics::metrics()
                .events_consumed
                .get_or_create(&labels([
                    ("service", "decide"),
                    ("topic", events::EVENTS.name()),
                ]))
                .clone()
        })
        .inc();
    let event = events::from_record(&d.record)
        .map_err(|e| e.to_string())
        .and_then(|e| validate_input(&e).map(|_| e).map_err(|f| f.to_string()));
    match event {
        Ok(e) => {
            if let Some(s) = snapshotting {
                s.before_change(engine, &state.directory, e.account_id.as_str());
            }
            if let Some(a) = contacts(&e)
                && let Ok(mut dir) = state.directory.write()
            {
                dir.insert(e.account_id.0.to_string(), a);
            }
            if let Some(out) = engine.input(&e, now, policy) {
                let tp = traceparent(&span, d.record.header(TRACEPARENT));
                outputs.extend(out.into_iter().map(|event| Output {
                    event,
                    traceparent: tp.clone(),
                }));
            }
        }
        Err(why) => {
            tracing::warn!(
                partition = d.position.partition,
                offset = d.position.offset,
                error = %why,
                "dead letter"
            );
            metrics::metrics()
                .dead_letters
                .get_or_create(&labels([("service", "decide")]))
                .inc();
            dead.push(events::dead_letter(&d.record, &why));
        }
    }
}

/// The records of a step's decisions: every one for the decisions topic, jobs and recalls also
/// for the contacts topic.
fn output_records(outputs: &[Vec<Output>]) -> Result<(Vec<Record>, Vec<Record>), DecideError> {
    let mut decisions = Vec::with_capacity(outputs.iter().map(Vec::len).sum());
    let mut contacts = Vec::new();
    let m = metrics::metrics();
    for Output {
        event: e,
        traceparent,
    } in outputs.iter().flatten()
    {
        let mut r = events::to_record(e).map_err(|err| DecideError::Snapshot(err.to_string()))?;
        if let Some(tp) = traceparent {
            r.headers.push((TRACEPARENT.into(), tp.clone().into()));
        }
        let reason = e
            .body
            .decision_record()
            .filter(|d| !d.reasons.is_empty())
            .map(|d| d.first_code().to_owned())
            .unwrap_or_default();
        m.decisions
            .get_or_create(&vec![
                ("kind", e.body.type_name().to_owned()),
                ("reason", reason),
            ])
            .inc();
        if matches!(
            e.body,
            EventBody::ContactScheduled(_) | EventBody::JobsRecalled { .. }
        ) {
            contacts.push(r.clone());
        }
        decisions.push(r);
    }
    Ok((decisions, contacts))
}

impl Decide {
    /// Restores from the last snapshot (or from the start of the log when there is none).
    pub fn restore(
        log: Arc<dyn EventLog>,
        policy: Arc<Policy>,
        config: DecideConfig,
    ) -> Result<Self, DecideError> {
        let partitions = log.partitions(events::EVENTS.name())? as usize;
        let state = Arc::new(DecideState::default());
        let mut offsets = vec![0; partitions];
        if let Some(bytes) = log.get_blob(SNAPSHOT)? {
            // The version leads the head: read it alone first, so that a snapshot of another
            // layout is named as such rather than failing to decode.
            let (version, _) = postcard::take_from_bytes::<u32>(&bytes)
                .map_err(|e| DecideError::Snapshot(format!("unreadable snapshot: {e}")))?;
            if version != SNAPSHOT_VERSION {
                return Err(DecideError::Snapshot(format!(
                    "the snapshot has layout version {version}, this build reads {SNAPSHOT_VERSION}: \
                     run the Tacto version that wrote it, or start this one on a new data directory"
                )));
            }
            let head: SnapshotHead = postcard::from_bytes(&bytes)
                .map_err(|e| DecideError::Snapshot(format!("unreadable snapshot: {e}")))?;
            if head.offsets.len() != partitions {
                return Err(DecideError::Snapshot(format!(
                    "the snapshot covers {} partitions, the log has {partitions}",
                    head.offsets.len()
                )));
            }
            let mut store = AccountStore::with_capacity(head.accounts as usize);
            let mut wakes = Vec::new();
            let mut directory = HashMap::with_capacity(head.accounts as usize);
            let mut unreadable: Option<DecideError> = None;
            log.scan_blobs(ACCOUNT_PREFIX, &mut |name, value| {
                match StateEntry::decode(value) {
                    Ok(entry) => {
                        let id = entry.account.id.to_string();
                        if let Some(w) = entry.wake {
                            wakes.push((id.clone(), w));
                        }
                        directory.insert(id, entry.contacts);
                        store.insert(entry.account);
                    }
                    Err(e) => {
                        unreadable.get_or_insert(DecideError::Snapshot(format!("{name}: {e}")));
                    }
                }
                Ok(())
            })?;
            if let Some(e) = unreadable {
                return Err(e);
            }
            let n = store.len();
            offsets = head.offsets;
            if let Ok(mut engine) = state.engine.write() {
                *engine = Engine::restore(store, wakes);
            }
            if let Ok(mut dir) = state.directory.write() {
                *dir = directory;
            }
            tracing::info!(accounts = n, ?offsets, "restored from snapshot");
        }
        if let Ok(mut engine) = state.engine.write() {
            // A snapshot writes the accounts changed since the one before.
            engine.track_changes();
        }
        Ok(Self {
            log,
            policy,
            config,
            state,
            offsets,
            since_snapshot: 0,
            last_snapshot: Instant::now(),
            snapshotting: None,
            unwritten: VecDeque::new(),
        })
    }

    /// Folds the tail of the log the snapshot does not cover (steps until nothing is left), so
    /// that the shared state is current before anyone reads it: dispatch's last look must never
    /// judge a job on a state older than the log (a payment acknowledged before a crash would
    /// not stop a queued job). Returns how many events it folded.
    pub fn catch_up(&mut self, now: Timestamp) -> Result<u64, DecideError> {
        let mut folded = 0;
        loop {
            let n = self.step(now)?;
            if n == 0 {
                return Ok(folded);
            }
            folded += n as u64;
        }
    }

    /// Processes what is available now: new events of every partition (a batch each) and due
    /// timers, and writes the outputs (and a snapshot when one is due) before it returns.
    /// Returns how many events it consumed. A write that fails is kept and made again first
    /// by the next call, so no decision is ever skipped.
    pub fn step(&mut self, now: Timestamp) -> Result<usize, DecideError> {
        self.write_unwritten()?;
        let consumed = self.fold(now)?;
        self.write_unwritten()?;
        Ok(consumed)
    }

    /// Makes the writes left by folds, in order; stops at the first that fails (kept).
    fn write_unwritten(&mut self) -> Result<(), DecideError> {
        while let Some(w) = self.unwritten.front() {
            w.write(&*self.log, &self.config.group)?;
            self.unwritten.pop_front();
        }
        Ok(())
    }

    /// Folds what is available now into the state (a batch of every partition, then the due
    /// timers) and queues what must be written: the step's outputs and offsets, and a snapshot
    /// when one is due. Returns how many events it consumed.
    fn fold(&mut self, now: Timestamp) -> Result<usize, DecideError> {
        let mut outputs: Vec<Output> = Vec::new();
        let mut dead: Vec<Record> = Vec::new();
        let mut consumed = 0;
        let mut commits = Vec::new();
        // A read that fails ends the fold, but what the partitions before it folded is still
        // queued for writing: their offsets have moved on in memory.
        let mut unread = None;
        {
            let mut engine = self
                .state
                .engine
                .write()
                .map_err(|_| DecideError::Snapshot("state lock poisoned".into()))?;
            for p in 0..self.offsets.len() {
                let batch = match self.log.read(
                    events::EVENTS.name(),
                    p as u32,
                    self.offsets[p],
                    self.config.batch,
                ) {
                    Ok(batch) => batch,
                    Err(e) => {
                        unread = Some(e);
                        break;
                    }
                };
                for d in &batch {
                    consumed += 1;
                    apply_record(
                        &self.state,
                        &mut engine,
                        &self.policy,
                        d,
                        now,
                        &mut outputs,
                        &mut dead,
                        self.snapshotting.as_mut(),
                    );
                }
                if let Some(last) = batch.last() {
                    self.offsets[p] = last.position.offset + 1;
                    commits.push((p as u32, self.offsets[p]));
                }
                if let Ok(end) = self.log.end_offset(events::EVENTS.name(), p as u32) {
                    metrics::metrics()
                        .consumer_lag
                        .get_or_create(&vec![
                            ("service", self.config.group.clone()),
                            ("topic", events::EVENTS.name().to_owned()),
                            ("partition", p.to_string()),
                        ])
                        .set(end.saturating_sub(self.offsets[p]) as i64);
                }
            }
            let directory = &self.state.directory;
            let mut snapshotting = self.snapshotting.as_mut();
            outputs.extend(
                engine
                    .fire_due_with(now, &self.policy, |engine, id| {
                        if let Some(s) = snapshotting.as_mut() {
                            s.before_change(engine, directory, id);
                        }
                    })
                    .into_iter()
                    .map(Output::untraced),
            );
            if let Some(s) = self.snapshotting.as_mut() {
                // Twice the accounts this fold could have changed: a snapshot keeps ahead of
                // the changes it will have to write next, even under a sustained load.
                let slice = snapshotting::SLICE.max(2 * (consumed + outputs.len()));
                s.encode_slice(&engine, directory, slice);
            }
        }
        self.since_snapshot += consumed as u64 + outputs.len() as u64;
        if !(outputs.is_empty() && dead.is_empty() && commits.is_empty()) {
            let step = Folded {
                outputs: vec![outputs],
                dead,
                commits,
            };
            // Steps the writer has not taken yet become one write.
            match self.unwritten.back_mut() {
                Some(Write::Step(unsent)) => unsent.absorb(step),
                _ => self.unwritten.push_back(Write::Step(step)),
            }
        }
        if let Some(e) = unread {
            return Err(e.into());
        }
        if self
            .snapshotting
            .as_ref()
            .is_some_and(Snapshotting::is_done)
        {
            self.finish_snapshot()?;
        }
        // A snapshot in progress, or still waiting for the writer, covers the state up to its
        // head: the next one begins once it is handed over (and then holds fewer accounts).
        let snapshot_waiting = self.snapshotting.is_some()
            || self
                .unwritten
                .iter()
                .any(|w| matches!(w, Write::Snapshot(_)));
        if self.since_snapshot > 0
            && !snapshot_waiting
            && (self.since_snapshot >= self.config.snapshot_every_events
                || self.last_snapshot.elapsed() >= self.config.snapshot_interval)
        {
            self.begin_snapshot()?;
        }
        Ok(consumed)
    }

    /// Writes a snapshot: the offsets it covers, and every account (with its timer and personal
    /// data) changed since the last snapshot, in one atomic write, after every write before it.
    /// A snapshot in progress is finished first. Returns how many accounts it wrote.
    pub fn snapshot(&mut self) -> Result<usize, DecideError> {
        self.write_unwritten()?;
        if self.snapshotting.is_some() {
            self.finish_snapshot()?;
        }
        self.begin_snapshot()?;
        let written = self.finish_snapshot()?;
        self.write_unwritten()?;
        Ok(written)
    }

    /// Whether a snapshot is being encoded (a slice per fold) and not yet queued for writing.
    pub fn snapshot_in_progress(&self) -> bool {
        self.snapshotting.is_some()
    }

    /// Begins a snapshot of the state as it is now: the head (offsets) and the accounts
    /// changed since the previous one, which are no longer marked changed. The accounts are
    /// encoded a slice per fold from here on (see [`snapshotting`]).
    fn begin_snapshot(&mut self) -> Result<(), DecideError> {
        let poisoned = || DecideError::Snapshot("state lock poisoned".into());
        let mut engine = self.state.engine.write().map_err(|_| poisoned())?;
        let accounts = engine.store.len();
        let head = postcard::to_allocvec(&SnapshotHead {
            version: SNAPSHOT_VERSION,
            offsets: self.offsets.clone(),
            accounts: accounts as u64,
        })
        .map_err(|e| DecideError::Snapshot(e.to_string()))?;
        self.snapshotting = Some(Snapshotting::begin(engine.take_changed(), head, accounts));
        self.since_snapshot = 0;
        self.last_snapshot = Instant::now();
        Ok(())
    }

    /// Encodes what the snapshot in progress still owes and queues it for writing, after the
    /// writes before it. Returns how many accounts it holds.
    fn finish_snapshot(&mut self) -> Result<usize, DecideError> {
        let Some(snapshotting) = self.snapshotting.take() else {
            return Ok(0);
        };
        let poisoned = || DecideError::Snapshot("state lock poisoned".into());
        let finished = {
            let engine = self.state.engine.read().map_err(|_| poisoned())?;
            snapshotting.finish(&engine, &self.state.directory)
        };
        match finished {
            Ok(snapshot) => {
                let written = snapshot.entries.len();
                self.unwritten.push_back(Write::Snapshot(snapshot));
                Ok(written)
            }
            Err((e, taken)) => {
                // Not encoded: these accounts still differ from the last snapshot.
                if let Ok(mut engine) = self.state.engine.write() {
                    engine.mark_changed(taken);
                }
                Err(e)
            }
        }
    }

    /// Hands the unwritten writes to `writer`, in order. While its queue is full the rest stay
    /// here (and the next folds' steps join them into one write), so folding goes on while a
    /// long write (a snapshot's sync to disk) is made; it waits for the writer only when more
    /// than [`writer::MAX_UNSENT`] records are unsent.
    fn hand_over(&mut self, writer: &Writer) -> Result<(), DecideError> {
        let unsent: usize = self
            .unwritten
            .iter()
            .map(|w| match w {
                Write::Step(step) => step.records(),
                Write::Snapshot(_) => 0,
            })
            .sum();
        let wait = unsent > writer::MAX_UNSENT;
        while let Some(w) = self.unwritten.pop_front() {
            if wait {
                writer.send(w)?;
            } else if let Some(w) = writer.try_send(w)? {
                self.unwritten.push_front(w);
                break;
            }
        }
        Ok(())
    }

    /// Runs until `shutdown` turns true, then writes a last snapshot. Folding and writing
    /// overlap: a writer thread appends each step's outputs (and the snapshots) in order while
    /// the next steps fold (see [`Decide::hand_over`]).
    pub async fn run(
        mut self,
        clock: fn() -> Timestamp,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), DecideError> {
        let mut changes = self.log.changes();
        let writer = Writer::spawn(self.log.clone(), self.config.group.clone())?;
        self.state.ready.store(true, Ordering::Release);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let folded = tokio::task::block_in_place(|| {
                let consumed = self.fold(clock())?;
                self.hand_over(&writer)?;
                Ok::<_, DecideError>(consumed)
            });
            let consumed = match folded {
                Ok(n) => n,
                Err(e @ DecideError::WriterStopped(_)) => return Err(e),
                Err(e) => {
                    tracing::error!(error = %e, "decide step failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            if consumed > 0 {
                continue;
            }
            if self.snapshotting.is_some() {
                // Nothing to fold: encode the snapshot's next slice at once.
                tokio::task::yield_now().await;
                continue;
            }
            let mut next = self.state.until_next_timer(clock(), Duration::from_secs(1));
            if !self.unwritten.is_empty() {
                // The writer's queue is full: hand the rest over once it has taken a write.
                next = next.min(HAND_OVER_POLL);
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(next) => {}
                _ = shutdown.changed() => {}
            }
        }
        tokio::task::block_in_place(|| {
            writer.finish()?;
            self.snapshot().map(|_| ())
        })
    }
}
