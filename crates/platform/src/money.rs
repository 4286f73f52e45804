//! Money as integer minor units of one currency. Plain Rust, used by the
//! domain code of every service.

use std::fmt;

/// A three-letter ISO 4217 currency code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Korean won: the currency of the demo catalog. It has no minor unit.
    pub const KRW: Currency = Currency(*b"KRW");

    /// Parses an ISO 4217 code: exactly three ASCII upper-case letters.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        match code.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(MoneyError::InvalidCurrency(code.to_owned())),
        }
    }

    /// The code, for example "KRW".
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount of money: a non-negative count of a currency's minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    currency: Currency,
    amount_minor: i64,
}

/// Why a value is not valid money, or an operation on money failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not a three-letter upper-case ISO 4217 code.
    #[error("{0:?} is not an ISO 4217 currency code")]
    InvalidCurrency(String),
    /// Amounts are never negative.
    #[error("amount must not be negative, got {0}")]
    Negative(i64),
    /// Two amounts in different currencies cannot be added.
    #[error("cannot combine {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
    /// The result does not fit in 63 bits.
    #[error("amount overflows")]
    Overflow,
}

impl Money {
    /// An amount of `amount_minor` minor units of `currency`.
    pub fn new(currency: Currency, amount_minor: i64) -> Result<Self, MoneyError> {
        if amount_minor < 0 {
            return Err(MoneyError::Negative(amount_minor));
        }
        Ok(Self { currency, amount_minor })
    }

    /// Zero in `currency`.
    pub const fn zero(currency: Currency) -> Self {
        Self { currency, amount_minor: 0 }
    }

    /// The currency.
    pub const fn currency(&self) -> Currency {
        self.currency
    }

    /// The amount in minor units.
    pub const fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    /// The sum, in the same currency.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        let amount_minor = self.amount_minor.checked_add(other.amount_minor).ok_or(MoneyError::Overflow)?;
        Ok(Money { currency: self.currency, amount_minor })
    }

    /// This amount times a count, for example a unit price times a quantity.
    pub fn checked_mul(self, count: u32) -> Result<Money, MoneyError> {
        let amount_minor = self.amount_minor.checked_mul(i64::from(count)).ok_or(MoneyError::Overflow)?;
        Ok(Money { currency: self.currency, amount_minor })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_minor, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn krw(amount: i64) -> Money {
        Money::new(Currency::KRW, amount).expect("valid")
    }

    #[test]
    fn currency_codes_are_three_upper_case_letters() {
        assert_eq!(Currency::parse("USD").map(|c| c.to_string()), Ok("USD".to_owned()));
        for bad in ["usd", "US", "USDT", "", "U$D", "ÜSD"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn negative_amounts_are_refused() {
        assert_eq!(Money::new(Currency::KRW, -1), Err(MoneyError::Negative(-1)));
    }

    #[test]
    fn adding_sums_amounts_of_one_currency() {
        assert_eq!(krw(1500).checked_add(krw(2500)), Ok(krw(4000)));
    }

    #[test]
    fn adding_two_currencies_fails() {
        let usd = Money::new(Currency::parse("USD").expect("valid"), 1).expect("valid");
        assert!(matches!(krw(1).checked_add(usd), Err(MoneyError::CurrencyMismatch(..))));
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        assert_eq!(krw(i64::MAX).checked_add(krw(1)), Err(MoneyError::Overflow));
        assert_eq!(krw(i64::MAX / 2 + 1).checked_mul(2), Err(MoneyError::Overflow));
        assert_eq!(krw(12_000).checked_mul(3), Ok(krw(36_000)));
    }
}
