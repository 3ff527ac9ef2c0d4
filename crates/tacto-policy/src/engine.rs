//! The decision engine around the pure core: every account's state, and the timers that wake
//! accounts up (a deferral's `until`, a promise's deadline, a job's `not_after`). The decide
//! service runs it on the wall clock; the simulator runs it on event time. Time is always passed
//! in.

use crate::decide::settle;
use crate::policy::Policy;
use crate::store::AccountStore;
use compact_str::CompactString;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use tacto_model::{Event, Timestamp};

/// Accounts and their timers.
#[derive(Default)]
pub struct Engine {
    /// Every account's state.
    pub store: AccountStore,
    timers: BinaryHeap<Reverse<(Timestamp, CompactString)>>,
    wakes: HashMap<CompactString, Timestamp>,
}

impl Engine {
    /// An engine with no accounts.
    pub fn new() -> Self {
        Self::default()
    }

    /// An engine over restored accounts and their wake-up times.
    pub fn restore(
        store: AccountStore,
        wakes: impl IntoIterator<Item = (String, Timestamp)>,
    ) -> Self {
        let mut e = Self {
            store,
            ..Self::default()
        };
        for (id, at) in wakes {
            e.schedule(CompactString::from(id), Some(at));
        }
        e
    }

    fn schedule(&mut self, id: CompactString, wake: Option<Timestamp>) {
        match wake {
            Some(w) => {
                if self.wakes.insert(id.clone(), w) != Some(w) {
                    self.timers.push(Reverse((w, id)));
                }
            }
            None => {
                self.wakes.remove(&id);
            }
        }
    }

    /// Applies an input event at `now` and decides; returns the decisions, or `None` for a
    /// duplicate (nothing changed).
    pub fn input(&mut self, e: &Event, now: Timestamp, policy: &Policy) -> Option<Vec<Event>> {
        let (applied, account) = self.store.apply_then(e);
        if !applied {
            return None;
        }
        let d = settle(account, now, policy);
        self.schedule(CompactString::from(e.account_id.as_str()), d.next_wake);
        Some(d.events)
    }

    /// The earliest pending wake-up (possibly one that was since replaced: firing it is
    /// harmless).
    pub fn peek(&self) -> Option<Timestamp> {
        self.timers.peek().map(|Reverse((w, _))| *w)
    }

    /// Fires the earliest timer, deciding at its own time (or `floor` if later); returns the
    /// decisions, or `None` when no timer is pending.
    pub fn fire_next(&mut self, floor: Timestamp, policy: &Policy) -> Option<Vec<Event>> {
        let Reverse((w, id)) = self.timers.pop()?;
        if self.wakes.get(&id) != Some(&w) {
            return Some(Vec::new()); // superseded by a later schedule
        }
        self.wakes.remove(&id);
        let now = w.max(floor);
        let account = self.store.get_or_create(&id);
        let d = settle(account, now, policy);
        self.schedule(id, d.next_wake);
        Some(d.events)
    }

    /// Fires every timer due at or before `now` (deciding at `now`); returns the decisions.
    pub fn fire_due(&mut self, now: Timestamp, policy: &Policy) -> Vec<Event> {
        let mut out = Vec::new();
        while self.peek().is_some_and(|w| w <= now) {
            if let Some(events) = self.fire_next(now, policy) {
                out.extend(events);
            }
        }
        out
    }

    /// Every pending wake-up, for snapshots.
    pub fn wakes(&self) -> Vec<(String, Timestamp)> {
        self.wakes
            .iter()
            .map(|(id, w)| (id.to_string(), *w))
            .collect()
    }
}
