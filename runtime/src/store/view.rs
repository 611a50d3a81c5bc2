//! A consistent read view of the store (one redb read transaction). Views run on blocking
//! threads through [`super::Store::view`]; several reads in one view see one snapshot.

use std::ops::Bound;

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, TableError};

use super::{StoreError, Table, EVENTS, EVENT_KINDS, EVENT_SUBJECTS};
use crate::events::Event;

/// Which events of a filtered read: the first ones after a cursor, or the newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    After(u64),
    Last,
}

pub struct View<'t> {
    txn: &'t ReadTransaction,
}

impl<'t> View<'t> {
    pub(super) fn new(txn: &'t ReadTransaction) -> Self {
        Self { txn }
    }

    /// `None` when the table was never written: a table is created by its first write.
    fn table(&self, table: Table) -> Result<Option<redb::ReadOnlyTable<&'static str, &'static [u8]>>, StoreError> {
        match self.txn.open_table(table.definition()) {
            Ok(t) => Ok(Some(t)),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(StoreError::db(e)),
        }
    }

    pub fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(t) = self.table(table)? else { return Ok(None) };
        Ok(t.get(key).map_err(StoreError::db)?.map(|v| v.value().to_vec()))
    }

    /// Calls `f` with each entry whose key is after `after` (all when `None`), in key order,
    /// while it returns `true`.
    pub fn scan(
        &self,
        table: Table,
        after: Option<&str>,
        mut f: impl FnMut(&str, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let Some(t) = self.table(table)? else { return Ok(()) };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        for entry in t.range::<&str>((lower, Bound::Unbounded)).map_err(StoreError::db)? {
            let (k, v) = entry.map_err(StoreError::db)?;
            if !f(k.value(), v.value())? {
                break;
            }
        }
        Ok(())
    }

    /// Calls `f` with each entry whose key begins with `prefix` (the key itself included), in
    /// key order, while it returns `true`: the records of one owner in a table keyed
    /// `<owner>/…`.
    pub fn scan_prefix(
        &self,
        table: Table,
        prefix: &str,
        mut f: impl FnMut(&str, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let Some(t) = self.table(table)? else { return Ok(()) };
        for entry in t
            .range::<&str>((Bound::Included(prefix), Bound::Unbounded))
            .map_err(StoreError::db)?
        {
            let (k, v) = entry.map_err(StoreError::db)?;
            if !k.value().starts_with(prefix) || !f(k.value(), v.value())? {
                break;
            }
        }
        Ok(())
    }

    /// How many entries the table holds.
    pub fn len(&self, table: Table) -> Result<u64, StoreError> {
        match self.table(table)? {
            Some(t) => t.len().map_err(StoreError::db),
            None => Ok(0),
        }
    }

    pub fn last_seq(&self) -> Result<u64, StoreError> {
        let t = self.txn.open_table(EVENTS).map_err(StoreError::db)?;
        let last = t.last().map_err(StoreError::db)?.map_or(0, |(k, _)| k.value());
        Ok(last)
    }

    /// Refuses a cursor the log cannot continue from without a gap.
    fn check_cursor(&self, after: u64) -> Result<(), StoreError> {
        let t = self.txn.open_table(EVENTS).map_err(StoreError::db)?;
        let last = t.last().map_err(StoreError::db)?.map_or(0, |(k, _)| k.value());
        if after > last {
            return Err(StoreError::FutureCursor { after, last });
        }
        // Sequence numbers are dense from 1, so anything below the first kept one existed.
        let oldest = t.first().map_err(StoreError::db)?.map(|(k, _)| k.value());
        if let Some(oldest) = oldest.filter(|o| after.saturating_add(1) < *o) {
            return Err(StoreError::Compacted { after, oldest });
        }
        Ok(())
    }

    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.check_cursor(after)?;
        let t = self.txn.open_table(EVENTS).map_err(StoreError::db)?;
        let mut out = Vec::new();
        for entry in t.range(after.saturating_add(1)..).map_err(StoreError::db)? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry.map_err(StoreError::db)?;
            out.push(Event::stored(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// The newest `limit` events (only `kinds`, when given, read through the kind index),
    /// oldest first.
    pub fn last_events(&self, kinds: Option<&[String]>, limit: usize) -> Result<Vec<Event>, StoreError> {
        let log = self.txn.open_table(EVENTS).map_err(StoreError::db)?;
        let mut seqs = Vec::new();
        match kinds {
            None => {
                for entry in log.iter().map_err(StoreError::db)?.rev().take(limit) {
                    seqs.push(entry.map_err(StoreError::db)?.0.value());
                }
            }
            Some(kinds) => {
                let index = self.txn.open_table(EVENT_KINDS).map_err(StoreError::db)?;
                for kind in kinds {
                    let range = index
                        .range((kind.as_str(), 0)..=(kind.as_str(), u64::MAX))
                        .map_err(StoreError::db)?;
                    for entry in range.rev().take(limit) {
                        seqs.push(entry.map_err(StoreError::db)?.0.value().1);
                    }
                }
            }
        }
        seqs.sort_unstable_by(|a, b| b.cmp(a));
        seqs.dedup();
        seqs.truncate(limit);
        seqs.reverse();
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(v) = log.get(seq).map_err(StoreError::db)? {
                out.push(Event::stored(seq, v.value())?);
            }
        }
        Ok(out)
    }

    /// The events about `subject` (of `kinds` only, when given), read through the subject
    /// index, in seq order.
    pub fn events_about(
        &self,
        subject: &str,
        window: Window,
        kinds: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let after = match window {
            Window::After(after) => {
                self.check_cursor(after)?;
                after
            }
            Window::Last => 0,
        };
        let newest = window == Window::Last;
        let index = self.txn.open_table(EVENT_SUBJECTS).map_err(StoreError::db)?;
        let log = self.txn.open_table(EVENTS).map_err(StoreError::db)?;
        let range = index
            .range((subject, after.saturating_add(1))..=(subject, u64::MAX))
            .map_err(StoreError::db)?;
        let seqs: Box<dyn Iterator<Item = _>> = if newest { Box::new(range.rev()) } else { Box::new(range) };
        let mut out = Vec::new();
        for entry in seqs {
            if out.len() >= limit {
                break;
            }
            let seq = entry.map_err(StoreError::db)?.0.value().1;
            let Some(body) = log.get(seq).map_err(StoreError::db)? else {
                continue;
            };
            let event = Event::stored(seq, body.value())?;
            if kinds.is_none_or(|kinds| kinds.contains(&event.kind)) {
                out.push(event);
            }
        }
        if newest {
            out.reverse();
        }
        Ok(out)
    }

    /// The first `limit` events after `after` whose kind is one of `kinds`, in seq order:
    /// each kind's index range is read from the cursor on and the ranges are merged.
    pub fn events_of_kinds(&self, after: u64, kinds: &[String], limit: usize) -> Result<Vec<Event>, StoreError> {
        self.check_cursor(after)?;
        let index = self.txn.open_table(EVENT_KINDS).map_err(StoreError::db)?;
        let mut seqs = Vec::new();
        for kind in kinds {
            let range = index
                .range((kind.as_str(), after.saturating_add(1))..=(kind.as_str(), u64::MAX))
                .map_err(StoreError::db)?;
            for entry in range.take(limit) {
                seqs.push(entry.map_err(StoreError::db)?.0.value().1);
            }
        }
        seqs.sort_unstable();
        seqs.dedup();
        seqs.truncate(limit);
        let log = self.txn.open_table(EVENTS).map_err(StoreError::db)?;
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(v) = log.get(seq).map_err(StoreError::db)? {
                out.push(Event::stored(seq, v.value())?);
            }
        }
        Ok(out)
    }
}
