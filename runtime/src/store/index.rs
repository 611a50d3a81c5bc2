//! The event log's indexes: the (kind, seq) and (subject, seq) of every event, so that a
//! query for some kinds, or for one entity's events, reads only those. Each node keeps its
//! own beside its log: they are written with each event applied, rebuilt from the events of
//! an installed snapshot, trimmed with the log, and never replicated.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle, WriteTransaction};

use super::{StoreError, EVENTS};
use crate::events::Event;

/// (kind, seq) of every event.
pub(crate) const EVENT_KINDS: TableDefinition<(&str, u64), ()> = TableDefinition::new("event_kinds");
/// (subject, seq) of every event that has a subject.
pub(crate) const EVENT_SUBJECTS: TableDefinition<(&str, u64), ()> = TableDefinition::new("event_subjects");

/// Whether the table `name` is one of the indexes (not replicated, not in a snapshot).
pub(crate) fn is_index(name: &str) -> bool {
    name == EVENT_KINDS.name() || name == EVENT_SUBJECTS.name()
}

/// Both indexes, open in one write transaction.
pub(crate) struct Indexes<'t> {
    kinds: redb::Table<'t, (&'static str, u64), ()>,
    subjects: redb::Table<'t, (&'static str, u64), ()>,
}

impl<'t> Indexes<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            kinds: txn.open_table(EVENT_KINDS).map_err(StoreError::db)?,
            subjects: txn.open_table(EVENT_SUBJECTS).map_err(StoreError::db)?,
        })
    }

    /// Indexes `event`, stored under its seq.
    pub(crate) fn add(&mut self, event: &Event) -> Result<(), StoreError> {
        self.kinds
            .insert((event.kind.as_str(), event.seq), ())
            .map_err(StoreError::db)?;
        if let Some(subject) = &event.subject {
            self.subjects
                .insert((subject.as_str(), event.seq), ())
                .map_err(StoreError::db)?;
        }
        Ok(())
    }

    /// Takes `event` out of the indexes.
    pub(crate) fn remove(&mut self, event: &Event) -> Result<(), StoreError> {
        self.kinds
            .remove((event.kind.as_str(), event.seq))
            .map_err(StoreError::db)?;
        if let Some(subject) = &event.subject {
            self.subjects
                .remove((subject.as_str(), event.seq))
                .map_err(StoreError::db)?;
        }
        Ok(())
    }
}

/// Indexes by subject the events of a store written before that index existed (it is empty
/// while the log is not); a store that has it, or no event, is left as it is.
pub(crate) fn backfill_subjects(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut subjects = txn.open_table(EVENT_SUBJECTS).map_err(StoreError::db)?;
    let log = txn.open_table(EVENTS).map_err(StoreError::db)?;
    if !subjects.is_empty().map_err(StoreError::db)? || log.is_empty().map_err(StoreError::db)? {
        return Ok(());
    }
    for row in log.iter().map_err(StoreError::db)? {
        let (seq, body) = row.map_err(StoreError::db)?;
        let event = Event::stored(seq.value(), body.value())?;
        if let Some(subject) = &event.subject {
            subjects
                .insert((subject.as_str(), event.seq), ())
                .map_err(StoreError::db)?;
        }
    }
    Ok(())
}
