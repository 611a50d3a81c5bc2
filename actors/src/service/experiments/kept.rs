//! Experiments in the replicated store, so that every node reads every experiment from its
//! own replica and no read asks a peer.
//!
//! - The node an experiment runs on writes its record as it changes: at most every
//!   [`EVERY`] while it runs, its end at once. The writes pass the faults experiments arm
//!   (see [`EXPERIMENTS`]); a write that fails (no majority: the node is cut off) is tried
//!   again with the newest record. So a peer's read of a running experiment is at most
//!   [`EVERY`] plus a commit behind; one cut off from the majority is as it was last
//!   written until the cut heals.
//! - An experiment over several nodes is kept as its parts ([`Kept::Parts`]), written once
//!   when they have all started, and read as one from the parts' own records.
//! - Gates live in memory, so an experiment whose node restarted, or was declared down or
//!   gone, holds nothing any more: it is written ABORTED (at the node's start, or by the
//!   survivors when the node's MEMBER_DOWN or MEMBER_LEFT is applied), on the condition
//!   that its record is still the one read.
//! - A node's writes of its record are conditioned on the record it wrote last: a node
//!   that was declared lost and comes back finds the survivors' ABORTED in place, and ends
//!   the experiment too.
//! - Each node keeps its newest [`super::KEPT`] ended experiments; older ones are deleted
//!   with the write that ends the next one.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use troupe_runtime::events::NewEvent;
pub(crate) use troupe_runtime::store::EXPERIMENTS;
use troupe_runtime::store::{Batch, Change, Projection, Store, StoreError, View, MAX_BATCH_BYTES};

use super::spread::Spread;
use super::{Experiment, ExperimentState, Experiments, RecoveryReport};

/// How often a running experiment's record is written at most.
pub(super) const EVERY: Duration = Duration::from_millis(250);
/// How long a record that cannot be written is tried again before it is given up.
const TRY_FOR: Duration = Duration::from_secs(600);
/// The most events a record keeps per injection (and unexpected ones in its report) when
/// it would be too large for a log entry otherwise.
const EVENTS_WHEN_LARGE: usize = 50;

/// An experiment as the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Kept {
    One(Experiment),
    /// One over several nodes: its parts as they started (each read again from its own
    /// record).
    Parts(Spread),
}

impl Kept {
    pub(super) fn read(v: &View<'_>, id: &str) -> Result<Option<Kept>, StoreError> {
        v.get(EXPERIMENTS, id)?
            .map(|bytes| troupe_runtime::codec::decode(&bytes))
            .transpose()
    }
}

/// The node an experiment runs on, as its id ends.
fn node_of(id: &str) -> &str {
    id.rsplit_once('@').map_or("", |(_, node)| node)
}

/// The record of `experiment`, trimmed of events past [`EVENTS_WHEN_LARGE`] when the whole
/// would not fit in a log entry.
fn encoded(experiment: &Experiment) -> Result<Vec<u8>, StoreError> {
    let bytes = troupe_runtime::codec::encode(&Kept::One(experiment.clone()))?;
    if bytes.len() < MAX_BATCH_BYTES / 4 {
        return Ok(bytes);
    }
    let mut trimmed = experiment.clone();
    for i in &mut trimmed.injections {
        i.observed.truncate(EVENTS_WHEN_LARGE);
    }
    if let Some(r) = &mut trimmed.report {
        r.unexpected.truncate(EVENTS_WHEN_LARGE);
    }
    troupe_runtime::codec::encode(&Kept::One(trimmed))
}

/// Writes the record of an experiment of this node at each change of `view` (at most every
/// [`EVERY`]) until its end is written. Each write is conditioned on the record it wrote
/// last: when the survivors recorded it ABORTED meanwhile (this node was declared lost, then
/// came back), the cluster's word stands and the experiment is ended here too.
/// The returned notice comes once the first record is written.
pub(super) fn follow(experiments: Experiments, mut view: watch::Receiver<Experiment>) -> oneshot::Receiver<()> {
    let (first, written) = oneshot::channel();
    let mut first = Some(first);
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let now = view.borrow_and_update().clone();
            let ended = now.state.is_final();
            match write(&experiments.store, &now, &mut view, &mut last).await {
                Written::Yes => {
                    if let Some(first) = first.take() {
                        let _ = first.send(());
                    }
                }
                Written::GivenUp => return,
                Written::Overtaken => {
                    tracing::warn!(experiment = %now.id, "the cluster recorded this experiment ABORTED while this node was lost: it ends here too");
                    let why = "the cluster recorded it aborted while its node was lost".into();
                    experiments.overtaken(&now.id, super::End { why, aborted: true });
                    return;
                }
            }
            if ended || view.changed().await.is_err() {
                return;
            }
            if !view.borrow().state.is_final() {
                tokio::time::sleep(EVERY).await;
            }
        }
    });
    written
}

