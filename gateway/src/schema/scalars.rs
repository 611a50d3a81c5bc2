//! `Int64`: GraphQL's `Int` is 32-bit, and event sequence numbers, counts and durations are
//! not.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

/// A 64-bit signed integer. Sent as a JSON number; accepted as a JSON number or as a string
/// of decimal digits (for clients whose numbers hold only 53 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int64(pub i64);

#[Scalar(name = "Int64")]
impl ScalarType for Int64 {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::Number(n) => n
                .as_i64()
                .map(Int64)
                .ok_or_else(|| InputValueError::custom(format!("{n} is not a 64-bit integer"))),
            Value::String(s) => s
                .trim()
                .parse()
                .map(Int64)
                .map_err(|_| InputValueError::custom(format!("{s:?} is not a 64-bit integer"))),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::Number(self.0.into())
    }
}

impl From<u64> for Int64 {
    fn from(n: u64) -> Self {
        Int64(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl Int64 {
    /// The value as a cursor or count: never negative.
    pub fn non_negative(self, what: &str) -> async_graphql::Result<u64> {
        u64::try_from(self.0).map_err(|_| crate::error::coded("INVALID_INPUT", format!("{what} must not be negative")))
    }
}
