//! Exact decimal numbers for the text formats: parsing, conversion to integer counts of a unit
//! (ticks, lots, asset units) and formatting back.
//!
//! Everything is exact: a value either is a whole number of the unit or it is refused; nothing
//! is rounded and no floating point is involved (a JSON float is read through its shortest
//! decimal text, which is the number the writer meant).

use rust_decimal::Decimal;
use serde_json::Value;

/// Most decimals an asset may declare; `10^18` still fits in an `i64`.
pub const MAX_DECIMALS: u32 = 18;

/// Why a text or JSON value is not a decimal number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not of the form `-?[0-9]+(.[0-9]+)?`.
    #[error("expected a decimal string like \"12.5\", got {0}")]
    Syntax(String),
    /// Well formed, but more than 28 significant digits or beyond ±7.9e28.
    #[error("decimal {0} is out of range (at most 28 significant digits)")]
    Range(String),
}

/// Parses a decimal string: an optional `-`, digits, and optionally `.` and more digits.
/// No exponent, no `+`, no blanks, no thousands separators.
pub fn parse_str(text: &str) -> Result<Decimal, ParseError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || !frac.is_none_or(all_digits) {
        return Err(ParseError::Syntax(quote(text)));
    }
    Decimal::from_str_exact(text).map_err(|_| ParseError::Range(quote(text)))
}

/// Reads a decimal from JSON: a decimal string (the documented form), or a JSON number
/// (an integer exactly; a float through its shortest text, e.g. `0.1` is exactly 0.1).
pub fn parse_json(value: &Value) -> Result<Decimal, ParseError> {
    match value {
        Value::String(text) => parse_str(text),
        Value::Number(number) => {
            if let Some(n) = number.as_i64() {
                Ok(Decimal::from(n))
            } else if let Some(n) = number.as_u64() {
                Ok(Decimal::from(n))
            } else {
                let text = number.to_string();
                let parsed = if text.contains(['e', 'E']) {
                    Decimal::from_scientific(&text)
                } else {
                    Decimal::from_str_exact(&text)
                };
                parsed.map_err(|_| ParseError::Range(text))
            }
        }
        other => Err(ParseError::Syntax(short_json(other))),
    }
}

/// `10^-decimals`: the value of one smallest unit of an asset with that many decimals.
pub fn unit_of(decimals: u32) -> Decimal {
    Decimal::new(1, decimals.min(MAX_DECIMALS))
}

/// The outcome of expressing a value as a whole number of some unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whole {
    /// `value = n * unit` exactly, and `n` fits in an `i64`.
    Exact(i64),
    /// `value` is not an integer multiple of `unit`.
    NotWhole,
    /// `value` is a multiple of `unit`, but the count does not fit in an `i64`; `negative`
    /// tells which end it is off.
    TooLarge {
        /// True if the count is below `i64::MIN`.
        negative: bool,
    },
}

/// Expresses `value` as a count of `unit` (which must be positive), exactly.
pub fn to_whole(value: Decimal, unit: Decimal) -> Whole {
    debug_assert!(unit.is_sign_positive() && !unit.is_zero());
    let negative = value.is_sign_negative() && !value.is_zero();
    let Some(count) = value.checked_div(unit) else {
        return Whole::TooLarge { negative };
    };
    // The quotient may have been rounded to 28 digits; multiplying back proves it exact.
    if !count.fract().is_zero() || count.checked_mul(unit) != Some(value) {
        return Whole::NotWhole;
    }
    match i64::try_from(count) {
        Ok(n) => Whole::Exact(n),
        Err(_) => Whole::TooLarge { negative },
    }
}

/// Formats `count * unit` exactly as a normalized decimal string: no exponent, no trailing
/// zeros after the point, no point for whole numbers (`"100.5"`, `"2"`, `"-0.25"`, `"0"`).
///
/// Works for every `i64` count and positive unit, even where the product would not fit in a
/// [`Decimal`].
pub fn format_scaled(count: i64, unit: Decimal) -> String {
    format_scaled_i128(count as i128, unit)
}

/// [`format_scaled`] for an `i128` count (perp cost bases, funding indexes).
pub fn format_scaled_i128(count: i128, unit: Decimal) -> String {
    // unit = mantissa * 10^-scale; the product's digits are count * mantissa.
    let mantissa = unit.mantissa().unsigned_abs();
    let scale = unit.scale() as usize;
    let negative = (count < 0) != unit.is_sign_negative() && count != 0 && mantissa != 0;
    // Little-endian decimal digits of |count|, multiplied in place by the mantissa
    // (< 2^96, so digit * mantissa + carry < 10 * 2^96 fits in a u128).
    let mut digits: Vec<u8> = Vec::with_capacity(80);
    let mut c = count.unsigned_abs();
    while c > 0 {
        digits.push((c % 10) as u8);
        c /= 10;
    }
    let mut carry: u128 = 0;
    for digit in digits.iter_mut() {
        let product = *digit as u128 * mantissa + carry;
        *digit = (product % 10) as u8;
        carry = product / 10;
    }
    while carry > 0 {
        digits.push((carry % 10) as u8);
        carry /= 10;
    }
    while digits.len() > 1 && digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.iter().all(|&d| d == 0) {
        return "0".to_string();
    }
    // Drop trailing fractional zeros.
    let mut scale = scale;
    let mut start = 0;
    while scale > 0 && digits[start] == 0 {
        start += 1;
        scale -= 1;
    }
    let digits = &digits[start..];
    let mut text = String::with_capacity(digits.len() + scale + 3);
    if negative {
        text.push('-');
    }
    if digits.len() <= scale {
        text.push_str("0.");
        text.extend(std::iter::repeat_n('0', scale - digits.len()));
        text.extend(digits.iter().rev().map(|&d| char::from(b'0' + d)));
    } else {
        let int_len = digits.len() - scale;
        for (i, &d) in digits.iter().rev().enumerate() {
            if i == int_len {
                text.push('.');
            }
            text.push(char::from(b'0' + d));
        }
    }
    text
}

