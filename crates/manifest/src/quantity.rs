//! Kubernetes resource quantities ("100m", "64Mi", "1.5", "1e3") as exact integers.
//!
//! The API server rounds every container resource value up to the millicore
//! (`SetDefaults_ResourceList`), so a quantity is represented here as a count of
//! thousandths, rounded away from zero.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The pattern the API server names when a quantity does not parse.
pub const QUANTITY_PATTERN: &str = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// Why a quantity string could not be turned into a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text is not a Kubernetes quantity.
    #[error("quantity {0:?} is not valid: quantities must match the regular expression '{QUANTITY_PATTERN}'")]
    Syntax(String),
    /// The value does not fit the integer type asked for.
    #[error("quantity {0:?} is too large")]
    Overflow(String),
}

/// Parses a quantity and returns its value in thousandths (millis), rounded up
/// (away from zero) to the next thousandth as the API server does.
///
/// "100m" is 100, "1" is 1000, "1.5" is 1500, "64Mi" is 67108864000, "1e3" is 1000000.
pub fn parse_quantity(text: &str) -> Result<i128, QuantityError> {
    parse_millis(text).map(|(millis, _)| millis)
}

/// The API's rounding of a resource value to the millicore: `Some("<n>m")` when
/// the quantity is finer than a thousandth (it is then rounded up), else `None`.
pub(crate) fn round_up_to_millis(quantity: &Quantity) -> Option<Quantity> {
    match parse_millis(&quantity.0) {
        Ok((millis, false)) => Some(Quantity(format!("{millis}m"))),
        _ => None,
    }
}

/// Value in thousandths, rounded away from zero, and whether it was exact.
fn parse_millis(text: &str) -> Result<(i128, bool), QuantityError> {
    let syntax = || QuantityError::Syntax(text.to_string());
    let overflow = || QuantityError::Overflow(text.to_string());
    let s = text.trim();
    if s.is_empty() {
        return Err(syntax());
    }
    let (negative, rest) = match s.as_bytes()[0] {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if frac_part.contains('.') || (int_part.is_empty() && frac_part.is_empty()) {
        return Err(syntax());
    }
    // value = digits * 10^exp10 * 2^exp2
    let mut digits: i128 = 0;
    for c in int_part.bytes().chain(frac_part.bytes()) {
        digits = digits
            .checked_mul(10)
            .and_then(|d| d.checked_add(i128::from(c - b'0')))
            .ok_or_else(overflow)?;
    }
    let mut exp10: i64 = -(frac_part.len() as i64);
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        _ => {
            let exponent = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or_else(syntax)?;
            let unsigned = exponent
                .strip_prefix('+')
                .or_else(|| exponent.strip_prefix('-'))
                .unwrap_or(exponent);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            let e: i64 = exponent.parse().map_err(|_| overflow())?;
            exp10 = exp10.checked_add(e).ok_or_else(overflow)?;
        }
    }
    // Thousandths: multiply by 10^3.
    exp10 += 3;
    let mut value = digits
        .checked_mul(1i128.checked_shl(exp2).ok_or_else(overflow)?)
        .ok_or_else(overflow)?;
    if value == 0 {
        return Ok((0, true));
    }
    let mut exact = true;
    if exp10 >= 0 {
        let scale = u32::try_from(exp10).map_err(|_| overflow())?;
        let factor = 10i128.checked_pow(scale).ok_or_else(overflow)?;
        value = value.checked_mul(factor).ok_or_else(overflow)?;
    } else {
        let scale = u32::try_from(-exp10).map_err(|_| overflow())?;
        match 10i128.checked_pow(scale) {
            Some(divisor) => {
                let rounded_up = value % divisor != 0;
                exact = !rounded_up;
                value = value / divisor + i128::from(rounded_up);
            }
            // Smaller than one thousandth but not zero: rounds up to one.
            None => {
                exact = false;
                value = 1;
            }
        }
    }
    Ok((if negative { -value } else { value }, exact))
}

/// CPU in millicores, rounded up as the API server does ("0.1" and "100m" are 100).
pub fn cpu_millis(quantity: &Quantity) -> Result<i64, QuantityError> {
    let millis = parse_quantity(&quantity.0)?;
    i64::try_from(millis).map_err(|_| QuantityError::Overflow(quantity.0.clone()))
}

