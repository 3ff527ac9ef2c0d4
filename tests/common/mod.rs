//! What the end-to-end tests share.
#![allow(dead_code)]

/// A policy with one SMS step on day 0 in a territory without hour restrictions, so that tests
/// see a job at once whatever the time of day.
pub const POLICY: &str = r#"
version = "e2e-1"
jitter_minutes = 0
[[segments]]
name = "all"
cadence = "main"
[cadences.main]
steps = [{ day = 0, channel = "sms", template = "reminder" }]
[[pack_overrides]]
id = "ZZ"
name = "Test territory without hour restrictions"
zones = ["UTC"]
"#;
