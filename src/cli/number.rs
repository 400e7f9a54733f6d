//! The one grammar of the command's numeric options: `replay --capacity` and `--max-requests`,
//! `transcribe --cache-mb`, `--chunk-mb` and `--checkpoint-secs`.
//!
//! A number is written in decimal: ASCII digits, with an optional `+` (or `-`) before them,
//! a fraction (`0.5`, `.5`, `5.`) and an exponent (`1e3`, `2.5E-2`); blanks around it are
//! ignored. It is read exactly, as the decimal written ([`Decimal`]): no binary floating
//! point, so `0.7` is seven tenths and `1e-400` is not 0. Then the option checks the value:
//!
//! * an option of whole numbers takes any spelling of one (`1e3`, `1000.0`) and refuses a
//!   fraction (`1.5`) rather than rounding or cutting it;
//! * a number past the option's largest value is refused, naming that value, and one below
//!   its least (a negative one) likewise: nothing is clamped;
//! * `-0` is 0.
//!
//! Refused as not numbers, with the character named: digit group separators (`1_000`,
//! `1,000`), other bases (`0x10`), unit suffixes (`16MB`, `5k`, `30s`: the unit is in the
//! option's name), digits of other scripts (`٥`, `５`); and `inf` and `nan` as not finite.
//! Only `--capacity` takes a `%` after the number.
//!
//! Each option had a grammar of its own: `--capacity 1e2%` ran but `--capacity 1e3` was not a
//! number, `--checkpoint-secs` took `1e3` but `--cache-mb` and `--max-requests` did not, and a
//! number past a type's range was taken as its largest (`--capacity 99999999999999999999`
//! printed "18,446,744,073,709,551,615 entries", a figure nobody gave).

use std::str::FromStr;

/// Why a value is refused: not a number of the grammar, or a number the option does not
/// take. Each says what is wrong; the option's parser adds what it takes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// Nothing but blanks.
    #[error("no number given")]
    Empty,
    /// A character that has no place in a number where it stands.
    #[error("{0:?} is not part of a number")]
    Unexpected(char),
    /// A sign or a point with no digit.
    #[error("no digits")]
    NoDigits,
    /// An `e` with no digit after it (or after its sign).
    #[error("no digits in the exponent")]
    NoExponentDigits,
    /// `inf`, `infinity` or `nan`, in any case, with any sign.
    #[error("not a finite number")]
    NotFinite,
    /// Below 0 (`-0` is 0).
    #[error("a negative number")]
    Negative,
    /// A fraction where the option counts in whole numbers.
    #[error("not a whole number")]
    Fraction,
    /// Below the option's least value, shown.
    #[error("less than {0}")]
    Below(String),
    /// Past the option's largest value, shown.
    #[error("more than {0}")]
    Above(String),
    /// 0 where the option needs more.
    #[error("zero")]
    Zero,
}

/// A number as written, exactly: `digits × 10^exponent`, and its sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decimal {
    /// Below 0; never set for 0.
    negative: bool,
    /// The significant digits (values 0–9), without leading or trailing zeros: empty for 0.
    digits: Vec<u8>,
    /// A power of ten, saturated: an exponent past `i64`'s range is a number past any
    /// option's largest, or smaller than any fraction of one shown.
    exponent: i64,
}

impl FromStr for Decimal {
    type Err = NumberError;

    fn from_str(text: &str) -> Result<Decimal, NumberError> {
        let text = text.trim();
        let (negative, unsigned) = match text.as_bytes().first() {
            None => return Err(NumberError::Empty),
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            Some(_) => (false, text),
        };
        if ["inf", "infinity", "nan"]
            .iter()
            .any(|word| unsigned.eq_ignore_ascii_case(word))
        {
            return Err(NumberError::NotFinite);
        }
        let mut digits = Vec::new();
        let mut exponent: i64 = 0;
        let mut point = false;
        let mut chars = unsigned.chars().peekable();
        while let Some(&c) = chars.peek() {
            match c {
                '0'..='9' => {
                    digits.push(c as u8 - b'0');
                    if point {
                        exponent = exponent.saturating_sub(1);
                    }
                }
                '.' if !point => point = true,
                'e' | 'E' if !digits.is_empty() => break,
                other => return Err(NumberError::Unexpected(other)),
            }
            chars.next();
        }
        if digits.is_empty() {
            return Err(NumberError::NoDigits);
        }
        if chars.next().is_some() {
            let sign = match chars.peek() {
                Some('-') => -1,
                Some('+') => 1,
                _ => 0,
            };
            if sign != 0 {
                chars.next();
            }
            let mut power: i64 = 0;
            let mut seen = false;
            for c in chars {
                // ASCII digits only: `to_digit` takes no other script's.
                let digit = c.to_digit(10).ok_or(NumberError::Unexpected(c))?;
                power = power.saturating_mul(10).saturating_add(i64::from(digit));
                seen = true;
            }
            if !seen {
                return Err(NumberError::NoExponentDigits);
            }
            let power = if sign < 0 { -power } else { power };
            exponent = exponent.saturating_add(power);
        }
        let first = digits.iter().position(|&d| d != 0).unwrap_or(digits.len());
        digits.drain(..first);
        while digits.last() == Some(&0) {
            digits.pop();
            exponent = exponent.saturating_add(1);
        }
        Ok(Decimal {
            negative: negative && !digits.is_empty(),
            digits,
            exponent,
        })
    }
}

