//! Prometheus metrics (`prometheus-client`), one registry per process.

use prometheus_client::encoding::text::encode;
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

/// Labels as `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 1 ms … ~32 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric Tacto exports.
pub struct Metrics {
    registry: Registry,
    /// Records consumed, by service and topic.
    pub events_consumed: Family<Labels, Counter>,
    /// Records not yet consumed, by service, topic and partition.
    pub consumer_lag: Family<Labels, Gauge>,
    /// Decisions made, by kind and first reason.
    pub decisions: Family<Labels, Counter>,
    /// Jobs finished at dispatch, by channel and status.
    pub jobs: Family<Labels, Counter>,
    /// Provider call latency, seconds, by channel.
    pub provider_latency: Histograms,
    /// Time jobs waited for their channel's rate limit, seconds, by channel.
    pub rate_limit_wait: Histograms,
    /// Requests taken in at ingest, by kind and status.
    pub ingested: Family<Labels, Counter>,
    /// Records sent to the dead-letter topic, by service.
    pub dead_letters: Family<Labels, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("tacto");
        let m = Self {
            events_consumed: Family::default(),
            consumer_lag: Family::default(),
            decisions: Family::default(),
            jobs: Family::default(),
            provider_latency: Family::new_with_constructor(seconds_histogram),
            rate_limit_wait: Family::new_with_constructor(seconds_histogram),
            ingested: Family::default(),
            dead_letters: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "events_consumed",
            "Records consumed, by service and topic",
            m.events_consumed.clone(),
        );
        registry.register(
            "consumer_lag",
            "Records not yet consumed, by service, topic and partition",
            m.consumer_lag.clone(),
        );
        registry.register(
            "decisions",
            "Decisions made, by kind and first reason",
            m.decisions.clone(),
        );
        registry.register(
            "jobs",
            "Jobs finished at dispatch, by channel and status",
            m.jobs.clone(),
        );
        registry.register(
            "provider_latency_seconds",
            "Provider call latency, by channel",
            m.provider_latency.clone(),
        );
        registry.register(
            "rate_limit_wait_seconds",
            "Time jobs waited for their channel's rate limit, by channel",
            m.rate_limit_wait.clone(),
        );
        registry.register(
            "ingested",
            "Requests taken in at ingest, by kind and status",
            m.ingested.clone(),
        );
        registry.register(
            "dead_letters",
            "Records sent to the dead-letter topic, by service",
            m.dead_letters.clone(),
        );
        Self { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Labels from pairs.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_their_labels() {
        let m = metrics();
        m.decisions
            .get_or_create(&labels([
                ("kind", "contact_deferred"),
                ("reason", "quiet_hours"),
            ]))
            .inc();
        m.provider_latency
            .get_or_create(&labels([("channel", "sms")]))
            .observe(0.02);
        let text = m.render();
        assert!(
            text.contains(
                r#"tacto_decisions_total{kind="contact_deferred",reason="quiet_hours"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("tacto_provider_latency_seconds_bucket"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
