//! How amounts and dates read in messages and pages, per language.

/// A date as the language writes it: `30/11/2026` in Spanish and Portuguese, `2026-11-30`
/// otherwise.
pub fn format_date(d: crate::time::Date, language: &str) -> String {
    match language {
        "es" | "pt" => d.naive().format("%d/%m/%Y").to_string(),
        _ => d.to_string(),
    }
}

/// `12345` USD → `USD 123.45`; zero-decimal currencies (CLP, JPY, …) keep their units.
pub fn format_amount(minor: i64, currency: &str) -> String {
    let exponent = iso_currency::Currency::from_code(currency)
        .and_then(|c| c.exponent())
        .unwrap_or(2) as u32;
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.unsigned_abs();
    if exponent == 0 {
        return format!("{currency} {sign}{minor}");
    }
    let div = 10u64.pow(exponent);
    format!(
        "{currency} {sign}{}.{:0width$}",
        minor / div,
        minor % div,
        width = exponent as usize
    )
}

/// An amount in minor units as a decimal string without the currency (`12345` USD →
/// `123.45`), for form fields.
pub fn decimal_amount(minor: i64, currency: &str) -> String {
    format_amount(minor, currency)
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Parses a decimal amount typed by a person (`123.45`, `123,45`, `123`) into minor units of
/// `currency`; `None` when it is not an amount or has more decimals than the currency.
pub fn parse_amount(text: &str, currency: &str) -> Option<i64> {
    let exponent = iso_currency::Currency::from_code(currency)
        .and_then(|c| c.exponent())
        .unwrap_or(2) as u32;
    let t = text.trim().replace(',', ".");
    let (units, frac) = t.split_once('.').unwrap_or((&t, ""));
    if units.is_empty() && frac.is_empty()
        || !units.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > exponent as usize
        || units.len() > 15
    {
        return None;
    }
    let units: i64 = if units.is_empty() {
        0
    } else {
        units.parse().ok()?
    };
    let mut frac_value: i64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..exponent as usize {
        frac_value *= 10;
    }
    units
        .checked_mul(10i64.pow(exponent))?
        .checked_add(frac_value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_and_parse_with_the_currency_decimals() {
        assert_eq!(format_amount(50_000, "USD"), "USD 500.00");
        assert_eq!(format_amount(50_000, "CLP"), "CLP 50000");
        assert_eq!(decimal_amount(12_345, "USD"), "123.45");
        assert_eq!(parse_amount("123.45", "USD"), Some(12_345));
        assert_eq!(parse_amount("123,4", "EUR"), Some(12_340));
        assert_eq!(parse_amount("123", "USD"), Some(12_300));
        assert_eq!(parse_amount("5000", "CLP"), Some(5_000));
        for bad in ["", ".", "1.234", "-1", "1e3", "abc", "9999999999999999"] {
            assert_eq!(parse_amount(bad, "USD"), None, "{bad}");
        }
        assert_eq!(parse_amount("10.5", "CLP"), None);
    }
}
