//! Kubernetes resource quantities ("100m", "64Mi", "1.5", "2e3").

use crate::error::ConfigError;

/// A parsed quantity, held exactly in billionths of a unit (nano units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ParsedQuantity {
    nanos: i128,
}

impl ParsedQuantity {
    /// The zero quantity.
    pub const ZERO: ParsedQuantity = ParsedQuantity { nanos: 0 };

    /// The quantity in billionths of a unit.
    pub fn nanos(self) -> i128 {
        self.nanos
    }

    /// The value in thousandths, rounded up (Go's `Quantity.MilliValue`).
    pub fn milli_value(self) -> i64 {
        clamp(div_ceil(self.nanos, 1_000_000))
    }

    /// The value in units, rounded up (Go's `Quantity.Value`).
    pub fn value(self) -> i64 {
        clamp(div_ceil(self.nanos, 1_000_000_000))
    }

    /// Whether the quantity is zero.
    pub fn is_zero(self) -> bool {
        self.nanos == 0
    }

    /// The sum of two quantities (saturating).
    pub fn plus(self, other: ParsedQuantity) -> ParsedQuantity {
        ParsedQuantity {
            nanos: self.nanos.saturating_add(other.nanos),
        }
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && a > 0 {
        q + 1
    } else {
        q
    }
}

fn clamp(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Parses a quantity in the Kubernetes syntax (a signed decimal number with
/// an optional binary, decimal or exponent suffix), with the API server's
/// parser: values finer than a thousandth are rounded up to one, as the API
/// server's defaults round them.
pub fn parse_quantity(text: &str) -> Result<ParsedQuantity, String> {
    berth_manifest::parse_quantity(text.trim())
        .map(|millis| ParsedQuantity {
            nanos: millis.saturating_mul(1_000_000),
        })
        .map_err(|e| e.to_string())
}

/// Parses a quantity, naming where it came from in the error.
pub(crate) fn quantity(
    what: impl FnOnce() -> String,
    text: &str,
) -> Result<ParsedQuantity, ConfigError> {
    parse_quantity(text).map_err(|reason| ConfigError::InvalidQuantity {
        what: what(),
        value: text.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(parse_quantity("50m").unwrap().milli_value(), 50);
        assert_eq!(parse_quantity("1").unwrap().milli_value(), 1000);
        assert_eq!(parse_quantity("0.5").unwrap().milli_value(), 500);
        assert_eq!(parse_quantity("16Mi").unwrap().value(), 16 << 20);
        assert_eq!(parse_quantity("1Gi").unwrap().value(), 1 << 30);
        assert_eq!(parse_quantity("64M").unwrap().value(), 64_000_000);
        assert_eq!(parse_quantity("2e3").unwrap().value(), 2000);
        assert_eq!(parse_quantity("1.5Ki").unwrap().value(), 1536);
        assert_eq!(
            parse_quantity("100n").unwrap().milli_value(),
            1,
            "rounds up"
        );
        assert_eq!(parse_quantity("-1").unwrap().value(), -1);
        assert!(parse_quantity("12x").is_err());
        assert!(parse_quantity("").is_err());
        assert!(parse_quantity("1.2.3").is_err());
    }
}
