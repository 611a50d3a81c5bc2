//! What a write carries: puts, deletes and events, applied atomically in one commit.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::events::NewEvent;

/// A key-value table of the store: string keys, byte values (rmp-serde encoded by their
/// owners). Each crate declares the tables it owns as constants, so the store itself knows
/// no domain:
///
/// ```
/// use troupe_runtime::store::Table;
/// pub const WIDGETS: Table = Table::new("widgets");
/// assert_eq!(WIDGETS.name(), "widgets");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Table(&'static str);

impl Table {
    pub const fn new(name: &'static str) -> Self {
        Self(name)
    }

    pub fn name(self) -> &'static str {
        self.0
    }

    /// The table of this name, as a decoded log entry names it. Names are interned: a node
    /// knows a few dozen tables, and one that came from a peer stays known.
    pub fn named(name: &str) -> Self {
        static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
        let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
        match names.iter().find(|n| **n == name) {
            Some(n) => Self(n),
            None => {
                let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
                names.push(leaked);
                Self(leaked)
            }
        }
    }

    pub(crate) fn definition(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.0)
    }
}

/// One change inside a batch.
#[derive(Debug, Clone)]
pub enum Op {
    Put {
        table: Table,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        key: String,
    },
    Event(NewEvent),
    /// A condition of the whole batch: `table[key]` holds `value` (`None`: holds nothing)
    /// when the batch is applied, else none of the batch is applied and its writer is told
    /// [`StoreError::Stale`]. Checked by the state machine, so every member decides alike:
    /// a stale owner (a node declared down, a lost race) cannot overwrite what moved on.
    Require {
        table: Table,
        key: String,
        value: Option<Vec<u8>>,
    },
}

/// The key of [`super::META`] that holds the term of the last log entry applied: every
/// member writes it alike as it applies the first entry of a term (see [`Batch::led_in`]).
pub const TERM_KEY: &str = "raft.term";

/// How [`TERM_KEY`] holds a term.
pub(crate) fn term_value(term: u64) -> Vec<u8> {
    term.to_be_bytes().to_vec()
}

/// A set of changes committed together, in order. Every durable write of a node is a batch:
/// they become the replicated log's entries once the control plane is replicated.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub(crate) ops: Vec<Op>,
    /// Each event's stored form, in the order of its events, encoded as it is added so the
    /// writer thread does not have to (empty when encoding failed: the writer retries).
    pub(crate) bodies: Vec<Vec<u8>>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(mut self, table: Table, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.push(Op::Put {
            table,
            key: key.into(),
            value,
        });
        self
    }

    pub fn delete(mut self, table: Table, key: impl Into<String>) -> Self {
        self.push(Op::Delete { table, key: key.into() });
        self
    }

    /// Applies the batch only if `table[key]` holds `value` then (see [`Op::Require`]).
    pub fn require(mut self, table: Table, key: impl Into<String>, value: Option<Vec<u8>>) -> Self {
        self.push(Op::Require {
            table,
            key: key.into(),
            value,
        });
        self
    }

    /// Applies the batch only if the log entry that carries it belongs to `term`: proposed
    /// by the leader of that term, while it still led. For a leader's decisions: forwarded
    /// to the next leader by a node that no longer leads, they are refused
    /// ([`StoreError::Stale`]) wherever they are applied. A leader frozen in the middle of
    /// judging its members counted its own pause as their silence and, thawed after
    /// another member took the lead, had both others declared DOWN through it.
    pub fn led_in(self, term: u64) -> Self {
        self.require(super::META, TERM_KEY, Some(term_value(term)))
    }

    /// Whether the batch is a leader's decision ([`Batch::led_in`]).
    pub fn is_led(&self) -> bool {
        self.ops
            .iter()
            .any(|op| matches!(op, Op::Require { table, key, .. } if *table == super::META && key == TERM_KEY))
    }

    pub fn event(mut self, event: NewEvent) -> Self {
        self.push(Op::Event(event));
        self
    }

    pub fn push(&mut self, op: Op) {
        if let Op::Event(e) = &op {
            self.bodies.push(e.body().unwrap_or_default());
        }
        self.ops.push(op);
    }

    /// Appends every op of `other`, after this batch's own.
    pub fn extend(&mut self, other: Batch) {
        self.ops.extend(other.ops);
        self.bodies.extend(other.bodies);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether the batch writes to (puts into or deletes from) `table`.
    pub fn touches(&self, table: Table) -> bool {
        self.ops.iter().any(|op| match op {
            Op::Put { table: t, .. } | Op::Delete { table: t, .. } => *t == table,
            Op::Event(_) | Op::Require { .. } => false,
        })
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// About how many bytes the batch takes in a log entry: its keys, values and encoded
    /// events, and a few bytes of framing per op. What the writer bounds its groups by.
    pub fn wire_bytes(&self) -> usize {
        const PER_OP: usize = 8;
        let ops: usize = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { table, key, value } => table.name().len() + key.len() + value.len(),
                Op::Delete { table, key } => table.name().len() + key.len(),
                Op::Require { table, key, value } => {
                    table.name().len() + key.len() + value.as_ref().map_or(0, Vec::len)
                }
                Op::Event(_) => 0,
            } + PER_OP)
            .sum();
        ops + self.bodies.iter().map(Vec::len).sum::<usize>()
    }

    /// Makes the batch ready to go into the log: every event encoded, the whole small enough
    /// for one log entry ([`MAX_BATCH_BYTES`]). A batch that fails here is refused alone,
    /// before it is proposed, so applying a committed entry never meets a bad batch.
    pub(crate) fn seal(&mut self) -> Result<(), StoreError> {
        // Each event was encoded as it was pushed; only one that failed then is encoded again.
        let events = self.ops.iter().filter(|op| matches!(op, Op::Event(_))).count();
        if self.bodies.iter().any(Vec::is_empty) || self.bodies.len() != events {
            let mut bodies = Vec::with_capacity(events);
            for op in &self.ops {
                if let Op::Event(e) = op {
                    bodies.push(e.body()?);
                }
            }
            self.bodies = bodies;
        }
        let bytes = self.wire_bytes();
        if bytes > MAX_BATCH_BYTES {
            return Err(StoreError::Rejected(format!(
                "a write of {bytes} bytes is larger than a log entry may be ({MAX_BATCH_BYTES} bytes)"
            )));
        }
        Ok(())
    }
}

