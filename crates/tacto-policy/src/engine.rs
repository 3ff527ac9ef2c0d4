//! The decision engine around the pure core: every account's state, and the timers that wake
//! accounts up (a deferral's `until`, a promise's deadline, a job's `not_after`). The decide
//! service runs it on the wall clock; the simulator runs it on event time. Time is always passed
//! in.

use crate::decide::settle;
use crate::policy::Policy;
use crate::store::AccountStore;
use compact_str::CompactString;
use hashbrown::{HashMap, HashSet};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use tacto_model::{Event, Timestamp};

/// Accounts and their timers.
#[derive(Default)]
pub struct Engine {
    /// Every account's state.
    pub store: AccountStore,
    timers: BinaryHeap<Reverse<(Timestamp, CompactString)>>,
    wakes: HashMap<CompactString, Timestamp>,
    /// Accounts changed since the last [`Engine::take_changed`], when tracked.
    changed: Option<HashSet<CompactString>>,
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

    /// Starts remembering which accounts change (for a changelog of account states).
    pub fn track_changes(&mut self) {
        self.changed.get_or_insert_with(HashSet::new);
    }

    /// The accounts changed since the last call (empty when changes are not tracked).
    pub fn take_changed(&mut self) -> Vec<CompactString> {
        self.changed
            .as_mut()
            .map(|c| c.drain().collect())
            .unwrap_or_default()
    }

    /// Marks accounts changed again (a snapshot that took them failed to write).
    pub fn mark_changed(&mut self, ids: impl IntoIterator<Item = CompactString>) {
        if let Some(c) = self.changed.as_mut() {
            c.extend(ids);
        }
    }

    fn touch(&mut self, id: &str) {
        if let Some(c) = self.changed.as_mut()
            && !c.contains(id)
        {
            c.insert(CompactString::from(id));
        }
    }

    /// An account's pending wake-up.
    pub fn wake_of(&self, id: &str) -> Option<Timestamp> {
        self.wakes.get(id).copied()
    }

    /// Puts in a restored account and its wake-up (replacing the same account).
    pub fn insert(&mut self, account: crate::Account, wake: Option<Timestamp>) {
        let id = CompactString::from(account.id.as_str());
        self.store.insert(account);
        self.schedule(id, wake);
    }

    /// Keeps only the accounts (and their timers) `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.store.retain(|a| keep(a.id.as_str()));
        self.wakes.retain(|id, _| keep(id));
        self.timers.retain(|Reverse((_, id))| keep(id));
        if let Some(c) = self.changed.as_mut() {
            c.retain(|id| keep(id));
        }
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
        self.touch(e.account_id.as_str());
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
        self.fire_next_with(floor, policy, &mut |_, _| {})
    }

    /// [`Engine::fire_next`], calling `before` with the engine and the account's id just before
    /// the timer changes the account (decide encodes an account a snapshot still owes first).
    fn fire_next_with(
        &mut self,
        floor: Timestamp,
        policy: &Policy,
        before: &mut dyn FnMut(&Engine, &str),
    ) -> Option<Vec<Event>> {
        let Reverse((w, id)) = self.timers.pop()?;
        if self.wakes.get(&id) != Some(&w) {
            return Some(Vec::new()); // superseded by a later schedule
        }
        before(self, &id);
        self.wakes.remove(&id);
        let now = w.max(floor);
        let account = self.store.get_or_create(&id);
        let d = settle(account, now, policy);
        self.touch(&id);
        self.schedule(id, d.next_wake);
        Some(d.events)
    }

    /// Fires every timer due at or before `now` (deciding at `now`); returns the decisions.
    pub fn fire_due(&mut self, now: Timestamp, policy: &Policy) -> Vec<Event> {
        self.fire_due_with(now, policy, |_, _| {})
    }

    /// [`Engine::fire_due`], calling `before` with the engine and an account's id just before a
    /// timer changes that account.
    pub fn fire_due_with(
        &mut self,
        now: Timestamp,
        policy: &Policy,
        mut before: impl FnMut(&Engine, &str),
    ) -> Vec<Event> {
        let mut out = Vec::new();
        while self.peek().is_some_and(|w| w <= now) {
            if let Some(events) = self.fire_next_with(now, policy, &mut before) {
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
