//! Identifier newtypes, so an account id can never be passed where a job id is wanted.
//!
//! An id of up to 24 bytes is kept inline ([`CompactString`]): most ids cost no allocation.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $name(pub CompactString);

        impl $name {
            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.into())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s.into())
            }
        }
    };
}

id_type!(
    /// Unique id of an event; producers choose it, duplicates are ignored.
    EventId
);
id_type!(
    /// The account (one customer relationship, possibly several debts); the partition key.
    AccountId
);
id_type!(
    /// The person behind an account (a debtor may hold several accounts).
    PersonId
);
id_type!(
    /// One debt inside an account.
    DebtId
);
id_type!(
    /// A contact job; derived deterministically from the account's history.
    JobId
);
