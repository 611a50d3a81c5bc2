//! A swarm's two records, its spec and its status: read, and changed one writer at a time.
//!
//! Autoscale, an ADAPTIVE switch, a health change, `setTopology`, `scaleSwarm`, `adoptAgent`
//! and `releaseAgent` each read the records, decide and write them back whole. Two of them
//! at once would each decide on the records as they were before the other, and the later
//! write would undo the earlier, acknowledged one (a topology set reverted by autoscale, two
//! adoptions counted as one). [`change`] holds the swarm's spec lock from the read to the
//! commit (a caller holds it through the checks and actions around the change as well), so
//! each decides on what the one before it wrote.

use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Store};

use super::locks::SpecHeld;
use super::spec::{SwarmSpec, SwarmStatus};
use crate::error::ApiError;
use crate::tables::{SWARMS, SWARM_STATUS};

pub(crate) async fn load_spec(store: &Store, id: &str) -> Result<SwarmSpec, ApiError> {
    let bytes = store
        .get(SWARMS, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no swarm {id}")))?;
    Ok(troupe_runtime::codec::decode(&bytes)?)
}

/// The swarm's status as last recorded.
pub(crate) async fn load_status(store: &Store, id: &str) -> Result<SwarmStatus, ApiError> {
    let bytes = store
        .get(SWARM_STATUS, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no swarm {id}")))?;
    Ok(troupe_runtime::codec::decode(&bytes)?)
}

/// Changes the swarm's spec and status as `decide` says, from the records as they are under
/// the swarm's spec lock: `decide` refuses (its error is the answer), leaves them (`None`
/// and no change: nothing is written), changes them with the event that says so, or
/// changes them with none (`None`). The records as they are after it.
pub(crate) async fn change(
    store: &Store,
    held: &SpecHeld,
    decide: impl FnOnce(&mut SwarmSpec, &mut SwarmStatus) -> Result<Option<NewEvent>, ApiError>,
) -> Result<(SwarmSpec, SwarmStatus), ApiError> {
    let id = held.swarm();
    let mut spec = load_spec(store, id).await?;
    let mut status = load_status(store, id).await?;
    let (spec_was, status_was) = (spec.clone(), status.clone());
    let event = decide(&mut spec, &mut status)?;
    if event.is_none() && spec == spec_was && status == status_was {
        return Ok((spec, status));
    }
    // Only what changed is written: a status change (a coordinator's health) is no change of
    // what the user asked for. A change with no event (the health's reason, its health the
    // same) is written all the same.
    let mut batch = Batch::new();
    if let Some(event) = event {
        batch = batch.event(event);
    }
    if spec != spec_was {
        batch = batch.put(SWARMS, id.to_owned(), troupe_runtime::codec::encode(&spec)?);
    }
    if status != status_was {
        batch = batch.put(SWARM_STATUS, id.to_owned(), troupe_runtime::codec::encode(&status)?);
    }
    store.write(batch).await?;
    Ok((spec, status))
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};

    use serde_json::json;
    use troupe_runtime::store::StoreOptions;

    use super::*;
    use crate::swarm::spec::Topology;
    use crate::swarm::Locks;

    fn spec(id: &str) -> SwarmSpec {
        SwarmSpec::example(id)
    }

    /// Once armed (a channel to say it holds, one to let it go), the writer stops at the
    /// next batch that writes a swarm spec until the test lets it go.
    type Gate = Arc<Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>>;

    fn gated_store(dir: &tempfile::TempDir) -> (Store, Gate) {
        let gate: Gate = Arc::default();
        let armed = gate.clone();
        let fault: troupe_runtime::store::FaultHook = Arc::new(move |batch: &Batch| {
            if batch.touches(SWARMS) {
                if let Some((held, go)) = armed.lock().unwrap().take() {
                    held.send(()).unwrap();
                    let _ = go.recv();
                }
            }
            None
        });
        let options = StoreOptions {
            fault: Some(fault),
            ..StoreOptions::default()
        };
        (Store::open_with(&dir.path().join("db"), options).unwrap(), gate)
    }

    async fn seed(store: &Store) {
        let status = SwarmStatus::new(Topology::Hierarchical);
        let batch = Batch::new()
            .put(
                SWARMS,
                "s1".to_owned(),
                troupe_runtime::codec::encode(&spec("s1")).unwrap(),
            )
            .put(
                SWARM_STATUS,
                "s1".to_owned(),
                troupe_runtime::codec::encode(&status).unwrap(),
            );
        store.write(batch).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_decides_on_what_the_change_before_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let (store, gate) = gated_store(&dir);
        let locks = Locks::default();
        seed(&store).await;
        let (held_tx, held) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        *gate.lock().unwrap() = Some((held_tx, go_rx));
        let event = || Some(NewEvent::new("SWARM_SCALED", Some("s1".into()), json!({})));
        // The first change (autoscale to 3) reads, decides and stops at its write.
        let first = tokio::spawn({
            let (store, locks) = (store.clone(), locks.clone());
            async move {
                change(&store, &locks.hold_spec("s1").await, |spec, _| {
                    spec.size = 3;
                    Ok(event())
                })
                .await
            }
        });
        tokio::task::spawn_blocking(move || held.recv().unwrap()).await.unwrap();
        // A second change (setTopology) now must wait for it rather than read the old spec.
        assert!(
            locks.spec("s1").try_lock().is_err(),
            "the spec lock is held from the read to the commit"
        );
        let second = tokio::spawn({
            let (store, locks) = (store.clone(), locks.clone());
            async move {
                change(&store, &locks.hold_spec("s1").await, |spec, _| {
                    spec.topology = Topology::Mesh;
                    Ok(Some(NewEvent::new(
                        "SWARM_TOPOLOGY_CHANGED",
                        Some("s1".into()),
                        json!({}),
                    )))
                })
                .await
            }
        });
        go.send(()).unwrap();
        first.await.unwrap().unwrap();
        let (after, _) = second.await.unwrap().unwrap();
        assert_eq!(
            (after.size, after.topology),
            (3, Topology::Mesh),
            "neither change is lost"
        );
        let stored = load_spec(&store, "s1").await.unwrap();
        assert_eq!((stored.size, stored.topology), (3, Topology::Mesh));
    }

    #[tokio::test]
    async fn a_refused_or_empty_change_writes_nothing_and_a_change_with_no_event_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let locks = Locks::default();
        seed(&store).await;
        let refused = change(&store, &locks.hold_spec("s1").await, |spec, _| {
            spec.size = 9;
            Err(ApiError::Conflict("at maxAgents".into()))
        })
        .await;
        assert_eq!(refused.unwrap_err(), ApiError::Conflict("at maxAgents".into()));
        change(&store, &locks.hold_spec("s1").await, |_, _| Ok(None))
            .await
            .unwrap();
        assert_eq!(load_spec(&store, "s1").await.unwrap().size, 1);
        let last = store.last_seq().await.unwrap();
        change(&store, &locks.hold_spec("s1").await, |_, status| {
            status.reason = "all 2 members are running".into();
            Ok(None)
        })
        .await
        .unwrap();
        assert_eq!(
            load_status(&store, "s1").await.unwrap().reason,
            "all 2 members are running"
        );
        assert_eq!(store.last_seq().await.unwrap(), last, "no event");
    }
}