/// Formats a decimal normalized (no trailing zeros), like [`format_scaled`].
pub fn format(value: Decimal) -> String {
    value.normalize().to_string()
}

fn quote(text: &str) -> String {
    let mut shown: String = text.chars().take(40).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}

/// A JSON value shortened for an error message.
pub fn short_json(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        let mut shown: String = text.chars().take(40).collect();
        shown.push('…');
        shown
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(text: &str) -> Decimal {
        parse_str(text).unwrap()
    }

    #[test]
    fn parses_strict_decimal_strings() {
        assert_eq!(d("100.5"), Decimal::new(1005, 1));
        assert_eq!(d("-0.25"), Decimal::new(-25, 2));
        assert_eq!(d("007"), Decimal::from(7));
        for bad in [
            "", "-", ".5", "5.", "1e3", "+1", " 1", "1 ", "1,000", "0x10", "1.2.3", "NaN", "--1",
        ] {
            assert!(
                matches!(parse_str(bad), Err(ParseError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_str("0.00000000000000000000000000001"),
            Err(ParseError::Range(_))
        ));
        assert!(matches!(
            parse_str("99999999999999999999999999999999"),
            Err(ParseError::Range(_))
        ));
    }

    #[test]
    fn parses_json_numbers_exactly() {
        assert_eq!(parse_json(&json!("1.10")).unwrap(), Decimal::new(110, 2));
        assert_eq!(parse_json(&json!(42)).unwrap(), Decimal::from(42));
        assert_eq!(
            parse_json(&json!(u64::MAX)).unwrap(),
            Decimal::from(u64::MAX)
        );
        assert_eq!(parse_json(&json!(0.1)).unwrap(), Decimal::new(1, 1));
        assert_eq!(parse_json(&json!(1e-7)).unwrap(), Decimal::new(1, 7));
        assert_eq!(parse_json(&json!(2.5e3)).unwrap(), Decimal::from(2500));
        assert!(parse_json(&json!(true)).is_err());
        assert!(parse_json(&json!(null)).is_err());
        assert!(parse_json(&json!(1e300)).is_err());
    }

    #[test]
    fn whole_counts_are_exact() {
        assert_eq!(to_whole(d("100.5"), d("0.5")), Whole::Exact(201));
        assert_eq!(to_whole(d("100.25"), d("0.5")), Whole::NotWhole);
        assert_eq!(to_whole(d("-3"), d("1.5")), Whole::Exact(-2));
        assert_eq!(to_whole(d("0"), d("0.01")), Whole::Exact(0));
        assert_eq!(to_whole(d("1"), d("3")), Whole::NotWhole);
        assert_eq!(
            to_whole(d("1.0000000000000000000000000001"), d("3")),
            Whole::NotWhole
        );
        assert_eq!(
            to_whole(d("10000000000000000000000"), d("0.001")),
            Whole::TooLarge { negative: false }
        );
        assert_eq!(
            to_whole(d("-79000000000000000000000000000"), d("0.001")),
            Whole::TooLarge { negative: true }
        );
    }

    #[test]
    fn formats_products_normalized() {
        assert_eq!(format_scaled(201, d("0.5")), "100.5");
        assert_eq!(format_scaled(200, d("0.50")), "100");
        assert_eq!(format_scaled(2, d("1")), "2");
        assert_eq!(format_scaled(0, d("0.01")), "0");
        assert_eq!(format_scaled(-5, d("0.01")), "-0.05");
        assert_eq!(format_scaled(7, unit_of(8)), "0.00000007");
        assert_eq!(format_scaled(123_456_789, unit_of(8)), "1.23456789");
        assert_eq!(format_scaled(1_000, d("1000")), "1000000");
        // Past what a Decimal holds: i64::MAX * 10^18.
        assert_eq!(
            format_scaled(i64::MAX, d("1000000000000000000")),
            format!("{}{}", i64::MAX, "0".repeat(18))
        );
        assert_eq!(
            format_scaled(i64::MIN, d("0.1")),
            "-922337203685477580.8".to_string()
        );
        assert_eq!(format_scaled_i128(i128::MIN, d("1")), i128::MIN.to_string());
        assert_eq!(
            format_scaled_i128(-3_000_000_000_000, d("0.000000000000001")),
            "-0.003"
        );
        assert_eq!(format(d("2.500")), "2.5");
        assert_eq!(format(d("-0.0")), "0");
    }
}
