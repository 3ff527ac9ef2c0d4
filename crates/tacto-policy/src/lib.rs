//! Tacto's decision core: pure, deterministic and free of IO.
//!
//! - [`Account`] is `fold(events)`; applying an event twice changes nothing.
//! - [`decide`] looks at an account at an instant under a [`Policy`] and returns output events
//!   (jobs, deferrals, suppressions, recalls, tasks, promise verdicts) with reasons, and when to
//!   look again. [`settle`] decides and applies until the account is quiet.
//! - [`last_look`] re-checks a job right before it is sent.
//! - Jurisdiction packs ([`pack`]) and the tenant policy ([`policy`]) are data files.
//!
//! Time is always an argument: the same code serves the services, replays and simulations.

pub mod account;
pub mod audit;
pub mod channels;
pub mod decide;
pub mod engine;
pub mod holidays;
pub mod ledger;
pub mod pack;
pub mod policy;
pub mod pressure;
pub mod self_service;
pub mod sim;
pub mod store;
pub mod window;
pub mod zones;

pub use account::Account;
pub use decide::{Decision, decide, last_look, settle};
pub use policy::{Policy, PolicyError};
