//! What a customer may arrange alone on the self-service page: promises to pay and payment plans
//! within the tenant's bounds (`[self_service]` in the policy). Pure functions of the balance and
//! the customer's local date, so the page and its tests agree on every limit.

use chrono::{Days, Months, NaiveDate};
use serde::Deserialize;

/// The bounds of self-service arrangements (`[self_service]` in the policy file).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SelfServiceBounds {
    /// A promise's date (and a plan's first instalment) at most this many days ahead.
    pub promise_max_days: u32,
    /// A promise covers at least this share of the balance, in percent.
    pub promise_min_percent: u32,
    /// A plan has at most this many instalments.
    pub plan_max_instalments: u32,
    /// A plan's last instalment at most this many days ahead.
    pub plan_max_days: u32,
    /// Each instalment at least this amount, minor units.
    pub plan_min_instalment_minor: i64,
}

impl Default for SelfServiceBounds {
    fn default() -> Self {
        Self {
            promise_max_days: 30,
            promise_min_percent: 10,
            plan_max_instalments: 6,
            plan_max_days: 180,
            plan_min_instalment_minor: 1,
        }
    }
}

/// How often a plan's instalments fall due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    /// Every 7 days.
    Weekly,
    /// Every 14 days.
    Biweekly,
    /// The same day each month (the month's last day when it has no such day).
    Monthly,
}

impl Interval {
    /// The date of instalment `k` (from 0) of a plan starting on `first`.
    pub fn nth(self, first: NaiveDate, k: u32) -> Option<NaiveDate> {
        match self {
            Interval::Weekly => first.checked_add_days(Days::new(7 * u64::from(k))),
            Interval::Biweekly => first.checked_add_days(Days::new(14 * u64::from(k))),
            Interval::Monthly => first.checked_add_months(Months::new(k)),
        }
    }
}

/// Why an arrangement is outside the bounds; each names the limit, for the page to explain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutOfBounds {
    /// Nothing is owed.
    #[error("nothing is owed")]
    NothingOwed,
    /// The date is before today.
    #[error("the date is in the past")]
    DateInPast,
    /// The date is after the latest allowed one.
    #[error("the date is after {latest}")]
    DateTooLate {
        /// The latest allowed date.
        latest: NaiveDate,
    },
    /// The amount is below the minimum.
    #[error("the amount is below {min}")]
    AmountTooLow {
        /// The least allowed amount, minor units.
        min: i64,
    },
    /// The amount is more than is owed.
    #[error("the amount is above the balance {max}")]
    AmountTooHigh {
        /// The balance, minor units.
        max: i64,
    },
    /// The number of instalments is outside 2 to the maximum.
    #[error("a plan has 2 to {max} instalments")]
    Instalments {
        /// The most instalments allowed.
        max: u32,
    },
    /// The plan's last instalment falls after the latest allowed date.
    #[error("the plan ends after {latest}")]
    PlanTooLong {
        /// The latest allowed last instalment.
        latest: NaiveDate,
    },
    /// Instalments would be smaller than the minimum.
    #[error("each instalment must be at least {min}")]
    InstalmentTooSmall {
        /// The least allowed instalment, minor units.
        min: i64,
    },
}

impl SelfServiceBounds {
    /// The latest date a promise (or a plan's first instalment) may have.
    pub fn latest_promise_date(&self, today: NaiveDate) -> NaiveDate {
        today
            .checked_add_days(Days::new(u64::from(self.promise_max_days)))
            .unwrap_or(today)
    }

    /// The least amount a promise may have on this balance.
    pub fn min_promise(&self, balance_minor: i64) -> i64 {
        let share = i128::from(balance_minor) * i128::from(self.promise_min_percent.min(100));
        let min = (share + 99) / 100;
        i64::try_from(min).unwrap_or(balance_minor).max(1)
    }

    /// Checks a promise of `amount_minor` by `due` made on `today` against a balance.
    pub fn check_promise(
        &self,
        balance_minor: i64,
        today: NaiveDate,
        due: NaiveDate,
        amount_minor: i64,
    ) -> Result<(), OutOfBounds> {
        if balance_minor <= 0 {
            return Err(OutOfBounds::NothingOwed);
        }
        check_date(today, due, self.latest_promise_date(today))?;
        let min = self.min_promise(balance_minor);
        if amount_minor < min {
            return Err(OutOfBounds::AmountTooLow { min });
        }
        if amount_minor > balance_minor {
            return Err(OutOfBounds::AmountTooHigh { max: balance_minor });
        }
        Ok(())
    }

