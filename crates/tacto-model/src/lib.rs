//! Tacto's event model.
//!
//! Every fact that enters Tacto and every decision it takes is an [`Event`]: an id, an instant,
//! the account it is about and a typed [`EventBody`]. The same types serialise to JSON (the HTTP
//! API, `tacto simulate` files) and to Avro (the log; schema in `schemas/event.avsc`).
//! This crate does no IO.

pub mod avro;
pub mod display;
pub mod event;
pub mod ids;
pub mod samples;
pub mod synthetic;
pub mod time;
pub mod validate;

pub use event::*;
pub use ids::*;
pub use time::{Date, Timestamp};
