//! Logs, trace export and trace context in record headers.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The W3C trace-context header name (on HTTP requests and on records).
pub const TRACEPARENT: &str = "traceparent";

/// Keeps trace export alive; flushes the spans not yet exported when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported (OTLP configured).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("trace export shutdown: {e}");
        }
    }
}

/// Logs to stderr (filtered by `RUST_LOG`, default `info`), and exports spans over OTLP/HTTP
/// when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard `OTEL_*` variables apply).
/// Call once, at the start of a process.
pub fn init(service: &'static str) -> Telemetry {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let exporting =
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.trim().is_empty());
    let mut error = None;
    let provider = if exporting {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build()
        {
            Ok(exporter) => Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(Resource::builder().with_service_name(service).build())
                    .build(),
            ),
            Err(e) => {
                error = Some(e.to_string());
                None
            }
        }
    } else {
        None
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    // A second init (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(otel)
        .with(filter)
        .with(fmt)
        .try_init();
    if let Some(e) = error {
        tracing::error!(error = %e, "cannot export traces; continuing without");
    }
    Telemetry { provider }
}

struct HeaderExtractor<'a, K, V>(&'a [(K, V)]);

impl<K: AsRef<str>, V: AsRef<str>> Extractor for HeaderExtractor<'_, K, V> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_ref())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

struct MapInjector(HashMap<String, String>);

impl Injector for MapInjector {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// Makes `span` a child of the trace in `headers` (nothing happens without a valid
/// `traceparent`, or when spans are not exported).
pub fn continue_trace<K: AsRef<str>, V: AsRef<str>>(span: &tracing::Span, headers: &[(K, V)]) {
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The `traceparent` for records made within `span`: the span's own when spans are exported,
/// otherwise the incoming one passed on unchanged (the trace id still links the records).
pub fn traceparent(span: &tracing::Span, incoming: Option<&str>) -> Option<String> {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        let mut m = MapInjector(HashMap::new());
        TraceContextPropagator::new().inject_context(&cx, &mut m);
        if let Some(tp) = m.0.remove(TRACEPARENT) {
            return Some(tp);
        }
    }
    incoming.filter(|t| valid_traceparent(t)).map(str::to_owned)
}

/// Whether `t` is a well-formed W3C `traceparent` with a non-zero trace id.
pub fn valid_traceparent(t: &str) -> bool {
    let cx = TraceContextPropagator::new()
        .extract(&HeaderExtractor(&[(TRACEPARENT.to_owned(), t.to_owned())]));
    cx.span().span_context().is_valid()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn without_export_the_incoming_traceparent_is_passed_on() {
        let span = tracing::info_span!("test");
        continue_trace(&span, &[(TRACEPARENT, TP)]);
        assert_eq!(traceparent(&span, Some(TP)).as_deref(), Some(TP));
        assert_eq!(traceparent(&span, Some("garbage")), None);
        assert_eq!(traceparent(&span, None), None);
    }

    #[test]
    fn traceparents_are_validated() {
        assert!(valid_traceparent(TP));
        assert!(!valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent("nonsense"));
    }
}
