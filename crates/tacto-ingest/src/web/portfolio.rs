//! Counts for the console's portfolio view, folded from the log: contacts per channel per day,
//! deferrals and suppressions by reason, promises and plans made, kept and broken, recalls and
//! how long the adapters took to confirm them, provider errors. [`Counts::apply`] is a pure
//! fold of events; [`Portfolio`] follows the log's events and decisions topics in the
//! background (started by the first look at the portfolio page).

use chrono::NaiveDate;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tacto_log::{EventLog, events};
use tacto_model::{Channel, Event, EventBody, OutcomeStatus};

/// Days of counts kept.
pub const DAYS_KEPT: usize = 90;
/// Recall confirmations kept for the latency figures.
pub const RECALLS_KEPT: usize = 10_000;

/// One UTC day's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Day {
    /// Jobs scheduled, by channel.
    pub contacts: BTreeMap<Channel, u64>,
    /// Deferrals by first reason code.
    pub deferrals: BTreeMap<String, u64>,
    /// Suppressions by first reason code.
    pub suppressions: BTreeMap<String, u64>,
    /// Jobs recalled.
    pub recalled: u64,
    /// Promises (and plans) made.
    pub promises_made: u64,
    /// Promises (and plan instalments) kept.
    pub promises_kept: u64,
    /// Promises (and plan instalments) broken.
    pub promises_broken: u64,
    /// Payments received.
    pub payments: u64,
    /// Disputes opened.
    pub disputes: u64,
    /// Opt-outs.
    pub opt_outs: u64,
    /// Failed deliveries reported by providers, by channel.
    pub provider_errors: BTreeMap<Channel, u64>,
}

/// The portfolio's counts.
#[derive(Debug, Default)]
pub struct Counts {
    /// Per UTC day, the last [`DAYS_KEPT`].
    pub days: BTreeMap<NaiveDate, Day>,
    accounts: HashSet<u64>,
    /// Recalled jobs not yet confirmed by dispatch: when the recall was decided (micros).
    pending: HashMap<String, i64>,
    /// Confirmations read before their recall (the two come from different topics): when.
    early: HashMap<String, i64>,
    /// Recall-to-confirmation times, milliseconds, the last [`RECALLS_KEPT`].
    pub recall_ms: VecDeque<u64>,
}

impl Counts {
    /// Accounts seen (distinct ids of account upserts).
    pub fn accounts(&self) -> usize {
        self.accounts.len()
    }

    /// Folds one event or decision in.
    pub fn apply(&mut self, e: &Event) {
        let at = e.occurred_at.as_micros();
        let date = e.occurred_at.to_datetime().date_naive();
        let day = self.days.entry(date).or_default();
        match &e.body {
            EventBody::AccountUpserted(_) => {
                self.accounts
                    .insert(xxhash_rust::xxh3::xxh3_64(e.account_id.as_str().as_bytes()));
            }
            EventBody::PaymentReceived { .. } => day.payments += 1,
            EventBody::PromiseMade { .. } | EventBody::PlanMade { .. } => day.promises_made += 1,
            EventBody::PromiseKept { .. } => day.promises_kept += 1,
            EventBody::PromiseBroken { .. } => day.promises_broken += 1,
            EventBody::DisputeOpened { .. } => day.disputes += 1,
            EventBody::OptedOut { .. } => day.opt_outs += 1,
            EventBody::ContactScheduled(j) => *day.contacts.entry(j.channel).or_default() += 1,
            EventBody::ContactDeferred { decision, .. } => {
                *day.deferrals
                    .entry(decision.first_code().to_owned())
                    .or_default() += 1
            }
            EventBody::ContactSuppressed { decision, .. } => {
                *day.suppressions
                    .entry(decision.first_code().to_owned())
                    .or_default() += 1
            }
            EventBody::JobsRecalled { job_ids, .. } => {
                day.recalled += job_ids.len() as u64;
                for j in job_ids {
                    match self.early.remove(j.as_str()) {
                        Some(confirmed) => self.sample(confirmed - at),
                        None => {
                            self.pending.insert(j.0.to_string(), at);
                        }
                    }
                }
            }
            EventBody::ContactOutcome {
                job_id,
                channel,
                status,
                ..
            } => {
                if *status == OutcomeStatus::Failed {
                    *day.provider_errors.entry(*channel).or_default() += 1;
                }
                if let Some(j) = job_id
                    && *status == OutcomeStatus::NotSent
                {
                    match self.pending.remove(j.as_str()) {
                        Some(recalled) => self.sample(at - recalled),
                        None => {
                            self.early.insert(j.0.to_string(), at);
                        }
                    }
                }
            }
            _ => {}
        }
        while self.days.len() > DAYS_KEPT {
            self.days.pop_first();
        }
        if self.pending.len() + self.early.len() > 100_000 {
            // Recalls never confirmed (an adapter that lost them), and jobs that expired unsent
            // without a recall, stop counting after a day.
            self.pending.retain(|_, t| at - *t < 86_400_000_000);
            self.early.retain(|_, t| at - *t < 86_400_000_000);
        }
    }

