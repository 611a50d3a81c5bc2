//! How Troupe encodes what it stores and what crosses nodes: rmp-serde, with free-form JSON
//! carried as JSON text.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::StoreError;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec(value).map_err(|e| StoreError::Encoding(e.to_string()))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Encoding(e.to_string()))
}

/// Decodes a value and, when more follows it, a second one: how a message grows a field an
/// earlier release neither sends nor reads ([`decode`] reads the first value and leaves the
/// rest, so an earlier release takes such a message as it always did).
pub fn decode_then<T: DeserializeOwned, U: DeserializeOwned>(bytes: &[u8]) -> Result<(T, Option<U>), StoreError> {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    let first = T::deserialize(&mut de).map_err(|e| StoreError::Encoding(e.to_string()))?;
    let rest = bytes.get(de.position() as usize..).unwrap_or_default();
    match rest.is_empty() {
        true => Ok((first, None)),
        false => Ok((first, Some(decode(rest)?))),
    }
}

/// `#[serde(with = "troupe_runtime::codec::json_text")]` for a `serde_json::Value` field:
/// rmp-serde cannot decode into a self-describing `Value` reliably, JSON text round-trips.
pub mod json_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &serde_json::Value, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<serde_json::Value, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

/// Like [`json_text`] for an optional value.
pub mod json_text_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<serde_json::Value>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&v.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| serde_json::from_str(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}
