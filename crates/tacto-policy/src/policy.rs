//! The tenant's contact policy, as data (TOML). See `policy.example.toml` for a commented
//! example: segments chosen by predicates, cadences of steps, channel costs and minimum
//! balances, promise grace, broken-promise treatment, and caps stricter than the law.

use crate::pack::{CapRule, Pack, PackError, PackFile, Packs};
use serde::Deserialize;
use std::collections::BTreeMap;
use tacto_model::{ArcStr, Channel};

/// A policy that failed to load.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The TOML does not parse or has unknown fields.
    #[error("policy: {0}")]
    Toml(#[from] toml::de::Error),
    /// A pack override is invalid.
    #[error(transparent)]
    Pack(#[from] PackError),
    /// A value is inconsistent.
    #[error("policy: {0}")]
    Invalid(String),
}

/// Predicates that select a segment; every given bound must hold.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentWhen {
    /// Minimum days past due (inclusive).
    pub min_dpd: Option<i64>,
    /// Maximum days past due (inclusive).
    pub max_dpd: Option<i64>,
    /// Minimum total balance in minor units (inclusive).
    pub min_balance_minor: Option<i64>,
    /// Maximum total balance in minor units (inclusive).
    pub max_balance_minor: Option<i64>,
    /// Minimum risk score (inclusive).
    pub min_risk: Option<i32>,
    /// Maximum risk score (inclusive).
    pub max_risk: Option<i32>,
    /// Minimum customer value (inclusive).
    pub min_customer_value: Option<i32>,
    /// Products this segment applies to (empty = any).
    #[serde(default)]
    pub products: Vec<String>,
    /// Attributes that must be equal.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// A named segment mapping to a cadence.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Segment name (in explanations).
    pub name: String,
    /// Which cadence it follows.
    pub cadence: String,
    /// When it applies; the first matching segment wins.
    #[serde(default)]
    pub when: SegmentWhen,
}

/// One step of a cadence.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Days after the cycle starts (the first missed due date, or the break of a promise).
    pub day: u16,
    /// Preferred channel.
    pub channel: Channel,
    /// Template name.
    pub template: String,
    /// Channels to try, in order, when the preferred one cannot be used.
    #[serde(default)]
    pub fallback: Vec<Channel>,
    /// How many attempts this step makes (default 1).
    #[serde(default = "one")]
    pub attempts: u8,
    /// Hours between attempts of this step (default 24).
    #[serde(default = "day_hours")]
    pub retry_after_hours: u32,
    /// Only when the balance is at least this (minor units).
    #[serde(default)]
    pub min_balance_minor: Option<i64>,
}

fn one() -> u8 {
    1
}

fn day_hours() -> u32 {
    24
}

/// A sequence of steps.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cadence {
    /// The steps, in any order (sorted by day when loaded).
    pub steps: Vec<Step>,
}

/// Per-channel economics.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelPolicy {
    /// Cost of one contact, minor units (for reports).
    #[serde(default)]
    pub cost_minor: i64,
    /// Do not use this channel for balances below this (small debts: cheap channels only).
    #[serde(default)]
    pub min_balance_minor: i64,
}

/// What happens after a broken promise.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokenPromise {
    /// Cadence to run in the new cycle (default: the segment's cadence, from its first step).
    pub cadence: Option<String>,
}

/// The policy as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Version stamped on every decision.
    pub version: ArcStr,
    /// Days after a promise's due date before it is judged broken.
    #[serde(default = "two")]
    pub promise_grace_days: u32,
    /// Spread openings of the window over this many minutes (deterministic per job).
    #[serde(default = "thirty")]
    pub jitter_minutes: u32,
    /// A job's validity: dispatch must send it within this many hours (and within the window).
    #[serde(default = "four")]
    pub job_validity_hours: u32,
    /// How far ahead (days) to look for an allowed window before giving up for now.
    #[serde(default = "twenty_one")]
    pub horizon_days: u32,
    /// Require consent on every channel, not only where a pack requires it.
    #[serde(default)]
    pub require_consent_everywhere: bool,
    /// Channel economics.
    #[serde(default)]
    pub channels: BTreeMap<Channel, ChannelPolicy>,
    /// Segments, first match wins.
    pub segments: Vec<Segment>,
    /// Cadences by name.
    pub cadences: BTreeMap<String, Cadence>,
    /// Broken-promise treatment.
    #[serde(default)]
    pub broken_promise: BrokenPromise,
    /// The tenant's own caps, applied on top of the law.
    #[serde(default)]
    pub caps: Vec<CapRule>,
    /// Packs replacing (same id) or adding to the built-in ones.
    #[serde(default)]
    pub pack_overrides: Vec<PackFile>,
    /// What customers may arrange alone on the self-service page.
    #[serde(default)]
    pub self_service: crate::self_service::SelfServiceBounds,
}

