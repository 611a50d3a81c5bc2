//! A log entry's payload, and how it is encoded: a map `{b: batches, o: origin}`. Entries
//! written before the origin existed are a bare array of batches, and still read (a log
//! keeps them until a snapshot covers them, and a node re-applies its newest entries when
//! it starts).

use std::fmt;
use std::sync::Arc;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Origin;
use crate::store::Batch;

/// One log entry: the batches of one group commit, applied in order. Shared, so the log
/// keeps the entries it just appended for their application without copying them.
#[derive(Debug, Clone, Default)]
pub struct Proposal {
    pub batches: Arc<Vec<Batch>>,
    /// Which writer sent it, and its place among that writer's groups ([`super::session`]);
    /// `None` for an entry of the store's own (the hand-over's).
    pub origin: Option<Origin>,
}

impl Proposal {
    pub fn new(batches: Vec<Batch>) -> Self {
        Self {
            batches: Arc::new(batches),
            origin: None,
        }
    }
}

impl Serialize for Proposal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("b", self.batches.as_slice())?;
        map.serialize_entry("o", &self.origin)?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for Proposal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ProposalVisitor)
    }
}

struct ProposalVisitor;

impl<'de> Visitor<'de> for ProposalVisitor {
    type Value = Proposal;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a log entry's batches and origin, or an array of batches")
    }

    /// An entry of an earlier build: its batches alone.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Proposal, A::Error> {
        let mut batches = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(batch) = seq.next_element::<Batch>()? {
            batches.push(batch);
        }
        Ok(Proposal::new(batches))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Proposal, A::Error> {
        let mut proposal = Proposal::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "b" => proposal.batches = Arc::new(map.next_value()?),
                "o" => proposal.origin = map.next_value()?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(proposal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::store::Table;

    fn sealed() -> Batch {
        let mut batch = Batch::new().put(Table::new("things"), "k", vec![7]);
        batch.seal().unwrap();
        batch
    }

    #[test]
    fn a_proposal_keeps_its_origin_and_an_earlier_builds_entry_still_reads() {
        let origin = Origin {
            node: 3,
            epoch: 9,
            seq: 2,
        };
        let proposal = Proposal {
            batches: Arc::new(vec![sealed()]),
            origin: Some(origin),
        };
        let back: Proposal = codec::decode(&codec::encode(&proposal).unwrap()).unwrap();
        assert_eq!((back.batches.len(), back.origin), (1, Some(origin)));
        // Before the origin, an entry was its batches alone (the hand-over's: none).
        for earlier in [vec![sealed(), sealed()], Vec::new()] {
            let back: Proposal = codec::decode(&codec::encode(&earlier).unwrap()).unwrap();
            assert_eq!((back.batches.len(), back.origin), (earlier.len(), None));
        }
        // Inside a whole log entry too.
        let entry = openraft::Entry::<super::super::Troupe> {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 5),
            payload: openraft::EntryPayload::Normal(proposal),
        };
        let back: openraft::Entry<super::super::Troupe> = codec::decode(&codec::encode(&entry).unwrap()).unwrap();
        assert!(matches!(back.payload, openraft::EntryPayload::Normal(p) if p.origin == Some(origin)));
    }
}
