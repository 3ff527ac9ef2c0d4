//! Tacto's observability, shared by every service.
//!
//! - [`metrics`]: the Prometheus metrics (events consumed, consumer lag, decisions by kind and
//!   reason, jobs by channel and status, provider latency, rate-limit waits) and their text
//!   exposition for `/metrics`.
//! - [`trace`]: logging through `tracing`, OpenTelemetry export over OTLP/HTTP when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and the W3C `traceparent` carried in record headers
//!   so that one trace spans ingest → decide → dispatch.

pub mod metrics;
pub mod trace;

pub use metrics::metrics;
pub use trace::{Telemetry, init};