    fn sample(&mut self, micros: i64) {
        if self.recall_ms.len() == RECALLS_KEPT {
            self.recall_ms.pop_front();
        }
        self.recall_ms
            .push_back(u64::try_from(micros.max(0) / 1_000).unwrap_or(0));
    }

    /// The recall confirmation time at quantile `q` (0–1), milliseconds.
    pub fn recall_quantile(&self, q: f64) -> Option<u64> {
        if self.recall_ms.is_empty() {
            return None;
        }
        let mut v: Vec<u64> = self.recall_ms.iter().copied().collect();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * q.clamp(0.0, 1.0)).round() as usize;
        v.get(i).copied()
    }
}

/// The counts, kept current by a background reader of the log.
#[derive(Default)]
pub struct Portfolio {
    /// The counts so far.
    pub counts: Mutex<Counts>,
    started: AtomicBool,
    /// Records read so far.
    pub read: AtomicU64,
    /// Whether the reader has reached the end of the log once.
    pub caught_up: AtomicBool,
}

impl Portfolio {
    /// Starts following `log` (once; later calls do nothing).
    pub fn follow(self: &Arc<Self>, log: Arc<dyn EventLog>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut changes = log.changes();
            let mut next: HashMap<(&'static str, u32), u64> = HashMap::new();
            loop {
                let l = log.clone();
                let positions = next.clone();
                let step = tokio::task::spawn_blocking(move || read_step(&*l, positions)).await;
                let (batch, positions) = match step {
                    Ok(Ok(x)) => x,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "portfolio counts: cannot read the log; retrying");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "portfolio counts: reader failed");
                        return;
                    }
                };
                next = positions;
                if batch.is_empty() {
                    me.caught_up.store(true, Ordering::Release);
                    let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
                    continue;
                }
                me.read.fetch_add(batch.len() as u64, Ordering::Relaxed);
                if let Ok(mut c) = me.counts.lock() {
                    for e in &batch {
                        c.apply(e);
                    }
                }
            }
        });
    }
}

/// Reads the next records of every partition of the events and decisions topics.
#[allow(clippy::type_complexity)]
fn read_step(
    log: &dyn EventLog,
    mut next: HashMap<(&'static str, u32), u64>,
) -> Result<(Vec<Event>, HashMap<(&'static str, u32), u64>), tacto_log::LogError> {
    let mut out = Vec::new();
    for topic in [events::EVENTS.name(), events::DECISIONS.name()] {
        for p in 0..log.partitions(topic)? {
            let from = next.get(&(topic, p)).copied().unwrap_or(0);
            let batch = log.read(topic, p, from, 4096)?;
            if let Some(last) = batch.last() {
                next.insert((topic, p), last.position.offset + 1);
            }
            out.extend(
                batch
                    .iter()
                    .filter_map(|d| events::from_record(&d.record).ok()),
            );
        }
    }
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tacto_model::{DecisionRecord, JobId, Timestamp, samples};

    #[test]
    fn counts_fold_contacts_reasons_promises_and_recall_times() {
        let mut c = Counts::default();
        for e in samples::sample_events() {
            c.apply(&e);
        }
        let day = c.days.values().last().expect("a day");
        assert_eq!(day.contacts.get(&Channel::Sms), Some(&1));
        assert_eq!(day.deferrals.get("quiet_hours"), Some(&1));
        assert_eq!(
            (day.promises_made, day.promises_kept, day.promises_broken),
            (2, 1, 1)
        );
        assert_eq!(c.accounts(), 1);
        // A recall confirmed 250 ms later.
        let recalled = Event {
            id: tacto_model::EventId("r".into()),
            occurred_at: Timestamp::from_micros(1_000_000),
            account_id: tacto_model::AccountId("A".into()),
            source: "decide".into(),
            body: EventBody::JobsRecalled {
                job_ids: vec![JobId("A:c0:d0.0:a0".into())],
                decision: DecisionRecord {
                    policy_version: "t".into(),
                    reasons: Vec::new(),
                },
            },
        };
        c.apply(&recalled);
        let mut confirmed = recalled.clone();
        confirmed.occurred_at = Timestamp::from_micros(1_250_000);
        confirmed.body = EventBody::ContactOutcome {
            job_id: Some(JobId("A:c0:d0.0:a0".into())),
            channel: Channel::Sms,
            status: OutcomeStatus::NotSent,
            conversation: false,
            inbound: false,
        };
        c.apply(&confirmed);
        assert_eq!(c.recall_quantile(0.5), Some(250));
        // Read in the other order (another topic first): the same figure.
        let mut other = Counts::default();
        other.apply(&confirmed);
        other.apply(&recalled);
        assert_eq!(other.recall_quantile(0.5), Some(250));
    }
}