impl Decimal {
    /// Whether it is 0 (`-0` included).
    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Whether it is below 0.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// `|self| × factor × 10^shift`, exactly: its whole part (`None` past `u128::MAX`), and
    /// whether a fraction was left over.
    pub fn scaled(&self, factor: u64, shift: i64) -> (Option<u128>, bool) {
        if self.is_zero() || factor == 0 {
            return (Some(0), false);
        }
        // The digits of `digits × factor`, most significant first.
        let mut product = Vec::with_capacity(self.digits.len() + 20);
        let mut carry: u128 = 0;
        for &digit in self.digits.iter().rev() {
            let sum = u128::from(digit) * u128::from(factor) + carry;
            product.push((sum % 10) as u8);
            carry = sum / 10;
        }
        while carry > 0 {
            product.push((carry % 10) as u8);
            carry /= 10;
        }
        product.reverse();
        let exponent = self.exponent.saturating_add(shift);
        if exponent >= 0 {
            return (to_u128(&product, exponent.unsigned_abs()), false);
        }
        let cut = usize::try_from(exponent.unsigned_abs()).unwrap_or(usize::MAX);
        if cut >= product.len() {
            // Below 1, and not 0.
            return (Some(0), true);
        }
        let (kept, dropped) = product.split_at(product.len() - cut);
        (to_u128(kept, 0), dropped.iter().any(|&d| d != 0))
    }

    /// The whole number it is, in `least..=most`.
    pub fn whole_in(&self, least: u64, most: u64) -> Result<u64, NumberError> {
        if self.negative {
            return Err(NumberError::Negative);
        }
        let (whole, fraction) = self.scaled(1, 0);
        if fraction {
            return Err(NumberError::Fraction);
        }
        match whole.and_then(|n| u64::try_from(n).ok()) {
            Some(n) if n < least => Err(NumberError::Below(least.to_string())),
            Some(n) if n <= most => Ok(n),
            _ => Err(NumberError::Above(most.to_string())),
        }
    }

    /// The number in plain digits (`0.005`, `1200`), or as `1.2e-300` where those would be
    /// more than 12 characters: for echoing a percent back.
    pub fn shown(&self) -> String {
        let sign = if self.negative { "-" } else { "" };
        if self.is_zero() {
            return "0".to_owned();
        }
        let digits: String = self.digits.iter().map(|&d| char::from(b'0' + d)).collect();
        let len = i64::try_from(digits.len()).unwrap_or(i64::MAX);
        // The power of ten of the first digit.
        let magnitude = self.exponent.saturating_add(len - 1);
        let plain = if self.exponent >= 0 {
            usize::try_from(self.exponent)
                .ok()
                .filter(|&zeros| zeros <= 12)
                .map(|zeros| format!("{digits}{}", "0".repeat(zeros)))
        } else if magnitude >= 0 {
            let point = usize::try_from(magnitude + 1).unwrap_or(digits.len());
            Some(format!("{}.{}", &digits[..point], &digits[point..]))
        } else {
            usize::try_from(-1 - magnitude)
                .ok()
                .filter(|&zeros| zeros <= 12)
                .map(|zeros| format!("0.{}{digits}", "0".repeat(zeros)))
        };
        match plain {
            Some(plain) if plain.len() <= 12 => format!("{sign}{plain}"),
            _ if digits.len() == 1 => format!("{sign}{digits}e{magnitude}"),
            _ => format!("{sign}{}.{}e{magnitude}", &digits[..1], &digits[1..]),
        }
    }
}

/// `digits` (most significant first) followed by `zeros` zeros, as a number; `None` past
/// `u128::MAX`. The loops end early on overflow, so a long or huge number costs little.
fn to_u128(digits: &[u8], zeros: u64) -> Option<u128> {
    let mut n: u128 = 0;
    for &digit in digits {
        n = n.checked_mul(10)?.checked_add(u128::from(digit))?;
    }
    if n == 0 {
        return Some(0);
    }
    for _ in 0..zeros {
        n = n.checked_mul(10)?;
    }
    Some(n)
}

