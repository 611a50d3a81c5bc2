//! What a write carries: puts, deletes and events, applied atomically in one commit.

use redb::TableDefinition;

use crate::events::NewEvent;

/// The key-value tables of the store. Values are rmp-serde encoded by their owners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Agents,
    Tasks,
    Tokens,
    Meta,
}

impl Table {
    pub(crate) const ALL: [Table; 4] = [Table::Agents, Table::Tasks, Table::Tokens, Table::Meta];

    pub(crate) fn definition(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(match self {
            Table::Agents => "agents",
            Table::Tasks => "tasks",
            Table::Tokens => "tokens",
            Table::Meta => "meta",
        })
    }
}

/// One change inside a batch.
#[derive(Debug, Clone)]
pub enum Op {
    Put { table: Table, key: String, value: Vec<u8> },
    Delete { table: Table, key: String },
    Event(NewEvent),
}

/// A set of changes committed together, in order.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub(crate) ops: Vec<Op>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(mut self, table: Table, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.ops.push(Op::Put {
            table,
            key: key.into(),
            value,
        });
        self
    }

    pub fn delete(mut self, table: Table, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { table, key: key.into() });
        self
    }

    pub fn event(mut self, event: NewEvent) -> Self {
        self.ops.push(Op::Event(event));
        self
    }

    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
