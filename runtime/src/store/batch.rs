//! What a write carries: puts, deletes and events, applied atomically in one commit.

use redb::TableDefinition;

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

    pub(crate) fn definition(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.0)
    }
}

/// One change inside a batch.
#[derive(Debug, Clone)]
pub enum Op {
    Put { table: Table, key: String, value: Vec<u8> },
    Delete { table: Table, key: String },
    Event(NewEvent),
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
            Op::Event(_) => false,
        })
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
}