/// The most one batch may take in a log entry: 8 MiB. A group of batches is one entry, and
/// the writer takes no further batch into a group past 4 MiB, so an entry stays below
/// 12 MiB, under 16 MiB: ractor_cluster's frame limit, the smaller of the two transports
/// a Raft message may take (the lane's is 256 MiB). A node's `body_limit_bytes` is held at
/// or below half of it (see `config`), so what one request carries always fits.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

/// One op as a log entry carries it: events as their stored bodies.
#[derive(Serialize)]
enum WireRef<'a> {
    Put(&'a str, &'a str, &'a serde_bytes::Bytes),
    Delete(&'a str, &'a str),
    Event(&'a serde_bytes::Bytes),
    Require(&'a str, &'a str, Option<&'a serde_bytes::Bytes>),
}

#[derive(Deserialize)]
enum Wire {
    Put(String, String, serde_bytes::ByteBuf),
    Delete(String, String),
    Event(serde_bytes::ByteBuf),
    Require(String, String, Option<serde_bytes::ByteBuf>),
}

impl Serialize for Batch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.ops.len()))?;
        let mut bodies = self.bodies.iter();
        for op in &self.ops {
            match op {
                Op::Put { table, key, value } => {
                    seq.serialize_element(&WireRef::Put(table.name(), key, serde_bytes::Bytes::new(value)))?
                }
                Op::Delete { table, key } => seq.serialize_element(&WireRef::Delete(table.name(), key))?,
                Op::Require { table, key, value } => seq.serialize_element(&WireRef::Require(
                    table.name(),
                    key,
                    value.as_deref().map(serde_bytes::Bytes::new),
                ))?,
                Op::Event(_) => match bodies.next() {
                    Some(body) if !body.is_empty() => {
                        seq.serialize_element(&WireRef::Event(serde_bytes::Bytes::new(body)))?
                    }
                    _ => return Err(S::Error::custom("an event of the batch was not encoded")),
                },
            }
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let wire = Vec::<Wire>::deserialize(d)?;
        let mut batch = Batch::default();
        for op in wire {
            match op {
                Wire::Put(table, key, value) => batch.ops.push(Op::Put {
                    table: Table::named(&table),
                    key,
                    value: value.into_vec(),
                }),
                Wire::Delete(table, key) => batch.ops.push(Op::Delete {
                    table: Table::named(&table),
                    key,
                }),
                Wire::Require(table, key, value) => batch.ops.push(Op::Require {
                    table: Table::named(&table),
                    key,
                    value: value.map(serde_bytes::ByteBuf::into_vec),
                }),
                Wire::Event(body) => {
                    let event = NewEvent::from_body(&body).map_err(D::Error::custom)?;
                    batch.ops.push(Op::Event(event));
                    batch.bodies.push(body.into_vec());
                }
            }
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_a_batch_does_not_encode_again_the_events_encoded_as_they_were_pushed() {
        let event = |i: i32| NewEvent::new("THING_DONE", Some(format!("t{i}")), serde_json::json!({ "i": i }));
        let mut batch = Batch::new()
            .event(event(1))
            .put(Table::new("things"), "k", vec![1])
            .event(event(2));
        let encoded: Vec<*const u8> = batch.bodies.iter().map(|b| b.as_ptr()).collect();
        batch.seal().unwrap();
        let sealed: Vec<*const u8> = batch.bodies.iter().map(|b| b.as_ptr()).collect();
        assert_eq!(sealed, encoded, "the bodies were encoded again");
        // One whose encoding is missing is encoded now, in its place among the others.
        batch.bodies[1].clear();
        batch.seal().unwrap();
        let again = NewEvent::from_body(&batch.bodies[1]).unwrap();
        assert_eq!(again.subject.as_deref(), Some("t2"));
    }
}
