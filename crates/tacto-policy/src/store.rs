//! Every account's state in memory, keyed by account id.
//!
//! A `hashbrown::HashTable` of boxed accounts, hashed by the id the account already holds: the
//! table costs one pointer per slot and the id is stored once. This is what a decide instance
//! keeps for its partitions.

use crate::account::Account;
use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;
use std::hash::BuildHasher;
use tacto_model::AccountId;

/// Accounts by id.
#[derive(Default)]
pub struct AccountStore {
    table: HashTable<Box<Account>>,
    hasher: DefaultHashBuilder,
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
            .or_insert_with(|| Box::new(Account::new(AccountId(id.to_owned()))))
            .into_mut()
    }

    /// Puts an account in, replacing one with the same id.
    pub fn insert(&mut self, account: Account) {
        let h = self.hash(&account.id);
        let hasher = &self.hasher;
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
    }
}