/// A whole number in `least..=most`, in the grammar above.
pub fn whole(text: &str, least: u64, most: u64) -> Result<u64, NumberError> {
    text.parse::<Decimal>()?.whole_in(least, most)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(text: &str) -> Decimal {
        text.parse().expect(text)
    }

    #[test]
    fn every_spelling_of_a_number_reads_as_its_value() {
        for (text, value) in [
            ("5", 5),
            ("+5", 5),
            (" 5 ", 5),
            ("\t1000\n", 1000),
            ("1e3", 1000),
            ("1E3", 1000),
            ("1e+3", 1000),
            ("1000.0", 1000),
            ("1.5e3", 1500),
            ("15000e-1", 1500),
            ("5.", 5),
            ("0005", 5),
            ("-0", 0),
            ("0e999999999999999999999", 0),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(whole(text, 0, u64::MAX), Ok(value), "{text}");
        }
        assert_eq!(exact(".5").scaled(10, 0), (Some(5), false));
    }

    #[test]
    fn what_is_not_a_number_is_named() {
        use NumberError::*;
        for (text, error) in [
            ("", Empty),
            ("   ", Empty),
            ("1_000", Unexpected('_')),
            ("1,000", Unexpected(',')),
            ("0x10", Unexpected('x')),
            ("16MB", Unexpected('M')),
            ("5k", Unexpected('k')),
            ("٥", Unexpected('٥')),
            ("５", Unexpected('５')),
            ("1e٣", Unexpected('٣')),
            ("1.2.3", Unexpected('.')),
            ("e5", Unexpected('e')),
            ("--5", Unexpected('-')),
            ("5 0", Unexpected(' ')),
            ("+", NoDigits),
            ("-", NoDigits),
            (".", NoDigits),
            ("1e", NoExponentDigits),
            ("1e-", NoExponentDigits),
            ("inf", NotFinite),
            ("-Infinity", NotFinite),
            ("NaN", NotFinite),
        ] {
            assert_eq!(text.parse::<Decimal>(), Err(error), "{text:?}");
        }
    }

    #[test]
    fn a_whole_number_option_refuses_fractions_and_clamps_nothing() {
        use NumberError::*;
        assert_eq!(whole("1.5", 1, 10), Err(Fraction));
        assert_eq!(whole("1e-400", 1, 10), Err(Fraction));
        assert_eq!(whole("0", 1, 10), Err(Below("1".to_owned())));
        assert_eq!(whole("-5", 1, 10), Err(Negative));
        assert_eq!(whole("-1e999", 1, 10), Err(Negative));
        assert_eq!(whole("11", 1, 10), Err(Above("10".to_owned())));
        for huge in [
            "18446744073709551616",
            "99999999999999999999999999999999999999999",
            "1e39",
            "1e9223372036854775807",
            "1e99999999999999999999",
        ] {
            assert_eq!(whole(huge, 1, u64::MAX), Err(Above(u64::MAX.to_string())));
        }
        // Not a long wait for a long number.
        let long = "1".repeat(1 << 20);
        assert_eq!(whole(&long, 1, 10), Err(Above("10".to_owned())));
    }

    #[test]
    fn scaling_is_exact_in_decimal() {
        // 0.7 × 11,000 / 100 is 76.999… in binary floating point.
        assert_eq!(exact("0.7").scaled(11_000, -2), (Some(77), false));
        assert_eq!(exact("1e-400").scaled(u64::MAX, -2), (Some(0), true));
        assert_eq!(
            exact("100").scaled(u64::MAX, -2),
            (Some(u128::from(u64::MAX)), false)
        );
        assert_eq!(exact("0.0015").scaled(1, 9), (Some(1_500_000), false));
        assert_eq!(
            exact("1.0000000001").scaled(1, 9),
            (Some(1_000_000_000), true)
        );
        assert_eq!(exact("1e39").scaled(1, 0), (None, false));
        assert_eq!(
            exact("1e-9223372036854775808").scaled(1, 9),
            (Some(0), true)
        );
    }

    #[test]
    fn a_number_is_shown_short() {
        for (text, shown) in [
            ("10", "10"),
            ("1e2", "100"),
            ("0.5", "0.5"),
            (".50", "0.5"),
            ("0.001", "0.001"),
            ("1e-300", "1e-300"),
            ("99.99999999999999", "9.999999999999999e1"),
            ("-0", "0"),
            ("-2.5", "-2.5"),
            ("1e20", "1e20"),
        ] {
            assert_eq!(exact(text).shown(), shown, "{text}");
        }
    }
}