/// How a record's write went.
enum Written {
    Yes,
    /// Not written for good (see [`TRY_FOR`]).
    GivenUp,
    /// The record was ended by another member (see [`abort_open`]).
    Overtaken,
}

/// Writes `experiment`'s record (with the pruning its end allows) on the condition that the
/// record is still `last` (what this node wrote last), trying again until it commits; a
/// record still running gives way to a newer one.
async fn write(
    store: &Store,
    experiment: &Experiment,
    view: &mut watch::Receiver<Experiment>,
    last: &mut Option<Vec<u8>>,
) -> Written {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        let (batch, bytes) = match record(store, experiment, last.clone()).await {
            Ok(written) => written,
            Err(e) => {
                tracing::warn!(experiment = %experiment.id, error = %e, "an experiment's record cannot be written");
                return Written::GivenUp;
            }
        };
        match store.write(batch).await {
            Ok(_) => {
                *last = Some(bytes);
                return Written::Yes;
            }
            Err(StoreError::Stale(_)) => {
                // Another member ended it, or an attempt of this node's that seemed to fail
                // was applied after all: then the condition is what it wrote.
                let now = store.get(EXPERIMENTS, &experiment.id).await.ok().flatten();
                let theirs = match now.as_deref().map(troupe_runtime::codec::decode::<Kept>) {
                    Some(Ok(Kept::One(e))) => e.state == ExperimentState::Aborted && !experiment.state.is_final(),
                    _ => false,
                };
                if theirs {
                    return Written::Overtaken;
                }
                *last = now;
                continue;
            }
            Err(e) if store.raft_stopped() || started.elapsed() > TRY_FOR => {
                tracing::warn!(experiment = %experiment.id, error = %e, "an experiment's record was not written");
                return Written::GivenUp;
            }
            Err(e) => tracing::debug!(experiment = %experiment.id, error = %e, "an experiment's record is tried again"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
        if !experiment.state.is_final() && view.has_changed().unwrap_or(false) {
            return Written::Yes;
        }
    }
}

/// The batch that writes `experiment`'s record if the record is `was`, and the record; at
/// its end, it also deletes this node's ended experiments past the newest [`super::KEPT`].
async fn record(store: &Store, experiment: &Experiment, was: Option<Vec<u8>>) -> Result<(Batch, Vec<u8>), StoreError> {
    let bytes = encoded(experiment)?;
    let id = experiment.id.clone();
    let mut batch = Batch::new()
        .require(EXPERIMENTS, id.clone(), was)
        .put(EXPERIMENTS, id.clone(), bytes.clone());
    if experiment.state.is_final() {
        let node = node_of(&id).to_owned();
        for old in store.view(move |v| beyond_kept(v, &node, &id)).await? {
            batch = batch.delete(EXPERIMENTS, old);
        }
    }
    Ok((batch, bytes))
}

/// `node`'s ended experiments past the newest [`super::KEPT`], counting `ending` (which ends
/// now) among them.
fn beyond_kept(v: &View<'_>, node: &str, ending: &str) -> Result<Vec<String>, StoreError> {
    let mut ended: Vec<String> = Vec::new();
    v.scan(EXPERIMENTS, None, |id, bytes| {
        if node_of(id) == node && id != ending && ended_in(v, troupe_runtime::codec::decode(bytes)?)? {
            ended.push(id.to_owned());
        }
        Ok(true)
    })?;
    // Ids are UUIDv7: their order is their start order.
    ended.sort();
    let over = (ended.len() + 1).saturating_sub(super::KEPT);
    Ok(ended.into_iter().take(over).collect())
}

/// Whether a kept experiment has ended (one in parts: each part, as its record says).
fn ended_in(v: &View<'_>, kept: Kept) -> Result<bool, StoreError> {
    Ok(match kept {
        Kept::One(e) => e.state.is_final(),
        Kept::Parts(s) => {
            for part in s.parts.values() {
                if let Some(Kept::One(e)) = Kept::read(v, &part.id)? {
                    if !e.state.is_final() {
                        return Ok(false);
                    }
                }
            }
            true
        }
    })
}

/// Writes ABORTED, with `why`, each experiment of `node` whose record says it runs (but
/// those `live` here), each on the condition that its record is still the one read; how
/// many. It reads what the cluster committed (a node just started may not have applied it),
/// and reads again a record that changed before its write.
pub(super) async fn abort_open(
    store: &Store,
    node: &str,
    why: &str,
    live: impl Fn(&str) -> bool + Send + Sync + 'static,
) -> Result<usize, StoreError> {
    store.linearize().await?;
    let live = Arc::new(live);
    let ids = {
        let (node, live) = (node.to_owned(), live.clone());
        store
            .view(move |v| {
                let mut ids = Vec::new();
                v.scan(EXPERIMENTS, None, |id, _| {
                    if node_of(id) == node && !live(id) {
                        ids.push(id.to_owned());
                    }
                    Ok(true)
                })?;
                Ok(ids)
            })
            .await?
    };
    let mut aborted = 0;
    for id in ids {
        for _ in 0..5 {
            let Some((was, e)) = open_record(store, &id).await? else {
                break;
            };
            match store.write(aborted_record(was, e, why)?).await {
                Ok(_) => {
                    aborted += 1;
                    break;
                }
                // Written since it was read (by its node, or another survivor): read again.
                Err(StoreError::Stale(_)) => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(aborted)
}

/// The record of an experiment that runs, as stored and as read.
async fn open_record(store: &Store, id: &str) -> Result<Option<(Vec<u8>, Experiment)>, StoreError> {
    let Some(bytes) = store.get(EXPERIMENTS, id).await? else {
        return Ok(None);
    };
    Ok(match troupe_runtime::codec::decode(&bytes)? {
        Kept::One(e) if !e.state.is_final() => Some((bytes, e)),
        _ => None,
    })
}

/// The write that records `e` ABORTED for `why`, on the condition that its record is `was`.
fn aborted_record(was: Vec<u8>, mut e: Experiment, why: &str) -> Result<Batch, StoreError> {
    let reason = format!("aborted: {why}");
    e.state = ExperimentState::Aborted;
    e.finished_at = Some(Utc::now());
    e.report = Some(RecoveryReport {
        verdict: "FAIL".into(),
        reason: reason.clone(),
        injected: e.injections.len(),
        recovered: e.injections.iter().filter(|i| i.outcome == "RECOVERED").count(),
        max_time_to_recover_ms: e.injections.iter().filter_map(|i| i.time_to_recover_ms).max(),
        invariants: Vec::new(),
        unexpected: Vec::new(),
    });
    Ok(Batch::new()
        .require(EXPERIMENTS, e.id.clone(), Some(was))
        .put(EXPERIMENTS, e.id.clone(), encoded(&e)?)
        .event(NewEvent::new(
            "EXPERIMENT_FINISHED",
            Some(e.id.clone()),
            json!({ "name": e.name, "state": "ABORTED", "verdict": "FAIL", "reason": reason }),
        )))
}

/// Aborts, in the background, the experiments this node ran before it restarted, then
/// those of each member declared down or gone as its change is applied.
pub(super) async fn abort_the_lost(experiments: &Experiments, store: &Store) -> Result<(), StoreError> {
    let (tx, mut lost) = mpsc::unbounded_channel();
    store.project(Arc::new(Lost(tx))).await?;
    let (experiments, store, me) = (experiments.clone(), store.clone(), store.node().to_owned());
    tokio::spawn(async move {
        let restarted = "its node restarted, which cleared every fault it held there";
        try_to_abort(&store, &me, restarted, &experiments).await;
        while let Some(node) = lost.recv().await {
            // A member down long ago, whose change a node catching up applies only now, may
            // run experiments again: only a member lost now has its experiments aborted.
            if node != me && still_lost(&store, &node).await {
                let why = format!(
                    "its node {node} was lost; the faults it held there went with it, and those it armed on peers expire on their own"
                );
                try_to_abort(&store, &node, &why, &experiments).await;
            }
        }
    });
    Ok(())
}

/// Whether `node` is DOWN or gone as the cluster committed it (caught up first; a node that
/// cannot catch up reads what it has).
async fn still_lost(store: &Store, node: &str) -> bool {
    if let Err(e) = store.linearize().await {
        tracing::debug!(node, error = %e, "reading a member's state without catching up");
    }
    let node = node.to_owned();
    let record = store.view(move |v| crate::cluster::lease::member_in(v, &node)).await;
    matches!(
        record,
        Ok(Some(r)) if matches!(r.state, crate::cluster::lease::MemberState::Down | crate::cluster::lease::MemberState::Left)
    )
}

/// [`abort_open`] but for the experiments running in this node's memory, tried again while
/// the store cannot commit (a node starting before its cluster has a leader), for at most
/// [`TRY_FOR`].
async fn try_to_abort(store: &Store, node: &str, why: &str, experiments: &Experiments) {
    let started = tokio::time::Instant::now();
    loop {
        let running = experiments.clone();
        match abort_open(store, node, why, move |id| running.current(id).is_some()).await {
            Ok(0) => return,
            Ok(n) => {
                tracing::warn!(
                    node,
                    count = n,
                    reason = why,
                    "experiments recorded as running were aborted"
                );
                return;
            }
            Err(e) if store.raft_stopped() || started.elapsed() > TRY_FOR => {
                tracing::warn!(node, error = %e, "experiments recorded as running could not be aborted");
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Tells of each member the log declares down or gone, as its change is applied.
struct Lost(mpsc::UnboundedSender<String>);

impl Projection for Lost {
    fn name(&self) -> &'static str {
        "lost experiments"
    }

    fn rebuild(&self, _: &View<'_>) -> Result<(), StoreError> {
        Ok(())
    }

    fn apply(&self, change: &Change<'_>) -> Result<(), StoreError> {
        for e in change.events {
            if matches!(e.kind.as_str(), "MEMBER_DOWN" | "MEMBER_LEFT") {
                if let Some(node) = e.data["node"].as_str() {
                    let _ = self.0.send(node.to_owned());
                }
            }
        }
        Ok(())
    }

    /// Nobody reads what it tells any more.
    fn gone(&self) -> bool {
        self.0.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use troupe_runtime::store::Store;

    use super::*;
    use crate::cluster::lease::MemberState;

    fn experiment(id: &str, state: ExperimentState) -> Experiment {
        Experiment::bare(id, state)
    }

    async fn put(store: &Store, e: &Experiment) {
        let batch = Batch::new().put(EXPERIMENTS, e.id.clone(), encoded(e).unwrap());
        store.write(batch).await.unwrap();
    }

    fn read(store: &Store, id: &str) -> Option<Experiment> {
        match store.view_now(|v| Kept::read(v, id)).unwrap() {
            Some(Kept::One(e)) => Some(e),
            _ => None,
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_lost_nodes_running_experiments_are_recorded_aborted_and_nothing_else() {
        let (_d, store) = store();
        let running = experiment("1@b", ExperimentState::Active);
        let ended = experiment("2@b", ExperimentState::Passed);
        let live = experiment("3@b", ExperimentState::Active);
        let elsewhere = experiment("4@a", ExperimentState::Recovering);
        for e in [&running, &ended, &live, &elsewhere] {
            put(&store, e).await;
        }
        let aborted = abort_open(&store, "b", "its node b was lost", |id| id == "3@b")
            .await
            .unwrap();
        assert_eq!(aborted, 1);
        let now = read(&store, "1@b").unwrap();
        assert_eq!(now.state, ExperimentState::Aborted);
        assert!(now.finished_at.is_some());
        let report = now.report.unwrap();
        assert_eq!(report.verdict, "FAIL");
        assert!(report.reason.contains("its node b was lost"), "{}", report.reason);
        assert_eq!(read(&store, "2@b").unwrap().state, ExperimentState::Passed);
        assert_eq!(
            read(&store, "3@b").unwrap().state,
            ExperimentState::Active,
            "it runs here"
        );
        assert_eq!(read(&store, "4@a").unwrap().state, ExperimentState::Recovering);
        // Once it no longer runs here, the next pass takes it, and it alone.
        assert_eq!(abort_open(&store, "b", "again", |_| false).await.unwrap(), 1);
        assert_eq!(read(&store, "3@b").unwrap().state, ExperimentState::Aborted);
    }

    #[tokio::test]
    async fn a_record_written_again_after_the_cluster_aborted_it_is_refused_and_the_abort_stands() {
        let (_d, store) = store();
        let (tx, mut view) = watch::channel(experiment("1@b", ExperimentState::Active));
        let mut last = None;
        let running = view.borrow_and_update().clone();
        assert!(matches!(
            write(&store, &running, &mut view, &mut last).await,
            Written::Yes
        ));
        // An attempt that seemed to fail but was applied: its condition is met by what it wrote.
        let mut lost = None;
        assert!(matches!(
            write(&store, &running, &mut view, &mut lost).await,
            Written::Yes
        ));
        // Its node was declared lost; the survivors aborted it. The node, back, is refused.
        assert_eq!(abort_open(&store, "b", "lost", |_| false).await.unwrap(), 1);
        let mut later = running.clone();
        later.injections.clear();
        tx.send_replace(later.clone());
        assert!(matches!(
            write(&store, &later, &mut view, &mut last).await,
            Written::Overtaken
        ));
        assert_eq!(read(&store, "1@b").unwrap().state, ExperimentState::Aborted);
    }

    #[tokio::test]
    async fn a_member_declared_down_has_its_running_experiments_aborted_as_the_change_is_applied() {
        let (_d, store) = store();
        let experiments = Experiments::new(true, 1, Duration::from_secs(60), store.clone(), Default::default());
        put(&store, &experiment("1@b", ExperimentState::Active)).await;
        let mut live = store.live();
        experiments.follow(&store).await.unwrap();
        let down = NewEvent::new("MEMBER_DOWN", Some("b".into()), json!({ "node": "b" }));
        store.write(member(MemberState::Down).event(down)).await.unwrap();
        let finished = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let e = live.recv().await.unwrap();
                if e.kind == "EXPERIMENT_FINISHED" {
                    return e;
                }
            }
        })
        .await
        .expect("the experiment of the lost node was ended");
        assert_eq!(finished.subject.as_deref(), Some("1@b"));
        assert_eq!(read(&store, "1@b").unwrap().state, ExperimentState::Aborted);
    }

    fn member(state: MemberState) -> Batch {
        let record = crate::cluster::lease::MemberRecord {
            state,
            since: Utc::now(),
        };
        let key = crate::cluster::lease::member_key("b");
        Batch::new().put(
            troupe_runtime::store::META,
            key,
            troupe_runtime::codec::encode(&record).unwrap(),
        )
    }

    #[tokio::test]
    async fn only_a_member_lost_now_has_its_experiments_aborted() {
        let (_d, store) = store();
        // Never decided (UP), or UP again since: its old MEMBER_DOWN, applied late by a node
        // catching up, aborts nothing.
        assert!(!still_lost(&store, "b").await);
        store.write(member(MemberState::Up)).await.unwrap();
        assert!(!still_lost(&store, "b").await);
        store.write(member(MemberState::Down)).await.unwrap();
        assert!(still_lost(&store, "b").await);
        store.write(member(MemberState::Left)).await.unwrap();
        assert!(still_lost(&store, "b").await);
    }

    #[tokio::test]
    async fn a_nodes_end_deletes_its_oldest_ended_experiments_past_those_kept() {
        let (_d, store) = store();
        // Ids in start order, as UUIDv7 are.
        for n in 0..super::super::KEPT + 2 {
            put(&store, &experiment(&format!("{n:04}@a"), ExperimentState::Passed)).await;
        }
        put(&store, &experiment("0000x@b", ExperimentState::Passed)).await;
        put(&store, &experiment("0001x@a", ExperimentState::Active)).await;
        let last = experiment("9999@a", ExperimentState::Failed);
        store.write(record(&store, &last, None).await.unwrap().0).await.unwrap();
        let kept: Vec<String> = store
            .view_now(|v| {
                let mut ids = Vec::new();
                v.scan(EXPERIMENTS, None, |id, _| {
                    ids.push(id.to_owned());
                    Ok(true)
                })?;
                Ok(ids)
            })
            .unwrap();
        let ended_of_a = kept.iter().filter(|id| id.ends_with("@a") && *id != "0001x@a").count();
        assert_eq!(ended_of_a, super::super::KEPT, "{kept:?}");
        for gone in ["0000@a", "0001@a", "0002@a"] {
            assert!(!kept.iter().any(|id| id == gone), "{gone} is kept");
        }
        assert!(
            kept.iter().any(|id| id == "0000x@b"),
            "another node's are its own to keep"
        );
        assert!(kept.iter().any(|id| id == "0001x@a"), "a running one is kept");
    }
}
