//! Which agents each owner has (the node, or a swarm): an index kept beside the agent specs,
//! so a swarm's coordinator reads its own members, not every agent of the node, at each tick.
//! Written in the same batch as the spec it follows; rebuilt once from the specs for a store
//! made before it existed.

use troupe_runtime::store::{Batch, Store, StoreError, View, META};

use super::registry::{read_one, Found};
use super::spec::{AgentSpec, Owner};
use crate::tables::{AGENTS, AGENTS_BY_OWNER};

/// Marks a store whose index is whole.
const BUILT: &str = "agents_by_owner";

fn prefix(owner: &Owner) -> String {
    match owner {
        Owner::Node => "node/".into(),
        Owner::Swarm(swarm) => format!("swarm/{swarm}/"),
    }
}

/// Files the agent under its owner.
pub(crate) fn file(batch: Batch, owner: &Owner, id: &str) -> Batch {
    batch.put(AGENTS_BY_OWNER, format!("{}{id}", prefix(owner)), Vec::new())
}

/// Takes the agent off its owner's list.
pub(crate) fn unfile(batch: Batch, owner: &Owner, id: &str) -> Batch {
    batch.delete(AGENTS_BY_OWNER, format!("{}{id}", prefix(owner)))
}

/// The agents of `owner` with their statuses, in id order, reading only theirs.
pub(crate) fn owned_in(v: &View<'_>, owner: &Owner) -> Result<Vec<Found>, StoreError> {
    let prefix = prefix(owner);
    let mut ids = Vec::new();
    v.scan_prefix(AGENTS_BY_OWNER, &prefix, |key, _| {
        ids.push(key[prefix.len()..].to_owned());
        Ok(true)
    })?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.extend(read_one(v, &id)?);
    }
    Ok(out)
}

/// Builds the index from the specs, once, for a store that has none yet.
pub(crate) async fn build_once(store: &Store) -> Result<(), StoreError> {
    let specs = store
        .view(|v| {
            if v.get(META, BUILT)?.is_some() {
                return Ok(None);
            }
            let mut specs = Vec::new();
            v.scan(AGENTS, None, |_, bytes| {
                specs.push(troupe_runtime::codec::decode::<AgentSpec>(bytes)?);
                Ok(true)
            })?;
            Ok(Some(specs))
        })
        .await?;
    let Some(specs) = specs else { return Ok(()) };
    let batch = specs
        .iter()
        .fold(Batch::new(), |b, s| file(b, &s.owner, &s.id))
        .put(META, BUILT, b"1".to_vec());
    store.write(batch).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, owner: Owner) -> AgentSpec {
        AgentSpec::example(id, owner)
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn an_owner_reads_its_own_agents_and_never_the_others() {
        let (_dir, store) = store();
        let swarm = Owner::Swarm("s1@n".into());
        let mine = spec("a1@n", swarm.clone());
        let batch = Batch::new().put(AGENTS, mine.id.clone(), troupe_runtime::codec::encode(&mine).unwrap());
        // Another agent's record that does not even decode: reading every agent would fail.
        let batch = file(batch, &swarm, &mine.id).put(AGENTS, "b1@n", b"not a spec".to_vec());
        store.write(batch).await.unwrap();
        let found = store.view(move |v| owned_in(v, &swarm)).await.unwrap();
        assert_eq!(found.iter().map(|(s, _)| s.id.as_str()).collect::<Vec<_>>(), ["a1@n"]);
        assert!(store.view(|v| owned_in(v, &Owner::Node)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_store_made_before_the_index_gets_it_once_and_an_agent_that_moves_moves_in_it() {
        let (_dir, store) = store();
        let (a, b) = (spec("a@n", Owner::Node), spec("b@n", Owner::Swarm("s@n".into())));
        let mut batch = Batch::new();
        for s in [&a, &b] {
            batch = batch.put(AGENTS, s.id.clone(), troupe_runtime::codec::encode(s).unwrap());
        }
        store.write(batch).await.unwrap();
        build_once(&store).await.unwrap();
        build_once(&store).await.unwrap();
        let node = store.view(|v| owned_in(v, &Owner::Node)).await.unwrap();
        assert_eq!(node.len(), 1);
        store
            .write(file(
                unfile(Batch::new(), &Owner::Node, "a@n"),
                &Owner::Swarm("s@n".into()),
                "a@n",
            ))
            .await
            .unwrap();
        assert!(store.view(|v| owned_in(v, &Owner::Node)).await.unwrap().is_empty());
        let swarm = store.view(|v| owned_in(v, &Owner::Swarm("s@n".into()))).await.unwrap();
        assert_eq!(swarm.len(), 2);
    }
}
