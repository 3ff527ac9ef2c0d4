//! What the API tests share: a fixed clock, an account view without accounts, and an ingest
//! over a fresh embedded log.
#![allow(dead_code)]

use std::sync::Arc;
use tacto_ingest::{AccountView, Ingest, IngestConfig, router};
use tacto_log::embedded::EmbeddedLog;
use tacto_log::events;
use tacto_model::{Channel, Timestamp};

/// The tests' clock: 2026-11-16T15:00:00Z (10:00 in New York).
pub fn fixed_now() -> Timestamp {
    Timestamp::parse("2026-11-16T15:00:00Z").unwrap_or(Timestamp::from_micros(0))
}

/// A view that knows no account state; one SMS address belongs to the accounts given.
pub struct View {
    /// Who `+12125550100` belongs to.
    pub owners: Vec<String>,
}

impl AccountView for View {
    fn account(&self, _: &str) -> Option<serde_json::Value> {
        None
    }
    fn ready(&self) -> bool {
        true
    }
    fn accounts_with_address(&self, channel: Channel, address: &str) -> Vec<String> {
        if channel == Channel::Sms && address == "+12125550100" {
            self.owners.clone()
        } else {
            Vec::new()
        }
    }
}

/// Every endpoint configured, with the secrets the tests sign with.
pub fn full_config(max_body_bytes: usize) -> IngestConfig {
    IngestConfig {
        api_keys: vec!["k1".into()],
        webhook_secret: Some("whsec".into()),
        webhook_tolerance_secs: 300,
        max_body_bytes,
        twilio_auth_token: Some("twilio-token".into()),
        public_url: Some("https://tacto.example".into()),
        link_secret: Some("links".into()),
        dialer_token: Some("dial-token".into()),
        sendgrid_public_key: None,
        ..IngestConfig::default()
    }
}

/// The API over a fresh embedded log with `partitions` partitions.
pub struct Api {
    pub app: axum::Router,
    pub log: Arc<EmbeddedLog>,
    /// Holds the log's directory.
    pub dir: tempfile::TempDir,
}

impl Api {
    pub fn new(config: IngestConfig, owners: &[&str], partitions: u32) -> Self {
        let view = View {
            owners: owners.iter().map(|s| (*s).to_owned()).collect(),
        };
        Self::with_view(config, Arc::new(view), partitions)
    }

    /// The API with its own account view.
    pub fn with_view(config: IngestConfig, view: Arc<dyn AccountView>, partitions: u32) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(EmbeddedLog::open(dir.path().join("log.redb")).expect("log"));
        events::create_topics(&*log, partitions).expect("topics");
        let ingest = Ingest::new(log.clone(), config, view, fixed_now);
        Self {
            app: router(Arc::new(ingest)),
            log,
            dir,
        }
    }
}
