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

/// The fields of a struct [`encode`] wrote (an array of its fields, in their order), read
/// one by one from the first: a reader that needs a record's first fields does not decode
/// the rest (a task's status carries its result, as JSON text that decoding parses).
pub struct Fields<'a> {
    de: rmp_serde::Deserializer<rmp_serde::decode::ReadReader<std::io::Cursor<&'a [u8]>>>,
    left: u32,
}

impl<'a> Fields<'a> {
    pub fn of(bytes: &'a [u8]) -> Result<Self, StoreError> {
        let not_fields = || StoreError::Encoding("not a record's fields".into());
        let (left, head) = match *bytes.first().ok_or_else(not_fields)? {
            b @ 0x90..=0x9f => (u32::from(b & 0x0f), 1),
            0xdc => (
                u32::from(u16::from_be_bytes(
                    bytes.get(1..3).ok_or_else(not_fields)?.try_into().expect("two bytes"),
                )),
                3,
            ),
            0xdd => (
                u32::from_be_bytes(bytes.get(1..5).ok_or_else(not_fields)?.try_into().expect("four bytes")),
                5,
            ),
            _ => return Err(not_fields()),
        };
        Ok(Self {
            de: rmp_serde::Deserializer::new(std::io::Cursor::new(&bytes[head..])),
            left,
        })
    }

    /// The next field, or `None` past the last one (a record of an earlier release).
    pub fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, StoreError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        T::deserialize(&mut self.de)
            .map(Some)
            .map_err(|e| StoreError::Encoding(e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Record {
        state: String,
        agent: Option<String>,
        count: u32,
        #[serde(with = "json_text_opt")]
        result: Option<serde_json::Value>,
    }

    #[test]
    fn a_records_first_fields_read_without_the_rest() {
        let record = Record {
            state: "SUCCEEDED".into(),
            agent: Some("a1".into()),
            count: 3,
            // Not JSON once cut short: reading the first fields never looks at it.
            result: Some(serde_json::json!({ "big": "x".repeat(70_000) })),
        };
        let mut bytes = encode(&record).unwrap();
        let mut fields = Fields::of(&bytes).unwrap();
        assert_eq!(fields.read::<String>().unwrap().as_deref(), Some("SUCCEEDED"));
        assert_eq!(fields.read::<Option<String>>().unwrap(), Some(Some("a1".into())));
        assert_eq!(fields.read::<u32>().unwrap(), Some(3));
        bytes.truncate(bytes.len() - 10);
        let mut fields = Fields::of(&bytes).unwrap();
        assert_eq!(fields.read::<String>().unwrap().as_deref(), Some("SUCCEEDED"));
        // Past the last field of a short record: none.
        let short = encode(&("QUEUED",)).unwrap();
        let mut fields = Fields::of(&short).unwrap();
        assert!(fields.read::<String>().unwrap().is_some() && fields.read::<String>().unwrap().is_none());
        assert!(Fields::of(&encode(&7u32).unwrap()).is_err());
    }
}
