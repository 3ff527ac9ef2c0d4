//! The contact-pressure ledger: every attempt on an account in the last days, across channels
//! and vendors, with what is known of its result. Caps, spacing and conversation waits are
//! evaluated here.
//!
//! An attempt is dated conservatively: while its result is unknown it counts at the *latest*
//! instant it may be sent (its job's `not_after`), so it stays in rolling windows at least as
//! long as the real send would; an outcome re-dates it to the outcome's time (never earlier than
//! the send).

use crate::pack::{CapRule, SpacingRule};
use tacto_model::{Channel, JobId};

/// The longest window (hours) any cap, wait or spacing rule may use: the ledger keeps this much.
pub const MAX_WINDOW_HOURS: u32 = 192;

const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// Position of a job in an account's cadence: which cycle, which step, which attempt.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct JobKey {
    /// Cadence cycle (a new one starts after a broken promise or a re-opening).
    pub cycle: u16,
    /// Step day offset in the cycle.
    pub day: u16,
    /// Position among the steps of that day.
    pub slot: u8,
    /// Attempt number for the step, from 0.
    pub attempt: u8,
}

impl JobKey {
    /// The deterministic job id: `{account}:c{cycle}:d{day}.{slot}:a{attempt}`.
    pub fn job_id(&self, account: &str) -> JobId {
        // Written piece by piece: `format!` costs several times as much, on every decision.
        let mut n = itoa::Buffer::new();
        let mut id = compact_str::CompactString::with_capacity(account.len() + 24);
        id.push_str(account);
        id.push_str(":c");
        id.push_str(n.format(self.cycle));
        id.push_str(":d");
        id.push_str(n.format(self.day));
        id.push('.');
        id.push_str(n.format(self.slot));
        id.push_str(":a");
        id.push_str(n.format(self.attempt));
        JobId(id)
    }

    /// Parses a job id made by [`JobKey::job_id`] for `account`.
    pub fn parse(job_id: &str, account: &str) -> Option<JobKey> {
        // Split at single characters (a two-character pattern sets up a substring search on
        // every call, and this runs for every job event folded).
        let rest = job_id.strip_prefix(account)?.strip_prefix(":c")?;
        let (cycle, rest) = rest.split_once(':')?;
        let (day, rest) = rest.strip_prefix('d')?.split_once('.')?;
        let (slot, attempt) = rest.split_once(':')?;
        let attempt = attempt.strip_prefix('a')?;
        Some(JobKey {
            cycle: cycle.parse().ok()?,
            day: day.parse().ok()?,
            slot: slot.parse().ok()?,
            attempt: attempt.parse().ok()?,
        })
    }
}

/// Attempt flags.
pub mod flags {
    /// Created and not yet finished or recalled: adapters may still hold it.
    pub const QUEUED: u8 = 1;
    /// The call never connected (busy, not in service).
    pub const NEVER_CONNECTED: u8 = 2;
    /// Confirmed never sent (recalled in time, expired unsent).
    pub const NOT_SENT: u8 = 4;
    /// Queued before a payment changed the balance: to be recalled and re-planned.
    pub const STALE: u8 = 8;
    /// A recall was already issued for it.
    pub const RECALLED: u8 = 16;
}

const MICROS_PER_MINUTE: i64 = 60_000_000;

/// An instant rounded *up* to a whole minute, as minutes since the epoch (state is kept at
/// minute resolution; rounding up keeps attempts in rolling windows a little longer, never
/// shorter).
pub fn minute_up(micros: i64) -> u32 {
    let m = (micros.max(0).unsigned_abs()).div_ceil(MICROS_PER_MINUTE.unsigned_abs());
    u32::try_from(m).unwrap_or(u32::MAX)
}

/// An instant rounded *down* to a whole minute (for starts of exemptions, which then end
/// earlier, never later).
pub fn minute_down(micros: i64) -> u32 {
    u32::try_from(micros.max(0) / MICROS_PER_MINUTE).unwrap_or(u32::MAX)
}

/// Minutes since the epoch back to microseconds.
pub fn micros(minutes: u32) -> i64 {
    i64::from(minutes) * MICROS_PER_MINUTE
}

/// One contact attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    /// Minutes since the epoch, rounded up: the latest possible send while the result is
    /// unknown, the outcome's time once known.
    pub at_minute: u32,
    /// Which job.
    pub key: JobKey,
    /// Channel used.
    pub channel: Channel,
    /// See [`flags`].
    pub flags: u8,
}

impl Attempt {
    /// [`Attempt::at_minute`] in microseconds.
    pub fn at(&self) -> i64 {
        micros(self.at_minute)
    }