    /// The instalments of a plan paying the whole balance in `count` equal parts (the
    /// remainder on the last), the first on `first` and then every `interval`, if they are
    /// within the bounds.
    pub fn plan(
        &self,
        balance_minor: i64,
        today: NaiveDate,
        first: NaiveDate,
        count: u32,
        interval: Interval,
    ) -> Result<Vec<(NaiveDate, i64)>, OutOfBounds> {
        if balance_minor <= 0 {
            return Err(OutOfBounds::NothingOwed);
        }
        let max = self.plan_max_instalments.max(2);
        if !(2..=max).contains(&count) {
            return Err(OutOfBounds::Instalments { max });
        }
        check_date(today, first, self.latest_promise_date(today))?;
        let latest = today
            .checked_add_days(Days::new(u64::from(self.plan_max_days)))
            .unwrap_or(today);
        let each = balance_minor / i64::from(count);
        if each < self.plan_min_instalment_minor.max(1) {
            return Err(OutOfBounds::InstalmentTooSmall {
                min: self.plan_min_instalment_minor.max(1),
            });
        }
        let mut out = Vec::with_capacity(count as usize);
        for k in 0..count {
            let date = interval
                .nth(first, k)
                .filter(|d| *d <= latest)
                .ok_or(OutOfBounds::PlanTooLong { latest })?;
            let amount = if k + 1 == count {
                balance_minor - each * i64::from(count - 1)
            } else {
                each
            };
            out.push((date, amount));
        }
        Ok(out)
    }
}

fn check_date(today: NaiveDate, date: NaiveDate, latest: NaiveDate) -> Result<(), OutOfBounds> {
    if date < today {
        return Err(OutOfBounds::DateInPast);
    }
    if date > latest {
        return Err(OutOfBounds::DateTooLate { latest });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap_or_default()
    }

    #[test]
    fn promises_must_be_dated_within_the_window_and_cover_the_minimum_share() {
        let b = SelfServiceBounds::default();
        let today = d(2026, 12, 2);
        assert_eq!(
            b.check_promise(50_000, today, d(2026, 12, 20), 5_000),
            Ok(())
        );
        assert_eq!(
            b.check_promise(50_000, today, d(2026, 12, 1), 5_000),
            Err(OutOfBounds::DateInPast)
        );
        assert_eq!(
            b.check_promise(50_000, today, d(2027, 1, 2), 5_000),
            Err(OutOfBounds::DateTooLate {
                latest: d(2027, 1, 1)
            })
        );
        assert_eq!(
            b.check_promise(50_000, today, d(2026, 12, 20), 4_999),
            Err(OutOfBounds::AmountTooLow { min: 5_000 })
        );
        assert_eq!(
            b.check_promise(50_000, today, d(2026, 12, 20), 50_001),
            Err(OutOfBounds::AmountTooHigh { max: 50_000 })
        );
        assert_eq!(
            b.check_promise(0, today, d(2026, 12, 20), 1),
            Err(OutOfBounds::NothingOwed)
        );
        // The minimum rounds up: 10% of 999 is 99.9.
        assert_eq!(b.min_promise(999), 100);
    }

    #[test]
    fn plans_split_the_balance_and_stay_within_their_bounds() {
        let b = SelfServiceBounds::default();
        let today = d(2026, 12, 2);
        let plan = b
            .plan(10_000, d(2027, 1, 5), d(2027, 1, 31), 3, Interval::Monthly)
            .expect("plan");
        assert_eq!(
            plan,
            vec![
                (d(2027, 1, 31), 3_333),
                (d(2027, 2, 28), 3_333),
                (d(2027, 3, 31), 3_334)
            ]
        );
        assert_eq!(plan.iter().map(|p| p.1).sum::<i64>(), 10_000);
        assert_eq!(
            b.plan(10_000, today, d(2026, 12, 9), 7, Interval::Weekly),
            Err(OutOfBounds::Instalments { max: 6 })
        );
        assert_eq!(
            b.plan(10_000, today, d(2027, 1, 1), 6, Interval::Monthly),
            Err(OutOfBounds::PlanTooLong {
                latest: d(2027, 5, 31)
            })
        );
        assert!(
            b.plan(10_000, today, d(2026, 12, 30), 6, Interval::Biweekly)
                .is_ok()
        );
        let strict = SelfServiceBounds {
            plan_min_instalment_minor: 5_000,
            ..SelfServiceBounds::default()
        };
        assert_eq!(
            strict.plan(10_000, today, d(2026, 12, 9), 3, Interval::Weekly),
            Err(OutOfBounds::InstalmentTooSmall { min: 5_000 })
        );
    }
}
