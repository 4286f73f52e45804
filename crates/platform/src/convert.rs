//! Conversions between the shared plain-Rust types and their protobuf forms,
//! for the gRPC and event adapters of every service.

use foodmesh_proto::common::v1 as pb;

use crate::{
    money::{Currency, Money, MoneyError},
    time::Timestamp,
    validation::Violations,
};

/// A time as a `google.protobuf.Timestamp`.
pub fn timestamp(ts: Timestamp) -> prost_types::Timestamp {
    let micros = ts.as_micros();
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).unwrap_or(0),
    }
}

/// A `google.protobuf.Timestamp` as a time, truncated to microseconds.
pub fn from_timestamp(ts: &prost_types::Timestamp) -> Timestamp {
    Timestamp::from_micros(ts.seconds.saturating_mul(1_000_000).saturating_add(i64::from(ts.nanos) / 1_000))
}

/// Money as `foodmesh.common.v1.Money`.
pub fn money(m: Money) -> pb::Money {
    pb::Money { currency_code: m.currency().code().to_owned(), amount_minor: m.amount_minor() }
}

/// `foodmesh.common.v1.Money` as money.
pub fn from_money(m: &pb::Money) -> Result<Money, MoneyError> {
    Money::new(Currency::parse(&m.currency_code)?, m.amount_minor)
}

/// A required money field of a request; problems are recorded under `field`.
pub fn money_field(value: Option<&pb::Money>, field: &str, violations: &mut Violations) -> Option<Money> {
    let Some(value) = value else {
        violations.add(field, "is required");
        return None;
    };
    match from_money(value) {
        Ok(m) => Some(m),
        Err(MoneyError::InvalidCurrency(_)) => {
            violations.add(format!("{field}.currency_code"), "must be an ISO 4217 code such as KRW");
            None
        }
        Err(err) => {
            violations.add(format!("{field}.amount_minor"), err.to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_with_microseconds_before_and_after_the_epoch() {
        for micros in [0, 1, 1_700_000_000_123_456, -1, -1_500_001] {
            let ts = Timestamp::from_micros(micros);
            assert_eq!(from_timestamp(&timestamp(ts)), ts, "{micros}");
            assert!((0..1_000_000_000).contains(&timestamp(ts).nanos));
        }
    }

    #[test]
    fn a_money_field_names_the_bad_part() {
        let mut v = Violations::new();
        assert!(money_field(None, "amount", &mut v).is_none());
        let bad_currency = pb::Money { currency_code: "won".into(), amount_minor: 1 };
        assert!(money_field(Some(&bad_currency), "amount", &mut v).is_none());
        let negative = pb::Money { currency_code: "KRW".into(), amount_minor: -5 };
        assert!(money_field(Some(&negative), "amount", &mut v).is_none());
        let fields: Vec<_> = v.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(fields, ["amount", "amount.currency_code", "amount.amount_minor"]);
    }
}
