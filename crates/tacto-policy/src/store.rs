//! Every account's state in memory, keyed by account id.
//!
//! A `hashbrown::HashTable` of boxed accounts, hashed by the id the account already holds: the
//! table costs one pointer per slot and the id is stored once. This is what a decide instance
//! keeps for its partitions. Profile parts that many accounts share (currency, product,
//! language, jurisdiction, zones) are kept once.

use crate::account::{Account, Place};
use hashbrown::{DefaultHashBuilder, HashSet, HashTable};
use std::hash::BuildHasher;
use std::sync::Arc;
use tacto_model::{AccountId, Event};

/// Accounts by id.
#[derive(Default)]
pub struct AccountStore {
    table: HashTable<Box<Account>>,
    hasher: DefaultHashBuilder,
    places: HashSet<Arc<Place>>,
}

impl AccountStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with room for `n` accounts.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            table: HashTable::with_capacity(n),
            hasher: DefaultHashBuilder::default(),
            places: HashSet::new(),
        }
    }

    fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    /// The account, if known.
    pub fn get(&self, id: &str) -> Option<&Account> {
        let h = self.hash(id);
        self.table.find(h, |a| a.id == id).map(|b| &**b)
    }

    /// The account, created empty when unknown.
    pub fn get_or_create(&mut self, id: &str) -> &mut Account {
        let h = self.hash(id);
        let hasher = &self.hasher;
        let entry = self
            .table
            .entry(h, |a| a.id == id, |a| hasher.hash_one(a.id.as_str()));
        entry
            .or_insert_with(|| Box::new(Account::new(AccountId(id.into()))))
            .into_mut()
    }

    /// Applies an event to its account (creating it), sharing profile parts between accounts.
    /// Returns whether the event changed anything (see [`Account::apply`]).
    pub fn apply(&mut self, e: &Event) -> bool {
        self.apply_then(e).0
    }

    /// [`AccountStore::apply`], also handing back the account (one lookup for both).
    pub fn apply_then(&mut self, e: &Event) -> (bool, &mut Account) {
        let id = e.account_id.as_str();
        let h = self.hash(id);
        let hasher = &self.hasher;
        let account = self
            .table
            .entry(h, |a| a.id == id, |a| hasher.hash_one(a.id.as_str()))
            .or_insert_with(|| Box::new(Account::new(AccountId(id.into()))))
            .into_mut();
        let applied = account.apply(e);
        if applied && matches!(e.body, tacto_model::EventBody::AccountUpserted(_)) {
            share_place(&mut self.places, account);
        }
        (applied, account)
    }

    /// Puts an account in, replacing one with the same id.
    pub fn insert(&mut self, account: Account) {
        let h = self.hash(&account.id);
        let hasher = &self.hasher;
        let id = account.id.clone();
        match self.table.entry(
            h,
            |a| a.id == account.id,
            |a| hasher.hash_one(a.id.as_str()),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => **o.get_mut() = account,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(Box::new(account));
            }
        }
        let h = self.hash(&id);
        if let Some(a) = self.table.find_mut(h, |a| a.id == id) {
            share_place(&mut self.places, a);
        }
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Every account, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Account> {
        self.table.iter().map(|b| &**b)
    }

    /// Keeps only the accounts `keep` says yes to (a decide instance dropping the accounts of
    /// partitions it no longer owns).
    pub fn retain(&mut self, mut keep: impl FnMut(&Account) -> bool) {
        self.table.retain(|a| keep(a));
    }
}

/// Points the account's profile at the one shared copy of its place.
fn share_place(places: &mut HashSet<Arc<Place>>, account: &mut Account) {
    let Some(profile) = account.profile.as_mut() else {
        return;
    };
    match places.get(&profile.place) {
        Some(shared) => profile.place = shared.clone(),
        None => {
            places.insert(profile.place.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_found_by_id() {
        let mut s = AccountStore::new();
        s.get_or_create("a").balance_minor = 5;
        s.get_or_create("b");
        assert_eq!(s.get("a").map(|a| a.balance_minor), Some(5));
        assert_eq!(s.len(), 2);
        let mut c = Account::new(AccountId("a".into()));
        c.balance_minor = 9;
        s.insert(c);
        assert_eq!(s.len(), 2);
        assert_eq!(s.get("a").map(|a| a.balance_minor), Some(9));
        assert!(s.get("zz").is_none());
        s.retain(|a| a.id != "a");
        assert!(s.get("a").is_none());
        assert_eq!(s.len(), 1);
    }
}