    /// Whether the flag is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Still held by an adapter (not finished, not recalled).
    pub fn in_queue(&self) -> bool {
        self.has(flags::QUEUED) && !self.has(flags::RECALLED)
    }

    /// Whether this attempt counts toward `cap`.
    pub fn counts_for(&self, channels: &[Channel], exclude_never_connected: bool) -> bool {
        channels.contains(&self.channel)
            && !self.has(flags::NOT_SENT)
            && !(exclude_never_connected && self.has(flags::NEVER_CONNECTED))
    }
}

/// Earliest instant `>= t` at which `cap` allows one more contact, given the attempts.
/// Returns `t` itself when the cap allows it now.
pub fn cap_free_at(attempts: &[Attempt], cap: &CapRule, t: i64) -> i64 {
    let window = i64::from(cap.window_hours) * MICROS_PER_HOUR;
    let counted = |a: &&Attempt| {
        a.counts_for(&cap.channels, cap.exclude_never_connected) && a.at() > t - window
    };
    let max = cap.max as usize;
    if attempts.iter().filter(counted).count() < max {
        return t;
    }
    let mut ats: Vec<i64> = attempts.iter().filter(counted).map(Attempt::at).collect();
    ats.sort_unstable();
    // Dropping the oldest `len - max + 1` leaves `max - 1`: free once ats[len - max] leaves.
    (ats[ats.len() - max] + window).max(t)
}

/// Earliest instant `>= t` that respects a spacing rule.
pub fn spacing_free_at(attempts: &[Attempt], rule: &SpacingRule, t: i64) -> i64 {
    let gap = i64::from(rule.min_hours) * MICROS_PER_HOUR;
    attempts
        .iter()
        .filter(|a| a.counts_for(&rule.channels, false))
        .map(|a| a.at() + gap)
        .fold(t, i64::max)
}

/// Number of attempts counted by `cap` in the window ending at `t` (for explanations).
pub fn cap_count(attempts: &[Attempt], cap: &CapRule, t: i64) -> usize {
    let window = i64::from(cap.window_hours) * MICROS_PER_HOUR;
    attempts
        .iter()
        .filter(|a| a.counts_for(&cap.channels, cap.exclude_never_connected) && a.at() > t - window)
        .count()
}

/// Hours to microseconds.
pub fn hours(h: u32) -> i64 {
    i64::from(h) * MICROS_PER_HOUR
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(max: u32, window_hours: u32) -> CapRule {
        CapRule {
            rule: "t".into(),
            source: "t".into(),
            confidence: Default::default(),
            channels: vec![Channel::Voice],
            max,
            window_hours,
            exclude_never_connected: true,
            consent_exclusion_hours: None,
        }
    }

    fn call(at_h: i64, flags: u8) -> Attempt {
        Attempt {
            at_minute: minute_up(at_h * MICROS_PER_HOUR),
            key: JobKey {
                cycle: 0,
                day: 0,
                slot: 0,
                attempt: 0,
            },
            channel: Channel::Voice,
            flags,
        }
    }

    #[test]
    fn job_ids_round_trip() {
        let k = JobKey {
            cycle: 2,
            day: 14,
            slot: 1,
            attempt: 3,
        };
        let id = k.job_id("ACC:9");
        assert_eq!(id.as_str(), "ACC:9:c2:d14.1:a3");
        assert_eq!(JobKey::parse(id.as_str(), "ACC:9"), Some(k));
        assert_eq!(JobKey::parse(id.as_str(), "ACC"), None);
        assert_eq!(JobKey::parse("garbage", "ACC:9"), None);
        for bad in [
            "ACC:9:c2:x:d14.1:a3",
            "ACC:9:c2:d14.1:b3",
            "ACC:9:c2:d14:1:a3",
            "ACC:9:c2:d14.1",
            "ACC:9:c:d14.1:a3",
            "ACC:9:c2:d14.1:a3:a4",
        ] {
            assert_eq!(JobKey::parse(bad, "ACC:9"), None, "{bad}");
        }
    }

    #[test]
    fn cap_frees_when_the_oldest_counted_call_leaves_the_window() {
        let calls: Vec<_> = (0..7).map(|h| call(h * 10, 0)).collect();
        let c = cap(7, 168);
        // 7 calls at hours 0..60: the 8th waits until the first leaves (hour 168).
        assert_eq!(
            cap_free_at(&calls, &c, 61 * MICROS_PER_HOUR),
            168 * MICROS_PER_HOUR
        );
        // A busy signal does not count.
        let mut with_busy = calls.clone();
        with_busy[0].flags = flags::NEVER_CONNECTED;
        assert_eq!(
            cap_free_at(&with_busy, &c, 61 * MICROS_PER_HOUR),
            61 * MICROS_PER_HOUR
        );
    }
}