fn two() -> u32 {
    2
}
fn thirty() -> u32 {
    30
}
fn four() -> u32 {
    4
}
fn twenty_one() -> u32 {
    21
}

/// A step with its position in the cadence.
#[derive(Clone, Debug)]
pub struct PlacedStep {
    /// The step.
    pub step: Step,
    /// Position among the steps of the same day.
    pub slot: u8,
    /// Display name, `d{day}.{slot}-{channel}`.
    pub name: String,
}

/// A loaded, validated policy with its packs.
#[derive(Debug)]
pub struct Policy {
    /// The file.
    pub file: PolicyFile,
    /// Cadences with steps sorted by (day, slot).
    pub cadences: BTreeMap<String, Vec<PlacedStep>>,
    /// Built-in packs plus overrides.
    pub packs: Packs,
    /// The source named by the tenant's own rules in explanations: `tenant policy {version}`.
    pub source: ArcStr,
}

/// A commented example policy, shipped as the default.
pub const EXAMPLE_POLICY: &str = include_str!("../policy.example.toml");

impl Policy {
    /// Parses and validates a policy, with the built-in packs plus its overrides.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text)?;
        Self::from_file(file)
    }

    /// The example policy (`policy.example.toml`).
    pub fn example() -> Self {
        // Checked by the tests; a broken example is a build defect.
        Self::from_toml(EXAMPLE_POLICY)
            .unwrap_or_else(|e| panic!("policy.example.toml is invalid: {e}"))
    }

    /// The same policy with packs of its own, so their caches of computed windows are not
    /// shared: for another thread of a simulation, which then never waits on this one's.
    pub fn copy_for_thread(&self) -> Result<Self, PolicyError> {
        Self::from_file(self.file.clone())
    }

    /// Validates a parsed policy.
    pub fn from_file(file: PolicyFile) -> Result<Self, PolicyError> {
        let mut packs = Packs::builtin()?;
        for p in &file.pack_overrides {
            packs.insert(Pack::compile(p.clone())?);
        }
        let mut cadences = BTreeMap::new();
        for (name, c) in &file.cadences {
            let mut steps = c.steps.clone();
            steps.sort_by_key(|s| s.day);
            let mut placed: Vec<PlacedStep> = Vec::with_capacity(steps.len());
            for step in steps {
                if step.attempts == 0 {
                    return Err(PolicyError::Invalid(format!(
                        "cadence {name}: a step needs at least one attempt"
                    )));
                }
                let slot = placed.iter().filter(|p| p.step.day == step.day).count();
                let slot = u8::try_from(slot).map_err(|_| {
                    PolicyError::Invalid(format!("cadence {name}: too many steps on one day"))
                })?;
                let name = format!("d{}.{}-{}", step.day, slot, step.channel);
                placed.push(PlacedStep { step, slot, name });
            }
            cadences.insert(name.clone(), placed);
        }
        for s in &file.segments {
            if !cadences.contains_key(&s.cadence) {
                return Err(PolicyError::Invalid(format!(
                    "segment {} uses unknown cadence {}",
                    s.name, s.cadence
                )));
            }
        }
        if let Some(c) = &file.broken_promise.cadence
            && !cadences.contains_key(c)
        {
            return Err(PolicyError::Invalid(format!(
                "broken_promise uses unknown cadence {c}"
            )));
        }
        for c in &file.caps {
            if c.window_hours == 0 || c.window_hours > crate::ledger::MAX_WINDOW_HOURS {
                return Err(PolicyError::Invalid(format!(
                    "cap {}: window_hours must be 1..={}",
                    c.rule,
                    crate::ledger::MAX_WINDOW_HOURS
                )));
            }
        }
        if file.job_validity_hours == 0 {
            return Err(PolicyError::Invalid(
                "job_validity_hours must be > 0".into(),
            ));
        }
        Ok(Self {
            source: format!("tenant policy {}", file.version).into(),
            file,
            cadences,
            packs,
        })
    }

    /// The policy version.
    pub fn version(&self) -> &str {
        &self.file.version
    }

    /// Minimum balance for a channel.
    pub fn channel_min_balance(&self, c: Channel) -> i64 {
        self.file
            .channels
            .get(&c)
            .map(|p| p.min_balance_minor)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_policy_loads() {
        let p = Policy::example();
        assert!(!p.file.segments.is_empty());
        assert!(p.cadences.values().all(|c| !c.is_empty()));
    }

    #[test]
    fn unknown_cadence_is_rejected() {
        let text = EXAMPLE_POLICY.replace("cadence = \"standard\"", "cadence = \"nope\"");
        assert!(Policy::from_toml(&text).is_err());
    }
}