/// An amount (memory, storage) in whole units, rounded up (away from zero)
/// like the API's `Quantity.Value()` ("64Mi" is 67108864, "1.5" is 2).
pub fn bytes(quantity: &Quantity) -> Result<i64, QuantityError> {
    let millis = parse_quantity(&quantity.0)?;
    let whole = millis / 1000 + i128::from(millis % 1000 > 0) - i128::from(millis % 1000 < 0);
    i64::try_from(whole).map_err(|_| QuantityError::Overflow(quantity.0.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_binary_and_exponent_forms() {
        assert_eq!(parse_quantity("100m"), Ok(100));
        assert_eq!(parse_quantity("1"), Ok(1000));
        assert_eq!(parse_quantity("1.5"), Ok(1500));
        assert_eq!(parse_quantity(".5"), Ok(500));
        assert_eq!(parse_quantity("5."), Ok(5000));
        assert_eq!(parse_quantity("64Mi"), Ok(64 * 1024 * 1024 * 1000));
        assert_eq!(parse_quantity("1Ki"), Ok(1_024_000));
        assert_eq!(parse_quantity("1G"), Ok(1_000_000_000_000));
        assert_eq!(parse_quantity("1k"), Ok(1_000_000));
        assert_eq!(parse_quantity("1e3"), Ok(1_000_000));
        assert_eq!(parse_quantity("1E3"), Ok(1_000_000));
        assert_eq!(parse_quantity("1e-3"), Ok(1));
        assert_eq!(parse_quantity("2E"), Ok(2_000_000_000_000_000_000_000));
        assert_eq!(parse_quantity("+2"), Ok(2000));
        assert_eq!(parse_quantity("-2"), Ok(-2000));
        assert_eq!(parse_quantity("0"), Ok(0));
        assert_eq!(parse_quantity("0.5Gi"), Ok(536_870_912_000));
    }

    #[test]
    fn rounds_up_to_the_millicore() {
        assert_eq!(parse_quantity("1n"), Ok(1));
        assert_eq!(parse_quantity("1500u"), Ok(2));
        assert_eq!(parse_quantity("0.0001"), Ok(1));
        assert_eq!(parse_quantity("-1n"), Ok(-1));
        assert_eq!(parse_quantity("1e-100"), Ok(1));
    }

    #[test]
    fn rounds_sub_milli_strings_only() {
        let q = |s: &str| Quantity(s.to_string());
        assert_eq!(round_up_to_millis(&q("1500u")), Some(q("2m")));
        assert_eq!(round_up_to_millis(&q("0.0001")), Some(q("1m")));
        assert_eq!(round_up_to_millis(&q("100m")), None);
        assert_eq!(round_up_to_millis(&q("64Mi")), None);
        assert_eq!(round_up_to_millis(&q("junk")), None);
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "", "abc", "1x", "1.2.3", "Mi", "1e", "1e+", "1 Mi", ".", "--1", "1mi",
        ] {
            assert_eq!(
                parse_quantity(bad),
                Err(QuantityError::Syntax(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(
            parse_quantity("1e100"),
            Err(QuantityError::Overflow("1e100".to_string()))
        );
    }

    #[test]
    fn converts_cpu_and_bytes() {
        let q = |s: &str| Quantity(s.to_string());
        assert_eq!(cpu_millis(&q("0.1")), Ok(100));
        assert_eq!(cpu_millis(&q("250m")), Ok(250));
        assert_eq!(cpu_millis(&q("2")), Ok(2000));
        assert_eq!(bytes(&q("64Mi")), Ok(67_108_864));
        assert_eq!(bytes(&q("1G")), Ok(1_000_000_000));
        assert_eq!(bytes(&q("1.5")), Ok(2));
        assert_eq!(bytes(&q("100m")), Ok(1));
        assert_eq!(bytes(&q("-1.5")), Ok(-2));
        assert!(matches!(bytes(&q("10E")), Err(QuantityError::Overflow(_))));
        assert!(matches!(cpu_millis(&q("x")), Err(QuantityError::Syntax(_))));
    }
}
