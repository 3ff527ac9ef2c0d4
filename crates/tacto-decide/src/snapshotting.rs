//! A snapshot encoded a slice at a time between folds, as of the moment it began.
//!
//! Encoding every account changed since the previous snapshot in one go stops the folds for
//! as long as it takes (about 100 ms for 50,000 accounts, the default interval), and payments
//! acknowledged meanwhile wait that long to be folded. Instead a snapshot takes the changed
//! set and the offsets when it begins, then encodes a slice of accounts per fold (at least
//! [`SLICE`], twice as many as the fold took events); an account the fold is about to change
//! (an event or a timer for it) is encoded first, before the change. Every entry is therefore
//! the account as it was when the snapshot began, which is what its head's offsets say: a
//! restore replays exactly the events after them.

use crate::writer::EncodedSnapshot;
use crate::{ACCOUNT_PREFIX, Contacts, DecideError, encode_state_entry};
use compact_str::CompactString;
use std::collections::HashMap;
use std::sync::RwLock;
use tacto_policy::engine::Engine;

/// The fewest accounts encoded per fold while a snapshot is in progress (about 3 ms of
/// encoding); a fold that took more events encodes twice as many accounts as it took.
pub(crate) const SLICE: usize = 1_024;

/// The personal data of every account, as decide keeps it.
type Directory = RwLock<HashMap<String, Contacts>>;

/// A snapshot in progress.
pub(crate) struct Snapshotting {
    /// The encoded head: the offsets the entries are as of.
    head: Vec<u8>,
    /// Accounts in the state when it began.
    accounts: usize,
    /// The accounts changed before it began, in key order: the slices take them in this order,
    /// and a binary search finds one the fold is about to change.
    order: Vec<CompactString>,
    /// Which of `order` are encoded.
    encoded: Vec<bool>,
    /// How many of `order` are not encoded yet.
    left: usize,
    /// Where the next slice starts in `order`.
    next: usize,
    /// The entries encoded so far.
    entries: Vec<(String, Vec<u8>)>,
    /// The first error met encoding an entry: the snapshot is then given up.
    failed: Option<DecideError>,
}

/// An account's snapshot entry, named.
fn encode_entry(
    engine: &Engine,
    directory: &HashMap<String, Contacts>,
    id: &str,
) -> Result<Option<(String, Vec<u8>)>, DecideError> {
    Ok(encode_state_entry(engine, directory, id)?
        .map(|bytes| (format!("{ACCOUNT_PREFIX}{id}"), bytes)))
}

fn poisoned() -> DecideError {
    DecideError::Snapshot("state lock poisoned".into())
}

impl Snapshotting {
    /// Begins a snapshot of `changed` (the accounts changed since the previous one) as of
    /// `head`.
    pub(crate) fn begin(mut changed: Vec<CompactString>, head: Vec<u8>, accounts: usize) -> Self {
        // In key order: the entries then go into the store's B-tree one leaf after another.
        changed.sort_unstable();
        Self {
            head,
            accounts,
            encoded: vec![false; changed.len()],
            left: changed.len(),
            entries: Vec::with_capacity(changed.len()),
            order: changed,
            next: 0,
            failed: None,
        }
    }

    /// Whether every account is encoded (or the snapshot failed).
    pub(crate) fn is_done(&self) -> bool {
        self.left == 0 || self.failed.is_some()
    }

    /// Encodes `id` now if the snapshot still owes it: call before the fold changes it.
    pub(crate) fn before_change(&mut self, engine: &Engine, directory: &Directory, id: &str) {
        if self.failed.is_some() {
            return;
        }
        let Ok(i) = self.order.binary_search_by(|x| x.as_str().cmp(id)) else {
            return; // not changed before the snapshot began
        };
        if !self.take(i) {
            return; // encoded already
        }
        let encoded = directory
            .read()
            .map_err(|_| poisoned())
            .and_then(|dir| encode_entry(engine, &dir, id));
        self.keep(encoded);
    }

    /// Encodes up to `n` more accounts (from where the previous slice stopped).
    pub(crate) fn encode_slice(&mut self, engine: &Engine, directory: &Directory, n: usize) {
        if self.is_done() {
            return;
        }
        let dir = match directory.read() {
            Ok(dir) => dir,
            Err(_) => {
                self.failed = Some(poisoned());
                return;
            }
        };
        let mut encoded = 0;
        while encoded < n && self.next < self.order.len() {
            let i = self.next;
            self.next += 1;
            if !self.take(i) {
                continue; // encoded before a change
            }
            encoded += 1;
            let entry = encode_entry(engine, &dir, &self.order[i]);
            if let Err(e) = entry {
                self.failed = Some(e);
                return;
            }
            if let Ok(Some(entry)) = entry {
                self.entries.push(entry);
            }
        }
    }

    /// Marks `order[i]` encoded; false if it already was.
    fn take(&mut self, i: usize) -> bool {
        if self.encoded[i] {
            return false;
        }
        self.encoded[i] = true;
        self.left -= 1;
        true
    }

    fn keep(&mut self, encoded: Result<Option<(String, Vec<u8>)>, DecideError>) {
        match encoded {
            Ok(Some(entry)) => self.entries.push(entry),
            Ok(None) => {}
            Err(e) => self.failed = Some(e),
        }
    }

    /// The finished snapshot, or the error that stopped it together with every account it
    /// took (they still differ from the last snapshot written: mark them changed again).
    pub(crate) fn finish(
        mut self,
        engine: &Engine,
        directory: &Directory,
    ) -> Result<EncodedSnapshot, (DecideError, Vec<CompactString>)> {
        self.encode_slice(engine, directory, usize::MAX);
        match self.failed {
            Some(e) => Err((e, self.order)),
            None => Ok(EncodedSnapshot {
                entries: self.entries,
                head: self.head,
                accounts: self.accounts,
            }),
        }
    }
}
